//! LeRobot v2.1 and v3.0 datasets built on the spot: parquet written with the
//! parquet crate, videos with the ffmpeg CLI, info.json by hand.

mod common;

use arrow_array::builder::{FixedSizeListBuilder, Float32Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use common::*;
use lam_ingest::lerobot::Layout;
use lam_ingest::*;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

const FPS: f64 = 10.0;
const LENGTHS: [u64; 2] = [20, 30];
const TOP: &str = "observation.images.top";
const WRIST: &str = "observation.images.wrist";

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn vectors(rows: &[Vec<f32>], n: usize) -> ArrayRef {
    let mut b = FixedSizeListBuilder::new(Float32Builder::new(), n as i32);
    for r in rows {
        b.values().append_slice(r);
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Action of episode `e` at frame `f`: `[e, f]`; state: `[f / 10, e, 1]`.
fn action(e: u64, f: u64) -> Vec<f32> {
    vec![e as f32, f as f32]
}

fn state(e: u64, f: u64) -> Vec<f32> {
    vec![f as f32 / 10.0, e as f32, 1.0]
}

/// Frame rows of the given episodes, in order; `first_index` is the global
/// `index` of the first row.
fn frame_columns(episodes: &[u64], first_index: i64) -> Vec<(&'static str, ArrayRef)> {
    let (mut a, mut s, mut ts, mut fi, mut ei, mut idx, mut ti) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut index = first_index;
    for &e in episodes {
        for f in 0..LENGTHS[e as usize] {
            a.push(action(e, f));
            s.push(state(e, f));
            ts.push(f as f32 / FPS as f32);
            fi.push(f as i64);
            ei.push(e as i64);
            idx.push(index);
            ti.push(0i64);
            index += 1;
        }
    }
    vec![
        ("action", vectors(&a, 2)),
        ("observation.state", vectors(&s, 3)),
        ("timestamp", Arc::new(Float32Array::from(ts))),
        ("frame_index", Arc::new(Int64Array::from(fi))),
        ("episode_index", Arc::new(Int64Array::from(ei))),
        ("index", Arc::new(Int64Array::from(idx))),
        ("task_index", Arc::new(Int64Array::from(ti))),
    ]
}

fn features_json() -> String {
    let video = |k: &str| {
        format!(
            r#""{k}": {{"dtype": "video", "shape": [48, 64, 3], "names": ["height", "width", "channels"],
                "info": {{"video.fps": 10.0, "video.codec": "h264"}}}}"#
        )
    };
    format!(
        r#"{{
        "action": {{"dtype": "float32", "shape": [2], "names": ["a0", "a1"]}},
        "observation.state": {{"dtype": "float32", "shape": [3], "names": null}},
        {}, {},
        "timestamp": {{"dtype": "float32", "shape": [1], "names": null}},
        "frame_index": {{"dtype": "int64", "shape": [1], "names": null}},
        "episode_index": {{"dtype": "int64", "shape": [1], "names": null}},
        "index": {{"dtype": "int64", "shape": [1], "names": null}},
        "task_index": {{"dtype": "int64", "shape": [1], "names": null}}
    }}"#,
        video(TOP),
        video(WRIST)
    )
}

/// Episode 0 is red (2 s), episode 1 blue (3 s).
fn colour(e: u64) -> &'static str {
    ["red", "blue"][e as usize]
}

fn episode_video(dir: &Path, name: &str, e: u64, codec: Codec) -> std::path::PathBuf {
    let src = format!("color=c={}:size=64x48:rate=10", colour(e));
    make_video(dir, name, &src, LENGTHS[e as usize] as f64 / FPS, codec)
}

