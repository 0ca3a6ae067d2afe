//! Decoding, resampling and preprocessing of real encoded videos.

mod common;

use common::*;
use lam_ingest::*;
use std::path::Path;

fn spec(fps: f64, frames: usize, size: u32) -> ClipSpec {
    ClipSpec {
        fps,
        frames,
        size,
        stride: frames,
        ..ClipSpec::default()
    }
}

fn all_frames(path: &Path, spec: &ClipSpec) -> Vec<Frame> {
    let mut out = Vec::new();
    for_each_video_frame(
        path,
        Window::ALL,
        spec,
        &DecodeOptions::default(),
        &mut |f| {
            out.push(f);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out
}

fn all_clips(path: &Path, spec: &ClipSpec) -> Vec<Clip> {
    let mut out = Vec::new();
    for_each_video_clip(
        path,
        Window::ALL,
        "t",
        spec,
        &DecodeOptions::default(),
        &mut |c| {
            out.push(c);
            Ok(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    out
}

fn check_resampling(codec: Codec) {
    let dir = tempfile::tempdir().unwrap();
    let path = make_video(dir.path(), "t", "testsrc=size=64x48:rate=10", 2.0, codec);
    let info = VideoReader::open(&path, &DecodeOptions::default())
        .unwrap()
        .info()
        .clone();
    assert_eq!((info.width, info.height), (64, 48), "{codec:?}");
    // 2 s at 4 fps: grid times 0, 0.25, ..., 1.75.
    let frames = all_frames(&path, &spec(4.0, 8, 32));
    assert_eq!(frames.len(), 8, "{codec:?}");
    for (k, f) in frames.iter().enumerate() {
        assert_eq!(f.position, k);
        assert!((f.time - k as f64 * 0.25).abs() < 1e-9);
        assert_eq!(f.data.len(), 3 * 32 * 32);
    }
    // Up-sampling repeats frames: 2 s at 15 fps gives 30 frames.
    assert_eq!(all_frames(&path, &spec(15.0, 1, 16)).len(), 30, "{codec:?}");
    // Clips of 4 with stride 4: two clips [4, 3, 32, 32].
    let clips = all_clips(&path, &spec(4.0, 4, 32));
    assert_eq!(clips.len(), 2);
    assert_eq!(clips[1].shape(), [4, 3, 32, 32]);
    assert_eq!(clips[1].positions, vec![4, 5, 6, 7]);
    assert_eq!(
        clips[1].data,
        frames[4..8]
            .iter()
            .flat_map(|f| f.data.clone())
            .collect::<Vec<_>>()
    );
}

#[test]
fn h264_mp4_resamples_by_timestamp() {
    check_resampling(Codec::H264);
}

#[test]
fn vp9_webm_resamples_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let p = make_video(
        dir.path(),
        "t",
        "testsrc=size=64x48:rate=10",
        1.0,
        Codec::Vp9,
    );
    // WebM declares no frame count; resampling works from timestamps.
    let info = VideoReader::open(&p, &DecodeOptions::default())
        .unwrap()
        .info()
        .clone();
    assert_eq!(info.frames, None);
    assert_eq!(info.codec, "vp9");
    check_resampling(Codec::Vp9);
}

#[test]
fn av1_mp4_resamples_by_timestamp() {
    check_resampling(Codec::Av1);
}

#[test]
fn known_colour_normalises_to_imagenet_values() {
    let dir = tempfile::tempdir().unwrap();
    // Odd output size: RGB rows of 30 * 3 bytes are padded by swscale.
    for (name, codec) in [("red", Codec::H264), ("redvp9", Codec::Vp9)] {
        let path = make_video(
            dir.path(),
            name,
            "color=c=red:size=66x50:rate=10",
            1.0,
            codec,
        );
        let frames = all_frames(&path, &spec(4.0, 1, 30));
        assert_eq!(frames.len(), 4);
        for f in &frames {
            for (c, v) in [255.0, 0.0, 0.0].into_iter().enumerate() {
                let want = imagenet(c, v);
                let plane = &f.data[c * 900..(c + 1) * 900];
                for (i, &x) in plane.iter().enumerate() {
                    assert!(
                        (x - want).abs() <= tol(c, 4.0),
                        "{name} channel {c} pixel {i}: {x} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn frames_follow_timestamps_across_a_colour_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.mp4");
    let p = path.to_string_lossy().to_string();
    // 1 s red then 1 s blue at 10 fps, x264 with B-frames (reordered output).
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=64x48:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:size=64x48:rate=10:duration=1",
        "-filter_complex",
        "[0:v][1:v]concat=n=2:v=1[v]",
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-bf",
        "3",
        "-pix_fmt",
        "yuv420p",
        &p,
    ]);
    let frames = all_frames(&path, &spec(4.0, 1, 8));
    assert_eq!(frames.len(), 8);
    for f in &frames {
        let red = f.data[0] > 0.0;
        assert_eq!(red, f.time < 1.0, "frame at {} s", f.time);
    }
}

#[test]
fn centre_crop_keeps_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bands.mp4");
    let p = path.to_string_lossy().to_string();
    // 96x48: blue | red | green bands of 32 columns each.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:size=32x48:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=32x48:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "color=c=0x00FF00:size=32x48:rate=10:duration=1",
        "-filter_complex",
        "[0:v][1:v][2:v]hstack=inputs=3[v]",
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv444p",
        "-qp",
        "0",
        &p,
    ]);
    // Short side 48 -> 24, so 96x48 -> 48x24; the crop keeps columns 12..36
    // of the resized picture, i.e. 24..72 of the source: 8 blue, 32 red, 8 green.
    let geo = Geometry::new(96, 48, 24);
    assert_eq!(
        (geo.scaled_width, geo.scaled_height, geo.crop_x, geo.crop_y),
        (48, 24, 12, 0)
    );
    let frames = all_frames(&path, &spec(4.0, 1, 24));
    let f = &frames[0];
    let px = |c: usize, x: usize| f.data[c * 576 + 12 * 24 + x];
    let is = |x: usize, rgb: [f32; 3]| {
        (0..3).all(|c| (px(c, x) - imagenet(c, rgb[c])).abs() <= tol(c, 6.0))
    };
    for x in [0, 1, 2] {
        assert!(is(x, [0.0, 0.0, 255.0]), "column {x} should be blue");
    }
    for x in [6, 12, 17] {
        assert!(is(x, [255.0, 0.0, 0.0]), "column {x} should be red");
    }
    for x in [22, 23] {
        assert!(is(x, [0.0, 255.0, 0.0]), "column {x} should be green");
    }
}

#[test]
fn window_seeks_inside_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.mp4");
    let p = path.to_string_lossy().to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=red:size=64x48:rate=10:duration=1",
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:size=64x48:rate=10:duration=1",
        "-filter_complex",
        "[0:v][1:v]concat=n=2:v=1[v]",
        "-map",
        "[v]",
        "-c:v",
        "libx264",
        "-g",
        "5",
        "-pix_fmt",
        "yuv420p",
        &p,
    ]);
    let mut frames = Vec::new();
    let window = Window {
        start: Some(0.8),
        end: Some(1.6),
    };
    for_each_video_frame(
        &path,
        window,
        &spec(10.0, 1, 8),
        &DecodeOptions::default(),
        &mut |f| {
            frames.push(f);
            Ok(())
        },
    )
    .unwrap();
    // Grid 0.8, 0.9, ..., 1.5 (times relative to the window start).
    assert_eq!(frames.len(), 8);
    assert!((frames[2].time - 0.2).abs() < 1e-9);
    let red: Vec<bool> = frames.iter().map(|f| f.data[0] > 0.0).collect();
    assert_eq!(
        red,
        vec![true, true, false, false, false, false, false, false]
    );
}

