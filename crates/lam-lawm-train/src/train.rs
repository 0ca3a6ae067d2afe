//! Training loops of the two stages.
//!
//! - [`pretrain`]: policy + RSSM jointly on unlabeled frames (the loss of `lam_lawm::model`).
//! - [`train_policy`]: the policy alone on labeled action chunks, from scratch
//!   ([`PolicyInit::Scratch`]) or from a checkpoint whose action layers are re-initialised
//!   to the real action dimension ([`PolicyInit::From`]): supervised pretraining,
//!   finetuning after world-model pretraining, and the from-scratch baseline all use it.
//!   MLP head: mean squared error on normalised actions (the NLL of a fixed-variance
//!   Gaussian, BAKU's objective); diffusion head: the noise-prediction loss (eq. 7).
//!
//! Every random draw of step s (batch, shift augmentation, diffusion noise and levels, Gumbel
//! noise) comes from a generator seeded with (seed, s), so a run is reproducible from its
//! config alone, and a run resumed from a checkpoint (weights + AdamW state, see
//! [`lam_lawm::checkpoint`]) continues exactly as the uninterrupted run would have. Each run
//! writes `config.json`, `metrics.jsonl` (one JSON object per logged step) and checkpoints.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use crate::data::FrameData;
use lam_data::MetricsLog;
use lam_data::shards::write_atomic;
use lam_lawm::checkpoint::{self, CheckpointState, Stage};
use lam_lawm::config::{HeadKind, LawmConfig};
use lam_lawm::model::{Lawm, PretrainNoise};
use lam_model::checkpoint::load_weights;
use lam_model::optim::stable_param_ids;

/// Where a run writes, whether it shows a progress bar, and whether it resumes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub progress: bool,
    /// Continue the run in `run_dir` from its latest checkpoint (weights, optimiser state,
    /// step); the configuration must be the one the run was started with.
    pub resume: bool,
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub steps: usize,
    /// Mean loss over the first 10% of steps and over the last 10%.
    pub first_loss: f32,
    pub final_loss: f32,
    pub samples_per_sec: f64,
    pub checkpoint: PathBuf,
}

pub use lam_model::train::step_rng;

/// Samples of a step, drawn uniformly with replacement from `windows`.
pub fn batch(windows: &[(usize, usize)], seed: u64, step: usize, b: usize) -> Vec<(usize, usize)> {
    let mut rng = step_rng(seed, step, 1);
    (0..b)
        .map(|_| windows[rng.random_range(0..windows.len())])
        .collect()
}

/// Random-shift offsets `(dx, dy)` in `-max..=max` for `b` samples (none when `max` is 0).
pub fn shifts(rng: &mut StdRng, b: usize, max: usize) -> Vec<(i32, i32)> {
    if max == 0 {
        return Vec::new();
    }
    let m = max as i32;
    (0..b)
        .map(|_| (rng.random_range(-m..=m), rng.random_range(-m..=m)))
        .collect()
}

pub use lam_lawm::policy::normals;

pub fn gumbels(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u: f64 = rng.random::<f64>().clamp(1e-12, 1.0 - 1e-12);
            (-(-u.ln()).ln()) as f32
        })
        .collect()
}

/// The training windows `(episode, start)` of `data` for chunks of `cfg.policy.chunk` steps,
/// after checking that the frames have the size `what` (the model or the policy) expects.
fn training_windows(cfg: &LawmConfig, data: &FrameData, what: &str) -> Result<Vec<(usize, usize)>> {
    ensure!(
        data.size == cfg.policy.image_size,
        "data loaded at {0}x{0}, the {what} expects {1}x{1}",
        data.size,
        cfg.policy.image_size
    );
    let n = cfg.policy.chunk;
    let windows = data.windows(n);
    ensure!(
        !windows.is_empty(),
        "no episode of {:?} is longer than the chunk ({n} steps)",
        data.dirs
    );
    Ok(windows)
}

fn optimizer(cfg: &LawmConfig) -> burn::optim::ModuleOptimizer {
    let clip = (cfg.train.grad_clip > 0.0)
        .then(|| GradientClippingConfig::Norm(cfg.train.grad_clip as f32));
    AdamWConfig::new()
        .with_weight_decay(cfg.train.weight_decay as f32)
        .with_grad_clipping(clip)
        .init()
}

