//! Controller g_ctrl: a_t -> z_t and inverse controller z_t -> a_t.
//!
//! Both are 3-layer GELU MLPs. They are fitted on labeled robot clips with the latent action
//! model frozen: the IDM labels every transition (s_t, s_t+1) with a pseudo-latent z_t (the
//! mean for `noisy`, the chosen code for `vq`); the controller regresses z_t from the robot
//! action a_t (MSE), the inverse controller regresses a_t from z_t (MSE).
//!
//! With `frame_conditioned`, both also read the pooled (model-space) frame s_t: g_ctrl(a_t,
//! s_t). A latent action describes what happened, so the same robot action maps to different
//! latents in different states (pushed into a wall, the agent does not move); a controller
//! that sees only a_t maps it to the average motion, and planning through it walks the agent
//! into walls. Planners then compute each step's latent from the predicted frame it acts on.
//!
//! Reported on held-out clips: mean cosine(g_ctrl(a_t), z_t) and the inverse MSE.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use lam_data::ShardSet;
use lam_model::LatentActionModel;
use lam_model::config::LamConfig;
use lam_model::idm::Idm;
use lam_model::optim::stable_param_ids;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// Controller training settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Hidden width of both MLPs (256).
    pub hidden: usize,
    /// Optimiser steps (2000; the paper trains 10,000 on DROID).
    pub steps: usize,
    /// Transitions per batch (256).
    pub batch_size: usize,
    /// AdamW learning rate (1e-3).
    pub lr: f64,
    /// AdamW weight decay (0.01).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Early stopping: the last `selection_fraction` of the training transitions (whole
    /// clips, 0.1) are held out, the weights with the lowest held-out loss are kept, and
    /// training stops after `patience` (5) checks every `check_every` (100) steps without
    /// improvement. 0 disables it.
    #[serde(default = "default_selection_fraction")]
    pub selection_fraction: f64,
    #[serde(default = "default_check_every")]
    pub check_every: usize,
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// Seed (0).
    pub seed: u64,
    /// Condition both directions on the pooled frame s_t as well (false; see the module docs).
    #[serde(default)]
    pub frame_conditioned: bool,
}

fn default_weight_decay() -> f64 {
    0.01
}
fn default_selection_fraction() -> f64 {
    0.1
}
fn default_check_every() -> usize {
    100
}
fn default_patience() -> usize {
    5
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            steps: 2000,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: default_weight_decay(),
            selection_fraction: default_selection_fraction(),
            check_every: default_check_every(),
            patience: default_patience(),
            seed: 0,
            frame_conditioned: false,
        }
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl Mlp {
    pub fn new(d_in: usize, hidden: usize, d_out: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(d_in, hidden).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            fc3: LinearConfig::new(hidden, d_out).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc3
            .forward(gelu(self.fc2.forward(gelu(self.fc1.forward(x)))))
    }
}

/// Both directions between robot actions and latent actions.
#[derive(Module, Debug)]
pub struct Controller {
    /// (a, s) -> z (s only for frame-conditioned controllers).
    pub forward: Mlp,
    /// (z, s) -> a.
    pub inverse: Mlp,
}

impl Controller {
    /// A controller between `action_dim`-D robot actions and `latent_dim`-D latents, reading
    /// `frame_dim`-D pooled frames as well (0: actions only).
    pub fn new(
        action_dim: usize,
        latent_dim: usize,
        frame_dim: usize,
        hidden: usize,
        device: &Device,
    ) -> Self {
        Self {
            forward: Mlp::new(action_dim + frame_dim, hidden, latent_dim, device),
            inverse: Mlp::new(latent_dim + frame_dim, hidden, action_dim, device),
        }
    }

    /// Robot action dimension A.
    pub fn action_dim(&self) -> usize {
        self.inverse.fc3.weight.dims()[1]
    }

    /// Latent action dimension d.
    pub fn latent_dim(&self) -> usize {
        self.forward.fc3.weight.dims()[1]
    }

