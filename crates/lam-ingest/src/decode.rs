//! Video decoding through FFmpeg (ffmpeg-next) and resampling to a target
//! frame rate by timestamps.
//!
//! Resampling never trusts frame counts (WebM streams report none): a grid
//! of times `start + k / fps` is laid over the stream and each grid time
//! takes the frame on screen at that time, i.e. the last decoded frame whose
//! presentation timestamp is at most the grid time (plus
//! [`TIMESTAMP_TOLERANCE`]). Decoding stops as soon as the window's end is
//! reached, so a window inside a long shared file (LeRobot v3) costs a seek
//! plus the window's frames.

use crate::error::{IngestError, Result};
use ffmpeg::format::context::Input;
use ffmpeg::frame;
use ffmpeg_next as ffmpeg;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

/// A frame counts as on screen at grid time `t` when its timestamp is at most
/// `t + TIMESTAMP_TOLERANCE` seconds; absorbs float rounding of timestamps
/// stored as f32 (LeRobot) against rational stream time bases.
pub const TIMESTAMP_TOLERANCE: f64 = 1e-3;

/// Decoder settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Decoder threads; 0 (default) lets FFmpeg pick from the core count.
    pub threads: usize,
    /// Give up on a file when reading makes no progress for this long
    /// (stuck network mounts, pipes). Default 60 s.
    pub stall_timeout: Duration,
    /// Give up on a file after this many corrupt packets or decode errors.
    /// Default 32.
    pub max_bad_packets: usize,
    /// Reject a whole-file read that ends more than
    /// `max(truncation_slack_s, 5% of duration)` before the duration the
    /// container declares (a truncated download). Default 0.5 s.
    pub truncation_slack_s: f64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            threads: 0,
            stall_timeout: Duration::from_secs(60),
            max_bad_packets: 32,
            truncation_slack_s: 0.5,
        }
    }
}

/// What a video file declares about its video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Decoder name, e.g. `h264`, `vp9`, `libdav1d`.
    pub codec: String,
    pub width: u32,
    pub height: u32,
    /// Pixel format name of decoded frames, e.g. `yuv420p`.
    pub pixel_format: String,
    /// Declared duration in seconds (stream duration, else container
    /// duration), if any.
    pub duration: Option<f64>,
    /// Average frame rate, if declared.
    pub frame_rate: Option<f64>,
    /// Declared frame count; WebM declares none.
    pub frames: Option<u64>,
    /// Timestamp of the stream's start in seconds (usually 0).
    pub start_time: f64,
}

/// The part of a file to read, in seconds of the file's timeline
/// (presentation timestamps).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// First grid time; `None` starts at the first decoded frame.
    pub start: Option<f64>,
    /// Grid times must be `< end`; `None` reads to the end of the stream.
    pub end: Option<f64>,
}

impl Window {
    /// The whole file.
    pub const ALL: Window = Window {
        start: None,
        end: None,
    };
}

/// A decoded frame picked for grid position `index`.
pub struct SampledFrame<'a> {
    /// Grid position `k`.
    pub index: usize,
    /// Grid time relative to the window's start, `k / fps` seconds.
    pub time: f64,
    /// Presentation time of the picked frame in seconds (file timeline).
    pub source_time: f64,
    /// The decoded picture (any pixel format, possibly padded rows).
    pub frame: &'a frame::Video,
}

/// Counts from one [`VideoReader::sample`] call.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleStats {
    /// Frames that came out of the decoder.
    pub decoded: usize,
    /// Grid positions covered (whether or not they were needed).
    pub positions: usize,
    /// Corrupt packets or decode errors that were passed over.
    pub bad_packets: usize,
    /// Timestamp (seconds, file timeline) at which the last decoded frame
    /// stops being shown.
    pub end_time: f64,
}

static INIT: Once = Once::new();

/// Initialises FFmpeg once and silences its log (problems reach the caller as
/// errors and in [`crate::IngestReport`]).
pub fn init() {
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Quiet);
    });
}

fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// An open video file, positioned on its best video stream.
pub struct VideoReader {
    path: PathBuf,
    input: Input,
    stream: usize,
    decoder: ffmpeg::decoder::Video,
    time_base: f64,
    info: VideoInfo,
    options: DecodeOptions,
    progress: Arc<AtomicU64>,
    fresh: bool,
}

impl VideoReader {
    /// Opens `path` and its best video stream. Errors name the file: missing,
    /// empty, not a media file, no video stream, no decoder.
    pub fn open(path: &Path, options: &DecodeOptions) -> Result<Self> {
        init();
        let meta = std::fs::metadata(path).map_err(|e| IngestError::io(path, e))?;
        if !meta.is_file() {
            return Err(IngestError::video(path, "not a regular file"));
        }
        if meta.len() == 0 {
            return Err(IngestError::video(path, "empty file (0 bytes)"));
        }
        let progress = Arc::new(AtomicU64::new(clock()));
        let watch = progress.clone();
        let limit = options.stall_timeout.as_millis() as u64;
        let input = ffmpeg::format::input_with_interrupt(path, move || {
            clock().saturating_sub(watch.load(Ordering::Relaxed)) > limit
        })
        .map_err(|e| IngestError::video(path, format!("cannot open as video: {e}")))?;
        let stream = input
            .streams()
            .best(ffmpeg::media::Type::Video)
            .ok_or_else(|| IngestError::video(path, "no video stream"))?;
        let index = stream.index();
        let tb = stream.time_base();
        if tb.numerator() <= 0 || tb.denominator() <= 0 {
            return Err(IngestError::video(
                path,
                format!("invalid stream time base {tb}"),
            ));
        }
        let time_base = f64::from(tb);
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| IngestError::video(path, format!("bad codec parameters: {e}")))?;
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: options.threads,
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(|e| {
            IngestError::video(path, format!("no decoder for the video stream: {e}"))
        })?;
        let codec = decoder
            .codec()
            .map(|c| c.name().to_string())
            .unwrap_or_else(|| "unknown".into());
        if decoder.width() == 0 || decoder.height() == 0 {
            return Err(IngestError::video(path, "video stream has no frame size"));
        }
        let stream_duration = stream.duration();
        let duration = if stream_duration > 0 {
            Some(stream_duration as f64 * time_base)
        } else if input.duration() > 0 {
            Some(input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE))
        } else {
            None
        };
        let rate = stream.avg_frame_rate();
        let frame_rate = (rate.numerator() > 0 && rate.denominator() > 0).then(|| f64::from(rate));
        let start_time = if stream.start_time() == ffmpeg::ffi::AV_NOPTS_VALUE {
            0.0
        } else {
            stream.start_time() as f64 * time_base
        };
        let info = VideoInfo {
            codec,
            width: decoder.width(),
            height: decoder.height(),
            pixel_format: decoder
                .format()
                .descriptor()
                .map(|d| d.name().to_string())
                .unwrap_or_else(|| format!("{:?}", decoder.format()).to_lowercase()),
            duration,
            frame_rate,
            frames: (stream.frames() > 0).then(|| stream.frames() as u64),
            start_time,
        };
        Ok(VideoReader {
            path: path.to_path_buf(),
            input,
            stream: index,
            decoder,
            time_base,
            info,
            options: options.clone(),
            progress,
            fresh: true,
        })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes the frames of `window` resampled to `fps`. For each grid
    /// position `k` (time `start + k / fps`, `< end`, `k < limit` when a
    /// limit is given) for which `needed(k)`
    /// holds, `f` receives the frame on screen at that time; `f` returns
    /// `Break` to stop early. Errors: unreadable or corrupt data beyond
    /// [`DecodeOptions::max_bad_packets`], a stall, a file that ends well
    /// before its declared duration (whole-file reads) or before the
    /// window's end.
    pub fn sample(
        &mut self,
        window: Window,
        fps: f64,
        limit: Option<usize>,
        needed: &dyn Fn(usize) -> bool,
        f: &mut dyn FnMut(SampledFrame<'_>) -> Result<ControlFlow<()>>,
    ) -> Result<SampleStats> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(IngestError::Spec(format!(
                "fps must be positive, got {fps}"
            )));
        }
        if let (Some(s), Some(e)) = (window.start, window.end)
            && e <= s
        {
            return Err(IngestError::video(
                &self.path,
                format!("empty time window {s:.3}..{e:.3} s"),
            ));
        }
        self.rewind(window.start)?;
        let mut grid = Grid {
            start: window.start,
            end: window.end,
            fps,
            limit,
            k: 0,
            stopped: false,
        };
        let mut stats = SampleStats::default();
        let mut prev = frame::Video::empty();
        let mut prev_t: Option<f64> = None;
        let mut step: Option<f64> = None;
        let mut cur = frame::Video::empty();
        let mut packet = ffmpeg::Packet::empty();
        let mut eof = false;
        // A packet the decoder refused with EAGAIN (its output queue is full):
        // frames are drained below, then the packet is sent again.
        let mut resend = 0usize;
        while !grid.stopped {
            if resend > 0 {
                match self.decoder.send_packet(&packet) {
                    Ok(()) => resend = 0,
                    Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                        resend += 1;
                        if resend > 64 {
                            return Err(IngestError::video(
                                &self.path,
                                "decoder stuck: accepts no input and gives no frames",
                            ));
                        }
                    }
                    Err(e) => {
                        resend = 0;
                        self.bad(&mut stats, &format!("decode error: {e}"))?;
                        continue;
                    }
                }
            } else if !eof {
                self.progress.store(clock(), Ordering::Relaxed);
                match packet.read(&mut self.input) {
                    Ok(()) => {
                        if packet.stream() != self.stream {
                            continue;
                        }
                        match self.decoder.send_packet(&packet) {
                            Ok(()) => {}
                            Err(ffmpeg::Error::Other { errno })
                                if errno == ffmpeg::util::error::EAGAIN =>
                            {
                                resend = 1;
                            }
                            Err(e) => {
                                self.bad(&mut stats, &format!("decode error: {e}"))?;
                                continue;
                            }
                        }
                    }
                    Err(ffmpeg::Error::Eof) => {
                        eof = true;
                        let _ = self.decoder.send_eof();
                    }
                    Err(ffmpeg::Error::InvalidData) => {
                        self.bad(&mut stats, "corrupt packet")?;
                        continue;
                    }
                    Err(ffmpeg::Error::Exit) => {
                        return Err(IngestError::video(
                            &self.path,
                            format!(
                                "stalled: no read progress for {:.0} s",
                                self.options.stall_timeout.as_secs_f64()
                            ),
                        ));
                    }
                    Err(e) => {
                        return Err(IngestError::video(&self.path, format!("read error: {e}")));
                    }
                }
            }
            let mut got_any = false;
            loop {
                match self.decoder.receive_frame(&mut cur) {
                    Ok(()) => {}
                    Err(ffmpeg::Error::Eof) => break,
                    Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {
                        break;
                    }
                    Err(e) => {
                        self.bad(&mut stats, &format!("decode error: {e}"))?;
                        break;
                    }
                }
                got_any = true;
                stats.decoded += 1;
                let t = match cur.timestamp().or(cur.pts()) {
                    Some(ts) => ts as f64 * self.time_base,
                    None => prev_t.map_or(self.info.start_time, |p| p + step.unwrap_or(1.0 / fps)),
                };
                if let Some(p) = prev_t {
                    if t <= p {
                        // Out-of-order or duplicate timestamp: the earlier
                        // frame stays on screen.
                        continue;
                    }
                    step = Some(t - p);
                }
                if grid.start.is_none() {
                    grid.start = Some(t);
                }
                // Grid times before this frame's timestamp show the previous
                // frame (or this one when it is the first: nothing earlier
                // exists to show).
                let shown = if prev_t.is_some() { &prev } else { &cur };
                let shown_t = prev_t.unwrap_or(t);
                grid.emit_before(t, shown, shown_t, &mut stats, needed, f)?;
                if grid.stopped {
                    break;
                }
                std::mem::swap(&mut prev, &mut cur);
                prev_t = Some(t);
            }
            if eof && !got_any {
                break;
            }
        }
        let Some(last_t) = prev_t else {
            if grid.stopped {
                return Ok(stats);
            }
            return Err(IngestError::video(&self.path, "no decodable video frames"));
        };
        let frame_step = step
            .or(self.info.frame_rate.map(|r| 1.0 / r))
            .unwrap_or(1.0 / fps);
        stats.end_time = last_t + frame_step;
        if !grid.stopped {
            let end = match window.end {
                Some(e) => {
                    if stats.end_time + 2.0 * frame_step < e {
                        return Err(IngestError::video(
                            &self.path,
                            format!(
                                "video ends at {:.3} s but frames up to {e:.3} s are needed",
                                stats.end_time
                            ),
                        ));
                    }
                    e
                }
                None => {
                    if let Some(d) = self.info.duration {
                        let declared_end = self.info.start_time + d;
                        let slack = self.options.truncation_slack_s.max(0.05 * d);
                        if stats.end_time + slack < declared_end {
                            return Err(IngestError::video(
                                &self.path,
                                format!(
                                    "truncated or damaged: frames stop at {:.3} s of a declared {:.3} s",
                                    stats.end_time - self.info.start_time,
                                    d
                                ),
                            ));
                        }
                    }
                    stats.end_time
                }
            };
            grid.end = Some(end);
            grid.emit_before(f64::INFINITY, &prev, last_t, &mut stats, needed, f)?;
        }
        Ok(stats)
    }

    /// Positions the demuxer so that the frame on screen at `start` is
    /// decoded next (seek to the keyframe at or before it).
    fn rewind(&mut self, start: Option<f64>) -> Result<()> {
        let target = start.unwrap_or(self.info.start_time);
        if self.fresh && target <= self.info.start_time + TIMESTAMP_TOLERANCE {
            self.fresh = false;
            return Ok(());
        }
        self.fresh = false;
        let ts = (target * f64::from(ffmpeg::ffi::AV_TIME_BASE)) as i64;
        self.progress.store(clock(), Ordering::Relaxed);
        self.input.seek(ts, ..ts + 1).map_err(|e| {
            IngestError::video(&self.path, format!("cannot seek to {target:.3} s: {e}"))
        })?;
        self.decoder.flush();
        Ok(())
    }

    fn bad(&self, stats: &mut SampleStats, what: &str) -> Result<()> {
        stats.bad_packets += 1;
        if stats.bad_packets > self.options.max_bad_packets {
            return Err(IngestError::video(
                &self.path,
                format!("corrupt: {} bad packets (last: {what})", stats.bad_packets),
            ));
        }
        Ok(())
    }
}

