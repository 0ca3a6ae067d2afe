//! Batched rollouts of many candidate action sequences on the CPU, for planners.
//!
//! Planning rolls hundreds of candidates forward a few frames from one shared context. The
//! tensor path ([`WorldModel::step`]) runs each step as a few dozen backend ops over the
//! whole batch (every intermediate a fresh multi-megabyte buffer) and repeats the shared
//! context keys/values once per candidate. Here the same computation runs on host memory:
//!
//! - the context keys/values stay shared (one copy, read by every candidate);
//! - candidates are split into small chunks that run independently on rayon's threads,
//!   each chunk rolling its candidates through the whole horizon with its activations in
//!   cache-sized buffers that are reused for every block and step;
//! - the projections are single GEMMs over chunk x tokens rows (the `gemm` crate burn's
//!   CPU backend uses), and layer norm, modulation, RoPE, attention, softmax, GELU and the
//!   gated residuals are fused loops over those buffers;
//! - the action embedding and every block's AdaLN vectors are computed once for all
//!   candidates and steps before the rollout.
//!
//! The arithmetic is the tensor path's, op for op (same formulas and parameters; exp and
//! erf are evaluated by vectorisable polynomials accurate to a few float ulps, not libm),
//! so results agree with [`WorldModel::step`] to float rounding.

use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use rayon::prelude::*;

use super::{KvCache, WorldModel, rope_tables};

/// Candidates per chunk: 8 x 16 tokens keeps a chunk's activations and own keys/values in
/// the core's L2 cache for the tiny preset.
const CHUNK_ROWS: usize = 128;

fn host_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// The number format of the host rollout's matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostPrecision {
    /// float32 throughout (default).
    #[default]
    F32,
    /// Weights and activations rounded to bfloat16 for the matrix products, sums in float32,
    /// on Intel AMX tiles ([`amx`](super::amx)); float32 where the CPU has no AMX. Everything
    /// between the products (norms, attention, softmax, GELU, residuals) stays float32.
    Bf16,
}

impl HostPrecision {
    /// The precision the products actually run in here: `Bf16` only where AMX is available.
    pub fn effective(self) -> Self {
        match self {
            Self::Bf16 if super::amx::available() => Self::Bf16,
            _ => Self::F32,
        }
    }

    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for HostPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        [Self::F32, Self::Bf16]
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("precision `{s}`: expected f32 or bf16"))
    }
}

/// `y = x W + b` with `W` `[d_in, d_out]` row-major.
struct Lin {
    w: Vec<f32>,
    /// Zeros for a linear without bias.
    b: Vec<f32>,
    d_in: usize,
    d_out: usize,
    /// `W` in bf16 tiles, when the products run in bf16.
    packed: Option<super::amx::PackedBf16>,
}

impl Lin {
    fn new(l: &Linear, precision: HostPrecision) -> Self {
        let [d_in, d_out] = l.weight.dims();
        let w = host_vec(l.weight.val());
        let packed = (precision.effective() == HostPrecision::Bf16)
            .then(|| super::amx::PackedBf16::pack(&w, d_in, d_out));
        Self {
            w,
            b: l.bias
                .as_ref()
                .map_or_else(|| vec![0.0; d_out], |b| host_vec(b.val())),
            d_in,
            d_out,
            packed,
        }
    }

    /// `out[m, d_out] = x[m, d_in] W` (no bias; callers fuse it into the next pass).
    fn matmul(&self, m: usize, x: &[f32], out: &mut [f32], parallel: bool) {
        let (k, n) = (self.d_in, self.d_out);
        assert!(x.len() >= m * k && out.len() >= m * n);
        if let Some(packed) = &self.packed {
            if parallel && m >= 64 {
                // Row blocks on rayon's threads (each thread its own tiles and scratch).
                const ROWS: usize = 64;
                x[..m * k]
                    .par_chunks(ROWS * k)
                    .zip(out[..m * n].par_chunks_mut(ROWS * n))
                    .for_each(|(xs, os)| packed.matmul(xs.len() / k, xs, os));
            } else {
                packed.matmul(m, x, out);
            }
            return;
        }
        let parallelism = if parallel {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        let (w, dims) = (&self.w[..], (m, n, k));
        crate::fused::gemm(dims, out, false, (x, k, 1), (w, n, 1), 1.0, parallelism);
    }

    /// `x W + b` for `m` rows, bias added in place.
    fn forward(&self, m: usize, x: &[f32], out: &mut [f32], parallel: bool) {
        self.matmul(m, x, out, parallel);
        for row in out[..m * self.d_out].chunks_exact_mut(self.d_out) {
            for (o, &bv) in row.iter_mut().zip(&self.b) {
                *o += bv;
            }
        }
    }
}

struct Ln {
    gamma: Vec<f32>,
    beta: Option<Vec<f32>>,
}

/// burn's `LayerNormConfig` default, which every world-model norm uses.
pub(crate) const LN_EPS: f32 = 1e-5;

impl Ln {
    fn new(l: &LayerNorm) -> Self {
        Self {
            gamma: host_vec(l.gamma.val()),
            beta: l.beta.as_ref().map(|b| host_vec(b.val())),
        }
    }
}

struct HostBlock {
    norm1: Ln,
    qkv: Lin,
    proj: Lin,
    norm2: Ln,
    fc1: Lin,
    fc2: Lin,
}

/// The world model's weights in host memory.
struct HostModel {
    w: usize,
    heads: usize,
    dh: usize,
    hidden: usize,
    embed: usize,
    in_proj: Lin,
    blocks: Vec<HostBlock>,
    final_norm: Ln,
    out_proj: Lin,
    /// The action embedding and the AdaLN heads (every block's, then the final norm's).
    cond_in: Lin,
    cond_out: Lin,
    ada: Vec<Lin>,
    final_ada: Lin,
}

/// A world model's weights copied to host memory for the CPU rollout (see
/// [`WorldModel::host_weights`]).
pub struct HostWeights {
    model: HostModel,
}

/// Everything shared by the chunks of one rollout.
struct Shared<'a> {
    model: &'a HostModel,
    /// Tokens per frame.
    n: usize,
    horizon: usize,
    window: usize,
    /// `[N, W]`: `in_proj` of the current frame (the same for every candidate).
    x0: Vec<f32>,
    /// `[C * H, W]`: the conditioning vector of every candidate and step, from which each
    /// chunk computes its blocks' AdaLN vectors one step at a time (where they stay in
    /// cache, instead of `[C * H, 6W]` per block written out and read back).
    cond: Vec<f32>,
    /// Context frames in the cache.
    ctx_frames: usize,
    /// Per block: context keys transposed `[heads, Dh, ctx_frames * N]` and values
    /// `[heads, ctx_frames * N, Dh]` (rotated keys, as cached).
    ctx_kt: Vec<Vec<f32>>,
    ctx_v: Vec<Vec<f32>>,
    /// `[H, N, Dh]` RoPE tables of each rollout step's frame.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// `[N, D]` the current frame, added to each step's output when the model is residual.
    residual_base: Option<Vec<f32>>,
}

