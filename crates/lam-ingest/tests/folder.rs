//! The video-folder source and runs over it with bad files mixed in.

mod common;

use common::*;
use lam_ingest::*;
use std::path::PathBuf;

fn small_spec() -> ClipSpec {
    ClipSpec {
        fps: 4.0,
        frames: 4,
        size: 16,
        stride: 4,
        ..ClipSpec::default()
    }
}

/// Good videos in nested folders plus every kind of bad file.
fn mixed_folder(dir: &std::path::Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let sub = dir.join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let mut good = vec![
        testsrc(dir, "one", 64, 48, 10, 2.0),
        testsrc(&sub, "two", 48, 64, 12, 3.0),
    ];
    good.push(make_video(
        &dir.join("a"),
        "three",
        "testsrc=size=64x48:rate=10",
        2.0,
        Codec::Vp9,
    ));
    // Upper-case extension is still a video.
    let upper = dir.join("a/FOUR.MP4");
    std::fs::copy(&good[0], &upper).unwrap();
    good.push(upper);
    let mut bad = Vec::new();
    // Truncated mp4 (index at the end is lost) and truncated webm.
    let full = testsrc(dir, "long", 64, 48, 10, 4.0);
    let bytes = std::fs::read(&full).unwrap();
    std::fs::remove_file(&full).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    bad.push(cut);
    let w = make_video(dir, "longw", "testsrc=size=64x48:rate=10", 4.0, Codec::Vp9);
    let bytes = std::fs::read(&w).unwrap();
    std::fs::remove_file(&w).unwrap();
    let cut = dir.join("cut.webm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    bad.push(cut);
    // Random bytes, an empty file, text under a video name.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..50_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let rnd = dir.join("a/noise.mkv");
    std::fs::write(&rnd, noise).unwrap();
    bad.push(rnd);
    let empty = dir.join("empty.webm");
    std::fs::write(&empty, b"").unwrap();
    bad.push(empty);
    let text = dir.join("a/b/notes.avi");
    std::fs::write(&text, b"these are not frames\n").unwrap();
    bad.push(text);
    // Too short for one clip of 4 frames at 4 fps.
    let short = testsrc(dir, "short", 64, 48, 10, 0.5);
    bad.push(short);
    // Not a video extension: ignored altogether.
    std::fs::write(dir.join("readme.txt"), b"x").unwrap();
    (good, bad)
}

#[test]
fn folder_lists_videos_recursively_in_sorted_order() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = mixed_folder(dir.path());
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let ids: Vec<&str> = folder.items().iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), good.len() + bad.len());
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    assert!(ids.contains(&"a/b/two.mp4"));
    assert!(ids.contains(&"a/FOUR.MP4"));
    assert!(!ids.iter().any(|i| i.ends_with(".txt")));
}

#[test]
fn bad_files_are_skipped_counted_and_explained() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = mixed_folder(dir.path());
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let spec = small_spec();
    let mut seen = Vec::new();
    let report = run(
        &folder,
        &spec,
        &RunOptions::default(),
        &mut |item, clips| {
            for c in &clips {
                assert_eq!(c.shape(), [4, 3, 16, 16]);
                assert_eq!(c.item, item.id);
            }
            seen.push((item.id.clone(), clips.len()));
            Ok(())
        },
    )
    .unwrap();
    eprintln!("{report}");
    assert_eq!(report.ok, good.len());
    assert_eq!(report.skipped.len(), bad.len(), "{report}");
    for b in &bad {
        assert!(
            report.was_skipped(b),
            "{} not reported: {report}",
            b.display()
        );
    }
    let reason = |name: &str| {
        report
            .skipped
            .iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    assert!(reason("empty.webm").contains("empty"));
    assert!(reason("short.mp4").contains("too short"));
    if bad.iter().any(|p| p.ends_with("cut.webm")) {
        assert!(
            reason("cut.webm").contains("truncated"),
            "{}",
            reason("cut.webm")
        );
    }
    // 2 s -> 8 frames -> 2 clips; 3 s -> 12 frames -> 3 clips.
    assert!(seen.contains(&("one.mp4".into(), 2)));
    assert!(seen.contains(&("a/b/two.mp4".into(), 3)));
    assert_eq!(report.clips, seen.iter().map(|s| s.1).sum::<usize>());
}

