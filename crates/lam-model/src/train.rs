//! The stage-1 training loop: batches from shards, the two-group optimiser, metrics,
//! validation, checkpoints and exact resumption.
//!
//! Every random draw of step s (batch indices, action-dropout mask, Gaussian noise, dead-code
//! resets) comes from a generator seeded with (seed, s), so a resumed run repeats exactly the
//! draws of an uninterrupted one and only the tensors in the checkpoint need restoring.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::module::Param;
use burn::optim::GradientsParams;
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use lam_data::ShardSet;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use serde_json::{Map, Value, json};

use crate::checkpoint::{self, TrainState};
use crate::config::{Conditioning, LamConfig, RegularizerKind, TokenScale};
use crate::lam::{LatentActionModel, StepNoise};
use crate::optim::{self, stable_param_ids};
use crate::stats::latent_stats;

/// Where a run writes and how chatty it is.
pub struct TrainOptions {
    /// Run folder: `config.toml`, `metrics.jsonl`, `checkpoints/`.
    pub run_dir: PathBuf,
    /// Continue from the run's latest checkpoint (from step 0 when it has none yet, so a
    /// scheduler can repeat the same command after any preemption).
    pub resume: bool,
    /// Start over in a folder that holds an earlier run, deleting its checkpoints and
    /// metrics; without it (and without `resume`) such a folder is refused.
    pub force: bool,
    /// Show a progress bar.
    pub progress: bool,
    /// Stop after this many steps of this invocation (the run's `train.steps` is unchanged);
    /// used to interrupt runs in tests.
    pub stop_after: Option<usize>,
}

/// What a finished (or stopped) invocation reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps_done: usize,
    pub final_train_loss: f32,
    pub final_val: Option<Map<String, Value>>,
    pub steps_per_sec: f64,
    pub last_checkpoint: Option<PathBuf>,
}

/// Writes the stage-1 model of checkpoint `ckpt` as the run's model folder `RUN/model`
/// (`crate::model_folder`), with `figures` in its model card.
pub fn export_model(run_dir: &Path, ckpt: &Path, figures: &[(String, String)]) -> Result<()> {
    use crate::model_folder::{self, Card, kind};
    let state: Value = checkpoint::read_state(ckpt)?;
    model_folder::write(
        &run_dir.join(model_folder::MODEL_DIR),
        kind::LATENT_ACTION_MODEL,
        &state,
        &ckpt.join(model_folder::WEIGHTS_FILE),
        &Card {
            summary: "A latent action model (stage 1 of lam): an inverse-dynamics model that \
                      infers a latent action from two frame embeddings, and a frame-causal world \
                      model with AdaLN-zero conditioning that predicts the next embedding from \
                      the past and the latent action.",
            figures,
            usage: &[
                "lam eval --run MODEL --data SHARDS",
                "lam control fit --run MODEL --data LABELED_SHARDS --out CONTROLLER",
                "lam plan eval --run MODEL --encoder ENCODER --controller CONTROLLER --task reach --out OUT",
                "lam serve --run MODEL --encoder ENCODER --controller CONTROLLER",
            ],
        },
    )
}

