//! A clip of preprocessed frames, and the assembly of resampled frames into
//! clips with a stride.

use crate::spec::ClipSpec;
use std::collections::VecDeque;

/// `T` consecutive resampled frames of one item, preprocessed.
///
/// Layout of [`Clip::data`]: `[T, 3, H, W]`, row-major f32 — frame-major,
/// then channel (R, G, B), then row (top to bottom), then column (left to
/// right). Element `(t, c, y, x)` is at `((t * 3 + c) * H + y) * W + x`.
/// Values are normalised as set by [`ClipSpec::norm`].
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    /// Id of the item the clip comes from (see [`crate::Item::id`]).
    pub item: String,
    /// Position of the clip within its item: clip `index` starts at resampled
    /// frame `index * stride`. With P > 1 [`ClipSpec::phases`], clip `c` of
    /// phase `p` has index `c P + p` (it starts at frame `c * stride` of its
    /// phase's grid).
    pub index: usize,
    /// Pixel data, `[T, 3, H, W]` row-major (see the type's docs).
    pub data: Vec<f32>,
    /// T, frames in the clip.
    pub frames: usize,
    /// H, rows per frame.
    pub height: usize,
    /// W, columns per frame.
    pub width: usize,
    /// Time of each frame in seconds from the item's start (for a LeRobot
    /// episode: the episode's `timestamp` column), on the grid `k / fps` (shifted by
    /// `p / (P fps)` for phase `p` of [`ClipSpec::phases`]).
    pub times: Vec<f64>,
    /// Resampled-frame index `k` of each frame within the item.
    pub positions: Vec<usize>,
}

impl Clip {
    /// Channels per frame (R, G, B).
    pub const CHANNELS: usize = 3;

    /// `[T, 3, H, W]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.frames, Self::CHANNELS, self.height, self.width]
    }

    /// The `3 * H * W` floats of frame `t`, CHW.
    pub fn frame(&self, t: usize) -> &[f32] {
        let n = Self::CHANNELS * self.height * self.width;
        &self.data[t * n..(t + 1) * n]
    }

    /// Value at frame `t`, channel `c`, row `y`, column `x`.
    pub fn at(&self, t: usize, c: usize, y: usize, x: usize) -> f32 {
        self.data[((t * Self::CHANNELS + c) * self.height + y) * self.width + x]
    }
}

/// One resampled, preprocessed frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Resampled index `k` within the item.
    pub position: usize,
    /// Seconds from the item's start.
    pub time: f64,
    /// `3 * size * size` floats, CHW.
    pub data: Vec<f32>,
}

/// Groups resampled frames into clips following a [`ClipSpec`]: clip `c`
/// holds frames `c * stride .. c * stride + frames`. Frames must be pushed
/// in increasing position; positions for which [`ClipSpec::frame_needed`] is
/// false may be left out.
pub struct ClipAssembler {
    item: String,
    frames: usize,
    stride: usize,
    size: usize,
    max_clips: Option<usize>,
    next_clip: usize,
    buf: VecDeque<Frame>,
}

impl ClipAssembler {
    pub fn new(item: impl Into<String>, spec: &ClipSpec) -> Self {
        ClipAssembler {
            item: item.into(),
            frames: spec.frames,
            stride: spec.stride,
            size: spec.size as usize,
            max_clips: spec.max_clips,
            next_clip: 0,
            buf: VecDeque::with_capacity(spec.frames),
        }
    }

    /// Clips emitted so far.
    pub fn emitted(&self) -> usize {
        self.next_clip
    }

    /// Whether `max_clips` clips have been emitted.
    pub fn is_full(&self) -> bool {
        self.max_clips.is_some_and(|m| self.next_clip >= m)
    }

    /// Adds a frame; returns the clip it completes, if any.
    pub fn push(&mut self, frame: Frame) -> Option<Clip> {
        if self.is_full() {
            return None;
        }
        let first = self.next_clip * self.stride;
        if frame.position < first {
            return None;
        }
        self.buf.push_back(frame);
        let last = first + self.frames - 1;
        if self.buf.back().map(|f| f.position) != Some(last) {
            return None;
        }
        // The buffer holds exactly the positions first..=last when frames
        // arrive in order: older positions were dropped below.
        let take: Vec<&Frame> = self
            .buf
            .iter()
            .filter(|f| f.position >= first && f.position <= last)
            .collect();
        debug_assert_eq!(take.len(), self.frames);
        let mut data = Vec::with_capacity(self.frames * 3 * self.size * self.size);
        for f in &take {
            data.extend_from_slice(&f.data);
        }
        let clip = Clip {
            item: self.item.clone(),
            index: self.next_clip,
            data,
            frames: self.frames,
            height: self.size,
            width: self.size,
            times: take.iter().map(|f| f.time).collect(),
            positions: take.iter().map(|f| f.position).collect(),
        };
        self.next_clip += 1;
        let next_first = self.next_clip * self.stride;
        while self.buf.front().is_some_and(|f| f.position < next_first) {
            self.buf.pop_front();
        }
        Some(clip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(k: usize) -> Frame {
        Frame {
            position: k,
            time: k as f64 * 0.25,
            data: vec![k as f32; 3],
        }
    }

    fn run(spec: &ClipSpec, n: usize) -> Vec<Clip> {
        let mut a = ClipAssembler::new("v", spec);
        (0..n)
            .filter(|&k| spec.frame_needed(k))
            .filter_map(|k| a.push(frame(k)))
            .collect()
    }

    #[test]
    fn overlapping_and_gapped_strides() {
        let base = ClipSpec {
            frames: 3,
            size: 1,
            ..ClipSpec::default()
        };
        let overlap = ClipSpec {
            stride: 1,
            ..base.clone()
        };
        let clips = run(&overlap, 5);
        assert_eq!(clips.len(), overlap.clips_in(5));
        assert_eq!(clips[2].positions, vec![2, 3, 4]);
        assert_eq!(clips[1].data, vec![1., 1., 1., 2., 2., 2., 3., 3., 3.]);
        let gap = ClipSpec {
            stride: 5,
            ..base.clone()
        };
        let clips = run(&gap, 13);
        assert_eq!(clips.len(), gap.clips_in(13));
        assert_eq!(clips[1].positions, vec![5, 6, 7]);
        assert_eq!(clips[1].times, vec![1.25, 1.5, 1.75]);
        assert_eq!(clips[1].shape(), [3, 3, 1, 1]);
        let capped = ClipSpec {
            stride: 3,
            max_clips: Some(2),
            ..base
        };
        assert_eq!(run(&capped, 30).len(), 2);
    }
}
