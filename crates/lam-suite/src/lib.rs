//! # lam-suite: the simulated suite as data
//!
//! lam-sim plays and renders episodes and knows no file format; lam-ingest owns LeRobot
//! datasets. This crate joins them: [`record`] plays episodes of a task with a policy and
//! writes them through lam-ingest's LeRobot v3.0 writer (the `human` domain's true actions
//! and states go to the recording's ground truth only), and [`layouts`] reads each recorded
//! episode's scene back as lam-sim's [`Layout`](lam_sim::Layout); [`oracle`] embeds a
//! recording's true states as shards (the oracle encoder).
//!
//! The recording types are lam-ingest's, re-exported here: [`Dataset`] (reader with the
//! ground truth), [`DatasetWriter`], [`DatasetSpec`], [`EpisodeRecord`], [`EpisodeData`],
//! [`GroundTruth`].

pub mod oracle;
pub mod record;

pub use lam_ingest::lerobot::recording::{
    Dataset, DatasetSpec, DatasetWriter, EpisodeData, EpisodeRecord, GroundTruth,
};
pub use record::{RecordConfig, record, record_episode};

/// Every episode's scene layout (walls, objects, zones) of a recording, in episode order.
pub fn layouts(ds: &Dataset) -> anyhow::Result<Vec<lam_sim::Layout>> {
    ds.read_layouts()
}
