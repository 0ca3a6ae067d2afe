//! Run configuration: plain structs with documented defaults, named presets, TOML files and
//! `section.field=value` overrides from the command line.
//!
//! Unknown keys are errors (every struct denies unknown fields), so a typo in a config file or
//! an override names the key instead of being silently ignored.

use std::path::Path;

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::settings::{self, Settings};

/// Everything a stage-1 run needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LamConfig {
    pub model: ModelConfig,
    pub regularizer: RegularizerConfig,
    pub optim: OptimConfig,
    pub train: TrainConfig,
}

/// Sizes of the inverse-dynamics model and the world model.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Channels per encoder token, D. Taken from the shard index by `lam train`.
    pub embed_dim: usize,
    /// Token grid `[rows, cols]` of one frame (N = rows * cols). From the shard index.
    pub grid: [usize; 2],
    /// Frames per clip, T. From the shard index.
    pub frames: usize,
    /// Latent action dimension d (paper: 128).
    pub latent_dim: usize,
    /// IDM hidden width (paper: 1024). The IDM is a 3-layer GELU MLP on the two frames'
    /// mean-pooled tokens.
    pub idm_hidden: usize,
    /// World-model width (paper, ViT-B: 768).
    pub wm_dim: usize,
    /// World-model blocks (ViT-B: 12).
    pub wm_depth: usize,
    /// Attention heads (ViT-B: 12).
    pub wm_heads: usize,
    /// MLP hidden width as a multiple of `wm_dim` (4.0).
    pub wm_mlp_ratio: f64,
    /// RoPE base frequency (10000).
    pub rope_theta: f64,
    /// Probability of replacing z_t by zeros during training (paper: 0.15).
    pub action_dropout: f64,
    /// What the world model is conditioned on: `latent` (z_t from the IDM, default) or
    /// `action` (the true robot actions of labeled shards; `latent_dim` must then equal the
    /// action dimension, and the IDM and regulariser are not used). `action` is the
    /// action-conditioned baseline the latent-action world model is compared with.
    #[serde(default)]
    pub conditioning: Conditioning,
    /// Predict the change of the frame instead of the frame: s^_t+1 = s_t + out(...), with
    /// `out_proj` zero-initialised so the untrained model copies the last frame (false, the
    /// paper's parameterisation). On embeddings that change little between frames (the
    /// simulated suite), the tiny model otherwise spends its first thousand steps learning to
    /// copy and never starts using z; the loss is the same L1 either way.
    #[serde(default)]
    pub residual: bool,
    /// Standardise every channel of the encoder tokens with the training data's mean and
    /// std before the IDM and world model see them (false). The statistics are computed when
    /// training starts and saved with the weights; the world model then predicts, and the
    /// planner compares, standardised tokens. For encoders whose frames differ by a small
    /// fraction of the channels' offsets (mean-pooled sim-encoder tokens move ~1% of their
    /// scale per step), this puts frame-to-frame changes on the scale the optimiser and the
    /// planner's cosine cost can see.
    #[serde(default)]
    pub standardize: bool,
    /// How `standardize` scales the channels (`channel`): each by its own std, or all by one
    /// `shared` deviation (the root of the channels' mean variance; each channel is still
    /// centred on its own mean). Shared keeps the channels' sizes relative to each other, so
    /// channels that barely move (keypoints resting on nothing that moves) stay small in the
    /// loss and the planner's cost instead of weighing as much as the ones that carry the
    /// scene, while the whole embedding is brought to unit size for the regulariser's noise.
    #[serde(default)]
    pub standardize_scale: TokenScale,
    /// Weight of a second, self-fed prediction pass in the loss (0: off, teacher forcing
    /// only). The pass replaces context frames 1..T-2 by the model's own predictions of them
    /// and predicts frames 2..T-1 again, so the loss sees the model roll out on its own
    /// outputs as the planner does. Teacher forcing alone never shows it its own errors: on
    /// the simulated suite a model trained so predicts the agent stopped by a wall for two
    /// blocks and through it after, and CEM finds that path.
    #[serde(default)]
    pub rollout_weight: f64,
    /// What the IDM reads of a transition: `pair` (both pooled frames, the paper's IDM,
    /// default) or `delta` (their difference s_t+1 - s_t alone). A `delta` IDM cannot say
    /// where the agent is, only how the frame changed, so its latent cannot carry the next
    /// frame's absolute state: it stays what a robot action can predict.
    #[serde(default)]
    pub idm_input: crate::idm::IdmInput,
}

