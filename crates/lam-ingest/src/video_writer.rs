//! Writing MP4 video through FFmpeg (ffmpeg-next); reading is [`crate::decode`]'s.
//!
//! Writing uses H.264 through libx264 (yuv420p, CRF 15, no B-frames, a
//! keyframe every 10 frames) and falls back to FFmpeg's own MPEG-4 Part 2
//! encoder at a high bit rate when libx264 is missing.

use anyhow::{Context as _, anyhow};
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
