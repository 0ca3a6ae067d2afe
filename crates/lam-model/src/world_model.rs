//! World model: s^_t+1 = p(s_0..t, z_t).
//!
//! A transformer over the patch tokens of every frame, read top to bottom:
//!
//! 1. `in_proj` maps encoder tokens `[B, T, N, D]` to the model width W.
//! 2. Each block is pre-norm attention + MLP with **AdaLN-zero** conditioning per frame:
//!    the action embedding c_t = MLP(z_t) (`cond_in`, SiLU, `cond_out`) goes through SiLU and
//!    the block's `ada` linear to six W-vectors (shift, scale, gate for attention and for the
//!    MLP). They are computed once per frame, `[B, T, 6W]`, and broadcast over the frame's N
//!    tokens. `ada` is zero-initialised, so at step 0 every gate is 0 and z has no effect.
//! 3. Attention is **frame-causal**: a token of frame t attends to all tokens of frames <= t.
//!    Queries and keys carry **3-D RoPE**: the head's rotation pairs are split between time,
//!    patch row and patch column.
//! 4. The final layer norm is modulated the same way (shift, scale from a zero-initialised
//!    linear) and `out_proj` maps back to D. Output position t predicts frame t + 1.
//!
//! Training uses teacher forcing: the inputs are the true frames 0..T-2 and the targets the
//! frames 1..T-1, all predicted in one pass.

use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu, softmax};

use crate::config::ModelConfig;

#[derive(Module, Debug)]
pub struct WorldModel {
    pub in_proj: Linear,
    pub cond_in: Linear,
    pub cond_out: Linear,
    pub blocks: Vec<Block>,
    pub final_norm: LayerNorm,
    pub final_ada: Linear,
    pub out_proj: Linear,
    pub heads: usize,
    pub grid_rows: usize,
    pub grid_cols: usize,
    pub rope_theta: f64,
}

#[derive(Module, Debug)]
pub struct Block {
    pub norm1: LayerNorm,
    pub qkv: Linear,
    pub proj: Linear,
    pub norm2: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    pub ada: Linear,
}

fn zero_linear(d_in: usize, d_out: usize, device: &Device) -> Linear {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

impl WorldModel {
    pub fn new(cfg: &ModelConfig, device: &Device) -> Self {
        let w = cfg.wm_dim;
        let hidden = (w as f64 * cfg.wm_mlp_ratio).round() as usize;
        let blocks = (0..cfg.wm_depth)
            .map(|_| Block {
                norm1: LayerNormConfig::new(w).init(device),
                qkv: LinearConfig::new(w, 3 * w).init(device),
                proj: LinearConfig::new(w, w).init(device),
                norm2: LayerNormConfig::new(w).init(device),
                fc1: LinearConfig::new(w, hidden).init(device),
                fc2: LinearConfig::new(hidden, w).init(device),
                ada: zero_linear(w, 6 * w, device),
            })
            .collect();
        Self {
            in_proj: LinearConfig::new(cfg.embed_dim, w).init(device),
            cond_in: LinearConfig::new(cfg.latent_dim, w).init(device),
            cond_out: LinearConfig::new(w, w).init(device),
            blocks,
            final_norm: LayerNormConfig::new(w).init(device),
            final_ada: zero_linear(w, 2 * w, device),
            out_proj: LinearConfig::new(w, cfg.embed_dim).init(device),
            heads: cfg.wm_heads,
            grid_rows: cfg.grid[0],
            grid_cols: cfg.grid[1],
            rope_theta: cfg.rope_theta,
        }
    }

    /// Predicts the next frame for every input frame.
    ///
    /// `frames`: `[B, T, N, D]` context frames s_0..s_T-1; `z`: `[B, T, d]` latent actions
    /// z_0..z_T-1. Returns `[B, T, N, D]` where position t is the prediction of s_t+1 given
    /// s_0..t and z_t.
    pub fn forward(&self, frames: Tensor<4>, z: Tensor<3>) -> Tensor<4> {
        let [b, t, n, _] = frames.dims();
        let device = frames.device();
        let w = self.in_proj.weight.dims()[1];
        // Action embedding, once per frame: [B, T, W] (SiLU applied for the modulation heads).
        let c = silu(self.cond_out.forward(silu(self.cond_in.forward(z))));
        let rope = Rope::new(
            t,
            self.grid_rows,
            self.grid_cols,
            w / self.heads,
            self.rope_theta,
            &device,
        );
        let mask = frame_causal_bias(t, n, &device);
        let mut x = self.in_proj.forward(frames);
        for block in &self.blocks {
            x = block.forward(x, c.clone(), &rope, mask.clone(), self.heads);
        }
        let [shift, scale] = modulation::<2>(self.final_ada.forward(c), b, t, w);
        let x = modulate(self.final_norm.forward(x), shift, scale);
        self.out_proj.forward(x)
    }
}

impl Block {
    fn forward(
        &self,
        x: Tensor<4>,
        c: Tensor<3>,
        rope: &Rope,
        mask: Tensor<2>,
        heads: usize,
    ) -> Tensor<4> {
        let [b, t, n, w] = x.dims();
        let [shift_a, scale_a, gate_a, shift_m, scale_m, gate_m] =
            modulation::<6>(self.ada.forward(c), b, t, w);
        let h = modulate(self.norm1.forward(x.clone()), shift_a, scale_a);
        let h = self
            .attention(h.reshape([b, t * n, w]), rope, mask, heads)
            .reshape([b, t, n, w]);
        let x = x + h * gate_a;
        let h = modulate(self.norm2.forward(x.clone()), shift_m, scale_m);
        let h = self.fc2.forward(gelu(self.fc1.forward(h)));
        x + h * gate_m
    }

    /// Multi-head attention over `[B, L, W]` with RoPE on queries and keys and an additive
    /// frame-causal bias `[L, L]`.
    fn attention(&self, x: Tensor<3>, rope: &Rope, mask: Tensor<2>, heads: usize) -> Tensor<3> {
        let [b, l, w] = x.dims();
        let dh = w / heads;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, l, 3, heads, dh])
            .permute([2, 0, 3, 1, 4]);
        let q = rope.apply(qkv.clone().slice(s![0..1]).squeeze_dim::<4>(0));
        let k = rope.apply(qkv.clone().slice(s![1..2]).squeeze_dim::<4>(0));
        let v = qkv.slice(s![2..3]).squeeze_dim::<4>(0);
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (dh as f64).sqrt());
        let scores = scores + mask.unsqueeze::<4>();
        let out = softmax(scores, 3).matmul(v);
        self.proj.forward(out.swap_dims(1, 2).reshape([b, l, w]))
    }
}