impl WorldModel {
    /// Rolls `C` candidates forward from one shared state on the CPU: the current frame
    /// `current` `[1, N, D]` (the same for all) after the cached context `cache` (batch 1,
    /// or `None` at the start of an episode), under latent actions `z` `[C, H, d]`. Returns
    /// the predicted frames of every step `[C, H, N, D]`, as `H` calls of
    /// [`step`](Self::step) on the cache repeated per candidate would, keeping at most
    /// `window` frames.
    ///
    /// Returns `None` where this path does not apply (a device other than burn's CPU
    /// backend, or a cache with a batch other than 1); callers then use `step`.
    pub fn rollout_shared(
        &self,
        cache: Option<&KvCache>,
        current: Tensor<3>,
        z: Tensor<3>,
        window: usize,
        precision: HostPrecision,
    ) -> Option<Tensor<4>> {
        if current.device() != Device::flex() {
            return None;
        }
        self.rollout_shared_with(&self.host_weights(precision), cache, current, z, window)
    }

    /// This model's weights in host memory (packed for bf16 products when `precision` says so
    /// and the CPU has AMX), for [`rollout_shared_with`](Self::rollout_shared_with): made once,
    /// they serve every rollout of a planning step.
    pub fn host_weights(&self, precision: HostPrecision) -> HostWeights {
        HostWeights {
            model: HostModel::new(self, precision),
        }
    }

