//! `lam train` and `lam eval`.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use clap::Args;
use lam_data::{ShardSet, Split};
use lam_encoder::end_to_end::{
    EndToEndConfig, EndToEndRun, EndToEndSummary, load_clip_frames, resolve_init, run_config,
    train_end_to_end,
};
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
    #[arg(long, conflicts_with = "frames")]
    pub data: Option<PathBuf>,
    /// Train end to end from pixels instead: the sim encoder learns jointly with the IDM and
    /// world model, reading this lam-sim recording, LeRobot dataset or video folder; the run
    /// folder also gets `encoder/` (pass it as --encoder to embed, plan and serve).
    #[arg(long)]
    pub frames: Option<PathBuf>,
    #[command(flatten)]
    pub end_to_end: EndToEndArgs,
    /// Run folder for config, metrics and checkpoints.
    #[arg(long)]
    pub run: PathBuf,
    /// Named preset: tiny (CPU) or paper (the paper's sizes).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// TOML config file (fields missing from it come from its `preset` key, else tiny).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Override any field: `--set train.steps=1000 --set regularizer.kind=noisy`; with
    /// --frames, `--set end_to_end.FIELD=VALUE` sets the end-to-end settings (e.g.
    /// `end_to_end.encoder.depth=4`, `end_to_end.eval_frames=512`).
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
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Settings of `lam train --frames` (`lam_encoder::end_to_end::EndToEndConfig`).
#[derive(Args, Clone)]
pub struct EndToEndArgs {
    /// Guard against collapse: sigreg (SIGReg on the frame embeddings), ema (targets from an
    /// EMA target encoder), distill (to the frozen initial encoder) or none.
    #[arg(long, default_value = "sigreg")]
    pub guard: String,
    /// Start from this sim-encoder checkpoint (e.g. `lam encoder pretrain`'s encoder/);
    /// otherwise a fresh encoder of --patch / --dim / --keypoints.
    #[arg(long)]
    pub encoder_init: Option<PathBuf>,
    /// Frame embedding: mean (the mean token) or keypoints (the keypoint positions).
    #[arg(long, value_enum, default_value = "mean")]
    pub pooling: crate::encoder::PoolingArg,
    /// Peak learning rate of the encoder (AdamW, warmup + cosine).
    #[arg(long, default_value_t = EndToEndConfig::default().encoder_lr)]
    pub encoder_lr: f64,
    #[arg(long, default_value_t = EndToEndConfig::default().sigreg_weight)]
    pub sigreg_weight: f64,
    /// Decay of the EMA target encoder.
    #[arg(long, default_value_t = EndToEndConfig::default().ema_decay)]
    pub ema_decay: f64,
    /// Weight alpha of the distillation to the initial encoder.
    #[arg(long, default_value_t = EndToEndConfig::default().distill_weight)]
    pub distill_weight: f64,
    /// Fresh encoder: patch side, token channels, keypoints (pixel stem).
    #[arg(long, default_value_t = EndToEndConfig::default().encoder.patch_size)]
    pub patch: usize,
    #[arg(long, default_value_t = EndToEndConfig::default().encoder.dim)]
    pub dim: usize,
    #[arg(long, default_value_t = 0)]
    pub keypoints: usize,
    /// Frame rate clips are sampled at (the recordings run at 10; 2 = blocks of 5 steps).
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,
    /// Frames per clip (history + the next).
    #[arg(long, default_value_t = 4)]
    pub clip_frames: usize,
    /// Resampled frames between clip starts (1: every window).
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// At most this many distinct frames are loaded.
    #[arg(long, default_value_t = 40_000)]
    pub max_frames: usize,
    /// Share of episodes / videos held out for validation and the collapse statistics.
    #[arg(long, default_value_t = 0.05)]
    pub val_fraction: f64,
    /// Stop at the first collapse and keep the last checkpoint before it.
    #[arg(long)]
    pub stop_on_collapse: bool,
    /// Task of the linear probe of the true state, for sim recordings (none: no probe).
    #[arg(long, default_value = "none")]
    pub probe_task: String,
    #[arg(long, default_value = "robot")]
    pub probe_domain: String,
}

impl EndToEndArgs {
    fn config(&self) -> Result<EndToEndConfig> {
        let d = EndToEndConfig::default();
        Ok(EndToEndConfig {
            encoder: lam_encoder::sim::SimEncoderConfig {
                patch_size: self.patch,
                dim: self.dim,
                keypoints: self.keypoints,
                pixel_keypoints: self.keypoints > 0,
                ..d.encoder.clone()
            },
            init: self.encoder_init.clone(),
            pooling: self.pooling.into(),
            guard: self.guard.parse()?,
            encoder_lr: self.encoder_lr,
            sigreg_weight: self.sigreg_weight,
            ema_decay: self.ema_decay,
            distill_weight: self.distill_weight,
            fps: self.fps,
            stride: self.stride,
            max_frames: self.max_frames,
            val_fraction: self.val_fraction,
            ..d
        })
    }
}

/// Builds the run configuration from preset / file / overrides and the data's shapes.
pub fn resolve_config(args: &TrainArgs, data: &ShardSet) -> Result<LamConfig> {
    config_for(args, data.index.dim, data.index.grid, data.index.frames)
}

