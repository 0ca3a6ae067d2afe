//! The loop the sampling planners share: draw candidates around a Gaussian over the horizon,
//! roll them out in one batch, score them, keep the best seen, and let the planner refit the
//! Gaussian ([`Sampler`]) for the next iteration.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{Plan, PlannerConfig, Problem, SearchSpace};
use crate::host;
use crate::rollout::{final_frames, pooled_cosine, rollout_all, support_penalty, trajectory_cost};

/// What one sampling planner does its own way. Sequences are `[c, h * dim]` row-major.
pub(super) trait Sampler {
    /// Iterations of drawing and refitting.
    fn iterations(&self, cfg: &PlannerConfig) -> usize {
        cfg.iterations.max(1)
    }

    /// Candidates drawn at iteration `it`.
    fn population(&self, cfg: &PlannerConfig, _it: usize) -> usize {
        cfg.samples
    }

    /// Unit-variance noise for `c` sequences of `h` steps of `dim` channels: white by default.
    fn noise(
        &self,
        _cfg: &PlannerConfig,
        rng: &mut StdRng,
        c: usize,
        h: usize,
        dim: usize,
    ) -> Vec<f32> {
        (0..c * h * dim)
            .map(|_| StandardNormal.sample(rng))
            .collect()
    }

    /// Replaces drawn candidates before they are scored (`last`: the final iteration).
    fn place(&self, _seqs: &mut [f32], _mean: &[f32], _last: bool) {}

    /// Refits the Gaussian (`mean`, `std`, one value per sequence entry) from the scored
    /// candidates (`order`: their indices by rising cost).
    fn refit(
        &mut self,
        cfg: &PlannerConfig,
        seqs: &[f32],
        costs: &[f32],
        order: &[usize],
        mean: &mut [f32],
        std: &mut [f32],
    );
}

/// Plans with `sampler` over the first member's search space, each candidate scored by the
/// mean of its costs under every member (one member: that problem's cost); returns the best
/// sequence seen.
pub(super) fn plan(
    cfg: &PlannerConfig,
    members: &[(&Problem, &SearchSpace)],
    sampler: &mut dyn Sampler,
) -> Plan {
    let (problem, space) = members[0];
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let (h, dim) = (cfg.horizon, space.dim());
    let width = h * dim;
    let (mut mean, mut std) = space.init(h);
    let mut best: (f32, Vec<f32>) = (f32::INFINITY, mean.clone());
    let mut rollouts = 0;
    let iterations = sampler.iterations(cfg);
    for it in 0..iterations {
        let c = sampler.population(cfg, it);
        let noise = sampler.noise(cfg, &mut rng, c, h, dim);
        let mut seqs: Vec<f32> = (0..c * width)
            .map(|i| mean[i % width] + std[i % width] * noise[i])
            .collect();
        sampler.place(&mut seqs, &mean, it + 1 == iterations);
        space.clamp(&mut seqs);
        let mut costs = vec![0.0f32; c];
        for (problem, space) in members {
            let steps = rollout_all(problem, space, &seqs, c, h);
            let mut cost = trajectory_cost(
                cfg.cost,
                cfg.pooled,
                cfg.objective,
                steps.clone(),
                problem.goal.clone(),
            );
            if let Some(p) = support_penalty(problem, steps) {
                cost = cost + p;
            }
            for (total, v) in costs.iter_mut().zip(host(cost)) {
                *total += v / members.len() as f32;
            }
        }
        rollouts += c;
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&a, &b| costs[a].total_cmp(&costs[b]));
        if costs[order[0]] < best.0 {
            best = (
                costs[order[0]],
                seqs[order[0] * width..(order[0] + 1) * width].to_vec(),
            );
        }
        sampler.refit(cfg, &seqs, &costs, &order, &mut mean, &mut std);
    }
    let best_steps = rollout_all(problem, space, &best.1, 1, h);
    if problem.support.is_some() && tracing::enabled!(tracing::Level::DEBUG) {
        let goal = host(trajectory_cost(
            cfg.cost,
            cfg.pooled,
            cfg.objective,
            best_steps.clone(),
            problem.goal.clone(),
        ))[0];
        let pen = support_penalty(problem, best_steps.clone()).map(host);
        tracing::debug!("chosen plan: goal cost {goal:.4}, support penalty {pen:?}");
    }
    // Confidence of the chosen plan: cosine of its final frame to the goal.
    let finals = final_frames(best_steps);
    let confidence = host(pooled_cosine(finals, problem.goal.clone()))[0];
    Plan {
        sequence: best.1,
        dim,
        cost: best.0,
        confidence,
        rollouts,
    }
}
