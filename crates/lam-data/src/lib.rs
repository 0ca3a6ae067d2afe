//! Data that `lam` trains on, without any tensor library: the frame-embedding shard format,
//! a synthetic source of shards with hidden actions, and the metric log every training run
//! writes.

pub mod metrics;
pub mod shards;
pub mod synthetic;

pub use metrics::MetricsLog;
pub use shards::{Clip, ShardIndex, ShardSet, ShardWriter, Split};
