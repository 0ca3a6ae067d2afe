//! Per-episode frame rows from the data parquet files: timestamps, actions,
//! states.

use super::columns::Columns;
use crate::decode::TIMESTAMP_TOLERANCE;
use crate::error::{IngestError, Result};
use std::path::Path;

/// A row-major `rows x cols` matrix of f32 (one row per frame).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    fn take_rows(&self, rows: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(rows.len() * self.cols);
        for &r in rows {
            data.extend_from_slice(self.row(r));
        }
        Matrix {
            rows: rows.len(),
            cols: self.cols,
            data,
        }
    }
}

/// The rows of one episode, sorted by `frame_index`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpisodeData {
    pub episode: u64,
    /// `timestamp`: seconds from the episode's start (the clock of
    /// [`crate::Clip::times`] for this episode's clips).
    pub timestamps: Vec<f64>,
    /// `frame_index`: 0-based position within the episode.
    pub frame_index: Vec<i64>,
    /// `task_index`, when present.
    pub task_index: Option<Vec<i64>>,
    /// The action feature (default key `action`), when present.
    pub actions: Option<Matrix>,
    /// The state feature (default key `observation.state`), when present.
    pub states: Option<Matrix>,
}

impl EpisodeData {
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Row in effect at time `t` (seconds from the episode start): the last
    /// row whose timestamp is at most `t` (within
    /// [`TIMESTAMP_TOLERANCE`]). Maps a clip frame's time to its action.
    pub fn row_at(&self, t: f64) -> Option<usize> {
        let n = self
            .timestamps
            .partition_point(|&ts| ts <= t + TIMESTAMP_TOLERANCE);
        n.checked_sub(1)
    }

    /// Rows with `t0 <= timestamp < t1` (within [`TIMESTAMP_TOLERANCE`]):
    /// the actions taken between two clip frames at times `t0` and `t1`.
    pub fn rows_between(&self, t0: f64, t1: f64) -> std::ops::Range<usize> {
        let a = self
            .timestamps
            .partition_point(|&ts| ts < t0 - TIMESTAMP_TOLERANCE);
        let b = self
            .timestamps
            .partition_point(|&ts| ts < t1 - TIMESTAMP_TOLERANCE);
        a..b.max(a)
    }
}

/// All rows of a data file, projected to the columns lam uses.
pub struct FrameTable {
    episode_index: Vec<i64>,
    timestamps: Vec<f64>,
    frame_index: Vec<i64>,
    task_index: Option<Vec<i64>>,
    actions: Option<Matrix>,
    states: Option<Matrix>,
}

impl FrameTable {
    /// Reads `path`; `timestamp` and `episode_index` are required, the
    /// others optional (`frame_index` defaults to the row order).
    pub fn read(path: &Path, action_key: &str, state_key: &str) -> Result<FrameTable> {
        let cols = Columns::read(
            path,
            &[
                "episode_index",
                "timestamp",
                "frame_index",
                "task_index",
                action_key,
                state_key,
            ],
        )?;
        for required in ["episode_index", "timestamp"] {
            if !cols.has(required) {
                return Err(IngestError::dataset(
                    path,
                    format!("missing column {required:?}"),
                ));
            }
        }
        let episode_index = cols.ints("episode_index")?;
        let frame_index = if cols.has("frame_index") {
            cols.ints("frame_index")?
        } else {
            (0..cols.rows() as i64).collect()
        };
        let opt_matrix = |key: &str| -> Result<Option<Matrix>> {
            if cols.has(key) {
                Ok(Some(cols.matrix(key)?))
            } else {
                Ok(None)
            }
        };
        Ok(FrameTable {
            timestamps: cols.floats("timestamp")?,
            frame_index,
            task_index: if cols.has("task_index") {
                Some(cols.ints("task_index")?)
            } else {
                None
            },
            actions: opt_matrix(action_key)?,
            states: opt_matrix(state_key)?,
            episode_index,
        })
    }

    /// The rows of `episode`, sorted by frame index.
    pub fn episode(&self, episode: u64) -> EpisodeData {
        let mut rows: Vec<usize> = (0..self.episode_index.len())
            .filter(|&r| self.episode_index[r] == episode as i64)
            .collect();
        rows.sort_by_key(|&r| self.frame_index[r]);
        EpisodeData {
            episode,
            timestamps: rows.iter().map(|&r| self.timestamps[r]).collect(),
            frame_index: rows.iter().map(|&r| self.frame_index[r]).collect(),
            task_index: self
                .task_index
                .as_ref()
                .map(|t| rows.iter().map(|&r| t[r]).collect()),
            actions: self.actions.as_ref().map(|m| m.take_rows(&rows)),
            states: self.states.as_ref().map(|m| m.take_rows(&rows)),
        }
    }
}
