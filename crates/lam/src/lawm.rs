//! `lam lawm ...`: pretrain, finetune, eval, cca, compare.
//!
//! ```text
//! lam lawm pretrain --data data/reach-human --out runs/wm [--steps 500] [--head mlp|diffusion]
//! lam lawm finetune --data data/reach-demos --init runs/wm --out runs/ft [--demos 10]
//! lam lawm eval --checkpoint runs/ft --task reach,push [--episodes 20]
//! lam lawm cca --checkpoint runs/wm --data data/reach-human
//! lam lawm compare --tasks reach,push,sort --out runs/compare
//! ```
//!
//! Every training command takes `--preset tiny|paper-baku|paper-diffusion`, `--config FILE`
//! (e.g. a run's `config.toml`) and `--set section.field=value`; `--device` picks the device.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use clap::{Args, Subcommand};
use lam_sim::Domain;

use lam_eval::lawm::{EvalOptions, evaluate};
use lam_eval::lawm_compare::{CompareOptions, compare, table};
use lam_lawm::config::{HeadKind, LawmConfig};
use lam_lawm::instruction::InstructionEmbedder;
use lam_lawm_train::cca::latent_cca;
use lam_lawm_train::data::{FrameData, Labels, check_dirs};
use lam_lawm_train::train::{PolicyInit, RunOptions, pretrain, train_policy};

use crate::settings_args::ConfigArgs;

/// `lam lawm`: a subcommand and the device every one of them runs on.
#[derive(Args, Debug)]
pub struct LawmArgs {
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    #[command(subcommand)]
    pub command: LawmCommand,
}

#[derive(Subcommand, Debug)]
pub enum LawmCommand {
    /// World-model pretraining of the policy on unlabeled video (no actions read).
    Pretrain(PretrainArgs),
    /// Supervised policy training on labeled demos: finetuning from a checkpoint (action
    /// layer re-initialised, world model dropped), or from scratch without --init.
    Finetune(FinetuneArgs),
    /// Closed-loop success with the simulator's evaluation protocol.
    Eval(EvalArgs),
    /// First canonical correlation between latent actions and hidden true actions.
    Cca(CcaArgs),
    /// The paper's Figure-4 comparison on the simulated suite.
    Compare(CompareArgs),
}

/// Model and optimisation settings shared by the training commands (defaults: see
/// `LawmConfig::default`).
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Input frame side (multiple of 8).
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Observation history length.
    #[arg(long, default_value_t = 2)]
    pub history: usize,
    /// Actions per chunk.
    #[arg(long, default_value_t = 10)]
    pub chunk: usize,
    /// Latent action dimension.
    #[arg(long, default_value_t = 7)]
    pub latent_dim: usize,
    /// Action head: mlp or diffusion.
    #[arg(long, default_value = "mlp")]
    pub head: HeadKind,
    /// Optimiser steps.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Random-shift augmentation of the policy's input, pixels (0 disables).
    #[arg(long, default_value_t = 2)]
    pub augment_shift: usize,
    /// Checkpoint every this many steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: usize,
    /// Continue the run in --out from its latest checkpoint (weights, optimizer state and
    /// step), with the same settings.
    #[arg(long)]
    pub resume: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// `--preset tiny|paper-baku|paper-diffusion`, `--config RUN/config.toml`, `--set
    /// world_model.deter=512` (the flags above are shortcuts for the same keys).
    #[command(flatten)]
    pub settings: ConfigArgs,
}

/// Each settings flag and the key of `LawmConfig` it sets.
const FLAG_KEYS: &[(&str, &str)] = &[
    ("size", "policy.image_size"),
    ("history", "policy.history"),
    ("chunk", "policy.chunk"),
    ("latent_dim", "policy.latent_dim"),
    ("head", "policy.head"),
    ("steps", "train.steps"),
    ("batch_size", "train.batch_size"),
    ("lr", "train.lr"),
    ("seed", "train.seed"),
    ("augment_shift", "train.augment_shift"),
    ("checkpoint_every", "train.checkpoint_every"),
];

impl ModelArgs {
    /// Run folder, progress bar and resumption of a training command writing to `out`.
    pub fn run_options(&self, out: &std::path::Path) -> RunOptions {
        RunOptions {
            run_dir: out.to_path_buf(),
            progress: !self.quiet,
            resume: self.resume,
        }
    }

    /// The run's settings: preset or file, the flags, then `--set`.
    pub fn config(&self) -> Result<LawmConfig> {
        self.settings.resolve(self.flag_config(), FLAG_KEYS)
    }

