//! Episode metadata: `meta/episodes.jsonl` (v2) or
//! `meta/episodes/chunk-*/file-*.parquet` (v3), resolved to file paths and
//! time ranges.

use super::columns::Columns;
use super::info::{Info, Layout};
use super::template::{Value, render};
use crate::error::{IngestError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where one camera of an episode lives.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeVideo {
    pub path: PathBuf,
    /// Time in the video file (seconds) of the episode's first frame: 0 in
    /// v2, `videos/<key>/from_timestamp` in v3.
    pub from_timestamp: f64,
    /// End of the episode in the video file (seconds, exclusive).
    pub to_timestamp: f64,
}

/// One episode of a LeRobot dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// `episode_index`.
    pub index: u64,
    /// Frames (rows) in the episode.
    pub length: u64,
    /// Task descriptions (language instructions).
    pub tasks: Vec<String>,
    /// Parquet file holding the episode's rows (shared by many episodes in v3).
    pub data_path: PathBuf,
    /// Cameras by video key.
    pub videos: BTreeMap<String, EpisodeVideo>,
}

#[derive(Deserialize)]
struct JsonlEpisode {
    episode_index: u64,
    #[serde(default)]
    tasks: Vec<String>,
    length: u64,
}

fn path_err(root: &Path, template: &str, e: String) -> IngestError {
    IngestError::dataset(
        root.join("meta/info.json"),
        format!("bad path template: {e} ({template})"),
    )
}

/// Reads the episode list of the dataset at `root`, sorted by index.
pub fn read_episodes(root: &Path, info: &Info, cameras: &[String]) -> Result<Vec<Episode>> {
    let mut eps = match info.layout() {
        Layout::V2 => read_v2(root, info, cameras)?,
        Layout::V3 => read_v3(root, info, cameras)?,
    };
    eps.sort_by_key(|e| e.index);
    Ok(eps)
}

fn read_v2(root: &Path, info: &Info, cameras: &[String]) -> Result<Vec<Episode>> {
    let path = root.join("meta/episodes.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| IngestError::io(&path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ep: JsonlEpisode = serde_json::from_str(line)
            .map_err(|e| IngestError::dataset(&path, format!("line {}: {e}", n + 1)))?;
        let chunk = ep.episode_index / info.chunks_size;
        let data = render(
            &info.data_path,
            &[
                ("episode_chunk", Value::Int(chunk)),
                ("episode_index", Value::Int(ep.episode_index)),
            ],
        )
        .map_err(|e| path_err(root, &info.data_path, e))?;
        let mut videos = BTreeMap::new();
        if let Some(vt) = &info.video_path {
            for key in cameras {
                let v = render(
                    vt,
                    &[
                        ("episode_chunk", Value::Int(chunk)),
                        ("video_key", Value::Str(key)),
                        ("episode_index", Value::Int(ep.episode_index)),
                    ],
                )
                .map_err(|e| path_err(root, vt, e))?;
                videos.insert(
                    key.clone(),
                    EpisodeVideo {
                        path: root.join(v),
                        from_timestamp: 0.0,
                        to_timestamp: ep.length as f64 / info.fps,
                    },
                );
            }
        }
        out.push(Episode {
            index: ep.episode_index,
            length: ep.length,
            tasks: ep.tasks,
            data_path: root.join(data),
            videos,
        });
    }
    Ok(out)
}

/// The `meta/episodes/chunk-*/file-*.parquet` files, sorted.
fn v3_episode_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("meta/episodes");
    let mut files = Vec::new();
    let chunks = std::fs::read_dir(&dir).map_err(|e| IngestError::io(&dir, e))?;
    for chunk in chunks {
        let chunk = chunk.map_err(|e| IngestError::io(&dir, e))?.path();
        if !chunk.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&chunk).map_err(|e| IngestError::io(&chunk, e))? {
            let f = f.map_err(|e| IngestError::io(&chunk, e))?.path();
            if f.extension().is_some_and(|e| e == "parquet") {
                files.push(f);
            }
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(IngestError::dataset(
            &dir,
            "no episode metadata files (chunk-*/file-*.parquet)",
        ));
    }
    Ok(files)
}

fn read_v3(root: &Path, info: &Info, cameras: &[String]) -> Result<Vec<Episode>> {
    let mut names: Vec<String> = [
        "episode_index",
        "length",
        "tasks",
        "data/chunk_index",
        "data/file_index",
    ]
    .map(String::from)
    .to_vec();
    for key in cameras {
        for f in [
            "chunk_index",
            "file_index",
            "from_timestamp",
            "to_timestamp",
        ] {
            names.push(format!("videos/{key}/{f}"));
        }
    }
    let wanted: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let mut out = Vec::new();
    for file in v3_episode_files(root)? {
        let cols = Columns::read(&file, &wanted)?;
        let index = cols.ints("episode_index")?;
        let length = cols.ints("length")?;
        let tasks = if cols.has("tasks") {
            cols.string_lists("tasks")?
        } else {
            vec![Vec::new(); cols.rows()]
        };
        let data_chunk = cols.ints("data/chunk_index")?;
        let data_file = cols.ints("data/file_index")?;
        let mut cams = Vec::new();
        for key in cameras {
            let col = |f: &str| format!("videos/{key}/{f}");
            cams.push((
                key,
                cols.ints(&col("chunk_index"))?,
                cols.ints(&col("file_index"))?,
                cols.floats(&col("from_timestamp"))?,
                cols.floats(&col("to_timestamp"))?,
            ));
        }
        for r in 0..cols.rows() {
            let data = render(
                &info.data_path,
                &[
                    ("chunk_index", Value::Int(data_chunk[r] as u64)),
                    ("file_index", Value::Int(data_file[r] as u64)),
                ],
            )
            .map_err(|e| path_err(root, &info.data_path, e))?;
            let mut videos = BTreeMap::new();
            if let Some(vt) = &info.video_path {
                for (key, ch, fi, from, to) in &cams {
                    let v = render(
                        vt,
                        &[
                            ("video_key", Value::Str(key)),
                            ("chunk_index", Value::Int(ch[r] as u64)),
                            ("file_index", Value::Int(fi[r] as u64)),
                        ],
                    )
                    .map_err(|e| path_err(root, vt, e))?;
                    videos.insert(
                        (*key).clone(),
                        EpisodeVideo {
                            path: root.join(v),
                            from_timestamp: from[r],
                            to_timestamp: to[r],
                        },
                    );
                }
            }
            out.push(Episode {
                index: index[r] as u64,
                length: length[r] as u64,
                tasks: tasks[r].clone(),
                data_path: root.join(data),
                videos,
            });
        }
    }
    Ok(out)
}
