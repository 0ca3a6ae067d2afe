//! The LAWM paper's Figure-4 comparison on the simulated suite.
//!
//! For the given tasks, recordings are made (or reused) under `OUT/data/`:
//!
//! | folder                 | domain | policy | episodes          | used as |
//! |------------------------|--------|--------|-------------------|---------|
//! | `{task}-robot-video`   | robot  | expert | `video_episodes`  | robot video (and, for the supervised arm only, its actions) |
//! | `{task}-human-video`   | human  | expert | `video_episodes`  | human video (actions hidden) |
//! | `{task}-demos`         | robot  | expert | `demos`           | labeled demonstrations for finetuning |
//!
//! Four arms, each ending in the same finetuning on the labeled demos of all tasks (one
//! multi-task, instruction-conditioned policy) and the protocol evaluation per task:
//!
//! 1. `scratch`: no pretraining;
//! 2. `supervised`: pretrained on the robot video's true actions, then the action layer
//!    re-initialised and finetuned;
//! 3. `wm-robot`: world-model pretraining on the robot video's frames;
//! 4. `wm-human`: world-model pretraining on the human video's frames.
//!
//! Results go to `OUT/compare.json` and `OUT/compare.md`, with the first canonical
//! correlation of the WM arms' latent actions per task.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::*;
use lam_data::shards::write_atomic;
use lam_sim::{Domain, PolicyKind, Task};
use lam_suite::{Dataset, RecordConfig, record};
use serde::Serialize;
use serde_json::json;

use lam_lawm::config::LawmConfig;
use lam_lawm::instruction::InstructionEmbedder;
use lam_lawm_train::cca::{TaskCca, latent_cca};
use lam_lawm_train::data::{FrameData, Labels};
use lam_lawm_train::train::{PolicyInit, RunOptions, RunSummary, pretrain, train_policy};

use crate::lawm::{EvalOptions, TaskResult, evaluate};

/// Comparison settings. Defaults in brackets.
#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// Tasks [reach, push, sort].
    pub tasks: Vec<Task>,
    /// Output folder.
    pub out: PathBuf,
    /// Robot and human video episodes per task [40].
    pub video_episodes: usize,
    /// Labeled robot demonstrations per task used for finetuning [10].
    pub demos: usize,
    /// Model and pretraining settings (`train` is the pretraining stage's).
    pub config: LawmConfig,
    /// Finetuning steps (other finetuning settings follow `config.train`) [2000].
    pub finetune_steps: usize,
    /// Peak learning rate of supervised policy training: finetuning, and the supervised
    /// arm's pretraining (which runs `config.train.steps` steps) [1e-3].
    pub finetune_lr: f64,
    /// Protocol episodes per task [20].
    pub eval_episodes: usize,
    /// Show progress bars [true].
    pub progress: bool,
}

/// One arm's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ArmResult {
    pub arm: String,
    pub pretraining: String,
    pub labeled_demos: usize,
    pub results: Vec<TaskResult>,
    pub pretrain_samples_per_sec: Option<f64>,
    pub finetune_samples_per_sec: f64,
    /// Mean loss over the first and the last 10% of the pretraining steps.
    pub pretrain_loss: Option<(f32, f32)>,
    /// Mean loss over the first and the last 10% of the finetuning steps.
    pub finetune_loss: (f32, f32),
    pub cca: Vec<TaskCca>,
}

