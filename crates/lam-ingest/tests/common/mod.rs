//! Test helpers: small videos made with the ffmpeg command-line tool.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `ffmpeg` with `args`, panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect(
            "the ffmpeg command-line tool is needed by these tests (tools/setup.sh installs it)",
        );
    assert!(
        out.status.success(),
        "ffmpeg {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the installed ffmpeg has encoder `name`.
pub fn has_encoder(name: &str) -> bool {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .expect(
            "the ffmpeg command-line tool is needed by these tests (tools/setup.sh installs it)",
        );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(name))
}

/// Video codecs the tests encode with.
#[derive(Clone, Copy, Debug)]
pub enum Codec {
    H264,
    Vp9,
    Av1,
}

impl Codec {
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Vp9 => "webm",
            _ => "mp4",
        }
    }

    /// Encoder arguments, or `None` when this ffmpeg lacks an encoder.
    pub fn args(self) -> Option<Vec<&'static str>> {
        let v = match self {
            Codec::H264 => vec![
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-pix_fmt",
                "yuv420p",
            ],
            Codec::Vp9 => vec![
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "200k",
                "-pix_fmt",
                "yuv420p",
            ],
            Codec::Av1 => {
                // libaom takes any size (SVT-AV1 wants 64+ rows).
                if has_encoder("libaom-av1") {
                    vec![
                        "-c:v",
                        "libaom-av1",
                        "-cpu-used",
                        "8",
                        "-row-mt",
                        "1",
                        "-pix_fmt",
                        "yuv420p",
                    ]
                } else {
                    return None;
                }
            }
        };
        if matches!(self, Codec::H264) && !has_encoder("libx264") {
            return None;
        }
        if matches!(self, Codec::Vp9) && !has_encoder("libvpx-vp9") {
            return None;
        }
        Some(v)
    }
}

/// Encodes lavfi `source` (e.g. `testsrc=size=64x48:rate=10`) for
/// `seconds` into `dir/name.<ext>`. A missing encoder fails the test (a test that
/// passes without running proves nothing): `bash tools/setup.sh` installs an ffmpeg with
/// libx264, libvpx-vp9 and libaom-av1.
pub fn make_video(dir: &Path, name: &str, source: &str, seconds: f64, codec: Codec) -> PathBuf {
    let Some(args) = codec.args() else {
        panic!(
            "this ffmpeg has no encoder for {codec:?} (libx264 / libvpx-vp9 / libaom-av1 or \
             libsvtav1); install the one tools/setup.sh installs"
        );
    };
    let path = dir.join(format!("{name}.{}", codec.extension()));
    let t = seconds.to_string();
    let mut all = vec!["-f", "lavfi", "-i", source, "-t", &t];
    all.extend(args);
    let p = path.to_string_lossy().to_string();
    all.push(&p);
    ffmpeg(&all);
    path
}

/// h264 mp4 of `testsrc` at `w x h`, `rate` fps, `seconds` long.
pub fn testsrc(dir: &Path, name: &str, w: u32, h: u32, rate: u32, seconds: f64) -> PathBuf {
    let src = format!("testsrc=size={w}x{h}:rate={rate}");
    make_video(dir, name, &src, seconds, Codec::H264)
}

/// Expected normalised value of 8-bit `v` in channel `c` with ImageNet statistics.
pub fn imagenet(c: usize, v: f32) -> f32 {
    let mean = [0.485, 0.456, 0.406];
    let std = [0.229, 0.224, 0.225];
    (v / 255.0 - mean[c]) / std[c]
}

/// Tolerance for `levels` 8-bit levels of codec error in channel `c`.
pub fn tol(c: usize, levels: f32) -> f32 {
    let std = [0.229, 0.224, 0.225];
    levels / 255.0 / std[c]
}
