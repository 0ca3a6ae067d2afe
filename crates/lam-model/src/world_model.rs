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
//!    linear) and `out_proj` maps back to D. Output position t predicts frame t + 1 (with
//!    `model.residual`, frame t plus that output, `out_proj` zero-initialised).
//!
//! Training uses teacher forcing: the inputs are the true frames 0..T-2 and the targets the
//! frames 1..T-1, all predicted in one pass.

use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use crate::config::ModelConfig;
use crate::fused;

pub mod amx;
pub mod attention;
pub(crate) mod host;

pub use host::{HostPrecision, HostWeights};

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
    /// Predict s_t + out(...) instead of out(...) (`model.residual`).
    pub residual: bool,
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

/// Sizes and options of a [`WorldModel`]. A stage-1 run keeps them in its `model.*` settings
/// ([`ModelConfig::world_model`] reads them out).
#[derive(Clone, Debug, PartialEq)]
pub struct WorldModelConfig {
    /// Channels per encoder token, D.
    pub embed_dim: usize,
    /// Width of the action it is conditioned on (d, or a robot action block).
    pub latent_dim: usize,
    /// Token grid `[rows, cols]` of one frame.
    pub grid: [usize; 2],
    /// Transformer width W (`model.wm_dim`; ViT-B: 768).
    pub dim: usize,
    /// Blocks (`model.wm_depth`; ViT-B: 12).
    pub depth: usize,
    /// Attention heads (`model.wm_heads`; ViT-B: 12).
    pub heads: usize,
    /// MLP hidden width as a multiple of W (4.0).
    pub mlp_ratio: f64,
    /// RoPE base frequency (10000).
    pub rope_theta: f64,
    /// Predict the change of the frame, `out_proj` zero-initialised (`model.residual`).
    pub residual: bool,
}

impl ModelConfig {
    /// The world model's part of the run's model settings.
    pub fn world_model(&self) -> WorldModelConfig {
        WorldModelConfig {
            embed_dim: self.embed_dim,
            latent_dim: self.latent_dim,
            grid: self.grid,
            dim: self.wm_dim,
            depth: self.wm_depth,
            heads: self.wm_heads,
            mlp_ratio: self.wm_mlp_ratio,
            rope_theta: self.rope_theta,
            residual: self.residual,
        }
    }
}

impl WorldModelConfig {
    pub fn init(&self, device: &Device) -> WorldModel {
        let w = self.dim;
        let hidden = (w as f64 * self.mlp_ratio).round() as usize;
        let blocks = (0..self.depth)
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
        WorldModel {
            in_proj: LinearConfig::new(self.embed_dim, w).init(device),
            cond_in: LinearConfig::new(self.latent_dim, w).init(device),
            cond_out: LinearConfig::new(w, w).init(device),
            blocks,
            final_norm: LayerNormConfig::new(w).init(device),
            final_ada: zero_linear(w, 2 * w, device),
            out_proj: if self.residual {
                zero_linear(w, self.embed_dim, device)
            } else {
                LinearConfig::new(w, self.embed_dim).init(device)
            },
            heads: self.heads,
            grid_rows: self.grid[0],
            grid_cols: self.grid[1],
            rope_theta: self.rope_theta,
            residual: self.residual,
        }
    }
}

impl WorldModel {
    /// Predicts the next frame for every input frame.
    ///
    /// `frames`: `[B, T, N, D]` context frames s_0..s_T-1; `z`: `[B, T, d]` latent actions
    /// z_0..z_T-1. Returns `[B, T, N, D]` where position t is the prediction of s_t+1 given
    /// s_0..t and z_t.
    pub fn forward(&self, frames: Tensor<4>, z: Tensor<3>) -> Tensor<4> {
        self.run(frames, z, None, false).0
    }

