//! The small trainable encoder of the simulated suite: a ViT over 64 x 64 frames giving an
//! 8 x 8 grid of 64-channel tokens by default. No pretrained weights ship with lam; it is
//! trained by [`crate::pretrain`].
//!
//! Read top to bottom:
//!
//! 1. Patch embedding: `p x p` patches (default 8) flattened channel-major and mapped to D by
//!    a linear layer; a learned position embedding per grid cell is added.
//! 2. `depth` pre-norm transformer blocks (multi-head attention, GELU MLP of width
//!    `mlp_ratio * D`).
//! 3. A final layer norm and a linear head: the head is left unnormalised so that the
//!    pretraining regulariser can shape the token distribution (a layer norm as the last
//!    operation would pin every token to the unit sphere of mean zero).
//! 4. Keypoint channels (spatial soft-argmax): for each of `keypoints` learned scores, a
//!    softmax over the frame's tokens gives attention weights `a_i`; token i gets the two
//!    channels `sqrt(N) a_i (x_i, y_i)` (its grid coordinates in [-1, 1]). The head fills the
//!    other `D - 2 keypoints` channels. The mean over a frame's tokens of those channels is the
//!    expected position `sum_i a_i (x_i, y_i) / sqrt(N)`, so a mean-pooled frame embedding
//!    holds the positions of whatever the scores pick out linearly (interpolating between
//!    tokens: finer than the patch grid).
//! 5. Or, with `pixel_keypoints`, the keypoints come from the pixels instead of the tokens
//!    (a patch can be several times wider than the agent): a small convolutional stem
//!    (4x4 stride-2 convolution to an S/2 map, per-channel normalisation over the map, SiLU,
//!    a 3x3 convolution to `keypoints` maps, per-channel normalisation) read out by a spatial
//!    softmax gives each keypoint's expected (x, y) in [-1, 1]; every token carries them
//!    divided by sqrt(N), so the mean-pooled frame embedding holds them on the same scale as
//!    the token-level keypoints.
//!
//! A checkpoint is a folder: `encoder.json` ([`SimCheckpointMeta`]: architecture name, config,
//! normalisation, pretraining summary) and `model.safetensors` (weights named by module path).

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
    PaddingConfig2d,
};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::activation::{silu, softmax};
use lam_ingest::Normalization;
use lam_model::fused;
use lam_model::spatial::spatial_softmax;
use lam_model::world_model::attention::self_attention;
use serde::{Deserialize, Serialize};

use crate::vit::patchify;

/// Value of [`SimCheckpointMeta::architecture`].
pub const ARCHITECTURE: &str = "lam-sim-encoder";
/// Metadata file of a sim-encoder checkpoint folder.
pub const META_FILE: &str = "encoder.json";
/// Weights file of a sim-encoder checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Shape of the sim encoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimEncoderConfig {
    /// Input side in pixels (frames are square). Default 64 (the suite's frame size).
    pub image_size: usize,
    /// Patch side; the token grid is `image_size / patch_size` per side. Default 8 (8 x 8).
    pub patch_size: usize,
    /// Token channels D. Default 64.
    pub dim: usize,
    /// Transformer blocks. Default 2.
    pub depth: usize,
    /// Attention heads. Default 4.
    pub heads: usize,
    /// MLP width over D. Default 2.0.
    pub mlp_ratio: f64,
    /// Keypoint channel pairs (the last `2 keypoints` of the D channels). Default 8;
    /// configurations written before keypoints existed read as 0.
    #[serde(default)]
    pub keypoints: usize,
    /// Take the keypoints from a convolutional stem on the pixels instead of the tokens
    /// (see the module docs). Default false; configurations written before it read as false.
    #[serde(default)]
    pub pixel_keypoints: bool,
    /// Channels of the pixel-keypoint stem's first convolution. Default 16.
    #[serde(default = "default_stem_channels")]
    pub stem_channels: usize,
    /// Gain on the stem's normalised maps before the spatial softmax: higher concentrates
    /// each keypoint's distribution (sharper, more precise positions). Default 1.0.
    #[serde(default = "default_sharpness")]
    pub keypoint_sharpness: f64,
}

fn default_sharpness() -> f64 {
    1.0
}

fn default_stem_channels() -> usize {
    16
}

