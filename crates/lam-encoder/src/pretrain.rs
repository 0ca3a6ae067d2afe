//! Self-supervised pretraining of the sim encoder: a JEPA regularised by SIGReg, after
//! LeWorldModel.
//!
//! For a pair of consecutive frames (x_t, x_t+1) the encoder gives token grids s_t, s_t+1
//! `[N, D]`; a small transformer predictor maps s_t to a guess of s_t+1. The loss is
//!
//! ```text
//! L = mean |pred(s_t) - s_t+1|^2  +  lambda   * SIGReg({tokens of s_t and s_t+1 in the batch})
//!                                  +  lambda_f * SIGReg({mean token of each frame in the batch})
//! ```
//!
//! with gradients through both branches (no stop-gradient, no EMA target). Prediction alone
//! is minimised by a constant encoder; SIGReg (Sketched Isotropic Gaussian Regulariser) rules
//! that out by pushing the token distribution towards an isotropic standard Gaussian: the
//! tokens are projected on `directions` random unit vectors (redrawn every step) and each
//! projection's characteristic function is compared with the Gaussian's (see
//! [`crate::sigreg`]). A collapsed encoder (all tokens equal) scores about 0.5; a Gaussian one 0.
//!
//! Collapse stays visible: the per-channel std and effective rank of the tokens and of the
//! per-frame mean tokens of a fixed evaluation set are logged before, during and after
//! training (see [`crate::stats`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use lam_ingest::{ClipSource, ClipSpec, IngestReport, Normalization, RunOptions};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::probe::{ProbeConfig, ProbeFrames, ProbeReport, probe_encoder, probe_set};
use crate::sigreg::{sigreg, sigreg_knots};
use crate::sim::{ARCHITECTURE, SimBlock, SimCheckpointMeta, SimEncoder, SimEncoderConfig};
use crate::stats::{EmbeddingStats, embedding_stats};
use crate::transport::Transporter;
use crate::vit::patchify;

/// Pretraining settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// The encoder to train.
    pub encoder: SimEncoderConfig,
    /// Optimiser steps. Default 400.
    pub steps: usize,
    /// Frame pairs per step. Default 32.
    pub batch: usize,
    /// AdamW peak learning rate. Default 1e-3.
    pub lr: f64,
    /// AdamW weight decay. Default 0.01.
    pub weight_decay: f64,
    /// Fraction of steps of linear warmup before the cosine decay (to 10% of the peak).
    /// Default 0.1.
    pub warmup_fraction: f64,
    /// SIGReg weight lambda on the tokens. Default 1.0.
    pub sigreg_weight: f64,
    /// SIGReg weight on the per-frame mean tokens (the frame-level embedding LeWorldModel
    /// regularises). Scenes where most patches are static background leave the token-level
    /// term a floor it cannot pass; this term spreads the frames themselves. Default 1.0.
    pub sigreg_frame_weight: f64,
    /// Random projection directions per step. Default 64.
    pub sigreg_directions: usize,
    /// Quadrature points on [0, t_max]. Default 17.
    pub sigreg_knots: usize,
    /// Integration bound. Default 3.0.
    pub sigreg_t_max: f64,
    /// Predictor width. Default 64.
    pub predictor_dim: usize,
    /// Predictor transformer blocks. Default 1.
    pub predictor_depth: usize,
    /// Frames of the fixed evaluation set for the collapse statistics. Default 256.
    pub eval_frames: usize,
    /// Steps between metric lines. Default 50.
    pub log_every: usize,
    /// Seed of initialisation, batches and projections. Default 0.
    pub seed: u64,
    /// Weight of the pixel-reconstruction term: a linear decoder maps every token back to
    /// the pixels of its patch (both frames of each pair), so that the tokens keep what the
    /// frame shows, small objects included. Default 1.0.
    pub recon_weight: f64,
    /// Weight of the frame-level reconstruction: a spatial-broadcast decoder (an MLP applied
    /// at each pixel to the frame's mean token and the pixel's coordinates) predicts the
    /// colours of sampled pixels of the frame. Rendering the agent and the objects where they
    /// are from one vector is easiest when that vector holds their positions linearly, which
    /// is what lam's IDM (on mean-pooled tokens) needs. Default 1.0.
    pub frame_recon_weight: f64,
    /// Pixels sampled per frame for the frame-level reconstruction; half of them among the
    /// pixels unlike the frame's background (its per-channel median colour), so that small
    /// objects are not averaged away. Default 256.
    pub frame_recon_pixels: usize,
    /// Hidden width of the frame-level decoder. Default 128.
    pub frame_recon_hidden: usize,
    /// Share of the frame-level reconstruction's pixels drawn among the pixels that change
    /// between the pair's two frames (what moves: the agent, pushed objects), taken from the
    /// other two shares. A 3-pixel agent is a few of the hundreds of foreground pixels (walls,
    /// targets), so without this the decoder can ignore where it is; with it, the frame
    /// embedding must place what moves. Default 1/3; 0 gives the earlier half uniform, half
    /// foreground sampling.
    #[serde(default = "default_motion_share")]
    pub frame_recon_motion: f64,
    /// Weight of the keypoint motion term (pixel keypoints only): each keypoint's spatial
    /// distribution over frame x_t should sit where the pair's frames differ, `1 - sum_i
    /// p_k(i) m(i)` with `m` the per-pixel change `|x_t+1 - x_t|` at the stem's resolution,
    /// divided by its maximum (pairs where nothing moves do not count). Only what moves changes
    /// a frame, so the term places keypoints on the agent and on pushed objects, which is
    /// what planning needs the embedding to hold; the dense softmax gives it a gradient from
    /// any start. Default 1.0.
    #[serde(default = "default_one")]
    pub keypoint_motion_weight: f64,
    /// Weight of the keypoint-transport term (pixel keypoints only; see [`crate::transport`]):
    /// the pair's second frame rebuilt from the first one's features with the features at both
    /// frames' keypoints swapped, so that every body that moves needs a keypoint on it.
    /// Default 0 (off).
    #[serde(default)]
    pub keypoint_transport_weight: f64,
    /// Channels of the transport head's feature map and decoder. Default 16.
    #[serde(default = "default_transport_channels")]
    pub transport_channels: usize,
    /// Standard deviation of the transport heatmaps, in keypoint units ([-1, 1] across the
    /// frame). Default 0.1.
    #[serde(default = "default_transport_sigma")]
    pub transport_sigma: f64,
    /// Recolour each training pair (both frames alike) by a random permutation of the colour
    /// channels and a random sign per channel (in normalised units: an inversion about the
    /// normalisation's mean), one of 48 colourings. The encoder then cannot tell bodies apart
    /// by colour, only by shape and motion, so that a keypoint trained on one embodiment's
    /// video (a hand) also follows another's (a robot's disc) instead of one keypoint per
    /// body. Evaluation, probe and embedding see the frames as they are. Default false.
    #[serde(default)]
    pub colour_augment: bool,
    /// Linear probe of the simulator's true state run before and after training (see
    /// [`crate::probe`]); `None` skips it. Default: push, robot domain, 40 episodes. (A
    /// settings file without a `[probe]` table means no probe.)
    #[serde(default)]
    pub probe: Option<ProbeConfig>,
    /// Steps between checkpoints in `OUT/checkpoints` (weights, AdamW state and step: a run
    /// resumed from one continues exactly as if never stopped) and between collapse checks
    /// on the fixed evaluation set; 0: neither (only the final encoder). Default 100.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Collapse: the frame embeddings (per-frame mean tokens) of the evaluation set have an
    /// effective rank below this (all frames along one direction). Default 1.5.
    #[serde(default = "default_collapse_min_rank")]
    pub collapse_min_rank: f64,
    /// Collapse: the mean per-channel std of the tokens or of the frame embeddings has fallen
    /// below this fraction of the untrained encoder's (everything shrinks toward one point,
    /// which a prediction loss alone rewards; the scale of an embedding is arbitrary, so the
    /// check is relative). Default 0.1.
    #[serde(default = "default_collapse_std_ratio")]
    pub collapse_std_ratio: f64,
}

