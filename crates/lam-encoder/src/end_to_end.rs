//! End-to-end stage 1 from frames: the sim encoder trains jointly with the IDM and the world
//! model, reading pixels (a lam-sim recording, a LeRobot dataset or a video folder) instead of
//! precomputed shards (which stay the fast path for frozen encoders).
//!
//! One step, for clips of pixels `[B, T, 3, S, S]`:
//!
//! 1. the online encoder gives every frame's tokens; [`crate::encoder::pool`] reduces them to
//!    the frame embedding the latent action model sees, `[B, T, 1, D']` (`mean`: the mean
//!    token, D' = D; `keypoints`: the keypoint positions, D' = 2K), the same reduction
//!    `lam embed --pooling` and planning apply, so the trained encoder embeds robot data for
//!    the controller and frames for planning exactly as here;
//! 2. the embeddings are standardised per channel with the batch's mean and std (gradients
//!    pass through them, as through a batch norm), so the prediction loss cannot shrink the
//!    embedding's scale; running averages of those statistics become the model's fixed
//!    `model.standardize` statistics in every checkpoint, which evaluation, the controller and
//!    planning apply;
//! 3. the latent action model's loss on those embeddings (IDM, regulariser, world model;
//!    [`LatentActionModel::forward_loss_to`]), the prediction targets being the online
//!    encoder's embeddings of frames 1..T, or with the `ema` guard a target encoder's;
//! 4. one guard against collapse (the prediction loss alone is minimised by embeddings that
//!    carry nothing, e.g. every channel the same), [`Guard`]:
//!    - `sigreg`: `sigreg_weight` x SIGReg of the batch's standardised frame embeddings
//!      (LeWorldModel, whose projector ends in a batch norm);
//!    - `ema`: targets from a target encoder (no gradient) that follows the online one,
//!      `theta' <- tau theta' + (1 - tau) theta` after each step (BYOL / CoLA-World);
//!    - `distill`: `distill_weight` x the mean squared distance of the tokens to those of
//!      the frozen initial encoder (the seed paper's finetuning, which it saw collapse);
//!    - `none`: nothing (collapses; a baseline);
//! 5. one backward pass; the latent action model steps with `lam train`'s Muon + AdamW and
//!    schedule, the encoder with AdamW at `encoder_lr` (linear warmup, cosine decay).
//!
//! Every `train.checkpoint_every` steps the fixed evaluation frames are embedded and checked
//! for collapse ([`crate::pretrain::collapse_metric`]: a channel std shrunk below a share of
//! the initial encoder's, or a frame-embedding effective rank near 1); a collapse is logged
//! as a warning naming the metric, and with `stop_on_collapse` the run stops and keeps the
//! last checkpoint before it.
//!
//! The run folder is a stage-1 run (`config.toml`, `metrics.jsonl`, `checkpoints/`) that
//! `lam eval`, `lam control fit` and `lam plan eval --run` open as any other, plus
//! `encoder/`, the trained encoder (a sim-encoder checkpoint: pass it as `--encoder`). Each
//! checkpoint also holds the encoder, its optimiser and the EMA target, so `--resume`
//! continues exactly; every random draw of step s comes from generators seeded with
//! (seed, s).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use lam_ingest::split::Split;
use lam_ingest::{ClipSource, ClipSpec, IngestReport, Normalization, RunOptions};
use lam_model::LatentActionModel;
use lam_model::checkpoint::{self, TrainState};
use lam_model::config::{Conditioning, LamConfig, RegularizerKind};
use lam_model::train::{batch_indices, reset_dead_codes, step_noise, step_rng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::encoder::{Pooling, pool};
use crate::pretrain::{CollapseCheck, CollapseStats, collapse_metric, directions};
use crate::probe::{ProbeConfig, ProbeFrames, ProbeReport, probe_encoder, probe_set};
use crate::sigreg::{sigreg, sigreg_knots};
use crate::sim::{ARCHITECTURE, SimCheckpointMeta, SimEncoder, SimEncoderConfig};
use crate::stats::embedding_stats;

/// What keeps the jointly trained embedding from collapsing (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Guard {
    /// SIGReg on the frame embeddings. Default.
    #[default]
    Sigreg,
    /// Targets from an EMA copy of the encoder.
    Ema,
    /// Distillation to the frozen initial encoder.
    Distill,
    /// No guard.
    None,
}

impl std::str::FromStr for Guard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "sigreg" => Guard::Sigreg,
            "ema" => Guard::Ema,
            "distill" => Guard::Distill,
            "none" => Guard::None,
            _ => bail!("unknown guard `{s}`: sigreg, ema, distill or none"),
        })
    }
}

impl lam_model::settings::Settings for EndToEndConfig {
    const WHAT: &'static str = "end-to-end";
    const PRESETS: &'static [&'static str] = lam_model::settings::ONLY_DEFAULT;
    /// `default`: [`EndToEndConfig::default`].
    fn preset(name: &str) -> Result<Self> {
        lam_model::settings::only_default(name)
    }
}

/// Settings of end-to-end training besides the latent action model's own ([`LamConfig`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndToEndConfig {
    /// Shape of a fresh encoder (ignored with `init`). Default: 64 x 64 frames, patch 16,
    /// D = 32, 2 blocks, no keypoints (a plain ViT whose mean token is the embedding).
    pub encoder: SimEncoderConfig,
    /// Start from this sim-encoder checkpoint instead (e.g. `lam encoder pretrain`'s).
    pub init: Option<PathBuf>,
    /// Frame embedding from the tokens. Default `Mean`.
    pub pooling: Pooling,
    /// Default `sigreg`.
    pub guard: Guard,
    /// Peak AdamW learning rate of the encoder. Default 3e-4.
    pub encoder_lr: f64,
    /// Its AdamW weight decay. Default 0.01.
    pub encoder_weight_decay: f64,
    /// Share of the steps of linear warmup. Default 0.1.
    pub warmup_fraction: f64,
    /// SIGReg weight (LeWorldModel: 0.09-0.1). Default 0.1.
    pub sigreg_weight: f64,
    /// Random unit directions SIGReg tests per step. Default 256.
    pub sigreg_directions: usize,
    /// Quadrature knots on [0, `sigreg_t_max`]. Defaults 17 and 3.0.
    pub sigreg_knots: usize,
    pub sigreg_t_max: f64,
    /// Decay tau of the EMA target. Default 0.99.
    pub ema_decay: f64,
    /// Distillation weight alpha (the seed paper's 0.1). Default 0.1.
    pub distill_weight: f64,
    /// Collapse thresholds. Defaults as `lam encoder pretrain`'s.
    pub collapse: CollapseCheck,
    /// Held-out frames embedded for the collapse statistics. Default 256.
    pub eval_frames: usize,
    /// Frame rate clips are sampled at. Default 2 (the suite records at 10: blocks of 5).
    pub fps: f64,
    /// Resampled frames between clip starts. Default 1 (every window).
    pub stride: usize,
    /// At most this many distinct frames are loaded. Default 40,000.
    pub max_frames: usize,
    /// Share of items (episodes, videos) held out. Default 0.05.
    pub val_fraction: f64,
}