#[test]
fn frames_offline_and_frames_given_as_pixels_are_prepared_identically() {
    // A losslessly stored RGB video: the clip pipeline decodes it to the very bytes a robot
    // loop would send, so both paths must give the same tensors at every size.
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("rgb.avi");
    let raw = dir.path().join("rgb.raw");
    let (v, r) = (
        video.to_string_lossy().to_string(),
        raw.to_string_lossy().to_string(),
    );
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=40x30:rate=10",
        "-t",
        "0.5",
        "-c:v",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        &v,
    ]);
    ffmpeg(&["-i", &v, "-f", "rawvideo", "-pix_fmt", "rgb24", &r]);
    let bytes = std::fs::read(&raw).unwrap();
    let per = 40 * 30 * 3;
    assert_eq!(bytes.len() % per, 0);
    for size in [16u32, 24, 30] {
        let offline = all_frames(&video, &spec(10.0, 1, size));
        assert!(
            offline.len() >= 3,
            "{} frames at size {size}",
            offline.len()
        );
        let norm = Normalization::IMAGENET;
        let mut pre = Preprocessor::new(size, &norm);
        for (k, f) in offline.iter().take(3).enumerate() {
            let mut online = Vec::new();
            pre.process_rgb(&bytes[k * per..(k + 1) * per], 40, 30, &mut online)
                .unwrap();
            assert_eq!(online, f.data, "frame {k} at size {size}");
        }
    }
}

#[test]
fn phases_start_a_clip_at_every_step_of_a_block() {
    let dir = tempfile::tempdir().unwrap();
    // 2 s of testsrc at 10 fps: every frame differs (its counter and moving pattern).
    let path = testsrc(dir.path(), "t", 64, 48, 10, 2.0);
    let every = all_frames(&path, &spec(10.0, 1, 32));
    assert_eq!(every.len(), 20);
    // Clips of 2 frames 5 steps apart (2 fps), stride 1, on 5 grids: one clip per start step.
    let phased = ClipSpec {
        stride: 1,
        phases: 5,
        ..spec(2.0, 2, 32)
    };
    let clips = all_clips(&path, &phased);
    // Each grid holds 4 frames (times p/10 + k/2 < 2 s), so 3 clips per phase.
    assert_eq!(clips.len(), 15);
    let mut indices: Vec<usize> = clips.iter().map(|c| c.index).collect();
    indices.sort();
    assert_eq!(indices, (0..15).collect::<Vec<_>>());
    for c in &clips {
        // Clip c of phase p starts at step 5 c + p, which is its index c P + p; times are on
        // the item's clock.
        let first = c.index;
        assert!(
            (c.times[0] - first as f64 / 10.0).abs() < 1e-9,
            "{:?}",
            c.times
        );
        assert!((c.times[1] - c.times[0] - 0.5).abs() < 1e-9);
        assert_eq!(c.frame(0), every[first].data.as_slice(), "clip {}", c.index);
        assert_eq!(
            c.frame(1),
            every[first + 5].data.as_slice(),
            "clip {}",
            c.index
        );
    }
    // One grid is today's clips exactly.
    let single = all_clips(
        &path,
        &ClipSpec {
            phases: 1,
            ..phased
        },
    );
    let phase0: Vec<_> = clips.iter().filter(|c| c.index % 5 == 0).collect();
    assert_eq!(single.len(), phase0.len());
    for (a, b) in single.iter().zip(phase0) {
        assert_eq!(
            (a.index * 5, &a.times, &a.data),
            (b.index, &b.times, &b.data)
        );
    }
}
