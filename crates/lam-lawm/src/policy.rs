//! The BAKU-like imitation policy: (observation history, instruction) -> action chunk.
//!
//! Read top to bottom:
//!
//! 1. **Image encoder with FiLM** ([`FilmEncoder`]): two stride-2 4x4 convolutions and one
//!    3x3 convolution (c, 2c, 4c channels; an S/4 x S/4 map), each followed by a per-channel
//!    normalisation over the map (GroupNorm, one group per channel), FiLM,
//!    `x * (1 + gamma) + beta` with (gamma, beta) = Linear(instruction embedding), and SiLU.
//!    The map is read out by a spatial softmax (the expected x, y position of every channel,
//!    as in robomimic and Diffusion Policy) next to its global average, and projected to
//!    the trunk width. Each of the H history frames is encoded alone.
//! 2. **Trunk**: a pre-norm transformer encoder (no dropout) over the sequence
//!    `[instruction token, frame token t-H+1, ..., frame token t, readout token]` with a
//!    learned position embedding; the readout token's output is the policy's feature.
//! 3. **Action-chunk head**, one of
//!    - [`ChunkHead`] (BAKU): `Linear -> SiLU -> action_out`, giving the n x d chunk at once;
//!    - [`DiffusionHead`] (Diffusion Policy): a denoiser eps(chunk_k, k, feature) over the
//!      flattened chunk with a DDPM schedule of K levels, sampled with deterministic DDIM.
//!
//! The action dimension d is the latent dimension during world-model pretraining and the
//! robot's action dimension after finetuning; [`Policy::reinit_action_layers`] swaps the
//! layers whose shape depends on it (`action_out`, and the diffusion head's `chunk_in`) for
//! freshly initialised ones.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::silu;

pub use lam_model::spatial::spatial_softmax;

use crate::config::{HeadKind, PolicyConfig};

/// Stride-2 4x4 convolution with padding 1 (halves the side).
pub(crate) fn down_conv(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [4, 4])
        .with_stride([2, 2])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

#[derive(Module, Debug)]
pub struct FilmEncoder {
    pub convs: Vec<Conv2d>,
    /// Per-channel normalisation over the map after every convolution (GroupNorm with one
    /// group per channel): removes the uniform background so that small objects stand out.
    pub norms: Vec<GroupNorm>,
    /// One FiLM generator per convolution: instruction -> (gamma, beta).
    pub films: Vec<Linear>,
    pub proj: Linear,
}

/// 3x3 convolution with stride 1 and padding 1 (keeps the side).
fn same_conv(c_in: usize, c_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl FilmEncoder {
    pub fn new(cfg: &PolicyConfig, device: &Device) -> Self {
        let c = cfg.channels;
        let widths = [3, c, 2 * c, 4 * c];
        let convs = vec![
            down_conv(widths[0], widths[1], device),
            down_conv(widths[1], widths[2], device),
            same_conv(widths[2], widths[3], device),
        ];
        let norms = (1..4)
            .map(|i| {
                GroupNormConfig::new(widths[i], widths[i])
                    .with_affine(false)
                    .init(device)
            })
            .collect();
        let films = (0..3)
            .map(|i| {
                LinearConfig::new(cfg.instruction_dim, 2 * widths[i + 1])
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 0.02,
                    })
                    .init(device)
            })
            .collect();
        Self {
            convs,
            norms,
            films,
            proj: LinearConfig::new(3 * widths[3], cfg.d_model).init(device),
        }
    }

    /// `images`: `[N, 3, S, S]`, `instr`: `[N, I]` -> `[N, d_model]`.
    pub fn forward(&self, images: Tensor<4>, instr: Tensor<2>) -> Tensor<2> {
        let mut x = images;
        for ((conv, norm), film) in self.convs.iter().zip(&self.norms).zip(&self.films) {
            x = norm.forward(conv.forward(x));
            let [n, ch, _, _] = x.dims();
            let gb = film.forward(instr.clone()).reshape([n, 2, ch, 1, 1]);
            let gamma = gb.clone().slice(s![.., 0..1]).squeeze_dim::<4>(1);
            let beta = gb.slice(s![.., 1..2]).squeeze_dim::<4>(1);
            x = silu(x * (gamma + 1.0) + beta);
        }
        let [n, ch, h, w] = x.dims();
        let keypoints = spatial_softmax(x.clone());
        let pooled = x.reshape([n, ch, h * w]).mean_dim(2).reshape([n, ch]);
        self.proj.forward(Tensor::cat(vec![keypoints, pooled], 1))
    }
}

/// BAKU's deterministic chunk head.
#[derive(Module, Debug)]
pub struct ChunkHead {
    pub hidden: Linear,
    pub action_out: Linear,
}

