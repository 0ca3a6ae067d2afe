//! One type for every encoder lam can embed frames with, chosen from what a path holds:
//!
//! - a Hugging Face folder (`config.json` + `*.safetensors`) whose architecture is
//!   `Dinov2Model`, `Dinov2WithRegistersModel` or `VJEPA2Model` (or a task model nesting one:
//!   `*ForImageClassification`, `VJEPA2ForVideoClassification`; or only `model_type`);
//! - a sim-encoder checkpoint folder (`encoder.json` + `model.safetensors`, written by
//!   `lam encoder pretrain`).
//!
//! [`Encoder::encode`] maps clips `[B, T, 3, H, W]` (normalised as [`EncoderInfo::norm`] says) to
//! per-frame patch tokens `[B, T, N, D]`, row-major over the `rows x cols` patch grid, or with
//! [`Pooling::Mean`] to `[B, T, 1, D]`.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use lam_ingest::{Normalization, Preprocessor};
use serde::{Deserialize, Serialize};

use crate::context::ContextProjection;
use crate::dinov2::Dinov2;
use crate::hf::HfFolder;
use crate::sim::{self, SimEncoder};
use crate::vjepa2::{FrameMode, VJepa2};

/// How the tokens of a frame are reduced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// All patch tokens: `[T, rows * cols, D]`. Default.
    #[default]
    None,
    /// The mean patch token: `[T, 1, D]`.
    Mean,
    /// Sim encoders with keypoints: the frame's keypoint positions alone, `[T, 1, 2K]`
    /// (x, y in [-1, 1] per keypoint; the mean token's keypoint channels times sqrt(N)),
    /// without the head's channels.
    Keypoints,
    /// The keypoint positions followed by the encoder folder's episode-static context features
    /// (`context.json`, fitted by `lam encoder context`: see [`crate::context`]), `[T, 1, 2K + C]`:
    /// what moves, and the scene layout the keypoints drop.
    #[serde(rename = "keypoints-context")]
    KeypointsContext,
}

/// The loaded model.
#[derive(Debug)]
pub enum Model {
    Dinov2(Dinov2),
    VJepa2(VJepa2, FrameMode),
    Sim(SimEncoder),
}

/// Facts about an encoder, printed by `lam encoder info` and stored in shard indexes.
#[derive(Clone, Debug, Serialize)]
pub struct EncoderInfo {
    /// The folder loaded.
    pub path: PathBuf,
    /// `Dinov2Model`, `Dinov2WithRegistersModel`, `VJEPA2Model` or `lam-sim-encoder`.
    pub architecture: String,
    /// Token channels D.
    pub dim: usize,
    /// Pixels per patch side.
    pub patch_size: usize,
    /// The input side the encoder was trained at (DINOv2: 224, the usual evaluation size;
    /// V-JEPA 2: `crop_size`; sim: `image_size`).
    pub default_size: usize,
    /// Whether any input side is accepted (ViTs with resizable positions or RoPE) or only
    /// `default_size` (the sim encoder).
    pub any_size: bool,
    /// Normalisation the encoder expects.
    pub norm: Normalization,
    /// Number of parameters.
    pub params: usize,
    /// The architecture's own config, as read.
    pub config: serde_json::Value,
}

/// Tokens `[B, T, N, D]` reduced as `pooling` says (`keypoints`: the sim encoder's keypoint
/// pairs, the last `2 keypoints` channels). The one pooling of lam: embedding, planning,
/// serving and end-to-end training all go through it.
pub fn pool(tokens: Tensor<4>, pooling: Pooling, keypoints: usize) -> Tensor<4> {
    match pooling {
        Pooling::None => tokens,
        Pooling::Mean => tokens.mean_dim(2),
        Pooling::KeypointsContext => panic!(
            "keypoints-context pooling needs the encoder's context projection: use Encoder::encode"
        ),
        Pooling::Keypoints => {
            let [b, t, n, d] = tokens.dims();
            let k = keypoints;
            tokens
                .mean_dim(2)
                .slice(s![.., .., .., d - 2 * k..d])
                .mul_scalar((n as f32).sqrt())
                .reshape([b, t, 1, 2 * k])
        }
    }
}

pub struct Encoder {
    pub model: Model,
    pub info: EncoderInfo,
    pub pooling: Pooling,
    /// The folder's `context.json`, if it has one (for [`Pooling::KeypointsContext`]).
    pub context: Option<ContextProjection>,
}