impl lam_model::settings::Settings for PretrainConfig {
    const WHAT: &'static str = "encoder pretraining";
    const PRESETS: &'static [&'static str] = &["default"];
    /// `default`: [`PretrainConfig::default`] with pixel keypoints, what `lam encoder
    /// pretrain` trains without flags.
    fn preset(name: &str) -> Result<Self> {
        match name {
            "default" => {
                let mut cfg = Self::default();
                cfg.encoder.pixel_keypoints = true;
                Ok(cfg)
            }
            other => Err(lam_model::settings::unknown_preset::<Self>(other)),
        }
    }
    fn validate(&self) -> Result<()> {
        PretrainConfig::validate(self)
    }
}

fn default_transport_channels() -> usize {
    16
}

fn default_transport_sigma() -> f64 {
    0.1
}

fn default_checkpoint_every() -> usize {
    100
}

fn default_collapse_min_rank() -> f64 {
    1.5
}

fn default_collapse_std_ratio() -> f64 {
    0.1
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            encoder: SimEncoderConfig::default(),
            steps: 400,
            batch: 32,
            lr: 1e-3,
            weight_decay: 0.01,
            warmup_fraction: 0.1,
            sigreg_weight: 1.0,
            sigreg_frame_weight: 1.0,
            sigreg_directions: 64,
            sigreg_knots: 17,
            sigreg_t_max: 3.0,
            predictor_dim: 64,
            predictor_depth: 1,
            eval_frames: 256,
            log_every: 50,
            seed: 0,
            recon_weight: 1.0,
            frame_recon_weight: 1.0,
            frame_recon_pixels: 256,
            frame_recon_hidden: 128,
            frame_recon_motion: default_motion_share(),
            keypoint_motion_weight: 1.0,
            keypoint_transport_weight: 0.0,
            transport_channels: default_transport_channels(),
            transport_sigma: default_transport_sigma(),
            colour_augment: false,
            probe: Some(ProbeConfig::default()),
            checkpoint_every: default_checkpoint_every(),
            collapse_min_rank: default_collapse_min_rank(),
            collapse_std_ratio: default_collapse_std_ratio(),
        }
    }
}

impl PretrainConfig {
    pub fn validate(&self) -> Result<()> {
        self.encoder.validate()?;
        ensure!(self.steps > 0, "pretrain: steps must be > 0");
        ensure!(self.batch > 0, "pretrain: batch must be > 0");
        ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "pretrain: lr must be positive"
        );
        ensure!(
            self.sigreg_weight >= 0.0 && self.sigreg_frame_weight >= 0.0,
            "pretrain: sigreg_weight and sigreg_frame_weight must be >= 0"
        );
        ensure!(
            self.recon_weight >= 0.0 && self.frame_recon_weight >= 0.0,
            "pretrain: recon_weight and frame_recon_weight must be >= 0"
        );
        ensure!(
            self.frame_recon_pixels > 0 && self.frame_recon_hidden > 0,
            "pretrain: frame_recon_pixels and frame_recon_hidden must be > 0"
        );
        ensure!(
            self.keypoint_transport_weight >= 0.0
                && self.transport_channels > 0
                && self.transport_sigma > 0.0
                && self.transport_sigma.is_finite(),
            "pretrain: keypoint_transport_weight must be >= 0, transport_channels > 0 and \
             transport_sigma a positive number"
        );
        ensure!(
            self.keypoint_transport_weight == 0.0
                || (self.encoder.pixel_keypoints && self.encoder.keypoints > 0),
            "pretrain: keypoint_transport_weight needs pixel keypoints (encoder.pixel_keypoints \
             = true, encoder.keypoints > 0)"
        );
        ensure!(
            self.sigreg_directions > 0 && self.sigreg_knots >= 2 && self.sigreg_t_max > 0.0,
            "pretrain: SIGReg needs directions > 0, knots >= 2, t_max > 0"
        );
        ensure!(
            self.collapse_min_rank.is_finite() && self.collapse_std_ratio.is_finite(),
            "pretrain: collapse_min_rank and collapse_std_ratio must be finite numbers"
        );
        ensure!(
            self.predictor_dim > 0 && self.predictor_dim % self.encoder.heads == 0,
            "pretrain: predictor_dim {} must be a positive multiple of the encoder's heads {}",
            self.predictor_dim,
            self.encoder.heads
        );
        Ok(())
    }
}

/// Frames in memory, `[3, S, S]` each, and the consecutive pairs (index of x_t, of x_t+1).
#[derive(Clone, Debug, Default)]
pub struct Frames {
    /// Side S.
    pub size: usize,
    /// `count x 3 x S x S` normalised values.
    pub data: Vec<f32>,
    pub pairs: Vec<(usize, usize)>,
}

