//! Data that `lam` trains on, without any tensor library: the frame-embedding shard format
//! and a synthetic source of shards with hidden actions.

pub mod shards;
pub mod synthetic;

pub use shards::{Clip, ShardIndex, ShardSet, ShardWriter, Split};