/// The resampling grid of one [`VideoReader::sample`] call.
struct Grid {
    start: Option<f64>,
    end: Option<f64>,
    fps: f64,
    limit: Option<usize>,
    k: usize,
    stopped: bool,
}

impl Grid {
    fn time(&self, k: usize) -> f64 {
        self.start.unwrap_or(0.0) + k as f64 / self.fps
    }

    /// Assigns `shown` to every grid time before the frame at `next_t`
    /// appears, stopping at the window's end.
    fn emit_before(
        &mut self,
        next_t: f64,
        shown: &frame::Video,
        shown_t: f64,
        stats: &mut SampleStats,
        needed: &dyn Fn(usize) -> bool,
        f: &mut dyn FnMut(SampledFrame<'_>) -> Result<ControlFlow<()>>,
    ) -> Result<()> {
        loop {
            if self.limit.is_some_and(|l| self.k >= l) {
                self.stopped = true;
                return Ok(());
            }
            let t = self.time(self.k);
            if let Some(e) = self.end
                && t >= e - TIMESTAMP_TOLERANCE
            {
                self.stopped = true;
                return Ok(());
            }
            if t + TIMESTAMP_TOLERANCE >= next_t {
                return Ok(());
            }
            if !t.is_finite() {
                self.stopped = true;
                return Ok(());
            }
            stats.positions += 1;
            if needed(self.k) {
                let sampled = SampledFrame {
                    index: self.k,
                    time: self.k as f64 / self.fps,
                    source_time: shown_t,
                    frame: shown,
                };
                if f(sampled)?.is_break() {
                    self.stopped = true;
                    return Ok(());
                }
            }
            self.k += 1;
        }
    }
}
