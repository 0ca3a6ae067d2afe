//! # lam-lawm: latent action pretraining through world modelling (the LAWM branch)
//!
//! An imitation policy (BAKU-like: FiLM-conditioned image encoder, transformer trunk,
//! action-chunk head, or a diffusion-policy head) maps (observation history, instruction) to
//! a chunk of n latent actions. A DreamerV3-style RSSM world model consumes the chunk and
//! must reconstruct the frames t+1..t+n, so the two train jointly, end to end, on unlabeled
//! video ([`train::pretrain`]). The world model is then dropped, the policy's action layer is
//! re-initialised to the robot's action dimension, and the policy is finetuned on a few
//! labeled demonstrations ([`train::train_policy`]); [`session`] acts with it (evaluation and
//! `lam serve`), [`eval::evaluate`] measures closed-loop
//! success with the simulator's evaluation protocol, [`cca`] the first canonical correlation
//! between latent and true actions, and [`compare`] repeats the paper's Figure-4 comparison.
//!
//! Modules, in reading order: [`config`], [`instruction`], [`policy`], [`rssm`], [`model`],
//! [`data`], [`checkpoint`], [`train`], [`session`], [`eval`], [`cca`], [`compare`]; the `lam lawm` commands are the `lam` binary's.

pub mod cca;
pub mod checkpoint;
pub mod compare;
pub mod config;
pub mod data;
pub mod eval;
pub mod instruction;
pub mod model;
pub mod policy;
pub mod rssm;
pub mod session;
pub mod train;

pub use config::{HeadKind, LawmConfig, PolicyConfig, TrainConfig, WorldModelConfig};
pub use model::Lawm;
pub use policy::Policy;
pub use rssm::Rssm;
