//! V-JEPA 2 video encoder, loaded from a Hugging Face folder (`VJEPA2Model`; only the
//! `encoder.*` weights are read, the predictor is not needed to embed frames).
//!
//! Read top to bottom:
//!
//! 1. Tubelet embedding: the clip `[B, T, 3, H, W]` (T even) is cut into tubelets of
//!    `tubelet_size` (2) frames x `p x p` pixels, each mapped to D channels
//!    (`encoder.embeddings.patch_embeddings.proj`, a strided 3-D convolution applied here as a
//!    linear layer over flattened tubelets). Tokens are ordered tubelet-time, row, column:
//!    `L = T/2 * rows * cols`. A clip of a single frame is first repeated to fill the tubelet.
//!    There is no position embedding and no CLS token.
//! 2. `num_hidden_layers` pre-norm blocks `x += attn(norm1(x))`, `x += mlp(norm2(x))`. Queries
//!    and keys carry **3-D RoPE**: with head size Dh, each of the three axes (tubelet time, row,
//!    column) rotates `m = 2 * floor(Dh / 3 / 2)` channels, in that order; the `Dh - 3m`
//!    channels left over are not rotated. Within an axis' m channels, channel j uses the
//!    frequency `10000^(-(j mod m/2) / (m/2))` and rotates with its neighbour in the pair
//!    (2i, 2i+1): `out[2i] = x[2i] cos - x[2i+1] sin`, `out[2i+1] = x[2i+1] cos + x[2i] sin`.
//!    A token's axis positions come from its index in the sequence and the grid the checkpoint
//!    was trained on (`crop_size / patch_size` per side), as in the reference implementation.
//!    lam loads the three projections as one, each head's query and key channels reordered so
//!    that the pairs become halves ([`pair_order`], [`rope_tables`]): the same products, run by
//!    the world model's fused attention.
//! 3. A final layer norm (`encoder.layernorm`) gives `last_hidden_state` `[B, L, D]`.
//!
//! From tokens to frames ([`VJepa2::frame_tokens`]): by default ([`FrameMode::PerFrame`]) each
//! frame is encoded on its own as a repeated pair (a still tubelet), so frame t gets its own
//! `rows * cols` tokens and no token mixes two frames; this is what a latent action model over
//! per-frame states needs. With [`FrameMode::Tubelet`] the clip is encoded once and tubelet k
//! gives its tokens to both frames 2k and 2k+1 (an odd last frame is repeated to fill its
//! tubelet).

use anyhow::{Result, ensure};
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;

use lam_model::fused;
use lam_model::world_model::attention::self_attention;

use crate::hf::HfFolder;
use crate::vit::Activation;

/// The config.json keys this loader reads; defaults are those of transformers' `VJEPA2Config`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VJepa2Config {
    /// `hidden_size` (D). Default 1024.
    pub hidden_size: usize,
    /// `num_hidden_layers`. Default 24.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`. Default 16.
    pub num_attention_heads: usize,
    /// `mlp_ratio`. Default 4.0.
    pub mlp_ratio: f64,
    /// `patch_size` (p). Default 16.
    pub patch_size: usize,
    /// `crop_size`: the side the model was trained at; fixes the RoPE grid. Default 256.
    pub crop_size: usize,
    /// `tubelet_size`. Default 2.
    pub tubelet_size: usize,
    /// `in_chans`. Default 3.
    pub in_chans: usize,
    /// `layer_norm_eps`. Default 1e-6.
    pub layer_norm_eps: f64,
    /// `qkv_bias`. Default true.
    pub qkv_bias: bool,
    /// `hidden_act`. Default gelu (exact).
    pub hidden_act: Activation,
}

impl VJepa2Config {
    pub fn from_folder(folder: &HfFolder) -> Result<Self> {
        let cfg = VJepa2Config {
            hidden_size: folder.usize_or("hidden_size", 1024)?,
            num_hidden_layers: folder.usize_or("num_hidden_layers", 24)?,
            num_attention_heads: folder.usize_or("num_attention_heads", 16)?,
            mlp_ratio: folder.f64_or("mlp_ratio", 4.0)?,
            patch_size: folder.square_or("patch_size", 16)?,
            crop_size: folder.usize_or("crop_size", 256)?,
            tubelet_size: folder.usize_or("tubelet_size", 2)?,
            in_chans: folder.usize_or("in_chans", 3)?,
            layer_norm_eps: folder.f64_or("layer_norm_eps", 1e-6)?,
            qkv_bias: folder.bool_or("qkv_bias", true)?,
            hidden_act: folder.activation_or("hidden_act", Activation::Gelu)?,
        };
        let path = folder.config_path();
        ensure!(
            cfg.hidden_size % cfg.num_attention_heads == 0,
            "{}: hidden_size {} is not a multiple of num_attention_heads {}",
            path.display(),
            cfg.hidden_size,
            cfg.num_attention_heads
        );
        ensure!(
            (cfg.hidden_size / cfg.num_attention_heads) % 2 == 0,
            "{}: head size {} must be even for RoPE",
            path.display(),
            cfg.hidden_size / cfg.num_attention_heads
        );
        ensure!(
            cfg.in_chans == 3,
            "{}: in_chans is {}, lam feeds RGB frames (3)",
            path.display(),
            cfg.in_chans
        );
        ensure!(
            cfg.tubelet_size >= 1 && cfg.patch_size >= 1 && cfg.crop_size >= cfg.patch_size,
            "{}: tubelet_size {}, patch_size {}, crop_size {} give no token",
            path.display(),
            cfg.tubelet_size,
            cfg.patch_size,
            cfg.crop_size
        );
        Ok(cfg)
    }
}

