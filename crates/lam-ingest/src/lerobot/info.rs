//! `meta/info.json`: version, frame rate, path templates and features.

use crate::error::{IngestError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The two directory layouts lam reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v2.0 / v2.1: one parquet file and one video per camera per episode;
    /// episodes listed in `meta/episodes.jsonl`.
    V2,
    /// v3.0: many episodes per parquet and video file; episodes listed in
    /// `meta/episodes/chunk-*/file-*.parquet` with their row and time ranges.
    V3,
}

/// One entry of `features`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Feature {
    /// `video`, `image`, `float32`, `int64`, `string`...
    pub dtype: String,
    #[serde(default)]
    pub shape: Vec<usize>,
    /// Names of the vector's components, as the dataset gives them.
    #[serde(default)]
    pub names: Option<serde_json::Value>,
}

/// The parts of `meta/info.json` lam uses.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Info {
    /// `v2.0`, `v2.1` or `v3.0`.
    pub codebase_version: String,
    /// Frame rate of the dataset's rows and videos.
    pub fps: f64,
    #[serde(default)]
    pub robot_type: Option<String>,
    #[serde(default)]
    pub total_episodes: u64,
    #[serde(default)]
    pub total_frames: u64,
    /// Episodes (v2) or files (v3) per chunk folder. Default 1000.
    #[serde(default = "default_chunks_size")]
    pub chunks_size: u64,
    /// Template of the parquet paths.
    pub data_path: String,
    /// Template of the video paths; absent when the dataset has no video.
    #[serde(default)]
    pub video_path: Option<String>,
    pub features: BTreeMap<String, Feature>,
    /// The whole file as parsed JSON (what a writer added beyond the fields above, e.g. a
    /// lam recording's `lam_sim` provenance).
    #[serde(skip)]
    pub raw: serde_json::Value,
}

fn default_chunks_size() -> u64 {
    1000
}

impl Info {
    /// Reads and checks `path` (a `meta/info.json`). Errors name the file and
    /// the problem: missing, not JSON, missing field, unknown version,
    /// non-positive fps.
    pub fn read(path: &Path) -> Result<Info> {
        let text = std::fs::read_to_string(path).map_err(|e| IngestError::io(path, e))?;
        let json_error = |source| IngestError::Json {
            path: path.to_path_buf(),
            source,
        };
        let raw: serde_json::Value = serde_json::from_str(&text).map_err(json_error)?;
        let mut info: Info = serde_json::from_str(&text).map_err(json_error)?;
        info.raw = raw;
        info.layout_at(path)?;
        if !(info.fps.is_finite() && info.fps > 0.0) {
            return Err(IngestError::dataset(
                path,
                format!("fps must be positive, got {}", info.fps),
            ));
        }
        if info.chunks_size == 0 {
            return Err(IngestError::dataset(
                path,
                "chunks_size must be positive, got 0",
            ));
        }
        Ok(info)
    }

    /// The layout its `codebase_version` stands for.
    pub fn layout(&self) -> Layout {
        if self.codebase_version.starts_with("v3") {
            Layout::V3
        } else {
            Layout::V2
        }
    }

    fn layout_at(&self, path: &Path) -> Result<Layout> {
        match self.codebase_version.as_str() {
            "v2.0" | "v2.1" => Ok(Layout::V2),
            "v3.0" => Ok(Layout::V3),
            other => Err(IngestError::dataset(
                path,
                format!("unsupported codebase_version {other:?} (lam reads v2.0, v2.1 and v3.0)"),
            )),
        }
    }

    /// Keys of the features stored as videos (the cameras), sorted.
    pub fn video_keys(&self) -> Vec<String> {
        self.features
            .iter()
            .filter(|(_, f)| f.dtype == "video")
            .map(|(k, _)| k.clone())
            .collect()
    }
}
