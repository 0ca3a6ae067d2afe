//! What a candidate sequence does and costs: its rollout through the world model and its cost
//! against the goal. Candidates are rolled out in one batch: the context frames are cached
//! once (keys/values of every block) and each rollout step runs only the newest frame's
//! tokens against the cache. On the CPU, `WorldModel::rollout_shared` runs the whole rollout
//! in host kernels with the context keys/values shared by all candidates; elsewhere the cache
//! is repeated per candidate and `WorldModel::step` runs each step. Costs: MSE, L1 or cosine
//! to the goal, at the final or the best step, plus the support critic's penalty. Shared by
//! the sampling planners ([`crate::planner`]) and the gradient planner (`planner/gradient.rs`).

use std::sync::OnceLock;

use burn::prelude::*;
use lam_model::world_model::{HostPrecision, HostWeights, WorldModel};

use crate::controller::Controller;
use crate::feasible::Target;
use crate::planner::{CostKind, Objective, Problem, SearchSpace};

/// How a planning step's CPU rollouts run: the number format of their matrix products and the
/// world model's weights in host memory, copied (and packed) at the first rollout and reused by
/// every later one of the step.
#[derive(Default)]
pub struct HostRollout {
    pub precision: HostPrecision,
    weights: OnceLock<HostWeights>,
}

impl HostRollout {
    pub fn new(precision: HostPrecision) -> Self {
        Self {
            precision,
            weights: OnceLock::new(),
        }
    }

    /// The host weights of `world_model` (the problem's: one model per planning step).
    fn weights(&self, world_model: &WorldModel) -> &HostWeights {
        self.weights
            .get_or_init(|| world_model.host_weights(self.precision))
    }
}

/// Rolls `seqs` (`[C, H, dim]` row-major, in the search space) through the world model and
/// returns the final predicted frames `[C, N, D]`.
pub fn rollout(
    problem: &Problem,
    space: &SearchSpace,
    seqs: &[f32],
    c: usize,
    h: usize,
) -> Tensor<3> {
    final_frames(rollout_all(problem, space, seqs, c, h))
}

/// The last step `[C, N, D]` of a rollout's frames `[C, H, N, D]`.
pub(crate) fn final_frames(steps: Tensor<4>) -> Tensor<3> {
    let [c, h, n, d] = steps.dims();
    steps.slice(s![.., h - 1..h, .., ..]).reshape([c, n, d])
}

/// Rolls `seqs` (`[C, H, dim]`) through the world model; the predicted frames of every step
/// `[C, H, N, D]`.
pub fn rollout_all(
    problem: &Problem,
    space: &SearchSpace,
    seqs: &[f32],
    c: usize,
    h: usize,
) -> Tensor<4> {
    let device = problem.current.device();
    let x = Tensor::<3>::from_data(TensorData::new(seqs.to_vec(), [c, h, space.dim()]), &device);
    if space.frame_controller().is_some() || problem.feasible.is_some() || problem.memory.is_some()
    {
        return rollout_tensor(problem, space, x);
    }
    let z = space.latents(x);
    if !problem.use_cache {
        return rollout_recompute(problem, z);
    }
    // On the CPU: all candidates in one host kernel over the shared context cache.
    if problem.current.device() == Device::flex()
        && let Some(steps) = problem.world_model.rollout_shared_with(
            problem.host.weights(problem.world_model),
            problem.cache,
            problem.current.clone(),
            z.clone(),
            problem.window,
        )
    {
        return steps;
    }
    problem
        .world_model
        .rollout_steps(problem.cache, problem.current.clone(), z, problem.window)
}

