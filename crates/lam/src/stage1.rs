//! `lam train` and `lam eval`.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;
use lam_data::{ShardSet, Split};
use lam_model::LamConfig;
use lam_model::checkpoint;
use lam_model::device::parse_device;
use lam_model::eval::{EvalReport, evaluate};
use lam_model::train::{TrainOptions, TrainSummary};
use tracing::info;

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Shard folder (its `train` split is used, and `val` for validation). With --resume it
    /// defaults to the folder the run was started on (its run.json).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Run folder for config, metrics and checkpoints.
    #[arg(long)]
    pub run: PathBuf,
    /// Named preset: tiny (CPU) or paper (the paper's sizes).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// TOML config file (fields missing from it come from its `preset` key, else tiny).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Override any field: `--set train.steps=1000 --set regularizer.kind=noisy`.
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Shortcut for `--set regularizer.kind=...` (sparse, noisy, vq).
    #[arg(long)]
    pub regularizer: Option<String>,
    /// Shortcut for `--set train.steps=...`.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Continue the run from its latest checkpoint with the run's saved config (or start it,
    /// when it has no checkpoint yet: the same command can be repeated after any preemption).
    #[arg(long)]
    pub resume: bool,
    /// Start over in a run folder that holds an earlier run (its checkpoints and metrics
    /// are deleted); without --force or --resume such a folder is refused.
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Builds the run configuration from preset / file / overrides and the data's shapes.
pub fn resolve_config(args: &TrainArgs, data: &ShardSet) -> Result<LamConfig> {
    let saved = args.run.join("config.toml");
    if args.resume
        && saved.exists()
        && args.config.is_none()
        && args.overrides.is_empty()
        && args.regularizer.is_none()
        && args.steps.is_none()
    {
        return LamConfig::from_toml_file(&saved);
    }
    let mut cfg = match &args.config {
        Some(path) => LamConfig::from_toml_file(path)?,
        None => LamConfig::preset(&args.preset)?,
    };
    // The data decides the input shapes.
    cfg.model.embed_dim = data.index.dim;
    cfg.model.grid = data.index.grid;
    cfg.model.frames = data.index.frames;
    let mut overrides = args.overrides.clone();
    if let Some(r) = &args.regularizer {
        overrides.push(format!("regularizer.kind=\"{r}\""));
    }
    if let Some(s) = args.steps {
        overrides.push(format!("train.steps={s}"));
    }
    cfg.with_overrides(&overrides)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let summary = train_run(&args)?;
    if summary.final_train_loss.is_nan() && summary.final_val.is_none() {
        println!(
            "nothing left to train: {} is complete at step {}\ncheckpoint: {}",
            args.run.display(),
            summary.steps_done,
            summary
                .last_checkpoint
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "trained {} steps ({:.2} steps/s); final train loss {:.5}{}\ncheckpoint: {}",
        summary.steps_done,
        summary.steps_per_sec,
        summary.final_train_loss,
        summary
            .final_val
            .as_ref()
            .and_then(|v| v.get("pred"))
            .map(|p| format!(", val pred loss {:.5}", p.as_f64().unwrap_or(f64::NAN)))
            .unwrap_or_default(),
        summary
            .last_checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    Ok(())
}

/// The shard folder to train on: `--data`, else (resuming) the one the run was started on.
fn data_dir(args: &TrainArgs) -> Result<PathBuf> {
    if let Some(d) = &args.data {
        return Ok(d.clone());
    }
    ensure!(
        args.resume,
        "--data is needed to start a run (only --resume finds it in the run folder)"
    );
    lam_model::train::run_data_dir(&args.run)?.with_context(|| {
        format!(
            "--resume without --data: {} has no {} naming its data yet; give --data",
            args.run.display(),
            lam_model::train::RUN_FILE
        )
    })
}

pub fn train_run(args: &TrainArgs) -> Result<TrainSummary> {
    let data_dir = data_dir(args)?;
    let data = ShardSet::open(&data_dir, Some(Split::Train))?;
    let val = ShardSet::open(&data_dir, Some(Split::Val))?;
    let cfg = resolve_config(args, &data)?;
    let device = parse_device(&args.device)?;
    info!(
        "training on {} clips ({} val) from {}: T={} N={} D={}, regularizer {:?}, {} steps of batch {}",
        data.len(),
        val.len(),
        data_dir.display(),
        cfg.model.frames,
        cfg.model.tokens(),
        cfg.model.embed_dim,
        cfg.regularizer.kind,
        cfg.train.steps,
        cfg.train.batch_size
    );
    let opts = TrainOptions {
        run_dir: args.run.clone(),
        resume: args.resume,
        force: args.force,
        progress: !args.quiet,
        stop_after: None,
    };
    lam_model::train::train(
        &cfg,
        &data,
        (!val.is_empty()).then_some(&val),
        &device,
        &opts,
    )
}

#[derive(Args, Clone)]
pub struct EvalArgs {
    /// Run folder (its latest checkpoint) or a checkpoint folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Shard folder; its `val` split is evaluated.
    #[arg(long)]
    pub data: PathBuf,
    /// Evaluate at most this many clips.
    #[arg(long, default_value_t = 256)]
    pub clips: usize,
    /// Clips per forward batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Write the report as JSON here (default: CHECKPOINT/eval.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let (report, out) = eval_run(&args)?;
    print!("{}", report.table());
    println!("written to {}", out.display());
    Ok(())
}

pub fn eval_run(args: &EvalArgs) -> Result<(EvalReport, PathBuf)> {
    let device = parse_device(&args.device)?;
    let (cfg, model, ckpt) = checkpoint::load_run(&args.run, &device)?;
    let val = ShardSet::open(&args.data, Some(Split::Val))?;
    lam_model::train::check_data(&cfg, &val)?;
    let report = evaluate(&cfg, &model, &val, &device, args.clips, args.batch)?;
    let out = args.out.clone().unwrap_or_else(|| ckpt.join("eval.json"));
    lam_data::shards::write_atomic(&out, serde_json::to_string_pretty(&report)?.as_bytes())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok((report, out))
}