/// Splits `[B, T, K*W]` into K tensors `[B, T, 1, W]` that broadcast over a frame's tokens.
fn modulation<const K: usize>(m: Tensor<3>, b: usize, t: usize, w: usize) -> [Tensor<4>; K] {
    let m = m.reshape([b, t, K, w]);
    std::array::from_fn(|i| m.clone().slice(s![.., .., i..i + 1, ..]))
}

fn modulate(x: Tensor<4>, shift: Tensor<4>, scale: Tensor<4>) -> Tensor<4> {
    x * (scale + 1.0) + shift
}

/// Additive attention bias for frame-causal attention: 0 where the key's frame is <= the
/// query's frame, a large negative number elsewhere. Tokens are ordered frame-major.
pub fn frame_causal_bias(frames: usize, tokens: usize, device: &Device) -> Tensor<2> {
    let l = frames * tokens;
    let data: Vec<f32> = (0..l * l)
        .map(|i| {
            if (i % l) / tokens <= (i / l) / tokens {
                0.0
            } else {
                -1e9
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [l, l]), device)
}

/// Rotary position tables for frame-major tokens on a `rows x cols` patch grid.
///
/// A head of size Dh has Dh/2 rotation pairs (i, i + Dh/2). `rows_pairs = cols_pairs =
/// floor(P/3)` pairs rotate with the patch row and column, the remaining pairs with time.
/// Within each axis, pair k has frequency theta^(-k / pairs_of_axis).
pub struct Rope {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope {
    pub fn new(
        frames: usize,
        rows: usize,
        cols: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Self {
        let pairs = head_dim / 2;
        let spatial = pairs / 3;
        let temporal = pairs - 2 * spatial;
        let freqs = |count: usize| -> Vec<f64> {
            (0..count)
                .map(|k| theta.powf(-(k as f64) / count.max(1) as f64))
                .collect()
        };
        let (ft, fs) = (freqs(temporal), freqs(spatial));
        let l = frames * rows * cols;
        let mut cos = Vec::with_capacity(l * pairs);
        let mut sin = Vec::with_capacity(l * pairs);
        for f in 0..frames {
            for r in 0..rows {
                for c in 0..cols {
                    let angles = ft
                        .iter()
                        .map(|w| w * f as f64)
                        .chain(fs.iter().map(|w| w * r as f64))
                        .chain(fs.iter().map(|w| w * c as f64));
                    for a in angles {
                        cos.push(a.cos() as f32);
                        sin.push(a.sin() as f32);
                    }
                }
            }
        }
        let cos = Tensor::<2>::from_data(TensorData::new(cos, [l, pairs]), device);
        let sin = Tensor::<2>::from_data(TensorData::new(sin, [l, pairs]), device);
        Self {
            cos: cos.unsqueeze::<4>(),
            sin: sin.unsqueeze::<4>(),
        }
    }

    /// Rotates `[B, H, L, Dh]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let dh = x.dims()[3];
        let x1 = x.clone().slice(s![.., .., .., 0..dh / 2]);
        let x2 = x.slice(s![.., .., .., dh / 2..dh]);
        let r1 = x1.clone() * self.cos.clone() - x2.clone() * self.sin.clone();
        let r2 = x2 * self.cos.clone() + x1 * self.sin.clone();
        Tensor::cat(vec![r1, r2], 3)
    }
}