/// Rolls sequences `x` `[C, H, dim]` through the world model step by step on the tensor path
/// (differentiable with respect to `x`); the predicted frames of every step `[C, H, N, D]`.
/// A frame-conditioned controller turns each step's actions into latents from the pooled
/// frame they act on: the current frame, then the model's own predictions; with a feasible
/// set each latent is then projected from that frame, or each predicted frame's change from
/// the frame before ([`crate::feasible`]); with an episode memory each predicted frame is
/// blended toward what the episode's executed blocks did ([`crate::memory`]).
pub(crate) fn rollout_tensor(problem: &Problem, space: &SearchSpace, x: Tensor<3>) -> Tensor<4> {
    let ctrl = space.frame_controller();
    if ctrl.is_none() && problem.feasible.is_none() && problem.memory.is_none() {
        return problem.world_model.rollout_steps(
            problem.cache,
            problem.current.clone(),
            space.latents(x),
            problem.window,
        );
    }
    // Each step's latents: made for every step at once, or by the frame-conditioned
    // controller from the frame the step acts on.
    enum StepLatents<'c> {
        Made(Tensor<3>),
        FromFrame(&'c Controller, Tensor<3>),
    }
    let [c, h, _] = x.dims();
    // The model's actions of each step (robot action blocks in a robot-action space), read by
    // the frame-conditioned controller and the memory.
    let actions =
        (ctrl.is_some() || problem.memory.is_some()).then(|| space.expand_tensor(x.clone()));
    let latents = match (ctrl, &actions) {
        (Some(ctrl), Some(a)) => StepLatents::FromFrame(ctrl, a.clone()),
        _ => StepLatents::Made(space.latents(x)),
    };
    let d = problem.current.dims()[2];
    problem.world_model.rollout_with(
        problem.cache,
        problem.current.clone(),
        c,
        h,
        problem.window,
        |k, frame| {
            let pooled = frame.clone().mean_dim(1).reshape([c, d]);
            let zk = match &latents {
                StepLatents::Made(z) => at_step(z, k),
                StepLatents::FromFrame(ctrl, a) => {
                    ctrl.to_latent(at_step(a, k), Some(pooled.clone()))
                }
            };
            match problem.feasible {
                Some(f) if f.target == Target::Latent => f.project(pooled, zk),
                _ => zk,
            }
        },
        |k, from, pred| {
            let pred = match problem.feasible {
                Some(f) if f.target == Target::Change => f.correct_prediction(from, pred),
                _ => pred,
            };
            match (&problem.memory, &actions) {
                (Some(memory), Some(a)) => memory.correct(from, at_step(a, k), pred),
                _ => pred,
            }
        },
    )
}

/// Step `k` `[C, W]` of per-step values `t` `[C, H, W]`.
fn at_step(t: &Tensor<3>, k: usize) -> Tensor<2> {
    let [c, _, w] = t.dims();
    t.clone().slice(s![.., k..k + 1, ..]).reshape([c, w])
}

/// Rollout that runs the whole history plus the frames so far at every step (the window of
/// the cache is kept, so both rollouts see the same frames).
fn rollout_recompute(problem: &Problem, z: Tensor<3>) -> Tensor<4> {
    let [c, h, d] = z.dims();
    let [_, n, dd] = problem.current.dims();
    let mut frames: Vec<Tensor<4>> = Vec::new();
    let mut lats: Vec<Tensor<3>> = Vec::new();
    if let Some((f, l)) = &problem.history {
        let k = f.dims()[1];
        frames.push(f.clone().expand([c, k, n, dd]));
        lats.push(l.clone().expand([c, k, d]));
    }
    let mut frame = problem.current.clone().expand([c, n, dd]);
    let mut steps = Vec::with_capacity(h);
    for k in 0..h {
        frames.push(frame.unsqueeze_dim(1));
        lats.push(z.clone().slice(s![.., k..k + 1, ..]));
        let all_f = Tensor::cat(frames.clone(), 1);
        let all_z = Tensor::cat(lats.clone(), 1);
        let t = all_f.dims()[1];
        let keep = (problem.window + 1).min(t);
        let pred = problem.world_model.forward(
            all_f.slice(s![.., t - keep..t, .., ..]),
            all_z.slice(s![.., t - keep..t, ..]),
        );
        frame = pred
            .slice(s![.., keep - 1..keep, .., ..])
            .squeeze_dim::<3>(1);
        steps.push(frame.clone());
    }
    Tensor::stack(steps, 1)
}