impl Frames {
    pub fn len(&self) -> usize {
        self.data.len() / self.frame_len().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn frame_len(&self) -> usize {
        3 * self.size * self.size
    }

    pub fn frame(&self, i: usize) -> &[f32] {
        let n = self.frame_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// Appends a run of consecutive frames (one clip or episode); pairs link neighbours.
    pub fn push_run(&mut self, frames: &[f32]) {
        let n = self.frame_len();
        let start = self.len();
        let count = frames.len() / n;
        self.data.extend_from_slice(&frames[..count * n]);
        self.pairs
            .extend((start..start + count.saturating_sub(1)).map(|i| (i, i + 1)));
    }

    /// Appends another set of frames of the same side (its pairs shifted to follow ours).
    pub fn append(&mut self, other: Frames) {
        assert_eq!(self.size, other.size, "frames of different sides");
        let start = self.len();
        self.data.extend(other.data);
        self.pairs
            .extend(other.pairs.into_iter().map(|(a, b)| (a + start, b + start)));
    }

    /// Stacks frames `indices` into `[B, 3, S, S]`.
    pub fn tensor(&self, indices: &[usize], device: &Device) -> Tensor<4> {
        let mut v = Vec::with_capacity(indices.len() * self.frame_len());
        for &i in indices {
            v.extend_from_slice(self.frame(i));
        }
        Tensor::from_data(
            TensorData::new(v, [indices.len(), 3, self.size, self.size]),
            device,
        )
    }
}

/// Reads frames from any clip source (a lam-sim recording, a LeRobot dataset, a video folder):
/// clips of `spec` (size must be the encoder's), at most `max_frames` frames in all.
pub fn frames_from_source(
    source: &dyn ClipSource,
    spec: &ClipSpec,
    max_frames: usize,
) -> Result<(Frames, IngestReport)> {
    let mut frames = Frames {
        size: spec.size as usize,
        ..Frames::default()
    };
    let report = lam_ingest::run(source, spec, &RunOptions::default(), &mut |_, clips| {
        for clip in clips {
            if frames.len() + clip.frames <= max_frames {
                frames.push_run(&clip.data);
            }
        }
        Ok(())
    })
    .with_context(|| format!("reading frames from {}", source.describe()))?;
    Ok((frames, report))
}

/// Frames of simple moving scenes for tests and quick runs without a recording: on a
/// coloured background, a disc and a square move at constant velocity and bounce off the
/// borders. `runs` episodes of `steps` frames, side `size`, normalised with `norm`.
pub fn synthetic_frames(
    runs: usize,
    steps: usize,
    size: usize,
    norm: &Normalization,
    seed: u64,
) -> Frames {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut frames = Frames {
        size,
        ..Frames::default()
    };
    let s = size as f32;
    for _ in 0..runs {
        let bg: [f32; 3] = std::array::from_fn(|_| rng.random::<f32>() * 0.4);
        let mut objects: Vec<([f32; 2], [f32; 2], [f32; 3], bool, f32)> = (0..2)
            .map(|k| {
                let pos = [
                    rng.random::<f32>() * s * 0.6 + s * 0.2,
                    rng.random::<f32>() * s * 0.6 + s * 0.2,
                ];
                let vel = [
                    (rng.random::<f32>() - 0.5) * s * 0.12,
                    (rng.random::<f32>() - 0.5) * s * 0.12,
                ];
                let colour = std::array::from_fn(|_| 0.5 + rng.random::<f32>() * 0.5);
                let radius = s * (0.08 + rng.random::<f32>() * 0.08);
                (pos, vel, colour, k == 0, radius)
            })
            .collect();
        let mut run = Vec::with_capacity(steps * 3 * size * size);
        for _ in 0..steps {
            let mut rgb = vec![0.0f32; 3 * size * size];
            for y in 0..size {
                for x in 0..size {
                    let mut c = bg;
                    for (pos, _, colour, disc, r) in &objects {
                        let (dx, dy) = (x as f32 + 0.5 - pos[0], y as f32 + 0.5 - pos[1]);
                        let inside = if *disc {
                            dx * dx + dy * dy <= r * r
                        } else {
                            dx.abs() <= *r && dy.abs() <= *r
                        };
                        if inside {
                            c = *colour;
                        }
                    }
                    for ch in 0..3 {
                        rgb[(ch * size + y) * size + x] =
                            norm.apply(ch, (c[ch] * 255.0).round() as u8);
                    }
                }
            }
            run.extend(rgb);
            for (pos, vel, _, _, r) in &mut objects {
                for a in 0..2 {
                    pos[a] += vel[a];
                    if pos[a] < *r || pos[a] > s - *r {
                        vel[a] = -vel[a];
                        pos[a] = pos[a].clamp(*r, s - *r);
                    }
                }
            }
        }
        frames.push_run(&run);
    }
    frames
}

/// Pixels of each frame that differ from its background: farther than 0.3 (normalised
/// units, over the three channels) from the frame's per-channel median colour.
fn foreground_pixels(frames: &Frames) -> Vec<Vec<u32>> {
    let plane = frames.size * frames.size;
    let mut channel = vec![0.0f32; plane];
    (0..frames.len())
        .map(|i| {
            let f = frames.frame(i);
            let mut dist = vec![0.0f32; plane];
            for c in 0..3 {
                let values = &f[c * plane..(c + 1) * plane];
                channel.copy_from_slice(values);
                let (_, median, _) = channel.select_nth_unstable_by(plane / 2, f32::total_cmp);
                let median = *median;
                for (d, &v) in dist.iter_mut().zip(values) {
                    *d += (v - median) * (v - median);
                }
            }
            (0..plane as u32)
                .filter(|&j| dist[j as usize] > 0.09)
                .collect()
        })
        .collect()
}

fn default_motion_share() -> f64 {
    1.0 / 3.0
}

fn default_one() -> f64 {
    1.0
}

/// Pixels of frame `a` whose colour differs from frame `b`'s (squared distance over the
/// normalised channels above 0.09, the foreground threshold).
fn motion_pixels(frames: &Frames, a: usize, b: usize) -> Vec<u32> {
    let plane = frames.size * frames.size;
    let (fa, fb) = (frames.frame(a), frames.frame(b));
    (0..plane as u32)
        .filter(|&j| {
            let j = j as usize;
            (0..3)
                .map(|c| (fa[c * plane + j] - fb[c * plane + j]).powi(2))
                .sum::<f32>()
                > 0.09
        })
        .collect()
}

/// Samples `q` pixels of each frame of `idx`: a `motion` share among the pixels that differ
/// from the frame's partner `partner[i]` (when any do), the rest half uniformly, half among
/// its foreground pixels (when it has any). Coordinates in [-1, 1] `[B, q, 2]` (x, y) and
/// colours `[B, q, 3]`.
fn sample_pixels(
    frames: &Frames,
    foreground: &[Vec<u32>],
    idx: &[usize],
    partner: &[usize],
    motion: f64,
    q: usize,
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let s = frames.size;
    let plane = s * s;
    let mut coords = Vec::with_capacity(idx.len() * q * 2);
    let mut colours = Vec::with_capacity(idx.len() * q * 3);
    let moving_count = (motion.clamp(0.0, 1.0) * q as f64).round() as usize;
    for (&i, &other) in idx.iter().zip(partner) {
        let f = frames.frame(i);
        let fg = &foreground[i];
        let moving = if moving_count > 0 {
            motion_pixels(frames, i, other)
        } else {
            Vec::new()
        };
        for k in 0..q {
            let j = if k < moving_count && !moving.is_empty() {
                moving[rng.random_range(0..moving.len())] as usize
            } else if k % 2 == 1 && !fg.is_empty() {
                fg[rng.random_range(0..fg.len())] as usize
            } else {
                rng.random_range(0..plane)
            };
            let (y, x) = (j / s, j % s);
            coords.push((x as f32 + 0.5) / s as f32 * 2.0 - 1.0);
            coords.push((y as f32 + 0.5) / s as f32 * 2.0 - 1.0);
            for c in 0..3 {
                colours.push(f[c * plane + j]);
            }
        }
    }
    (coords, colours)
}

/// Spatial-broadcast decoder: the colour at pixel coordinates `c` of a frame with embedding
/// `z` is `MLP(W_z z + W_c c)`.
#[derive(Module, Debug)]
pub struct BroadcastDecoder {
    pub from_latent: Linear,
    pub from_coords: Linear,
    pub fc2: Linear,
    pub out: Linear,
}

impl BroadcastDecoder {
    pub fn new(d: usize, hidden: usize, device: &Device) -> Self {
        BroadcastDecoder {
            from_latent: LinearConfig::new(d, hidden).init(device),
            from_coords: LinearConfig::new(2, hidden).with_bias(false).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            out: LinearConfig::new(hidden, 3).init(device),
        }
    }

    /// Colours `[B, Q, 3]` at coordinates `[B, Q, 2]` of frames with embeddings `[B, D]`.
    pub fn forward(&self, z: Tensor<2>, coords: Tensor<3>) -> Tensor<3> {
        let h =
            self.from_latent.forward(z).unsqueeze_dim::<3>(1) + self.from_coords.forward(coords);
        self.out.forward(gelu(self.fc2.forward(gelu(h))))
    }
}

/// Predicts the tokens of the next frame from the current frame's tokens.
#[derive(Module, Debug)]
pub struct Predictor {
    pub input: Linear,
    pub blocks: Vec<SimBlock>,
    pub output: Linear,
    pub heads: usize,
}

impl Predictor {
    pub fn new(d: usize, width: usize, depth: usize, heads: usize, device: &Device) -> Self {
        Predictor {
            input: LinearConfig::new(d, width).init(device),
            blocks: (0..depth)
                .map(|_| SimBlock::new(width, 2.0, device))
                .collect(),
            output: LinearConfig::new(width, d).init(device),
            heads,
        }
    }

    pub fn forward(&self, tokens: Tensor<3>) -> Tensor<3> {
        let mut x = self.input.forward(tokens);
        for b in &self.blocks {
            x = b.forward(x, self.heads);
        }
        self.output.forward(x)
    }
}

/// Encoder, predictor and pixel decoder, optimised together.
#[derive(Module, Debug)]
pub struct Jepa {
    pub encoder: SimEncoder,
    pub predictor: Predictor,
    /// Token `[D]` -> the pixels of its patch `[3 p p]`, channel-major as [`patchify`].
    pub decoder: Linear,
    /// Mean token of a frame and pixel coordinates -> the pixel's colour.
    pub frame_decoder: BroadcastDecoder,
    /// The keypoint-transport head (with `keypoint_transport_weight > 0`).
    pub transporter: Option<Transporter>,
}

/// `m` random unit vectors of dimension `d`, as the columns of a `[d, m]` row-major matrix.
pub fn directions(rng: &mut StdRng, d: usize, m: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..d * m).map(|_| gaussian(rng)).collect();
    for j in 0..m {
        let norm = (0..d)
            .map(|i| v[i * m + j] * v[i * m + j])
            .sum::<f32>()
            .sqrt()
            .max(1e-12);
        for i in 0..d {
            v[i * m + j] /= norm;
        }
    }
    v
}

/// The random draws of one pretraining step, in the order the run's one generator makes
/// them: the batch's frames (pairs x_t of the batch, then their x_t+1), the SIGReg
/// directions of the tokens and of the frames, and the pixels of the frame-level
/// reconstruction, then (with `colour_augment`) each pair's colouring. Drawn apart from the
/// step's tensor work so that a resumed run can replay the draws of the steps it skips (host
/// work only) and go on with the same stream.
struct StepDraws {
    idx: Vec<usize>,
    dir_tokens: Vec<f32>,
    dir_frames: Vec<f32>,
    pixels: Option<(Vec<f32>, Vec<f32>)>,
    /// One colouring per pair (`colour_augment`).
    colourings: Option<Vec<Colouring>>,
}

/// A recolouring of a frame: output channel `c` is `sign[c]` times input channel `from[c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Colouring {
    from: [usize; 3],
    sign: [f32; 3],
}