impl Default for EndToEndConfig {
    fn default() -> Self {
        Self {
            encoder: SimEncoderConfig {
                patch_size: 16,
                dim: 32,
                keypoints: 0,
                ..SimEncoderConfig::default()
            },
            init: None,
            pooling: Pooling::Mean,
            guard: Guard::Sigreg,
            encoder_lr: 3e-4,
            encoder_weight_decay: 0.01,
            warmup_fraction: 0.1,
            sigreg_weight: 0.1,
            sigreg_directions: 256,
            sigreg_knots: 17,
            sigreg_t_max: 3.0,
            ema_decay: 0.99,
            distill_weight: 0.1,
            collapse: CollapseCheck::default(),
            eval_frames: 256,
            fps: 2.0,
            stride: 1,
            max_frames: 40_000,
            val_fraction: 0.05,
        }
    }
}

impl EndToEndConfig {
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        ensure!(
            self.encoder_lr > 0.0 && self.encoder_lr.is_finite(),
            "encoder_lr must be positive, got {}",
            self.encoder_lr
        );
        ensure!(
            (0.0..1.0).contains(&self.ema_decay),
            "ema_decay must be in [0, 1), got {}",
            self.ema_decay
        );
        ensure!(
            self.sigreg_weight >= 0.0 && self.distill_weight >= 0.0,
            "sigreg_weight and distill_weight must not be negative"
        );
        ensure!(
            self.sigreg_directions > 0 && self.sigreg_knots >= 2 && self.sigreg_t_max > 0.0,
            "SIGReg needs directions > 0, knots >= 2 and t_max > 0"
        );
        ensure!(
            self.pooling != Pooling::None,
            "end-to-end training embeds one vector per frame: pooling mean or keypoints"
        );
        ensure!(
            self.pooling != Pooling::Keypoints || self.encoder.keypoints > 0,
            "pooling keypoints needs an encoder with keypoints"
        );
        ensure!(
            self.pooling != Pooling::KeypointsContext,
            "end-to-end training learns its encoder, so it has no fitted context features: \
             pooling mean or keypoints"
        );
        Ok(())
    }

    /// How clips of `frames` frames are read for this run.
    pub fn clip_spec(&self, frames: usize, norm: Normalization) -> ClipSpec {
        ClipSpec {
            fps: self.fps,
            frames,
            size: self.encoder.image_size as u32,
            stride: self.stride,
            norm,
            max_clips: None,
            phases: 1,
        }
    }

    /// Which items are held out.
    pub fn split(&self) -> Split {
        Split {
            val_fraction: self.val_fraction,
            seed: 0,
        }
    }

    /// Channels of the frame embedding.
    pub fn embed_dim(&self) -> usize {
        match self.pooling {
            Pooling::Keypoints => 2 * self.encoder.keypoints,
            _ => self.encoder.dim,
        }
    }
}

/// Pixels of the training and validation clips: each distinct frame once, clips as lists
/// of frame indices (overlapping clips share their frames).
#[derive(Clone, Debug, Default)]
pub struct ClipFrames {
    /// Side S.
    pub size: usize,
    /// Frames per clip T.
    pub frames_per_clip: usize,
    /// `count x 3 x S x S` normalised values.
    pub pixels: Vec<f32>,
    pub train: Vec<Vec<usize>>,
    pub val: Vec<Vec<usize>>,
}

impl ClipFrames {
    fn frame_len(&self) -> usize {
        3 * self.size * self.size
    }

    /// Distinct frames held.
    pub fn frame_count(&self) -> usize {
        self.pixels.len() / self.frame_len().max(1)
    }

    /// Clips `[B, T, 3, S, S]` of `clips` (indices into `set`).
    pub fn batch(&self, set: &[Vec<usize>], clips: &[usize], device: &Device) -> Tensor<5> {
        let (n, t, s) = (self.frame_len(), self.frames_per_clip, self.size);
        let mut v = Vec::with_capacity(clips.len() * t * n);
        for &c in clips {
            for &f in &set[c] {
                v.extend_from_slice(&self.pixels[f * n..(f + 1) * n]);
            }
        }
        Tensor::from_data(TensorData::new(v, [clips.len(), t, 3, s, s]), device)
    }

    /// Frames `[K, 3, S, S]` by index.
    pub fn frames(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let (n, s) = (self.frame_len(), self.size);
        let mut v = Vec::with_capacity(indices.len() * n);
        for &f in indices {
            v.extend_from_slice(&self.pixels[f * n..(f + 1) * n]);
        }
        Tensor::from_data(TensorData::new(v, [indices.len(), 3, s, s]), device)
    }
}

/// Reads clips of `spec` from `source`, items whose id falls in `split`'s validation share
/// held out, at most `max_frames` distinct frames in all. Unreadable items are skipped and
/// listed in the report.
pub fn load_clip_frames(
    source: &dyn ClipSource,
    spec: &ClipSpec,
    split: &Split,
    max_frames: usize,
) -> Result<(ClipFrames, IngestReport)> {
    let mut out = ClipFrames {
        size: spec.size as usize,
        frames_per_clip: spec.frames,
        ..ClipFrames::default()
    };
    let n = out.frame_len();
    let report = lam_ingest::run(source, spec, &RunOptions::default(), &mut |item, clips| {
        let mut seen: std::collections::BTreeMap<usize, usize> = Default::default();
        let val = split.unit(&item.id) < split.val_fraction;
        for clip in clips {
            let new = clip
                .positions
                .iter()
                .filter(|p| !seen.contains_key(p))
                .count();
            if out.frame_count() + new > max_frames {
                break;
            }
            let mut ids = Vec::with_capacity(clip.frames);
            for (k, &p) in clip.positions.iter().enumerate() {
                let id = *seen.entry(p).or_insert_with(|| {
                    out.pixels.extend_from_slice(&clip.data[k * n..(k + 1) * n]);
                    out.pixels.len() / n - 1
                });
                ids.push(id);
            }
            if val {
                out.val.push(ids);
            } else {
                out.train.push(ids);
            }
        }
        Ok(())
    })
    .with_context(|| format!("reading clips from {}", source.describe()))?;
    Ok((out, report))
}

