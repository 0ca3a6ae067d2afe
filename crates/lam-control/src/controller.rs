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
//! With `prediction_weight` w > 0 the controller is also fitted through the frozen world
//! model: its latents must make the world model predict what the robot's action did,
//! `w * L1(WM(s_0..t, g_ctrl(a_0..t)) - s_t+1)` on whole labeled clips (the stage-1 prediction
//! loss with the IDM replaced by the controller). A latent that is close to the IDM's in
//! cosine can still move the predicted agent by the wrong amount; planning reads the
//! prediction, not the latent.
//!
//! With `world_model_lr` > 0 as well, the world model trains along with the controller on
//! the labeled clips (fed the controller's latents, and fed the IDM's so that it stays a model
//! of the video's latents): the labeled robot episodes then also correct the world model
//! where the controller's latents leave it imprecise. The fit returns the tuned world model.
//!
//! Reported on held-out clips: mean cosine(g_ctrl(a_t), z_t), the inverse MSE, and the world
//! model's prediction error fed the controller's latents against fed the IDM's.

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
use lam_model::world_model::WorldModel;
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
    /// Optimiser steps (10,000, as the paper on DROID; early stopping usually ends it sooner).
    pub steps: usize,
    /// Transitions per batch (256).
    pub batch_size: usize,
    /// AdamW learning rate (1e-3).
    pub lr: f64,
    /// AdamW weight decay (0.01).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Early stopping: the last `selection_fraction` of the training transitions (whole
    /// clips, 0.1) are held out; each direction keeps its own weights with the lowest
    /// held-out loss (the inverse overfits long before the controller stops improving), and
    /// training stops once both have gone `patience` (5) checks every `check_every` (100)
    /// steps without improvement. 0 disables it.
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
    /// Weight of the prediction loss through the frozen world model (0: latent regression
    /// only; see the module docs).
    #[serde(default)]
    pub prediction_weight: f64,
    /// With `prediction_weight` > 0: AdamW learning rate of the world model, trained along
    /// with the controller on the labeled clips, fed the controller's latents and fed the
    /// IDM's (the latter keeps it a model of the video's latents). 0 (default): frozen.
    #[serde(default)]
    pub world_model_lr: f64,
}

impl lam_model::settings::Settings for ControllerConfig {
    const WHAT: &'static str = "controller";
    const PRESETS: &'static [&'static str] = lam_model::settings::ONLY_DEFAULT;
    /// `default`: [`ControllerConfig::default`].
    fn preset(name: &str) -> Result<Self> {
        lam_model::settings::only_default(name)
    }
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
            steps: 10_000,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: default_weight_decay(),
            selection_fraction: default_selection_fraction(),
            check_every: default_check_every(),
            patience: default_patience(),
            seed: 0,
            frame_conditioned: false,
            prediction_weight: 0.0,
            world_model_lr: 0.0,
        }
    }
}

/// Sizes of an [`Mlp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpConfig {
    pub d_in: usize,
    pub hidden: usize,
    pub d_out: usize,
}

impl MlpConfig {
    pub fn init(&self, device: &Device) -> Mlp {
        Mlp {
            fc1: LinearConfig::new(self.d_in, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.hidden).init(device),
            fc3: LinearConfig::new(self.hidden, self.d_out).init(device),
        }
    }
}

/// A 3-layer GELU MLP: Linear-GELU-Linear-GELU-Linear.
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl Mlp {
    /// `[M, d_in] -> [M, d_out]`.
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

/// Sizes of a [`Controller`] (its training settings are [`ControllerConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControllerNetConfig {
    /// Robot action dimension A (a block of k actions counts k times).
    pub action_dim: usize,
    /// Latent action dimension d.
    pub latent_dim: usize,
    /// Width of the pooled frame it reads as well (0: actions only).
    pub frame_dim: usize,
    /// Hidden width of both MLPs.
    pub hidden: usize,
}

impl ControllerNetConfig {
    pub fn init(&self, device: &Device) -> Controller {
        let mlp = |d_in, d_out| {
            MlpConfig {
                d_in,
                hidden: self.hidden,
                d_out,
            }
            .init(device)
        };
        Controller {
            forward: mlp(self.action_dim + self.frame_dim, self.latent_dim),
            inverse: mlp(self.latent_dim + self.frame_dim, self.action_dim),
        }
    }
}