/// Diffusion-policy head: eps(chunk_k, k, feature).
#[derive(Module, Debug)]
pub struct DiffusionHead {
    pub chunk_in: Linear,
    pub cond_in: Linear,
    pub mid: Linear,
    pub action_out: Linear,
    /// Sinusoidal embedding width of the noise level.
    pub time_dim: usize,
}

#[derive(Module, Debug)]
pub struct Policy {
    pub encoder: FilmEncoder,
    pub instr_token: Linear,
    pub readout: Param<Tensor<2>>,
    pub pos: Param<Tensor<2>>,
    pub trunk: TransformerEncoder,
    pub mlp_head: Option<ChunkHead>,
    pub diffusion_head: Option<DiffusionHead>,
    pub chunk: usize,
    pub action_dim: usize,
}

fn head_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out).init(device)
}

impl ChunkHead {
    fn new(d_model: usize, hidden: usize, out: usize, device: &Device) -> Self {
        Self {
            hidden: head_linear(d_model, hidden, device),
            action_out: head_linear(hidden, out, device),
        }
    }

    fn forward(&self, feat: Tensor<2>) -> Tensor<2> {
        self.action_out.forward(silu(self.hidden.forward(feat)))
    }
}

impl DiffusionHead {
    fn new(d_model: usize, hidden: usize, out: usize, device: &Device) -> Self {
        let time_dim = 32;
        Self {
            chunk_in: head_linear(out, hidden, device),
            cond_in: head_linear(d_model + time_dim, hidden, device),
            mid: head_linear(hidden, hidden, device),
            action_out: head_linear(hidden, out, device),
            time_dim,
        }
    }

    /// Predicted noise for `noisy` `[B, n*d]` at levels `k` (one per row) given `feat`.
    pub fn eps(&self, noisy: Tensor<2>, k: &[usize], feat: Tensor<2>) -> Tensor<2> {
        let temb = time_embedding(k, self.time_dim, &feat.device());
        let h =
            self.chunk_in.forward(noisy) + self.cond_in.forward(Tensor::cat(vec![feat, temb], 1));
        let h = silu(self.mid.forward(silu(h)));
        self.action_out.forward(h)
    }
}

/// Sinusoidal embedding `[B, dim]` of integer noise levels.
fn time_embedding(k: &[usize], dim: usize, device: &Device) -> Tensor<2> {
    let half = dim / 2;
    let mut data = Vec::with_capacity(k.len() * dim);
    for &step in k {
        for i in 0..half {
            let f = (-(10_000f64.ln()) * i as f64 / half as f64).exp();
            data.push((step as f64 * f).sin() as f32);
        }
        for i in 0..half {
            let f = (-(10_000f64.ln()) * i as f64 / half as f64).exp();
            data.push((step as f64 * f).cos() as f32);
        }
    }
    Tensor::from_data(TensorData::new(data, [k.len(), 2 * half]), device)
}

