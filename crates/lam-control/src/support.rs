//! Support critic: whether the unlabeled video ever shows a predicted transition.
//!
//! A latent action says what happened, not what was intended: pushed into a wall, the agent
//! does not move and the IDM labels the transition "no motion". The world model therefore
//! never sees a latent that moves the agent through a wall, and what it predicts for one is
//! an extrapolation, usually the motion itself. A planner that searches robot actions through
//! a controller (or latents directly) finds such latents and plans straight through walls.
//!
//! The critic learns from the same video which changes happen in which frames. It is a
//! classifier `c(s, delta)` of a pooled model-space frame s_t and the change to the next
//! frame `delta = s_t+1 - s_t`, trained to tell a real transition from the same frame with
//! the change of another, random transition: with balanced classes its logit estimates
//! `log p(delta | s) - log p(delta)`, near zero where the frame does not constrain the change
//! (open floor), very negative where the change never happens in that frame (a motion into
//! a wall). It reads frames only, so it serves latent-action and action-conditioned models
//! alike. The sampling planners add `weight * mean_h max(0, -c(s_h, s_h+1 - s_h) - margin)`
//! over the predicted steps to each candidate's cost: the nats by which its predicted changes
//! are rarer in the frames they start from than at random, beyond a margin that forgives the
//! merely rare (`lam plan eval --support DIR --support-weight W --support-margin M`).
//!
//! Frames are standardised per channel with the training set's mean and std; changes by one
//! scale for all channels (their RMS), since channels that never change in the video (a wall)
//! would otherwise turn a world model's slightest drift in them into a huge input. Training
//! adds Gaussian noise of `noise` (in those standardised units) to both inputs, so that the
//! small errors of predicted frames do not read as unseen changes. Both scalings are stored
//! with the weights.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::softplus;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use lam_data::ShardSet;
use lam_model::LatentActionModel;
use lam_model::idm::Idm;

use crate::controller::{Mlp, MlpConfig, rows};
use crate::host;

/// Support critic training settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SupportConfig {
    /// Hidden width of the 3-layer GELU MLP. Default 256.
    pub hidden: usize,
    /// Optimiser steps. Default 3000.
    pub steps: usize,
    /// Real transitions per batch (each with one shuffled negative). Default 256.
    pub batch_size: usize,
    /// AdamW learning rate. Default 1e-3.
    pub lr: f64,
    /// AdamW weight decay. Default 0.01.
    pub weight_decay: f64,
    /// Std of the Gaussian noise added to the standardised inputs while training. Default 0.05.
    pub noise: f64,
    /// Seed. Default 0.
    pub seed: u64,
}

impl Default for SupportConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            steps: 3000,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 0.01,
            noise: 0.05,
            seed: 0,
        }
    }
}

/// Held-out metrics of a support critic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupportReport {
    pub train_transitions: usize,
    pub val_transitions: usize,
    /// Held-out binary cross-entropy (real vs shuffled changes; ln 2 = 0.693 is chance).
    pub val_loss: f64,
    /// Held-out accuracy of the sign of the logit (0.5 is chance).
    pub val_accuracy: f64,
    /// Mean planning penalty `max(0, -logit)` of real and of shuffled held-out pairs.
    pub penalty_real: f64,
    pub penalty_shuffled: f64,
    /// Fraction of shuffled held-out pairs with a penalty above 3 nats (changes the critic
    /// calls impossible in that frame) and the same for real pairs.
    pub impossible_shuffled: f64,
    pub impossible_real: f64,
    /// The real transitions of another shard set (`lam control support --check`).
    #[serde(default)]
    pub check: Option<SupportCheck>,
}

/// How a critic scores the real transitions of a shard set.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SupportCheck {
    pub transitions: usize,
    /// Mean penalty `max(0, -logit)`.
    pub penalty: f64,
    /// Fraction with a penalty above 3 nats.
    pub impossible: f64,
}