/// Where a run writes and how it behaves.
#[derive(Clone, Debug)]
pub struct EndToEndRun {
    /// Run folder.
    pub dir: PathBuf,
    /// Continue from the newest checkpoint (step 0 when there is none yet).
    pub resume: bool,
    /// Start over in a folder that holds an earlier run.
    pub force: bool,
    pub progress: bool,
    /// Stop at the first collapse and keep the last checkpoint before it.
    pub stop_on_collapse: bool,
    /// Stop after this many steps of this invocation (tests interrupt runs with it).
    pub stop_after: Option<usize>,
    /// Linear probe of the simulator's true state, before and after (sim data only).
    pub probe: Option<ProbeConfig>,
    /// Where the probe's frames come from (`lam_eval::probe::SIM_PROBE_FRAMES` for the
    /// simulated suite); without one a configured probe is skipped with a warning.
    pub probe_frames: Option<ProbeFrames>,
    /// Normalisation of the pixels (the encoder keeps it).
    pub norm: Normalization,
    /// What the run read, recorded in `run.json`.
    pub source: String,
}

/// What a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct EndToEndSummary {
    pub steps_done: usize,
    pub resumed_from: usize,
    pub train_clips: usize,
    pub val_clips: usize,
    pub frames: usize,
    pub seconds: f64,
    pub steps_per_sec: f64,
    /// Wall time of each step this run took, in seconds: from drawing its batch to the
    /// optimisers' update, the device synchronised at its end; checkpoints and validation
    /// are not counted.
    pub step_seconds: Vec<f64>,
    pub final_loss: f64,
    pub final_pred: f64,
    /// The guard's weighted term at the last step.
    pub final_guard: f64,
    /// Held-out prediction error at the end (the world model fed the IDM's latents).
    pub val_pred: Option<f64>,
    pub before: CollapseStats,
    pub after: CollapseStats,
    /// First collapse seen (`None`: never).
    pub collapse: Option<crate::pretrain::Collapse>,
    /// Step of the encoder and model written (below `steps_done` when a collapse stopped
    /// the run).
    pub kept_step: usize,
    pub probe_before: Option<ProbeReport>,
    pub probe_after: Option<ProbeReport>,
    /// The trained encoder's folder.
    pub encoder: PathBuf,
}

/// Non-tensor state of an end-to-end checkpoint, beside the stage-1 `state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct EndToEndState {
    step: usize,
    config: EndToEndConfig,
    /// Running per-channel mean and std of the frame embeddings.
    running: Running,
}

const STATE_FILE: &str = "end_to_end_state.json";
/// The run folder's record of its end-to-end settings.
pub const CONFIG_FILE: &str = "end_to_end.json";
const ENCODER_WEIGHTS: &str = "encoder.safetensors";
const ENCODER_OPTIMIZER: &str = "encoder_optimizer.bpk";
const TARGET_WEIGHTS: &str = "target_encoder.safetensors";
/// The trained encoder's folder inside the run.
pub const ENCODER_DIR: &str = "encoder";

/// Running averages of the batches' per-channel embedding statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Running {
    mean: Vec<f64>,
    std: Vec<f64>,
}

/// Weight of each batch in the running statistics.
const RUNNING_MOMENTUM: f64 = 0.05;

impl Running {
    fn new(dim: usize) -> Self {
        Self {
            mean: vec![0.0; dim],
            std: vec![1.0; dim],
        }
    }

    /// Folds in a batch's statistics (the first batch replaces the initial values).
    fn update(&mut self, mean: &[f32], std: &[f32], first: bool) {
        let m = if first { 1.0 } else { RUNNING_MOMENTUM };
        for (r, &v) in self.mean.iter_mut().zip(mean) {
            *r += m * (v as f64 - *r);
        }
        for (r, &v) in self.std.iter_mut().zip(std) {
            *r += m * (v as f64 - *r);
        }
    }

    fn host(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.mean.iter().map(|&v| v as f32).collect(),
            self.std.iter().map(|&v| v as f32).collect(),
        )
    }
}

/// Embeddings `[B, T, 1, D]` standardised per channel over the batch's B x T frames, with the
/// batch mean and std `[D]` (std floored at 1e-5).
fn standardize(emb: Tensor<4>) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    let [b, t, n, d] = emb.dims();
    let flat = emb.reshape([b * t * n, d]);
    let mean = flat.clone().mean_dim(0);
    let centred = flat - mean.clone();
    let std = (centred.clone() * centred.clone())
        .mean_dim(0)
        .add_scalar(1e-10)
        .sqrt()
        .clamp_min(1e-5);
    let out = (centred / std.clone()).reshape([b, t, n, d]);
    (out, mean.reshape([d]), std.reshape([d]))
}

/// Moves every parameter of `target` to `tau target + (1 - tau) online` (no gradient).
pub fn ema_update(target: SimEncoder, online: &SimEncoder, tau: f64) -> SimEncoder {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let v = param.val().detach();
            let n = v.shape().num_elements();
            self.0.push(v.reshape([n]));
        }
    }
    struct Blend {
        online: std::vec::IntoIter<Tensor<1>>,
        tau: f32,
    }
    impl ModuleMapper for Blend {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let online = self.online.next().expect("same module shape");
            let tau = self.tau;
            param.map(|t| {
                let shape = t.shape();
                (t.detach().mul_scalar(tau) + online.reshape(shape).mul_scalar(1.0 - tau))
                    .set_require_grad(false)
            })
        }
    }
    let mut c = Collect(Vec::new());
    online.visit(&mut c);
    target.map(&mut Blend {
        online: c.0.into_iter(),
        tau: tau as f32,
    })
}

/// Frame embeddings `[B, T, 1, D']` and tokens `[B * T, N, D]` of clips `[B, T, 3, S, S]`.
fn embed(
    encoder: &SimEncoder,
    clips: Tensor<5>,
    pooling: Pooling,
    keypoints: usize,
) -> (Tensor<4>, Tensor<3>) {
    let [b, t, c, h, w] = clips.dims();
    let tokens = encoder.forward(clips.reshape([b * t, c, h, w]));
    let [_, n, d] = tokens.dims();
    let emb = pool(tokens.clone().reshape([b, t, n, d]), pooling, keypoints);
    (emb, tokens)
}

