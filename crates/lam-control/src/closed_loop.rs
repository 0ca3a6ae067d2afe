//! Closed-loop MPC in the simulated suite with the fixed evaluation protocol.
//!
//! At each replanning step the agent encodes the rendered frame, labels the last transition
//! with the IDM (so the history the world model sees carries the latents that actually
//! happened), caches the history, plans toward the encoded goal image, and executes the
//! first `replan_every` actions of the plan (latent plans go through the inverse
//! controller). Every method is scored on the same seeded episodes.

use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use lam_model::LatentActionModel;
use lam_model::config::LamConfig;
use lam_sim::protocol::EvalEpisode;
use serde::Serialize;

use crate::controller::Controller;
use crate::planner::{Plan, PlannerConfig, Problem, SearchSpace, plan};

/// Maps an RGB frame (`size * size * 3` bytes) to frame tokens `[1, N, D]`.
pub type FrameEncoder<'a> = dyn Fn(&[u8]) -> Result<Tensor<3>> + 'a;

/// Which space the planner searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// Latent actions; the inverse controller turns the first into a robot action.
    Latent,
    /// Robot actions through the controller.
    Action,
}

/// What one episode did.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeResult {
    pub seed: u64,
    pub success: bool,
    pub steps: u32,
    pub final_distance: f32,
    pub plans: usize,
    pub mean_plan_ms: f64,
    pub mean_confidence: f64,
    /// Mean L1 between the planned next frame and the frame actually reached.
    pub mean_planning_error: f64,
}

/// A latent-action MPC agent.
pub struct Agent<'a> {
    pub cfg: &'a LamConfig,
    pub lam: &'a LatentActionModel,
    pub controller: &'a Controller,
    pub encoder: &'a FrameEncoder<'a>,
    pub planner: PlannerConfig,
    pub mode: Mode,
    /// Actions executed per plan (5).
    pub replan_every: usize,
    /// Robot action bounds.
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

fn l1(a: Tensor<3>, b: Tensor<3>) -> f64 {
    (a - b).abs().mean().into_scalar::<f32>() as f64
}

impl Agent<'_> {
    /// Runs one protocol episode.
    pub fn run_episode(&self, episode: &EvalEpisode) -> Result<EpisodeResult> {
        let window = self.cfg.model.frames - 1;
        let goal = (self.encoder)(&episode.goal_frame)?;
        let wm = &self.lam.world_model;
        let reg = &self.cfg.regularizer;
        let mut frames: Vec<Tensor<3>> = Vec::new();
        let mut latents: Vec<Tensor<2>> = Vec::new();
        let mut queue: std::collections::VecDeque<(Vec<f32>, Tensor<3>)> = Default::default();
        let (mut plans, mut plan_ms, mut conf, mut err, mut err_n) =
            (0usize, 0.0, 0.0, 0.0, 0usize);
        let mut pending_prediction: Option<Tensor<3>> = None;
        let outcome = episode.run(|env| {
            let s = (self.encoder)(&env.render())?;
            if let Some(prev) = frames.last() {
                let z = self
                    .lam
                    .infer(reg, prev.clone().mean_dim(1), s.clone().mean_dim(1), &[])
                    .z;
                latents.push(z.squeeze_dim::<2>(1));
            }
            if let Some(p) = pending_prediction.take() {
                err += l1(p, s.clone());
                err_n += 1;
            }
            if queue.is_empty() {
                let cache = (!frames.is_empty()).then(|| {
                    let k = frames.len().min(window);
                    let f = Tensor::stack::<4>(frames[frames.len() - k..].to_vec(), 1);
                    let z = Tensor::stack::<3>(latents[latents.len() - k..].to_vec(), 1);
                    wm.prefill(f, z, window)
                });
                let problem = Problem {
                    world_model: wm,
                    cache: cache.as_ref(),
                    window,
                    history: None,
                    use_cache: true,
                    current: s.clone(),
                    goal: goal.clone(),
                };
                let space = match self.mode {
                    Mode::Latent => SearchSpace::Latent {
                        dim: self.cfg.model.latent_dim,
                    },
                    Mode::Action => SearchSpace::Action {
                        low: self.low.clone(),
                        high: self.high.clone(),
                        controller: Some(self.controller),
                    },
                };
                let t0 = Instant::now();
                let mut pcfg = self.planner.clone();
                pcfg.seed = self.planner.seed ^ (episode.seed.wrapping_mul(31) + plans as u64);
                let p: Plan = plan(&pcfg, &problem, &space);
                plan_ms += t0.elapsed().as_secs_f64() * 1000.0;
                conf += p.confidence as f64;
                plans += 1;
                let device = s.device();
                let steps = self.replan_every.clamp(1, pcfg.horizon);
                // Predicted frames along the plan, for the planning error.
                let mut cache_p = cache;
                let mut frame_p = s.clone();
                for k in 0..steps {
                    let x = Tensor::<2>::from_data(
                        TensorData::new(p.step(k).to_vec(), [1, p.dim]),
                        &device,
                    );
                    let (z, action) = match self.mode {
                        Mode::Latent => (x.clone(), self.controller.inverse.forward(x)),
                        Mode::Action => (self.controller.forward.forward(x.clone()), x),
                    };
                    let (pred, next) = wm.step(cache_p.as_ref(), frame_p, z, window);
                    cache_p = Some(next);
                    frame_p = pred.clone();
                    let a: Vec<f32> = action
                        .into_data()
                        .try_into_vec::<f32>()
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    queue.push_back((a, pred));
                }
            }
            let (a, pred) = queue.pop_front().expect("plan filled the queue");
            frames.push(s);
            if frames.len() > window + 1 {
                frames.remove(0);
                latents.remove(0);
            }
            pending_prediction = Some(pred);
            Ok(a)
        })?;
        Ok(EpisodeResult {
            seed: episode.seed,
            success: outcome.success,
            steps: outcome.steps,
            final_distance: outcome.final_distance,
            plans,
            mean_plan_ms: plan_ms / plans.max(1) as f64,
            mean_confidence: conf / plans.max(1) as f64,
            mean_planning_error: err / err_n.max(1) as f64,
        })
    }
}

/// Summary over episodes.
#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    pub method: String,
    pub episodes: usize,
    pub success_rate: f64,
    pub mean_steps: f64,
    pub mean_plan_ms: f64,
    pub mean_confidence: f64,
    pub mean_planning_error: f64,
}

pub fn summarize(method: &str, results: &[EpisodeResult]) -> EvalSummary {
    let n = results.len().max(1) as f64;
    EvalSummary {
        method: method.to_string(),
        episodes: results.len(),
        success_rate: results.iter().filter(|r| r.success).count() as f64 / n,
        mean_steps: results.iter().map(|r| r.steps as f64).sum::<f64>() / n,
        mean_plan_ms: results.iter().map(|r| r.mean_plan_ms).sum::<f64>() / n,
        mean_confidence: results.iter().map(|r| r.mean_confidence).sum::<f64>() / n,
        mean_planning_error: results.iter().map(|r| r.mean_planning_error).sum::<f64>() / n,
    }
}