    /// Runs frames that follow the cached ones (none when `past` is `None`): their tokens
    /// attend to every cached token and frame-causally among themselves. Returns the
    /// predictions and, with `keep_kv`, per block the keys and values of cached + new frames
    /// (none without).
    fn run(
        &self,
        frames: Tensor<4>,
        z: Tensor<3>,
        past: Option<&KvCache>,
        keep_kv: bool,
    ) -> (Tensor<4>, Vec<(Tensor<4>, Tensor<4>)>) {
        let [b, t, n, _] = frames.dims();
        let device = frames.device();
        let w = self.in_proj.weight.dims()[1];
        let t0 = past.map_or(0, |p| p.position);
        // Action embedding, once per frame: [B, T, W] (SiLU applied for the modulation heads).
        let c = silu(fused::linear(
            &self.cond_out,
            silu(fused::linear(&self.cond_in, z)),
        ));
        let rope = Rope::new(
            t0,
            t,
            self.grid_rows,
            self.grid_cols,
            w / self.heads,
            self.rope_theta,
            &device,
        );
        let cached = past.map_or(0, |p| p.frames());
        // A single new frame sees everything: no mask needed.
        let mask = (t > 1).then(|| frame_causal_bias(cached, t, n, &device));
        let input = self.residual.then(|| frames.clone());
        let mut x = fused::linear(&self.in_proj, frames);
        let mut kv = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (next, layer_kv) = block.forward(
                x,
                c.clone(),
                &rope,
                mask.clone(),
                self.heads,
                past.map(|p| &p.layers[i]),
                keep_kv,
            );
            x = next;
            kv.extend(layer_kv);
        }
        let [shift, scale] = modulation::<2>(fused::linear(&self.final_ada, c), b, t, w);
        let x = fused::norm_modulate(x, &self.final_norm, shift, scale);
        let out = fused::linear(&self.out_proj, x);
        let pred = match input {
            Some(s) => s + out,
            None => out,
        };
        (pred, kv)
    }

    /// Caches the keys and values of context frames `[B, T, N, D]` acted on by `z`
    /// `[B, T, d]`, for rollouts with [`step`](Self::step). At most `window` frames are kept.
    pub fn prefill(&self, frames: Tensor<4>, z: Tensor<3>, window: usize) -> KvCache {
        let [_, t, n, _] = frames.dims();
        let (_, layers) = self.run(frames, z, None, true);
        KvCache {
            layers,
            tokens: n,
            position: t,
            window: window.max(1),
        }
        .trimmed()
    }

    /// One rollout step: the current frame `[B, N, D]` under action `z` `[B, d]` attends to
    /// the cached frames (none at the start of an episode); returns the predicted next frame
    /// `[B, N, D]` and the cache extended by the current frame, keeping at most `window`
    /// frames.
    pub fn step(
        &self,
        cache: Option<&KvCache>,
        frame: Tensor<3>,
        z: Tensor<2>,
        window: usize,
    ) -> (Tensor<3>, KvCache) {
        let [_, n, _] = frame.dims();
        let (pred, layers) = self.run(frame.unsqueeze_dim(1), z.unsqueeze_dim(1), cache, true);
        let position = cache.map_or(0, |c| c.position) + 1;
        let next = KvCache {
            layers,
            tokens: n,
            position,
            window: window.max(1),
        };
        (pred.squeeze_dim(1), next.trimmed())
    }

    /// Rolls `C` candidates forward from one shared state by `H` calls of
    /// [`step`](Self::step) on the cache repeated per candidate: the current frame `current`
    /// `[1, N, D]` after the cached context `cache` (`None` at the start of an episode), under
    /// latent actions `z` `[C, H, d]`. Returns the predicted frames of every step
    /// `[C, H, N, D]` (the last is the final frame). Works
    /// on every device and is differentiable with respect to `z`;
    /// [`rollout_shared`](Self::rollout_shared) is the CPU fast path of the same computation.
    pub fn rollout_steps(
        &self,
        cache: Option<&KvCache>,
        current: Tensor<3>,
        z: Tensor<3>,
        window: usize,
    ) -> Tensor<4> {
        let [c, h, _] = z.dims();
        self.rollout_with(
            cache,
            current,
            c,
            h,
            window,
            |k, _| z.clone().slice(s![.., k..k + 1, ..]).squeeze_dim::<2>(1),
            |_, _, pred| pred,
        )
    }

    /// [`rollout_steps`](Self::rollout_steps) for `c` candidates over `h` steps whose latent
    /// action at step k, `[C, d]`, is `z_of(k, frame)` of the frame `[C, N, D]` it acts on
    /// (the current frame, then the model's own predictions): latents that depend on the
    /// state, such as a frame-conditioned controller's. Each predicted frame `[C, N, D]` is
    /// passed through `then(k, frame, prediction)` before it is kept and fed on (the
    /// identity for the model's own rollout).
    pub fn rollout_with(
        &self,
        cache: Option<&KvCache>,
        current: Tensor<3>,
        c: usize,
        h: usize,
        window: usize,
        mut z_of: impl FnMut(usize, &Tensor<3>) -> Tensor<2>,
        mut then: impl FnMut(usize, &Tensor<3>, Tensor<3>) -> Tensor<3>,
    ) -> Tensor<4> {
        let [_, n, d] = current.dims();
        let mut cache = cache.map(|k| k.repeat(c));
        let mut frame = current.expand([c, n, d]);
        let mut steps = Vec::with_capacity(h);
        for k in 0..h {
            let zk = z_of(k, &frame);
            let (pred, next) = self.step(cache.as_ref(), frame.clone(), zk, window);
            let pred = then(k, &frame, pred);
            steps.push(pred.clone());
            frame = pred;
            cache = Some(next);
        }
        Tensor::stack(steps, 1)
    }
}