    /// [`rollout_shared`](Self::rollout_shared) with weights made by
    /// [`host_weights`](Self::host_weights) of this model.
    pub fn rollout_shared_with(
        &self,
        weights: &HostWeights,
        cache: Option<&KvCache>,
        current: Tensor<3>,
        z: Tensor<3>,
        window: usize,
    ) -> Option<Tensor<4>> {
        let device = current.device();
        if device != Device::flex() {
            return None;
        }
        if let Some(c) = cache
            && c.layers.first().is_some_and(|(k, _)| k.dims()[0] != 1)
        {
            return None;
        }
        let [cb, n, embed] = current.dims();
        let [c, h, latent] = z.dims();
        if cb != 1 || h == 0 || c == 0 {
            return None;
        }
        let model = &weights.model;
        assert_eq!(
            (model.blocks.len(), model.embed),
            (self.blocks.len(), embed),
            "host weights of another model"
        );
        let (w, heads, dh) = (model.w, model.heads, model.dh);

        // Action embedding and modulation vectors of every candidate and step.
        let rows = c * h;
        let zh = host_vec(z);
        assert_eq!(model.cond_in.d_in, latent);
        let mut c1 = vec![0.0f32; rows * w];
        model.cond_in.forward(rows, &zh, &mut c1, true);
        silu_inplace(&mut c1);
        let mut cvec = vec![0.0f32; rows * w];
        model.cond_out.forward(rows, &c1, &mut cvec, true);
        silu_inplace(&mut cvec);

        // Shared context keys/values.
        let (ctx_frames, position) = cache.map_or((0, 0), |c| (c.frames(), c.position));
        let ctx_len = ctx_frames * n;
        let mut ctx_kt = Vec::new();
        let mut ctx_v = Vec::new();
        if let Some(cache) = cache {
            assert_eq!(cache.tokens, n, "cache tokens per frame");
            for (k, v) in &cache.layers {
                let k = host_vec(k.clone());
                let mut kt = vec![0.0f32; k.len() + KT_PAD];
                for hh in 0..heads {
                    for j in 0..ctx_len {
                        for d in 0..dh {
                            kt[(hh * dh + d) * ctx_len + j] = k[(hh * ctx_len + j) * dh + d];
                        }
                    }
                }
                ctx_kt.push(kt);
                ctx_v.push(host_vec(v.clone()));
            }
        }

        let (cos, sin) = rope_tables(
            position,
            h,
            self.grid_rows,
            self.grid_cols,
            dh,
            self.rope_theta,
        );
        assert_eq!(self.grid_rows * self.grid_cols, n, "tokens per frame");
        let cur = host_vec(current);
        let mut x0 = vec![0.0f32; n * w];
        model.in_proj.forward(n, &cur, &mut x0, false);

        let shared = Shared {
            model,
            n,
            horizon: h,
            window: window.max(1),
            x0,
            cond: cvec,
            ctx_frames,
            ctx_kt,
            ctx_v,
            cos,
            sin,
            residual_base: self.residual.then(|| cur.clone()),
        };
        let mut per_chunk = (CHUNK_ROWS / n).max(1);
        // Few large chunks (one token per frame): as many on every thread, so that no thread
        // runs a last chunk alone.
        let threads = rayon::current_num_threads().max(1);
        let chunks = c.div_ceil(per_chunk);
        if chunks < 4 * threads {
            per_chunk = c.div_ceil(chunks.div_ceil(threads) * threads);
        }
        let mut out = vec![0.0f32; c * h * n * embed];
        out.par_chunks_mut(per_chunk * h * n * embed)
            .enumerate()
            .for_each(|(i, dst)| {
                let first = i * per_chunk;
                let count = dst.len() / (h * n * embed);
                run_chunk(&shared, first, count, dst);
            });
        Some(Tensor::from_data(
            TensorData::new(out, [c, h, n, embed]),
            &device,
        ))
    }
}

impl HostModel {
    fn new(m: &WorldModel, precision: HostPrecision) -> Self {
        let w = m.in_proj.weight.dims()[1];
        let blocks: Vec<HostBlock> = m
            .blocks
            .iter()
            .map(|b| HostBlock {
                norm1: Ln::new(&b.norm1),
                qkv: Lin::new(&b.qkv, precision),
                proj: Lin::new(&b.proj, precision),
                norm2: Ln::new(&b.norm2),
                fc1: Lin::new(&b.fc1, precision),
                fc2: Lin::new(&b.fc2, precision),
            })
            .collect();
        let hidden = blocks.first().map_or(0, |b| b.fc1.d_out);
        Self {
            w,
            heads: m.heads,
            dh: w / m.heads,
            hidden,
            embed: m.in_proj.weight.dims()[0],
            in_proj: Lin::new(&m.in_proj, precision),
            blocks,
            final_norm: Ln::new(&m.final_norm),
            out_proj: Lin::new(&m.out_proj, precision),
            cond_in: Lin::new(&m.cond_in, precision),
            cond_out: Lin::new(&m.cond_out, precision),
            ada: m
                .blocks
                .iter()
                .map(|b| Lin::new(&b.ada, precision))
                .collect(),
            final_ada: Lin::new(&m.final_ada, precision),
        }
    }
}

