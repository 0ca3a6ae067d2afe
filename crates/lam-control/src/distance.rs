//! Goal distance: how many blocks the unlabeled video takes to get from one frame to another.
//!
//! The planning cost compares predicted frames with the goal frame: MSE in the model's
//! embedding. Where the straight line to the goal is blocked (`reach`'s middle wall, whose door
//! is elsewhere), that cost is lowest against the wall, and a planner whose horizon cannot
//! hold the whole detour stays there. The distance critic is a cost-to-go learned from the
//! same video the world model learned from, with no labels: a regression `d(s, g)` of the
//! number of frames between two frames s_i and s_j (i <= j) of one episode, from pairs drawn
//! with a gap uniform in `0..=max_gap`. Frames across a wall from each other are far apart in
//! the video even when they are close in the embedding, and frames near the door are nearer
//! to the other room than frames against the wall, so `d` slopes towards the door where the
//! embedding's distance does not. The sampling planners add `weight * d(s_h, g)` to each
//! predicted step's cost before the objective picks the final, best or mean step
//! (`lam control distance`, then `lam plan eval --distance DIR --distance-weight W`).
//!
//! Episodes are rebuilt from a shard set whose clips start at consecutive frames (`lam embed
//! --stride 1`): a clip continues the previous one when its first frame is the previous clip's
//! second. Frames are pooled in the model's space (standardised as the world model sees them)
//! and standardised per channel again with the training frames' mean and std.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::softplus;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use lam_data::ShardSet;
use lam_model::LatentActionModel;

use crate::controller::{Mlp, MlpConfig};
use crate::support::{host, mean_std, pooled_clips, standardise};

/// Distance critic training settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DistanceConfig {
    /// Hidden width of the 3-layer GELU MLP. Default 256.
    pub hidden: usize,
    /// Optimiser steps. Default 3000.
    pub steps: usize,
    /// Pairs per batch. Default 512.
    pub batch_size: usize,
    /// AdamW learning rate. Default 1e-3.
    pub lr: f64,
    /// AdamW weight decay. Default 0.01.
    pub weight_decay: f64,
    /// Largest gap between the two frames of a pair, in frames of the shards (blocks).
    /// Default 20.
    pub max_gap: usize,
    /// Seed. Default 0.
    pub seed: u64,
}

impl Default for DistanceConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            steps: 3000,
            batch_size: 512,
            lr: 1e-3,
            weight_decay: 0.01,
            max_gap: 20,
            seed: 0,
        }
    }
}

/// Pooled frames of whole episodes: `frames` `[M, dim]` row-major, `episodes` the index range
/// of each episode's frames in order.
pub struct Episodes {
    pub frames: Vec<f32>,
    pub dim: usize,
    pub episodes: Vec<std::ops::Range<usize>>,
}

impl Episodes {
    /// Frames in all episodes.
    pub fn len(&self) -> usize {
        self.frames.len() / self.dim.max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn frame(&self, i: usize) -> &[f32] {
        &self.frames[i * self.dim..(i + 1) * self.dim]
    }
}

/// The episodes of a shard set whose clips start at consecutive frames, pooled in the model's
/// space (see the module docs).
pub fn episodes_of(
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<Episodes> {
    let (t, d) = (data.index.frames, data.index.dim);
    ensure!(
        t >= 2,
        "{}: clips of {t} frame(s) hold no transitions",
        data.dir.display()
    );
    let pooled = pooled_clips(lam, data, device, batch)?;
    let clip = |c: usize| &pooled[c * t * d..(c + 1) * t * d];
    let same = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-4 * (1.0 + x.abs()))
    };
    let mut out = Episodes {
        frames: Vec::new(),
        dim: d,
        episodes: Vec::new(),
    };
    let mut start = 0;
    for c in 0..data.len() {
        let continues = c > 0
            && data.clip_id(c) == data.clip_id(c - 1)
            && same(&clip(c)[..d], &clip(c - 1)[d..2 * d]);
        if continues {
            // Only the new last frame.
            out.frames.extend_from_slice(&clip(c)[(t - 1) * d..]);
        } else {
            if c > 0 {
                out.episodes.push(start..out.len());
            }
            start = out.len();
            out.frames.extend_from_slice(clip(c));
        }
    }
    if data.len() > 0 {
        out.episodes.push(start..out.len());
    }
    let longest = out.episodes.iter().map(|r| r.len()).max().unwrap_or(0);
    ensure!(
        longest > t,
        "{}: no clip continues another (episodes of at most {longest} frames); the distance \
         critic needs clips that start at consecutive frames (lam embed --stride 1)",
        data.dir.display()
    );
    Ok(out)
}

/// The critic and the standardisation of its inputs.
#[derive(Debug)]
pub struct DistanceCritic {
    pub net: Mlp,
    /// Per-channel mean and std of the training frames.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// What a planner needs to add the distance to the goal to its cost.
#[derive(Clone, Copy, Debug)]
pub struct GoalDistance<'a> {
    pub critic: &'a DistanceCritic,
    /// Weight of the distance (in frames of the video) in each step's cost.
    pub weight: f32,
}

