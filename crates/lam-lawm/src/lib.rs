//! # lam-lawm: the LAWM branch's models, checkpoints and acting
//!
//! An imitation policy (BAKU-like: FiLM-conditioned image encoder, transformer trunk,
//! action-chunk head, or a diffusion-policy head) maps (observation history, instruction) to
//! a chunk of n latent actions; a DreamerV3-style RSSM world model consumes the chunk and
//! reconstructs the frames t+1..t+n; [`model`] joins them with the pretraining loss. This
//! crate holds the models, their settings, the checkpoint format, and acting with a trained
//! policy ([`session`]: what the evaluation and `lam serve` use). It holds no training loop,
//! data loading or optimiser and knows no simulator: training on video and demonstrations is
//! `lam-lawm-train`'s; the closed-loop evaluation on the suite's protocol is lam-eval's.
//!
//! Modules, in reading order: [`config`], [`instruction`], [`policy`], [`rssm`], [`model`],
//! [`checkpoint`], [`session`].

pub mod checkpoint;
pub mod config;
pub mod instruction;
pub mod model;
pub mod policy;
pub mod rssm;
pub mod session;

pub use config::{HeadKind, LawmConfig, PolicyConfig, TrainConfig, WorldModelConfig};
pub use model::Lawm;
pub use policy::{ActionNorm, Policy};
pub use rssm::Rssm;
