//! MPC planners through the world model toward a goal embedding.
//!
//! One interface, [`plan`], over two search spaces:
//! - **latent**: sequences of latent actions z (then the inverse controller gives the robot
//!   action), the paper's way;
//! - **action**: sequences of robot actions a mapped through the controller g_ctrl(a) -> z
//!   (the in-the-wild paper's way), or fed directly to an action-conditioned world model.
//!
//! Candidates are rolled out and scored in one batch by [`crate::rollout`]. One planner per
//! file: the sampling planners share one loop (`sampling.rs`: draw around a Gaussian, roll
//! out, score, refit) and differ in a [`sampling::Sampler`]: random shooting (one draw from
//! the prior, best cost), CEM (Gaussian refit to the elites each iteration), iCEM (CEM with
//! temporally coloured noise, a population that shrinks each iteration, and elites carried
//! over), MPPI (exponentially weighted refit); the gradient planner (`gradient.rs`) runs Adam
//! on the sequences through the world model.

mod cem;
mod gradient;
mod icem;
mod mppi;
mod random_shooting;
mod sampling;

use burn::prelude::*;
pub use lam_model::world_model::HostPrecision;
use lam_model::world_model::{KvCache, WorldModel};
use serde::{Deserialize, Serialize};

use crate::controller::Controller;
use crate::feasible::Feasible;
use crate::support::Support;
use cem::Cem;
use icem::Icem;
use mppi::Mppi;
use random_shooting::RandomShooting;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PlannerKind {
    RandomShooting,
    Cem,
    Icem,
    Mppi,
    /// Adam on the sequences through the world model (`planner/gradient.rs`).
    Gradient,
}

impl std::str::FromStr for PlannerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "random" | "random-shooting" => Self::RandomShooting,
            "cem" => Self::Cem,
            "icem" => Self::Icem,
            "mppi" => Self::Mppi,
            "gradient" | "grad" => Self::Gradient,
            _ => anyhow::bail!(
                "unknown planner `{s}` (expected random-shooting, cem, icem, mppi or gradient)"
            ),
        })
    }
}

/// Distance of a predicted frame to the goal frame.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CostKind {
    /// 1 - cosine similarity.
    Cosine,
    /// Mean absolute difference.
    L1,
    /// Mean squared difference.
    Mse,
}

/// Which predicted frames of a candidate the cost looks at.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The final frame only (DINO-WM, LeWorldModel).
    #[default]
    Final,
    /// The mean over every step of the horizon: the first steps, which the world model
    /// predicts best and which are executed, count as much as the last.
    Sum,
    /// The best step of the horizon: reaching the goal at any step counts (the protocol's
    /// success test is met at the first step that meets it).
    Min,
}

impl std::str::FromStr for Objective {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "final" => Self::Final,
            "sum" => Self::Sum,
            "min" => Self::Min,
            _ => anyhow::bail!("unknown planning objective `{s}` (expected final, sum or min)"),
        })
    }
}

impl std::str::FromStr for CostKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "cosine" => Self::Cosine,
            "l1" => Self::L1,
            "mse" => Self::Mse,
            _ => anyhow::bail!("unknown cost `{s}` (expected cosine, l1 or mse)"),
        })
    }
}

/// Planner settings; defaults are the CEM used by DINO-WM / LeWorldModel.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlannerConfig {
    pub kind: PlannerKind,
    /// Steps planned ahead (5).
    pub horizon: usize,
    /// Candidates per iteration (300; random shooting in the paper: 512).
    pub samples: usize,
    /// Elites kept by CEM / iCEM (30).
    pub elites: usize,
    /// Refinement iterations (30; random shooting uses 1).
    pub iterations: usize,
    /// Cost of the final predicted frame against the goal (cosine).
    pub cost: CostKind,
    /// Compare mean-pooled frames (true) or token by token (false).
    pub pooled: bool,
    /// MPPI temperature (0.1, in units of cost).
    pub temperature: f64,
    /// iCEM coloured-noise exponent beta (2.0) and population decay (1.25) per iteration.
    pub icem_beta: f64,
    pub icem_decay: f64,
    /// Fraction of elites carried to the next iCEM iteration (0.3).
    pub icem_keep: f64,
    /// Lower bound of the sampling std (0.05).
    pub min_std: f64,
    /// Seed of the sampler (0).
    pub seed: u64,
    /// Reuse cached keys/values of past frames in rollouts (true); false recomputes the whole
    /// frame history at every step (for comparison).
    pub kv_cache: bool,
    /// Gradient planner: Adam step size in units of the prior's standard deviation (0.1);
    /// `samples` sequences are optimised in parallel for `iterations` steps.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Which predicted frames the cost looks at (final).
    #[serde(default)]
    pub objective: Objective,
    /// Number format of the matrix products in CPU rollouts through the key/value cache:
    /// `f32` (default) or `bf16` (Intel AMX tiles, float32 sums; float32 where the CPU has no
    /// AMX). Rollouts on the tensor path (a frame-conditioned controller, a feasible set, a
    /// GPU) stay float32.
    #[serde(default)]
    pub precision: HostPrecision,
}

