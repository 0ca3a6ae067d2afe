//! Configuration of the LAWM branch: plain structs with documented defaults (in brackets).
//!
//! The defaults are CPU-sized for the built-in suite (32x32 frames, a few hundred thousand
//! parameters); the paper's setting of the policy's output (chunk n = 10, latent dim 7) is
//! kept.

use lam_model::settings::{self, Settings};
use serde::{Deserialize, Serialize};

/// Which action head the policy uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// BAKU's deterministic action-chunk head: an MLP from the trunk's readout token to the
    /// whole chunk (trained with MSE, the NLL of a fixed-variance Gaussian).
    Mlp,
    /// Diffusion-policy head: a denoiser over the flattened chunk, conditioned on the
    /// readout token and the noise level; sampled with deterministic DDIM.
    Diffusion,
}

impl std::str::FromStr for HeadKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "mlp" => Ok(Self::Mlp),
            "diffusion" => Ok(Self::Diffusion),
            other => anyhow::bail!("unknown head {other:?}; expected mlp or diffusion"),
        }
    }
}

/// The BAKU-like policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Side of the square input frames [32]; must be a multiple of 8.
    pub image_size: usize,
    /// Observation history: frames t-H+1..t seen by the trunk [2].
    pub history: usize,
    /// Actions per chunk, n [10].
    pub chunk: usize,
    /// Latent action dimension during world-model pretraining [7].
    pub latent_dim: usize,
    /// Instruction embedding dimension [32].
    pub instruction_dim: usize,
    /// Base width of the image encoder's convolutions (c, 2c, 4c) [16].
    pub channels: usize,
    /// Trunk width [64].
    pub d_model: usize,
    /// Trunk attention heads [4].
    pub heads: usize,
    /// Trunk layers [2].
    pub layers: usize,
    /// Action head [mlp].
    pub head: HeadKind,
    /// Hidden width of the action head [128].
    pub head_hidden: usize,
    /// Diffusion head: noise levels of the training schedule, K [20].
    pub diffusion_steps: usize,
    /// Diffusion head: DDIM steps when sampling a chunk (also during pretraining, where the
    /// sampled latent chunk is differentiated through every step) [4].
    pub diffusion_sample_steps: usize,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            image_size: 32,
            history: 2,
            chunk: 10,
            latent_dim: 7,
            instruction_dim: 32,
            channels: 16,
            d_model: 64,
            heads: 4,
            layers: 2,
            head: HeadKind::Mlp,
            head_hidden: 128,
            diffusion_steps: 20,
            diffusion_sample_steps: 4,
        }
    }
}

/// The DreamerV3-style recurrent state-space world model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorldModelConfig {
    /// Base width of the image encoder/decoder convolutions [16].
    pub channels: usize,
    /// Image embedding size [128].
    pub embed: usize,
    /// Deterministic (GRU) state size [128].
    pub deter: usize,
    /// Hidden width of the prior, posterior and GRU input layers [128].
    pub hidden: usize,
    /// Categorical groups of the stochastic state [8].
    pub groups: usize,
    /// Classes per group [8].
    pub classes: usize,
    /// Uniform mixture in the categorical probabilities (DreamerV3's unimix) [0.01].
    pub unimix: f64,
    /// Free bits: each KL term is clipped below at this many nats per sample [1.0].
    pub free_bits: f64,
    /// Weight of the dynamics term KL(sg(post) || prior) [0.5].
    pub dyn_scale: f64,
    /// Weight of the representation term KL(post || sg(prior)) [0.1].
    pub rep_scale: f64,
    /// beta: weight of the balanced KL against the reconstruction [1.0].
    pub kl_weight: f64,
}

impl Default for WorldModelConfig {
    fn default() -> Self {
        Self {
            channels: 16,
            embed: 128,
            deter: 128,
            hidden: 128,
            groups: 8,
            classes: 8,
            unimix: 0.01,
            free_bits: 1.0,
            dyn_scale: 0.5,
            rep_scale: 0.1,
            kl_weight: 1.0,
        }
    }
}

