//! Closed-loop evaluation of a LAWM policy with the simulator's fixed protocol.
//!
//! For every protocol episode of a task (`lam_sim::eval_protocol`: seeded start state, the
//! goal the scripted expert reaches 25 steps later, a 50-step budget) the finetuned policy
//! sees its last H rendered frames and the conditioning instruction (the episode's own for
//! `sort`, the task's name otherwise), emits a chunk, and the first `execute` actions of the
//! chunk are played (de-normalised, clipped to the action space) before it plans again
//! ([`lam_lawm::session`], as `lam serve` acts). All episodes of a task run in lockstep so that
//! the policy sees them as one batch. An episode
//! succeeds when the protocol's goal test holds at any step within the budget.

use std::path::Path;

use anyhow::{Result, ensure};
use burn::prelude::*;
use lam_sim::{Domain, Env, Task, eval_protocol};
use serde::Serialize;

use lam_lawm::session::{PolicyRunner, PolicySession};
use lam_lawm_train::data::conditioning_text;

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
    session: PolicySession,
    done: bool,
    success: bool,
}

/// Evaluates a policy checkpoint (run or checkpoint folder) of the policy stage.
pub fn evaluate(checkpoint: &Path, opts: &EvalOptions, device: &Device) -> Result<Vec<TaskResult>> {
    ensure!(opts.episodes >= 1, "--episodes must be at least 1");
    let runner = PolicyRunner::load(checkpoint, opts.execute, device)?;
    opts.tasks
        .iter()
        .map(|&task| evaluate_task(&runner, task, opts))
        .collect()
}

/// One task's protocol episodes, run in lockstep (one batch per query).
pub fn evaluate_task(runner: &PolicyRunner, task: Task, opts: &EvalOptions) -> Result<TaskResult> {
    let size = runner.image_size();
    let episodes = eval_protocol(task, opts.domain, opts.episodes, size as u32)?;
    let mut runs = Vec::with_capacity(episodes.len());
    for ep in &episodes {
        let env = ep.env()?;
        let dims = env.action_space().names.len();
        ensure!(
            dims == runner.action_dim(),
            "the policy emits {}-dimensional actions, {} in the {} domain takes {dims}",
            runner.action_dim(),
            task,
            opts.domain
        );
        let success = env.success();
        let session = runner.session(
            &conditioning_text(Some(task.name()), &ep.instruction),
            task as u64,
        );
        runs.push(Running {
            session,
            done: success,
            success,
            env,
        });
    }
    let budget = episodes.first().map_or(0, |e| e.budget);
    for _ in 0..budget {
        let mut active: Vec<&mut Running> = runs.iter_mut().filter(|r| !r.done).collect();
        if active.is_empty() {
            break;
        }
        for r in active.iter_mut() {
            let frame = lam_ingest::preprocess::rgb_bytes(
                &r.env.render(),
                size as u32,
                size as u32,
                size as u32,
            )
            .map_err(anyhow::Error::msg)?;
            r.session.observe(frame);
        }
        let mut sessions: Vec<&mut PolicySession> =
            active.iter_mut().map(|r| &mut r.session).collect();
        let steps = runner.step(&mut sessions)?;
        for (r, step) in active.into_iter().zip(steps) {
            let a = r.env.action_space().clip(&step.action)?;
            if r.env.step(&a)?.success {
                r.done = true;
                r.success = true;
            }
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