fn default_learning_rate() -> f64 {
    0.1
}

impl lam_model::settings::Settings for PlannerConfig {
    const WHAT: &'static str = "planner";
    const PRESETS: &'static [&'static str] = lam_model::settings::ONLY_DEFAULT;
    /// `default`: [`PlannerConfig::default`], the anchors' CEM.
    fn preset(name: &str) -> anyhow::Result<Self> {
        lam_model::settings::only_default(name)
    }
    fn validate(&self) -> anyhow::Result<()> {
        PlannerConfig::validate(self)
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            kind: PlannerKind::Cem,
            horizon: 5,
            samples: 300,
            elites: 30,
            iterations: 30,
            cost: CostKind::Cosine,
            pooled: true,
            temperature: 0.1,
            icem_beta: 2.0,
            icem_decay: 1.25,
            icem_keep: 0.3,
            min_std: 0.05,
            seed: 0,
            kv_cache: true,
            learning_rate: default_learning_rate(),
            objective: Objective::Final,
            precision: HostPrecision::F32,
        }
    }
}

impl PlannerConfig {
    /// Names the first setting no planner can run with.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.horizon >= 1,
            "planner horizon must be at least 1, got 0"
        );
        anyhow::ensure!(
            self.samples >= 1,
            "planner samples must be at least 1, got 0"
        );
        anyhow::ensure!(
            self.iterations >= 1,
            "planner iterations must be at least 1, got 0"
        );
        if matches!(self.kind, PlannerKind::Cem | PlannerKind::Icem) {
            anyhow::ensure!(
                (1..=self.samples).contains(&self.elites),
                "planner elites must be between 1 and the samples ({}), got {}",
                self.samples,
                self.elites
            );
        }
        for (name, v) in [
            ("temperature", self.temperature),
            ("learning_rate", self.learning_rate),
            ("icem_decay", self.icem_decay),
        ] {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "planner {name} must be a finite number > 0, got {v}"
            );
        }
        anyhow::ensure!(
            self.min_std.is_finite() && self.min_std >= 0.0,
            "planner min_std must be a finite number >= 0, got {}",
            self.min_std
        );
        Ok(())
    }

    /// The paper's random shooting: 512 latent sequences from N(0, I), best final cosine.
    pub fn random_shooting() -> Self {
        Self {
            kind: PlannerKind::RandomShooting,
            samples: 512,
            iterations: 1,
            ..Self::default()
        }
    }
}

/// Where candidates live.
pub enum SearchSpace<'a> {
    /// Latent actions of dimension d, prior N(0, I).
    Latent { dim: usize },
    /// Robot actions in a box, mapped to latents by the controller (or used directly when
    /// `controller` is `None`, for an action-conditioned world model).
    Action {
        low: Vec<f32>,
        high: Vec<f32>,
        controller: Option<&'a Controller>,
        /// Each searched action is repeated this many times to make the model's action
        /// (1: searched as is). With action blocks, `repeat = k` searches one robot action
        /// per block held for its k steps: k times fewer numbers, and random candidates that
        /// travel instead of jittering in place.
        repeat: usize,
    },
}

impl SearchSpace<'_> {
    /// The model's action for a searched one (`x` repeated `repeat` times).
    pub fn expand(&self, x: &[f32]) -> Vec<f32> {
        match self {
            Self::Action { repeat, .. } if *repeat > 1 => x.repeat(*repeat),
            _ => x.to_vec(),
        }
    }

    pub(crate) fn dim(&self) -> usize {
        match self {
            Self::Latent { dim } => *dim,
            Self::Action { low, .. } => low.len(),
        }
    }

    /// The model's actions `[C, H, dim * repeat]` of searched sequences `x` `[C, H, dim]`.
    pub(crate) fn expand_tensor(&self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Action { repeat, .. } if *repeat > 1 => {
                let [c, h, dim] = x.dims();
                x.unsqueeze_dim::<4>(2)
                    .repeat_dim(2, *repeat)
                    .reshape([c, h, dim * repeat])
            }
            _ => x,
        }
    }

    /// The controller when its latents depend on the frame they act on.
    pub(crate) fn frame_controller(&self) -> Option<&Controller> {
        match self {
            Self::Action {
                controller: Some(ctrl),
                ..
            } if ctrl.frame_dim() > 0 => Some(ctrl),
            _ => None,
        }
    }

    /// Latent actions `[C, H, d]` of sequences `x` `[C, H, dim]` in this space (through the
    /// controller for robot actions with one; unchanged otherwise). Not for frame-conditioned
    /// controllers, whose latents come step by step ([`rollout_tensor`]).
    pub(crate) fn latents(&self, x: Tensor<3>) -> Tensor<3> {
        let x = self.expand_tensor(x);
        match self {
            Self::Action {
                controller: Some(ctrl),
                ..
            } => {
                let [c, h, dim] = x.dims();
                let z = ctrl.to_latent(x.reshape([c * h, dim]), None);
                let d = z.dims()[1];
                z.reshape([c, h, d])
            }
            _ => x,
        }
    }

    pub(crate) fn init(&self, horizon: usize) -> (Vec<f32>, Vec<f32>) {
        match self {
            Self::Latent { dim } => (vec![0.0; horizon * dim], vec![1.0; horizon * dim]),
            Self::Action { low, high, .. } => {
                let mean: Vec<f32> = (0..horizon)
                    .flat_map(|_| low.iter().zip(high).map(|(l, h)| 0.5 * (l + h)))
                    .collect();
                let std: Vec<f32> = (0..horizon)
                    .flat_map(|_| low.iter().zip(high).map(|(l, h)| 0.5 * (h - l)))
                    .collect();
                (mean, std)
            }
        }
    }

    pub(crate) fn clamp(&self, x: &mut [f32]) {
        if let Self::Action { low, high, .. } = self {
            let a = low.len();
            for (i, v) in x.iter_mut().enumerate() {
                *v = v.clamp(low[i % a], high[i % a]);
            }
        }
    }
}