fn forward(net: &Mlp, c: &DistanceCritic, from: Tensor<2>, to: Tensor<2>) -> Tensor<1> {
    let a = standardise(from, &c.mean, &c.std);
    let b = standardise(to, &c.mean, &c.std);
    let out = softplus(net.forward(Tensor::cat(vec![a, b], 1)), 1.0);
    let m = out.dims()[0];
    out.reshape([m])
}

impl DistanceCritic {
    /// Width of the pooled frame it reads.
    pub fn frame_dim(&self) -> usize {
        self.mean.len()
    }

    /// Estimated frames `[M]` from pooled frames `[M, D]` to `goals` `[M, D]`.
    pub fn distance(&self, frames: Tensor<2>, goals: Tensor<2>) -> Tensor<1> {
        forward(&self.net, self, frames, goals)
    }
}

/// Held-out metrics of a distance critic.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistanceReport {
    pub train_episodes: usize,
    pub val_episodes: usize,
    /// Held-out mean absolute error in frames, over pairs drawn as in training.
    pub val_mae: f64,
    /// The same for the constant that predicts the training gaps' mean (what no information
    /// about the frames gives).
    pub val_mae_constant: f64,
    /// Held-out correlation of predicted and true gaps.
    pub val_correlation: f64,
}

/// `b` pairs `(i, j, j - i)` drawn from `data`: an episode in proportion to its frames, i
/// uniform in it, the gap uniform in `0..=max_gap` (clipped at the episode's end).
fn draw(data: &Episodes, rng: &mut StdRng, b: usize, max_gap: usize) -> Vec<(usize, usize, f32)> {
    let n = data.len();
    let owner: Vec<usize> = data
        .episodes
        .iter()
        .enumerate()
        .flat_map(|(e, r)| std::iter::repeat_n(e, r.len()))
        .collect();
    (0..b)
        .map(|_| {
            let i = rng.random_range(0..n);
            let end = data.episodes[owner[i]].end;
            let gap = rng.random_range(0..=max_gap).min(end - 1 - i);
            (i, i + gap, gap as f32)
        })
        .collect()
}

fn batch(data: &Episodes, pairs: &[(usize, usize, f32)], device: &Device) -> [Tensor<2>; 3] {
    let d = data.dim;
    let rows = |pick: &dyn Fn(&(usize, usize, f32)) -> usize| {
        let v: Vec<f32> = pairs
            .iter()
            .flat_map(|p| data.frame(pick(p)).iter().copied())
            .collect();
        Tensor::<2>::from_data(TensorData::new(v, [pairs.len(), d]), device)
    };
    let gaps: Vec<f32> = pairs.iter().map(|p| p.2).collect();
    [
        rows(&|p| p.0),
        rows(&|p| p.1),
        Tensor::from_data(TensorData::new(gaps, [pairs.len(), 1]), device),
    ]
}

/// Fits the critic on `train`'s episodes; reports on `val`'s.
pub fn fit(
    cfg: &DistanceConfig,
    train: &Episodes,
    val: &Episodes,
    device: &Device,
) -> Result<(DistanceCritic, DistanceReport)> {
    ensure!(
        !train.is_empty() && !val.is_empty() && train.dim == val.dim,
        "the distance critic needs training and held-out frames of one width (got {} and {})",
        train.len(),
        val.len()
    );
    ensure!(
        cfg.steps > 0 && cfg.batch_size > 0 && cfg.max_gap > 0,
        "distance critic: steps, batch_size and max_gap must be positive"
    );
    let (mean, std) = mean_std(&train.frames, train.dim);
    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let mut critic = DistanceCritic {
        net: MlpConfig {
            d_in: 2 * train.dim,
            hidden: cfg.hidden,
            d_out: 1,
        }
        .init(&ad),
        mean,
        std,
    };
    let mut net = critic.net.clone();
    let mut opt = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut gap_sum = 0f64;
    for _ in 0..cfg.steps {
        let pairs = draw(train, &mut rng, cfg.batch_size, cfg.max_gap);
        gap_sum += pairs.iter().map(|p| p.2 as f64).sum::<f64>();
        let [a, b, gap] = batch(train, &pairs, &ad);
        let m = pairs.len();
        let loss = (forward(&net, &critic, a, b).reshape([m, 1]) - gap)
            .square()
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = opt.step(cfg.lr, net, grads);
    }
    critic.net = net.valid();
    let constant = (gap_sum / (cfg.steps * cfg.batch_size) as f64) as f32;
    // Held out: a fixed draw of pairs.
    let pairs = draw(
        val,
        &mut StdRng::seed_from_u64(cfg.seed ^ 0x5eed),
        4096,
        cfg.max_gap,
    );
    let [a, b, _] = batch(val, &pairs, device);
    let pred = host(critic.distance(a, b));
    let truth: Vec<f32> = pairs.iter().map(|p| p.2).collect();
    let n = truth.len() as f64;
    let mae = |p: &dyn Fn(usize) -> f32| {
        truth
            .iter()
            .enumerate()
            .map(|(i, &t)| (p(i) - t).abs() as f64)
            .sum::<f64>()
            / n
    };
    let val_mae = mae(&|i| pred[i]);
    ensure!(
        val_mae.is_finite(),
        "distance critic error became {val_mae}; lower the learning rate"
    );
    let report = DistanceReport {
        train_episodes: train.episodes.len(),
        val_episodes: val.episodes.len(),
        val_mae,
        val_mae_constant: mae(&|_| constant),
        val_correlation: correlation(&pred, &truth),
    };
    Ok((critic, report))
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&x| x as f64).sum::<f64>() / n,
        b.iter().map(|&x| x as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    sab / (saa * sbb).sqrt().max(1e-12)
}