fn dataset(
    out: &Path,
    task: Task,
    domain: Domain,
    episodes: usize,
    seed: u64,
    size: usize,
    name: &str,
) -> Result<PathBuf> {
    let dir = out.join("data").join(format!("{task}-{name}"));
    if let Ok(ds) = Dataset::open(&dir)
        && ds.len() == episodes
    {
        return Ok(dir);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    let mut cfg = RecordConfig {
        task,
        domain,
        episodes,
        seed,
        policy: PolicyKind::Expert,
        ..Default::default()
    };
    // The human domain keeps its default in-the-wild nuisances.
    cfg.env.size = size as u32;
    record(&cfg, &dir, false).with_context(|| format!("recording {}", dir.display()))?;
    Ok(dir)
}

/// Runs the four arms; returns their results (also written to `OUT/compare.{json,md}`).
pub fn compare(opts: &CompareOptions, device: &Device) -> Result<Vec<ArmResult>> {
    opts.config.validate()?;
    let size = opts.config.policy.image_size;
    fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut robot = Vec::new();
    let mut human = Vec::new();
    let mut demos = Vec::new();
    for (i, &task) in opts.tasks.iter().enumerate() {
        let base = 100_000 * (i as u64 + 1);
        robot.push(dataset(
            &opts.out,
            task,
            Domain::Robot,
            opts.video_episodes,
            base,
            size,
            "robot-video",
        )?);
        human.push(dataset(
            &opts.out,
            task,
            Domain::Human,
            opts.video_episodes,
            base + 50_000,
            size,
            "human-video",
        )?);
        demos.push(dataset(
            &opts.out,
            task,
            Domain::Robot,
            opts.demos,
            base + 90_000,
            size,
            "demos",
        )?);
    }
    let embedder = InstructionEmbedder::new(opts.config.policy.instruction_dim);
    let demo_data = FrameData::load(&demos, size, &embedder, Labels::Actions, None)?;
    let mut ft_cfg = opts.config.clone();
    ft_cfg.train.steps = opts.finetune_steps;
    ft_cfg.train.lr = opts.finetune_lr;
    let mut sup_cfg = opts.config.clone();
    sup_cfg.train.lr = opts.finetune_lr;
    let eval_opts = EvalOptions {
        tasks: opts.tasks.clone(),
        domain: Domain::Robot,
        episodes: opts.eval_episodes,
        execute: 1,
    };
    let run = |name: &str| RunOptions {
        run_dir: opts.out.join("runs").join(name),
        progress: opts.progress,
        resume: false,
    };
    let finetune = |name: &str, init: PolicyInit| -> Result<(RunSummary, Vec<TaskResult>)> {
        let s = train_policy(&ft_cfg, &demo_data, &init, device, &run(name))?;
        let r = evaluate(&s.checkpoint, &eval_opts, device)?;
        Ok((s, r))
    };
    let mut arms = Vec::new();

    let (s, r) = finetune("scratch", PolicyInit::Scratch)?;
    arms.push(ArmResult {
        arm: "scratch".into(),
        pretraining: "none".into(),
        labeled_demos: demo_data.episodes.len(),
        results: r,
        pretrain_samples_per_sec: None,
        finetune_samples_per_sec: s.samples_per_sec,
        pretrain_loss: None,
        finetune_loss: (s.first_loss, s.final_loss),
        cca: vec![],
    });

    let labeled = FrameData::load(&robot, size, &embedder, Labels::Actions, None)?;
    let p = train_policy(
        &sup_cfg,
        &labeled,
        &PolicyInit::Scratch,
        device,
        &run("supervised-pretrain"),
    )?;
    drop(labeled);
    let (s, r) = finetune("supervised", PolicyInit::From(p.checkpoint.clone()))?;
    arms.push(ArmResult {
        arm: "supervised".into(),
        pretraining: "robot video + true actions".into(),
        labeled_demos: demo_data.episodes.len(),
        results: r,
        pretrain_samples_per_sec: Some(p.samples_per_sec),
        finetune_samples_per_sec: s.samples_per_sec,
        pretrain_loss: Some((p.first_loss, p.final_loss)),
        finetune_loss: (s.first_loss, s.final_loss),
        cca: vec![],
    });

    for (arm, dirs, what) in [
        ("wm-robot", &robot, "robot video, no labels"),
        ("wm-human", &human, "human video, no labels"),
    ] {
        let frames = FrameData::load(dirs, size, &embedder, Labels::None, None)?;
        let p = pretrain(
            &opts.config,
            &frames,
            device,
            &run(&format!("{arm}-pretrain")),
        )?;
        drop(frames);
        let cca = latent_cca(&p.checkpoint, dirs, 4000, device)?;
        let (s, r) = finetune(arm, PolicyInit::From(p.checkpoint.clone()))?;
        arms.push(ArmResult {
            arm: arm.into(),
            pretraining: what.into(),
            labeled_demos: demo_data.episodes.len(),
            results: r,
            pretrain_samples_per_sec: Some(p.samples_per_sec),
            finetune_samples_per_sec: s.samples_per_sec,
            pretrain_loss: Some((p.first_loss, p.final_loss)),
            finetune_loss: (s.first_loss, s.final_loss),
            cca,
        });
    }
    write_atomic(
        &opts.out.join("compare.json"),
        serde_json::to_string_pretty(
            &json!({"tasks": opts.tasks.iter().map(|t| t.name()).collect::<Vec<_>>(),
            "video_episodes": opts.video_episodes, "demos_per_task": opts.demos,
            "finetune_steps": opts.finetune_steps, "finetune_lr": opts.finetune_lr,
            "eval_episodes": opts.eval_episodes,
            "config": opts.config, "arms": arms}),
        )?
        .as_bytes(),
    )?;
    write_atomic(
        &opts.out.join("compare.md"),
        table(&opts.tasks, &arms).as_bytes(),
    )?;
    Ok(arms)
}

/// Markdown table of success rates per task (and CCA where measured).
pub fn table(tasks: &[Task], arms: &[ArmResult]) -> String {
    let mut s = String::from("| arm | pretraining | labeled demos |");
    for t in tasks {
        s += &format!(" {t} |");
    }
    s += " mean |\n|---|---|---:|";
    for _ in tasks {
        s += "---:|";
    }
    s += "---:|\n";
    for a in arms {
        s += &format!("| {} | {} | {} |", a.arm, a.pretraining, a.labeled_demos);
        let mut sum = 0.0;
        for r in &a.results {
            s += &format!(
                " {:.0}% ({}/{}) |",
                100.0 * r.success_rate,
                r.successes,
                r.episodes
            );
            sum += r.success_rate;
        }
        s += &format!(" {:.0}% |\n", 100.0 * sum / a.results.len().max(1) as f64);
    }
    let with_cca: Vec<&ArmResult> = arms.iter().filter(|a| !a.cca.is_empty()).collect();
    if !with_cca.is_empty() {
        s += "\nFirst canonical correlation, latent vs true actions:\n\n| arm | task | domain | frames | CCA |\n|---|---|---|---:|---:|\n";
        for a in with_cca {
            for c in &a.cca {
                s += &format!(
                    "| {} | {} | {} | {} | {:.3} |\n",
                    a.arm, c.task, c.domain, c.samples, c.correlation
                );
            }
        }
    }
    s
}