/// Keys (rotated) and values of already-seen frames, per block: `[B, heads, frames * N, Dh]`.
///
/// RoPE makes attention depend on position differences only, so dropping the oldest frames
/// keeps later frames' scores unchanged; `position` keeps counting absolute frames.
#[derive(Clone, Debug)]
pub struct KvCache {
    pub layers: Vec<(Tensor<4>, Tensor<4>)>,
    /// Tokens per frame.
    pub tokens: usize,
    /// Absolute frame index of the next frame.
    pub position: usize,
    /// Most frames kept.
    pub window: usize,
}

impl KvCache {
    /// Frames currently cached.
    pub fn frames(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |(k, _)| k.dims()[2] / self.tokens)
    }

    fn trimmed(mut self) -> Self {
        let frames = self.frames();
        if frames > self.window {
            let drop = (frames - self.window) * self.tokens;
            let len = frames * self.tokens;
            for (k, v) in self.layers.iter_mut() {
                *k = k.clone().slice(s![.., .., drop..len, ..]);
                *v = v.clone().slice(s![.., .., drop..len, ..]);
            }
        }
        self
    }

    /// Repeats a batch-1 cache `n` times (one copy per planning candidate).
    pub fn repeat(&self, n: usize) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| (k.clone().repeat_dim(0, n), v.clone().repeat_dim(0, n)))
            .collect();
        Self {
            layers,
            ..self.clone()
        }
    }
}

impl Block {
    fn forward(
        &self,
        x: Tensor<4>,
        c: Tensor<3>,
        rope: &Rope,
        mask: Option<Tensor<2>>,
        heads: usize,
        past: Option<&(Tensor<4>, Tensor<4>)>,
        keep_kv: bool,
    ) -> (Tensor<4>, Option<(Tensor<4>, Tensor<4>)>) {
        let [b, t, n, w] = x.dims();
        let [shift_a, scale_a, gate_a, shift_m, scale_m, gate_m] =
            modulation::<6>(fused::linear(&self.ada, c), b, t, w);
        let h = fused::norm_modulate(x.clone(), &self.norm1, shift_a, scale_a);
        let (h, kv) = self.attention(h.reshape([b, t * n, w]), rope, mask, heads, past, keep_kv);
        let x = x + h.reshape([b, t, n, w]) * gate_a;
        let h = fused::norm_modulate(x.clone(), &self.norm2, shift_m, scale_m);
        let h = fused::linear(&self.fc2, fused::gelu(fused::linear(&self.fc1, h)));
        (x + h * gate_m, kv)
    }

    /// Multi-head attention of `[B, L, W]` queries over the cached keys/values plus their
    /// own, with RoPE on queries and keys and an optional additive bias `[L, L_past + L]`.
    /// Returns the keys and values (cached + new) with `keep_kv`.
    fn attention(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        mask: Option<Tensor<2>>,
        heads: usize,
        past: Option<&(Tensor<4>, Tensor<4>)>,
        keep_kv: bool,
    ) -> (Tensor<3>, Option<(Tensor<4>, Tensor<4>)>) {
        let [b, l, w] = x.dims();
        let dh = w / heads;
        let scale = 1.0 / (dh as f64).sqrt();
        let qkv = fused::linear(&self.qkv, x);
        if past.is_none() && !keep_kv && fused::on_cpu(&qkv.device(), "attention") {
            let out = attention::qkv_attention(qkv, rope.tables(), mask, heads, scale);
            return (fused::linear(&self.proj, out), None);
        }
        let qkv = qkv.reshape([b, l, 3, heads, dh]).permute([2, 0, 3, 1, 4]);
        let q = rope.apply(qkv.clone().slice(s![0..1]).squeeze_dim::<4>(0));
        let mut k = rope.apply(qkv.clone().slice(s![1..2]).squeeze_dim::<4>(0));
        let mut v = qkv.slice(s![2..3]).squeeze_dim::<4>(0);
        if let Some((pk, pv)) = past {
            k = Tensor::cat(vec![pk.clone(), k], 2);
            v = Tensor::cat(vec![pv.clone(), v], 2);
        }
        let out = attention::attention(q, k.clone(), v.clone(), mask, scale);
        (
            fused::linear(&self.proj, out.swap_dims(1, 2).reshape([b, l, w])),
            keep_kv.then_some((k, v)),
        )
    }
}

/// Splits `[B, T, K*W]` into K tensors `[B, T, 1, W]` that broadcast over a frame's tokens.
fn modulation<const K: usize>(m: Tensor<3>, b: usize, t: usize, w: usize) -> [Tensor<4>; K] {
    let m = m.reshape([b, t, K, w]);
    std::array::from_fn(|i| m.clone().slice(s![.., .., i..i + 1, ..]))
}

