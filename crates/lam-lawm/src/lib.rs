//! # lam-lawm: latent action pretraining through world modelling (the LAWM branch)
//!
//! An imitation policy (BAKU-like: FiLM-conditioned image encoder, transformer trunk,
//! action-chunk head, or a diffusion-policy head) maps (observation history, instruction) to
//! a chunk of n latent actions. A DreamerV3-style RSSM world model consumes the chunk and
//! must reconstruct the frames t+1..t+n, so the two train jointly, end to end, on unlabeled
//! video ([`train::pretrain`]). The world model is then dropped, the policy's action layer is
//! re-initialised to the robot's action dimension, and the policy is finetuned on a few
//! labeled demonstrations ([`train::train_policy`]); [`session`] acts with it (evaluation and
//! `lam serve`), and [`cca`] measures the first canonical correlation between latent and true
//! actions. The crate knows no simulator: the closed-loop evaluation on the suite's protocol
//! and the paper's Figure-4 comparison are lam-eval's (`lam_eval::lawm`,
//! `lam_eval::lawm_compare`).
//!
//! Modules, in reading order: [`config`], [`instruction`], [`policy`], [`rssm`], [`model`],
//! [`data`], [`checkpoint`], [`train`], [`session`], [`cca`]; the `lam lawm` commands are the
//! `lam` binary's.

pub mod cca;
pub mod checkpoint;
pub mod config;
pub mod data;
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
