//! `lam control fit`: the controller between robot actions and latent actions; `lam control
//! support`: the support critic planners can use to avoid predicted changes the video never
//! shows.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::prelude::Device;
use clap::{Args, Subcommand};
use lam_control::controller::{self, ControllerConfig, ControllerReport};
use lam_control::support::{SupportConfig, SupportReport};
use lam_data::{ShardSet, Split};
use lam_model::LatentActionModel;
use lam_model::config::LamConfig;
use lam_model::device::parse_device;
use tracing::info;

use lam_model::checkpoint::load_run;

use crate::settings_args::ConfigArgs;

#[derive(Subcommand)]
pub enum ControlCommand {
    /// Fit g_ctrl: a -> z and the inverse z -> a on labeled shards, the LAM frozen.
    Fit(FitArgs),
    /// Fit the support critic on a world model's training shards (actions not needed): which
    /// changes happen in which frames, so planners can avoid predictions that never do.
    Support(SupportArgs),
}

#[derive(Args, Clone)]
pub struct SupportArgs {
    /// Stage-1 run folder (latest checkpoint) or checkpoint folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Shard folder of video like the model's (actions not needed; the model's own training
    /// data): `train` fits, `val` reports.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder for support.safetensors and support.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Also score the real transitions of this shard folder (e.g. the robot domain the
    /// planner acts in): a mean penalty well above the held-out one says its changes look
    /// unlike the training video's, and planning there would be penalised for them.
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Optimiser steps.
    #[arg(long, default_value_t = SupportConfig::default().steps)]
    pub steps: usize,
    /// Hidden width of the MLP.
    #[arg(long, default_value_t = SupportConfig::default().hidden)]
    pub hidden: usize,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args, Clone)]