impl Encoder {
    /// Loads the encoder at `path` (see the module docs), V-JEPA 2 in its default
    /// [`FrameMode::PerFrame`], no pooling.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if sim::is_sim_encoder(path) {
            let (model, meta) = sim::load_checkpoint(path, device)?;
            let info = EncoderInfo {
                path: path.to_path_buf(),
                architecture: sim::ARCHITECTURE.into(),
                dim: meta.config.dim,
                patch_size: meta.config.patch_size,
                default_size: meta.config.image_size,
                any_size: false,
                norm: meta.norm,
                params: model.num_params(),
                config: serde_json::to_value(&meta.config)?,
            };
            return Ok(Self {
                model: Model::Sim(model),
                info,
                pooling: Pooling::None,
                context: ContextProjection::load_beside(path)?,
            });
        }
        if !path.join("config.json").exists() {
            bail!(
                "{} is not an encoder folder: it has neither config.json (a Hugging Face \
                 model) nor {} (a sim-encoder checkpoint)",
                path.display(),
                sim::META_FILE
            );
        }
        let mut folder = HfFolder::open(path)?;
        let arch = folder.architecture()?;
        let (model, architecture, dim, patch_size, default_size, config, params) =
            match arch.as_str() {
                "Dinov2Model"
                | "Dinov2ForImageClassification"
                | "dinov2"
                | "Dinov2WithRegistersModel"
                | "Dinov2WithRegistersForImageClassification"
                | "dinov2_with_registers" => {
                    let (m, cfg) = Dinov2::load(&mut folder, device)?;
                    let name = if cfg.num_register_tokens > 0 || arch.contains("egisters") {
                        "Dinov2WithRegistersModel"
                    } else {
                        "Dinov2Model"
                    };
                    let params = m.num_params();
                    (
                        Model::Dinov2(m),
                        name,
                        cfg.hidden_size,
                        cfg.patch_size,
                        224,
                        serde_json::to_value(&cfg)?,
                        params,
                    )
                }
                "VJEPA2Model" | "VJEPA2ForVideoClassification" | "vjepa2" => {
                    let (m, cfg) = VJepa2::load(&mut folder, device)?;
                    let params = m.num_params();
                    (
                        Model::VJepa2(m, FrameMode::PerFrame),
                        "VJEPA2Model",
                        cfg.hidden_size,
                        cfg.patch_size,
                        cfg.crop_size,
                        serde_json::to_value(&cfg)?,
                        params,
                    )
                }
                other => bail!(
                    "{}: unknown architecture `{other}`; lam-encoder loads Dinov2Model, \
                     Dinov2WithRegistersModel and VJEPA2Model",
                    folder.config_path().display()
                ),
            };
        Ok(Self {
            model,
            info: EncoderInfo {
                path: path.to_path_buf(),
                architecture: architecture.into(),
                dim,
                patch_size,
                default_size,
                any_size: true,
                norm: Normalization::IMAGENET,
                params,
                config,
            },
            pooling: Pooling::None,
            context: ContextProjection::load_beside(path)?,
        })
    }

    /// Sets how V-JEPA 2 maps frames to tokens (no effect on other encoders).
    pub fn with_frame_mode(mut self, mode: FrameMode) -> Self {
        if let Model::VJepa2(_, m) = &mut self.model {
            *m = mode;
        }
        self
    }

    pub fn with_pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = pooling;
        self
    }

    /// This encoder set up to give the tokens a trained run expects at frame side `size`: a run
    /// trained on one token per frame (shards embedded with `--pooling mean`) gets mean-pooled
    /// frames. Errors name both shapes when the encoder cannot give the run's tokens. The one
    /// way planning and serving encode frames for a run.
    pub fn for_run(self, grid: [usize; 2], dim: usize, size: usize, run: &Path) -> Result<Self> {
        self.check_size(size)?;
        // Decided from the unpooled tokens, so one loaded encoder serves run after run.
        let base = self.with_pooling(Pooling::None);
        let k = base.keypoints();
        let enc = if grid == [1, 1] && base.grid(size) != [1, 1] {
            // One token per frame: the keypoints alone (or with the folder's context features)
            // when the run's width says so.
            let context = base.context.as_ref().map_or(0, |c| c.outputs);
            if k > 0 && dim == 2 * k && dim != base.info.dim {
                base.with_pooling(Pooling::Keypoints)
            } else if k > 0 && context > 0 && dim == 2 * k + context && dim != base.info.dim {
                base.with_pooling(Pooling::KeypointsContext)
            } else {
                base.with_pooling(Pooling::Mean)
            }
        } else {
            base
        };
        let got = enc.grid(size);
        anyhow::ensure!(
            got == grid && enc.out_dim() == dim,
            "{} was trained on tokens of grid {grid:?} x {dim} channels, but {} gives {got:?} x \
             {} at size {size}; pass the encoder the run's shards were embedded with",
            run.display(),
            enc.info.path.display(),
            enc.out_dim()
        );
        Ok(enc)
    }

    /// Checks that frames of side `size` are accepted.
    pub fn check_size(&self, size: usize) -> Result<()> {
        if !self.info.any_size && size != self.info.default_size {
            bail!(
                "{} ({}) takes {s}x{s} frames only, got size {size}",
                self.info.path.display(),
                self.info.architecture,
                s = self.info.default_size
            );
        }
        if size < self.info.patch_size {
            bail!(
                "size {size} is smaller than one patch ({} px) of {}",
                self.info.patch_size,
                self.info.path.display()
            );
        }
        Ok(())
    }

    /// Keypoints of a sim encoder (0 for other encoders or none).
    pub fn keypoints(&self) -> usize {
        match &self.model {
            Model::Sim(_) => self.info.config["keypoints"].as_u64().unwrap_or(0) as usize,
            _ => 0,
        }
    }

    /// Channels of the tokens after pooling.
    pub fn out_dim(&self) -> usize {
        match self.pooling {
            Pooling::Keypoints => 2 * self.keypoints(),
            Pooling::KeypointsContext => {
                2 * self.keypoints() + self.context.as_ref().map_or(0, |c| c.outputs)
            }
            _ => self.info.dim,
        }
    }

    /// Token grid `[rows, cols]` of a `size x size` frame, after pooling.
    pub fn grid(&self, size: usize) -> [usize; 2] {
        match self.pooling {
            Pooling::Mean | Pooling::Keypoints | Pooling::KeypointsContext => [1, 1],
            Pooling::None => [size / self.info.patch_size, size / self.info.patch_size],
        }
    }

    /// Per-frame tokens `[B, T, N, D]` of clips `[B, T, 3, H, W]`.
    pub fn encode(&self, clips: Tensor<5>) -> Tensor<4> {
        let [b, t, c, h, w] = clips.dims();
        let tokens = match &self.model {
            Model::Dinov2(m) => {
                let out = m.patch_tokens(clips.reshape([b * t, c, h, w]));
                let [_, n, d] = out.dims();
                out.reshape([b, t, n, d])
            }
            Model::Sim(m) => {
                let out = m.forward(clips.reshape([b * t, c, h, w]));
                let [_, n, d] = out.dims();
                out.reshape([b, t, n, d])
            }
            Model::VJepa2(m, mode) => m.frame_tokens(clips, *mode),
        };
        let k = self.keypoints();
        assert!(
            !matches!(self.pooling, Pooling::Keypoints | Pooling::KeypointsContext)
                || (k > 0 && 2 * k < self.info.dim),
            "keypoint pooling needs a sim encoder with keypoints ({} has {k})",
            self.info.path.display()
        );
        if self.pooling != Pooling::KeypointsContext {
            return pool(tokens, self.pooling, k);
        }
        let context = self.context.as_ref().unwrap_or_else(|| {
            panic!(
                "keypoints-context pooling needs {}/{} (lam encoder context)",
                self.info.path.display(),
                crate::context::CONTEXT_FILE
            )
        });
        let [b, t, n, d] = tokens.dims();
        let device = tokens.device();
        let keypoints = pool(tokens.clone(), Pooling::Keypoints, k);
        let mean =
            Tensor::<2>::from_data(TensorData::new(context.mean.clone(), [1, n * d]), &device);
        let weights = Tensor::<2>::from_data(
            TensorData::new(context.weights.clone(), [n * d, context.outputs]),
            &device,
        );
        let extra = (tokens.reshape([b * t, n * d]) - mean)
            .matmul(weights)
            .reshape([b, t, 1, context.outputs]);
        Tensor::cat(vec![keypoints, extra], 3)
    }

    /// Tokens `[1, N, D]` of one RGB frame (`height x width x 3` bytes, row-major), prepared
    /// by the embedding pipeline's own [`Preprocessor`] (short side resized to `size` by
    /// swscale, bilinear; centre crop; this encoder's normalisation), so frames seen while
    /// acting match the clips a run was trained on. Used by closed-loop control and the policy
    /// server, where frames arrive one at a time.
    pub fn encode_rgb(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        size: usize,
        device: &Device,
    ) -> Result<Tensor<3>> {
        self.check_size(size)?;
        let mut chw = Vec::with_capacity(3 * size * size);
        Preprocessor::new(size as u32, &self.info.norm)
            .process_rgb(rgb, width as u32, height as u32, &mut chw)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let x = Tensor::<5>::from_data(TensorData::new(chw, [1, 1, 3, size, size]), device);
        Ok(self.encode(x).squeeze_dim::<3>(0))
    }

    /// [`Encoder::encode`] on host data: `clips` is `[B, T, 3, H, W]` row-major; returns
    /// `[B, T, N, D]` row-major.
    pub fn encode_host(
        &self,
        clips: Vec<f32>,
        shape: [usize; 5],
        device: &Device,
    ) -> Result<Vec<f32>> {
        let x = Tensor::<5>::from_data(TensorData::new(clips, shape), device);
        self.encode(x)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading embeddings back: {e:?}"))
    }
}