impl Default for SimEncoderConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            patch_size: 8,
            dim: 64,
            depth: 2,
            heads: 4,
            mlp_ratio: 2.0,
            keypoints: 8,
            pixel_keypoints: false,
            stem_channels: default_stem_channels(),
            keypoint_sharpness: default_sharpness(),
        }
    }
}

impl SimEncoderConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.patch_size > 0 && self.image_size % self.patch_size == 0,
            "sim encoder: image_size {} must be a multiple of patch_size {}",
            self.image_size,
            self.patch_size
        );
        ensure!(
            self.heads > 0 && self.dim % self.heads == 0,
            "sim encoder: dim {} must be a multiple of heads {}",
            self.dim,
            self.heads
        );
        ensure!(
            self.depth > 0 && self.mlp_ratio > 0.0,
            "sim encoder: depth and mlp_ratio must be positive"
        );
        ensure!(
            2 * self.keypoints < self.dim,
            "sim encoder: 2 x keypoints ({}) must be below dim {}",
            2 * self.keypoints,
            self.dim
        );
        Ok(())
    }

    /// Token grid side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Module, Debug)]
pub struct SimEncoder {
    pub patch_embed: Linear,
    /// `[N, D]`.
    pub pos_embed: Param<Tensor<2>>,
    pub blocks: Vec<SimBlock>,
    pub norm: LayerNorm,
    pub head: Linear,
    /// Keypoint scores per token (absent when the config has no keypoints, or takes them
    /// from the pixels).
    pub keypoint_scores: Option<Linear>,
    /// Pixel-keypoint stem (with `pixel_keypoints`).
    pub keypoint_stem: Option<KeypointStem>,
    pub heads: usize,
    pub patch_size: usize,
    pub image_size: usize,
}

/// Convolutional stem whose maps a spatial softmax reads out as keypoints.
#[derive(Module, Debug)]
pub struct KeypointStem {
    pub conv1: Conv2d,
    pub norm1: GroupNorm,
    pub conv2: Conv2d,
    pub norm2: GroupNorm,
    /// Gain before the spatial softmax.
    pub sharpness: f32,
}