fn run_chunk(s: &Shared, first: usize, count: usize, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        // SAFETY: the CPU supports the enabled features (checked just above).
        unsafe { run_chunk_avx512(s, first, count, dst) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the enabled features (checked just above).
        unsafe { run_chunk_avx2(s, first, count, dst) };
        return;
    }
    run_chunk_body(s, first, count, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_chunk_avx512(s: &Shared, first: usize, count: usize, dst: &mut [f32]) {
    run_chunk_body(s, first, count, dst);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_chunk_avx2(s: &Shared, first: usize, count: usize, dst: &mut [f32]) {
    run_chunk_body(s, first, count, dst);
}

/// Rolls candidates `first..first + count` through the horizon; writes their predicted
/// frames of every step `[count, H, N, D]` to `dst`.
#[inline(always)]
fn run_chunk_body(s: &Shared, first: usize, count: usize, dst: &mut [f32]) {
    let m = s.model;
    let (w, heads, dh, n, h) = (m.w, m.heads, m.dh, s.n, s.horizon);
    let rows = count * n;
    let mut x = vec![0.0f32; rows * w];
    let mut hb = vec![0.0f32; rows * w];
    let mut qkv = vec![0.0f32; rows * 3 * w];
    let mut att = vec![0.0f32; rows * w];
    let mut mlp = vec![0.0f32; rows * m.hidden];
    let mut frame = vec![0.0f32; rows * m.embed];
    // This step's conditioning vectors `[count, W]`, a block's AdaLN vectors `[count, 6W]`
    // and the final norm's `[count, 2W]`.
    let mut cond = vec![0.0f32; count * w];
    let mut ada = vec![0.0f32; count * 6 * w];
    let mut final_ada = vec![0.0f32; count * 2 * w];
    // Own keys (transposed) and values of each candidate's rollout frames, per block:
    // keys `[count, heads, Dh, H * N]`, values `[count, heads, H * N, Dh]`.
    let own_len = h * n;
    // (KT_PAD more columns at the end: the last keys are scored as a whole block.)
    let mut own_kt = vec![vec![0.0f32; count * heads * dh * own_len + KT_PAD]; m.blocks.len()];
    let mut own_v = vec![vec![0.0f32; count * heads * own_len * dh]; m.blocks.len()];
    let ctx_len = s.ctx_frames * n;
    let mut scores = vec![0.0f32; ATT_ROWS * (ctx_len + own_len)];
    let mut rot = vec![0.0f32; dh];
    let scale = 1.0 / (dh as f32).sqrt();

    for k in 0..h {
        // Frames before this one that stay in the window: context, then own frames.
        let before = s.ctx_frames + k;
        let drop = before - before.min(s.window);
        let drop_ctx = drop.min(s.ctx_frames);
        let drop_own = drop - drop_ctx;
        let (ctx_lo, own_lo, own_hi) = (drop_ctx * n, drop_own * n, (k + 1) * n);
        let cos = &s.cos[k * n * dh..(k + 1) * n * dh];
        let sin = &s.sin[k * n * dh..(k + 1) * n * dh];

        for (ci, row) in cond.chunks_exact_mut(w).enumerate() {
            let r = (first + ci) * h + k;
            row.copy_from_slice(&s.cond[r * w..(r + 1) * w]);
        }
        if k == 0 {
            for row in x.chunks_exact_mut(n * w) {
                row.copy_from_slice(&s.x0);
            }
        } else {
            m.in_proj.forward(rows, &frame, &mut x, false);
        }
        for (bi, blk) in m.blocks.iter().enumerate() {
            m.ada[bi].forward(count, &cond, &mut ada, false);
            let ada = &ada;
            let mod_row = |ci: usize| &ada[ci * 6 * w..(ci + 1) * 6 * w];
            // Attention branch.
            for ci in 0..count {
                let md = mod_row(ci);
                for t in 0..n {
                    let r = ci * n + t;
                    norm_modulate(
                        &x[r * w..(r + 1) * w],
                        &mut hb[r * w..(r + 1) * w],
                        &blk.norm1,
                        &md[0..w],
                        &md[w..2 * w],
                    );
                }
            }
            blk.qkv.matmul(rows, &hb, &mut qkv, false);
            let kt_all = &mut own_kt[bi];
            let v_all = &mut own_v[bi];
            for ci in 0..count {
                for t in 0..n {
                    let r = ci * n + t;
                    let row = &mut qkv[r * 3 * w..(r + 1) * 3 * w];
                    for (v, &bv) in row.iter_mut().zip(&blk.qkv.b) {
                        *v += bv;
                    }
                    let (cs, sn) = (&cos[t * dh..(t + 1) * dh], &sin[t * dh..(t + 1) * dh]);
                    let slot = k * n + t;
                    for hh in 0..heads {
                        // Queries rotated in place (first third of the row).
                        let q = &mut row[hh * dh..(hh + 1) * dh];
                        rope_row(q, cs, sn, &mut rot);
                        q.copy_from_slice(&rot);
                        let kk = &row[w + hh * dh..w + (hh + 1) * dh];
                        rope_row(kk, cs, sn, &mut rot);
                        let rk = &rot;
                        let base = (ci * heads + hh) * dh * own_len;
                        for d in 0..dh {
                            kt_all[base + d * own_len + slot] = rk[d];
                        }
                        let vbase = ((ci * heads + hh) * own_len + slot) * dh;
                        v_all[vbase..vbase + dh]
                            .copy_from_slice(&row[2 * w + hh * dh..2 * w + (hh + 1) * dh]);
                    }
                }
            }
            for ci in 0..count {
                for hh in 0..heads {
                    let kt_own = &kt_all[(ci * heads + hh) * dh * own_len..];
                    let v_own = &v_all[(ci * heads + hh) * own_len * dh..][..own_len * dh];
                    let (kt_ctx, v_ctx): (&[f32], &[f32]) = if ctx_len > 0 {
                        (
                            &s.ctx_kt[bi][hh * dh * ctx_len..],
                            &s.ctx_v[bi][hh * ctx_len * dh..(hh + 1) * ctx_len * dh],
                        )
                    } else {
                        (&[], &[])
                    };
                    let segs = [
                        Seg {
                            kt: kt_ctx,
                            stride: ctx_len,
                            lo: ctx_lo,
                            len: ctx_len - ctx_lo,
                            v: &v_ctx[ctx_lo * dh..],
                        },
                        Seg {
                            kt: kt_own,
                            stride: own_len,
                            lo: own_lo,
                            len: own_hi - own_lo,
                            v: &v_own[own_lo * dh..],
                        },
                    ];
                    attend(
                        dh,
                        n,
                        &qkv[ci * n * 3 * w + hh * dh..],
                        3 * w,
                        &mut att[ci * n * w + hh * dh..],
                        w,
                        &segs,
                        &mut scores,
                        scale,
                    );
                }
            }
            blk.proj.matmul(rows, &att, &mut hb, false);
            for ci in 0..count {
                let gate = &mod_row(ci)[2 * w..3 * w];
                for t in 0..n {
                    let r = ci * n + t;
                    let (xr, pr) = (&mut x[r * w..(r + 1) * w], &hb[r * w..(r + 1) * w]);
                    gated_residual(xr, pr, &blk.proj.b, gate);
                }
            }
            // MLP branch.
            for ci in 0..count {
                let md = mod_row(ci);
                for t in 0..n {
                    let r = ci * n + t;
                    norm_modulate(
                        &x[r * w..(r + 1) * w],
                        &mut hb[r * w..(r + 1) * w],
                        &blk.norm2,
                        &md[3 * w..4 * w],
                        &md[4 * w..5 * w],
                    );
                }
            }
            blk.fc1.matmul(rows, &hb, &mut mlp, false);
            let hid = m.hidden;
            for row in mlp.chunks_exact_mut(hid) {
                for (v, &bv) in row.iter_mut().zip(&blk.fc1.b) {
                    *v = gelu(*v + bv);
                }
            }
            blk.fc2.matmul(rows, &mlp, &mut hb, false);
            for ci in 0..count {
                let gate = &mod_row(ci)[5 * w..6 * w];
                for t in 0..n {
                    let r = ci * n + t;
                    let (xr, pr) = (&mut x[r * w..(r + 1) * w], &hb[r * w..(r + 1) * w]);
                    gated_residual(xr, pr, &blk.fc2.b, gate);
                }
            }
        }
        // Final modulated norm and output projection.
        m.final_ada.forward(count, &cond, &mut final_ada, false);
        for ci in 0..count {
            let md = &final_ada[ci * 2 * w..(ci + 1) * 2 * w];
            for t in 0..n {
                let r = ci * n + t;
                norm_modulate(
                    &x[r * w..(r + 1) * w],
                    &mut hb[r * w..(r + 1) * w],
                    &m.final_norm,
                    &md[0..w],
                    &md[w..2 * w],
                );
            }
        }
        // Residual models predict the change: keep this step's input frame to add back.
        let input = s.residual_base.as_ref().map(|cur| {
            if k == 0 {
                cur.repeat(count)
            } else {
                frame[..rows * m.embed].to_vec()
            }
        });
        m.out_proj.forward(rows, &hb, &mut frame, false);
        if let Some(input) = input {
            for (f, i) in frame.iter_mut().zip(&input) {
                *f += i;
            }
        }
        let per = n * m.embed;
        for ci in 0..count {
            dst[(ci * h + k) * per..(ci * h + k + 1) * per]
                .copy_from_slice(&frame[ci * per..(ci + 1) * per]);
        }
    }
}

/// `out = LN(x) * (scale + 1) + shift` for one row.
#[inline(always)]
fn norm_modulate(x: &[f32], out: &mut [f32], ln: &Ln, shift: &[f32], scale: &[f32]) {
    let w = x.len();
    let (mean, inv) = row_stats(x);
    // Equal lengths up front so that the loops vectorise without bounds checks.
    let (out, gamma, shift, scale) = (&mut out[..w], &ln.gamma[..w], &shift[..w], &scale[..w]);
    match &ln.beta {
        Some(beta) => {
            let beta = &beta[..w];
            for j in 0..w {
                let y = (x[j] - mean) * inv * gamma[j] + beta[j];
                out[j] = y * (scale[j] + 1.0) + shift[j];
            }
        }
        None => {
            for j in 0..w {
                let y = (x[j] - mean) * inv * gamma[j];
                out[j] = y * (scale[j] + 1.0) + shift[j];
            }
        }
    }
}

/// Mean and 1 / sqrt(variance + eps) of one row (layer norm's statistics, the variance
/// biased, in two passes).
#[inline(always)]
pub(crate) fn row_stats(x: &[f32]) -> (f32, f32) {
    let w = x.len();
    let mean = sum_lanes(x) / w as f32;
    let mut sq = [0.0f32; 256];
    let mut var = 0.0f32;
    for c in x.chunks(256) {
        let sq = &mut sq[..c.len()];
        for (s, &v) in sq.iter_mut().zip(c) {
            *s = (v - mean) * (v - mean);
        }
        var += sum_lanes(sq);
    }
    let var = var / w as f32;
    (mean, 1.0 / (var + LN_EPS).sqrt())
}

/// `x += (y + bias) * gate` for one row.
#[inline(always)]
fn gated_residual(x: &mut [f32], y: &[f32], bias: &[f32], gate: &[f32]) {
    let w = x.len();
    let (y, bias, gate) = (&y[..w], &bias[..w], &gate[..w]);
    for j in 0..w {
        x[j] += (y[j] + bias[j]) * gate[j];
    }
}

/// RoPE of one head's row: `x * cos + swap_halves(x) * sin` (the tables carry the sign).
#[inline(always)]
fn rope_row(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let dh = x.len();
    let half = dh / 2;
    let (cos, sin, out) = (&cos[..dh], &sin[..dh], &mut out[..dh]);
    for i in 0..half {
        out[i] = x[i] * cos[i] + x[i + half] * sin[i];
        out[i + half] = x[i + half] * cos[i + half] + x[i] * sin[i + half];
    }
}

/// Keys (transposed, `[Dh, stride]`, columns `lo..lo + len` used, and readable up to `len`
/// rounded up to a multiple of `KT_PAD` in the last row: the buffers carry `KT_PAD` zeros
/// after their keys) and values (`[len, Dh]` from the first used row) of one run of attended
/// frames.
struct Seg<'a> {
    kt: &'a [f32],
    stride: usize,
    lo: usize,
    len: usize,
    v: &'a [f32],
}

/// Query rows attended together (register blocking of the score and value products).
const ATT_ROWS: usize = 4;
/// Keys scored together in `attend_rows`, and the zeros after the transposed keys, so that a
/// last partial block of keys reads whole rows.
const KT_PAD: usize = 16;

/// Attention of one candidate's head: `n` query rows `q[i * qs..][..Dh]` (rotated) over the
/// keys/values of `segs`; writes `o[i * os..][..Dh]`. `scores` holds `ATT_ROWS` rows.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend(
    dh: usize,
    n: usize,
    q: &[f32],
    qs: usize,
    o: &mut [f32],
    os: usize,
    segs: &[Seg; 2],
    scores: &mut [f32],
    scale: f32,
) {
    match dh {
        8 => attend_dh::<8, 4>(n, q, qs, o, os, segs, scores, scale),
        16 => attend_dh::<16, 4>(n, q, qs, o, os, segs, scores, scale),
        32 => attend_dh::<32, 2>(n, q, qs, o, os, segs, scores, scale),
        64 => attend_dh::<64, 1>(n, q, qs, o, os, segs, scores, scale),
        _ => {
            for i in 0..n {
                attend_any(
                    dh,
                    &q[i * qs..][..dh],
                    &mut o[i * os..][..dh],
                    segs,
                    scores,
                    scale,
                );
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_dh<const DH: usize, const M: usize>(
    n: usize,
    q: &[f32],
    qs: usize,
    o: &mut [f32],
    os: usize,
    segs: &[Seg; 2],
    scores: &mut [f32],
    scale: f32,
) {
    let mut i = 0;
    while i + M <= n {
        attend_rows::<DH, M>(i, q, qs, o, os, segs, scores, scale);
        i += M;
    }
    while i < n {
        attend_rows::<DH, 1>(i, q, qs, o, os, segs, scores, scale);
        i += 1;
    }
}

/// Attention of query rows `i0..i0 + M`: scores in blocks of 16 keys with `M x 16`
/// accumulators, softmax per row, then the value rows weighted into `M x Dh` accumulators.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn attend_rows<const DH: usize, const M: usize>(
    i0: usize,
    q: &[f32],
    qs: usize,
    o: &mut [f32],
    os: usize,
    segs: &[Seg; 2],
    scores: &mut [f32],
    scale: f32,
) {
    // Keys per score block: as many as the padding after the transposed keys.
    const NR: usize = KT_PAD;
    let total = segs[0].len + segs[1].len;
    let mut qv = [[0.0f32; DH]; M];
    for (a, qa) in qv.iter_mut().enumerate() {
        qa.copy_from_slice(&q[(i0 + a) * qs..][..DH]);
    }
    let mut off = 0;
    for seg in segs {
        // Keys in blocks of NR; the last block reads the columns after the used ones too
        // (the key buffers are padded by KT_PAD = NR zeros), and its extra scores are dropped.
        assert!(
            seg.len == 0
                || seg.kt.len() >= (DH - 1) * seg.stride + seg.lo + seg.len.next_multiple_of(NR),
            "transposed keys without their padding"
        );
        let kt = seg.kt.as_ptr();
        for jb in (0..seg.len).step_by(NR) {
            let take = (seg.len - jb).min(NR);
            // SAFETY: `kt` holds NR columns from `lo + jb` in every row (checked above).
            let acc = unsafe { score_block::<DH, M, NR>(kt, seg.stride, seg.lo + jb, &qv) };
            for (a, acc_a) in acc.iter().enumerate() {
                scores[a * total + off + jb..][..take].copy_from_slice(&acc_a[..take]);
            }
        }
        off += seg.len;
    }
    for a in 0..M {
        softmax_scaled(&mut scores[a * total..(a + 1) * total], scale);
    }
    let mut acc = [[0.0f32; DH]; M];
    let mut off = 0;
    for seg in segs {
        let len = seg.len;
        assert!(seg.v.len() >= len * DH && scores.len() >= (M - 1) * total + off + len);
        let (v, sp) = (seg.v.as_ptr(), scores.as_ptr());
        for j in 0..len {
            // SAFETY: j < len, and both bounds are checked above.
            let vr: &[f32; DH] = unsafe { &*(v.add(j * DH) as *const [f32; DH]) };
            for a in 0..M {
                let pj = unsafe { *sp.add(a * total + off + j) };
                for d in 0..DH {
                    acc[a][d] = pj.mul_add(vr[d], acc[a][d]);
                }
            }
        }
        off += len;
    }
    for (a, acc_a) in acc.iter().enumerate() {
        o[(i0 + a) * os..][..DH].copy_from_slice(acc_a);
    }
}

/// Scores of `M` query rows against the `NR` keys of columns `col..col + NR` of the
/// transposed keys `kt` (`[DH, stride]`).
///
/// # Safety
/// `kt` must hold `(DH - 1) * stride + col + NR` numbers.
#[inline(always)]
unsafe fn score_block<const DH: usize, const M: usize, const NR: usize>(
    kt: *const f32,
    stride: usize,
    col: usize,
    qv: &[[f32; DH]; M],
) -> [[f32; NR]; M] {
    let mut acc = [[0.0f32; NR]; M];
    for d in 0..DH {
        // SAFETY: within the bound the caller promises.
        let row: &[f32; NR] = unsafe { &*(kt.add(d * stride + col) as *const [f32; NR]) };
        for a in 0..M {
            let qd = qv[a][d];
            for u in 0..NR {
                acc[a][u] = qd.mul_add(row[u], acc[a][u]);
            }
        }
    }
    acc
}

/// One query row of any head size (the plain loops).
#[inline(always)]
fn attend_any(
    dh: usize,
    q: &[f32],
    o: &mut [f32],
    segs: &[Seg; 2],
    scores: &mut [f32],
    scale: f32,
) {
    let total = segs[0].len + segs[1].len;
    let mut off = 0;
    for seg in segs {
        let out = &mut scores[off..off + seg.len];
        out.fill(0.0);
        for (d, &qd) in q.iter().enumerate() {
            let row = &seg.kt[d * seg.stride + seg.lo..][..seg.len];
            for (s, &k) in out.iter_mut().zip(row) {
                *s = qd.mul_add(k, *s);
            }
        }
        off += seg.len;
    }
    softmax_scaled(&mut scores[..total], scale);
    o.fill(0.0);
    let mut off = 0;
    for seg in segs {
        for j in 0..seg.len {
            let p = scores[off + j];
            for (ov, &v) in o.iter_mut().zip(&seg.v[j * dh..(j + 1) * dh]) {
                *ov = p.mul_add(v, *ov);
            }
        }
        off += seg.len;
    }
}

/// Sum with 8 independent lanes (vectorises; the order differs from a serial sum only in
/// float rounding).
#[inline(always)]
pub(crate) fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for u in 0..8 {
            acc[u] += c[u];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + rest
}

#[inline(always)]
pub(crate) fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for u in 0..8 {
            acc[u] = acc[u].max(c[u]);
        }
    }
    acc.iter().fold(rest, |m, &v| m.max(v))
}

/// Softmax of `x * scale` in place.
#[inline(always)]
fn softmax_scaled(x: &mut [f32], scale: f32) {
    for v in x.iter_mut() {
        *v *= scale;
    }
    let max = max_lanes(x);
    for v in x.iter_mut() {
        *v = exp_f32(*v - max);
    }
    let sum = sum_lanes(x);
    for v in x.iter_mut() {
        *v /= sum;
    }
}

fn silu_inplace(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v /= 1.0 + (-*v).exp();
    }
}

/// e^x for float32, branch-free so that loops over it vectorise: Cody-Waite reduction to
/// r in [-ln2/2, ln2/2] and a degree-6 polynomial (Cephes `expf`; about 1 ulp).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 5.000_000_1e-1);
    let y = (p * r).mul_add(r, r) + 1.0;
    // NaN passes the clamp and would reach the conversion below; max/min (which return the
    // number when one side is NaN) keep n in range, and y is already NaN, so NaN still comes
    // out.
    let n = n.max(-126.0).min(127.0);
    // SAFETY: n is an integer in [-126, 127], so the conversion is exact (and compiles to
    // one vector instruction, unlike the saturating `as`).
    let e = unsafe { n.to_int_unchecked::<i32>() };
    y * f32::from_bits(((e + 127) << 23) as u32)
}

