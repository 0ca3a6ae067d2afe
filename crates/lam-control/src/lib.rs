//! Stages 2-3 of lam: the controller between robot actions and latent actions, MPC planners
//! through the world model, and closed-loop evaluation.

pub mod closed_loop;
pub mod controller;
pub mod feasible;
pub mod planner;
pub mod rollout;
pub mod support;
pub mod waypoints;