impl KeypointStem {
    pub fn new(channels: usize, keypoints: usize, sharpness: f32, device: &Device) -> Self {
        let norm = |c: usize| GroupNormConfig::new(c, c).with_affine(false).init(device);
        KeypointStem {
            conv1: Conv2dConfig::new([3, channels], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm1: norm(channels),
            conv2: Conv2dConfig::new([channels, keypoints], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            norm2: norm(keypoints),
            sharpness,
        }
    }

    /// Keypoint score maps `[B, K, S/2, S/2]` of frames `[B, 3, S, S]`; the spatial softmax
    /// of each map is its keypoint's distribution over the frame.
    pub fn maps(&self, frames: Tensor<4>) -> Tensor<4> {
        let x = silu(self.norm1.forward(self.conv1.forward(frames)));
        self.norm2
            .forward(self.conv2.forward(x))
            .mul_scalar(self.sharpness)
    }

    /// Keypoints `[B, K, 2]` (x, y in [-1, 1]) of frames `[B, 3, S, S]`.
    pub fn forward(&self, frames: Tensor<4>) -> Tensor<3> {
        let maps = self.maps(frames);
        let [b, k, _, _] = maps.dims();
        // [B, 2K] (all x, then all y) -> [B, K, 2].
        spatial_softmax(maps).reshape([b, 2, k]).swap_dims(1, 2)
    }
}

#[derive(Module, Debug)]
pub struct SimBlock {
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl SimBlock {
    pub fn new(d: usize, mlp_ratio: f64, device: &Device) -> Self {
        let h = (d as f64 * mlp_ratio).round() as usize;
        SimBlock {
            norm1: LayerNormConfig::new(d).init(device),
            qkv: LinearConfig::new(d, 3 * d).init(device),
            proj: LinearConfig::new(d, d).init(device),
            norm2: LayerNormConfig::new(d).init(device),
            fc1: LinearConfig::new(d, h).init(device),
            fc2: LinearConfig::new(h, d).init(device),
        }
    }

    /// Pre-norm block over `[B, L, D]`.
    pub fn forward(&self, x: Tensor<3>, heads: usize) -> Tensor<3> {
        let qkv = fused::linear(&self.qkv, self.norm1.forward(x.clone()));
        let x = x + fused::linear(&self.proj, self_attention(qkv, None, heads));
        let h = fused::linear(
            &self.fc2,
            fused::gelu(fused::linear(&self.fc1, self.norm2.forward(x.clone()))),
        );
        x + h
    }
}

impl SimEncoder {
    pub fn new(cfg: &SimEncoderConfig, device: &Device) -> Self {
        let (d, p) = (cfg.dim, cfg.patch_size);
        let n = cfg.grid() * cfg.grid();
        SimEncoder {
            patch_embed: LinearConfig::new(3 * p * p, d).init(device),
            pos_embed: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([n, d], device),
            blocks: (0..cfg.depth)
                .map(|_| SimBlock::new(d, cfg.mlp_ratio, device))
                .collect(),
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, d - 2 * cfg.keypoints).init(device),
            keypoint_scores: (cfg.keypoints > 0 && !cfg.pixel_keypoints)
                .then(|| LinearConfig::new(d, cfg.keypoints).init(device)),
            keypoint_stem: (cfg.keypoints > 0 && cfg.pixel_keypoints).then(|| {
                KeypointStem::new(
                    cfg.stem_channels,
                    cfg.keypoints,
                    cfg.keypoint_sharpness as f32,
                    device,
                )
            }),
            heads: cfg.heads,
            patch_size: p,
            image_size: cfg.image_size,
        }
    }

    /// Tokens `[B, N, D]` of frames `[B, 3, S, S]` (S = `image_size`), row-major over the grid.
    /// [`forward`](Self::forward) read back to the host: appends the tokens (`[B, N, D]`
    /// row-major) to `tokens` and each frame's mean token (`[B, D]`) to `means`; returns
    /// `[N, D]`.
    pub fn forward_host(
        &self,
        frames: Tensor<4>,
        tokens: &mut Vec<f32>,
        means: &mut Vec<f32>,
    ) -> [usize; 2] {
        let out = self.forward(frames);
        let [_, n, d] = out.dims();
        means.extend(
            out.clone()
                .mean_dim(1)
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32"),
        );
        tokens.extend(out.into_data().try_into_vec::<f32>().expect("f32"));
        [n, d]
    }

    pub fn forward(&self, frames: Tensor<4>) -> Tensor<3> {
        let [_, c, h, w] = frames.dims();
        assert!(
            c == 3 && h == self.image_size && w == self.image_size,
            "sim encoder expects frames [B, 3, {s}, {s}], got [.., {c}, {h}, {w}]",
            s = self.image_size
        );
        let stem_keypoints = self
            .keypoint_stem
            .as_ref()
            .map(|stem| stem.forward(frames.clone()));
        let x = fused::linear(&self.patch_embed, patchify(frames, self.patch_size))
            + self.pos_embed.val().unsqueeze::<3>();
        let mut x = x;
        for block in &self.blocks {
            x = block.forward(x, self.heads);
        }
        let x = self.norm.forward(x);
        let [b, n, _] = x.dims();
        if let Some(kp) = stem_keypoints {
            // Every token carries the frame's keypoints / sqrt(N): the mean over tokens is
            // position / sqrt(N), as for the token-level keypoints.
            let k = kp.dims()[1];
            let kp = kp
                .reshape([b, 1, 2 * k])
                .div_scalar((n as f32).sqrt())
                .expand([b, n, 2 * k]);
            return Tensor::cat(vec![fused::linear(&self.head, x), kp], 2);
        }
        let Some(scores) = &self.keypoint_scores else {
            return fused::linear(&self.head, x);
        };
        let a = softmax(fused::linear(scores, x.clone()), 1); // [B, N, K]
        let k = a.dims()[2];
        let side = self.image_size / self.patch_size;
        let coord = |v: usize| (2 * v + 1) as f32 / side as f32 - 1.0;
        let gx: Vec<f32> = (0..n).map(|i| coord(i % side)).collect();
        let gy: Vec<f32> = (0..n).map(|i| coord(i / side)).collect();
        let device = x.device();
        let grid = |g: Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(g, [1, n, 1]), &device)
                .mul_scalar((n as f32).sqrt())
        };
        let kx = a.clone() * grid(gx);
        let ky = a * grid(gy);
        let kp = Tensor::stack::<4>(vec![kx, ky], 3).reshape([b, n, 2 * k]);
        Tensor::cat(vec![fused::linear(&self.head, x), kp], 2)
    }
}