pub struct FitArgs {
    /// Stage-1 run folder (latest checkpoint) or checkpoint folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Labeled shard folder (with actions): `train` split fits, `val` split reports.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder for controller.safetensors and controller.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = ControllerConfig::default().steps)]
    pub steps: usize,
    /// Hidden width of both MLPs.
    #[arg(long, default_value_t = ControllerConfig::default().hidden)]
    pub hidden: usize,
    /// Condition both directions on the pooled frame the action is taken in: g_ctrl(a, s).
    /// The same action moves the agent or not depending on walls and contacts; planning
    /// computes each step's latent from the predicted frame it acts on.
    #[arg(long)]
    pub frame_conditioned: bool,
    /// Also fit the controller through the frozen world model with this weight: its latents
    /// must make the world model predict what the action did (0: latent regression only).
    #[arg(long, default_value_t = ControllerConfig::default().prediction_weight)]
    pub prediction_weight: f64,
    /// With --prediction-weight: train the world model along at this learning rate, on the
    /// labeled clips fed the controller's latents and fed the IDM's (0: frozen). The tuned
    /// model is written to OUT/world_model, a checkpoint folder `--run` takes.
    #[arg(long, default_value_t = ControllerConfig::default().world_model_lr)]
    pub world_model_lr: f64,
    /// Continue from the newest checkpoint in OUT/checkpoints (written at every early-stopping
    /// check; same settings and data); starts at step 0 when there is none yet. Without it an
    /// earlier fit's checkpoints in OUT are removed.
    #[arg(long)]
    pub resume: bool,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `--config OUT/config.toml`, `--set lr=3e-4 --set patience=10` (every field of the
    /// controller's settings; the flags above are shortcuts for the same keys).
    #[command(flatten)]
    pub settings: ConfigArgs,
}

/// Each settings flag of `lam control fit` and the key of `ControllerConfig` it sets.
const FIT_FLAG_KEYS: &[(&str, &str)] = &[
    ("steps", "steps"),
    ("hidden", "hidden"),
    ("frame_conditioned", "frame_conditioned"),
    ("prediction_weight", "prediction_weight"),
    ("world_model_lr", "world_model_lr"),
];

pub fn run(cmd: ControlCommand) -> Result<()> {
    match cmd {
        ControlCommand::Fit(args) => {
            let report = fit(&args)?;
            println!(
                "controller: cosine(g_ctrl(a), z) = {:.3}, R^2 {:.3} on {} held-out transitions; inverse MSE {:.4} (action variance {:.4})",
                report.cosine,
                report.r2.unwrap_or(f64::NAN),
                report.val_transitions,
                report.inverse_mse,
                report.action_variance,
            );
            if let (Some(c), Some(i)) = (report.prediction_error, report.prediction_error_idm) {
                println!(
                    "world-model prediction error (L1) on the held-out clips: {c:.4} fed the controller's latents, {i:.4} fed the IDM's"
                );
            }
            println!(
                "{} steps run; weights kept: the controller's of step {}, the inverse's of step {}",
                report.steps_run, report.best_step, report.inverse_best_step
            );
            println!("saved to {}", args.out.display());
            Ok(())
        }
        ControlCommand::Support(args) => {
            let r = support(&args)?;
            println!(
                "support critic: held-out accuracy {:.3} (0.5 is chance), loss {:.4} (ln 2 = 0.693); \
                 penalty real {:.3} / shuffled {:.3}; shuffled latents called impossible {:.1}% \
                 (real {:.1}%) on {} held-out transitions\nsaved to {}",
                r.val_accuracy,
                r.val_loss,
                r.penalty_real,
                r.penalty_shuffled,
                100.0 * r.impossible_shuffled,
                100.0 * r.impossible_real,
                r.val_transitions,
                args.out.display()
            );
            if let (Some(c), Some(dir)) = (&r.check, &args.check) {
                println!(
                    "{}: mean penalty {:.3} on {} real transitions, {:.1}% called impossible",
                    dir.display(),
                    c.penalty,
                    c.transitions,
                    100.0 * c.impossible
                );
            }
            Ok(())
        }
    }
}

/// The frozen stage-1 model of `run` (and its checkpoint folder) and the train / val splits of
/// `data`, checked to fit it.
fn open_run_and_data(
    run: &Path,
    data: &Path,
    device: &Device,
) -> Result<(LamConfig, LatentActionModel, PathBuf, ShardSet, ShardSet)> {
    let (cfg, lam, ckpt) = load_run(run, device)?;
    let train = ShardSet::open(data, Some(Split::Train))?;
    let val = ShardSet::open(data, Some(Split::Val))?;
    lam_model::train::check_data(&cfg, &train)?;
    lam_model::train::check_data(&cfg, &val)?;
    Ok((cfg, lam, ckpt, train, val))
}

pub fn support(args: &SupportArgs) -> Result<SupportReport> {
    let device = parse_device(&args.device)?;
    let (cfg, lam, _, train, val) = open_run_and_data(&args.run, &args.data, &device)?;
    info!(
        "reading the transitions of {} + {} clips",
        train.len(),
        val.len()
    );
    let tr = lam_control::support::pairs_of(&lam, &train, &device, 64)?;
    let va = lam_control::support::pairs_of(&lam, &val, &device, 64)?;
    let scfg = SupportConfig {
        steps: args.steps,
        hidden: args.hidden,
        ..Default::default()
    };
    let (critic, mut report) = lam_control::support::fit(&scfg, &tr, &va, &device)?;
    if let Some(dir) = &args.check {
        let set = ShardSet::open(dir, None)?;
        lam_model::train::check_data(&cfg, &set)?;
        let pairs = lam_control::support::pairs_of(&lam, &set, &device, 64)?;
        report.check = Some(lam_control::support::score(&critic, &pairs, &device));
        info!("{}: {:?}", dir.display(), report.check);
    }
    lam_control::support::save(&critic, &args.out, &report, &scfg)?;
    Ok(report)
}

pub fn fit(args: &FitArgs) -> Result<ControllerReport> {
    let device = parse_device(&args.device)?;
    let (cfg, mut lam, ckpt, train, val) = open_run_and_data(&args.run, &args.data, &device)?;
    info!(
        "pseudo-labelling {} + {} labeled clips with the frozen IDM",
        train.len(),
        val.len()
    );
    let ccfg = args.settings.resolve(
        ControllerConfig {
            steps: args.steps,
            hidden: args.hidden,
            frame_conditioned: args.frame_conditioned,
            prediction_weight: args.prediction_weight,
            world_model_lr: args.world_model_lr,
            ..Default::default()
        },
        FIT_FLAG_KEYS,
    )?;
    // Whole training clips only for fitting through the world model; held-out ones always,
    // for the report's prediction errors.
    let tr = controller::pseudo_label(
        &cfg,
        &lam,
        &train,
        &device,
        64,
        ccfg.prediction_weight > 0.0,
    )?;
    let va = controller::pseudo_label(&cfg, &lam, &val, &device, 64, true)?;
    let checkpoints = controller::FitCheckpoints {
        dir: args.out.clone(),
        resume: args.resume,
    };
    let (ctrl, report, tuned) = controller::fit_with(
        &ccfg,
        &tr,
        &va,
        Some(&lam.world_model),
        &device,
        Some(&checkpoints),
    )?;
    controller::save(
        &ctrl,
        &args.out,
        &report,
        &ccfg,
        tr.action_dim,
        tr.latent_dim,
    )?;
    if let Some(wm) = tuned {
        // The stage-1 checkpoint with the tuned world model: its state (config) and the whole
        // model, written under a temporary name and renamed.
        lam.world_model = wm;
        let dst = args.out.join("world_model");
        let tmp = args.out.join("world_model.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        let state = lam_model::checkpoint::load_state(&ckpt)?;
        lam_model::checkpoint::write_state(&tmp, &state)?;
        lam_model::checkpoint::save_weights(&lam, &tmp.join("model.safetensors"))?;
        if dst.exists() {
            std::fs::remove_dir_all(&dst)?;
        }
        std::fs::rename(&tmp, &dst)?;
        info!("tuned world model written to {}", dst.display());
    }
    Ok(report)
}