/// Additive attention bias for frame-causal attention of `frames` new frames that follow
/// `cached` frames: `[frames * N, (cached + frames) * N]`, 0 where the key's frame is <= the
/// query's frame, -inf elsewhere (exact zeros after softmax; every query sees its own frame,
/// so no row is all -inf). Tokens are ordered frame-major.
pub fn frame_causal_bias(
    cached: usize,
    frames: usize,
    tokens: usize,
    device: &Device,
) -> Tensor<2> {
    let rows = frames * tokens;
    let cols = (cached + frames) * tokens;
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| {
            if (i % cols) / tokens <= cached + (i / cols) / tokens {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [rows, cols]), device)
}

/// RoPE tables `[frames * rows * cols, Dh]` for frames `first..first + frames`: cos of each
/// pair's angle repeated for both halves, and sin negated on the first half (see [`Rope`]).
pub(crate) fn rope_tables(
    first: usize,
    frames: usize,
    rows: usize,
    cols: usize,
    head_dim: usize,
    theta: f64,
) -> (Vec<f32>, Vec<f32>) {
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
    for f in first..first + frames {
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
    // Full-width tables: [cos, cos] and [-sin, sin], so that
    // rotate(x) = x * cos + swap_halves(x) * sin in three elementwise ops and one small matmul.
    let dh = 2 * pairs;
    let mut cos_full = Vec::with_capacity(l * dh);
    let mut sin_full = Vec::with_capacity(l * dh);
    for i in 0..l {
        let (c, s) = (
            &cos[i * pairs..(i + 1) * pairs],
            &sin[i * pairs..(i + 1) * pairs],
        );
        cos_full.extend_from_slice(c);
        cos_full.extend_from_slice(c);
        sin_full.extend(s.iter().map(|v| -v));
        sin_full.extend_from_slice(s);
    }
    (cos_full, sin_full)
}

/// Rotary position tables for frame-major tokens on a `rows x cols` patch grid.
///
/// A head of size Dh has Dh/2 rotation pairs (i, i + Dh/2). `rows_pairs = cols_pairs =
/// floor(P/3)` pairs rotate with the patch row and column, the remaining pairs with time.
/// Within each axis, pair k has frequency theta^(-k / pairs_of_axis).
pub struct Rope {
    /// `[1, 1, L, Dh]`: cos of each pair's angle, repeated for both halves.
    cos: Tensor<4>,
    /// `[1, 1, L, Dh]`: sin of each pair's angle, negated on the first half.
    sin: Tensor<4>,
    /// `[Dh, Dh]` permutation swapping the halves: `x @ swap = [x2, x1]`.
    swap: Tensor<2>,
}

impl Rope {
    /// Tables for `frames` frames starting at absolute frame `first`.
    pub fn new(
        first: usize,
        frames: usize,
        rows: usize,
        cols: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Self {
        let (cos_full, sin_full) = rope_tables(first, frames, rows, cols, head_dim, theta);
        let pairs = head_dim / 2;
        let dh = 2 * pairs;
        let l = frames * rows * cols;
        let swap: Vec<f32> = (0..dh * dh)
            .map(|i| {
                if i % dh == (i / dh + pairs) % dh {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Self {
            cos: Tensor::<2>::from_data(TensorData::new(cos_full, [l, dh]), device)
                .unsqueeze::<4>(),
            sin: Tensor::<2>::from_data(TensorData::new(sin_full, [l, dh]), device)
                .unsqueeze::<4>(),
            swap: Tensor::from_data(TensorData::new(swap, [dh, dh]), device),
        }
    }

    /// Rotates `[B, H, L, Dh]`: pair (i, i + Dh/2) becomes
    /// (x_i cos - x_i+Dh/2 sin, x_i+Dh/2 cos + x_i sin).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        if fused::on_cpu(&x.device(), "rope") {
            let (cos, sin) = self.tables();
            return fused::rope(x, cos, sin);
        }
        self.apply_ops(x)
    }

    /// The cos and sin tables as `[L, Dh]`.
    pub fn tables(&self) -> (Tensor<2>, Tensor<2>) {
        let [_, _, l, dh] = self.cos.dims();
        let table = |t: &Tensor<4>| t.clone().reshape([l, dh]);
        (table(&self.cos), table(&self.sin))
    }

    /// [`apply`](Self::apply) in tensor ops (every backend; the CPU runs one fused op).
    pub fn apply_ops(&self, x: Tensor<4>) -> Tensor<4> {
        let swapped = x.clone().matmul(self.swap.clone().unsqueeze::<4>());
        x * self.cos.clone() + swapped * self.sin.clone()
    }
}