fn build_v21(root: &Path) {
    std::fs::create_dir_all(root.join("meta")).unwrap();
    let info = format!(
        r#"{{"codebase_version": "v2.1", "robot_type": "test", "total_episodes": 2, "total_frames": 50,
        "total_tasks": 1, "total_videos": 4, "total_chunks": 1, "chunks_size": 1000, "fps": 10,
        "splits": {{"train": "0:2"}},
        "data_path": "data/chunk-{{episode_chunk:03d}}/episode_{{episode_index:06d}}.parquet",
        "video_path": "videos/chunk-{{episode_chunk:03d}}/{{video_key}}/episode_{{episode_index:06d}}.mp4",
        "features": {}}}"#,
        features_json()
    );
    std::fs::write(root.join("meta/info.json"), info).unwrap();
    std::fs::write(
        root.join("meta/episodes.jsonl"),
        "{\"episode_index\": 0, \"tasks\": [\"push the block\"], \"length\": 20}\n\
         {\"episode_index\": 1, \"tasks\": [\"push the block\"], \"length\": 30}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("meta/tasks.jsonl"),
        "{\"task_index\": 0, \"task\": \"push the block\"}\n",
    )
    .unwrap();
    let mut start = 0;
    for e in 0..2u64 {
        write_parquet(
            &root.join(format!("data/chunk-000/episode_{e:06}.parquet")),
            frame_columns(&[e], start),
        );
        start += LENGTHS[e as usize] as i64;
        for key in [TOP, WRIST] {
            let dir = root.join(format!("videos/chunk-000/{key}"));
            std::fs::create_dir_all(&dir).unwrap();
            episode_video(&dir, &format!("episode_{e:06}"), e, Codec::H264);
        }
    }
}

fn build_v30(root: &Path) {
    std::fs::create_dir_all(root.join("meta")).unwrap();
    let info = format!(
        r#"{{"codebase_version": "v3.0", "robot_type": "test", "total_episodes": 2, "total_frames": 50,
        "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 500,
        "fps": 10, "splits": {{"train": "0:2"}},
        "data_path": "data/chunk-{{chunk_index:03d}}/file-{{file_index:03d}}.parquet",
        "video_path": "videos/{{video_key}}/chunk-{{chunk_index:03d}}/file-{{file_index:03d}}.mp4",
        "features": {}}}"#,
        features_json()
    );
    std::fs::write(root.join("meta/info.json"), info).unwrap();
    write_parquet(
        &root.join("data/chunk-000/file-000.parquet"),
        frame_columns(&[0, 1], 0),
    );
    // Both episodes in one video file per camera: red 0..2 s, blue 2..5 s.
    // AV1 (LeRobot's default codec) when this ffmpeg can encode it.
    let tmp = root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let codec = if Codec::Av1.args().is_some() {
        Codec::Av1
    } else {
        Codec::H264
    };
    let parts = [
        episode_video(&tmp, "e0", 0, codec),
        episode_video(&tmp, "e1", 1, codec),
    ];
    let list = tmp.join("list.txt");
    std::fs::write(
        &list,
        format!(
            "file '{}'\nfile '{}'\n",
            parts[0].display(),
            parts[1].display()
        ),
    )
    .unwrap();
    for key in [TOP, WRIST] {
        let out = root.join(format!("videos/{key}/chunk-000/file-000.mp4"));
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        ffmpeg(&[
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            &list.to_string_lossy(),
            "-c",
            "copy",
            &out.to_string_lossy(),
        ]);
    }
    std::fs::remove_dir_all(&tmp).unwrap();
    let mut tasks = ListBuilder::new(StringBuilder::new());
    for _ in 0..2 {
        tasks.values().append_value("push the block");
        tasks.append(true);
    }
    let ints = |v: Vec<i64>| -> ArrayRef { Arc::new(Int64Array::from(v)) };
    let floats = |v: Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let mut cols: Vec<(String, ArrayRef)> = vec![
        ("episode_index".into(), ints(vec![0, 1])),
        ("tasks".into(), Arc::new(tasks.finish())),
        ("length".into(), ints(vec![20, 30])),
        ("data/chunk_index".into(), ints(vec![0, 0])),
        ("data/file_index".into(), ints(vec![0, 0])),
        ("dataset_from_index".into(), ints(vec![0, 20])),
        ("dataset_to_index".into(), ints(vec![20, 50])),
    ];
    for key in [TOP, WRIST] {
        cols.push((format!("videos/{key}/chunk_index"), ints(vec![0, 0])));
        cols.push((format!("videos/{key}/file_index"), ints(vec![0, 0])));
        cols.push((
            format!("videos/{key}/from_timestamp"),
            floats(vec![0.0, 2.0]),
        ));
        cols.push((format!("videos/{key}/to_timestamp"), floats(vec![2.0, 5.0])));
    }
    cols.push(("meta/episodes/chunk_index".into(), ints(vec![0, 0])));
    cols.push(("meta/episodes/file_index".into(), ints(vec![0, 0])));
    write_parquet(
        &root.join("meta/episodes/chunk-000/file-000.parquet"),
        cols.iter().map(|(n, a)| (n.as_str(), a.clone())).collect(),
    );
}

