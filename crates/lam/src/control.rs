//! `lam control fit`: the controller between robot actions and latent actions.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use lam_control::controller::{self, ControllerConfig, ControllerReport};
use lam_data::{ShardSet, Split};
use lam_model::device::parse_device;
use tracing::info;

use crate::stage1::load_checkpoint;

#[derive(Subcommand)]
pub enum ControlCommand {
    /// Fit g_ctrl: a -> z and the inverse z -> a on labeled shards, the LAM frozen.
    Fit(FitArgs),
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
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(cmd: ControlCommand) -> Result<()> {
    match cmd {
        ControlCommand::Fit(args) => {
            let report = fit(&args)?;
            println!(
                "controller: cosine(g_ctrl(a), z) = {:.3} on {} held-out transitions; inverse MSE {:.4} (action variance {:.4})\nsaved to {}",
                report.cosine,
                report.val_transitions,
                report.inverse_mse,
                report.action_variance,
                args.out.display()
            );
            Ok(())
        }
    }
}

pub fn fit(args: &FitArgs) -> Result<ControllerReport> {
    let device = parse_device(&args.device)?;
    let (cfg, lam, _) = load_checkpoint(&args.run, &device)?;
    let train = ShardSet::open(&args.data, Some(Split::Train))?;
    let val = ShardSet::open(&args.data, Some(Split::Val))?;
    lam_model::train::check_data(&cfg, &train)?;
    lam_model::train::check_data(&cfg, &val)?;
    info!(
        "pseudo-labelling {} + {} labeled clips with the frozen IDM",
        train.len(),
        val.len()
    );
    let tr = controller::pseudo_label(&cfg, &lam, &train, &device, 64)?;
    let va = controller::pseudo_label(&cfg, &lam, &val, &device, 64)?;
    let ccfg = ControllerConfig {
        steps: args.steps,
        hidden: args.hidden,
        frame_conditioned: args.frame_conditioned,
        ..Default::default()
    };
    let (ctrl, report) = controller::fit(&ccfg, &tr, &va, &device)?;
    controller::save(
        &ctrl,
        &args.out,
        &report,
        &ccfg,
        tr.action_dim,
        tr.latent_dim,
    )?;
    Ok(report)
}