/// The planning problem at one time step.
pub struct Problem<'a> {
    pub world_model: &'a WorldModel,
    /// Keys/values of the history before the current frame (batch 1); `None` at the start
    /// of an episode.
    pub cache: Option<&'a KvCache>,
    /// Frames the rollout keeps in its cache (the model's training context minus one).
    pub window: usize,
    /// The history itself, frames `[1, K, N, D]` and their latents `[1, K, d]`, for rollouts
    /// without the cache.
    pub history: Option<(Tensor<4>, Tensor<3>)>,
    /// Whether rollouts use the cache.
    pub use_cache: bool,
    /// How CPU rollouts run: the number format of their products
    /// (`PlannerConfig::precision`) and the weights' host copy, made at the first rollout.
    pub host: crate::rollout::HostRollout,
    /// Current frame `[1, N, D]`.
    pub current: Tensor<3>,
    /// Goal frame `[1, N, D]`.
    pub goal: Tensor<3>,
    /// Penalise predicted transitions the training video never shows (sampling planners;
    /// see [`crate::support`]).
    pub support: Option<Support<'a>>,
    /// Replace each planned latent by the nearest one the training video shows from frames
    /// like the one it starts at (sampling planners; see [`crate::feasible`]).
    pub feasible: Option<Feasible<'a>>,
    /// Blend predictions toward what the episode's executed blocks did (robot-action search
    /// spaces; see [`crate::memory`]).
    pub memory: Option<crate::memory::EpisodeMemory>,
}

/// The chosen plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Best sequence in the search space, `[horizon, dim]` row-major.
    pub sequence: Vec<f32>,
    pub dim: usize,
    /// Its cost.
    pub cost: f32,
    /// Cosine similarity of its final predicted frame to the goal (pooled).
    pub confidence: f32,
    /// Candidates rolled out in total.
    pub rollouts: usize,
}

impl Plan {
    /// Step k of the sequence.
    pub fn step(&self, k: usize) -> &[f32] {
        &self.sequence[k * self.dim..(k + 1) * self.dim]
    }
}

/// Plans with the configured planner; returns the best sequence found.
pub fn plan(cfg: &PlannerConfig, problem: &Problem, space: &SearchSpace) -> Plan {
    plan_ensemble(cfg, problem, space, &[])
}

/// [`plan`] scored by an ensemble: each candidate's cost is the mean of its cost under
/// `problem` and under every further world model of `others` (each with its own history,
/// goal and search space of the same width; e.g. runs of one recipe with other seeds), so a
/// plan one model alone likes by its error is not chosen. The plan's confidence is
/// `problem`'s. Sampling planners only (the gradient planner takes `problem` alone).
pub fn plan_ensemble(
    cfg: &PlannerConfig,
    problem: &Problem,
    space: &SearchSpace,
    others: &[(Problem, SearchSpace)],
) -> Plan {
    let members: Vec<(&Problem, &SearchSpace)> = std::iter::once((problem, space))
        .chain(others.iter().map(|(p, s)| (p, s)))
        .collect();
    match cfg.kind {
        PlannerKind::Gradient => gradient::plan(cfg, problem, space),
        PlannerKind::RandomShooting => sampling::plan(cfg, &members, &mut RandomShooting),
        PlannerKind::Cem => sampling::plan(cfg, &members, &mut Cem),
        PlannerKind::Icem => sampling::plan(cfg, &members, &mut Icem::default()),
        PlannerKind::Mppi => sampling::plan(cfg, &members, &mut Mppi),
    }
}