    fn flag_config(&self) -> LawmConfig {
        let mut c = LawmConfig::default();
        c.policy.image_size = self.size;
        c.policy.history = self.history;
        c.policy.chunk = self.chunk;
        c.policy.latent_dim = self.latent_dim;
        c.policy.head = self.head;
        c.train.steps = self.steps;
        c.train.batch_size = self.batch_size;
        c.train.lr = self.lr;
        c.train.seed = self.seed;
        c.train.augment_shift = self.augment_shift;
        c.train.checkpoint_every = self.checkpoint_every;
        c
    }
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Video to pretrain on: lam-sim recordings, LeRobot datasets (v2.1 / v3.0: the first
    /// camera, task strings as instructions) or folders of videos (10 fps, no instruction);
    /// repeat or comma-separate.
    #[arg(long, required = true, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// Run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Episodes per folder (all by default).
    #[arg(long)]
    pub max_episodes: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Labeled robot demonstrations: lam-sim recordings or LeRobot datasets (v2.1 / v3.0) with
    /// a 1-D `action` feature; repeat or comma-separate.
    #[arg(long, required = true, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// Checkpoint to start from (run or checkpoint folder); from scratch without it.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Run folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Labeled demos used per folder (all by default).
    #[arg(long)]
    pub demos: Option<usize>,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Finetuned checkpoint (run or checkpoint folder).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Tasks, comma-separated.
    #[arg(long, default_value = "reach")]
    pub task: String,
    #[arg(long, default_value = "robot")]
    pub domain: String,
    /// Protocol episodes per task.
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
    /// Chunk actions played before planning again.
    #[arg(long, default_value_t = 1)]
    pub execute: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CcaArgs {
    /// Pretraining checkpoint (run or checkpoint folder).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Recordings with ground truth, one result per folder; repeat or comma-separate.
    #[arg(long, required = true, value_delimiter = ',')]
    pub data: Vec<PathBuf>,
    /// Frames used per folder.
    #[arg(long, default_value_t = 4000)]
    pub max_frames: usize,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Tasks, comma-separated.
    #[arg(long, default_value = "reach,push,sort")]
    pub tasks: String,
    #[arg(long)]
    pub out: PathBuf,
    /// Robot and human video episodes per task.
    #[arg(long, default_value_t = 40)]
    pub video_episodes: usize,
    /// Labeled demos per task for finetuning.
    #[arg(long, default_value_t = 10)]
    pub demos: usize,
    /// Finetuning steps (--steps sets the pretraining steps).
    #[arg(long, default_value_t = 2000)]
    pub finetune_steps: usize,
    /// Learning rate of supervised policy training (finetuning and the supervised arm's
    /// pretraining; --lr sets the world-model pretraining's).
    #[arg(long, default_value_t = 1e-3)]
    pub finetune_lr: f64,
    /// Protocol episodes per task.
    #[arg(long, default_value_t = 20)]
    pub eval_episodes: usize,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: LawmArgs) -> Result<()> {
    let device = lam_model::device::parse_device(&args.device)?;
    match args.command {
        LawmCommand::Pretrain(a) => {
            check_dirs(&a.data)?;
            let cfg = a.model.config()?;
            let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
            let data = FrameData::load(
                &a.data,
                cfg.policy.image_size,
                &emb,
                Labels::None,
                a.max_episodes,
            )?;
            let opts = a.model.run_options(&a.out);
            let s = pretrain(&cfg, &data, &device, &opts)?;
            println!(
                "pretrained {} steps on {} episodes: loss {:.3} -> {:.3}, {:.1} samples/s; checkpoint {}",
                s.steps,
                data.episodes.len(),
                s.first_loss,
                s.final_loss,
                s.samples_per_sec,
                s.checkpoint.display()
            );
        }
        LawmCommand::Finetune(a) => {
            check_dirs(&a.data)?;
            let mut cfg = a.model.config()?;
            let init = match &a.init {
                Some(p) => {
                    // The architecture (and thus the frame size) is the checkpoint's.
                    let state =
                        lam_lawm::checkpoint::load_state(&lam_lawm::checkpoint::resolve(p)?)?;
                    cfg.policy = state.config.policy;
                    PolicyInit::From(p.clone())
                }
                None => PolicyInit::Scratch,
            };
            let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
            let data = FrameData::load(
                &a.data,
                cfg.policy.image_size,
                &emb,
                Labels::Actions,
                a.demos,
            )?;
            let opts = a.model.run_options(&a.out);
            let s = train_policy(&cfg, &data, &init, &device, &opts)?;
            println!(
                "trained the policy {} steps on {} labeled demos: loss {:.4} -> {:.4}, {:.1} samples/s; checkpoint {}",
                s.steps,
                data.episodes.len(),
                s.first_loss,
                s.final_loss,
                s.samples_per_sec,
                s.checkpoint.display()
            );
        }
        LawmCommand::Eval(a) => {
            let opts = EvalOptions {
                tasks: lam_eval::lawm::parse_tasks(&a.task)?,
                domain: a.domain.parse::<Domain>()?,
                episodes: a.episodes,
                execute: a.execute,
            };
            let results = evaluate(&a.checkpoint, &opts, &device)?;
            for r in &results {
                println!(
                    "{:6} success {:5.1}% ({}/{}), mean final distance {:.2}",
                    r.task,
                    100.0 * r.success_rate,
                    r.successes,
                    r.episodes,
                    r.mean_final_distance
                );
            }
            if let Some(p) = a.json {
                lam_data::shards::write_atomic(
                    &p,
                    serde_json::to_string_pretty(&results)?.as_bytes(),
                )?;
            }
        }
        LawmCommand::Cca(a) => {
            check_dirs(&a.data)?;
            for c in latent_cca(&a.checkpoint, &a.data, a.max_frames, &device)? {
                println!(
                    "{:6} {:12} {:6} frames  first canonical correlation {:.4}",
                    c.task, c.domain, c.samples, c.correlation
                );
            }
        }
        LawmCommand::Compare(a) => {
            let tasks = lam_eval::lawm::parse_tasks(&a.tasks)?;
            ensure!(
                !a.model.resume,
                "compare runs every stage afresh; --resume applies to pretrain and finetune"
            );
            let opts = CompareOptions {
                tasks: tasks.clone(),
                out: a.out,
                video_episodes: a.video_episodes,
                demos: a.demos,
                config: a.model.config()?,
                finetune_steps: a.finetune_steps,
                finetune_lr: a.finetune_lr,
                eval_episodes: a.eval_episodes,
                progress: !a.model.quiet,
            };
            let arms = compare(&opts, &device)?;
            print!("{}", table(&tasks, &arms));
        }
    }
    Ok(())
}