#[test]
fn parallel_run_matches_sequential() {
    let dir = tempfile::tempdir().unwrap();
    mixed_folder(dir.path());
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let spec = small_spec();
    let collect = |workers: usize| {
        let mut out = Vec::new();
        let opts = RunOptions {
            workers,
            ..RunOptions::default()
        };
        let report = run(&folder, &spec, &opts, &mut |item, clips| {
            out.push((item.id.clone(), clips));
            Ok(())
        })
        .unwrap();
        (report, out)
    };
    let (r1, c1) = collect(1);
    let (r3, c3) = collect(3);
    assert_eq!(r1, r3);
    assert_eq!(c1, c3);
}

#[test]
fn sink_errors_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    testsrc(dir.path(), "one", 64, 48, 10, 2.0);
    testsrc(dir.path(), "two", 64, 48, 10, 2.0);
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    for workers in [1, 2] {
        let opts = RunOptions {
            workers,
            ..RunOptions::default()
        };
        let err = run(&folder, &small_spec(), &opts, &mut |_, _| {
            Err(IngestError::sink(std::io::Error::other("disk full")))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
    }
}

#[test]
fn stride_gaps_and_clip_cap() {
    let dir = tempfile::tempdir().unwrap();
    testsrc(dir.path(), "v", 64, 48, 10, 4.0);
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let item = &folder.items()[0];
    // 16 frames at 4 fps; clips of 3 every 5 frames: starts 0, 5, 10.
    let gapped = ClipSpec {
        frames: 3,
        stride: 5,
        ..small_spec()
    };
    let clips = folder.clips(item, &gapped).unwrap();
    assert_eq!(
        clips.iter().map(|c| c.positions[0]).collect::<Vec<_>>(),
        vec![0, 5, 10]
    );
    // Overlapping clips, capped at 2.
    let capped = ClipSpec {
        frames: 4,
        stride: 1,
        max_clips: Some(2),
        ..small_spec()
    };
    let clips = folder.clips(item, &capped).unwrap();
    assert_eq!(clips.len(), 2);
    assert_eq!(clips[1].positions, vec![1, 2, 3, 4]);
    assert_eq!(clips[0].frame(1), clips[1].frame(0));
}

#[test]
fn split_is_deterministic_by_video() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..6 {
        testsrc(dir.path(), &format!("v{i}"), 32, 32, 4, 1.0);
    }
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let split = Split {
        val_fraction: 0.5,
        seed: 3,
    };
    let spec = ClipSpec {
        frames: 2,
        stride: 2,
        size: 8,
        ..ClipSpec::default()
    };
    let ids = |side: Subset| {
        let mut ids = Vec::new();
        let opts = RunOptions {
            split: Some((split, side)),
            ..RunOptions::default()
        };
        run(&folder, &spec, &opts, &mut |item, _| {
            ids.push(item.id.clone());
            Ok(())
        })
        .unwrap();
        ids
    };
    let (train, val) = (ids(Subset::Train), ids(Subset::Val));
    assert_eq!(train.len() + val.len(), 6);
    assert!(train.iter().all(|i| !val.contains(i)));
    assert_eq!(train, ids(Subset::Train));
    for i in &val {
        assert_eq!(split.subset(i), Subset::Val);
    }
}

#[test]
fn missing_folder_is_an_error_naming_it() {
    let err = VideoFolder::open("/nonexistent/videos", &FolderOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("/nonexistent/videos"), "{err}");
}

#[test]
fn damaged_middles_never_kill_or_stall_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut damaged = vec![testsrc(dir.path(), "h", 64, 48, 10, 4.0)];
    damaged.push(make_video(
        dir.path(),
        "w",
        "testsrc=size=64x48:rate=10",
        4.0,
        Codec::Vp9,
    ));
    for p in &damaged {
        let mut bytes = std::fs::read(p).unwrap();
        let (mid, n) = (bytes.len() / 2, 2048.min(bytes.len() / 4));
        for (i, b) in bytes[mid..mid + n].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        std::fs::write(p, bytes).unwrap();
    }
    let folder = VideoFolder::open(dir.path(), &FolderOptions::default()).unwrap();
    let start = std::time::Instant::now();
    let report = run(
        &folder,
        &small_spec(),
        &RunOptions::default(),
        &mut |_, _| Ok(()),
    )
    .unwrap();
    eprintln!("{report}");
    // Each file is either read (decoders conceal damage) or skipped with a
    // reason; nothing panics or hangs.
    assert_eq!(report.ok + report.skipped.len(), damaged.len());
    assert!(report.skipped.iter().all(|(_, r)| !r.is_empty()));
    assert!(start.elapsed() < std::time::Duration::from_secs(60));
}