impl Colouring {
    const PERMUTATIONS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];

    fn draw(rng: &mut StdRng) -> Self {
        let from = Self::PERMUTATIONS[rng.random_range(0..6)];
        let bits = rng.random_range(0..8u32);
        let sign = [0, 1, 2].map(|c| if bits >> c & 1 == 1 { -1.0 } else { 1.0 });
        Self { from, sign }
    }

    /// Recolours one colour triple.
    fn pixel(&self, rgb: [f32; 3]) -> [f32; 3] {
        [0, 1, 2].map(|c| self.sign[c] * rgb[self.from[c]])
    }

    /// Appends frame `f` (`[3, S, S]` planes) recoloured to `out`.
    fn extend_frame(&self, f: &[f32], out: &mut Vec<f32>) {
        let plane = f.len() / 3;
        for c in 0..3 {
            let src = &f[self.from[c] * plane..(self.from[c] + 1) * plane];
            out.extend(src.iter().map(|v| self.sign[c] * v));
        }
    }
}

/// The batch `[2B, 3, S, S]` of frames `idx` (x_t of each pair, then x_t+1), each pair
/// recoloured by its own colouring when there are colourings.
fn batch_tensor(
    frames: &Frames,
    idx: &[usize],
    colourings: Option<&[Colouring]>,
    device: &Device,
) -> Tensor<4> {
    let Some(colourings) = colourings else {
        return frames.tensor(idx, device);
    };
    let b = colourings.len();
    let mut v = Vec::with_capacity(idx.len() * frames.frame_len());
    for (row, &i) in idx.iter().enumerate() {
        colourings[row % b].extend_frame(frames.frame(i), &mut v);
    }
    Tensor::from_data(
        TensorData::new(v, [idx.len(), 3, frames.size, frames.size]),
        device,
    )
}

fn draw_step(
    cfg: &PretrainConfig,
    frames: &Frames,
    foreground: &[Vec<u32>],
    rng: &mut StdRng,
) -> StepDraws {
    let enc = &cfg.encoder;
    let b = cfg.batch;
    let pairs: Vec<(usize, usize)> = (0..b)
        .map(|_| frames.pairs[rng.random_range(0..frames.pairs.len())])
        .collect();
    let mut idx: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    idx.extend(pairs.iter().map(|p| p.1));
    let free = enc.dim - 2 * enc.keypoints;
    let dir_tokens = directions(rng, free, cfg.sigreg_directions);
    let dir_frames = directions(rng, enc.dim, cfg.sigreg_directions);
    let pixels = (cfg.frame_recon_weight > 0.0).then(|| {
        // Each frame's partner is the other frame of its pair.
        let partner: Vec<usize> = (0..2 * b).map(|i| idx[(i + b) % (2 * b)]).collect();
        sample_pixels(
            frames,
            foreground,
            &idx,
            &partner,
            cfg.frame_recon_motion,
            cfg.frame_recon_pixels,
            rng,
        )
    });
    let colourings = cfg
        .colour_augment
        .then(|| (0..b).map(|_| Colouring::draw(rng)).collect::<Vec<_>>());
    let pixels = match (pixels, &colourings) {
        (Some((coords, mut colours)), Some(cs)) => {
            // Rows of q colour triples, frame by frame as in `idx`.
            let q = cfg.frame_recon_pixels;
            for (row, chunk) in colours.chunks_exact_mut(3 * q).enumerate() {
                for px in chunk.chunks_exact_mut(3) {
                    let out = cs[row % b].pixel([px[0], px[1], px[2]]);
                    px.copy_from_slice(&out);
                }
            }
            Some((coords, colours))
        }
        (pixels, _) => pixels,
    };
    StepDraws {
        idx,
        dir_tokens,
        dir_frames,
        pixels,
        colourings,
    }
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1 = rng.random::<f64>().max(1e-300);
    let u2 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Learning rate at `step`: linear warmup, then cosine to 10% of the peak.
pub fn lr_at(cfg: &PretrainConfig, step: usize) -> f64 {
    let warm = lam_model::optim::warmup_steps_at_least_one(cfg.warmup_fraction, cfg.steps);
    lam_model::optim::warmup_cosine_lr(cfg.lr, warm, cfg.steps, 0.1, step)
}

/// Collapse statistics of `encoder` on frames `indices`: over all tokens, and over the
/// per-frame mean tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CollapseStats {
    pub tokens: EmbeddingStats,
    pub frames: EmbeddingStats,
}