/// The run configuration for inputs of `dim` channels on `grid`, clips of `frames`.
fn config_for(args: &TrainArgs, dim: usize, grid: [usize; 2], frames: usize) -> Result<LamConfig> {
    let saved = args.run.join("config.toml");
    if args.resume
        && saved.exists()
        && args.config.is_none()
        && stage1_overrides(args).is_empty()
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
    cfg.model.embed_dim = dim;
    cfg.model.grid = grid;
    cfg.model.frames = frames;
    let mut overrides = stage1_overrides(args);
    if let Some(r) = &args.regularizer {
        overrides.push(format!("regularizer.kind=\"{r}\""));
    }
    if let Some(s) = args.steps {
        overrides.push(format!("train.steps={s}"));
    }
    cfg.with_overrides(&overrides)
}

/// The prefix of `--set` keys that go to the end-to-end settings
/// (`lam_encoder::end_to_end::EndToEndConfig`) instead of the latent action model's.
const END_TO_END: &str = "end_to_end.";

/// `--set` items for the latent action model's settings.
fn stage1_overrides(args: &TrainArgs) -> Vec<String> {
    (args.overrides.iter())
        .filter(|o| !o.trim_start().starts_with(END_TO_END))
        .cloned()
        .collect()
}

/// `--set end_to_end.KEY=VALUE` items, without their prefix.
fn end_to_end_overrides(args: &TrainArgs) -> Vec<String> {
    (args.overrides.iter())
        .filter_map(|o| o.trim_start().strip_prefix(END_TO_END).map(str::to_string))
        .collect()
}

pub fn train(args: TrainArgs) -> Result<()> {
    if args.frames.is_some() || (args.resume && run_config(&args.run)?.is_some()) {
        let s = train_end_to_end_run(&args)?;
        println!("{}", lam_encoder::end_to_end::report(&s));
        return Ok(());
    }
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

/// `lam train --frames`: end-to-end stage 1 from pixels.
pub fn train_end_to_end_run(args: &TrainArgs) -> Result<EndToEndSummary> {
    let saved = run_config(&args.run)?;
    let e2e_overrides = end_to_end_overrides(args);
    let from_flags = || -> Result<EndToEndConfig> {
        lam_model::settings::with_overrides(args.end_to_end.config()?, &e2e_overrides)
    };
    let (source_path, mut cfg) = match (&args.frames, &saved) {
        (Some(p), _) if !args.resume => (p.clone(), from_flags()?),
        (given, Some(saved)) => {
            let path = match given {
                Some(p) => p.clone(),
                None => recorded_frames(&args.run)?,
            };
            (path, saved.clone())
        }
        (Some(p), None) => (p.clone(), from_flags()?),
        (None, None) => anyhow::bail!("--frames is needed to start an end-to-end run"),
    };
    let e = &args.end_to_end;
    let source = lam_encoder::embed::Source::open(&source_path, None)?;
    let norm = resolve_init(&mut cfg)?;
    let lam_cfg = {
        let saved_toml = args.run.join("config.toml");
        if args.resume
            && saved_toml.exists()
            && stage1_overrides(args).is_empty()
            && args.steps.is_none()
        {
            LamConfig::from_toml_file(&saved_toml)?
        } else {
            let mut c = config_for(args, cfg.embed_dim(), [1, 1], args.end_to_end.clip_frames)?;
            // Standardised embeddings with running statistics (see lam_encoder::end_to_end).
            if !args
                .overrides
                .iter()
                .any(|o| o.starts_with("model.standardize"))
            {
                c.model.standardize = true;
            }
            c
        }
    };
    let spec = cfg.clip_spec(lam_cfg.model.frames, norm);
    let (data, report) =
        load_clip_frames(source.as_clip_source(), &spec, &cfg.split(), cfg.max_frames)?;
    let first_skip = report
        .skipped
        .first()
        .map(|(p, why)| format!(" (first: {} - {why})", p.display()))
        .unwrap_or_default();
    if !report.skipped.is_empty() {
        tracing::warn!(
            "{}: {} items left out{first_skip}",
            source_path.display(),
            report.skipped.len(),
        );
    }
    ensure!(
        !data.train.is_empty(),
        "{}: no training clips of {} frames at {} fps ({} items gave clips, {} left out{first_skip})",
        source_path.display(),
        spec.frames,
        spec.fps,
        report.ok,
        report.skipped.len()
    );
    info!(
        "end-to-end training on {} clips ({} held out, {} frames) from {}: guard {:?}, {} steps \
         of batch {}",
        data.train.len(),
        data.val.len(),
        data.frame_count(),
        source_path.display(),
        cfg.guard,
        lam_cfg.train.steps,
        lam_cfg.train.batch_size
    );
    let probe = (e.probe_task != "none").then(|| lam_encoder::probe::ProbeConfig {
        task: e.probe_task.clone(),
        domain: e.probe_domain.clone(),
        ..Default::default()
    });
    let run = EndToEndRun {
        dir: args.run.clone(),
        resume: args.resume,
        force: args.force,
        progress: !args.quiet,
        stop_on_collapse: e.stop_on_collapse,
        stop_after: None,
        probe,
        probe_frames: Some(lam_eval::probe::SIM_PROBE_FRAMES),
        norm,
        source: std::fs::canonicalize(&source_path)
            .unwrap_or(source_path.clone())
            .display()
            .to_string(),
    };
    let device = parse_device(&args.device)?;
    train_end_to_end(&lam_cfg, &cfg, &data, &device, &run)
}

/// The frames an end-to-end run was started on (its run.json).
fn recorded_frames(run: &std::path::Path) -> Result<PathBuf> {
    let path = run.join(lam_model::train::RUN_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; give --frames", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    v["frames"]
        .as_str()
        .map(PathBuf::from)
        .with_context(|| format!("{} names no frames; give --frames", path.display()))
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
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
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