/// Scores real transitions `data` (penalties of real changes should stay near the held-out
/// ones; far above them the data's changes look unlike the training video's).
pub fn score(critic: &SupportCritic, data: &Pairs, device: &Device) -> SupportCheck {
    let all: Vec<usize> = (0..data.len()).collect();
    let f = rows(&data.frames, data.dim, &all, device);
    let delta = rows(&data.deltas, data.dim, &all, device);
    let pen = host(critic.penalty(f.clone(), f + delta, 0.0));
    let m = pen.len().max(1) as f64;
    SupportCheck {
        transitions: pen.len(),
        penalty: pen.iter().map(|&p| p as f64).sum::<f64>() / m,
        impossible: pen.iter().filter(|&&p| p > 3.0).count() as f64 / m,
    }
}

/// The critic and the standardisation of its inputs.
#[derive(Debug)]
pub struct SupportCritic {
    pub net: Mlp,
    /// Per-channel mean and std of the training frames and of their changes (D each; the
    /// changes' std is one value, their RMS std, repeated).
    pub frame_mean: Vec<f32>,
    pub frame_std: Vec<f32>,
    pub delta_mean: Vec<f32>,
    pub delta_std: Vec<f32>,
}

/// What a planner needs to penalise unsupported transitions.
#[derive(Clone, Copy, Debug)]
pub struct Support<'a> {
    pub critic: &'a SupportCritic,
    /// Weight of the mean penalty in the planning cost.
    pub weight: f32,
    /// Nats of rarity forgiven: each step's penalty is `max(0, -logit - margin)`, so that
    /// changes merely rarer in that frame than elsewhere (standing still on open floor, in
    /// video of random play) cost nothing and only the ones the video never shows do.
    pub margin: f32,
}

/// `(x - mean) / std` per channel of `x` `[M, D]`.
fn standardise(x: Tensor<2>, mean: &[f32], std: &[f32]) -> Tensor<2> {
    let device = x.device();
    let n = mean.len();
    let m = Tensor::<1>::from_data(TensorData::new(mean.to_vec(), [n]), &device).reshape([1, n]);
    let s = Tensor::<1>::from_data(TensorData::new(std.to_vec(), [n]), &device).reshape([1, n]);
    (x - m) / s
}

fn logits(net: &Mlp, c: &SupportCritic, frames: Tensor<2>, deltas: Tensor<2>) -> Tensor<1> {
    let f = standardise(frames, &c.frame_mean, &c.frame_std);
    let z = standardise(deltas, &c.delta_mean, &c.delta_std);
    let out = net.forward(Tensor::cat(vec![f, z], 1));
    let m = out.dims()[0];
    out.reshape([m])
}

impl SupportCritic {
    /// Width of the pooled frame it reads.
    pub fn frame_dim(&self) -> usize {
        self.frame_mean.len()
    }

    /// Logits `[M]` (estimated `log p(s' - s | s) - log p(s' - s)`) of transitions from pooled
    /// frames `[M, D]` to `next` `[M, D]`.
    pub fn logit(&self, frames: Tensor<2>, next: Tensor<2>) -> Tensor<1> {
        let delta = next - frames.clone();
        logits(&self.net, self, frames, delta)
    }

    /// Penalty `[M]`: `max(0, -logit - margin)`, the nats by which the change is rarer in that
    /// frame than at random, beyond `margin` (0 where it is at least that common).
    pub fn penalty(&self, frames: Tensor<2>, next: Tensor<2>, margin: f32) -> Tensor<1> {
        self.logit(frames, next)
            .neg()
            .sub_scalar(margin)
            .clamp_min(0.0)
    }
}

/// Transitions in pooled model space: frames s_t `[M, D]` and changes s_t+1 - s_t `[M, D]`,
/// row-major on host.
pub struct Pairs {
    pub frames: Vec<f32>,
    pub deltas: Vec<f32>,
    pub dim: usize,
}

