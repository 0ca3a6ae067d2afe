//! Stages 2-3 of lam: the controller between robot actions and latent actions, MPC planners
//! through the world model, and closed-loop evaluation.

pub mod closed_loop;
pub mod controller;
pub mod feasible;
pub mod memory;
pub mod planner;
pub mod rollout;
pub mod support;
pub mod waypoints;

use burn::prelude::*;

/// Host copy of an f32 tensor's values, row-major.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}