/// erf for float32, branch-free (both branches evaluated, one selected): for |x| < 1,
/// x S(x^2); else 1 - erfc with erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2). S and P
/// are degree-5 least-squares fits on Chebyshev nodes (|x| <= 1 and 1 <= z <= 4.5; erf is 1
/// in float32 beyond). Absolute error below 1.2e-7 (libm's `erff`: about 6e-8).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    const SMALL: [f32; 6] = [
        -5.654_111_7e-4,
        4.923_284e-3,
        -2.671_639_6e-2,
        0.112_803_65,
        -0.376_123_5,
        1.128_379_1,
    ];
    const LARGE: [f32; 6] = [
        0.254_529_48,
        -0.789_185_6,
        0.567_531_05,
        0.203_633_52,
        1.031_053_4,
        -1.267_800_3,
    ];
    let x2 = x * x;
    let mut s = SMALL[0];
    for &c in &SMALL[1..] {
        s = s.mul_add(x2, c);
    }
    let small = s * x;
    let z = x.abs().min(4.5);
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = LARGE[0];
    for &c in &LARGE[1..] {
        p = p.mul_add(t, c);
    }
    let large = (1.0 - t * exp_f32((-z).mul_add(z, p))).copysign(x);
    if z < 1.0 { small } else { large }
}