/// What conditions the world model's AdaLN-zero blocks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Conditioning {
    /// Latent actions inferred by the IDM from the frames themselves.
    #[default]
    Latent,
    /// True robot actions read from labeled shards.
    Action,
}

impl ModelConfig {
    pub fn tokens(&self) -> usize {
        self.grid[0] * self.grid[1]
    }
}

/// How standardisation scales the channels of the encoder tokens (`model.standardize_scale`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenScale {
    /// Every channel by its own standard deviation.
    #[default]
    Channel,
    /// Every channel by one deviation shared by all.
    Shared,
}

impl TokenScale {
    /// The name `model.standardize_scale` takes.
    pub fn name(self) -> &'static str {
        match self {
            TokenScale::Channel => "channel",
            TokenScale::Shared => "shared",
        }
    }
}

/// Which regulariser keeps z an action rather than a copy of the next frame.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RegularizerKind {
    Sparse,
    Noisy,
    Vq,
}

impl std::str::FromStr for RegularizerKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sparse" => Ok(Self::Sparse),
            "noisy" => Ok(Self::Noisy),
            "vq" => Ok(Self::Vq),
            _ => bail!("unknown regularizer `{s}` (expected sparse, noisy or vq)"),
        }
    }
}

/// Regulariser settings; only the fields of the selected `kind` are used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegularizerConfig {
    /// `sparse`, `noisy` or `vq` (default `sparse`).
    pub kind: RegularizerKind,
    /// sparse: weight of the VCM variance hinge, mean_j max(0, 1 - std_j) (1.0).
    pub vcm_variance: f64,
    /// sparse: weight of the VCM covariance term, sum_{i != j} C_ij^2 / d (1.0).
    pub vcm_covariance: f64,
    /// sparse: weight of the VCM mean term, mean_j (batch mean_j)^2 (1.0).
    pub vcm_mean: f64,
    /// sparse: lambda_l1 of the energy; capacity knob, 0.1 high / 0.5 low (0.1).
    pub l1: f64,
    /// sparse: lambda_l2 of the energy hinge max(sqrt(d) - |z|_2, 0) (1.0).
    pub l2: f64,
    /// noisy: beta of the KL to N(0, I); capacity knob, 0.001 high / 0.01 low (0.001).
    pub beta: f64,
    /// vq: codebook size k; capacity knob, 16 or 64 (16).
    pub codebook_size: usize,
    /// vq: commitment weight (0.25).
    pub commitment: f64,
    /// vq: a code unused for this many steps is reset to a random encoder output (100).
    pub dead_code_steps: usize,
}

/// Optimisers and schedule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Muon peak learning rate for 2-D weight matrices of the IDM and world model (8e-3).
    pub muon_lr: f64,
    /// Muon momentum, Nesterov (0.95).
    pub muon_momentum: f64,
    /// Muon decoupled weight decay (0: the paper gives weight decay for AdamW only).
    pub muon_weight_decay: f64,
    /// AdamW peak learning rate for every other parameter (3e-4).
    pub adamw_lr: f64,
    /// AdamW decoupled weight decay (0.04).
    pub weight_decay: f64,
    /// AdamW betas (0.9, 0.999).
    pub adamw_betas: [f64; 2],
    /// AdamW epsilon (1e-8).
    pub adamw_eps: f64,
    /// Fraction of steps of linear warmup before cosine decay (0.1).
    pub warmup_fraction: f64,
    /// Cosine floor as a fraction of the peak learning rate (0.0).
    pub min_lr_fraction: f64,
    /// Clip each parameter's gradient to this L2 norm (burn's `GradientClipping::Norm`);
    /// 0 disables (0: the paper does not clip).
    pub grad_clip: f64,
}

/// Training loop settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps (paper: 10,000).
    pub steps: usize,
    /// Clips per batch (paper: 256 frozen encoder).
    pub batch_size: usize,
    /// Seed of initialisation, batch sampling, dropout and noise (0).
    pub seed: u64,
    /// Log train metrics every this many steps (10).
    pub log_every: usize,
    /// Run validation every this many steps; 0 disables (100).
    pub val_every: usize,
    /// Validation batches per validation run (4).
    pub val_batches: usize,
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end (200).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk, newest first (3).
    pub keep_checkpoints: usize,
}