/// How the frames of a clip map to tokens (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FrameMode {
    /// Each frame encoded alone, repeated to fill the tubelet. Default.
    #[default]
    PerFrame,
    /// The clip encoded at once; a tubelet's tokens go to each of its frames.
    Tubelet,
}

#[derive(Module, Debug)]
pub struct VJepa2 {
    pub patch_embed: Linear,
    pub layers: Vec<VJepa2Layer>,
    pub layernorm: LayerNorm,
    pub heads: usize,
    pub patch_size: usize,
    pub tubelet: usize,
    /// Side of the grid RoPE positions are computed on (`crop_size / patch_size`).
    pub rope_grid: usize,
    #[module(skip)]
    pub hidden_act: Activation,
}

#[derive(Module, Debug)]
pub struct VJepa2Layer {
    pub norm1: LayerNorm,
    /// `attention.{query,key,value}` side by side (`D -> 3D`), the channels of each head's
    /// queries and keys reordered as [`rope_tables`] says.
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
}

impl VJepa2 {
    /// Loads the encoder of `folder` (`encoder.*`, or `vjepa2.encoder.*` in task checkpoints).
    pub fn load(folder: &mut HfFolder, device: &Device) -> Result<(Self, VJepa2Config)> {
        folder.select_prefix(
            &["", "vjepa2.", "model."],
            "encoder.embeddings.patch_embeddings.proj.weight",
        )?;
        let cfg = VJepa2Config::from_folder(folder)?;
        let (d, p, t) = (cfg.hidden_size, cfg.patch_size, cfg.tubelet_size);
        let h = (d as f64 * cfg.mlp_ratio) as usize;
        let eps = cfg.layer_norm_eps;
        let dh = d / cfg.num_attention_heads;
        let order: Vec<usize> = (0..d)
            .map(|c| (c / dh) * dh + pair_order(c % dh, dh))
            .collect();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            let a = format!("{l}.attention");
            layers.push(VJepa2Layer {
                norm1: folder.layer_norm(&format!("{l}.norm1"), d, eps, device)?,
                qkv: folder.packed_qkv(&a, d, cfg.qkv_bias, Some(&order), device)?,
                proj: folder.linear(&format!("{a}.proj"), d, d, true, device)?,
                norm2: folder.layer_norm(&format!("{l}.norm2"), d, eps, device)?,
                fc1: folder.linear(&format!("{l}.mlp.fc1"), d, h, true, device)?,
                fc2: folder.linear(&format!("{l}.mlp.fc2"), h, d, true, device)?,
            });
        }
        let model = VJepa2 {
            patch_embed: folder.patch_linear(
                "encoder.embeddings.patch_embeddings.proj",
                &[3, t, p, p],
                d,
                device,
            )?,
            layers,
            layernorm: folder.layer_norm("encoder.layernorm", d, eps, device)?,
            heads: cfg.num_attention_heads,
            patch_size: p,
            tubelet: t,
            rope_grid: cfg.crop_size / p,
            hidden_act: cfg.hidden_act,
        };
        Ok((model, cfg))
    }

    /// Patch grid `[rows, cols]` of one frame of `height x width` pixels.
    pub fn grid(&self, height: usize, width: usize) -> [usize; 2] {
        [height / self.patch_size, width / self.patch_size]
    }

    /// `last_hidden_state` for clips `[B, T, 3, H, W]`: `[B, T/tubelet * rows * cols, D]`.
    /// Clips shorter than a tubelet are repeated to fill it; frames past the last whole
    /// tubelet are dropped (as a strided convolution does).
    pub fn forward(&self, clips: Tensor<5>) -> Tensor<3> {
        let [_, t, _, _, _] = clips.dims();
        let clips = if t < self.tubelet {
            Tensor::cat(vec![clips; self.tubelet.div_ceil(t)], 1).slice(s![
                ..,
                0..self.tubelet,
                ..,
                ..,
                ..
            ])
        } else {
            clips
        };
        let tokens = self.tubelets(clips);
        let [_, l, d] = tokens.dims();
        let dh = d / self.heads;
        let (cos, sin) = rope_tables(l, self.rope_grid, dh, &tokens.device());
        let mut x = tokens;
        for layer in &self.layers {
            x = layer.forward(x, self.heads, &cos, &sin, self.hidden_act);
        }
        self.layernorm.forward(x)
    }

    /// Tubelet tokens before the transformer: `[B, T'/tubelet * rows * cols, D]`.
    fn tubelets(&self, clips: Tensor<5>) -> Tensor<3> {
        let [b, t, c, h, w] = clips.dims();
        let (p, k) = (self.patch_size, self.tubelet);
        let (tt, gh, gw) = (t / k, h / p, w / p);
        let clips = clips.slice(s![.., 0..tt * k, .., 0..gh * p, 0..gw * p]);
        // [B, T', k, C, gh, p, gw, p] -> [B, T', gh, gw, C, k, p, p]
        let x = clips
            .reshape([b, tt, k, c, gh, p, gw, p])
            .permute([0, 1, 4, 6, 3, 2, 5, 7])
            .reshape([b, tt * gh * gw, c * k * p * p]);
        fused::linear(&self.patch_embed, x)
    }

    /// Per-frame patch tokens for clips `[B, T, 3, H, W]`: `[B, T, rows * cols, D]`, frames
    /// mapped to tokens as `mode` says (see the module docs).
    pub fn frame_tokens(&self, clips: Tensor<5>, mode: FrameMode) -> Tensor<4> {
        let [b, t, c, h, w] = clips.dims();
        let [rows, cols] = self.grid(h, w);
        let n = rows * cols;
        match mode {
            FrameMode::PerFrame => {
                let frames = clips.reshape([b * t, 1, c, h, w]);
                let out = self.forward(frames);
                let d = out.dims()[2];
                out.reshape([b, t, n, d])
            }
            FrameMode::Tubelet => {
                let k = self.tubelet;
                let padded = t.div_ceil(k) * k;
                let clips = if padded > t {
                    let last = clips.clone().slice(s![.., t - 1..t, .., .., ..]);
                    let mut parts = vec![clips];
                    parts.extend(std::iter::repeat_n(last, padded - t));
                    Tensor::cat(parts, 1)
                } else {
                    clips
                };
                let out = self.forward(clips);
                let d = out.dims()[2];
                let tubes = padded / k;
                out.reshape([b, tubes, 1, n, d])
                    .expand([b, tubes, k, n, d])
                    .reshape([b, padded, n, d])
                    .slice(s![.., 0..t, .., ..])
            }
        }
    }
}