/// `encoder.json` of a sim-encoder checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimCheckpointMeta {
    /// Always [`ARCHITECTURE`].
    pub architecture: String,
    pub config: SimEncoderConfig,
    /// Normalisation the encoder was trained with (frames must be prepared the same way).
    pub norm: Normalization,
    /// What pretraining reported (steps, losses, embedding statistics before and after).
    #[serde(default)]
    pub pretrain: serde_json::Value,
}

/// Writes `model` and `meta` to the folder `dir`, atomically: a temporary folder renamed.
pub fn save_checkpoint(dir: &Path, model: &SimEncoder, meta: &SimCheckpointMeta) -> Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no folder name", dir.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let mut store = SafetensorsStore::from_file(tmp.join(WEIGHTS_FILE)).overwrite(true);
    model
        .save_into(&mut store)
        .with_context(|| format!("cannot write {}", tmp.join(WEIGHTS_FILE).display()))?;
    fs::write(tmp.join(META_FILE), serde_json::to_string_pretty(meta)?)?;
    // The same folder as a model folder (config.json + README.md) to share or load by path.
    let summary = &meta.pretrain["summary"];
    let mut figures = Vec::new();
    for part in ["after", "probe_after"] {
        figures.extend(lam_model::model_folder::numeric_figures(
            part,
            &summary[part],
            3,
        ));
    }
    lam_model::model_folder::describe_in_place(
        &tmp,
        lam_model::model_folder::kind::SIM_ENCODER,
        &serde_json::to_value(meta)?,
        &lam_model::model_folder::Card {
            summary: "The sim encoder of lam: a small ViT (optionally with pixel keypoints) \
                      for the simulated suite's frames, trained by `lam encoder pretrain` or end \
                      to end with the latent action model (`lam train --frames`).",
            figures: &figures,
            usage: &[
                "lam encoder info MODEL",
                "lam embed --data VIDEO_OR_DATASET --encoder MODEL --out SHARDS",
                "lam plan eval --run RUN --encoder MODEL --task reach --out OUT",
            ],
        },
    )?;
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

/// Whether `dir` holds a sim encoder: its checkpoint file, or a model folder of that kind.
pub fn is_sim_encoder(dir: &Path) -> bool {
    dir.join(META_FILE).exists()
        || lam_model::model_folder::kind_of(dir).as_deref()
            == Some(lam_model::model_folder::kind::SIM_ENCODER)
}