/// The support penalty `[C]` of candidates whose predicted frames are `steps` `[C, H, N, D]`:
/// the weighted mean over the horizon of the critic's penalty for each predicted change,
/// pooled, from the frame it starts at (the current frame, then the predictions). `None`
/// without a critic.
pub fn support_penalty(problem: &Problem, steps: Tensor<4>) -> Option<Tensor<1>> {
    let support = problem.support?;
    let [c, h, _, d] = steps.dims();
    // Pooled once, then shared by every candidate.
    let current = problem
        .current
        .clone()
        .mean_dim(1)
        .reshape([1, 1, d])
        .expand([c, 1, d]);
    let next = steps.mean_dim(2).reshape([c, h, d]);
    let from = if h > 1 {
        Tensor::cat(vec![current, next.clone().slice(s![.., 0..h - 1, ..])], 1)
    } else {
        current
    };
    let pen = support
        .critic
        .penalty(
            from.reshape([c * h, d]),
            next.reshape([c * h, d]),
            support.margin,
        )
        .reshape([c, h])
        .mean_dim(1);
    Some(pen.reshape([c]) * support.weight)
}

/// Cost per candidate `[C]` of the predicted frames of every step `[C, H, N, D]` against the
/// goal `[1, N, D]`, under `objective`.
pub fn trajectory_cost(
    kind: CostKind,
    pooled: bool,
    objective: Objective,
    steps: Tensor<4>,
    goal: Tensor<3>,
) -> Tensor<1> {
    let [c, h, n, d] = steps.dims();
    let per_step = |k: usize| {
        let frames = steps
            .clone()
            .slice(s![.., k..k + 1, .., ..])
            .reshape([c, n, d]);
        cost(kind, pooled, frames, goal.clone())
    };
    match objective {
        Objective::Final => per_step(h - 1),
        Objective::Sum | Objective::Min => {
            let all = Tensor::stack::<2>((0..h).map(per_step).collect(), 1); // [C, H]
            match objective {
                Objective::Sum => all.mean_dim(1).reshape([c]),
                _ => all.min_dim(1).reshape([c]),
            }
        }
    }
}

/// Cosine `[C]` between mean-pooled frames `[C, N, D]` and the pooled goal `[1, N, D]`.
pub fn pooled_cosine(a: Tensor<3>, goal: Tensor<3>) -> Tensor<1> {
    let a = a.mean_dim(1).squeeze_dim::<2>(1);
    let g = goal.mean_dim(1).squeeze_dim::<2>(1);
    let dot = (a.clone() * g.clone()).sum_dim(1);
    let norm = (a.square().sum_dim(1) * g.square().sum_dim(1)).sqrt() + 1e-12;
    (dot / norm).squeeze_dim::<1>(1)
}

/// Cost per candidate `[C]` of final frames `[C, N, D]` against the goal `[1, N, D]`.
pub fn cost(kind: CostKind, pooled: bool, finals: Tensor<3>, goal: Tensor<3>) -> Tensor<1> {
    let [c, _, d] = finals.dims();
    let (a, g) = if pooled {
        (finals.mean_dim(1), goal.mean_dim(1))
    } else {
        (finals, goal)
    };
    let [_, m, _] = a.dims();
    let g = g.expand([c, m, d]);
    match kind {
        CostKind::Cosine => {
            let dot = (a.clone() * g.clone()).sum_dim(2);
            let norm = (a.square().sum_dim(2) * g.square().sum_dim(2)).sqrt() + 1e-12;
            (dot / norm).neg().add_scalar(1.0).mean_dim(1).reshape([c])
        }
        CostKind::L1 => (a - g).abs().mean_dims(&[1, 2]).reshape([c]),
        CostKind::Mse => (a - g).square().mean_dims(&[1, 2]).reshape([c]),
    }
}
