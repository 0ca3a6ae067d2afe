//! A training run's metric log: one JSON object per line in `RUN/metrics.jsonl` (what `lam
//! plot` and the reports read) and the same numbers as TensorBoard scalars in
//! `RUN/tensorboard/` (`tensorboard --logdir RUN`). Every training command (stage 1, sim-encoder
//! pretraining, LAWM) logs through [`MetricsLog`].
//!
//! A record is a JSON object with a `step` and usually a `split` (`train`, `val`, ...); each
//! number in it becomes the scalar `split/key` at that step (nested objects join their keys
//! with `/`, short arrays add the index: `val/probe/pooled/r2/0`).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;
use syntaxdot_summary::SummaryWriter;

use crate::shards::write_atomic;

/// The log file in a run folder.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The TensorBoard folder in a run folder.
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// Arrays longer than this are left out of the TensorBoard scalars.
const MAX_ARRAY: usize = 16;

/// The open log of one run.
pub struct MetricsLog {
    path: PathBuf,
    file: fs::File,
    board: SummaryWriter<BufWriter<fs::File>>,
}

impl MetricsLog {
    /// Opens the log of the run in `dir`. A run resumed from step `resumed_at` keeps the lines
    /// up to that step (rewritten in one rename: a kill leaves the old log or the new one,
    /// never a truncated one) and adds a new TensorBoard event file; a fresh run (`None`)
    /// starts both empty, removing the event files an earlier run left.
    pub fn open(dir: &Path, resumed_at: Option<usize>) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(METRICS_FILE);
        let kept: String = match resumed_at {
            Some(limit) => fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    serde_json::from_str::<Value>(l)
                        .ok()
                        .and_then(|v| v.get("step").and_then(Value::as_u64))
                        .is_some_and(|s| s as usize <= limit)
                })
                .map(|l| format!("{l}\n"))
                .collect(),
            None => String::new(),
        };
        write_atomic(&path, kept.as_bytes())?;
        let file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let board_dir = dir.join(TENSORBOARD_DIR);
        if resumed_at.is_none() && board_dir.is_dir() {
            for entry in fs::read_dir(&board_dir)? {
                let entry = entry?;
                if entry.file_name().to_string_lossy().contains(".tfevents.") {
                    fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
        let board = SummaryWriter::from_prefix(board_dir.join("events")).with_context(|| {
            format!(
                "cannot create a TensorBoard file in {}",
                board_dir.display()
            )
        })?;
        Ok(Self { path, file, board })
    }

    /// Appends one record (a JSON object with a `step`).
    pub fn write(&mut self, record: &Value) -> Result<()> {
        writeln!(self.file, "{record}")
            .with_context(|| format!("writing {}", self.path.display()))?;
        let step = record.get("step").and_then(Value::as_i64).unwrap_or(0);
        let split = record
            .get("split")
            .and_then(Value::as_str)
            .unwrap_or("train");
        let mut scalars = Vec::new();
        if let Value::Object(map) = record {
            for (k, v) in map {
                if k != "step" && k != "split" {
                    flatten(&format!("{split}/{k}"), v, &mut scalars);
                }
            }
        }
        for (tag, value) in scalars {
            self.board.write_scalar(tag, step, value).with_context(|| {
                format!("writing the TensorBoard events of {}", self.path.display())
            })?;
        }
        Ok(())
    }
}

/// The numbers in `v` as `(tag, value)` pairs under `prefix`.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f32)>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.push((prefix.to_string(), x as f32));
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                flatten(&format!("{prefix}/{k}"), x, out);
            }
        }
        Value::Array(items) if items.len() <= MAX_ARRAY => {
            for (i, x) in items.iter().enumerate() {
                flatten(&format!("{prefix}/{i}"), x, out);
            }
        }
        _ => {}
    }
}

/// Reads a run's `metrics.jsonl` back.
pub fn read_metrics(dir: &Path) -> Result<Vec<Value>> {
    let path = dir.join(METRICS_FILE);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not a JSON object", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The records of a TFRecord file: `u64 length, u32 crc, data, u32 crc`, little endian.
    fn records(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
            out.push(&bytes[at + 12..at + 12 + n]);
            at += 12 + n + 4;
        }
        assert_eq!(at, bytes.len(), "records do not tile the file");
        out
    }

    fn event_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir.join(TENSORBOARD_DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_go_to_the_log_and_to_tensorboard() {
        let tmp = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(tmp.path(), None).unwrap();
        for step in [10, 20, 30] {
            log.write(
                &json!({"step": step, "split": "train", "loss": 1.0 / step as f64,
                "terms": {"pred": 0.5}, "name": "ignored"}),
            )
            .unwrap();
        }
        log.write(&json!({"step": 30, "split": "val", "r2": [0.9, 0.8]}))
            .unwrap();
        drop(log);
        assert_eq!(read_metrics(tmp.path()).unwrap().len(), 4);
        let files = event_files(tmp.path());
        assert_eq!(files.len(), 1, "{files:?}");
        let bytes = fs::read(&files[0]).unwrap();
        // The file-version event, then one event per scalar: 3 x (loss, terms/pred) + 2.
        let recs = records(&bytes);
        assert_eq!(recs.len(), 1 + 6 + 2);
        let has = |tag: &str| {
            recs.iter()
                .any(|r| r.windows(tag.len()).any(|w| w == tag.as_bytes()))
        };
        assert!(has("brain.Event:2"));
        for tag in ["train/loss", "train/terms/pred", "val/r2/0", "val/r2/1"] {
            assert!(has(tag), "no scalar {tag}");
        }
        assert!(!has("train/name"));

        // Resumed at step 20: lines after it are dropped and a second event file is added;
        // a fresh start clears both.
        let mut log = MetricsLog::open(tmp.path(), Some(20)).unwrap();
        assert_eq!(read_metrics(tmp.path()).unwrap().len(), 2);
        log.write(&json!({"step": 30, "loss": 0.1})).unwrap();
        drop(log);
        assert_eq!(read_metrics(tmp.path()).unwrap().len(), 3);
        assert_eq!(event_files(tmp.path()).len(), 2);
        drop(MetricsLog::open(tmp.path(), None).unwrap());
        assert!(read_metrics(tmp.path()).unwrap().is_empty());
        assert_eq!(event_files(tmp.path()).len(), 1);
    }
}
