//! # lam-eval: evaluation on the simulated suite
//!
//! The one crate that joins the planners to the simulator: lam-control plans and acts on
//! frames it is given ([`lam_control::closed_loop::MpcSession`]) and knows nothing of where
//! they come from; [`mpc`] runs its agents on lam-sim's fixed evaluation protocol (seeded start
//! states, the goal the scripted expert reaches 25 steps later, a 50-step budget) and scores
//! every method on the same episodes; [`lawm`] runs a LAWM policy on the same protocol and
//! [`lawm_compare`] repeats the LAWM paper's Figure-4 comparison (recording, pretraining,
//! finetuning and evaluating every arm); [`probe`] renders the state probe's frames.

pub mod lawm;
pub mod lawm_compare;
pub mod mpc;
pub mod probe;
