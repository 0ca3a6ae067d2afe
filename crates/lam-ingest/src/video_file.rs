//! MP4 video in and out through FFmpeg (ffmpeg-next).
//!
//! Writing uses H.264 through libx264 (yuv420p, CRF 15, no B-frames, a
//! keyframe every 10 frames) and falls back to FFmpeg's own MPEG-4 Part 2
//! encoder at a high bit rate when libx264 is missing. Reading decodes every
//! frame to RGB with its presentation time.

use anyhow::{Context as _, anyhow, bail};
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{context::Context as Scaler, flag::Flags as ScaleFlags};
use ffmpeg::util::frame::video::Video as Frame;
use ffmpeg_next as ffmpeg;
use std::path::{Path, PathBuf};
use std::sync::Once;

static INIT: Once = Once::new();

fn init() {
    INIT.call_once(|| {
        // Initialisation only registers codecs; it cannot fail on FFmpeg >= 4.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// Name of the codec [`VideoWriter`] uses on this machine: `"h264"` when
/// libx264 is available, else `"mpeg4"`.
pub fn output_codec() -> &'static str {
    init();
    if ffmpeg::encoder::find_by_name("libx264").is_some() {
        "h264"
    } else {
        "mpeg4"
    }
}

/// Writes RGB frames of a fixed size to an MP4 file.
pub struct VideoWriter {
    path: PathBuf,
    octx: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Video,
    scaler: Scaler,
    rgb: Frame,
    yuv: Frame,
    enc_tb: ffmpeg::Rational,
    ost_tb: ffmpeg::Rational,
    width: u32,
    height: u32,
    pts: i64,
}

impl VideoWriter {
    /// Creates `path` for `width` x `height` frames (both even) at `fps`.
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> anyhow::Result<Self> {
        init();
        anyhow::ensure!(
            width.is_multiple_of(2) && height.is_multiple_of(2),
            "video {}: frame size {width}x{height} must be even",
            path.display()
        );
        let mut octx = ffmpeg::format::output(&path)
            .with_context(|| format!("cannot create video file {}", path.display()))?;
        let global_header = octx
            .format()
            .flags()
            .contains(ffmpeg::format::Flags::GLOBAL_HEADER);
        let (codec, x264) = match ffmpeg::encoder::find_by_name("libx264") {
            Some(c) => (c, true),
            None => (
                ffmpeg::encoder::find(ffmpeg::codec::Id::MPEG4)
                    .ok_or_else(|| anyhow!("FFmpeg has neither libx264 nor mpeg4 encoders"))?,
                false,
            ),
        };
        let mut ost = octx.add_stream(codec)?;
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()?;
        let enc_tb = ffmpeg::Rational(1, fps as i32);
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(enc_tb);
        enc.set_frame_rate(Some(ffmpeg::Rational(fps as i32, 1)));
        enc.set_gop(10);
        enc.set_max_b_frames(0);
        if global_header {
            enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = ffmpeg::Dictionary::new();
        if x264 {
            opts.set("preset", "veryfast");
            opts.set("crf", "15");
            opts.set("x264-params", "log-level=error");
        } else {
            enc.set_bit_rate((width * height * fps * 2) as usize);
        }
        let encoder = enc
            .open_with(opts)
            .with_context(|| format!("cannot open the video encoder for {}", path.display()))?;
        ost.set_parameters(&encoder);
        octx.write_header()
            .with_context(|| format!("cannot write the header of {}", path.display()))?;
        let ost_tb = octx
            .stream(0)
            .ok_or_else(|| anyhow!("video {} lost its stream", path.display()))?
            .time_base();
        let scaler = Scaler::get(
            Pixel::RGB24,
            width,
            height,
            Pixel::YUV420P,
            width,
            height,
            ScaleFlags::BILINEAR,
        )?;
        Ok(Self {
            path: path.to_path_buf(),
            octx,
            encoder,
            scaler,
            rgb: Frame::new(Pixel::RGB24, width, height),
            yuv: Frame::new(Pixel::YUV420P, width, height),
            enc_tb,
            ost_tb,
            width,
            height,
            pts: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> i64 {
        self.pts
    }

    /// Appends one RGB frame (`width * height * 3` bytes, row-major).
    pub fn push(&mut self, rgb: &[u8]) -> anyhow::Result<()> {
        let row = self.width as usize * 3;
        anyhow::ensure!(
            rgb.len() == row * self.height as usize,
            "video {}: frame has {} bytes, expected {}",
            self.path.display(),
            rgb.len(),
            row * self.height as usize
        );
        let stride = self.rgb.stride(0);
        let data = self.rgb.data_mut(0);
        for (y, src) in rgb.chunks_exact(row).enumerate() {
            data[y * stride..y * stride + row].copy_from_slice(src);
        }
        self.scaler.run(&self.rgb, &mut self.yuv)?;
        self.yuv.set_pts(Some(self.pts));
        self.pts += 1;
        self.encoder.send_frame(&self.yuv)?;
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            // Every frame lasts one tick; without a duration the MP4 edit
            // list would end at the last frame's start and hide that frame.
            packet.set_duration(1);
            packet.rescale_ts(self.enc_tb, self.ost_tb);
            packet
                .write_interleaved(&mut self.octx)
                .with_context(|| format!("cannot write to {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Flushes the encoder and closes the file.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.encoder.send_eof()?;
        self.drain()?;
        self.octx
            .write_trailer()
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        Ok(())
    }
}

/// A decoded video: RGB frames with their presentation times.
pub struct DecodedVideo {
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Presentation time of each frame, seconds.
    pub times: Vec<f64>,
    /// RGB frames, `width * height * 3` bytes each.
    pub frames: Vec<Vec<u8>>,
}

/// Decodes the frames of `path` whose time lies in `[from, to)` seconds
/// (all frames when `range` is `None`).
pub fn read_video(path: &Path, range: Option<(f64, f64)>) -> anyhow::Result<DecodedVideo> {
    init();
    if !path.is_file() {
        bail!("video file {} does not exist", path.display());
    }
    let mut ictx = ffmpeg::format::input(&path)
        .with_context(|| format!("cannot open video {}", path.display()))?;
    let stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| anyhow!("video {} has no video stream", path.display()))?;
    let index = stream.index();
    let tb = stream.time_base();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())?
        .decoder()
        .video()
        .with_context(|| format!("cannot decode video {}", path.display()))?;
    let (width, height) = (decoder.width(), decoder.height());
    let mut scaler = Scaler::get(
        decoder.format(),
        width,
        height,
        Pixel::RGB24,
        width,
        height,
        ScaleFlags::BILINEAR,
    )?;
    let mut out = DecodedVideo {
        width,
        height,
        times: vec![],
        frames: vec![],
    };
    let tb = f64::from(tb.numerator()) / f64::from(tb.denominator());
    let mut take =
        |decoder: &mut ffmpeg::decoder::Video, out: &mut DecodedVideo| -> anyhow::Result<()> {
            let mut decoded = Frame::empty();
            while decoder.receive_frame(&mut decoded).is_ok() {
                let t = decoded.timestamp().or(decoded.pts()).unwrap_or(0) as f64 * tb;
                if let Some((from, to)) = range
                    && (t < from - 1e-6 || t >= to - 1e-6)
                {
                    continue;
                }
                let mut rgb = Frame::empty();
                scaler.run(&decoded, &mut rgb)?;
                let row = width as usize * 3;
                let stride = rgb.stride(0);
                let mut buf = Vec::with_capacity(row * height as usize);
                for y in 0..height as usize {
                    buf.extend_from_slice(&rgb.data(0)[y * stride..y * stride + row]);
                }
                out.times.push(t);
                out.frames.push(buf);
            }
            Ok(())
        };
    if let Some((from, _)) = range
        && from > 0.0
    {
        let ts = (from * 1.0e6) as i64;
        // FFmpeg seeks in microseconds here. Seek to the keyframe at or before `from`; decoding from there
        // reaches the wanted frames. A failed seek falls back to a full scan.
        let _ = ictx.seek(ts, ..ts + 1);
    }
    for (s, packet) in ictx.packets() {
        if s.index() == index {
            decoder
                .send_packet(&packet)
                .with_context(|| format!("corrupt video data in {}", path.display()))?;
            take(&mut decoder, &mut out)?;
            // Without B-frames packets arrive in presentation order: stop
            // once they are well past the range.
            if let Some((_, to)) = range
                && packet.pts().is_some_and(|p| p as f64 * tb >= to + 1.0)
            {
                break;
            }
        }
    }
    decoder.send_eof()?;
    take(&mut decoder, &mut out)?;
    Ok(out)
}