/// Collapse statistics of the tokens and of the frame embeddings (as pooled for training)
/// of frames `eval`.
fn eval_stats(
    encoder: &SimEncoder,
    data: &ClipFrames,
    eval: &[usize],
    cfg: &EndToEndConfig,
    device: &Device,
) -> CollapseStats {
    let (mut tokens, mut pooled) = (Vec::new(), Vec::new());
    let (mut d, mut dp) = (1, 1);
    for chunk in eval.chunks(64) {
        let x = data.frames(chunk, device).unsqueeze_dim::<5>(1);
        let (emb, tok) = embed(encoder, x, cfg.pooling, cfg.encoder.keypoints);
        d = tok.dims()[2];
        dp = emb.dims()[3];
        tokens.extend(tok.into_data().try_into_vec::<f32>().expect("f32"));
        pooled.extend(emb.into_data().try_into_vec::<f32>().expect("f32"));
    }
    CollapseStats {
        tokens: embedding_stats(&tokens, d),
        frames: embedding_stats(&pooled, dp),
    }
}

/// Held-out losses of the current encoder and model (`lam train`'s fixed validation batches).
fn validate(
    lam_cfg: &LamConfig,
    cfg: &EndToEndConfig,
    model: &LatentActionModel,
    encoder: &SimEncoder,
    data: &ClipFrames,
    device: &Device,
) -> Result<Map<String, Value>> {
    lam_model::train::validate_batches(lam_cfg, model, data.val.len(), |idx| {
        let x = data.batch(&data.val, idx, device);
        Ok((
            embed(encoder, x, cfg.pooling, cfg.encoder.keypoints).0,
            None,
        ))
    })
}

/// Draws every lazily initialised parameter of `module` now (burn draws a parameter's
/// initial value at its first use), so that the draws happen while the caller holds the
/// generator's lock, not whenever the module is first run.
fn materialize<M: Module>(module: M) -> M {
    struct Touch;
    impl ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
    module
}

/// The latent action model a run starts from: as `lam_model::train::init_model`, with every
/// draw made under the generator's lock.
pub fn initial_model(lam_cfg: &LamConfig, device: &Device) -> LatentActionModel {
    let _guard = lam_model::train::rng_lock();
    device.seed(lam_cfg.train.seed);
    materialize(lam_model::optim::stable_param_ids(LatentActionModel::new(
        lam_cfg, device,
    )))
}

/// The encoder a run starts from: `init`'s weights, or a fresh one drawn from `seed`.
pub fn initial_encoder(cfg: &EndToEndConfig, seed: u64, device: &Device) -> Result<SimEncoder> {
    let encoder = match &cfg.init {
        Some(path) => crate::sim::load_checkpoint(path, device)?.0,
        None => {
            let _guard = lam_model::train::rng_lock();
            device.seed(seed ^ 0xE2E0);
            materialize(SimEncoder::new(&cfg.encoder, device))
        }
    };
    Ok(lam_model::optim::stable_param_ids(encoder))
}

/// With `init`, takes the encoder's shape from that checkpoint; returns the normalisation
/// frames must be prepared with (the checkpoint's, else ImageNet's).
pub fn resolve_init(cfg: &mut EndToEndConfig) -> Result<Normalization> {
    let Some(init) = &cfg.init else {
        return Ok(Normalization::IMAGENET);
    };
    let meta: SimCheckpointMeta = crate::sim::read_meta(init)?;
    cfg.encoder = meta.config;
    Ok(meta.norm)
}

/// Checks the stage-1 config against end-to-end training and `data`.
fn check(lam_cfg: &LamConfig, cfg: &EndToEndConfig, data: &ClipFrames) -> Result<()> {
    lam_cfg.validate()?;
    cfg.validate()?;
    let m = &lam_cfg.model;
    ensure!(
        m.conditioning == Conditioning::Latent,
        "end-to-end training learns latent actions from video: model.conditioning must be \
         \"latent\""
    );
    ensure!(
        m.standardize,
        "end-to-end training standardises the embeddings and keeps running statistics in the \
         model: model.standardize must be true"
    );
    ensure!(
        m.standardize_scale == lam_model::config::TokenScale::Channel,
        "end-to-end training standardises each channel by its batch statistics: \
         model.standardize_scale must be \"channel\""
    );
    ensure!(
        m.embed_dim == cfg.embed_dim() && m.grid == [1, 1] && m.frames == data.frames_per_clip,
        "the model expects clips of {} frames of grid {:?} x {} channels, but the encoder \
         gives {} frames of [1, 1] x {}",
        m.frames,
        m.grid,
        m.embed_dim,
        data.frames_per_clip,
        cfg.embed_dim()
    );
    ensure!(
        data.size == cfg.encoder.image_size,
        "frames are {s}x{s} but the encoder takes {e}x{e}",
        s = data.size,
        e = cfg.encoder.image_size
    );
    ensure!(!data.train.is_empty(), "no training clips");
    ensure!(
        !data.val.is_empty(),
        "no validation clips: raise the validation share or give more items"
    );
    Ok(())
}

/// The networks one step reads: the latent action model, the online encoder, the EMA target
/// and the frozen initial encoder (the last two read by their guards only).
#[derive(Clone, Copy)]
pub struct Nets<'a> {
    pub model: &'a LatentActionModel,
    pub encoder: &'a SimEncoder,
    pub target: &'a SimEncoder,
    pub frozen: &'a SimEncoder,
}

/// What one step's forward pass gives.
pub struct StepForward {
    /// The latent action model's loss terms on the standardised embeddings.
    pub out: lam_model::lam::StepOutput,
    /// The guard's weighted term.
    pub guard: Tensor<1>,
    /// The batch's per-channel embedding mean and std `[D']`.
    pub batch_mean: Tensor<1>,
    pub batch_std: Tensor<1>,
}