fn spec() -> ClipSpec {
    ClipSpec {
        fps: 4.0,
        frames: 4,
        size: 16,
        stride: 4,
        ..ClipSpec::default()
    }
}

fn check_dataset(root: &Path, layout: Layout) {
    let ds = LeRobotDataset::open(root, &LeRobotOptions::default()).unwrap();
    assert_eq!(ds.layout(), layout);
    assert_eq!(ds.fps(), FPS);
    assert_eq!(ds.cameras(), [TOP.to_string(), WRIST.to_string()]);
    let eps: Vec<(u64, u64)> = ds.episodes().iter().map(|e| (e.index, e.length)).collect();
    assert_eq!(eps, vec![(0, 20), (1, 30)]);
    assert_eq!(ds.episodes()[1].tasks, vec!["push the block".to_string()]);
    assert_eq!(ds.action_shape(), Some(&[2usize][..]));
    assert_eq!(ds.items().len(), 4);
    assert_eq!(ds.items()[2].id, format!("episode_000001/{TOP}"));
    assert_eq!(ds.items()[2].group, "episode_000001");

    // Actions and states per episode.
    for e in 0..2u64 {
        let d = ds.episode_data(e).unwrap();
        assert_eq!(d.len(), LENGTHS[e as usize] as usize);
        let a = d.actions.as_ref().unwrap();
        let s = d.states.as_ref().unwrap();
        assert_eq!((a.rows, a.cols, s.cols), (d.len(), 2, 3));
        assert_eq!(a.row(7), action(e, 7).as_slice());
        assert_eq!(s.row(9), state(e, 9).as_slice());
        assert_eq!(d.frame_index[11], 11);
        assert!((d.timestamps[11] - 1.1).abs() < 1e-6);
    }

    // Clips: episode 0 (2 s) gives 8 frames at 4 fps -> 2 clips, all red;
    // episode 1 (3 s) 12 frames -> 3 clips, all blue, including its first
    // frame right at the episode boundary of a shared v3 file.
    let mut per_item = Vec::new();
    let report = run(&ds, &spec(), &RunOptions::default(), &mut |item, clips| {
        let e = item.episode.unwrap();
        let data = ds.episode_data(e).unwrap();
        for c in &clips {
            assert_eq!(c.shape(), [4, 3, 16, 16]);
            for t in 0..4 {
                let red = c.frame(t)[0] > 0.0;
                assert_eq!(red, e == 0, "{} clip {} frame {t}", item.id, c.index);
                // The action row of each clip frame.
                let row = data.row_at(c.times[t]).unwrap();
                assert_eq!(
                    data.frame_index[row],
                    (c.times[t] * FPS + 1e-6).floor() as i64
                );
                // Rows between two frames 0.25 s apart at 10 fps: 2 or 3.
                if t + 1 < 4 {
                    let rows = data.rows_between(c.times[t], c.times[t + 1]);
                    assert_eq!(rows.start, (c.times[t] * FPS - 1e-6).ceil() as usize);
                    assert!((2..=3).contains(&rows.len()), "{rows:?}");
                }
            }
        }
        per_item.push((item.id.clone(), clips.len()));
        Ok(())
    })
    .unwrap();
    assert!(report.skipped.is_empty(), "{report}");
    assert_eq!(report.ok, 4);
    assert_eq!(
        per_item,
        vec![
            (format!("episode_000000/{TOP}"), 2),
            (format!("episode_000000/{WRIST}"), 2),
            (format!("episode_000001/{TOP}"), 3),
            (format!("episode_000001/{WRIST}"), 3),
        ]
    );

    // One camera only.
    let top = LeRobotDataset::open(
        root,
        &LeRobotOptions {
            cameras: Some(vec![TOP.into()]),
            ..LeRobotOptions::default()
        },
    )
    .unwrap();
    assert_eq!(top.items().len(), 2);
    let bad = LeRobotDataset::open(
        root,
        &LeRobotOptions {
            cameras: Some(vec!["observation.images.side".into()]),
            ..LeRobotOptions::default()
        },
    );
    assert!(
        bad.err()
            .unwrap()
            .to_string()
            .contains("observation.images.side")
    );
}

