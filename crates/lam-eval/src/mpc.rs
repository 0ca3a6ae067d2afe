//! Closed-loop MPC on the simulated suite's fixed evaluation protocol: each protocol episode
//! is run with an [`Agent`]'s [`lam_control::closed_loop::MpcSession`], encoding the rendered
//! frames, executing each returned block of robot actions (or its first `act_steps`) before
//! the next frame is encoded, and scoring success, steps, plan time, the plan's confidence and
//! the world model's planning error (the L1 between the frame predicted at a block's end and
//! the frame reached there). Every method is
//! scored on the same seeded episodes.

use std::collections::VecDeque;

use anyhow::Result;
use burn::prelude::*;
use lam_control::closed_loop::Agent;
use lam_sim::protocol::EvalEpisode;
use serde::Serialize;

/// Maps an RGB frame (`size * size * 3` bytes), the simulator state it shows and the
/// episode's layout to frame tokens `[1, N, D]` (learned encoders read the pixels, the oracle
/// reads the state and layout).
pub type FrameEncoder<'a> =
    dyn Fn(&[u8], &lam_sim::SimState, &lam_sim::Layout) -> Result<Tensor<3>> + 'a;

/// What one episode did.
#[derive(Clone, Debug, Serialize)]
pub struct EpisodeResult {
    pub seed: u64,
    pub success: bool,
    pub steps: u32,
    pub final_distance: f32,
    pub plans: usize,
    pub mean_plan_ms: f64,
    /// Mean over plans of the pooled cosine between the plan's final predicted frame and the
    /// goal.
    pub mean_confidence: f64,
    /// Mean L1 between the predicted next frame and the frame actually reached.
    pub mean_planning_error: f64,
    /// Frames seen, for strips (only when asked for).
    #[serde(skip)]
    pub trace: Option<Trace>,
}

/// Frames of an episode for a strip: each observation (RGB) and, for each, the index of the
/// observed frame closest (pooled cosine) to what the world model predicted for it.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub frames: Vec<Vec<u8>>,
    /// For step k >= 1: index into `frames` (or `frames.len()` for the goal) of the frame
    /// nearest to the prediction made at step k - 1.
    pub nearest_to_prediction: Vec<usize>,
    pub goal: Vec<u8>,
}

/// The goal frame of a protocol episode as `encoder` embeds it (`[1, N, D]`).
pub fn encode_goal(episode: &EvalEpisode, encoder: &FrameEncoder) -> Result<Tensor<3>> {
    let layout = episode.env()?.layout().clone();
    encoder(&episode.goal_frame, &episode.goal_state, &layout)
}

/// Runs one protocol episode with `agent`, encoding rendered frames with `encoder`; with
/// `trace`, keeps the frames for a strip.
pub fn run_episode(
    agent: &Agent,
    episode: &EvalEpisode,
    encoder: &FrameEncoder,
    trace: bool,
) -> Result<EpisodeResult> {
    agent.check()?;
    let goal = encode_goal(episode, encoder)?;
    let mut session = agent.session(goal.clone(), episode.seed);
    let (mut plans, mut plan_ms, mut conf, mut err, mut err_n) = (0usize, 0.0, 0.0, 0.0, 0usize);
    // Predictions waiting for the step they are of.
    let mut pending: VecDeque<(usize, Tensor<3>)> = VecDeque::new();
    let mut t = 0usize;
    let mut seen: Vec<Tensor<3>> = Vec::new();
    let mut predictions: Vec<Tensor<3>> = Vec::new();
    let mut frames_rgb: Vec<Vec<u8>> = Vec::new();
    let mut block: VecDeque<Vec<f32>> = VecDeque::new();
    let a_dim = agent.low.len();
    let outcome = episode.run(|env| {
        if let Some(a) = block.pop_front() {
            t += 1;
            return Ok(a);
        }
        let rgb = env.render();
        let s = encoder(&rgb, env.state(), env.layout())?;
        // Predictions live in the model's (possibly standardised) token space.
        let seen_now = agent.lam.normalize(s.clone());
        while let Some((due, p)) = pending.pop_front() {
            if due > t {
                pending.push_front((due, p));
                break;
            }
            if due == t {
                err += (p - seen_now.clone()).abs().mean().into_scalar::<f32>() as f64;
                err_n += 1;
            }
        }
        let step = session.act(s.clone())?;
        if step.planned {
            plans += 1;
            plan_ms += step.plan_ms;
            conf += step.confidence as f64;
        }
        pending.push_back((t + agent.frameskip.max(1), step.predicted.clone()));
        if trace {
            frames_rgb.push(rgb);
            seen.push(seen_now);
            predictions.push(step.predicted.clone());
        }
        block.extend(step.actions(a_dim));
        t += 1;
        Ok(block
            .pop_front()
            .expect("a block holds at least one action"))
    })?;
    let trace = trace.then(|| {
        // Candidates: every observed frame and the goal.
        seen.push(agent.lam.normalize(goal));
        let bank = Tensor::cat(seen.iter().map(|t| t.clone().mean_dim(1)).collect(), 0);
        let nearest = predictions
            .iter()
            .take(predictions.len().saturating_sub(1))
            .map(|p| nearest_index(&bank, p.clone().mean_dim(1)))
            .collect();
        Trace {
            frames: frames_rgb,
            nearest_to_prediction: nearest,
            goal: episode.goal_frame.clone(),
        }
    });
    Ok(EpisodeResult {
        seed: episode.seed,
        success: outcome.success,
        steps: outcome.steps,
        final_distance: outcome.final_distance,
        plans,
        mean_plan_ms: plan_ms / plans.max(1) as f64,
        mean_confidence: conf / plans.max(1) as f64,
        mean_planning_error: err / err_n.max(1) as f64,
        trace,
    })
}

/// Row of `bank` (`[M, 1, D]`) with the highest cosine to `x` (`[1, 1, D]`).
fn nearest_index(bank: &Tensor<3>, x: Tensor<3>) -> usize {
    let m = bank.dims()[0];
    let b = bank.clone().squeeze_dim::<2>(1);
    let x = x.squeeze_dim::<2>(1).expand([m, b.dims()[1]]);
    let dot = (b.clone() * x.clone()).sum_dim(1);
    let norm = (b.square().sum_dim(1) * x.square().sum_dim(1)).sqrt() + 1e-12;
    let cos: Vec<f32> = (dot / norm)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    cos.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
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
