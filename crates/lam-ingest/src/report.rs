//! What a run over a source did: items read, clips made, items skipped and why.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Outcome of [`crate::run`]: a long job skips bad inputs and lists them here
/// instead of dying.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct IngestReport {
    /// Items that gave at least one clip. Items that decode but are too
    /// short for one clip are listed in `skipped` instead.
    pub ok: usize,
    /// Clips handed to the sink.
    pub clips: usize,
    /// Items (or files found while listing) that were left out, with the
    /// reason: corrupt, truncated, unreadable, empty, too short...
    pub skipped: Vec<(PathBuf, String)>,
}

impl IngestReport {
    /// Records a skipped file.
    pub fn skip(&mut self, path: impl Into<PathBuf>, reason: impl Into<String>) {
        self.skipped.push((path.into(), reason.into()));
    }

    /// Adds another report's counts and skips to this one.
    pub fn merge(&mut self, other: IngestReport) {
        self.ok += other.ok;
        self.clips += other.clips;
        self.skipped.extend(other.skipped);
    }

    /// Whether `path` is among the skipped files.
    pub fn was_skipped(&self, path: &std::path::Path) -> bool {
        self.skipped.iter().any(|(p, _)| p == path)
    }
}

impl fmt::Display for IngestReport {
    /// One summary line, then one line per skipped file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} items read, {} clips, {} skipped",
            self.ok,
            self.clips,
            self.skipped.len()
        )?;
        for (p, r) in &self.skipped {
            write!(f, "\n  skipped {}: {r}", p.display())?;
        }
        Ok(())
    }
}