#[test]
fn v21_dataset_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    build_v21(dir.path());
    check_dataset(dir.path(), Layout::V2);
}

#[test]
fn v30_dataset_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    build_v30(dir.path());
    check_dataset(dir.path(), Layout::V3);
}

#[test]
fn missing_video_is_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    build_v21(dir.path());
    let gone = dir
        .path()
        .join(format!("videos/chunk-000/{TOP}/episode_000001.mp4"));
    std::fs::remove_file(&gone).unwrap();
    let ds = LeRobotDataset::open(dir.path(), &LeRobotOptions::default()).unwrap();
    let report = run(&ds, &spec(), &RunOptions::default(), &mut |_, _| Ok(())).unwrap();
    assert_eq!(report.ok, 3);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, gone);
    assert!(report.skipped[0].1.contains("episode_000001"), "{report}");
}

#[test]
fn split_keeps_an_episodes_cameras_together() {
    let dir = tempfile::tempdir().unwrap();
    build_v30(dir.path());
    let ds = LeRobotDataset::open(dir.path(), &LeRobotOptions::default()).unwrap();
    let split = Split {
        val_fraction: 0.5,
        seed: 0,
    };
    for item in ds.items() {
        let same_group: Vec<Subset> = ds
            .items()
            .iter()
            .filter(|i| i.group == item.group)
            .map(|i| split.subset(&i.group))
            .collect();
        assert!(same_group.iter().all(|&s| s == same_group[0]));
    }
}

#[test]
fn bad_dataset_folders_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = LeRobotDataset::open(&missing, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope"), "{err}");

    let root = dir.path().join("ds");
    std::fs::create_dir_all(root.join("meta")).unwrap();
    let err = LeRobotDataset::open(&root, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("meta/info.json"), "{err}");

    std::fs::write(root.join("meta/info.json"), "{ not json").unwrap();
    let err = LeRobotDataset::open(&root, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("info.json") && err.contains("JSON"), "{err}");

    std::fs::write(
        root.join("meta/info.json"),
        r#"{"codebase_version": "v1.6", "fps": 10, "data_path": "x", "features": {}}"#,
    )
    .unwrap();
    let err = LeRobotDataset::open(&root, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("info.json") && err.contains("v1.6"), "{err}");

    std::fs::write(
        root.join("meta/info.json"),
        r#"{"codebase_version": "v2.1", "data_path": "x", "features": {}}"#,
    )
    .unwrap();
    let err = LeRobotDataset::open(&root, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("info.json") && err.contains("fps"), "{err}");

    // Valid info.json, no episode list.
    build_v21(&root);
    std::fs::remove_file(root.join("meta/episodes.jsonl")).unwrap();
    let err = LeRobotDataset::open(&root, &LeRobotOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("episodes.jsonl"), "{err}");
}