pub fn collapse_stats(
    encoder: &SimEncoder,
    frames: &Frames,
    indices: &[usize],
    device: &Device,
) -> CollapseStats {
    let mut tokens = Vec::new();
    let mut pooled = Vec::new();
    let mut d = 0;
    for chunk in indices.chunks(64) {
        [_, d] = encoder.forward_host(frames.tensor(chunk, device), &mut tokens, &mut pooled);
    }
    CollapseStats {
        tokens: embedding_stats(&tokens, d),
        frames: embedding_stats(&pooled, d),
    }
}

/// What [`pretrain`] reports.
#[derive(Clone, Debug, Serialize)]
pub struct PretrainSummary {
    /// Steps run (fewer than configured when `stop_on_collapse` stopped the run).
    pub steps: usize,
    pub frames: usize,
    pub pairs: usize,
    pub seconds: f64,
    pub final_loss: f64,
    pub final_prediction: f64,
    /// The weighted sum of both SIGReg terms.
    pub final_sigreg: f64,
    /// The per-token pixel-reconstruction error (mean square, normalised pixels).
    pub final_reconstruction: f64,
    /// The frame-level (broadcast decoder) reconstruction error on the sampled pixels.
    pub final_frame_reconstruction: f64,
    pub before: CollapseStats,
    pub after: CollapseStats,
    /// Linear probe of the true state with the initial encoder (a baseline), if run.
    pub probe_before: Option<ProbeReport>,
    /// Linear probe of the true state with the trained encoder, if run.
    pub probe_after: Option<ProbeReport>,
    /// The checkpoint folder written.
    pub checkpoint: PathBuf,
    /// Step at which the evaluation set's frame embeddings first looked collapsed, and the
    /// metric that said so (`None`: never).
    pub collapse: Option<Collapse>,
    /// Step the encoder written comes from: `steps`, or with `stop_on_collapse` the last
    /// checkpoint before the collapse.
    pub encoder_step: usize,
    /// Step this run resumed from (0 for a fresh run).
    pub resumed_from: usize,
}

/// A collapse seen while pretraining.
#[derive(Clone, Debug, Serialize)]
pub struct Collapse {
    pub step: usize,
    /// What crossed its threshold, e.g. "frame embedding effective rank 1.02 < 1.5".
    pub metric: String,
}

/// When embeddings count as collapsed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollapseCheck {
    /// A token or frame-embedding mean channel std below this times the untrained
    /// encoder's. Default 0.1.
    pub std_ratio: f64,
    /// A frame-embedding effective rank below this. Default 1.5.
    pub min_rank: f64,
}

impl Default for CollapseCheck {
    fn default() -> Self {
        Self {
            std_ratio: 0.1,
            min_rank: 1.5,
        }
    }
}

impl PretrainConfig {
    /// The collapse thresholds of this run.
    pub fn collapse_check(&self) -> CollapseCheck {
        CollapseCheck {
            std_ratio: self.collapse_std_ratio,
            min_rank: self.collapse_min_rank,
        }
    }
}

/// Whether `stats` show a collapse under `check`'s thresholds, against the untrained
/// encoder's `initial` statistics, and which metric says so.
pub fn collapse_metric(
    check: &CollapseCheck,
    stats: &CollapseStats,
    initial: &CollapseStats,
) -> Option<String> {
    let cfg = check;
    let f = &stats.frames;
    let shrunk = [
        ("token", &stats.tokens, &initial.tokens),
        ("frame embedding", &stats.frames, &initial.frames),
    ]
    .into_iter()
    .find(|(_, now, init)| !(now.mean_std >= cfg.std_ratio * init.mean_std));
    if let Some((name, now, init)) = shrunk {
        Some(format!(
            "{name} mean per-channel std {:.4} < {} x its initial {:.4}",
            now.mean_std, cfg.std_ratio, init.mean_std
        ))
    } else if !(f.effective_rank >= cfg.min_rank) {
        Some(format!(
            "frame embedding effective rank {:.2} < {}",
            f.effective_rank, cfg.min_rank
        ))
    } else {
        None
    }
}

/// Where a pretraining run writes and how it behaves.
#[derive(Clone, Debug)]
pub struct PretrainRun {
    /// Output folder: `encoder/`, `checkpoints/`, `metrics.jsonl`, `summary.json`.
    pub out: PathBuf,
    pub progress: bool,
    /// Continue from the newest checkpoint in `out` (made with the same configuration);
    /// without one the run starts at step 0. A fresh run (false) removes an earlier run's
    /// checkpoints from `out`.
    pub resume: bool,
    /// Stop at the first collapse check that fails and write the encoder of the last
    /// checkpoint before it, instead of warning and going on.
    pub stop_on_collapse: bool,
    /// Where the state probe's frames come from (`lam_eval::probe::SIM_PROBE_FRAMES` for the
    /// simulated suite); without one a configured probe is skipped with a warning.
    pub probe_frames: Option<ProbeFrames>,
}

impl PretrainRun {
    pub fn new(out: &Path) -> Self {
        Self {
            out: out.to_path_buf(),
            progress: false,
            resume: false,
            stop_on_collapse: false,
            probe_frames: None,
        }
    }
}

/// Non-tensor state of a pretraining checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct PretrainState {
    step: usize,
    config: PretrainConfig,
}