impl LamConfig {
    /// A named preset: `tiny` (CPU tests and demos) or `paper` (the paper's sizes).
    pub fn preset(name: &str) -> Result<Self> {
        let regularizer = RegularizerConfig {
            kind: RegularizerKind::Sparse,
            vcm_variance: 1.0,
            vcm_covariance: 1.0,
            vcm_mean: 1.0,
            l1: 0.1,
            l2: 1.0,
            beta: 0.001,
            codebook_size: 16,
            commitment: 0.25,
            dead_code_steps: 100,
        };
        let optim = OptimConfig {
            muon_lr: 8e-3,
            muon_momentum: 0.95,
            muon_weight_decay: 0.0,
            adamw_lr: 3e-4,
            weight_decay: 0.04,
            adamw_betas: [0.9, 0.999],
            adamw_eps: 1e-8,
            warmup_fraction: 0.1,
            min_lr_fraction: 0.0,
            grad_clip: 0.0,
        };
        match name {
            "tiny" => Ok(Self {
                model: ModelConfig {
                    embed_dim: 32,
                    grid: [4, 4],
                    frames: 8,
                    latent_dim: 16,
                    idm_hidden: 128,
                    wm_dim: 64,
                    wm_depth: 2,
                    wm_heads: 4,
                    wm_mlp_ratio: 4.0,
                    rope_theta: 10000.0,
                    action_dropout: 0.15,
                    conditioning: Conditioning::Latent,
                    residual: false,
                    standardize: false,
                    standardize_scale: TokenScale::Channel,
                    rollout_weight: 0.0,
                    idm_input: crate::idm::IdmInput::Pair,
                },
                regularizer,
                optim,
                train: TrainConfig {
                    steps: 400,
                    batch_size: 32,
                    seed: 0,
                    log_every: 10,
                    val_every: 100,
                    val_batches: 4,
                    checkpoint_every: 100,
                    keep_checkpoints: 3,
                },
            }),
            "paper" => Ok(Self {
                model: ModelConfig {
                    embed_dim: 768,
                    grid: [14, 14],
                    frames: 8,
                    latent_dim: 128,
                    idm_hidden: 1024,
                    wm_dim: 768,
                    wm_depth: 12,
                    wm_heads: 12,
                    wm_mlp_ratio: 4.0,
                    rope_theta: 10000.0,
                    action_dropout: 0.15,
                    conditioning: Conditioning::Latent,
                    residual: false,
                    standardize: false,
                    standardize_scale: TokenScale::Channel,
                    rollout_weight: 0.0,
                    idm_input: crate::idm::IdmInput::Pair,
                },
                regularizer,
                optim,
                train: TrainConfig {
                    steps: 10_000,
                    batch_size: 256,
                    seed: 0,
                    log_every: 10,
                    val_every: 500,
                    val_batches: 8,
                    checkpoint_every: 1000,
                    keep_checkpoints: 3,
                },
            }),
            other => Err(settings::unknown_preset::<Self>(other)),
        }
    }

    /// Loads a TOML file. Missing sections or fields are filled from `base_preset`
    /// (the file's `preset = "..."` key when present, else `tiny`).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        settings::from_toml_file(path)
    }

    /// Applies `section.field=value` overrides (value parsed as TOML, else taken as a string).
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        settings::with_overrides(self, overrides)
    }

    /// Checks values that serde cannot: ranges and divisibility.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        for (name, v) in [
            ("model.wm_dim", m.wm_dim),
            ("model.wm_heads", m.wm_heads),
            ("model.wm_depth", m.wm_depth),
            ("model.latent_dim", m.latent_dim),
            ("model.idm_hidden", m.idm_hidden),
        ] {
            ensure!(v > 0, "{name} must be > 0, got {v}");
        }
        ensure!(
            m.rollout_weight.is_finite() && m.rollout_weight >= 0.0,
            "model.rollout_weight must be a finite number >= 0, got {}",
            m.rollout_weight
        );
        ensure!(
            m.wm_dim % m.wm_heads == 0,
            "model.wm_dim ({}) must be divisible by model.wm_heads ({})",
            m.wm_dim,
            m.wm_heads
        );
        ensure!(
            (m.wm_dim / m.wm_heads) % 2 == 0,
            "model head dim (wm_dim / wm_heads = {}) must be even for RoPE",
            m.wm_dim / m.wm_heads
        );
        ensure!(m.frames >= 2, "model.frames must be >= 2, got {}", m.frames);
        ensure!(
            m.standardize || m.standardize_scale == TokenScale::Channel,
            "model.standardize_scale = \"{}\" scales standardised tokens: set \
             model.standardize = true as well",
            m.standardize_scale.name()
        );
        ensure!(
            (0.0..1.0).contains(&m.action_dropout),
            "model.action_dropout must be in [0, 1), got {}",
            m.action_dropout
        );
        ensure!(self.train.steps > 0, "train.steps must be > 0");
        ensure!(
            self.train.batch_size >= 2,
            "train.batch_size must be >= 2 (VCM needs batch statistics), got {}",
            self.train.batch_size
        );
        ensure!(
            (0.0..1.0).contains(&self.optim.warmup_fraction),
            "optim.warmup_fraction must be in [0, 1)"
        );
        if self.regularizer.kind == RegularizerKind::Vq {
            ensure!(
                self.regularizer.codebook_size >= 2,
                "regularizer.codebook_size must be >= 2"
            );
        }
        Ok(())
    }

    pub fn to_toml(&self) -> Result<String> {
        settings::to_toml(self)
    }
}