/// The forward pass of one training step on clips `x` `[B, T, 3, S, S]` (module docs, steps
/// 1-4): `sigreg_dirs` `[D', M]` are the step's SIGReg directions (with the `sigreg` guard),
/// `(tk, wk)` the quadrature points and weights of [`sigreg_knots`]. `lam bench e2e` runs it
/// too, for the parity check against its PyTorch twin.
pub fn step_forward(
    lam_cfg: &LamConfig,
    cfg: &EndToEndConfig,
    nets: Nets,
    x: Tensor<5>,
    noise: &lam_model::lam::StepNoise,
    sigreg_dirs: Option<Tensor<2>>,
    (tk, wk): (&Tensor<1>, &Tensor<1>),
) -> StepForward {
    let [b, t, c, h, w] = x.dims();
    let device = x.device();
    let (emb, tokens) = embed(nets.encoder, x.clone(), cfg.pooling, cfg.encoder.keypoints);
    let (emb, batch_mean, batch_std) = standardize(emb);
    let dp = emb.dims()[3];
    let targets = (cfg.guard == Guard::Ema).then(|| {
        let next = x.clone().slice(s![.., 1..t, .., .., ..]);
        standardize(embed(nets.target, next, cfg.pooling, cfg.encoder.keypoints).0)
            .0
            .detach()
    });
    let out = nets
        .model
        .forward_loss_to(lam_cfg, emb.clone(), targets, None, noise);
    let guard = match (cfg.guard, sigreg_dirs) {
        (Guard::Sigreg, Some(dirs)) => {
            sigreg(emb.reshape([b * t, dp]), dirs, tk.clone(), wk.clone())
                .mul_scalar(cfg.sigreg_weight)
        }
        (Guard::Sigreg, None) => panic!("the sigreg guard needs the step's directions"),
        (Guard::Distill, _) => {
            let reference = nets.frozen.forward(x.reshape([b * t, c, h, w])).detach();
            let diff = tokens - reference;
            (diff.clone() * diff).mean().mul_scalar(cfg.distill_weight)
        }
        (Guard::Ema | Guard::None, _) => Tensor::<1>::zeros([1], &device),
    };
    StepForward {
        out,
        guard,
        batch_mean,
        batch_std,
    }
}