/// The progress bar of every training loop: `total` steps, at `start` (a resumed run),
/// hidden unless `visible`.
pub fn progress_bar(total: usize, start: usize, visible: bool) -> ProgressBar {
    let bar = if visible {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    bar.set_position(start as u64);
    bar
}

/// Generator of step `step`, stream `stream`, of a run seeded with `seed` (every random draw
/// of a step comes from one, so a resumed run repeats the uninterrupted one).
pub fn step_rng(seed: u64, step: usize, stream: u64) -> StdRng {
    let mix = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((step as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(stream.wrapping_mul(0x94D0_49BB_1331_11EB));
    StdRng::seed_from_u64(mix)
}

/// Clip indices of a step: consecutive slices of per-epoch permutations of the data.
pub fn batch_indices(seed: u64, step: usize, batch: usize, len: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut cached: Option<(usize, Vec<usize>)> = None;
    for pos in step * batch..(step + 1) * batch {
        let epoch = pos / len;
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut perm: Vec<usize> = (0..len).collect();
            perm.shuffle(&mut step_rng(seed, epoch, 1));
            cached = Some((epoch, perm));
        }
        out.push(cached.as_ref().unwrap().1[pos % len]);
    }
    out
}

/// Host-side noise of one step.
pub fn step_noise(cfg: &LamConfig, step: usize, transitions: usize) -> StepNoise {
    let mut rng = step_rng(cfg.train.seed, step, 2);
    let p = cfg.model.action_dropout;
    let keep = (0..transitions)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { 1.0 })
        .collect();
    let eps = if cfg.regularizer.kind == RegularizerKind::Noisy {
        (0..transitions * cfg.model.latent_dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    } else {
        Vec::new()
    };
    StepNoise { keep, eps }
}

/// Uploads clips `[B, T, N, D]` to the device.
pub fn clips_tensor(data: &ShardSet, indices: &[usize], device: &Device) -> Tensor<4> {
    let idx = &data.index;
    let values = data.batch(indices);
    Tensor::from_data(
        TensorData::new(values, [indices.len(), idx.frames, idx.tokens, idx.dim]),
        device,
    )
}

/// Uploads the actions `[B, T-1, A]` of clips of a labeled shard set.
pub fn actions_tensor(data: &ShardSet, indices: &[usize], device: &Device) -> Result<Tensor<3>> {
    let a = data
        .index
        .action_dim
        .with_context(|| format!("shards in {} carry no actions", data.dir.display()))?;
    let t = data.index.frames - 1;
    let mut values = Vec::with_capacity(indices.len() * t * a);
    for &i in indices {
        values.extend(
            data.actions(i)
                .with_context(|| format!("clip {i} of {} has no actions", data.dir.display()))?,
        );
    }
    Ok(Tensor::from_data(
        TensorData::new(values, [indices.len(), t, a]),
        device,
    ))
}

/// Per-channel mean and std of every token of every frame of `data` (std floored at 1e-6);
/// with [`TokenScale::Shared`] every channel's std is the one deviation of all channels
/// together about their own means (the root of their mean variance).
pub fn token_stats(data: &ShardSet, scale: TokenScale) -> (Vec<f32>, Vec<f32>) {
    let d = data.index.dim;
    let (mut sum, mut sq, mut count) = (vec![0f64; d], vec![0f64; d], 0usize);
    for i in 0..data.len() {
        for row in data.clip(i).chunks_exact(d) {
            for (j, &v) in row.iter().enumerate() {
                sum[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
            count += 1;
        }
    }
    let n = count.max(1) as f64;
    let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
    let var: Vec<f64> = sq
        .iter()
        .zip(&sum)
        .map(|(q, s)| (q / n - (s / n).powi(2)).max(0.0))
        .collect();
    let std = match scale {
        TokenScale::Channel => var.iter().map(|v| (v.sqrt() as f32).max(1e-6)).collect(),
        TokenScale::Shared => {
            let pooled = (var.iter().sum::<f64>() / d.max(1) as f64).sqrt() as f32;
            vec![pooled.max(1e-6); d]
        }
    };
    (mean, std)
}

/// Clips and, for an action-conditioned model, their actions.
fn batch_inputs(
    cfg: &LamConfig,
    data: &ShardSet,
    indices: &[usize],
    device: &Device,
) -> Result<(Tensor<4>, Option<Tensor<3>>)> {
    let clips = clips_tensor(data, indices, device);
    let actions = match cfg.model.conditioning {
        Conditioning::Latent => None,
        Conditioning::Action => Some(actions_tensor(data, indices, device)?),
    };
    Ok((clips, actions))
}

/// Checks that the model config matches the data.
pub fn check_data(cfg: &LamConfig, data: &ShardSet) -> Result<()> {
    let idx = &data.index;
    ensure!(
        cfg.model.embed_dim == idx.dim
            && cfg.model.grid == idx.grid
            && cfg.model.frames == idx.frames,
        "model expects clips of T={} frames, grid {:?}, D={}, but shards in {} hold T={}, grid {:?}, D={}",
        cfg.model.frames,
        cfg.model.grid,
        cfg.model.embed_dim,
        data.dir.display(),
        idx.frames,
        idx.grid,
        idx.dim
    );
    ensure!(
        !data.is_empty(),
        "no clips in {} for this split",
        data.dir.display()
    );
    if cfg.model.conditioning == Conditioning::Action {
        let a = idx.action_dim.with_context(|| {
            format!(
                "model.conditioning = \"action\" needs labeled shards (with actions); {} has none",
                data.dir.display()
            )
        })?;
        ensure!(
            a == cfg.model.latent_dim,
            "model.conditioning = \"action\": model.latent_dim ({}) must equal the action \
             dimension of {} ({a}); pass --set model.latent_dim={a}",
            cfg.model.latent_dim,
            data.dir.display()
        );
    }
    Ok(())
}

/// Serialises use of the backend's global random generator: `device.seed(s)` followed by
/// draws gives the same numbers only if no other thread draws in between.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds a model with stable parameter ids on `device`; the same seed gives the same
/// weights, also when other threads use the backend's generator.
pub fn init_model(cfg: &LamConfig, device: &Device) -> LatentActionModel {
    let _guard = rng_lock();
    device.seed(cfg.train.seed);
    stable_param_ids(LatentActionModel::new(cfg, device))
}

/// Mean validation losses over `cfg.train.val_batches` fixed batches (no dropout, no noise).
pub fn validate(
    cfg: &LamConfig,
    model: &LatentActionModel,
    val: &ShardSet,
    device: &Device,
) -> Result<Map<String, Value>> {
    validate_batches(cfg, model, val.len(), |indices| {
        batch_inputs(cfg, val, indices, device)
    })
}

/// [`validate`] over any held-out set of `len` clips: `batch` gives the inputs (clips and,
/// for an action-conditioned model, actions) of clip indices; the batches are the same fixed
/// ones for every trainer (end-to-end training embeds its pixels there).
pub fn validate_batches(
    cfg: &LamConfig,
    model: &LatentActionModel,
    len: usize,
    mut batch: impl FnMut(&[usize]) -> Result<(Tensor<4>, Option<Tensor<3>>)>,
) -> Result<Map<String, Value>> {
    let b = cfg.train.batch_size.min(len).max(2.min(len));
    let batches = cfg.train.val_batches.max(1);
    let mut sums: Vec<(&'static str, f64)> = Vec::new();
    let mut count = 0;
    for k in 0..batches {
        let indices: Vec<usize> = (0..b).map(|i| (k * b + i) % len).collect();
        let (clips, actions) = batch(&indices)?;
        let out = model.forward_loss_with(cfg, clips, actions, &StepNoise::default());
        for (i, (name, v)) in out.terms.named().into_iter().enumerate() {
            if sums.len() <= i {
                sums.push((name, 0.0));
            }
            sums[i].1 += v as f64;
        }
        count += 1;
        if (k + 1) * b >= len {
            break;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v / count as f64)))
        .collect())
}

/// Replaces codes unused for `dead_code_steps` steps by random rows of `z`, the batch's
/// encoder outputs before quantisation `[M, d]`.
pub fn reset_dead_codes(
    model: LatentActionModel,
    cfg: &LamConfig,
    step: usize,
    last_used: &mut [usize],
    z: &[f32],
) -> (LatentActionModel, usize) {
    let d = cfg.model.latent_dim;
    let dead: Vec<usize> = (0..last_used.len())
        .filter(|&c| step.saturating_sub(last_used[c]) >= cfg.regularizer.dead_code_steps)
        .collect();
    let rows = z.len() / d;
    if dead.is_empty() || rows == 0 {
        return (model, 0);
    }
    let mut rng = step_rng(cfg.train.seed, step, 3);
    let Some(param) = model.codebook.clone() else {
        return (model, 0);
    };
    let device = param.val().device();
    let mut book: Vec<f32> = param
        .val()
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 codebook");
    for &c in &dead {
        let r = rng.random_range(0..rows);
        book[c * d..(c + 1) * d].copy_from_slice(&z[r * d..(r + 1) * d]);
        last_used[c] = step;
    }
    let k = last_used.len();
    let fresh = Tensor::<2>::from_data(TensorData::new(book, [k, d]), &device);
    let fresh = if fresh.is_autodiff() {
        fresh.require_grad()
    } else {
        fresh
    };
    let mut model = model;
    model.codebook = Some(Param::initialized(param.id, fresh));
    (model, dead.len())
}

/// The run folder's record of its training data (`{"data": shard folder}`), so that
/// `lam train --resume --run RUN` needs nothing else.
pub const RUN_FILE: &str = "run.json";

/// The shard folder a run was started on, from its [`RUN_FILE`] (`None` when the run has none).
pub fn run_data_dir(run: &Path) -> Result<Option<PathBuf>> {
    let path = run.join(RUN_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let dir = v["data"]
        .as_str()
        .with_context(|| format!("{} has no string field `data`", path.display()))?;
    Ok(Some(PathBuf::from(dir)))
}

/// Trains (or resumes) a run. `device` is the plain device; autodiff is added here.
pub fn train(
    cfg: &LamConfig,
    data: &ShardSet,
    val: Option<&ShardSet>,
    device: &Device,
    opts: &TrainOptions,
) -> Result<TrainSummary> {
    cfg.validate()?;
    check_data(cfg, data)?;
    if let Some(v) = val {
        check_data(cfg, v)?;
    }
    for set in std::iter::once(data).chain(val) {
        if let Some(first) = set.skipped.first() {
            tracing::warn!(
                "{}: {} clips left out, they hold NaN or Inf (first: {first})",
                set.dir.display(),
                set.skipped.len()
            );
        }
    }
    ensure!(
        !data.is_empty(),
        "{}: no clips to train on ({} left out for NaN or Inf)",
        data.dir.display(),
        data.skipped.len()
    );
    fs::create_dir_all(&opts.run_dir)
        .with_context(|| format!("cannot create {}", opts.run_dir.display()))?;
    let ad = device.clone().autodiff();
    let total = cfg.train.steps;
    let mut model = init_model(cfg, &ad);
    let built = optim::build(&model, &cfg.optim, total)?;
    let (mut optimizer, mut scheduler) = (built.optimizer, built.scheduler);
    let mut start = 0usize;
    let mut code_last_used = vec![0usize; cfg.regularizer.codebook_size];

    let resume_from = checkpoint::prepare_run(&opts.run_dir, opts.resume, opts.force)?;
    if let Some(ckpt) = &resume_from {
        let state = checkpoint::load_state(ckpt)?;
        ensure!(
            state.config == *cfg,
            "{}: the checkpoint was made with a different configuration; resume with the run's \
             config.toml (lam train --resume uses it when no --config/--set is given)",
            ckpt.display()
        );
        model = checkpoint::load_weights(model, &ckpt.join("model.safetensors"))?;
        (optimizer, scheduler) = checkpoint::load_optim(ckpt, optimizer, scheduler)?;
        start = state.step;
        if !state.code_last_used.is_empty() {
            code_last_used = state.code_last_used;
        }
    } else {
        if cfg.model.standardize {
            let (mean, std) = token_stats(data, cfg.model.standardize_scale);
            model = model.with_token_stats(&mean, &std);
        }
        lam_data::shards::write_atomic(
            &opts.run_dir.join("config.toml"),
            cfg.to_toml()?.as_bytes(),
        )?;
        let data_dir = fs::canonicalize(&data.dir).unwrap_or_else(|_| data.dir.clone());
        lam_data::shards::write_atomic(
            &opts.run_dir.join(RUN_FILE),
            serde_json::to_string_pretty(&json!({ "data": data_dir }))?.as_bytes(),
        )?;
    }
    let mut log = lam_data::MetricsLog::open(&opts.run_dir, resume_from.as_ref().map(|_| start))?;
    if start == 0 {
        log.write(&json!({"step": 0, "split": "params", "counts": built.counts, "num_params": model.num_params()}))?;
    }

    let end = opts.stop_after.map_or(total, |n| (start + n).min(total));
    let bar = progress_bar(total, start, opts.progress);
    let (t, b) = (cfg.model.frames, cfg.train.batch_size);
    let mut last_loss = f32::NAN;
    let mut final_val = None;
    let mut last_ckpt = None;
    let started = Instant::now();
    let mut window = Instant::now();
    let mut window_steps = 0usize;
    let mut steps_per_sec: f64;
    for step in start..end {
        let indices = batch_indices(cfg.train.seed, step, b, data.len());
        let (clips, actions) = batch_inputs(cfg, data, &indices, &ad)?;
        let noise = step_noise(cfg, step, b * (t - 1));
        let lr = scheduler.step();
        let out = model.forward_loss_with(cfg, clips, actions, &noise);
        let loss = out.terms.total.clone().into_scalar::<f32>();
        if !loss.is_finite() {
            let terms: Vec<String> = out
                .terms
                .named()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            bail!(
                "non-finite loss at step {step} ({}); the last good checkpoint is kept in {}",
                terms.join(", "),
                checkpoint::checkpoints_dir(&opts.run_dir).display()
            );
        }
        last_loss = loss;
        let log_now = (step + 1) % cfg.train.log_every.max(1) == 0 || step + 1 == end;
        let named = log_now.then(|| out.terms.named());
        // A dead code is reset to an encoder output of the batch (before quantisation: the
        // quantised latents are copies of live codes).
        let vq_inputs: Vec<f32> = match &out.vq_inputs {
            Some(inputs) => inputs
                .clone()
                .inner()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 encoder outputs"),
            None => Vec::new(),
        };
        let grads = GradientsParams::from_grads(out.terms.total.backward(), &model);
        model = optimizer.step(lr.clone(), model, grads);

        let mut resets = 0;
        if cfg.regularizer.kind == RegularizerKind::Vq {
            for &c in &out.codes {
                code_last_used[c] = step + 1;
            }
            (model, resets) =
                reset_dead_codes(model, cfg, step + 1, &mut code_last_used, &vq_inputs);
        }
        window_steps += 1;
        bar.inc(1);
        if let Some(named) = named {
            let secs = window.elapsed().as_secs_f64();
            steps_per_sec = window_steps as f64 / secs.max(1e-9);
            window = Instant::now();
            window_steps = 0;
            let mut rec: Map<String, Value> = named
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            rec.insert("step".into(), json!(step + 1));
            rec.insert("split".into(), json!("train"));
            rec.insert("lr_adamw".into(), json!(lr.base()));
            rec.insert("steps_per_sec".into(), json!(steps_per_sec));
            let z_host: Vec<f32> = out
                .z
                .clone()
                .inner()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 latents");
            let stats = latent_stats(
                &z_host,
                cfg.model.latent_dim,
                (cfg.regularizer.kind == RegularizerKind::Vq)
                    .then_some((&out.codes[..], cfg.regularizer.codebook_size)),
            );
            rec.extend(stats);
            if resets > 0 {
                rec.insert("codes_reset".into(), json!(resets));
            }
            log.write(&Value::Object(rec))?;
            bar.set_message(format!(
                "loss {loss:.4} pred {:.4} {steps_per_sec:.1} steps/s",
                named[1].1
            ));
        }
        let done = step + 1;
        if let Some(val) = val
            && cfg.train.val_every > 0
            && (done % cfg.train.val_every == 0 || done == total)
        {
            let mut rec = validate(cfg, &model.valid(), val, device)?;
            rec.insert("step".into(), json!(done));
            rec.insert("split".into(), json!("val"));
            log.write(&Value::Object(rec.clone()))?;
            final_val = Some(rec);
        }
        let ckpt_now = (cfg.train.checkpoint_every > 0 && done % cfg.train.checkpoint_every == 0)
            || done == end;
        if ckpt_now {
            let state = TrainState {
                step: done,
                seed: cfg.train.seed,
                code_last_used: code_last_used.clone(),
                config: cfg.clone(),
            };
            last_ckpt = Some(checkpoint::save(
                &opts.run_dir,
                &model,
                &optimizer,
                &scheduler,
                &state,
                cfg.train.keep_checkpoints,
            )?);
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let overall = (end - start) as f64 / elapsed.max(1e-9);
    if end == total
        && let Some(ckpt) = last_ckpt.as_ref().or(resume_from.as_ref())
    {
        let mut figures = vec![
            ("steps".to_string(), total.to_string()),
            ("final train loss".to_string(), format!("{last_loss:.5}")),
        ];
        if let Some(v) = &final_val {
            for (k, x) in v {
                if let (false, Some(x)) = (k == "step" || k == "split", x.as_f64()) {
                    figures.push((format!("validation {k}"), format!("{x:.5}")));
                }
            }
        }
        export_model(&opts.run_dir, ckpt, &figures)?;
    }
    Ok(TrainSummary {
        steps_done: end,
        final_train_loss: last_loss,
        final_val,
        steps_per_sec: overall,
        // A resumed run that was already complete points at its final checkpoint.
        last_checkpoint: last_ckpt.or(resume_from),
    })
}
