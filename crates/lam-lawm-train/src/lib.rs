//! # lam-lawm-train: latent action pretraining through world modelling (training the LAWM branch)
//!
//! The policy and the RSSM world model (lam-lawm's) train jointly, end to end, on unlabeled
//! video ([`train::pretrain`], the joint loss in `lam_lawm::model`): the policy's latent chunk must let
//! the world model reconstruct the frames it leads to. The world model is then dropped, the
//! policy's action layer is re-initialised to the robot's action dimension, and the policy is
//! finetuned on a few labeled demonstrations ([`train::train_policy`]). [`data`] loads episodes
//! from lam-sim recordings, LeRobot datasets or video folders (through lam-ingest), and
//! [`cca`] measures the first canonical correlation between latent and true actions.
//!
//! Modules, in reading order: [`data`], [`train`], [`cca`]; the `lam lawm`
//! commands are the `lam` binary's, the protocol evaluation and the paper's comparison
//! lam-eval's.

pub mod cca;
pub mod data;
pub mod train;