/// Exact (erf) GELU, as burn's `gelu`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x / std::f32::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_precision_reads_its_name_and_settings_without_it_read_f32() {
        for p in [HostPrecision::F32, HostPrecision::Bf16] {
            assert_eq!(p.name().parse::<HostPrecision>().unwrap(), p);
        }
        let err = "fp8".parse::<HostPrecision>().unwrap_err();
        assert!(err.contains("fp8") && err.contains("bf16"), "{err}");
        #[derive(serde::Deserialize)]
        struct S {
            #[serde(default)]
            precision: HostPrecision,
        }
        let old: S = toml::from_str("").unwrap();
        assert_eq!(old.precision, HostPrecision::F32);
        let new: S = toml::from_str("precision = \"bf16\"").unwrap();
        assert_eq!(new.precision, HostPrecision::Bf16);
        // Bf16 runs as bf16 exactly where the tiles are there.
        assert_eq!(
            HostPrecision::Bf16.effective() == HostPrecision::Bf16,
            super::super::amx::available()
        );
    }

    #[test]
    fn exp_and_erf_match_libm() {
        let mut worst_exp = 0.0f64;
        let mut worst_erf = 0.0f64;
        for i in 0..200_000 {
            let x = -80.0 + 160.0 * i as f32 / 200_000.0;
            if x < 80.0 {
                let e = exp_f32(x) as f64;
                let r = (x as f64).exp();
                worst_exp = worst_exp.max(((e - r) / r).abs());
            }
            let y = -6.0 + 12.0 * i as f32 / 200_000.0;
            let r = erf_ref(y as f64);
            worst_erf = worst_erf.max((erf_f32(y) as f64 - r).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
        // NaN in (from a corrupt weight) comes out as NaN; infinities saturate.
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(f32::INFINITY).is_finite() && exp_f32(f32::NEG_INFINITY) < 1e-37);
        assert!(worst_erf < 1.5e-7, "erf absolute error {worst_erf:e}");
    }

    #[test]
    fn shared_rollout_matches_steps() {
        use crate::config::LamConfig;
        use burn::nn::LinearConfig;
        use burn::tensor::Distribution;
        let _rng = crate::train::rng_lock();
        let dev = Device::flex();
        dev.seed(5);
        // The tiny preset (16 tokens per frame: whole blocks of keys), and one token per
        // frame with heads of 16 and 64 numbers (fewer keys than a block: the padded tail).
        let one_token: &[&str] = &["model.grid=[1,1]"];
        let one_token_wide: &[&str] = &["model.grid=[1,1]", "model.wm_heads=1"];
        for overrides in [&[][..], one_token, one_token_wide] {
            let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
            let cfg = LamConfig::preset("tiny")
                .unwrap()
                .with_overrides(&overrides)
                .unwrap()
                .model;
            let mut wm = cfg.world_model().init(&dev);
            for block in wm.blocks.iter_mut() {
                block.ada = LinearConfig::new(cfg.wm_dim, 6 * cfg.wm_dim).init(&dev);
            }
            wm.final_ada = LinearConfig::new(cfg.wm_dim, 2 * cfg.wm_dim).init(&dev);
            let normal = Distribution::Normal(0.0, 1.0);
            let (n, d, dl) = (cfg.tokens(), cfg.embed_dim, cfg.latent_dim);
            let history = Tensor::<4>::random([1, 3, n, d], normal, &dev);
            let history_z = Tensor::<3>::random([1, 3, dl], normal, &dev);
            let current = Tensor::<3>::random([1, n, d], normal, &dev);
            // 21 candidates: chunks of 8 with a partial last one.
            let z = Tensor::<3>::random([21, 5, dl], normal, &dev);
            // Windows: everything kept, context trimmed, own frames trimmed too.
            for window in [16, 4, 2] {
                let cache = wm.prefill(history.clone(), history_z.clone(), window);
                for cache in [Some(&cache), None] {
                    let want = wm.rollout_steps(cache, current.clone(), z.clone(), window);
                    let got = wm
                        .rollout_shared(
                            cache,
                            current.clone(),
                            z.clone(),
                            window,
                            HostPrecision::F32,
                        )
                        .expect("CPU path");
                    let diff = (got - want.clone()).abs().max().into_scalar::<f32>();
                    assert!(
                        diff < 2e-5,
                        "{overrides:?}, window {window}, cache {}: differs from step() by {diff}",
                        cache.is_some()
                    );
                    // bf16 products: within their rounding of the float32 rollout (relative to
                    // the frames' size), and the float32 rollout itself where AMX is missing.
                    let bf16 = wm
                        .rollout_shared(
                            cache,
                            current.clone(),
                            z.clone(),
                            window,
                            HostPrecision::Bf16,
                        )
                        .expect("CPU path");
                    let scale = want.clone().abs().max().into_scalar::<f32>();
                    let diff = (bf16 - want).abs().max().into_scalar::<f32>();
                    if HostPrecision::Bf16.effective() == HostPrecision::Bf16 {
                        assert!(
                            diff > 0.0 && diff < 0.03 * scale,
                            "{overrides:?}, window {window}: bf16 differs by {diff} (frames up to {scale})"
                        );
                    } else {
                        assert!(
                            diff < 2e-5,
                            "{overrides:?}, window {window}: f32 fallback differs by {diff}"
                        );
                    }
                }
            }
        }
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction of erfc.
    fn erf_ref(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let mut term = a;
            let mut sum = a;
            let mut k = 0.0;
            while term.abs() > 1e-17 * sum.abs().max(1e-300) {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = exp(-a^2)/sqrt(pi) * 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }
}
