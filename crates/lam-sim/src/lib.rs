//! # lam-sim: the built-in simulated manipulation suite of lam
//!
//! A 2-D tabletop on real rigid-body physics (rapier2d), rendered to RGB
//! frames with an anti-aliased rasteriser (tiny-skia), with scripted experts,
//! a random exploration policy and a fixed evaluation protocol. No file
//! formats here: lam-suite records episodes into LeRobot v3 datasets.
//!
//! * [`Env`] plays one [`Task`] (reach, push, pusht, sort) with one
//!   [`Domain`] (robot, robot-polar, human); `reset(seed)`, `step(action)`,
//!   `render()`, `state()`, `success()`.
//! * [`Expert`] and [`RandomPolicy`] act in any task and domain.
//! * [`eval_protocol`] lists the fixed evaluation episodes (start state, goal
//!   image 25 steps ahead on an expert trajectory, 50-step budget).
//!
//! Determinism: the same seed gives bit-identical frames and states.

pub mod domain;
pub mod env;
pub mod expert;
pub mod nuisances;
pub mod policy;
pub mod protocol;
pub mod render;
pub mod rng;
pub mod scene;
pub mod strip;
pub mod tasks;
pub mod world;

pub use domain::{ActionSpace, AgentParams, AgentShape, Domain};
pub use env::{Env, EnvConfig, StepInfo};
pub use expert::{Expert, ExpertConfig, expert_rollout};
pub use nuisances::NuisanceConfig;
pub use policy::{MixedPolicy, Policy, PolicyKind, RandomPolicy, SeekPolicy};
pub use protocol::{BUDGET, EVAL_SEED_BASE, EvalEpisode, EvalOutcome, GOAL_OFFSET, eval_protocol};
pub use scene::{BodyState, Goal, Layout, ObjectTarget, PointTarget, SimState};
pub use tasks::Task;
pub use world::PhysicsConfig;