impl Pairs {
    pub fn len(&self) -> usize {
        self.frames.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Every clip of a shard set pooled in the model's space (standardised as the world model
/// sees them when the model standardises its tokens): `[clips, T, D]` row-major on host.
pub(crate) fn pooled_clips(
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<Vec<f32>> {
    let idx = &data.index;
    let (t, d) = (idx.frames, idx.dim);
    let mut out = Vec::with_capacity(data.len() * t * d);
    for chunk in (0..data.len()).collect::<Vec<_>>().chunks(batch.max(1)) {
        let clips = Tensor::<4>::from_data(
            TensorData::new(data.batch(chunk), [chunk.len(), t, idx.tokens, d]),
            device,
        );
        let pooled = Idm::pool(lam.normalize(clips));
        out.extend(
            pooled
                .into_data()
                .try_into_vec::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:?}"))?,
        );
    }
    Ok(out)
}

/// [`pooled_clips`] of a shard set whose clips hold transitions (two frames or more), with
/// the clips' length T and width D.
pub(crate) fn pooled_transitions(
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<(Vec<f32>, usize, usize)> {
    let (t, d) = (data.index.frames, data.index.dim);
    ensure!(
        t >= 2,
        "{}: clips of {t} frame(s) hold no transitions",
        data.dir.display()
    );
    Ok((pooled_clips(lam, data, device, batch)?, t, d))
}

/// Every consecutive pair of frames of a shard set, pooled in the model's space
/// ([`pooled_clips`]).
pub fn pairs_of(
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<Pairs> {
    let (pooled, t, d) = pooled_transitions(lam, data, device, batch)?;
    let (mut frames, mut deltas) = (Vec::new(), Vec::new());
    for clip in pooled.chunks_exact(t * d) {
        for k in 0..t - 1 {
            let (from, to) = (&clip[k * d..(k + 1) * d], &clip[(k + 1) * d..(k + 2) * d]);
            frames.extend_from_slice(from);
            deltas.extend(to.iter().zip(from).map(|(b, a)| b - a));
        }
    }
    Ok(Pairs {
        frames,
        deltas,
        dim: d,
    })
}

/// Per-channel mean and std (floored at 1e-4) of rows of `dim` values.
fn mean_std(v: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let (mean, std) = channel_mean_std(v, dim);
    (mean, std.into_iter().map(|s| s.max(1e-4)).collect())
}

/// Per-channel mean and (population) std of rows of `dim` values.
pub(crate) fn channel_mean_std(v: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (v.len() / dim).max(1) as f64;
    let mut mean = vec![0f64; dim];
    for row in v.chunks_exact(dim) {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += *x as f64 / n;
        }
    }
    let mut var = vec![0f64; dim];
    for row in v.chunks_exact(dim) {
        for ((s, x), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (*x as f64 - m).powi(2) / n;
        }
    }
    (
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&s| s.sqrt() as f32).collect(),
    )
}

/// Binary cross-entropy of real transitions `idx` against the same frames with the changes
/// of `other` (softplus(-l_real) + softplus(l_shuffled), averaged), and both logits.
fn pair_loss(
    net: &Mlp,
    c: &SupportCritic,
    data: &Pairs,
    idx: &[usize],
    other: &[usize],
    noise: f64,
    device: &Device,
) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let f = rows(&data.frames, data.dim, idx, device);
    let z = rows(&data.deltas, data.dim, idx, device);
    let z_neg = rows(&data.deltas, data.dim, other, device);
    // Noise in standardised units, mapped back to each input's own scale.
    let jitter = |x: Tensor<2>, std: &[f32]| {
        if noise <= 0.0 {
            return x;
        }
        let n = std.len();
        let s = Tensor::<1>::from_data(TensorData::new(std.to_vec(), [n]), device).reshape([1, n]);
        let e = Tensor::<2>::random(x.dims(), Distribution::Normal(0.0, noise), device);
        x + e * s
    };
    let f = jitter(f, &c.frame_std);
    let real = logits(net, c, f.clone(), jitter(z, &c.delta_std));
    let shuffled = logits(net, c, f, jitter(z_neg, &c.delta_std));
    let loss =
        (softplus(real.clone().neg(), 1.0).mean() + softplus(shuffled.clone(), 1.0).mean()) * 0.5;
    (loss, real, shuffled)
}

/// Fits the critic on `train`'s transitions; reports on `val`'s.
pub fn fit(
    cfg: &SupportConfig,
    train: &Pairs,
    val: &Pairs,
    device: &Device,
) -> Result<(SupportCritic, SupportReport)> {
    ensure!(
        train.len() >= 2 && val.len() >= 2,
        "the support critic needs at least 2 training and 2 held-out transitions (got {} and {})",
        train.len(),
        val.len()
    );
    ensure!(
        train.dim > 0 && train.deltas.len() == train.frames.len() && val.dim == train.dim,
        "support critic: frames and changes disagree in shape"
    );
    ensure!(
        cfg.steps > 0 && cfg.batch_size > 0,
        "support critic: steps and batch_size must be positive"
    );
    let (frame_mean, frame_std) = mean_std(&train.frames, train.dim);
    let (delta_mean, delta_std) = mean_std(&train.deltas, train.dim);
    let rms = (delta_std.iter().map(|s| s * s).sum::<f32>() / delta_std.len() as f32).sqrt();
    let delta_std = vec![rms.max(1e-4); train.dim];
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut critic = SupportCritic {
        net: MlpConfig {
            d_in: 2 * train.dim,
            hidden: cfg.hidden,
            d_out: 1,
        }
        .init(&ad),
        frame_mean,
        frame_std,
        delta_mean,
        delta_std,
    };
    let mut net = critic.net.clone();
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let n = train.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut pos = n;
    for _ in 0..cfg.steps {
        let b = cfg.batch_size.min(n);
        if pos + b > n {
            order.shuffle(&mut rng);
            pos = 0;
        }
        let idx = &order[pos..pos + b];
        pos += b;
        let other: Vec<usize> = (0..b).map(|_| rng.random_range(0..n)).collect();
        let (loss, _, _) = pair_loss(&net, &critic, train, idx, &other, cfg.noise, &ad);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = opt.step(cfg.lr, net, grads);
    }
    critic.net = net.valid();
    // Held out: every real pair against a shuffled one (a fixed permutation).
    let all: Vec<usize> = (0..val.len()).collect();
    let mut other = all.clone();
    other.shuffle(&mut StdRng::seed_from_u64(cfg.seed ^ 0x5eed));
    let (loss, real, shuffled) = pair_loss(&critic.net, &critic, val, &all, &other, 0.0, device);
    let val_loss = loss.into_scalar::<f32>() as f64;
    ensure!(
        val_loss.is_finite(),
        "support critic loss became {val_loss}; lower the learning rate"
    );
    let (real, shuffled) = (host(real), host(shuffled));
    let m = real.len() as f64;
    let pen = |l: &f32| (-*l).max(0.0) as f64;
    let report = SupportReport {
        train_transitions: train.len(),
        val_transitions: val.len(),
        val_loss,
        val_accuracy: (real.iter().filter(|&&l| l > 0.0).count()
            + shuffled.iter().filter(|&&l| l <= 0.0).count()) as f64
            / (2.0 * m),
        penalty_real: real.iter().map(pen).sum::<f64>() / m,
        penalty_shuffled: shuffled.iter().map(pen).sum::<f64>() / m,
        impossible_shuffled: shuffled.iter().filter(|&&l| l < -3.0).count() as f64 / m,
        impossible_real: real.iter().filter(|&&l| l < -3.0).count() as f64 / m,
        check: None,
    };
    Ok((critic, report))
}

/// Saves a critic (weights in safetensors, standardisation and report in support.json).
pub fn save(
    critic: &SupportCritic,
    dir: &Path,
    report: &SupportReport,
    cfg: &SupportConfig,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    lam_model::checkpoint::save_weights(&critic.net, &dir.join("support.safetensors"))?;
    let meta = serde_json::json!({
        "frame_mean": critic.frame_mean, "frame_std": critic.frame_std,
        "delta_mean": critic.delta_mean, "delta_std": critic.delta_std,
        "config": cfg, "report": report,
    });
    lam_data::shards::write_atomic(
        &dir.join("support.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
}

/// Loads a critic saved by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<SupportCritic> {
    let meta_path = dir.join("support.json");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "cannot read {} (made by lam control support)",
                meta_path.display()
            )
        })?)
        .with_context(|| format!("malformed {}", meta_path.display()))?;
    let vec = |k: &str| -> Result<Vec<f32>> {
        let v: Vec<f32> = serde_json::from_value(meta[k].clone())
            .with_context(|| format!("{}: `{k}` is not a list of numbers", meta_path.display()))?;
        ensure!(
            !v.is_empty() && v.iter().all(|x| x.is_finite()),
            "{}: `{k}` is empty or not finite",
            meta_path.display()
        );
        Ok(v)
    };
    let (frame_mean, frame_std) = (vec("frame_mean")?, vec("frame_std")?);
    let (delta_mean, delta_std) = (vec("delta_mean")?, vec("delta_std")?);
    let d = frame_mean.len();
    ensure!(
        [frame_std.len(), delta_mean.len(), delta_std.len()] == [d, d, d],
        "{}: mean and std widths differ",
        meta_path.display()
    );
    let cfg: SupportConfig = serde_json::from_value(meta["config"].clone())
        .with_context(|| format!("{}: bad `config`", meta_path.display()))?;
    let net = MlpConfig {
        d_in: 2 * d,
        hidden: cfg.hidden,
        d_out: 1,
    }
    .init(device);
    let net = lam_model::checkpoint::load_weights(net, &dir.join("support.safetensors"))?;
    Ok(SupportCritic {
        net,
        frame_mean,
        frame_std,
        delta_mean,
        delta_std,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1-D corridor [0.4, 1] with a wall at x = 1: from x > 0.5 the agent cannot move right
    /// by more than 1 - x (about a quarter of shuffled changes are impossible).
    fn corridor(n: usize, seed: u64) -> Pairs {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut frames, mut deltas) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let x: f32 = rng.random_range(0.4..1.0);
            let want: f32 = rng.random_range(-0.5..0.5);
            frames.push(x);
            deltas.push(want.min(1.0 - x));
        }
        Pairs {
            frames,
            deltas,
            dim: 1,
        }
    }

    #[test]
    fn critic_penalises_a_motion_through_the_wall_and_not_in_the_open() {
        let dev = Device::flex();
        let cfg = SupportConfig {
            steps: 1500,
            hidden: 32,
            ..Default::default()
        };
        let (critic, report) = fit(&cfg, &corridor(4000, 1), &corridor(1000, 2), &dev).unwrap();
        assert!(report.val_accuracy > 0.55, "{report:?}");
        assert!(report.impossible_real < 0.01, "{report:?}");
        assert!(report.penalty_shuffled > report.penalty_real, "{report:?}");
        let at = |x: f32, dx: f32| {
            let f = Tensor::<2>::from_data(TensorData::new(vec![x], [1, 1]), &dev);
            let l = Tensor::<2>::from_data(TensorData::new(vec![x + dx], [1, 1]), &dev);
            critic.penalty(f, l, 0.0).into_scalar::<f32>()
        };
        // Against the wall, moving right by 0.4 never happens; in the open it is common.
        let blocked = at(0.95, 0.4);
        let open = at(0.45, 0.4);
        assert!(blocked > 2.0, "blocked {blocked}");
        assert!(open < 0.5, "open {open}");
        // Moving away from the wall is fine there.
        assert!(at(0.95, -0.4) < 0.5);

        let dir = tempfile::tempdir().unwrap();
        save(&critic, dir.path(), &report, &cfg).unwrap();
        let back = load(dir.path(), &dev).unwrap();
        let f = Tensor::<2>::from_data(TensorData::new(vec![0.95, 0.45], [2, 1]), &dev);
        let z = Tensor::<2>::from_data(TensorData::new(vec![1.35, 0.85], [2, 1]), &dev);
        let a = host(critic.penalty(f.clone(), z.clone(), 0.0));
        let b = host(back.penalty(f, z, 0.0));
        assert_eq!(a, b);
    }
}