impl Controller {
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

    /// Latents `[M, d]` of the actions of transitions `idx` of `data`, in their frames.
    pub fn latents_of(&self, data: &Transitions, idx: &[usize], device: &Device) -> Tensor<2> {
        self.to_latent(
            rows(&data.actions, data.action_dim, idx, device),
            frames_of(self, data, idx, device),
        )
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
    /// The whole clips the transitions come from (kept when the controller is fitted through
    /// the world model): clip c holds transitions `c * (T-1) .. (c+1) * (T-1)`.
    pub clips: Option<Clips>,
}

/// Normalised (model-space) clips `[C, T, N, D]`, row-major on host.
pub struct Clips {
    pub data: Vec<f32>,
    /// `[T, N, D]`.
    pub shape: [usize; 3],
}

impl Clips {
    fn len(&self) -> usize {
        self.data.len() / self.shape.iter().product::<usize>()
    }

    /// The transitions of clips `idx`: clip c holds `c * (T-1) .. (c+1) * (T-1)`.
    fn transition_rows(&self, idx: &[usize]) -> Vec<usize> {
        let per = self.shape[0] - 1;
        idx.iter().flat_map(|&c| c * per..(c + 1) * per).collect()
    }

    /// Clips `idx` as a tensor `[idx.len(), T, N, D]`.
    fn batch(&self, idx: &[usize], device: &Device) -> Tensor<4> {
        let [t, n, d] = self.shape;
        let per = t * n * d;
        let data: Vec<f32> = idx
            .iter()
            .flat_map(|&i| self.data[i * per..(i + 1) * per].iter().copied())
            .collect();
        Tensor::from_data(TensorData::new(data, [idx.len(), t, n, d]), device)
    }
}

impl Transitions {
    pub fn len(&self) -> usize {
        self.actions.len() / self.action_dim
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The latents `[n, d]` (row-major) a controller makes of `n` action blocks drawn uniformly
/// within per-step bounds `low` / `high` (repeated over the block); a frame-conditioned
/// controller reads them in rows of `frames` (pooled model-space frames, row-major) drawn at
/// random.
pub fn latents_of_random_blocks(
    ctrl: &Controller,
    low: &[f32],
    high: &[f32],
    frames: Option<&[f32]>,
    n: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    use rand::RngExt;
    let a = ctrl.action_dim();
    ensure!(
        !low.is_empty() && low.len() == high.len() && a % low.len() == 0,
        "controller of {a} action values per block: bounds of {} / {} values do not divide it",
        low.len(),
        high.len()
    );
    let mut rng = StdRng::seed_from_u64(0);
    let actions: Vec<f32> = (0..n * a)
        .map(|i| {
            let (lo, hi) = (low[i % low.len()], high[i % low.len()]);
            lo + (hi - lo) * rng.random::<f32>()
        })
        .collect();
    let actions = Tensor::<2>::from_data(TensorData::new(actions, [n, a]), device);
    let d = ctrl.frame_dim();
    let frames = match (d, frames) {
        (0, _) => None,
        (_, Some(f)) if !f.is_empty() && f.len() % d == 0 => {
            let rows = f.len() / d;
            let pick: Vec<f32> = (0..n)
                .flat_map(|_| {
                    let r = rng.random_range(0..rows);
                    f[r * d..(r + 1) * d].iter().copied()
                })
                .collect();
            Some(Tensor::<2>::from_data(
                TensorData::new(pick, [n, d]),
                device,
            ))
        }
        (_, _) => anyhow::bail!(
            "a frame-conditioned controller needs frames of {d} values to place its blocks in"
        ),
    };
    Ok(crate::host(ctrl.to_latent(actions, frames)))
}

/// Labels every transition of a labeled shard set with the frozen IDM; `keep_clips` keeps the
/// normalised clips as well (for fitting through the world model).
pub fn pseudo_label(
    cfg: &LamConfig,
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
    keep_clips: bool,
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
    let mut kept = Vec::new();
    for chunk in (0..data.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let clips = lam.normalize(Tensor::<4>::from_data(
            TensorData::new(data.batch(chunk), [chunk.len(), t, idx.tokens, idx.dim]),
            device,
        ));
        if keep_clips {
            kept.extend(
                clips
                    .clone()
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?,
            );
        }
        let pooled = Idm::pool(clips);
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
        clips: keep_clips.then(|| Clips {
            data: kept,
            shape: [t, idx.tokens, idx.dim],
        }),
    })
}

/// Held-out metrics of a controller.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControllerReport {
    pub train_transitions: usize,
    pub val_transitions: usize,
    /// Steps run (fewer than configured when early stopping ended training) and the step
    /// whose controller (a -> z) weights were kept; `inverse_best_step` is the inverse's.
    #[serde(default)]
    pub steps_run: usize,
    #[serde(default)]
    pub best_step: usize,
    #[serde(default)]
    pub inverse_best_step: usize,
    /// Mean cosine similarity between g_ctrl(a) and the IDM pseudo-label.
    pub cosine: f64,
    /// R^2 of g_ctrl(a) against the pseudo-labels, all channels (absent when the latents do
    /// not vary, and in reports written before it was measured).
    #[serde(default)]
    pub r2: Option<f64>,
    /// Mean squared error of the inverse controller's actions.
    pub inverse_mse: f64,
    /// Variance of the true actions (what a constant predictor's MSE would be).
    pub action_variance: f64,
    /// World-model prediction error (mean L1 in model space) on the held-out clips fed the
    /// controller's latents, and fed the IDM's (when the fit had the world model and clips;
    /// of the tuned world model when it trained along).
    #[serde(default)]
    pub prediction_error: Option<f64>,
    #[serde(default)]
    pub prediction_error_idm: Option<f64>,
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

/// Held-out fit of a controller in both directions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldOut {
    /// Mean cosine(g_ctrl(a), z).
    pub cosine: f64,
    /// `1 - SSE / SST` of g_ctrl(a) against z over every latent channel (the cosine alone is
    /// 1.0 for latents collapsed onto one direction; R^2 is not); `None` when z does not vary.
    pub r2: Option<f64>,
    /// Mean squared error of the inverse controller's actions.
    pub inverse_mse: f64,
}

/// Evaluates a controller on transitions.
pub fn evaluate(ctrl: &Controller, data: &Transitions, device: &Device) -> HeldOut {
    let all: Vec<usize> = (0..data.len()).collect();
    let a = rows(&data.actions, data.action_dim, &all, device);
    let z = rows(&data.latents, data.latent_dim, &all, device);
    let f = frames_of(ctrl, data, &all, device);
    let pred = ctrl.to_latent(a.clone(), f.clone());
    let cosine = mean_cosine(pred.clone(), z.clone());
    let sse = (pred - z.clone()).square().sum().into_scalar::<f32>() as f64;
    let sst = (z.clone() - z.clone().mean_dim(0))
        .square()
        .sum()
        .into_scalar::<f32>() as f64;
    let total = z.clone().square().sum().into_scalar::<f32>() as f64;
    let inverse_mse = (ctrl.to_action(z, f) - a)
        .square()
        .mean()
        .into_scalar::<f32>() as f64;
    HeldOut {
        cosine,
        // Latents that do not vary (a collapsed IDM) leave R^2 undefined.
        r2: (sst > 1e-6 * total).then(|| 1.0 - sse / sst),
        inverse_mse,
    }
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
    /// Held-out loss and step of the best weights so far of the controller and of the
    /// inverse (together in `best.safetensors`), if any, and the checks since each.
    best: Option<(Selected, Selected)>,
    since_best: (usize, usize),
    /// Early stopping ended the fit at this checkpoint.
    stopped: bool,
    train_transitions: usize,
    config: ControllerConfig,
}

/// Held-out loss and step of one direction's best weights.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
struct Selected {
    loss: f32,
    step: usize,
}

/// The best weights of a fit so far: the controller's half (with the world model trained
/// along, if any) and the inverse's, each chosen on its own held-out loss.
struct Kept {
    forward: Selected,
    inverse: Selected,
    weights: Controller,
    world_model: Option<WorldModel>,
}

/// Fits both MLPs on `train`; reports on `val`.
pub fn fit(
    cfg: &ControllerConfig,
    train: &Transitions,
    val: &Transitions,
    device: &Device,
) -> Result<(Controller, ControllerReport)> {
    let (ctrl, report, _) = fit_with(cfg, train, val, None, device, None)?;
    Ok((ctrl, report))
}

/// [`fit`] through `world_model` (needed when `cfg.prediction_weight > 0`, and then with the
/// transitions' clips), checkpointing into (and with `resume` continuing from) `checkpoints`.
/// Returns the world model as tuned when `cfg.world_model_lr > 0`. A resumed fit replays the
/// batch order of the steps it skips, so it repeats the uninterrupted one exactly.
pub fn fit_with(
    cfg: &ControllerConfig,
    train: &Transitions,
    val: &Transitions,
    world_model: Option<&WorldModel>,
    device: &Device,
    checkpoints: Option<&FitCheckpoints>,
) -> Result<(Controller, ControllerReport, Option<WorldModel>)> {
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
    let through = if cfg.prediction_weight > 0.0 {
        let wm = world_model.context("fitting through the world model needs the world model")?;
        let clips = train
            .clips
            .as_ref()
            .context("fitting through the world model needs the transitions' clips")?;
        let per = clips.shape[0] - 1;
        ensure!(
            per > 0 && clips.len() * per == train.len(),
            "{} clips of {} transitions do not hold the {} transitions",
            clips.len(),
            per,
            train.len()
        );
        let fit_clips = n_fit / per;
        ensure!(
            fit_clips > 0,
            "no whole clip to fit through the world model"
        );
        Some(Through {
            given: wm,
            clips,
            fit_clips,
            held_out: (n_fit.div_ceil(per)..clips.len()).collect(),
        })
    } else {
        None
    };
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
        stable_param_ids(
            ControllerNetConfig {
                action_dim: train.action_dim,
                latent_dim: train.latent_dim,
                frame_dim,
                hidden: cfg.hidden,
            }
            .init(dev),
        )
    };
    let mut ctrl = fresh(&ad);
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    // The world model the fit reads, on the autodiff device: frozen, or trained along with
    // an optimiser of its own.
    let tune = cfg.world_model_lr > 0.0;
    ensure!(
        !tune || through.is_some(),
        "training the world model along needs a prediction weight above 0"
    );
    let mut wm_ad = through.as_ref().map(|t| {
        if tune {
            stable_param_ids(t.given.clone().fork(&ad).train())
        } else {
            t.given.clone().to_device(&ad).no_grad()
        }
    });
    let mut wm_opt = tune.then(|| AdamWConfig::new().init());
    let mut start = 0;
    let mut best: Option<Kept> = None;
    let mut since_best = (0usize, 0usize);
    let mut stopped = false;
    if let Some(ck) = checkpoints {
        if let Some(dir) = lam_model::checkpoint::resume_or_clear(&ck.dir, ck.resume)? {
            let state: FitState = lam_model::checkpoint::read_state(&dir).with_context(|| {
                format!(
                    "--resume: cannot read the fit state in {} (a checkpoint written before \
                     each direction kept its own best weights cannot be resumed: fit again \
                     without --resume)",
                    dir.display()
                )
            })?;
            ensure!(
                state.config == *cfg && state.train_transitions == train.len(),
                "--resume: {} was made with other settings or data; resume with the fit's own",
                dir.display()
            );
            ctrl = lam_model::checkpoint::load_weights(ctrl, &dir.join("controller.safetensors"))?;
            opt = lam_model::checkpoint::load_optimizer(&dir, opt)?;
            if let Some(o) = wm_opt.take() {
                let wm = wm_ad.take().expect("a world model trained along");
                let sub = dir.join("world_model");
                wm_ad = Some(lam_model::checkpoint::load_weights(
                    wm,
                    &sub.join("weights.safetensors"),
                )?);
                wm_opt = Some(lam_model::checkpoint::load_optimizer(&sub, o)?);
            }
            if let Some((forward, inverse)) = state.best {
                let weights = lam_model::checkpoint::load_weights(
                    fresh(device),
                    &dir.join("best.safetensors"),
                )?;
                let wm = match (&through, tune) {
                    (Some(t), true) => Some(lam_model::checkpoint::load_weights(
                        t.given.clone(),
                        &dir.join("world_model").join("best.safetensors"),
                    )?),
                    _ => None,
                };
                best = Some(Kept {
                    forward,
                    inverse,
                    weights,
                    world_model: wm,
                });
            }
            (start, since_best, stopped) = (state.step, state.since_best, state.stopped);
        }
    }
    // One shuffle per pass over the data, from one generator (clips through the world model
    // from another); a resumed fit replays the passes of the steps done.
    let b = cfg.batch_size.min(n_fit);
    let mut batches = Passes::new(n_fit, b, cfg.seed);
    let mut clip_batches = through.as_ref().map(|t| {
        let per = t.clips.shape[0] - 1;
        Passes::new(t.fit_clips, (b / per).clamp(1, t.fit_clips), cfg.seed + 1)
    });
    for _ in 0..start {
        batches.next();
        if let Some(c) = clip_batches.as_mut() {
            c.next();
        }
    }
    // The two directions' regression losses (controller, inverse).
    let losses_of = |ctrl: &Controller, a: Tensor<2>, z: Tensor<2>, f: Option<Tensor<2>>| {
        (
            (ctrl.to_latent(a.clone(), f.clone()) - z.clone())
                .square()
                .mean(),
            (ctrl.to_action(z, f) - a).square().mean(),
        )
    };
    // The weighted prediction loss of clips `idx` through `wm` (and, for a world model
    // being trained, fed the IDM's latents too).
    let through_loss =
        |ctrl: &Controller, wm: &WorldModel, clips: &Clips, idx: &[usize], dev: &Device| {
            let transitions = clips.transition_rows(idx);
            let x = clips.batch(idx, dev);
            let mut l = prediction_error(wm, x.clone(), ctrl.latents_of(train, &transitions, dev));
            if tune {
                let z = rows(&train.latents, train.latent_dim, &transitions, dev);
                l = l + prediction_error(wm, x, z);
            }
            l.mul_scalar(cfg.prediction_weight)
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
        let idx = batches.next();
        let a = rows(&train.actions, train.action_dim, &idx, &ad);
        let z = rows(&train.latents, train.latent_dim, &idx, &ad);
        let f = frames_of(&ctrl, train, &idx, &ad);
        let (forward_loss, inverse_loss) = losses_of(&ctrl, a, z, f);
        let mut loss = forward_loss + inverse_loss;
        if let (Some(t), Some(wm), Some(c)) = (&through, &wm_ad, clip_batches.as_mut()) {
            loss = loss + through_loss(&ctrl, wm, t.clips, &c.next(), &ad);
        }
        let train_loss = loss.clone();
        let mut grads = loss.backward();
        let ctrl_grads = GradientsParams::from_module(&mut grads, &ctrl);
        ctrl = opt.step(cfg.lr, ctrl, ctrl_grads);
        if let Some(o) = wm_opt.as_mut() {
            let wm = wm_ad.take().expect("a world model trained along");
            let g = GradientsParams::from_module(&mut grads, &wm);
            wm_ad = Some(o.step(cfg.world_model_lr, wm, g));
        }
        steps_run = step + 1;
        let check = n_sel > 0
            && cfg.check_every > 0
            && (steps_run % cfg.check_every == 0 || steps_run == cfg.steps);
        if check {
            let valid = ctrl.valid();
            let valid_wm = wm_ad.as_ref().filter(|_| tune).map(|w| w.valid());
            let (mut lf, li) = losses_of(&valid, sel_a.clone(), sel_z.clone(), sel_f.clone());
            if let Some(t) = &through
                && !t.held_out.is_empty()
            {
                let wm = valid_wm.as_ref().unwrap_or(t.given);
                lf = lf + through_loss(&valid, wm, t.clips, &t.held_out, device);
            }
            let (lf, li) = (lf.into_scalar::<f32>(), li.into_scalar::<f32>());
            ensure!(
                lf.is_finite() && li.is_finite(),
                "controller losses became {lf} / {li} at step {steps_run}; lower --lr"
            );
            if let Some(m) = metrics.as_mut() {
                let t = train_loss.into_scalar::<f32>();
                m.write(&serde_json::json!({"step": steps_run, "split": "train", "loss": t}))?;
                m.write(
                    &serde_json::json!({"step": steps_run, "split": "val", "loss": lf + li,
                    "controller": lf, "inverse": li}),
                )?;
            }
            let now = |loss| Selected {
                loss,
                step: steps_run,
            };
            match best.as_mut() {
                None => {
                    best = Some(Kept {
                        forward: now(lf),
                        inverse: now(li),
                        weights: valid,
                        world_model: valid_wm,
                    });
                    since_best = (0, 0);
                }
                Some(kept) => {
                    if lf < kept.forward.loss {
                        kept.forward = now(lf);
                        kept.weights.forward = valid.forward.clone();
                        kept.world_model = valid_wm;
                        since_best.0 = 0;
                    } else {
                        since_best.0 += 1;
                    }
                    if li < kept.inverse.loss {
                        kept.inverse = now(li);
                        kept.weights.inverse = valid.inverse;
                        since_best.1 = 0;
                    } else {
                        since_best.1 += 1;
                    }
                }
            }
            stopped = cfg.patience > 0 && since_best.0.min(since_best.1) >= cfg.patience;
        }
        let save = checkpoints.filter(|_| {
            cfg.check_every > 0 && steps_run % cfg.check_every == 0 && steps_run < cfg.steps
        });
        if let Some(ck) = save {
            let state = FitState {
                step: steps_run,
                best: best.as_ref().map(|k| (k.forward, k.inverse)),
                since_best,
                stopped,
                train_transitions: train.len(),
                config: cfg.clone(),
            };
            lam_model::checkpoint::write_step(&ck.dir, steps_run, 2, |tmp| {
                lam_model::checkpoint::save_weights(&ctrl, &tmp.join("controller.safetensors"))?;
                if let Some(k) = &best {
                    lam_model::checkpoint::save_weights(&k.weights, &tmp.join("best.safetensors"))?;
                }
                if let (Some(o), Some(wm)) = (&wm_opt, &wm_ad) {
                    let sub = tmp.join("world_model");
                    std::fs::create_dir_all(&sub)?;
                    lam_model::checkpoint::save_weights(wm, &sub.join("weights.safetensors"))?;
                    lam_model::checkpoint::save_optimizer(&sub, o)?;
                    if let Some(w) = best.as_ref().and_then(|k| k.world_model.as_ref()) {
                        lam_model::checkpoint::save_weights(w, &sub.join("best.safetensors"))?;
                    }
                }
                lam_model::checkpoint::save_optimizer(tmp, &opt)?;
                lam_model::checkpoint::write_state(tmp, &state)
            })?;
        }
    }
    let (ctrl, best_step, inverse_best_step, tuned) = match best {
        Some(k) => (k.weights, k.forward.step, k.inverse.step, k.world_model),
        None => (
            ctrl.valid(),
            steps_run,
            steps_run,
            wm_ad.filter(|_| tune).map(|w| w.valid()),
        ),
    };
    let held_out = evaluate(&ctrl, val, device);
    let (prediction_error, prediction_error_idm) = match tuned.as_ref().or(world_model) {
        Some(wm) => match prediction_errors(&ctrl, wm, val, device) {
            Some((c, i)) => (Some(c), Some(i)),
            None => (None, None),
        },
        None => (None, None),
    };
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
            inverse_best_step,
            cosine: held_out.cosine,
            r2: held_out.r2,
            inverse_mse: held_out.inverse_mse,
            action_variance,
            prediction_error,
            prediction_error_idm,
        },
        tuned,
    ))
}

