//! Closed-loop evaluation with the simulator's fixed protocol.
//!
//! For every protocol episode of a task (`lam_sim::eval_protocol`: seeded start state, the
//! goal the scripted expert reaches 25 steps later, a 50-step budget) the finetuned policy
//! sees its last H rendered frames and the conditioning instruction (the episode's own for
//! `sort`, the task's name otherwise), emits a chunk, and the first `execute` actions of the
//! chunk are played (de-normalised, clipped to the action space) before it plans again. All
//! episodes of a task run in lockstep so that the policy sees them as one batch. An episode
//! succeeds when the protocol's goal test holds at any step within the budget.

use std::collections::VecDeque;
use std::path::Path;

use anyhow::{Result, ensure};
use burn::prelude::*;
use lam_sim::{Domain, Env, Task, eval_protocol};
use serde::Serialize;

use crate::checkpoint::{Stage, load_policy};
use crate::data::conditioning_text;
use crate::data::{ActionNorm, to_chw};
use crate::instruction::InstructionEmbedder;
use crate::policy::Policy;

/// Evaluation settings. Defaults in brackets.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Tasks to evaluate.
    pub tasks: Vec<Task>,
    /// Embodiment the policy acts as [robot].
    pub domain: Domain,
    /// Protocol episodes per task [20].
    pub episodes: usize,
    /// Chunk actions played before planning again [1].
    pub execute: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            tasks: vec![Task::Reach],
            domain: Domain::Robot,
            episodes: 20,
            execute: 1,
        }
    }
}

/// Success of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskResult {
    pub task: String,
    pub episodes: usize,
    pub successes: usize,
    pub success_rate: f64,
    /// Mean distance to the goal at the end of the episodes (protocol's measure).
    pub mean_final_distance: f64,
}

struct Running {
    env: Env,
    history: VecDeque<Vec<u8>>,
    pending: VecDeque<Vec<f32>>,
    done: bool,
    success: bool,
}

/// Evaluates a policy checkpoint (run or checkpoint folder) of the policy stage.
pub fn evaluate(checkpoint: &Path, opts: &EvalOptions, device: &Device) -> Result<Vec<TaskResult>> {
    let (policy, state) = load_policy(checkpoint, device)?;
    ensure!(
        state.stage == Stage::Policy,
        "{} is a world-model pretraining checkpoint; its head emits latent actions. \
         Finetune it on labeled demonstrations first (lam lawm finetune)",
        checkpoint.display()
    );
    let norm = state
        .action_norm
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{} has no action normalisation", checkpoint.display()))?;
    ensure!(opts.episodes >= 1, "--episodes must be at least 1");
    ensure!(opts.execute >= 1, "--execute must be at least 1");
    let mut out = Vec::new();
    for &task in &opts.tasks {
        out.push(evaluate_task(
            &policy,
            &state.config.policy,
            &state.embedder(),
            &norm,
            task,
            opts,
            device,
        )?);
    }
    Ok(out)
}

/// One task's protocol episodes.
pub fn evaluate_task(
    policy: &Policy,
    cfg: &crate::config::PolicyConfig,
    embedder: &InstructionEmbedder,
    norm: &ActionNorm,
    task: Task,
    opts: &EvalOptions,
    device: &Device,
) -> Result<TaskResult> {
    let size = cfg.image_size;
    let episodes = eval_protocol(task, opts.domain, opts.episodes, size as u32)?;
    let mut runs = Vec::with_capacity(episodes.len());
    let mut instr = Vec::new();
    for ep in &episodes {
        let mut env = ep.env()?;
        let dims = env.action_space().names.len();
        ensure!(
            dims == policy.action_dim,
            "the policy emits {}-dimensional actions, {} in the {} domain takes {dims}",
            policy.action_dim,
            task,
            opts.domain
        );
        let first = to_chw(&env.render(), size, size);
        let success = env.success();
        runs.push(Running {
            history: std::iter::repeat_n(first, cfg.history).collect(),
            pending: VecDeque::new(),
            done: success,
            success,
            env,
        });
        instr.push(embedder.embed(&conditioning_text(Some(task), &ep.instruction)));
    }
    let budget = episodes.first().map_or(0, |e| e.budget);
    for step in 0..budget as usize {
        let active: Vec<usize> = (0..runs.len()).filter(|&i| !runs[i].done).collect();
        if active.is_empty() {
            break;
        }
        if runs[active[0]].pending.is_empty() {
            let histories: Vec<_> = active.iter().map(|&i| &runs[i].history).collect();
            let ins: Vec<&[f32]> = active.iter().map(|&i| instr[i].as_slice()).collect();
            let chunks = policy.act(cfg, norm, &histories, &ins, task as u64, step, device)?;
            for (chunk, &i) in chunks.into_iter().zip(&active) {
                runs[i]
                    .pending
                    .extend(chunk.into_iter().take(opts.execute.min(cfg.chunk)));
            }
        }
        for &i in &active {
            let r = &mut runs[i];
            let a = r.pending.pop_front().expect("planned above");
            let a = r.env.action_space().clip(&a)?;
            let info = r.env.step(&a)?;
            if info.success {
                r.done = true;
                r.success = true;
                r.pending.clear();
                continue;
            }
            r.history.pop_front();
            r.history.push_back(to_chw(&r.env.render(), size, size));
        }
    }
    let successes = runs.iter().filter(|r| r.success).count();
    let dist: f64 = runs
        .iter()
        .map(|r| r.env.goal().distance(r.env.state()) as f64)
        .sum::<f64>()
        / runs.len() as f64;
    Ok(TaskResult {
        task: task.name().to_string(),
        episodes: runs.len(),
        successes,
        success_rate: successes as f64 / runs.len() as f64,
        mean_final_distance: dist,
    })
}

/// Parses a comma-separated task list; the error names the bad value.
pub fn parse_tasks(s: &str) -> Result<Vec<Task>> {
    let tasks = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<Task>())
        .collect::<Result<Vec<_>>>()?;
    ensure!(!tasks.is_empty(), "no task given in {s:?}");
    Ok(tasks)
}