/// Optimisation and logging of one stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps [500].
    pub steps: usize,
    /// Samples per step [16].
    pub batch_size: usize,
    /// Peak AdamW learning rate [3e-4].
    pub lr: f64,
    /// AdamW weight decay [1e-4].
    pub weight_decay: f64,
    /// Gradient norm clip; 0 disables [10].
    pub grad_clip: f64,
    /// Linear warmup over this fraction of the steps, then cosine decay to 10% [0.05].
    pub warmup_fraction: f64,
    /// Seed of the initialisation and of every host-side random draw [0].
    pub seed: u64,
    /// Metrics line every this many steps [10].
    pub log_every: usize,
    /// Checkpoint every this many steps; the last step is always saved [0 = only the end].
    pub checkpoint_every: usize,
    /// Random-shift augmentation of the policy's input frames: every sample's history is
    /// translated by up to this many pixels in x and y, edges replicated (BAKU and DrQ use
    /// the same pad-and-crop) [2; 0 disables].
    #[serde(default)]
    pub augment_shift: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            batch_size: 16,
            lr: 3e-4,
            weight_decay: 1e-4,
            grad_clip: 10.0,
            warmup_fraction: 0.05,
            seed: 0,
            log_every: 10,
            checkpoint_every: 0,
            augment_shift: 2,
        }
    }
}

impl TrainConfig {
    /// Learning rate of step `s` (0-based): linear warmup, then cosine decay to 10% of peak.
    pub fn lr_at(&self, step: usize) -> f64 {
        let warm = lam_model::optim::warmup_steps_at_least_one(self.warmup_fraction, self.steps);
        lam_model::optim::warmup_cosine_lr(self.lr, warm, self.steps, 0.1, step)
    }
}

/// Everything a LAWM run needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawmConfig {
    pub policy: PolicyConfig,
    pub world_model: WorldModelConfig,
    pub train: TrainConfig,
}

impl Settings for LawmConfig {
    const WHAT: &'static str = "LAWM";
    const PRESETS: &'static [&'static str] = &["tiny", "paper-baku", "paper-diffusion", "smoke"];

    /// `tiny`: the CPU-sized defaults above. `paper-baku` / `paper-diffusion`: the sizes the
    /// LAWM paper trains with where it gives them: latent actions of dimension 7, chunks of
    /// 10 actions for the BAKU head and 16 for the diffusion head, and a DreamerV3 world
    /// model of about 50M parameters: DreamerV3's `size50m` widths (hidden 512, a 32 x 32
    /// categorical state, CNN depth 32, 64 x 64 frames) with the recurrent state at 2048
    /// instead of 4096, because this GRU is dense where DreamerV3's is a block GRU of 8
    /// blocks: 49.4M parameters here (`lam lawm pretrain` logs the count). The paper's
    /// policy is BAKU (7M parameters, sizes not given); ours widens the default trunk to 256
    /// channels and 8 layers (8.1M parameters with the BAKU head). `smoke`: the smallest
    /// widths that still run every part (chunks of 4, a 3-d latent, 16-wide trunk and world
    /// model, batch 4, a metrics line every step): seconds per run, for tests and for
    /// checking a pipeline end to end before a real run.
    fn preset(name: &str) -> anyhow::Result<Self> {
        let tiny = Self::default();
        let paper = |chunk: usize, head: HeadKind| Self {
            policy: PolicyConfig {
                image_size: 64,
                chunk,
                latent_dim: 7,
                head,
                channels: 32,
                d_model: 256,
                heads: 8,
                layers: 8,
                head_hidden: 1024,
                ..tiny.policy.clone()
            },
            world_model: WorldModelConfig {
                channels: 32,
                embed: 512,
                deter: 2048,
                hidden: 512,
                groups: 32,
                classes: 32,
                ..tiny.world_model.clone()
            },
            train: TrainConfig {
                batch_size: 16,
                lr: 1e-4,
                ..tiny.train.clone()
            },
        };
        match name {
            "tiny" => Ok(tiny),
            "paper-baku" => Ok(paper(10, HeadKind::Mlp)),
            "paper-diffusion" => Ok(paper(16, HeadKind::Diffusion)),
            "smoke" => Ok(Self {
                policy: PolicyConfig {
                    image_size: 32,
                    chunk: 4,
                    latent_dim: 3,
                    instruction_dim: 8,
                    channels: 4,
                    d_model: 16,
                    heads: 2,
                    layers: 1,
                    head_hidden: 16,
                    ..tiny.policy.clone()
                },
                world_model: WorldModelConfig {
                    channels: 4,
                    embed: 16,
                    deter: 16,
                    hidden: 16,
                    groups: 4,
                    classes: 4,
                    ..tiny.world_model.clone()
                },
                train: TrainConfig {
                    batch_size: 4,
                    log_every: 1,
                    ..tiny.train.clone()
                },
            }),
            other => Err(settings::unknown_preset::<Self>(other)),
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        LawmConfig::validate(self)
    }
}