impl Settings for LamConfig {
    const WHAT: &'static str = "stage-1";
    const PRESETS: &'static [&'static str] = &["tiny", "paper"];
    fn preset(name: &str) -> Result<Self> {
        LamConfig::preset(name)
    }
    fn validate(&self) -> Result<()> {
        LamConfig::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        LamConfig::preset("tiny").unwrap().validate().unwrap();
        LamConfig::preset("paper").unwrap().validate().unwrap();
        assert!(LamConfig::preset("huge").is_err());
    }

    #[test]
    fn zero_model_sizes_are_named() {
        for key in ["model.wm_dim", "model.wm_heads", "model.latent_dim"] {
            let r = LamConfig::preset("tiny")
                .unwrap()
                .with_overrides(&[format!("{key}=0")])
                .and_then(|c| c.validate());
            let e = format!("{:#}", r.unwrap_err());
            assert!(e.contains(key) && e.contains("got 0"), "{e}");
        }
    }

    #[test]
    fn a_shared_scale_needs_standardised_tokens_and_a_known_name() {
        let tiny = LamConfig::preset("tiny").unwrap();
        let set = |kv: &[&str]| {
            tiny.clone()
                .with_overrides(&kv.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .and_then(|c| c.validate().map(|_| c))
        };
        let e = format!(
            "{:#}",
            set(&["model.standardize_scale=shared"]).unwrap_err()
        );
        assert!(e.contains("model.standardize = true"), "{e}");
        let ok = set(&["model.standardize=true", "model.standardize_scale=shared"]).unwrap();
        assert_eq!(ok.model.standardize_scale, TokenScale::Shared);
        assert!(set(&["model.standardize=true", "model.standardize_scale=global"]).is_err());
        // A run's config.toml written before the option reads as per-channel scaling.
        let old = tiny
            .to_toml()
            .unwrap()
            .replace("standardize_scale = \"channel\"\n", "");
        assert!(!old.contains("standardize_scale"));
        let back: LamConfig = toml::from_str(&old).unwrap();
        assert_eq!(back.model.standardize_scale, TokenScale::Channel);
    }

    #[test]
    fn overrides_apply_and_unknown_keys_are_named() {
        let cfg = LamConfig::preset("tiny")
            .unwrap()
            .with_overrides(&["train.steps=7".into(), "regularizer.kind=vq".into()])
            .unwrap();
        assert_eq!(cfg.train.steps, 7);
        assert_eq!(cfg.regularizer.kind, RegularizerKind::Vq);
        let err = LamConfig::preset("tiny")
            .unwrap()
            .with_overrides(&["train.stepz=7".into()]);
        assert!(format!("{:#}", err.unwrap_err()).contains("train.stepz"));
    }

    #[test]
    fn toml_file_with_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(
            &path,
            "preset = \"tiny\"\n[model]\nlatent_dim = 8\nwidth = 3\n",
        )
        .unwrap();
        let err = format!("{:#}", LamConfig::from_toml_file(&path).unwrap_err());
        assert!(err.contains("width") && err.contains("run.toml"), "{err}");
        std::fs::write(&path, "[model]\nlatent_dim = 8\n").unwrap();
        assert_eq!(
            LamConfig::from_toml_file(&path).unwrap().model.latent_dim,
            8
        );
    }
}