    /// Width of the pooled frame it reads (0 when it reads actions only).
    pub fn frame_dim(&self) -> usize {
        self.forward.fc1.weight.dims()[0] - self.action_dim()
    }

    fn with_frame(&self, x: Tensor<2>, frame: Option<Tensor<2>>) -> Tensor<2> {
        match (self.frame_dim(), frame) {
            (0, _) => x,
            (_, Some(f)) => Tensor::cat(vec![x, f], 1),
            (k, None) => panic!("a frame-conditioned controller needs the {k}-D pooled frame"),
        }
    }

    /// Latents `[M, d]` of actions `[M, A]` taken in pooled frames `[M, D]` (ignored, and may
    /// be `None`, for a controller that reads actions only).
    pub fn to_latent(&self, actions: Tensor<2>, frames: Option<Tensor<2>>) -> Tensor<2> {
        self.forward.forward(self.with_frame(actions, frames))
    }

    /// Actions `[M, A]` of latents `[M, d]` in pooled frames `[M, D]` (as [`to_latent`](Self::to_latent)).
    pub fn to_action(&self, latents: Tensor<2>, frames: Option<Tensor<2>>) -> Tensor<2> {
        self.inverse.forward(self.with_frame(latents, frames))
    }
}

/// Pseudo-labelled transitions: actions `[M, A]`, IDM latents `[M, d]` and the pooled
/// model-space frame each action was taken in `[M, D]`, row-major on host.
pub struct Transitions {
    pub actions: Vec<f32>,
    pub latents: Vec<f32>,
    pub frames: Vec<f32>,
    pub action_dim: usize,
    pub latent_dim: usize,
    pub frame_dim: usize,
}