/// Trains a sim encoder on `frames` and writes the checkpoint folder `out/encoder` plus
/// `out/metrics.jsonl` (one JSON object per line: `split` = `train` with losses and lr, or
/// `eval` with the collapse statistics), `out/summary.json` and, every `checkpoint_every`
/// steps, a resumable checkpoint in `out/checkpoints`. A resumed run replays the random
/// draws of the steps it skips (`StepDraws`), so it repeats the uninterrupted one.
pub fn pretrain(
    cfg: &PretrainConfig,
    frames: &Frames,
    norm: Normalization,
    device: &Device,
    run: &PretrainRun,
) -> Result<PretrainSummary> {
    let (out, progress) = (run.out.as_path(), run.progress);
    cfg.validate()?;
    ensure!(
        frames.size == cfg.encoder.image_size,
        "frames are {}x{} but the encoder takes {}x{}",
        frames.size,
        frames.size,
        cfg.encoder.image_size,
        cfg.encoder.image_size
    );
    ensure!(
        frames.size % 2 == 0
            || (cfg.keypoint_motion_weight == 0.0 && cfg.keypoint_transport_weight == 0.0)
            || !cfg.encoder.pixel_keypoints,
        "the keypoint motion and transport terms compare frames at half resolution: frame side \
         {} must be even",
        frames.size
    );
    ensure!(
        !frames.pairs.is_empty(),
        "no pairs of consecutive frames to train on (need clips of at least 2 frames)"
    );
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let resume_from = lam_model::checkpoint::resume_or_clear(out, run.resume)?;
    // The settings as `lam encoder pretrain --config OUT/config.toml` reads them.
    lam_model::settings::save(cfg, &out.join("config.toml"))?;
    let start = match &resume_from {
        Some(ckpt) => {
            let state: PretrainState = lam_model::checkpoint::read_state(ckpt)?;
            ensure!(
                state.config == *cfg,
                "--resume: {} was made with different settings; resume with the run's own \
                 (see its state.json)",
                ckpt.display()
            );
            state.step
        }
        None => 0,
    };
    let mut metrics = lam_data::MetricsLog::open(out, resume_from.as_ref().map(|_| start))?;
    let mut log = |v: serde_json::Value| metrics.write(&v);

    let ad = device.clone().autodiff();
    ad.seed(cfg.seed);
    let enc = &cfg.encoder;
    let model = Jepa {
        encoder: SimEncoder::new(enc, &ad),
        predictor: Predictor::new(
            enc.dim,
            cfg.predictor_dim,
            cfg.predictor_depth,
            enc.heads,
            &ad,
        ),
        decoder: LinearConfig::new(enc.dim, 3 * enc.patch_size * enc.patch_size).init(&ad),
        frame_decoder: BroadcastDecoder::new(enc.dim, cfg.frame_recon_hidden, &ad),
        transporter: (cfg.keypoint_transport_weight > 0.0)
            .then(|| Transporter::new(cfg.transport_channels, cfg.transport_sigma as f32, &ad)),
    };
    let foreground = if cfg.frame_recon_weight > 0.0 {
        foreground_pixels(frames)
    } else {
        Vec::new()
    };
    let mut model = lam_model::optim::stable_param_ids(model);
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .init();
    // The untrained encoder (the same draw when resuming): the baseline of the collapse
    // checks and of the probe.
    let untrained = model.encoder.valid();
    let eval_count = cfg.eval_frames.min(frames.len()).max(1);
    let eval_idx: Vec<usize> = (0..eval_count)
        .map(|i| i * frames.len() / eval_count)
        .collect();
    let before = collapse_stats(&untrained, frames, &eval_idx, device);
    if let Some(ckpt) = &resume_from {
        model = lam_model::optim::stable_param_ids(lam_model::checkpoint::load_weights(
            model,
            &ckpt.join("model.safetensors"),
        )?);
        optimizer = lam_model::checkpoint::load_optimizer(ckpt, optimizer)?;
    }
    if start == 0 {
        log(json!({"step": 0, "split": "eval", "stats": before}))?;
    }
    let probe_set = probe_set(cfg.probe.as_ref(), run.probe_frames, enc.image_size, &norm)?;
    let run_probe = |encoder: &SimEncoder| -> Result<Option<ProbeReport>> {
        match (&cfg.probe, &probe_set) {
            (Some(p), Some(set)) => Ok(Some(probe_encoder(
                encoder,
                set,
                p,
                enc.keypoints,
                None,
                device,
            )?)),
            _ => Ok(None),
        }
    };
    let probe_before = run_probe(&untrained)?;
    if let (Some(p), 0) = (&probe_before, start) {
        log(json!({"step": 0, "split": "probe", "probe": p}))?;
    }

    let (t, w) = sigreg_knots(cfg.sigreg_knots, cfg.sigreg_t_max);
    let k = t.len();
    let t = Tensor::<1>::from_data(TensorData::new(t, [k]), &ad);
    let w = Tensor::<1>::from_data(TensorData::new(w, [k]), &ad);
    let bar = lam_model::train::progress_bar(cfg.steps, start, progress);
    let scalar = |x: &Tensor<1>| -> f64 {
        x.clone().into_data().try_into_vec::<f32>().expect("f32")[0] as f64
    };
    let started = Instant::now();
    let (mut last, mut last_pred, mut last_reg, mut last_rec, mut last_frame_rec) =
        (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN);
    let mut last_motion = f64::NAN;
    let mut last_transport = f64::NAN;
    let n = enc.grid() * enc.grid();
    let mut collapse: Option<Collapse> = None;
    // Set when --stop-on-collapse stopped the run: the step of the encoder kept (0: the
    // untrained one, when no checkpoint came before the collapse).
    let mut kept: Option<usize> = None;
    // One generator for the whole run; a resumed run replays the draws of the steps done.
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5151_6E0C);
    for _ in 0..start {
        draw_step(cfg, frames, &foreground, &mut rng);
    }
    for step in start..cfg.steps {
        let StepDraws {
            idx,
            dir_tokens,
            dir_frames,
            pixels,
            colourings,
        } = draw_step(cfg, frames, &foreground, &mut rng);
        let b = cfg.batch;
        let x = batch_tensor(frames, &idx, colourings.as_deref(), &ad);
        let s = model.encoder.forward(x.clone()); // [2B, N, D]
        // Prediction and the token-level SIGReg act on the head's channels; the keypoint
        // channels are peaked by design (one token holds a keypoint's weight), and a
        // Gaussian target for each token would flatten their softmax. They take part in the
        // frame-level SIGReg as positions in [-1, 1], which spreads them over the frames.
        let free = enc.dim - 2 * enc.keypoints;
        let head = s.clone().slice(s![.., .., 0..free]);
        let s_now = s.clone().slice(s![0..b, .., ..]);
        let s_next = head.clone().slice(s![b..2 * b, .., ..]);
        let diff = model.predictor.forward(s_now).slice(s![.., .., 0..free]) - s_next;
        let pred_loss = (diff.clone() * diff).mean();
        let frame_means = s.clone().mean_dim(1).reshape([2 * b, enc.dim]);
        let frame_stats = if enc.keypoints > 0 {
            Tensor::cat(
                vec![
                    frame_means.clone().slice(s![.., 0..free]),
                    frame_means
                        .clone()
                        .slice(s![.., free..enc.dim])
                        .mul_scalar((n as f32).sqrt()),
                ],
                1,
            )
        } else {
            frame_means.clone()
        };
        let reg_tokens = sigreg(
            head.reshape([2 * b * n, free]),
            Tensor::from_data(
                TensorData::new(dir_tokens, [free, cfg.sigreg_directions]),
                &ad,
            ),
            t.clone(),
            w.clone(),
        );
        let reg_frames = sigreg(
            frame_stats,
            Tensor::from_data(
                TensorData::new(dir_frames, [enc.dim, cfg.sigreg_directions]),
                &ad,
            ),
            t.clone(),
            w.clone(),
        );
        let reg = reg_tokens.mul_scalar(cfg.sigreg_weight)
            + reg_frames.mul_scalar(cfg.sigreg_frame_weight);
        let mut loss = pred_loss.clone() + reg.clone();
        if cfg.recon_weight > 0.0 {
            let target = patchify(x.clone(), enc.patch_size); // [2B, N, 3 p p]
            let err = model.decoder.forward(s.clone()) - target;
            let sq = err.clone() * err;
            let rec = sq.mean();
            last_rec = scalar(&rec);
            loss = loss + rec.mul_scalar(cfg.recon_weight);
        }
        if let Some((coords, colours)) = pixels {
            let q = cfg.frame_recon_pixels;
            let coords = Tensor::<3>::from_data(TensorData::new(coords, [2 * b, q, 2]), &ad);
            let colours = Tensor::<3>::from_data(TensorData::new(colours, [2 * b, q, 3]), &ad);
            // The head's channels standardised over the batch (the mean token of mostly
            // static frames moves little, and a linear read-out does not care about
            // per-channel scale); the keypoint channels as positions in [-1, 1], the frame
            // the pixel coordinates are given in.
            let head = frame_means.clone().slice(s![.., 0..free]);
            let mu = head.clone().mean_dim(0);
            let centred = head - mu;
            let sd = (centred.clone() * centred.clone())
                .mean_dim(0)
                .add_scalar(1e-6)
                .sqrt();
            let mut z = centred / sd;
            if enc.keypoints > 0 {
                let kp = frame_means
                    .clone()
                    .slice(s![.., free..enc.dim])
                    .mul_scalar((n as f32).sqrt());
                z = Tensor::cat(vec![z, kp], 1);
            }
            let err = model.frame_decoder.forward(z, coords) - colours;
            let rec = (err.clone() * err).mean();
            last_frame_rec = scalar(&rec);
            loss = loss + rec.mul_scalar(cfg.frame_recon_weight);
        }
        if let (Some(stem), true) = (
            &model.encoder.keypoint_stem,
            cfg.keypoint_motion_weight > 0.0,
        ) {
            // Keypoint distributions of x_t, [B, K, h*w].
            let maps = stem.maps(x.clone().slice(s![0..b, .., .., ..]));
            let [_, k, h, w] = maps.dims();
            let p = softmax(maps.reshape([b, k, h * w]), 2);
            // Where the pair differs, at the maps' resolution, [B, 1, h*w], over its maximum.
            let diff =
                x.clone().slice(s![b..2 * b, .., .., ..]) - x.clone().slice(s![0..b, .., .., ..]);
            let (fy, fx) = (frames.size / h, frames.size / w);
            let m = diff
                .abs()
                .sum_dim(1)
                .reshape([b, h, fy, w, fx])
                .mean_dim(4)
                .mean_dim(2)
                .reshape([b, 1, h * w])
                .detach();
            let total = m.clone().max_dim(2); // [B, 1, 1]
            let moving: Vec<f32> = total
                .clone()
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32")
                .iter()
                .map(|&t| if t > 1e-3 { 1.0 } else { 0.0 })
                .collect();
            let count = moving.iter().sum::<f32>();
            if count > 0.0 {
                let mask = Tensor::<3>::from_data(TensorData::new(moving, [b, 1, 1]), &ad);
                let m = m / total.add_scalar(1e-6);
                // p_k on the most-changed pixels scores 1.
                let on_motion = (p * m).sum_dim(2) * mask; // [B, K, 1]
                let motion = on_motion
                    .sum()
                    .div_scalar(count * k as f32)
                    .neg()
                    .add_scalar(1.0);
                last_motion = scalar(&motion);
                loss = loss + motion.mul_scalar(cfg.keypoint_motion_weight);
            }
        }
        if let (Some(_), Some(head)) = (&model.encoder.keypoint_stem, &model.transporter) {
            // The stem's keypoints of both frames as the encoder put them on every token
            // (position / sqrt(N)), read back from the first token instead of running the
            // stem on the frames a second time; the gradient reaches the stem the same way.
            let k = enc.keypoints;
            let kp = s
                .clone()
                .slice(s![.., 0..1, free..enc.dim])
                .reshape([2 * b, k, 2])
                .mul_scalar((n as f32).sqrt());
            let transport = head.loss(
                x.clone().slice(s![0..b, .., .., ..]),
                x.clone().slice(s![b..2 * b, .., .., ..]),
                kp.clone().slice(s![0..b, .., ..]),
                kp.slice(s![b..2 * b, .., ..]),
            );
            last_transport = scalar(&transport);
            loss = loss + transport.mul_scalar(cfg.keypoint_transport_weight);
        }
        last = scalar(&loss);
        ensure!(
            last.is_finite(),
            "non-finite pretraining loss at step {step}"
        );
        last_pred = scalar(&pred_loss);
        last_reg = scalar(&reg);
        let lr = lr_at(cfg, step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, grads);
        bar.inc(1);
        if (step + 1) % cfg.log_every.max(1) == 0 || step + 1 == cfg.steps {
            bar.set_message(format!(
                "loss {last:.4} (pred {last_pred:.4}, sigreg {last_reg:.4}, recon {last_rec:.4})"
            ));
            log(json!({"step": step + 1, "split": "train", "loss": last,
                "prediction": last_pred, "sigreg": last_reg, "reconstruction": last_rec,
                "frame_reconstruction": last_frame_rec, "keypoint_motion": last_motion,
                "keypoint_transport": last_transport, "lr": lr}))?;
        }
        let done = step + 1;
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done != cfg.steps {
            let stats = collapse_stats(&model.encoder.valid(), frames, &eval_idx, device);
            log(json!({"step": done, "split": "eval", "stats": stats}))?;
            if let Some(metric) = collapse_metric(&cfg.collapse_check(), &stats, &before) {
                bar.suspend(|| {
                    tracing::warn!(
                        "encoder collapse at step {done}: {metric}{}",
                        if run.stop_on_collapse {
                            "; stopping (--stop-on-collapse) with the last checkpoint before it"
                        } else {
                            " (--stop-on-collapse stops here and keeps the last checkpoint before it)"
                        }
                    )
                });
                if collapse.is_none() {
                    collapse = Some(Collapse { step: done, metric });
                }
                if run.stop_on_collapse {
                    kept = Some(match lam_model::checkpoint::latest(out)? {
                        Some(ckpt) => {
                            model = lam_model::checkpoint::load_weights(
                                model,
                                &ckpt.join("model.safetensors"),
                            )?;
                            lam_model::checkpoint::read_state::<PretrainState>(&ckpt)?.step
                        }
                        None => 0,
                    });
                    break;
                }
            }
            let state = PretrainState {
                step: done,
                config: cfg.clone(),
            };
            lam_model::checkpoint::write_step(out, done, 2, |tmp| {
                lam_model::checkpoint::save_weights(&model, &tmp.join("model.safetensors"))?;
                lam_model::checkpoint::save_optimizer(tmp, &optimizer)?;
                lam_model::checkpoint::write_state(tmp, &state)
            })?;
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let encoder = match kept {
        Some(0) => untrained.clone(),
        _ => model.encoder.valid(),
    };
    let after = collapse_stats(&encoder, frames, &eval_idx, device);
    let end = kept.unwrap_or(cfg.steps);
    if kept.is_none() {
        log(json!({"step": end, "split": "eval", "stats": after}))?;
        if let (Some(metric), None) = (
            collapse_metric(&cfg.collapse_check(), &after, &before),
            &collapse,
        ) {
            tracing::warn!("encoder collapse at the end of training: {metric}");
            collapse = Some(Collapse {
                step: cfg.steps,
                metric,
            });
        }
    }
    let probe_after = run_probe(&encoder)?;
    if let Some(p) = &probe_after {
        log(json!({"step": end, "split": "probe", "probe": p}))?;
    }
    let checkpoint = out.join("encoder");
    let summary = PretrainSummary {
        steps: match (kept, &collapse) {
            (Some(_), Some(c)) => c.step,
            _ => cfg.steps,
        },
        frames: frames.len(),
        pairs: frames.pairs.len(),
        seconds,
        final_loss: last,
        final_prediction: last_pred,
        final_sigreg: last_reg,
        final_reconstruction: last_rec,
        final_frame_reconstruction: last_frame_rec,
        before,
        after,
        probe_before,
        probe_after,
        checkpoint: checkpoint.clone(),
        collapse,
        encoder_step: end,
        resumed_from: start,
    };
    let meta = SimCheckpointMeta {
        architecture: ARCHITECTURE.into(),
        config: cfg.encoder.clone(),
        norm,
        pretrain: json!({"config": cfg, "summary": &summary}),
    };
    crate::sim::save_checkpoint(&checkpoint, &encoder, &meta)?;
    lam_data::shards::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    Ok(summary)
}

/// What pretraining did, as printed by `lam encoder pretrain`: final losses, collapse
/// statistics and probe scores before and after.
pub fn report(s: &PretrainSummary) -> String {
    // A term that is switched off (weight 0) reports NaN: say "off".
    let term = |v: f64| {
        if v.is_nan() {
            "off".to_string()
        } else {
            format!("{v:.4}")
        }
    };
    let mut out = format!(
        "{} steps in {:.1}s: loss {:.4} (prediction {:.4}, sigreg {:.4}, reconstruction {} tokens / {} frame)\n",
        s.steps,
        s.seconds,
        s.final_loss,
        s.final_prediction,
        s.final_sigreg,
        term(s.final_reconstruction),
        term(s.final_frame_reconstruction)
    );
    for (name, st) in [("before", &s.before), ("after", &s.after)] {
        out += &format!(
            "{name}: tokens std {:.3} eff. rank {:.1}/{}; frame means std {:.3} eff. rank {:.1}/{}\n",
            st.tokens.mean_std,
            st.tokens.effective_rank,
            st.tokens.dim,
            st.frames.mean_std,
            st.frames.effective_rank,
            st.frames.dim
        );
    }
    for (name, p) in [("before", &s.probe_before), ("after", &s.probe_after)] {
        if let Some(p) = p {
            out += &format!("{}\n", crate::probe::probe_line(name, p));
        }
    }
    if s.resumed_from > 0 {
        out += &format!("resumed from step {}\n", s.resumed_from);
    }
    if let Some(c) = &s.collapse {
        out += &format!(
            "COLLAPSE at step {}: {}; the encoder written is step {}'s\n",
            c.step, c.metric, s.encoder_step
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[derive(Module, Debug)]
    struct Cloud {
        x: Param<Tensor<2>>,
    }

    #[test]
    fn appended_frames_keep_their_own_pairs() {
        let norm = Normalization::IMAGENET;
        let mut all = synthetic_frames(2, 3, 8, &norm, 1);
        let other = synthetic_frames(1, 4, 8, &norm, 2);
        let last = other.frame(3).to_vec();
        all.append(other);
        assert_eq!(all.len(), 10);
        // Two runs of 3 frames, then one of 4: no pair crosses a run's end.
        assert_eq!(
            all.pairs,
            vec![(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9)]
        );
        assert_eq!(all.frame(9), &last[..]);
    }

    #[test]
    fn a_pairs_colouring_recolours_both_frames_and_the_reconstruction_targets() {
        let norm = Normalization::IMAGENET;
        let frames = synthetic_frames(3, 5, 16, &norm, 4);
        let foreground = foreground_pixels(&frames);
        let cfg = PretrainConfig {
            batch: 6,
            frame_recon_pixels: 32,
            colour_augment: true,
            ..PretrainConfig::default()
        };
        let draws = draw_step(&cfg, &frames, &foreground, &mut StdRng::seed_from_u64(9));
        let cs = draws.colourings.clone().expect("colourings drawn");
        assert_eq!(cs.len(), cfg.batch);
        // Over a few steps every colouring is a permutation with signs, and more than one
        // of the 48 turns up.
        let mut rng = StdRng::seed_from_u64(1);
        let seen: std::collections::HashSet<String> = (0..40)
            .map(|_| format!("{:?}", Colouring::draw(&mut rng)))
            .collect();
        assert!(seen.len() > 10, "{} colourings in 40 draws", seen.len());
        for c in &cs {
            let mut from = c.from;
            from.sort();
            assert_eq!(from, [0, 1, 2]);
            assert!(c.sign.iter().all(|s| s.abs() == 1.0));
        }
        let device = Device::flex();
        let x = batch_tensor(&frames, &draws.idx, Some(&cs), &device)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let n = frames.frame_len();
        let plane = n / 3;
        for (row, &i) in draws.idx.iter().enumerate() {
            // x_t and x_t+1 of a pair (rows r and r + B) share the pair's colouring.
            let c = cs[row % cfg.batch];
            let f = frames.frame(i);
            for ch in 0..3 {
                for j in [0, plane / 2, plane - 1] {
                    assert_eq!(
                        x[row * n + ch * plane + j],
                        c.sign[ch] * f[c.from[ch] * plane + j]
                    );
                }
            }
        }
        // The frame-level reconstruction's targets are the recoloured frame's pixels.
        let (coords, colours) = draws.pixels.expect("pixels drawn");
        let s = frames.size;
        for row in 0..draws.idx.len() {
            for k in 0..cfg.frame_recon_pixels {
                let at = row * cfg.frame_recon_pixels + k;
                let px = ((coords[2 * at] + 1.0) / 2.0 * s as f32 - 0.5).round() as usize;
                let py = ((coords[2 * at + 1] + 1.0) / 2.0 * s as f32 - 0.5).round() as usize;
                for ch in 0..3 {
                    assert_eq!(colours[3 * at + ch], x[row * n + ch * plane + py * s + px]);
                }
            }
        }
        // Without the setting nothing is recoloured and the draws are the earlier ones.
        let plain = PretrainConfig {
            colour_augment: false,
            ..cfg.clone()
        };
        let d = draw_step(&plain, &frames, &foreground, &mut StdRng::seed_from_u64(9));
        assert!(d.colourings.is_none());
        assert_eq!(d.idx, draws.idx);
    }

    #[test]
    fn sigreg_alone_makes_a_low_rank_cloud_isotropic() {
        let device = Device::flex().autodiff();
        let (n, d) = (512, 8);
        let mut rng = StdRng::seed_from_u64(3);
        // All variance along 2 of the 8 axes, scale 0.1.
        let v: Vec<f32> = (0..n * d)
            .map(|i| {
                if i % d < 2 {
                    0.1 * gaussian(&mut rng)
                } else {
                    0.0
                }
            })
            .collect();
        let mut cloud = Cloud {
            x: Param::from_tensor(Tensor::from_data(TensorData::new(v, [n, d]), &device)),
        };
        let (t, w) = sigreg_knots(17, 3.0);
        let t = Tensor::<1>::from_data(TensorData::new(t, [17]), &device);
        let w = Tensor::<1>::from_data(TensorData::new(w, [17]), &device);
        let mut opt = AdamWConfig::new().init();
        let first =
            |c: &Cloud| embedding_stats(&c.x.val().into_data().try_into_vec::<f32>().unwrap(), d);
        let before = first(&cloud);
        let mut last = 0.0;
        for _ in 0..300 {
            let dirs = Tensor::from_data(
                TensorData::new(directions(&mut rng, d, 32), [d, 32]),
                &device,
            );
            let loss = sigreg(cloud.x.val(), dirs, t.clone(), w.clone());
            last = loss.clone().into_data().try_into_vec::<f32>().unwrap()[0];
            let grads = GradientsParams::from_grads(loss.backward(), &cloud);
            cloud = opt.step(0.02, cloud, grads);
        }
        let after = first(&cloud);
        println!("sigreg {last}: before {before:?}\nafter {after:?}");
        assert!(before.effective_rank < 2.1);
        assert!(after.effective_rank > 7.0, "{after:?}");
        assert!((after.mean_std - 1.0).abs() < 0.15, "{after:?}");
    }
}