/// DDPM noise schedule (linear betas from 1e-4 to 0.02 stretched over K levels):
/// cumulative alpha-bar of each level.
pub fn alpha_bars(k: usize) -> Vec<f64> {
    let (b0, b1) = (1e-4, 0.02);
    let mut acc = 1.0;
    (0..k)
        .map(|i| {
            let beta = if k == 1 {
                b1
            } else {
                b0 + (b1 - b0) * i as f64 / (k - 1) as f64
            };
            // Scale so that short schedules still reach a low signal level at k = K-1.
            let beta = (beta * 1000.0 / k as f64).min(0.999);
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

/// Evenly spaced DDIM levels from K-1 down to 0.
pub fn ddim_levels(k: usize, steps: usize) -> Vec<usize> {
    let mut levels: Vec<usize> = (0..steps)
        .map(|i| ((k - 1) as f64 * (1.0 - i as f64 / steps as f64)).round() as usize)
        .collect();
    levels.dedup();
    levels
}

impl PolicyConfig {
    /// A policy whose head emits chunks of `action_dim`.
    pub fn init(&self, action_dim: usize, device: &Device) -> Policy {
        let cfg = self;
        let out = cfg.chunk * action_dim;
        let (mlp_head, diffusion_head) = match cfg.head {
            HeadKind::Mlp => (
                Some(ChunkHead::new(cfg.d_model, cfg.head_hidden, out, device)),
                None,
            ),
            HeadKind::Diffusion => (
                None,
                Some(DiffusionHead::new(
                    cfg.d_model,
                    cfg.head_hidden,
                    out,
                    device,
                )),
            ),
        };
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Policy {
            encoder: FilmEncoder::new(cfg, device),
            instr_token: LinearConfig::new(cfg.instruction_dim, cfg.d_model).init(device),
            readout: normal.init([1, cfg.d_model], device),
            pos: normal.init([cfg.history + 2, cfg.d_model], device),
            trunk: TransformerEncoderConfig::new(
                cfg.d_model,
                4 * cfg.d_model,
                cfg.heads,
                cfg.layers,
            )
            .with_dropout(0.0)
            .with_norm_first(true)
            .init(device),
            mlp_head,
            diffusion_head,
            chunk: cfg.chunk,
            action_dim,
        }
    }
}

impl Policy {
    /// Replaces the layers whose shape depends on the action dimension by fresh ones for
    /// `action_dim` (the finetuning stage's re-initialisation of the last action layer).
    pub fn reinit_action_layers(
        mut self,
        cfg: &PolicyConfig,
        action_dim: usize,
        device: &Device,
    ) -> Self {
        let out = cfg.chunk * action_dim;
        if let Some(h) = self.mlp_head.as_mut() {
            h.action_out = head_linear(cfg.head_hidden, out, device);
        }
        if let Some(h) = self.diffusion_head.as_mut() {
            h.chunk_in = head_linear(out, cfg.head_hidden, device);
            h.action_out = head_linear(cfg.head_hidden, out, device);
        }
        self.action_dim = action_dim;
        self
    }

    /// Trunk feature `[B, d_model]` of `frames` `[B, H, 3, S, S]` (values in [-0.5, 0.5])
    /// under instruction embeddings `instr` `[B, I]`.
    pub fn features(&self, frames: Tensor<5>, instr: Tensor<2>) -> Tensor<2> {
        let [b, h, c, s1, s2] = frames.dims();
        let i = instr.dims()[1];
        let instr_rep = instr
            .clone()
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, h)
            .reshape([b * h, i]);
        let tokens = self
            .encoder
            .forward(frames.reshape([b * h, c, s1, s2]), instr_rep)
            .reshape([b, h, self.readout.dims()[1]]);
        let d = tokens.dims()[2];
        let itok = self.instr_token.forward(instr).unsqueeze_dim::<3>(1);
        let ro = self.readout.val().unsqueeze_dim::<3>(0).repeat_dim(0, b);
        let seq = Tensor::cat(vec![itok, tokens, ro], 1);
        let pos = self.pos.val().slice(s![0..h + 2]).unsqueeze_dim::<3>(0);
        let out = self.trunk.forward(TransformerEncoderInput::new(seq + pos));
        out.slice(s![.., h + 1..h + 2]).reshape([b, d])
    }

    /// The action chunk `[B, n, d]`.
    ///
    /// MLP head: deterministic. Diffusion head: DDIM from the starting noise `noise`
    /// (`B * n * d` standard normal values drawn on the host), differentiable through every
    /// denoising step.
    pub fn chunk(
        &self,
        cfg: &PolicyConfig,
        frames: Tensor<5>,
        instr: Tensor<2>,
        noise: &[f32],
    ) -> Tensor<3> {
        let feat = self.features(frames, instr);
        let b = feat.dims()[0];
        let flat = if let Some(h) = &self.mlp_head {
            h.forward(feat)
        } else {
            let h = self.diffusion_head.as_ref().expect("a policy has one head");
            self.ddim(cfg, h, feat, noise)
        };
        flat.reshape([b, self.chunk, self.action_dim])
    }

    /// What acting needs, for B episodes at once: the denormalised action chunks `[B][n][d]`
    /// of the histories' RGB frames (each `history` frames of `3 x size x size` bytes, CHW,
    /// oldest first) and their instruction embeddings. The diffusion head's starting noise is
    /// drawn from (`seed`, `step`), so the same call gives the same actions wherever it is
    /// made (`lam lawm eval`, `lam serve`).
    #[allow(clippy::too_many_arguments)]
    pub fn act<'a>(
        &self,
        cfg: &PolicyConfig,
        norm: &ActionNorm,
        histories: &[&'a std::collections::VecDeque<Vec<u8>>],
        instructions: &[&'a [f32]],
        seed: u64,
        step: usize,
        device: &Device,
    ) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
        let (b, size, d) = (histories.len(), cfg.image_size, self.action_dim);
        anyhow::ensure!(
            instructions.len() == b,
            "{b} histories but {} instructions",
            instructions.len()
        );
        let mut frames = Vec::with_capacity(b * cfg.history * 3 * size * size);
        for h in histories {
            anyhow::ensure!(
                h.len() == cfg.history && h.iter().all(|f| f.len() == 3 * size * size),
                "a history must hold {} frames of 3 x {size} x {size} bytes",
                cfg.history
            );
            for f in h.iter() {
                frames.extend(f.iter().map(|&v| v as f32 / 255.0 - 0.5));
            }
        }
        let frames = Tensor::<5>::from_data(
            TensorData::new(frames, [b, cfg.history, 3, size, size]),
            device,
        );
        let ins: Vec<f32> = instructions
            .iter()
            .flat_map(|i| i.iter().copied())
            .collect();
        anyhow::ensure!(
            ins.len() == b * cfg.instruction_dim,
            "instruction embeddings must have {} numbers",
            cfg.instruction_dim
        );
        let ins = Tensor::<2>::from_data(TensorData::new(ins, [b, cfg.instruction_dim]), device);
        let noise = if cfg.head == HeadKind::Diffusion {
            normals(
                &mut lam_model::train::step_rng(seed, step, 9),
                b * cfg.chunk * d,
            )
        } else {
            Vec::new()
        };
        let chunk: Vec<f32> = self
            .chunk(cfg, frames, ins, &noise)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading the policy's chunk: {e:?}"))?;
        Ok(chunk
            .chunks(cfg.chunk * d)
            .map(|c| c.chunks(d).map(|a| norm.denormalize(a)).collect())
            .collect())
    }

    fn ddim(
        &self,
        cfg: &PolicyConfig,
        head: &DiffusionHead,
        feat: Tensor<2>,
        noise: &[f32],
    ) -> Tensor<2> {
        let device = feat.device();
        let b = feat.dims()[0];
        let out = self.chunk * self.action_dim;
        assert_eq!(
            noise.len(),
            b * out,
            "DDIM needs B * n * d starting noise values"
        );
        let ab = alpha_bars(cfg.diffusion_steps);
        let levels = ddim_levels(cfg.diffusion_steps, cfg.diffusion_sample_steps);
        let mut x = Tensor::<2>::from_data(TensorData::new(noise.to_vec(), [b, out]), &device);
        for (j, &k) in levels.iter().enumerate() {
            let eps = head.eps(x.clone(), &vec![k; b], feat.clone());
            let a = ab[k];
            let x0 = (x - eps.clone() * (1.0 - a).sqrt()) / a.sqrt();
            let a_prev = levels.get(j + 1).map_or(1.0, |&kp| ab[kp]);
            x = x0.clone() * a_prev.sqrt() + eps * (1.0 - a_prev).sqrt();
        }
        x
    }

    /// Diffusion head's training loss (eq. 7): mean squared error between the noise added to
    /// `target` `[B, n, d]` at levels `k` and the predicted noise.
    pub fn diffusion_loss(
        &self,
        cfg: &PolicyConfig,
        frames: Tensor<5>,
        instr: Tensor<2>,
        target: Tensor<3>,
        k: &[usize],
        eps: &[f32],
    ) -> Tensor<1> {
        let head = self
            .diffusion_head
            .as_ref()
            .expect("diffusion_loss needs the diffusion head");
        let feat = self.features(frames, instr);
        let [b, n, d] = target.dims();
        let device = feat.device();
        let ab = alpha_bars(cfg.diffusion_steps);
        let sa: Vec<f32> = k.iter().map(|&i| ab[i].sqrt() as f32).collect();
        let sn: Vec<f32> = k.iter().map(|&i| (1.0 - ab[i]).sqrt() as f32).collect();
        let sa = Tensor::<2>::from_data(TensorData::new(sa, [b, 1]), &device);
        let sn = Tensor::<2>::from_data(TensorData::new(sn, [b, 1]), &device);
        let eps = Tensor::<2>::from_data(TensorData::new(eps.to_vec(), [b, n * d]), &device);
        let noisy = target.reshape([b, n * d]) * sa + eps.clone() * sn;
        let pred = head.eps(noisy, k, feat);
        (pred - eps).powi_scalar(2).mean()
    }
}

/// Per-dimension action normalisation `(a - mean) / std`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ActionNorm {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ActionNorm {
    pub fn normalize(&self, a: &[f32]) -> Vec<f32> {
        a.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| (v - m) / s)
            .collect()
    }

    pub fn denormalize(&self, a: &[f32]) -> Vec<f32> {
        a.iter()
            .zip(self.mean.iter().zip(&self.std))
            .map(|(v, (m, s))| v * s + m)
            .collect()
    }
}

/// `n` draws of the standard normal distribution from `rng`.
pub fn normals(rng: &mut rand::rngs::StdRng, n: usize) -> Vec<f32> {
    use rand_distr::Distribution;
    (0..n)
        .map(|_| rand_distr::StandardNormal.sample(rng))
        .collect()
}