impl LawmConfig {
    /// Checks sizes that the convolutions and the trunk depend on.
    pub fn validate(&self) -> anyhow::Result<()> {
        let p = &self.policy;
        anyhow::ensure!(
            p.image_size >= 16 && p.image_size.is_multiple_of(8),
            "image_size {} must be a multiple of 8 and at least 16",
            p.image_size
        );
        anyhow::ensure!(p.history >= 1, "history must be at least 1");
        anyhow::ensure!(p.chunk >= 1, "chunk must be at least 1");
        anyhow::ensure!(p.latent_dim >= 1, "latent_dim must be at least 1");
        anyhow::ensure!(
            p.d_model.is_multiple_of(p.heads),
            "d_model {} must be divisible by heads {}",
            p.d_model,
            p.heads
        );
        anyhow::ensure!(
            p.diffusion_sample_steps >= 1 && p.diffusion_sample_steps <= p.diffusion_steps,
            "diffusion_sample_steps {} must be in 1..={}",
            p.diffusion_sample_steps,
            p.diffusion_steps
        );
        let w = &self.world_model;
        anyhow::ensure!(
            w.groups >= 1 && w.classes >= 2,
            "the stochastic state needs at least 1 group of 2 classes"
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&w.unimix),
            "unimix {} must be in [0, 1)",
            w.unimix
        );
        let t = &self.train;
        anyhow::ensure!(t.steps >= 1, "steps must be at least 1");
        anyhow::ensure!(t.batch_size >= 1, "batch_size must be at least 1");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;

    #[test]
    fn paper_presets_have_the_papers_sizes() {
        for name in LawmConfig::PRESETS {
            LawmConfig::preset(name).unwrap().validate().unwrap();
        }
        let baku = LawmConfig::preset("paper-baku").unwrap();
        let diffusion = LawmConfig::preset("paper-diffusion").unwrap();
        assert_eq!((baku.policy.chunk, baku.policy.head), (10, HeadKind::Mlp));
        assert_eq!(
            (diffusion.policy.chunk, diffusion.policy.head),
            (16, HeadKind::Diffusion)
        );
        assert_eq!(
            (baku.policy.latent_dim, diffusion.policy.latent_dim),
            (7, 7)
        );
        // DreamerV3's 50M world model.
        let device = lam_model::device::parse_device("cpu").unwrap();
        let wm = baku
            .world_model
            .init(baku.policy.image_size, baku.policy.latent_dim, &device);
        let params = wm.num_params();
        assert!((45_000_000..55_000_000).contains(&params), "{params}");
        assert_eq!(LawmConfig::preset("tiny").unwrap(), LawmConfig::default());
    }
}
