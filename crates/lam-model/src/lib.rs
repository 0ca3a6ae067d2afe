//! Stage 1 of lam: the latent action model (inverse dynamics, regularisers, world model),
//! its optimisers, training loop, checkpoints and evaluations. Written once against burn's
//! runtime `Device`; the backends compiled in are chosen by cargo features (`flex` CPU always,
//! `cuda` optional).

pub mod checkpoint;
pub mod config;
pub mod device;
pub mod eval;
pub mod fused;
pub mod idm;
pub mod lam;
pub mod model_folder;
pub mod optim;
pub mod regularizer;
pub mod settings;
pub mod spatial;
pub mod stats;
pub mod train;
pub mod world_model;

pub use config::LamConfig;
pub use lam::LatentActionModel;
