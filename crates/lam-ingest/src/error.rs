//! The one error type of lam-ingest. Every variant names the file it is about.

use std::path::PathBuf;

/// Errors from decoding, preprocessing and reading data sources.
///
/// Each variant carries the path of the file (or folder) concerned so that a
/// message alone tells the user where to look.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading a file or folder failed at the operating-system level.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A video could not be opened, demuxed or decoded, or is unusable
    /// (empty, truncated, no video stream...).
    #[error("{path}: {reason}")]
    Video { path: PathBuf, reason: String },
    /// A dataset folder or one of its metadata files is missing or malformed.
    #[error("{path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    /// A parquet file could not be read.
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A JSON metadata file could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A clip specification is invalid (zero frames, non-positive fps...).
    #[error("invalid clip spec: {0}")]
    Spec(String),
    /// The consumer of clips failed (for example a shard writer ran out of
    /// disk). This is not a problem of the input item: runs stop on it.
    #[error("clip consumer failed: {0}")]
    Sink(Box<dyn std::error::Error + Send + Sync>),
}

/// The message of a caught panic (`panic!` with a string literal or a formatted one).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<String> {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
}

impl IngestError {
    pub(crate) fn video(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IngestError::Video {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IngestError::Dataset {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an error of the clip consumer; [`crate::run`] stops on these
    /// instead of skipping the item.
    pub fn sink(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        IngestError::Sink(err.into())
    }

    /// The reason without the path, as listed in an [`crate::IngestReport`].
    pub fn reason(&self) -> String {
        match self {
            IngestError::Io { source, .. } => source.to_string(),
            IngestError::Video { reason, .. } | IngestError::Dataset { reason, .. } => {
                reason.clone()
            }
            IngestError::Parquet { source, .. } => format!("parquet: {source}"),
            IngestError::Json { source, .. } => format!("invalid JSON: {source}"),
            IngestError::Spec(s) => format!("invalid clip spec: {s}"),
            IngestError::Sink(e) => format!("clip consumer failed: {e}"),
        }
    }
}

/// Result alias of lam-ingest.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;