/// The settings of a sim encoder folder: `encoder.json`, or the `config.json` of a model
/// folder that holds only `config.json` and the weights.
pub fn read_meta(dir: &Path) -> Result<SimCheckpointMeta> {
    let meta_path = dir.join(META_FILE);
    if !meta_path.exists() {
        let cfg =
            lam_model::model_folder::read_config(dir, lam_model::model_folder::kind::SIM_ENCODER)?;
        return serde_json::from_value(cfg)
            .with_context(|| format!("malformed {}", dir.join("config.json").display()));
    }
    let text = fs::read_to_string(&meta_path)
        .with_context(|| format!("cannot read {}", meta_path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", meta_path.display()))
}

/// Reads a checkpoint folder written by [`save_checkpoint`].
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<(SimEncoder, SimCheckpointMeta)> {
    let meta = read_meta(dir)?;
    let meta_path = dir.join(META_FILE);
    ensure!(
        meta.architecture == ARCHITECTURE,
        "{}: architecture is `{}`, expected `{ARCHITECTURE}`",
        meta_path.display(),
        meta.architecture
    );
    meta.config
        .validate()
        .with_context(|| format!("in {}", meta_path.display()))?;
    let weights = dir.join(WEIGHTS_FILE);
    ensure!(weights.exists(), "missing weights {}", weights.display());
    lam_model::checkpoint::check_finite(&weights)?;
    let mut model = SimEncoder::new(&meta.config, device);
    let mut store = SafetensorsStore::from_file(&weights);
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot load {}: {e}", weights.display()))?;
    ensure!(
        result.errors.is_empty() && result.missing.is_empty(),
        "{} does not fit the config in {}: missing {:?}, errors {:?}",
        weights.display(),
        meta_path.display(),
        result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
        result.errors
    );
    Ok((model, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn keypoint_channels_pool_to_expected_positions() {
        let device = Device::flex();
        let cfg = SimEncoderConfig {
            image_size: 32,
            keypoints: 3,
            ..SimEncoderConfig::default()
        };
        let enc = SimEncoder::new(&cfg, &device);
        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let out = enc.forward(x);
        let [b, n, d] = out.dims();
        assert_eq!((b, n, d), (2, 16, 64));
        let v = out.into_data().try_into_vec::<f32>().unwrap();
        // The last 6 channels: sqrt(N) a_i (x_i, y_i); their mean over the tokens is a
        // weighted average of grid coordinates (in [-1, 1]) divided by sqrt(N).
        for f in 0..b {
            for c in d - 6..d {
                let mean: f32 = (0..n).map(|i| v[(f * n + i) * d + c]).sum::<f32>() / n as f32;
                assert!(mean.abs() <= 1.0 / (n as f32).sqrt() + 1e-6, "{mean}");
            }
        }
        // Configurations written before keypoints existed read as none.
        let old: SimEncoderConfig = serde_json::from_str(
            r#"{"image_size": 64, "patch_size": 8, "dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 2.0}"#,
        )
        .unwrap();
        assert_eq!(old.keypoints, 0);
        assert!(!old.pixel_keypoints);
    }

    #[test]
    fn pixel_keypoints_find_a_dark_spot() {
        let device = Device::flex();
        let cfg = SimEncoderConfig {
            image_size: 32,
            keypoints: 2,
            pixel_keypoints: true,
            ..SimEncoderConfig::default()
        };
        let enc = SimEncoder::new(&cfg, &device);
        assert!(enc.keypoint_scores.is_none() && enc.keypoint_stem.is_some());
        let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
        let out = enc.forward(x.clone());
        assert_eq!(out.dims(), [2, 16, 64]);
        // Read back from the first token (as keypoint-transport pretraining does), they are
        // the stem's keypoints `[B, K, 2]` to the bit (sqrt(16) is a power of two).
        let stem_kp = enc.keypoint_stem.as_ref().unwrap().forward(x.clone());
        let read = out
            .clone()
            .slice(s![.., 0..1, 60..64])
            .reshape([2, 2, 2])
            .mul_scalar(4.0);
        assert_eq!(
            read.into_data().try_into_vec::<f32>().unwrap(),
            stem_kp.into_data().try_into_vec::<f32>().unwrap()
        );
        let v = out.into_data().try_into_vec::<f32>().unwrap();
        // Every token carries the same keypoints, positions / sqrt(16) in [-1/4, 1/4].
        for f in 0..2 {
            for c in 60..64 {
                let first = v[f * 16 * 64 + c];
                assert!(first.abs() <= 0.25 + 1e-6, "{first}");
                for t in 1..16 {
                    assert_eq!(v[(f * 16 + t) * 64 + c], first);
                }
            }
        }
        // The keypoints follow what moves: shifting a dark square along x (away from the
        // borders) moves every keypoint's x and leaves its y (the stem is convolutional).
        let stem = enc.keypoint_stem.as_ref().unwrap();
        let mut img = vec![0.0f32; 3 * 32 * 32];
        let mut shifted = img.clone();
        for c in 0..3 {
            for (dst, x0) in [(&mut img, 8usize), (&mut shifted, 18usize)] {
                for y in 12..16 {
                    for x in x0..x0 + 4 {
                        dst[c * 1024 + y * 32 + x] = -3.0;
                    }
                }
            }
        }
        let kp = |data: Vec<f32>| {
            stem.forward(Tensor::<4>::from_data(
                TensorData::new(data, [1, 3, 32, 32]),
                &device,
            ))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
        };
        let (a, b) = (kp(img), kp(shifted));
        for k in 0..2 {
            let (dx, dy) = (b[2 * k] - a[2 * k], b[2 * k + 1] - a[2 * k + 1]);
            // How far x moves depends on the random stem (once only 0.0009); that y does
            // not move does not.
            assert!(
                dx.abs() > 1e-4 && dy.abs() < 0.01 * dx.abs(),
                "keypoint {k}: dx {dx}, dy {dy}"
            );
        }
    }
}