impl VJepa2Layer {
    fn forward(
        &self,
        x: Tensor<3>,
        heads: usize,
        cos: &Tensor<2>,
        sin: &Tensor<2>,
        act: Activation,
    ) -> Tensor<3> {
        let qkv = fused::linear(&self.qkv, self.norm1.forward(x.clone()));
        let rope = Some((cos.clone(), sin.clone()));
        let x = x + fused::linear(&self.proj, self_attention(qkv, rope, heads));
        let h = self.norm2.forward(x.clone());
        x.clone() + fused::linear(&self.fc2, act.apply(fused::linear(&self.fc1, h)))
    }
}

/// The file's channel of a head's packed query / key channel `j` (head width `dh`): the
/// first members of the rotated pairs (2i, 2i+1) come first, then the second members, so that
/// V-JEPA 2's pairwise rotation is the world model's rotation of halves, which the fused
/// attention runs.
pub fn pair_order(j: usize, dh: usize) -> usize {
    let half = dh / 2;
    if j < half { 2 * j } else { 2 * (j - half) + 1 }
}

/// RoPE tables `[L, Dh]` for tokens `0..L` of a clip on a `grid x grid` patch grid, in the
/// packed channel order ([`pair_order`]) and the convention of
/// [`self_attention`]: channel c of the file turns by angle a_c (cos 1, sin 0 on channels left
/// unrotated) with `out[2i] = x[2i] cos - x[2i+1] sin`, `out[2i+1] = x[2i+1] cos + x[2i] sin`;
/// packed, the first half carries `cos a_2i` and `-sin a_2i`, the second `cos a_2i+1` and
/// `sin a_2i+1`.
pub fn rope_tables(len: usize, grid: usize, dh: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let m = 2 * ((dh / 3) / 2);
    let half = m / 2;
    let per_frame = grid * grid;
    let mut cos = vec![1.0f32; len * dh];
    let mut sin = vec![0.0f32; len * dh];
    let mut angle = vec![0.0f64; dh];
    for i in 0..len {
        let frame = i / per_frame;
        let row = (i - frame * per_frame) / grid;
        let col = i - frame * per_frame - row * grid;
        angle.fill(0.0);
        for (axis, pos) in [frame, row, col].into_iter().enumerate() {
            for j in 0..m {
                let omega = 1.0 / 10000f64.powf((j % half) as f64 / half as f64);
                angle[axis * m + j] = pos as f64 * omega;
            }
        }
        for j in 0..dh {
            let c = pair_order(j, dh);
            let sign = if c % 2 == 0 { -1.0 } else { 1.0 };
            cos[i * dh + j] = angle[c].cos() as f32;
            sin[i * dh + j] = sign * angle[c].sin() as f32;
        }
    }
    (
        Tensor::from_data(TensorData::new(cos, [len, dh]), device),
        Tensor::from_data(TensorData::new(sin, [len, dh]), device),
    )
}