impl Transitions {
    pub fn len(&self) -> usize {
        self.actions.len() / self.action_dim
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Labels every transition of a labeled shard set with the frozen IDM.
pub fn pseudo_label(
    cfg: &LamConfig,
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<Transitions> {
    let a = data.index.action_dim.with_context(|| {
        format!(
            "{} has no actions: the controller needs a labeled (robot) shard set",
            data.dir.display()
        )
    })?;
    let idx = &data.index;
    let (t, d) = (idx.frames, cfg.model.latent_dim);
    let mut actions = Vec::new();
    let mut latents = Vec::new();
    let mut frames = Vec::new();
    for chunk in (0..data.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let clips = Tensor::<4>::from_data(
            TensorData::new(data.batch(chunk), [chunk.len(), t, idx.tokens, idx.dim]),
            device,
        );
        let pooled = Idm::pool(lam.normalize(clips));
        frames.extend(
            pooled
                .clone()
                .slice(s![.., 0..t - 1, ..])
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
        let z = lam
            .infer(
                &cfg.regularizer,
                pooled.clone().slice(s![.., 0..t - 1, ..]),
                pooled.slice(s![.., 1..t, ..]),
                &[],
            )
            .z;
        latents.extend(
            z.into_data()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
        for &i in chunk {
            actions.extend(data.actions(i).expect("labeled set has actions"));
        }
    }
    ensure!(
        latents.len() / d == actions.len() / a,
        "pseudo-labels and actions disagree in count"
    );
    Ok(Transitions {
        actions,
        latents,
        frames,
        action_dim: a,
        latent_dim: d,
        frame_dim: idx.dim,
    })
}

/// Held-out metrics of a controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControllerReport {
    pub train_transitions: usize,
    pub val_transitions: usize,
    /// Steps run (fewer than configured when early stopping ended training) and the step
    /// whose weights were kept.
    #[serde(default)]
    pub steps_run: usize,
    #[serde(default)]
    pub best_step: usize,
    /// Mean cosine similarity between g_ctrl(a) and the IDM pseudo-label.
    pub cosine: f64,
    /// Mean squared error of the inverse controller's actions.
    pub inverse_mse: f64,
    /// Variance of the true actions (what a constant predictor's MSE would be).
    pub action_variance: f64,
}

/// Rows `idx` of a row-major host matrix of width `dim`, as a tensor `[idx.len(), dim]`.
pub(crate) fn rows(v: &[f32], dim: usize, idx: &[usize], device: &Device) -> Tensor<2> {
    let data: Vec<f32> = idx
        .iter()
        .flat_map(|&i| v[i * dim..(i + 1) * dim].iter().copied())
        .collect();
    Tensor::from_data(TensorData::new(data, [idx.len(), dim]), device)
}

/// Mean cosine of row pairs.
pub fn mean_cosine(a: Tensor<2>, b: Tensor<2>) -> f64 {
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let norm = (a.square().sum_dim(1) * b.square().sum_dim(1)).sqrt() + 1e-12;
    (dot / norm).mean().into_scalar::<f32>() as f64
}

/// The pooled frames of transitions `idx` when `ctrl` reads them.
fn frames_of(
    ctrl: &Controller,
    data: &Transitions,
    idx: &[usize],
    device: &Device,
) -> Option<Tensor<2>> {
    (ctrl.frame_dim() > 0).then(|| rows(&data.frames, data.frame_dim, idx, device))
}

/// Evaluates a controller on transitions.
pub fn evaluate(ctrl: &Controller, data: &Transitions, device: &Device) -> (f64, f64) {
    let all: Vec<usize> = (0..data.len()).collect();
    let a = rows(&data.actions, data.action_dim, &all, device);
    let z = rows(&data.latents, data.latent_dim, &all, device);
    let f = frames_of(ctrl, data, &all, device);
    let cos = mean_cosine(ctrl.to_latent(a.clone(), f.clone()), z.clone());
    let mse = (ctrl.to_action(z, f) - a)
        .square()
        .mean()
        .into_scalar::<f32>() as f64;
    (cos, mse)
}

/// Where a fit keeps resumable checkpoints: `dir/checkpoints/step-N` at every early-stopping
/// check (current and best weights, AdamW state, counters), and whether to continue from the
/// newest one (made with the same settings and data size) instead of starting afresh (which
/// removes an earlier fit's checkpoints). The training and held-out losses of every check go
/// to `dir/metrics.jsonl` and `dir/tensorboard/`.
#[derive(Clone, Debug)]
pub struct FitCheckpoints {
    pub dir: std::path::PathBuf,
    pub resume: bool,
}

/// Non-tensor state of a fit checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct FitState {
    step: usize,
    /// Held-out loss and step of the best weights so far (`best.safetensors`), if any.
    best: Option<(f32, usize)>,
    since_best: usize,
    /// Early stopping ended the fit at this checkpoint.
    stopped: bool,
    train_transitions: usize,
    config: ControllerConfig,
}

/// Fits both MLPs on `train`; reports on `val`.
pub fn fit(
    cfg: &ControllerConfig,
    train: &Transitions,
    val: &Transitions,
    device: &Device,
) -> Result<(Controller, ControllerReport)> {
    fit_with(cfg, train, val, device, None)
}

/// [`fit`], checkpointing into (and with `resume` continuing from) `checkpoints`. A resumed
/// fit replays the batch order of the steps it skips, so it repeats the uninterrupted one
/// exactly.
pub fn fit_with(
    cfg: &ControllerConfig,
    train: &Transitions,
    val: &Transitions,
    device: &Device,
    checkpoints: Option<&FitCheckpoints>,
) -> Result<(Controller, ControllerReport)> {
    ensure!(
        !train.is_empty(),
        "no training transitions for the controller"
    );
    ensure!(
        !val.is_empty(),
        "no held-out transitions for the controller"
    );
    // Early-stopping split: the last transitions (the order is clip by clip).
    let n_sel = if cfg.selection_fraction > 0.0 && train.len() >= 20 {
        ((train.len() as f64 * cfg.selection_fraction).round() as usize).clamp(1, train.len() / 2)
    } else {
        0
    };
    let n_fit = train.len() - n_sel;
    let selection: Vec<usize> = (n_fit..train.len()).collect();
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let frame_dim = if cfg.frame_conditioned {
        ensure!(
            train.frame_dim > 0 && train.frames.len() == train.len() * train.frame_dim,
            "a frame-conditioned controller needs the transitions' frames"
        );
        train.frame_dim
    } else {
        0
    };
    let fresh = |dev: &Device| {
        stable_param_ids(Controller::new(
            train.action_dim,
            train.latent_dim,
            frame_dim,
            cfg.hidden,
            dev,
        ))
    };
    let mut ctrl = fresh(&ad);
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    let mut start = 0;
    let mut best: Option<(f32, usize, Controller)> = None;
    let mut since_best = 0usize;
    let mut stopped = false;
    if let Some(ck) = checkpoints {
        if let Some(dir) = lam_model::checkpoint::resume_or_clear(&ck.dir, ck.resume)? {
            let state: FitState = lam_model::checkpoint::read_state(&dir)?;
            ensure!(
                state.config == *cfg && state.train_transitions == train.len(),
                "--resume: {} was made with other settings or data; resume with the fit's own",
                dir.display()
            );
            ctrl = lam_model::checkpoint::load_weights(ctrl, &dir.join("controller.safetensors"))?;
            opt = lam_model::checkpoint::load_optimizer(&dir, opt)?;
            if let Some((loss, step)) = state.best {
                let weights = lam_model::checkpoint::load_weights(
                    fresh(device),
                    &dir.join("best.safetensors"),
                )?;
                best = Some((loss, step, weights));
            }
            (start, since_best, stopped) = (state.step, state.since_best, state.stopped);
        }
    }
    // One shuffle per pass over the data, from one generator; a resumed fit replays the
    // passes of the steps done.
    let b = cfg.batch_size.min(n_fit);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut order: Vec<usize> = (0..n_fit).collect();
    let mut pos = order.len();
    let mut next_batch = |order: &mut Vec<usize>| {
        if pos + b > order.len() {
            order.shuffle(&mut rng);
            pos = 0;
        }
        pos += b;
        pos - b
    };
    for _ in 0..start {
        next_batch(&mut order);
    }
    let loss_of = |ctrl: &Controller, a: Tensor<2>, z: Tensor<2>, f: Option<Tensor<2>>| {
        (ctrl.to_latent(a.clone(), f.clone()) - z.clone())
            .square()
            .mean()
            + (ctrl.to_action(z, f) - a).square().mean()
    };
    let (sel_a, sel_z) = (
        rows(&train.actions, train.action_dim, &selection, device),
        rows(&train.latents, train.latent_dim, &selection, device),
    );
    let sel_f = frames_of(&ctrl, train, &selection, device);
    // With a folder: the losses of every check in metrics.jsonl and as TensorBoard scalars
    // (a resumed fit keeps the lines up to its checkpoint).
    let mut metrics = match checkpoints {
        Some(ck) => Some(lam_data::MetricsLog::open(
            &ck.dir,
            (start > 0).then_some(start),
        )?),
        None => None,
    };
    let mut steps_run = start;
    for step in start..cfg.steps {
        if stopped {
            break;
        }
        let at = next_batch(&mut order);
        let idx = &order[at..at + b];
        let a = rows(&train.actions, train.action_dim, idx, &ad);
        let z = rows(&train.latents, train.latent_dim, idx, &ad);
        let f = frames_of(&ctrl, train, idx, &ad);
        let loss = loss_of(&ctrl, a, z, f);
        let train_loss = loss.clone();
        let grads = GradientsParams::from_grads(loss.backward(), &ctrl);
        ctrl = opt.step(cfg.lr, ctrl, grads);
        steps_run = step + 1;
        let check = n_sel > 0
            && cfg.check_every > 0
            && (steps_run % cfg.check_every == 0 || steps_run == cfg.steps);
        if check {
            let valid = ctrl.valid();
            let l =
                loss_of(&valid, sel_a.clone(), sel_z.clone(), sel_f.clone()).into_scalar::<f32>();
            ensure!(
                l.is_finite(),
                "controller loss became {l} at step {steps_run}; lower --lr"
            );
            if let Some(m) = metrics.as_mut() {
                let t = train_loss.into_scalar::<f32>();
                m.write(&serde_json::json!({"step": steps_run, "split": "train", "loss": t}))?;
                m.write(&serde_json::json!({"step": steps_run, "split": "val", "loss": l}))?;
            }
            if best.as_ref().is_none_or(|(b, _, _)| l < *b) {
                best = Some((l, steps_run, valid));
                since_best = 0;
            } else {
                since_best += 1;
                stopped = cfg.patience > 0 && since_best >= cfg.patience;
            }
        }
        let save = checkpoints.filter(|_| {
            cfg.check_every > 0 && steps_run % cfg.check_every == 0 && steps_run < cfg.steps
        });
        if let Some(ck) = save {
            let state = FitState {
                step: steps_run,
                best: best.as_ref().map(|(l, s, _)| (*l, *s)),
                since_best,
                stopped,
                train_transitions: train.len(),
                config: cfg.clone(),
            };
            lam_model::checkpoint::write_step(&ck.dir, steps_run, 2, |tmp| {
                lam_model::checkpoint::save_weights(&ctrl, &tmp.join("controller.safetensors"))?;
                if let Some((_, _, w)) = &best {
                    lam_model::checkpoint::save_weights(w, &tmp.join("best.safetensors"))?;
                }
                lam_model::checkpoint::save_optimizer(tmp, &opt)?;
                lam_model::checkpoint::write_state(tmp, &state)
            })?;
        }
    }
    let (ctrl, best_step) = match best {
        Some((_, s, c)) => (c, s),
        None => (ctrl.valid(), steps_run),
    };
    let (cosine, inverse_mse) = evaluate(&ctrl, val, device);
    let mean: Vec<f64> = (0..val.action_dim)
        .map(|j| {
            (0..val.len())
                .map(|i| val.actions[i * val.action_dim + j] as f64)
                .sum::<f64>()
                / val.len() as f64
        })
        .collect();
    let action_variance = (0..val.len())
        .flat_map(|i| (0..val.action_dim).map(move |j| (i, j)))
        .map(|(i, j)| (val.actions[i * val.action_dim + j] as f64 - mean[j]).powi(2))
        .sum::<f64>()
        / (val.len() * val.action_dim) as f64;
    Ok((
        ctrl,
        ControllerReport {
            train_transitions: train.len(),
            val_transitions: val.len(),
            steps_run,
            best_step,
            cosine,
            inverse_mse,
            action_variance,
        },
    ))
}

/// Saves a controller (weights in safetensors) with its dimensions.
pub fn save(
    ctrl: &Controller,
    dir: &Path,
    report: &ControllerReport,
    cfg: &ControllerConfig,
    action_dim: usize,
    latent_dim: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    lam_model::checkpoint::save_weights(ctrl, &dir.join("controller.safetensors"))?;
    let meta = serde_json::json!({"action_dim": action_dim, "latent_dim": latent_dim,
        "frame_dim": ctrl.frame_dim(), "config": cfg, "report": report});
    lam_data::shards::write_atomic(
        &dir.join("controller.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
}

/// Loads a controller saved by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<Controller> {
    let meta_path = dir.join("controller.json");
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&meta_path)
            .with_context(|| format!("cannot read {}", meta_path.display()))?,
    )
    .with_context(|| format!("malformed {}", meta_path.display()))?;
    let get = |k: &str| {
        meta[k]
            .as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("{}: missing `{k}`", meta_path.display()))
    };
    let hidden = meta["config"]["hidden"]
        .as_u64()
        .context("controller.json: missing config.hidden")? as usize;
    // Controllers saved before frame conditioning existed read actions only.
    let frame_dim = meta["frame_dim"].as_u64().unwrap_or(0) as usize;
    let ctrl = Controller::new(
        get("action_dim")?,
        get("latent_dim")?,
        frame_dim,
        hidden,
        device,
    );
    lam_model::checkpoint::load_weights(ctrl, &dir.join("controller.safetensors"))
}