struct Log {
    file: MetricsLog,
    bar: ProgressBar,
    losses: Vec<f32>,
    started: Instant,
}

impl Log {
    /// Opens the run's log; a run resumed at `start` keeps the metric lines up to `start`.
    fn open(cfg: &LawmConfig, opts: &RunOptions, stage: &str, start: usize) -> Result<Self> {
        fs::create_dir_all(&opts.run_dir)
            .with_context(|| format!("cannot create {}", opts.run_dir.display()))?;
        write_atomic(
            &opts.run_dir.join("config.json"),
            serde_json::to_string_pretty(&json!({"stage": stage, "config": cfg}))?.as_bytes(),
        )?;
        // The same settings as `lam lawm ... --config RUN/config.toml` reads them.
        lam_model::settings::save(cfg, &opts.run_dir.join("config.toml"))?;
        let file = MetricsLog::open(&opts.run_dir, (start > 0).then_some(start))?;
        let bar = if opts.progress {
            ProgressBar::new(cfg.train.steps as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} lawm {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(stage.to_string());
        bar.set_position(start as u64);
        Ok(Self {
            file,
            bar,
            losses: Vec::new(),
            started: Instant::now(),
        })
    }

    fn samples_per_sec(&self, cfg: &LawmConfig) -> f64 {
        (self.losses.len() * cfg.train.batch_size) as f64
            / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn record(
        &mut self,
        cfg: &LawmConfig,
        step: usize,
        loss: f32,
        terms: &[(&str, f32)],
        lr: f64,
    ) -> Result<()> {
        ensure!(
            loss.is_finite(),
            "non-finite loss at step {step} ({terms:?}); lower the learning rate"
        );
        self.losses.push(loss);
        self.bar.inc(1);
        let done = step + 1;
        if done % cfg.train.log_every.max(1) == 0 || done == cfg.train.steps {
            let sps = self.samples_per_sec(cfg);
            let mut rec = serde_json::Map::new();
            rec.insert("step".into(), json!(done));
            rec.insert("loss".into(), json!(loss));
            for (k, v) in terms {
                rec.insert((*k).into(), json!(v));
            }
            rec.insert("lr".into(), json!(lr));
            rec.insert("samples_per_sec".into(), json!(sps));
            self.file.write(&Value::Object(rec))?;
            self.bar
                .set_message(format!("loss {loss:.4} {sps:.1} samples/s"));
        }
        Ok(())
    }

    /// What the run did; its policy is written as the run's model folder `RUN/model`.
    fn summary(&self, cfg: &LawmConfig, checkpoint: PathBuf, run_dir: &Path) -> Result<RunSummary> {
        self.bar.finish_and_clear();
        let k = (self.losses.len() / 10).max(1).min(self.losses.len());
        let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len().max(1) as f32;
        let s = RunSummary {
            steps: self.losses.len(),
            first_loss: mean(&self.losses[..k]),
            final_loss: mean(&self.losses[self.losses.len() - k..]),
            samples_per_sec: self.samples_per_sec(cfg),
            checkpoint,
        };
        let figures = [
            ("steps".to_string(), cfg.train.steps.to_string()),
            (
                "first loss (mean of the first tenth)".to_string(),
                format!("{:.4}", s.first_loss),
            ),
            (
                "final loss (mean of the last tenth)".to_string(),
                format!("{:.4}", s.final_loss),
            ),
            (
                "samples per second".to_string(),
                format!("{:.1}", s.samples_per_sec),
            ),
        ];
        checkpoint::export_policy(run_dir, &s.checkpoint, &figures)?;
        Ok(s)
    }
}

/// The checkpoint a resumed run continues from, after checking that it belongs to this run.
fn resume_point(cfg: &LawmConfig, opts: &RunOptions, stage: Stage) -> Result<Option<PathBuf>> {
    if !opts.resume {
        return Ok(None);
    }
    // No checkpoint yet (killed before the first one): the run starts from step 0, so a
    // scheduler can repeat the same command after any preemption.
    let Some(ckpt) = lam_model::checkpoint::latest(&opts.run_dir)? else {
        return Ok(None);
    };
    let state = checkpoint::load_state(&ckpt)?;
    ensure!(
        state.stage == stage,
        "--resume: {} is a {:?} checkpoint, this run is a {stage:?} run",
        ckpt.display(),
        state.stage
    );
    ensure!(
        state.config == *cfg,
        "--resume: {} was made with a different configuration; resume with the run's own \
         settings (see {})",
        ckpt.display(),
        opts.run_dir.join("config.json").display()
    );
    Ok(Some(ckpt))
}

fn host_values(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

/// World-model pretraining of a fresh policy + RSSM on `data` (no labels).
pub fn pretrain(
    cfg: &LawmConfig,
    data: &FrameData,
    device: &Device,
    opts: &RunOptions,
) -> Result<RunSummary> {
    cfg.validate()?;
    let windows = training_windows(cfg, data, "model")?;
    let (n, h) = (cfg.policy.chunk, cfg.policy.history);
    let ad = device.clone().autodiff();
    ad.seed(cfg.train.seed);
    let mut model = stable_param_ids(cfg.init(&ad));
    let mut optim = optimizer(cfg);
    let mut start = 0;
    let mut last = None;
    if let Some(ckpt) = resume_point(cfg, opts, Stage::Pretrain)? {
        let Lawm {
            policy,
            world_model,
        } = model;
        model = stable_param_ids(Lawm {
            policy: load_weights(policy, &ckpt.join("policy.safetensors"))?,
            world_model: load_weights(world_model, &ckpt.join("world_model.safetensors"))?,
        });
        optim = checkpoint::load_optimizer(&ckpt, optim)?;
        start = checkpoint::load_state(&ckpt)?.step;
        last = Some(ckpt);
    }
    tracing::info!(
        "LAWM pretraining: policy {} parameters, world model {} parameters",
        model.policy.num_params(),
        model.world_model.num_params()
    );
    let mut log = Log::open(cfg, opts, "pretrain", start)?;
    let b = cfg.train.batch_size;
    let wm = &cfg.world_model;
    for step in start..cfg.train.steps {
        let samples = batch(&windows, cfg.train.seed, step, b);
        let mut rng = step_rng(cfg.train.seed, step, 2);
        let noise = PretrainNoise {
            policy: if cfg.policy.head == HeadKind::Diffusion {
                normals(&mut rng, b * n * cfg.policy.latent_dim)
            } else {
                Vec::new()
            },
            gumbel: gumbels(&mut rng, b * (n + 1) * wm.groups * wm.classes),
        };
        let shift = shifts(
            &mut step_rng(cfg.train.seed, step, 4),
            b,
            cfg.train.augment_shift,
        );
        let out = model.forward_loss(
            cfg,
            data.history_shifted(&samples, h, &shift, &ad),
            data.instructions(&samples, &ad),
            data.future(&samples, n, &ad),
            &noise,
        );
        let terms = [
            ("recon", host_values(out.recon.clone())),
            ("mse", host_values(out.mse.clone())),
            ("kl_dyn", host_values(out.dyn_kl.clone())),
            ("kl_rep", host_values(out.rep_kl.clone())),
            ("kl", host_values(out.raw_kl.clone())),
        ];
        let loss = host_values(out.loss.clone());
        let lr = cfg.train.lr_at(step);
        log.record(cfg, step, loss, &terms, lr)?;
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let done = step + 1;
        if done == cfg.train.steps
            || (cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0)
        {
            let state = CheckpointState {
                stage: Stage::Pretrain,
                step: done,
                config: cfg.clone(),
                action_dim: cfg.policy.latent_dim,
                action_norm: None,
                data: data.dirs.clone(),
                samples_per_sec: log.samples_per_sec(cfg),
                vocabulary: data.vocabulary.clone(),
            };
            let valid = model.valid();
            last = Some(checkpoint::save_with_optimizer(
                &opts.run_dir,
                &valid.policy,
                Some(&valid.world_model),
                Some(&optim),
                &state,
            )?);
        }
    }
    log.summary(cfg, last.expect("the last step saves"), &opts.run_dir)
}

/// Where [`train_policy`] starts from.
#[derive(Clone, Debug)]
pub enum PolicyInit {
    /// Fresh weights with `cfg.policy`.
    Scratch,
    /// A checkpoint (run or checkpoint folder): its architecture and weights, with the
    /// action layers re-initialised to the data's action dimension.
    From(PathBuf),
}

/// Supervised training of the policy on the labeled action chunks of `data`. `cfg.policy`
/// is replaced by the checkpoint's when starting from one.
pub fn train_policy(
    cfg: &LawmConfig,
    data: &FrameData,
    init: &PolicyInit,
    device: &Device,
    opts: &RunOptions,
) -> Result<RunSummary> {
    let mut cfg = cfg.clone();
    let ad = device.clone().autodiff();
    ad.seed(cfg.train.seed);
    let action_dim = data
        .action_dim
        .with_context(|| format!("{:?} hold no actions to train the policy on", data.dirs))?;
    // The words the policy knows: the data's, and those of the checkpoint it starts from.
    let mut vocabulary = data.vocabulary.clone();
    let policy = match init {
        PolicyInit::Scratch => cfg.policy.init(action_dim, &ad),
        PolicyInit::From(path) => {
            let (p, state) = checkpoint::load_policy(path, &ad)?;
            cfg.policy = state.config.policy.clone();
            vocabulary.extend(state.vocabulary);
            vocabulary.sort();
            vocabulary.dedup();
            p.reinit_action_layers(&cfg.policy, action_dim, &ad)
        }
    };
    cfg.validate()?;
    let windows = training_windows(&cfg, data, "policy")?;
    let (n, h) = (cfg.policy.chunk, cfg.policy.history);
    let norm = data.action_norm()?;
    let mut policy = stable_param_ids(policy);
    let mut optim = optimizer(&cfg);
    let mut start = 0;
    let mut last = None;
    if let Some(ckpt) = resume_point(&cfg, opts, Stage::Policy)? {
        policy = load_weights(policy, &ckpt.join("policy.safetensors"))?;
        optim = checkpoint::load_optimizer(&ckpt, optim)?;
        start = checkpoint::load_state(&ckpt)?.step;
        last = Some(ckpt);
    }
    let mut log = Log::open(&cfg, opts, "policy", start)?;
    let b = cfg.train.batch_size;
    for step in start..cfg.train.steps {
        let samples = batch(&windows, cfg.train.seed, step, b);
        let shift = shifts(
            &mut step_rng(cfg.train.seed, step, 4),
            b,
            cfg.train.augment_shift,
        );
        let frames = data.history_shifted(&samples, h, &shift, &ad);
        let instr = data.instructions(&samples, &ad);
        let target = data.action_chunks(&samples, n, &norm, &ad);
        let loss = match cfg.policy.head {
            HeadKind::Mlp => (policy.chunk(&cfg.policy, frames, instr, &[]) - target)
                .powi_scalar(2)
                .mean(),
            HeadKind::Diffusion => {
                let mut rng = step_rng(cfg.train.seed, step, 3);
                let k: Vec<usize> = (0..b)
                    .map(|_| rng.random_range(0..cfg.policy.diffusion_steps))
                    .collect();
                let eps = normals(&mut rng, b * n * action_dim);
                policy.diffusion_loss(&cfg.policy, frames, instr, target, &k, &eps)
            }
        };
        let value = host_values(loss.clone());
        let lr = cfg.train.lr_at(step);
        log.record(&cfg, step, value, &[], lr)?;
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        policy = optim.step(lr, policy, grads);
        let done = step + 1;
        if done == cfg.train.steps
            || (cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0)
        {
            let state = CheckpointState {
                stage: Stage::Policy,
                step: done,
                config: cfg.clone(),
                action_dim,
                action_norm: Some(norm.clone()),
                data: data.dirs.clone(),
                samples_per_sec: log.samples_per_sec(&cfg),
                vocabulary: vocabulary.clone(),
            };
            last = Some(checkpoint::save_with_optimizer(
                &opts.run_dir,
                &policy.valid(),
                None,
                Some(&optim),
                &state,
            )?);
        }
    }
    log.summary(&cfg, last.expect("the last step saves"), &opts.run_dir)
}

/// Reads a run's `metrics.jsonl` back (for tests and reports).
pub use lam_data::metrics::read_metrics;