/// What a fit through the world model reads: the world model as given, the labeled clips, the
/// number of whole clips in the fitting part (clips `0..fit_clips`) and the whole clips of the
/// held-out part (a clip split by the boundary is in neither).
struct Through<'a> {
    given: &'a WorldModel,
    clips: &'a Clips,
    fit_clips: usize,
    held_out: Vec<usize>,
}

/// Shuffled batches of `0..n`, one shuffle per pass, from one generator.
struct Passes {
    order: Vec<usize>,
    pos: usize,
    batch: usize,
    rng: StdRng,
}

impl Passes {
    fn new(n: usize, batch: usize, seed: u64) -> Self {
        Self {
            order: (0..n).collect(),
            pos: n,
            batch,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    fn next(&mut self) -> Vec<usize> {
        if self.pos + self.batch > self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.pos = 0;
        }
        self.pos += self.batch;
        self.order[self.pos - self.batch..self.pos].to_vec()
    }
}

/// Mean L1 `[1]` of the world model's predictions of frames 1..T of `clips` `[B, T, N, D]` fed
/// latents `[B * (T-1), d]` (clip-major).
fn prediction_error(wm: &WorldModel, clips: Tensor<4>, latents: Tensor<2>) -> Tensor<1> {
    let [b, t, _, _] = clips.dims();
    let d = latents.dims()[1];
    let pred = wm.forward(
        clips.clone().slice(s![.., 0..t - 1, .., ..]),
        latents.reshape([b, t - 1, d]),
    );
    (pred - clips.slice(s![.., 1..t, .., ..])).abs().mean()
}

/// Held-out prediction error (mean L1 in model space) of `wm` fed the controller's latents and
/// fed the IDM's, over the clips of `val` (`None` without clips).
pub fn prediction_errors(
    ctrl: &Controller,
    wm: &WorldModel,
    val: &Transitions,
    device: &Device,
) -> Option<(f64, f64)> {
    let clips = val.clips.as_ref()?;
    if clips.len() == 0 || clips.shape[0] < 2 {
        return None;
    }
    let (mut through, mut idm) = (0.0, 0.0);
    let all: Vec<usize> = (0..clips.len()).collect();
    for chunk in all.chunks(64) {
        let transitions = clips.transition_rows(chunk);
        let x = clips.batch(chunk, device);
        let z = rows(&val.latents, val.latent_dim, &transitions, device);
        let w = chunk.len() as f64;
        let latents = ctrl.latents_of(val, &transitions, device);
        through += w * prediction_error(wm, x.clone(), latents).into_scalar::<f32>() as f64;
        idm += w * prediction_error(wm, x, z).into_scalar::<f32>() as f64;
    }
    let n = clips.len() as f64;
    Some((through / n, idm / n))
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
    // The settings as `lam control fit --config DIR/config.toml` reads them.
    lam_model::settings::save(cfg, &dir.join("config.toml"))?;
    let meta = serde_json::json!({"action_dim": action_dim, "latent_dim": latent_dim,
        "frame_dim": ctrl.frame_dim(), "config": cfg, "report": report});
    lam_data::shards::write_atomic(
        &dir.join("controller.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    // The same controller as a model folder (OUT/model) to share or load by path.
    use lam_model::model_folder::{self, Card, MODEL_DIR, kind, numeric_figures};
    model_folder::write(
        &dir.join(MODEL_DIR),
        kind::CONTROLLER,
        &meta,
        &dir.join("controller.safetensors"),
        &Card {
            summary: "A controller of lam (stage 2): two small MLPs between a block of robot \
                      actions and the latent action a stage-1 model infers for it (and back).",
            figures: &numeric_figures("report", &meta["report"], 2),
            usage: &[
                "lam plan eval --run RUN --encoder ENCODER --controller MODEL --space action --task reach --out OUT",
                "lam serve --run RUN --encoder ENCODER --controller MODEL",
            ],
        },
    )
}

/// Loads a controller saved by [`save`], from its fit's folder or its model folder.
pub fn load(dir: &Path, device: &Device) -> Result<Controller> {
    use lam_model::model_folder::{self, kind};
    let own = dir.join("controller.json");
    let (meta, meta_path, weights) = if !own.exists() && model_folder::kind_of(dir).is_some() {
        // A model folder (`lam_model::model_folder`): config.json + model.safetensors.
        (
            model_folder::read_config(dir, kind::CONTROLLER)?,
            dir.join(model_folder::CONFIG_FILE),
            dir.join(model_folder::WEIGHTS_FILE),
        )
    } else {
        let text = std::fs::read_to_string(&own)
            .with_context(|| format!("cannot read {}", own.display()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("malformed {}", own.display()))?;
        (meta, own, dir.join("controller.safetensors"))
    };
    let get = |k: &str| {
        meta[k]
            .as_u64()
            .map(|v| v as usize)
            .with_context(|| format!("{}: missing `{k}`", meta_path.display()))
    };
    let hidden = meta["config"]["hidden"]
        .as_u64()
        .with_context(|| format!("{}: missing config.hidden", meta_path.display()))?
        as usize;
    // Controllers saved before frame conditioning existed read actions only.
    let frame_dim = meta["frame_dim"].as_u64().unwrap_or(0) as usize;
    let ctrl = ControllerNetConfig {
        action_dim: get("action_dim")?,
        latent_dim: get("latent_dim")?,
        frame_dim,
        hidden,
    }
    .init(device);
    lam_model::checkpoint::load_weights(ctrl, &weights)
}