/// Trains (or resumes) an end-to-end run; see the module docs. `lam_cfg.model` must say one
/// embedding of [`EndToEndConfig::embed_dim`] channels per frame and the clips' length.
pub fn train_end_to_end(
    lam_cfg: &LamConfig,
    cfg: &EndToEndConfig,
    data: &ClipFrames,
    device: &Device,
    run: &EndToEndRun,
) -> Result<EndToEndSummary> {
    let mut cfg = cfg.clone();
    resolve_init(&mut cfg)?;
    check(lam_cfg, &cfg, data)?;
    let dir = &run.dir;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let resume_from = checkpoint::prepare_run(dir, run.resume, run.force)?;
    let ad = device.clone().autodiff();
    let total = lam_cfg.train.steps;
    let mut model = initial_model(lam_cfg, &ad);
    let built = lam_model::optim::build(&model, &lam_cfg.optim, total)?;
    let (mut optimizer, mut scheduler) = (built.optimizer, built.scheduler);
    // Each copy drawn (or loaded) apart: a clone shares its parameters' state, and taking
    // the gradient off a clone would take it off the encoder too.
    let fresh = || initial_encoder(&cfg, lam_cfg.train.seed, &ad);
    let initial = fresh()?.no_grad();
    let mut encoder = fresh()?;
    let frozen = fresh()?.no_grad();
    let mut target = fresh()?.no_grad();
    let mut enc_opt: ModuleOptimizer = AdamWConfig::new()
        .with_weight_decay(cfg.encoder_weight_decay as f32)
        .init();
    let mut start = 0;
    let mut code_last_used = vec![0usize; lam_cfg.regularizer.codebook_size];
    let dp = cfg.embed_dim();
    let mut running = Running::new(dp);
    if let Some(ckpt) = &resume_from {
        let state: TrainState = checkpoint::load_state(ckpt)?;
        let e2e: EndToEndState = read_json(&ckpt.join(STATE_FILE))?;
        ensure!(
            state.config == *lam_cfg && e2e.config == cfg,
            "{}: the checkpoint was made with other settings; resume with the run's own",
            ckpt.display()
        );
        // The checkpoint's model carries the running statistics; training standardises with
        // each batch's own, so the training copy keeps the identity.
        model = checkpoint::load_weights(model, &ckpt.join("model.safetensors"))?
            .with_token_stats(&vec![0.0; dp], &vec![1.0; dp]);
        running = e2e.running.clone();
        (optimizer, scheduler) = checkpoint::load_optim(ckpt, optimizer, scheduler)?;
        encoder = checkpoint::load_weights(encoder, &ckpt.join(ENCODER_WEIGHTS))?;
        target = checkpoint::load_weights(target, &ckpt.join(TARGET_WEIGHTS))?.no_grad();
        enc_opt = enc_opt
            .load(ckpt.join(ENCODER_OPTIMIZER))
            .map_err(|e| anyhow::anyhow!("cannot load the encoder's optimizer state: {e:?}"))?;
        start = state.step;
        if !state.code_last_used.is_empty() {
            code_last_used = state.code_last_used;
        }
    } else {
        lam_data::shards::write_atomic(&dir.join("config.toml"), lam_cfg.to_toml()?.as_bytes())?;
        lam_data::shards::write_atomic(
            &dir.join(CONFIG_FILE),
            serde_json::to_string_pretty(&cfg)?.as_bytes(),
        )?;
        lam_data::shards::write_atomic(
            &dir.join(lam_model::train::RUN_FILE),
            serde_json::to_string_pretty(&json!({"frames": run.source}))?.as_bytes(),
        )?;
    }
    let mut log = lam_data::MetricsLog::open(dir, resume_from.as_ref().map(|_| start))?;

    // Fixed held-out frames for the collapse statistics: spread over the validation clips.
    let mut eval: Vec<usize> = data.val.iter().flatten().copied().collect();
    eval.sort_unstable();
    eval.dedup();
    let stride = eval.len().div_ceil(cfg.eval_frames.max(1)).max(1);
    let eval: Vec<usize> = eval.into_iter().step_by(stride).collect();
    let before = eval_stats(&initial.valid(), data, &eval, &cfg, device);
    let probe_set = probe_set(
        run.probe.as_ref(),
        run.probe_frames,
        cfg.encoder.image_size,
        &run.norm,
    )?;
    let probe = |enc: &SimEncoder| -> Result<Option<ProbeReport>> {
        match (&run.probe, &probe_set) {
            (Some(p), Some(set)) => Ok(Some(probe_encoder(
                enc,
                set,
                p,
                cfg.encoder.keypoints,
                None,
                device,
            )?)),
            _ => Ok(None),
        }
    };
    let probe_before = probe(&initial.valid())?;
    if start == 0 {
        log.write(&json!({"step": 0, "split": "eval", "stats": before}))?;
    }

    let (tk, wk) = sigreg_knots(cfg.sigreg_knots, cfg.sigreg_t_max);
    let k = tk.len();
    let tk = Tensor::<1>::from_data(TensorData::new(tk, [k]), &ad);
    let wk = Tensor::<1>::from_data(TensorData::new(wk, [k]), &ad);
    let warm = lam_model::optim::warmup_steps_at_least_one(cfg.warmup_fraction, total);
    let end = run.stop_after.map_or(total, |n| (start + n).min(total));
    let bar = lam_model::train::progress_bar(total, start, run.progress);
    let (b, t) = (lam_cfg.train.batch_size, lam_cfg.model.frames);
    let scalar = |x: &Tensor<1>| x.clone().into_scalar::<f32>() as f64;
    let (mut last, mut last_pred, mut last_guard) = (f64::NAN, f64::NAN, f64::NAN);
    let mut collapse = None;
    let mut kept: Option<usize> = None;
    let mut last_val = None;
    let started = Instant::now();
    let mut step_seconds = Vec::with_capacity(end - start);
    for step in start..end {
        let step_started = Instant::now();
        let idx = batch_indices(lam_cfg.train.seed, step, b, data.train.len());
        let x = data.batch(&data.train, &idx, &ad);
        let noise = step_noise(lam_cfg, step, b * (t - 1));
        let sigreg_dirs = (cfg.guard == Guard::Sigreg).then(|| {
            let mut rng = step_rng(lam_cfg.train.seed, step, 7);
            let dirs = directions(&mut rng, dp, cfg.sigreg_directions);
            Tensor::from_data(TensorData::new(dirs, [dp, cfg.sigreg_directions]), &ad)
        });
        let nets = Nets {
            model: &model,
            encoder: &encoder,
            target: &target,
            frozen: &frozen,
        };
        let StepForward {
            out,
            guard,
            batch_mean,
            batch_std,
        } = step_forward(lam_cfg, &cfg, nets, x, &noise, sigreg_dirs, (&tk, &wk));
        let host = |v: Tensor<1>| v.detach().into_data().try_into_vec::<f32>().expect("f32");
        running.update(&host(batch_mean), &host(batch_std), step == 0);
        let loss = out.terms.total.clone() + guard.clone();
        last = scalar(&loss);
        if !last.is_finite() {
            bail!(
                "non-finite loss at step {step}; the last good checkpoint is kept in {}",
                checkpoint::checkpoints_dir(dir).display()
            );
        }
        last_pred = scalar(&out.terms.pred);
        last_guard = scalar(&guard);
        let log_now = (step + 1) % lam_cfg.train.log_every.max(1) == 0 || step + 1 == end;
        let named = log_now.then(|| out.terms.named());
        let vq_inputs: Vec<f32> = match &out.vq_inputs {
            Some(v) => v
                .clone()
                .detach()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32"),
            None => Vec::new(),
        };
        let lr = scheduler.step();
        let enc_lr = lam_model::optim::warmup_cosine_lr(cfg.encoder_lr, warm, total, 0.1, step);
        let mut grads = loss.backward();
        let lam_grads = GradientsParams::from_module(&mut grads, &model);
        let enc_grads = GradientsParams::from_module(&mut grads, &encoder);
        model = optimizer.step(lr.clone(), model, lam_grads);
        encoder = enc_opt.step(enc_lr, encoder, enc_grads);
        if cfg.guard == Guard::Ema {
            target = ema_update(target, &encoder, cfg.ema_decay);
        }
        if lam_cfg.regularizer.kind == RegularizerKind::Vq {
            for &c in &out.codes {
                code_last_used[c] = step + 1;
            }
            (model, _) =
                reset_dead_codes(model, lam_cfg, step + 1, &mut code_last_used, &vq_inputs);
        }
        let _ = device.sync();
        step_seconds.push(step_started.elapsed().as_secs_f64());
        bar.inc(1);
        if let Some(named) = named {
            let mut rec: Map<String, Value> = named
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            rec.insert("step".into(), json!(step + 1));
            rec.insert("split".into(), json!("train"));
            rec.insert("guard".into(), json!(last_guard));
            rec.insert("loss".into(), json!(last));
            rec.insert("lr_adamw".into(), json!(lr.base()));
            rec.insert("lr_encoder".into(), json!(enc_lr));
            log.write(&Value::Object(rec))?;
            bar.set_message(format!(
                "loss {last:.4} pred {last_pred:.4} guard {last_guard:.4}"
            ));
        }
        let done = step + 1;
        let ckpt_now = lam_cfg.train.checkpoint_every > 0
            && done % lam_cfg.train.checkpoint_every == 0
            || done == end;
        if !ckpt_now {
            continue;
        }
        let (mean, std) = running.host();
        let deployed = model.valid().with_token_stats(&mean, &std);
        let stats = eval_stats(&encoder.valid(), data, &eval, &cfg, device);
        let mut val = validate(lam_cfg, &cfg, &deployed, &encoder.valid(), data, device)?;
        log.write(&json!({"step": done, "split": "eval", "stats": stats}))?;
        val.insert("step".into(), json!(done));
        val.insert("split".into(), json!("val"));
        log.write(&Value::Object(val.clone()))?;
        last_val = val.get("pred").and_then(|v| v.as_f64());
        if let Some(metric) = collapse_metric(&cfg.collapse, &stats, &before) {
            bar.suspend(|| {
                tracing::warn!(
                    "embedding collapse at step {done}: {metric}{}",
                    if run.stop_on_collapse {
                        "; stopping (--stop-on-collapse) with the last checkpoint before it"
                    } else {
                        " (--stop-on-collapse stops here and keeps the last checkpoint before it)"
                    }
                )
            });
            if collapse.is_none() {
                collapse = Some(crate::pretrain::Collapse { step: done, metric });
            }
            if run.stop_on_collapse {
                kept = Some(match checkpoint::latest(dir)? {
                    // The model of that checkpoint stays the run's latest.
                    Some(ckpt) => {
                        encoder = checkpoint::load_weights(encoder, &ckpt.join(ENCODER_WEIGHTS))?;
                        checkpoint::load_state(&ckpt)?.step
                    }
                    None => {
                        encoder = initial.clone();
                        0
                    }
                });
                break;
            }
        }
        let state = TrainState {
            step: done,
            seed: lam_cfg.train.seed,
            code_last_used: code_last_used.clone(),
            config: lam_cfg.clone(),
        };
        checkpoint::save_with(
            dir,
            &deployed,
            &optimizer,
            &scheduler,
            &state,
            lam_cfg.train.keep_checkpoints,
            |tmp| {
                checkpoint::save_weights(&encoder, &tmp.join(ENCODER_WEIGHTS))?;
                checkpoint::save_weights(&target, &tmp.join(TARGET_WEIGHTS))?;
                enc_opt
                    .save(tmp.join(ENCODER_OPTIMIZER))
                    .map_err(|e| anyhow::anyhow!("cannot write the encoder's optimizer: {e:?}"))?;
                let e2e = EndToEndState {
                    step: done,
                    config: cfg.clone(),
                    running: running.clone(),
                };
                fs::write(tmp.join(STATE_FILE), serde_json::to_string_pretty(&e2e)?)?;
                Ok(())
            },
        )?;
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let trained = encoder.valid();
    let after = eval_stats(&trained, data, &eval, &cfg, device);
    let probe_after = probe(&trained)?;
    if let Some(p) = &probe_after {
        log.write(&json!({"step": kept.unwrap_or(end), "split": "probe", "probe": p}))?;
    }
    let enc_dir = dir.join(ENCODER_DIR);
    let summary = EndToEndSummary {
        steps_done: collapse
            .as_ref()
            .filter(|_| kept.is_some())
            .map_or(end, |c| c.step),
        resumed_from: start,
        train_clips: data.train.len(),
        val_clips: data.val.len(),
        frames: data.frame_count(),
        seconds,
        steps_per_sec: (end - start) as f64 / seconds.max(1e-9),
        step_seconds,
        final_loss: last,
        final_pred: last_pred,
        final_guard: last_guard,
        val_pred: last_val,
        before,
        after,
        collapse,
        kept_step: kept.unwrap_or(end),
        probe_before,
        probe_after,
        encoder: enc_dir.clone(),
    };
    let meta = SimCheckpointMeta {
        architecture: ARCHITECTURE.into(),
        config: cfg.encoder.clone(),
        norm: run.norm,
        pretrain: json!({"end_to_end": &cfg, "summary": &summary}),
    };
    crate::sim::save_checkpoint(&enc_dir, &trained, &meta)?;
    if let Some(ckpt) = checkpoint::latest(dir)? {
        let mut figures = vec![
            ("steps".to_string(), summary.steps_done.to_string()),
            (
                "final prediction loss".to_string(),
                format!("{last_pred:.5}"),
            ),
        ];
        if let Some(v) = last_val {
            figures.push(("validation prediction loss".into(), format!("{v:.5}")));
        }
        lam_model::train::export_model(dir, &ckpt, &figures)?;
    }
    lam_data::shards::write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// The end-to-end settings a run was started with (`None`: `dir` holds no end-to-end run).
pub fn run_config(dir: &Path) -> Result<Option<EndToEndConfig>> {
    let path = dir.join(CONFIG_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_json(&path).map(Some)
}

/// What an end-to-end run did, as `lam train --frames` prints it.
pub fn report(s: &EndToEndSummary) -> String {
    let mut out = format!(
        "trained {} steps end to end ({:.2} steps/s, {:.0} s) on {} clips ({} held out, {} \
         frames); final loss {:.5} (pred {:.5}, guard {:.5}){}\n",
        s.steps_done,
        s.steps_per_sec,
        s.seconds,
        s.train_clips,
        s.val_clips,
        s.frames,
        s.final_loss,
        s.final_pred,
        s.final_guard,
        s.val_pred
            .map(|v| format!(", val pred {v:.5}"))
            .unwrap_or_default()
    );
    for (name, st) in [("before", &s.before), ("after", &s.after)] {
        out += &format!(
            "  {name}: tokens std {:.4} rank {:.2}; frame embedding std {:.4} rank {:.2}\n",
            st.tokens.mean_std,
            st.tokens.effective_rank,
            st.frames.mean_std,
            st.frames.effective_rank
        );
    }
    match &s.collapse {
        Some(c) => out += &format!("  collapse at step {}: {}\n", c.step, c.metric),
        None => out += "  no collapse seen\n",
    }
    for (name, p) in [("before", &s.probe_before), ("after", &s.probe_after)] {
        if let Some(p) = p {
            out += &format!("  {}\n", crate::probe::probe_line(name, p));
        }
    }
    out += &format!("encoder: {} (step {})", s.encoder.display(), s.kept_step);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::Encoder;
    use crate::pretrain::synthetic_frames;

    const T: usize = 4;

    /// Six runs of ten 16 x 16 frames of moving shapes; the last run held out; every window
    /// of four frames a clip.
    fn tiny_data() -> ClipFrames {
        let f = synthetic_frames(6, 10, 16, &Normalization::IMAGENET, 1);
        let (mut train, mut val) = (Vec::new(), Vec::new());
        for r in 0..6 {
            for s0 in 0..=10 - T {
                let ids: Vec<usize> = (r * 10 + s0..r * 10 + s0 + T).collect();
                if r == 5 {
                    val.push(ids)
                } else {
                    train.push(ids)
                }
            }
        }
        ClipFrames {
            size: 16,
            frames_per_clip: T,
            pixels: f.data,
            train,
            val,
        }
    }

    fn tiny_configs(guard: Guard, steps: usize) -> (LamConfig, EndToEndConfig) {
        let cfg = EndToEndConfig {
            encoder: SimEncoderConfig {
                image_size: 16,
                patch_size: 8,
                dim: 16,
                depth: 1,
                heads: 2,
                keypoints: 0,
                ..SimEncoderConfig::default()
            },
            guard,
            sigreg_directions: 16,
            eval_frames: 16,
            ..EndToEndConfig::default()
        };
        let lam = LamConfig::preset("tiny")
            .unwrap()
            .with_overrides(&[
                format!("train.steps={steps}"),
                "train.batch_size=4".into(),
                "train.checkpoint_every=3".into(),
                "train.log_every=1".into(),
                "train.val_batches=1".into(),
                "model.embed_dim=16".into(),
                "model.grid=[1, 1]".into(),
                format!("model.frames={T}"),
                "model.latent_dim=4".into(),
                "model.wm_dim=16".into(),
                "model.wm_depth=1".into(),
                "model.wm_heads=2".into(),
                "model.idm_hidden=16".into(),
                "regularizer.kind=\"noisy\"".into(),
                "model.standardize=true".into(),
            ])
            .unwrap();
        (lam, cfg)
    }

    fn run_in(dir: &Path) -> EndToEndRun {
        EndToEndRun {
            dir: dir.to_path_buf(),
            resume: false,
            force: false,
            progress: false,
            stop_on_collapse: false,
            stop_after: None,
            probe: None,
            probe_frames: None,
            norm: Normalization::IMAGENET,
            source: "synthetic".into(),
        }
    }

    /// The largest difference between two safetensors files' tensors of the same names.
    fn largest_difference(a: &Path, b: &Path) -> f32 {
        let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        let (a, b) = (
            safetensors::SafeTensors::deserialize(&a).unwrap(),
            safetensors::SafeTensors::deserialize(&b).unwrap(),
        );
        let floats = |v: &[u8]| -> Vec<f32> {
            v.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let mut worst = 0.0f32;
        for (name, x) in a.tensors() {
            let y = b.tensor(&name).unwrap();
            for (p, q) in floats(x.data()).iter().zip(floats(y.data())) {
                worst = worst.max((p - q).abs());
            }
        }
        worst
    }

    #[test]
    fn ema_update_moves_the_target_a_share_of_the_way() {
        let device = Device::flex();
        let cfg = tiny_configs(Guard::Ema, 1).1.encoder;
        // The backend's generator is shared with the other tests' model initialisations.
        let _lock = lam_model::train::rng_lock();
        device.seed(1);
        let a = SimEncoder::new(&cfg, &device);
        device.seed(2);
        let b = SimEncoder::new(&cfg, &device);
        let host = |m: &SimEncoder| m.pos_embed.val().into_data().try_into_vec::<f32>().unwrap();
        let (va, vb) = (host(&a), host(&b));
        let blended = host(&ema_update(a, &b, 0.75));
        for i in 0..va.len() {
            let want = 0.75 * va[i] + 0.25 * vb[i];
            assert!((blended[i] - want).abs() < 1e-6, "{} vs {want}", blended[i]);
        }
    }

    #[test]
    fn end_to_end_trains_writes_a_usable_encoder_and_resumes_exactly() {
        let device = Device::flex();
        let data = tiny_data();
        let (lam, cfg) = tiny_configs(Guard::Sigreg, 6);
        let tmp = std::env::temp_dir().join(format!("lam-e2e-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let whole = train_end_to_end(&lam, &cfg, &data, &device, &run_in(&tmp.join("a"))).unwrap();
        assert_eq!(whole.steps_done, 6);
        assert!(whole.final_loss.is_finite() && whole.final_guard > 0.0);
        assert!(whole.val_pred.is_some_and(|v| v.is_finite()));
        // The encoder trained (its frozen and target copies must not take its gradient away).
        assert_ne!(whole.after.tokens.mean_std, whole.before.tokens.mean_std);

        // Interrupted after 3 steps and resumed: the same weights, byte for byte.
        let mut first = run_in(&tmp.join("b"));
        first.stop_after = Some(3);
        train_end_to_end(&lam, &cfg, &data, &device, &first).unwrap();
        let mut rest = run_in(&tmp.join("b"));
        rest.resume = true;
        let resumed = train_end_to_end(&lam, &cfg, &data, &device, &rest).unwrap();
        assert_eq!(resumed.resumed_from, 3);
        // A time for each step this run took, and for those alone.
        assert_eq!(whole.step_seconds.len(), 6);
        assert_eq!(resumed.step_seconds.len(), 3);
        let steps: f64 = whole.step_seconds.iter().sum();
        assert!(whole.step_seconds.iter().all(|&s| s > 0.0) && steps <= whole.seconds);
        assert!((resumed.final_loss - whole.final_loss).abs() <= 1e-6);
        // (To the last bits the optimiser's orthogonalisation leaves, as for `lam train`.)
        for file in ["model.safetensors", ENCODER_WEIGHTS] {
            let path = |run: &str| tmp.join(run).join("checkpoints/step-0000006").join(file);
            let worst = largest_difference(&path("a"), &path("b"));
            assert!(worst <= 1e-6, "{file} differs by {worst}");
        }

        // The run opens as a stage-1 run, and its encoder, loaded for that run, embeds frames
        // as training did (mean token, one per frame).
        let (_, model, _) = lam_model::checkpoint::load_run(&tmp.join("a"), &device).unwrap();
        let enc = Encoder::load(&whole.encoder, &device)
            .unwrap()
            .for_run([1, 1], 16, 16, &tmp.join("a"))
            .unwrap();
        let x = data.batch(&data.val, &[0], &device);
        let via_encoder = enc.encode(x.clone());
        let (trained, _) = crate::sim::load_checkpoint(&whole.encoder, &device).unwrap();
        let (direct, _) = embed(&trained, x, Pooling::Mean, 0);
        let gap = (via_encoder.clone() - direct)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(
            gap < 1e-6,
            "encoder folder and training embed differently: {gap}"
        );
        let out = model.forward_loss_with(&lam, via_encoder, None, &Default::default());
        assert!(out.terms.pred.into_scalar::<f32>().is_finite());

        // A folder holding this run is refused without --resume or --force.
        let err = train_end_to_end(&lam, &cfg, &data, &device, &run_in(&tmp.join("a")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("already holds a run"), "{err}");
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_collapse_is_named_and_stop_on_collapse_keeps_the_encoder_before_it() {
        let device = Device::flex();
        let data = tiny_data();
        let (lam, mut cfg) = tiny_configs(Guard::None, 6);
        // A threshold no encoder meets: every check fails, the first at step 3.
        cfg.collapse.std_ratio = 100.0;
        let tmp = std::env::temp_dir().join(format!("lam-e2e-collapse-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let warned = train_end_to_end(&lam, &cfg, &data, &device, &run_in(&tmp.join("a"))).unwrap();
        let c = warned.collapse.as_ref().expect("collapse recorded");
        assert_eq!(c.step, 3);
        assert!(c.metric.contains("std"), "{}", c.metric);
        assert_eq!((warned.steps_done, warned.kept_step), (6, 6));

        let mut stopping = run_in(&tmp.join("b"));
        stopping.stop_on_collapse = true;
        let stopped = train_end_to_end(&lam, &cfg, &data, &device, &stopping).unwrap();
        // No checkpoint came before step 3: the initial encoder is the one written.
        assert_eq!((stopped.steps_done, stopped.kept_step), (3, 0));
        assert_eq!(stopped.after, stopped.before);
        let _ = fs::remove_dir_all(&tmp);
    }

    #[test]
    fn settings_that_cannot_train_end_to_end_are_refused() {
        let data = tiny_data();
        let (lam, cfg) = tiny_configs(Guard::Sigreg, 2);
        let raw = lam
            .clone()
            .with_overrides(&["model.standardize=false".into()])
            .unwrap();
        let err = check(&raw, &cfg, &data).unwrap_err().to_string();
        assert!(err.contains("standardize"), "{err}");
        let wide = lam.with_overrides(&["model.embed_dim=32".into()]).unwrap();
        let err = check(&wide, &cfg, &data).unwrap_err().to_string();
        assert!(err.contains("16"), "{err}");
        assert!("bogus".parse::<Guard>().is_err());
    }
}
