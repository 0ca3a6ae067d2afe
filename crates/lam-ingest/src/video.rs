//! From a video file (or a time window of one) to clips: decode, resample,
//! preprocess, assemble.

use crate::clip::{Clip, ClipAssembler, Frame};
use crate::decode::{DecodeOptions, VideoReader, Window};
use crate::error::{IngestError, Result};
use crate::preprocess::Preprocessor;
use crate::spec::ClipSpec;
use std::ops::ControlFlow;
use std::path::Path;

/// What reading one item produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ItemStats {
    /// Clips handed to the sink.
    pub clips: usize,
    /// Resampled grid positions the item covers (at `spec.fps`).
    pub positions: usize,
    /// Frames the decoder produced.
    pub decoded: usize,
    /// Corrupt packets passed over.
    pub bad_packets: usize,
}

/// Cuts the video at `path` (restricted to `window`) into clips following
/// `spec`, handing each to `sink` as soon as it is complete. Frames no clip
/// needs (stride gaps, past `max_clips`) are decoded but not converted.
///
/// With `spec.phases` P > 1 the window is read P times, phase `p` on the grid
/// shifted by `p / (P fps)` seconds; its clips carry times on the item's clock
/// (shift included) and indices `c P + p` (clip `c` of phase `p`), so indices
/// stay unique and follow the clips' start times.
pub fn for_each_video_clip(
    path: &Path,
    window: Window,
    item_id: &str,
    spec: &ClipSpec,
    options: &DecodeOptions,
    sink: &mut dyn FnMut(Clip) -> Result<()>,
) -> Result<ItemStats> {
    spec.validate()?;
    let mut reader = VideoReader::open(path, options)?;
    let mut pre = Preprocessor::new(spec.size, &spec.norm);
    let limit = spec.max_clips.map(|m| (m - 1) * spec.stride + spec.frames);
    let needed = |k: usize| spec.frame_needed(k);
    let mut total = ItemStats::default();
    for phase in 0..spec.phases {
        let shift = phase as f64 / (spec.phases as f64 * spec.fps);
        let grid = if phase == 0 {
            window
        } else {
            Window {
                start: Some(window.start.unwrap_or(0.0) + shift),
                end: window.end,
            }
        };
        let mut asm = ClipAssembler::new(item_id, spec);
        let stats = reader.sample(grid, spec.fps, limit, &needed, &mut |s| {
            let mut data = Vec::with_capacity(pre.frame_len());
            pre.process(s.frame, &mut data)
                .map_err(|reason| IngestError::video(path, reason))?;
            let frame = Frame {
                position: s.index,
                time: s.time + shift,
                data,
            };
            if let Some(mut clip) = asm.push(frame) {
                clip.index = clip.index * spec.phases + phase;
                sink(clip)?;
            }
            Ok(if asm.is_full() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        total.clips += asm.emitted();
        total.positions += stats.positions;
        total.decoded += stats.decoded;
        total.bad_packets += stats.bad_packets;
    }
    Ok(total)
}

/// All resampled, preprocessed frames of a video window, in order, without
/// cutting clips (`spec.frames`, `stride` and `max_clips` are ignored).
pub fn for_each_video_frame(
    path: &Path,
    window: Window,
    spec: &ClipSpec,
    options: &DecodeOptions,
    sink: &mut dyn FnMut(Frame) -> Result<()>,
) -> Result<ItemStats> {
    spec.validate()?;
    let mut reader = VideoReader::open(path, options)?;
    let mut pre = Preprocessor::new(spec.size, &spec.norm);
    let stats = reader.sample(window, spec.fps, None, &|_| true, &mut |s| {
        let mut data = Vec::with_capacity(pre.frame_len());
        pre.process(s.frame, &mut data)
            .map_err(|reason| IngestError::video(path, reason))?;
        sink(Frame {
            position: s.index,
            time: s.time,
            data,
        })?;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(ItemStats {
        clips: 0,
        positions: stats.positions,
        decoded: stats.decoded,
        bad_packets: stats.bad_packets,
    })
}