/// Saves a critic (weights in safetensors, standardisation, settings and report in
/// distance.json).
pub fn save(
    critic: &DistanceCritic,
    dir: &Path,
    report: &DistanceReport,
    cfg: &DistanceConfig,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    lam_model::checkpoint::save_weights(&critic.net, &dir.join("distance.safetensors"))?;
    let meta = serde_json::json!({
        "mean": critic.mean, "std": critic.std, "config": cfg, "report": report,
    });
    lam_data::shards::write_atomic(
        &dir.join("distance.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
}

/// Loads a critic saved by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<DistanceCritic> {
    let meta_path = dir.join("distance.json");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "cannot read {} (made by lam control distance)",
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
    let (mean, std) = (vec("mean")?, vec("std")?);
    ensure!(
        mean.len() == std.len(),
        "{}: mean and std widths differ",
        meta_path.display()
    );
    let cfg: DistanceConfig = serde_json::from_value(meta["config"].clone())
        .with_context(|| format!("{}: bad `config`", meta_path.display()))?;
    let net = MlpConfig {
        d_in: 2 * mean.len(),
        hidden: cfg.hidden,
        d_out: 1,
    }
    .init(device);
    let net = lam_model::checkpoint::load_weights(net, &dir.join("distance.safetensors"))?;
    Ok(DistanceCritic { net, mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random play in a 1-D world of two rooms, x in [0, 1] and [2, 3], joined by a corridor
    /// (1, 2) that is open in half the episodes (frames `[x, open]`): the agent holds a
    /// velocity of +-0.1 for 1 to 8 steps, as exploration holds actions, and stops at walls.
    fn walks(episodes: usize, seed: u64) -> Episodes {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Episodes {
            frames: Vec::new(),
            dim: 2,
            episodes: Vec::new(),
        };
        for _ in 0..episodes {
            let open = rng.random_range(0..2) == 1;
            let mut x: f32 = if rng.random_range(0..2) == 0 {
                rng.random_range(0.0..1.0)
            } else {
                rng.random_range(2.0..3.0)
            };
            let start = out.len();
            let (mut v, mut hold) = (0.0f32, 0);
            for _ in 0..40 {
                out.frames.extend_from_slice(&[x, open as u8 as f32]);
                if hold == 0 {
                    v = if rng.random_range(0..2) == 0 {
                        -0.1
                    } else {
                        0.1
                    };
                    hold = rng.random_range(1..=8);
                }
                hold -= 1;
                let next = (x + v).clamp(0.0, 3.0);
                let in_corridor = next > 1.0 && next < 2.0;
                if open || !in_corridor {
                    x = next;
                }
            }
            out.episodes.push(start..out.len());
        }
        out
    }

    #[test]
    fn distance_grows_with_the_gap_and_slopes_towards_the_door() {
        let dev = Device::flex();
        let cfg = DistanceConfig {
            steps: 800,
            hidden: 64,
            batch_size: 256,
            max_gap: 16,
            ..Default::default()
        };
        let (critic, report) = fit(&cfg, &walks(300, 1), &walks(60, 2), &dev).unwrap();
        assert!(report.val_mae < report.val_mae_constant, "{report:?}");
        assert!(report.val_correlation > 0.3, "{report:?}");
        let d = |from: [f32; 2], to: [f32; 2]| {
            let a = Tensor::<2>::from_data(TensorData::new(from.to_vec(), [1, 2]), &dev);
            let b = Tensor::<2>::from_data(TensorData::new(to.to_vec(), [1, 2]), &dev);
            critic.distance(a, b).into_scalar::<f32>()
        };
        // Farther in the same room is farther in the video.
        assert!(d([0.5, 0.0], [0.55, 0.0]) < d([0.1, 0.0], [0.9, 0.0]));
        // Through an open door, the near side of it is nearer to the other room.
        assert!(d([0.9, 1.0], [2.5, 1.0]) < d([0.1, 1.0], [2.5, 1.0]));

        let dir = tempfile::tempdir().unwrap();
        save(&critic, dir.path(), &report, &cfg).unwrap();
        let back = load(dir.path(), &dev).unwrap();
        assert_eq!(
            d([0.3, 1.0], [2.2, 1.0]),
            back.distance(
                Tensor::<2>::from_data(TensorData::new(vec![0.3, 1.0], [1, 2]), &dev),
                Tensor::<2>::from_data(TensorData::new(vec![2.2, 1.0], [1, 2]), &dev)
            )
            .into_scalar::<f32>()
        );
    }
}
