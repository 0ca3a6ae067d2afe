//! Scaled dot-product attention as one CPU op with its own backward.
//!
//! Written in tensor ops, attention costs burn's CPU backend a full score matrix per op
//! (scale, bias, max, exp, sum, divide, and each of their backwards), evaluated element by
//! element: about half of a stage-1 training step. On the `flex` backend this module runs the
//! same math as one backend extension op instead, per (batch, head) on rayon's threads:
//!
//! - forward: the scores of a block of query rows are one GEMM, the softmax a fused loop
//!   (vectorisable `exp`), the output a second GEMM; only the output and each row's
//!   log-sum-exp are kept for the backward (not the score matrix);
//! - backward: the scores are recomputed from the kept log-sum-exp (the memory-saving choice
//!   of fused attention kernels) and the four gradient GEMMs run on them;
//! - keys a query cannot see (an additive bias of `-inf` at the end of its row, as in the
//!   world model's frame-causal mask) are skipped: rows are taken in blocks that see the same
//!   leading keys, so the first frame's queries multiply one frame of keys, not all of them.
//!
//! Other devices run [`attention_ops`], the tensor ops this op is checked against
//! (`the_fused_attention_matches_the_tensor_ops` below); `LAM_TENSOR_OPS=attention` makes the
//! CPU take the tensor ops too, to time one against the other (see [`crate::fused`]). The bias
//! is a constant (a mask): no gradient flows into it.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Flex, backend_extension};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::host::{exp_f32, max_lanes, sum_lanes};
use crate::fused::{
    PARALLEL_MACS, contiguous_f32, dot, float_tensor, on_cpu, record, rope_head_body, run_tasks,
    simd_dispatch, zeros,
};

/// `softmax(q k^T * scale + bias) v` for `q` `[B, H, Lq, Dh]`, `k` and `v` `[B, H, Lk, Dh]`
/// and an optional additive `bias` `[Lq, Lk]` shared by every batch item and head (a mask:
/// it receives no gradient). Returns `[B, H, Lq, Dh]`. One fused op with its backward on the
/// CPU, [`attention_ops`] elsewhere.
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<2>>,
    scale: f64,
) -> Tensor<4> {
    if on_cpu(&q.device(), "attention") {
        // The op always takes a bias (burn 0.22.1's extension macro does not route an
        // optional tensor to the autodiff backend); zeros when there is none.
        let [_, _, lq, _] = q.dims();
        let lk = k.dims()[2];
        let bias = bias.unwrap_or_else(|| Tensor::zeros([lq, lk], &q.device()));
        let out = <burn::backend::Dispatch as FusedAttention>::fused_attention(
            q.into_dispatch(),
            k.into_dispatch(),
            v.into_dispatch(),
            bias.into_dispatch(),
            scale as f32,
        );
        return Tensor::from_dispatch(out);
    }
    attention_ops(q, k, v, bias, scale)
}

/// The same attention in burn's tensor ops (every backend).
pub fn attention_ops(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Option<Tensor<2>>,
    scale: f64,
) -> Tensor<4> {
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if let Some(bias) = bias {
        scores = scores + bias.unsqueeze::<4>();
    }
    softmax(scores, 3).matmul(v)
}

/// Frame-causal self-attention straight from the packed projection `qkv` `[B, L, 3W]` (each
/// token's queries, keys and values, heads inside: `[3, H, Dh]`), with RoPE tables `cos`,
/// `sin` `[L, Dh]` and an optional additive `bias` `[L, L]` (constants: no gradient flows into
/// them; tables of width zero rotate nothing). Returns `[B, L, W]`, heads side by side, as the
/// output projection reads them. The same math as rotating [`super::Rope::apply`] the sliced
/// queries and keys and calling [`attention`], in one CPU op: no slices, permutes or copies of
/// the activations, and one gradient buffer for `qkv`. The CPU's path when no keys are cached
/// and none are kept.
pub fn qkv_attention(
    qkv: Tensor<3>,
    (cos, sin): (Tensor<2>, Tensor<2>),
    bias: Option<Tensor<2>>,
    heads: usize,
    scale: f64,
) -> Tensor<3> {
    let [_, l, _] = qkv.dims();
    let bias = bias.unwrap_or_else(|| Tensor::zeros([l, l], &qkv.device()));
    Tensor::from_dispatch(
        <burn::backend::Dispatch as FusedAttention>::fused_qkv_attention(
            qkv.into_dispatch(),
            cos.into_dispatch(),
            sin.into_dispatch(),
            bias.into_dispatch(),
            heads,
            scale as f32,
        ),
    )
}

/// A ViT block's self-attention (no mask) straight from the packed projection `qkv`
/// `[B, L, 3W]` (`[3, H, Dh]` per token) -> `[B, L, W]`, heads side by side; `rope`, when
/// given, rotates queries and keys by tables `cos`, `sin` `[L, Dh]` in the world model's
/// convention (halves: `out1 = x1 cos1 + x2 sin1`, `out2 = x2 cos2 + x1 sin2`). On the CPU the
/// packed op of [`qkv_attention`] (without rope: tables of width zero); elsewhere the heads are
/// split, rotated and attended in tensor ops ([`attention_ops`]).
pub fn self_attention(
    qkv: Tensor<3>,
    rope: Option<(Tensor<2>, Tensor<2>)>,
    heads: usize,
) -> Tensor<3> {
    let [_, l, w3] = qkv.dims();
    let device = qkv.device();
    if on_cpu(&device, "attention") {
        let tables = rope.unwrap_or_else(|| {
            let none = Tensor::<2>::zeros([l, 0], &device);
            (none.clone(), none)
        });
        let scale = 1.0 / ((w3 / 3 / heads) as f64).sqrt();
        return qkv_attention(qkv, tables, None, heads, scale);
    }
    self_attention_ops(qkv, rope, heads)
}

/// [`self_attention`] in burn's tensor ops (every backend).
pub fn self_attention_ops(
    qkv: Tensor<3>,
    rope: Option<(Tensor<2>, Tensor<2>)>,
    heads: usize,
) -> Tensor<3> {
    let [b, l, w3] = qkv.dims();
    let (w, dh) = (w3 / 3, w3 / 3 / heads);
    let qkv = qkv.reshape([b, l, 3, heads, dh]).permute([2, 0, 3, 1, 4]);
    let part = |i: usize| qkv.clone().slice(s![i..i + 1]).squeeze_dim::<4>(0);
    let (mut q, mut k) = (part(0), part(1));
    if let Some((cos, sin)) = rope {
        let (cos, sin) = (cos.unsqueeze::<4>(), sin.unsqueeze::<4>());
        let rotate = |x: Tensor<4>| {
            let halves = |r: std::ops::Range<usize>| x.clone().slice(s![.., .., .., r]);
            let swapped = Tensor::cat(vec![halves(dh / 2..dh), halves(0..dh / 2)], 3);
            x * cos.clone() + swapped * sin.clone()
        };
        (q, k) = (rotate(q), rotate(k));
    }
    attention_ops(q, k, part(2), None, 1.0 / (dh as f64).sqrt())
        .swap_dims(1, 2)
        .reshape([b, l, w])
}

/// The backend op behind [`attention`].
#[backend_extension(Flex, Autodiff)]
pub trait FusedAttention: Backend {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self>;

    fn fused_qkv_attention(
        qkv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self>;
}

impl FusedAttention for Flex {
    fn fused_attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        bias: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        let inputs = Inputs::new(q, k, v, bias, scale);
        inputs.forward().0
    }

    fn fused_qkv_attention(
        qkv: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        bias: FlexTensor,
        heads: usize,
        scale: f32,
    ) -> FlexTensor {
        Packed::new(qkv, cos, sin, bias, heads, scale).forward().0
    }
}

impl<C: CheckpointStrategy> FusedAttention for Autodiff<Flex, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node()];
        let inputs = Inputs::new(
            q.into_primitive(),
            k.into_primitive(),
            v.into_primitive(),
            bias.into_primitive(),
            scale,
        );
        record::<_, C, 3>(AttentionBackward, nodes, || {
            let (out, lse) = inputs.forward();
            let state = Saved {
                inputs,
                out: out.clone(),
                lse,
            };
            (out, state)
        })
    }

    fn fused_qkv_attention(
        qkv: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f32,
    ) -> FloatTensor<Self> {
        let nodes = [qkv.node()];
        let packed = Packed::new(
            qkv.into_primitive(),
            cos.into_primitive(),
            sin.into_primitive(),
            bias.into_primitive(),
            heads,
            scale,
        );
        record::<_, C, 1>(PackedBackward, nodes, || {
            let (out, lse) = packed.forward();
            let state = PackedSaved {
                packed,
                out: out.clone(),
                lse,
            };
            (out, state)
        })
    }
}

#[derive(Debug)]
struct AttentionBackward;

/// What the backward needs: the inputs, the output and each query row's log-sum-exp.
#[derive(Clone, Debug)]
struct Saved {
    inputs: Inputs,
    out: FlexTensor,
    lse: Vec<f32>,
}

impl Backward<Flex, 3> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [dq, dk, dv] = ops.state.backward(&grad_out);
        for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Contiguous float32 inputs and their sizes.
#[derive(Clone, Debug)]
struct Inputs {
    q: FlexTensor,
    k: FlexTensor,
    v: FlexTensor,
    /// `[Lq, Lk]`.
    bias: FlexTensor,
    scale: f32,
    /// `[B, H, Lq, Dh]` of `q`.
    dims: [usize; 4],
    lk: usize,
}

impl Inputs {
    fn new(q: FlexTensor, k: FlexTensor, v: FlexTensor, bias: FlexTensor, scale: f32) -> Self {
        let (q, k, v) = (
            contiguous_f32(q, "attention's queries"),
            contiguous_f32(k, "attention's keys"),
            contiguous_f32(v, "attention's values"),
        );
        let dims4 = |t: &FlexTensor| -> [usize; 4] {
            let s = t.layout().shape();
            assert_eq!(
                s.num_dims(),
                4,
                "fused attention takes [B, H, L, Dh] tensors"
            );
            [s[0], s[1], s[2], s[3]]
        };
        let [b, h, lq, dh] = dims4(&q);
        let [kb, kh, lk, kdh] = dims4(&k);
        assert!(
            [kb, kh, kdh] == [b, h, dh] && dims4(&v) == [b, h, lk, dh],
            "fused attention: keys {:?} and values {:?} do not fit queries {:?}",
            dims4(&k),
            dims4(&v),
            [b, h, lq, dh]
        );
        let bias = contiguous_f32(bias, "attention's bias");
        let s = bias.layout().shape();
        assert!(
            s.num_dims() == 2 && s[0] == lq && s[1] == lk,
            "fused attention: bias {s:?} is not [{lq}, {lk}]"
        );
        Self {
            q,
            k,
            v,
            bias,
            scale,
            dims: [b, h, lq, dh],
            lk,
        }
    }

    fn problem(&self) -> Problem<'_> {
        let [_, _, lq, dh] = self.dims;
        let bias = self.bias.storage::<f32>();
        Problem {
            lq,
            lk: self.lk,
            dh,
            scale: self.scale,
            bias,
            blocks: row_blocks(bias, lq, self.lk),
        }
    }

    /// The output `[B, H, Lq, Dh]` and each query row's log-sum-exp `[B * H * Lq]`.
    fn forward(&self) -> (FlexTensor, Vec<f32>) {
        let [b, h, lq, dh] = self.dims;
        let p = self.problem();
        let (q, k, v) = (
            self.q.storage::<f32>(),
            self.k.storage::<f32>(),
            self.v.storage::<f32>(),
        );
        let mut out = zeros(b * h * lq * dh);
        let mut lse = vec![0.0f32; b * h * lq];
        let tasks = out.chunks_mut(lq * dh).zip(lse.chunks_mut(lq)).collect();
        let parallel = b * h * lq * p.lk * dh >= PARALLEL_MACS;
        run_tasks(tasks, parallel, |j, (o, l)| {
            let (qj, kj, vj) = (p.head(q, j, lq), p.head(k, j, p.lk), p.head(v, j, p.lk));
            let mut s = vec![0.0f32; p.lq * p.lk];
            head_forward(&p, qj, kj, vj, o, l, &mut s);
        });
        (float_tensor(out, self.dims), lse)
    }
}

impl Saved {
    /// Gradients of the queries, keys and values for the output's gradient `grad_out`.
    fn backward(&self, grad_out: &FlexTensor) -> [FlexTensor; 3] {
        let i = &self.inputs;
        let [b, h, lq, dh] = i.dims;
        let p = i.problem();
        let lk = p.lk;
        let (q, k, v) = (
            i.q.storage::<f32>(),
            i.k.storage::<f32>(),
            i.v.storage::<f32>(),
        );
        let (o, d_o) = (self.out.storage::<f32>(), grad_out.storage::<f32>());
        let mut dq = zeros(b * h * lq * dh);
        let mut dk = zeros(b * h * lk * dh);
        let mut dv = zeros(b * h * lk * dh);
        let tasks = dq
            .chunks_mut(lq * dh)
            .zip(dk.chunks_mut(lk * dh))
            .zip(dv.chunks_mut(lk * dh))
            .collect();
        let parallel = b * h * lq * lk * dh >= PARALLEL_MACS;
        run_tasks(tasks, parallel, |j, ((dqj, dkj), dvj)| {
            let head = Head {
                q: p.head(q, j, lq),
                k: p.head(k, j, lk),
                v: p.head(v, j, lk),
                out: p.head(o, j, lq),
                grad_out: p.head(d_o, j, lq),
                lse: &self.lse[j * lq..(j + 1) * lq],
            };
            let (mut s, mut ds) = (vec![0.0f32; p.lq * p.lk], vec![0.0f32; p.lq * p.lk]);
            head_backward(&p, &head, dqj, dkj, dvj, (&mut s, &mut ds));
        });
        [
            float_tensor(dq, i.dims),
            float_tensor(dk, [b, h, lk, dh]),
            float_tensor(dv, [b, h, lk, dh]),
        ]
    }
}

#[derive(Debug)]
struct PackedBackward;

/// The packed projection, the RoPE tables and the bias, contiguous float32.
#[derive(Clone, Debug)]
struct Packed {
    qkv: FlexTensor,
    cos: FlexTensor,
    sin: FlexTensor,
    /// Whether queries and keys are rotated (the tables are `[L, Dh]`, not `[L, 0]`).
    rotate: bool,
    bias: FlexTensor,
    heads: usize,
    scale: f32,
    /// `[B, L, W]` of the output.
    dims: [usize; 3],
}

#[derive(Clone, Debug)]
struct PackedSaved {
    packed: Packed,
    out: FlexTensor,
    lse: Vec<f32>,
}

impl Packed {
    fn new(
        qkv: FlexTensor,
        cos: FlexTensor,
        sin: FlexTensor,
        bias: FlexTensor,
        heads: usize,
        scale: f32,
    ) -> Self {
        let qkv = contiguous_f32(qkv, "the packed queries, keys and values");
        let s = qkv.layout().shape().clone();
        assert!(
            s.num_dims() == 3 && heads > 0 && s[2] % (3 * heads) == 0,
            "fused attention: packed projection {s:?} is not [B, L, 3 x heads({heads}) x Dh]"
        );
        let (b, l, w) = (s[0], s[1], s[2] / 3);
        let dh = w / heads;
        let shape = cos.layout().shape();
        let rotate = shape.num_dims() != 2 || shape[1] != 0;
        let table = |t: FlexTensor, what: &str, cols: usize| {
            let t = contiguous_f32(t, what);
            let d = t.layout().shape();
            assert!(
                d.num_dims() == 2 && d[0] == l && d[1] == cols,
                "fused attention: {what} {d:?} is not [{l}, {cols}]"
            );
            t
        };
        assert!(
            !rotate || dh % 2 == 0,
            "fused attention: RoPE needs an even head width, not {dh}"
        );
        let cols = if rotate { dh } else { 0 };
        Self {
            cos: table(cos, "RoPE's cos", cols),
            sin: table(sin, "RoPE's sin", cols),
            rotate,
            bias: table(bias, "the bias", l),
            qkv,
            heads,
            scale,
            dims: [b, l, w],
        }
    }

    fn problem(&self) -> Problem<'_> {
        let [_, l, w] = self.dims;
        let bias = self.bias.storage::<f32>();
        Problem {
            lq: l,
            lk: l,
            dh: w / self.heads,
            scale: self.scale,
            bias,
            blocks: row_blocks(bias, l, l),
        }
    }

    fn tables(&self) -> PackedTables<'_> {
        PackedTables {
            cos: self.cos.storage::<f32>(),
            sin: self.sin.storage::<f32>(),
            rotate: self.rotate,
            heads: self.heads,
        }
    }

    /// The output `[B, L, W]` and each (item, head, row)'s log-sum-exp.
    fn forward(&self) -> (FlexTensor, Vec<f32>) {
        let [b, l, w] = self.dims;
        let (p, t) = (self.problem(), self.tables());
        let qkv = self.qkv.storage::<f32>();
        let mut out = zeros(b * l * w);
        let mut lse = vec![0.0f32; b * self.heads * l];
        let tasks = out
            .chunks_mut(l * w)
            .zip(lse.chunks_mut(self.heads * l))
            .collect();
        let parallel = b * l * l * w >= PARALLEL_MACS;
        run_tasks(tasks, parallel, |i, (out, lse)| {
            packed_forward(&p, &t, &qkv[i * l * 3 * w..(i + 1) * l * 3 * w], out, lse)
        });
        (float_tensor(out, [b, l, w]), lse)
    }
}

/// The RoPE tables `[L, Dh]` (empty without rotation) and the number of heads.
struct PackedTables<'a> {
    cos: &'a [f32],
    sin: &'a [f32],
    rotate: bool,
    heads: usize,
}

impl PackedTables<'_> {
    /// Head `h`'s part `part` (0 queries, 1 keys, 2 values) of one item's packed rows
    /// `[L, 3W]`, rotated (queries and keys, where the tables rotate) into `dst` `[L, Dh]`.
    #[inline(always)]
    fn gather(&self, p: &Problem, qkv: &[f32], part: usize, h: usize, dst: &mut [f32]) {
        let (dh, w) = (p.dh, p.dh * self.heads);
        let at = part * w + h * dh;
        for (l, row) in dst.chunks_exact_mut(dh).enumerate() {
            let x = &qkv[l * 3 * w + at..l * 3 * w + at + dh];
            if part == 2 || !self.rotate {
                row.copy_from_slice(x);
            } else {
                let (cos, sin) = (
                    &self.cos[l * dh..(l + 1) * dh],
                    &self.sin[l * dh..(l + 1) * dh],
                );
                rope_head_body(x, cos, sin, dh, false, row);
            }
        }
    }

    /// The inverse of [`gather`](Self::gather) for gradients: `src` `[L, Dh]`, rotated back
    /// (queries and keys), into head `h`'s part `part` of one item's `[L, 3W]` rows.
    #[inline(always)]
    fn scatter(&self, p: &Problem, src: &[f32], part: usize, h: usize, dqkv: &mut [f32]) {
        let (dh, w) = (p.dh, p.dh * self.heads);
        let at = part * w + h * dh;
        for (l, row) in src.chunks_exact(dh).enumerate() {
            let dst = &mut dqkv[l * 3 * w + at..l * 3 * w + at + dh];
            if part == 2 || !self.rotate {
                dst.copy_from_slice(row);
            } else {
                let (cos, sin) = (
                    &self.cos[l * dh..(l + 1) * dh],
                    &self.sin[l * dh..(l + 1) * dh],
                );
                rope_head_body(row, cos, sin, dh, true, dst);
            }
        }
    }
}

/// One batch item's forward, head by head: `out` `[L, W]`, `lse` `[H, L]`.
#[inline(always)]
fn packed_forward_body(
    p: &Problem,
    t: &PackedTables,
    qkv: &[f32],
    out: &mut [f32],
    lse: &mut [f32],
) {
    let (l, dh) = (p.lq, p.dh);
    let w = dh * t.heads;
    let mut buf = vec![0.0f32; 4 * l * dh + l * l];
    let (q, rest) = buf.split_at_mut(l * dh);
    let (k, rest) = rest.split_at_mut(l * dh);
    let (v, rest) = rest.split_at_mut(l * dh);
    let (o, s) = rest.split_at_mut(l * dh);
    for h in 0..t.heads {
        t.gather(p, qkv, 0, h, q);
        t.gather(p, qkv, 1, h, k);
        t.gather(p, qkv, 2, h, v);
        head_forward_body(p, q, k, v, o, &mut lse[h * l..(h + 1) * l], s);
        for (r, row) in o.chunks_exact(dh).enumerate() {
            out[r * w + h * dh..r * w + (h + 1) * dh].copy_from_slice(row);
        }
    }
}

impl Backward<Flex, 1> for PackedBackward {
    type State = PackedSaved;

    fn backward(self, ops: Ops<PackedSaved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_out = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, ops.state.backward(&grad_out));
        }
    }
}

impl PackedSaved {
    /// The gradient of the packed projection `[B, L, 3W]` for the output's `grad_out`.
    fn backward(&self, grad_out: &FlexTensor) -> FlexTensor {
        let pk = &self.packed;
        let [b, l, w] = pk.dims;
        let (p, t) = (pk.problem(), pk.tables());
        let qkv = pk.qkv.storage::<f32>();
        let (out, d_out) = (self.out.storage::<f32>(), grad_out.storage::<f32>());
        let mut dqkv = zeros(b * l * 3 * w);
        let tasks = dqkv.chunks_mut(l * 3 * w).collect();
        let parallel = b * l * l * w >= PARALLEL_MACS;
        run_tasks(tasks, parallel, |i, dqkv| {
            let item = PackedItem {
                qkv: &qkv[i * l * 3 * w..(i + 1) * l * 3 * w],
                out: &out[i * l * w..(i + 1) * l * w],
                grad_out: &d_out[i * l * w..(i + 1) * l * w],
                lse: &self.lse[i * pk.heads * l..(i + 1) * pk.heads * l],
            };
            packed_backward(&p, &t, &item, dqkv);
        });
        float_tensor(dqkv, [b, l, 3 * w])
    }
}

/// One batch item's packed projection, output, output gradient and log-sum-exps.
struct PackedItem<'a> {
    qkv: &'a [f32],
    out: &'a [f32],
    grad_out: &'a [f32],
    lse: &'a [f32],
}

/// One batch item's backward, head by head, into its `[L, 3W]` gradient rows.
#[inline(always)]
fn packed_backward_body(p: &Problem, t: &PackedTables, item: &PackedItem, dqkv: &mut [f32]) {
    let (l, dh) = (p.lq, p.dh);
    let w = dh * t.heads;
    let mut buf = vec![0.0f32; 8 * l * dh + 2 * l * l];
    let (q, rest) = buf.split_at_mut(l * dh);
    let (k, rest) = rest.split_at_mut(l * dh);
    let (v, rest) = rest.split_at_mut(l * dh);
    let (o, rest) = rest.split_at_mut(l * dh);
    let (d_o, rest) = rest.split_at_mut(l * dh);
    let (dq, rest) = rest.split_at_mut(l * dh);
    let (dk, rest) = rest.split_at_mut(l * dh);
    let (dv, rest) = rest.split_at_mut(l * dh);
    let (s, ds) = rest.split_at_mut(l * l);
    for h in 0..t.heads {
        t.gather(p, item.qkv, 0, h, q);
        t.gather(p, item.qkv, 1, h, k);
        t.gather(p, item.qkv, 2, h, v);
        for r in 0..l {
            let at = r * w + h * dh;
            o[r * dh..(r + 1) * dh].copy_from_slice(&item.out[at..at + dh]);
            d_o[r * dh..(r + 1) * dh].copy_from_slice(&item.grad_out[at..at + dh]);
        }
        dk.fill(0.0);
        dv.fill(0.0);
        let head = Head {
            q,
            k,
            v,
            out: o,
            grad_out: d_o,
            lse: &item.lse[h * l..(h + 1) * l],
        };
        head_backward_body(p, &head, dq, dk, dv, (&mut *s, &mut *ds));
        t.scatter(p, dq, 0, h, dqkv);
        t.scatter(p, dk, 1, h, dqkv);
        t.scatter(p, dv, 2, h, dqkv);
    }
}

/// Sizes shared by every head, the bias and the row blocks.
struct Problem<'a> {
    lq: usize,
    lk: usize,
    dh: usize,
    scale: f32,
    /// `[Lq, Lk]`, added to the scores.
    bias: &'a [f32],
    /// `(first row, end row, keys seen)`: consecutive query rows that see the same leading
    /// keys (the rest of their bias row is `-inf`).
    blocks: Vec<(usize, usize, usize)>,
}

impl Problem<'_> {
    /// Head `j`'s `len` rows of `Dh` values.
    fn head<'b>(&self, x: &'b [f32], j: usize, len: usize) -> &'b [f32] {
        &x[j * len * self.dh..(j + 1) * len * self.dh]
    }
}

/// Row blocks of a bias `[lq, lk]`: rows whose bias ends in the same run of `-inf` see the
/// same leading keys.
fn row_blocks(bias: &[f32], lq: usize, lk: usize) -> Vec<(usize, usize, usize)> {
    let seen = |i: usize| -> usize {
        bias[i * lk..(i + 1) * lk]
            .iter()
            .rposition(|&x| x != f32::NEG_INFINITY)
            .map_or(0, |c| c + 1)
    };
    let mut blocks: Vec<(usize, usize, usize)> = Vec::new();
    for i in 0..lq {
        let e = seen(i);
        match blocks.last_mut() {
            Some(last) if last.2 == e => last.1 = i + 1,
            _ => blocks.push((i, i + 1, e)),
        }
    }
    blocks
}

/// One head's inputs and the forward's results, for the backward.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    grad_out: &'a [f32],
    lse: &'a [f32],
}

/// [`crate::fused::gemm`] on the calling thread (the heads already run in parallel).
#[inline(always)]
fn gemm(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    beta: f32,
) {
    crate::fused::gemm(
        dims,
        dst,
        accumulate,
        lhs,
        rhs,
        beta,
        gemm::Parallelism::None,
    );
}

/// One head's forward: `o` `[Lq, Dh]`, `lse` `[Lq]`.
#[inline(always)]
fn head_forward_body(
    p: &Problem,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    o: &mut [f32],
    lse: &mut [f32],
    s: &mut [f32],
) {
    let dh = p.dh;
    for &(r0, r1, e) in &p.blocks {
        let rows = r1 - r0;
        let s = &mut s[..rows * e];
        let o = &mut o[r0 * dh..r1 * dh];
        if e == 0 {
            // Every key masked: the tensor ops give NaN (0 / 0).
            o.fill(f32::NAN);
            lse[r0..r1].fill(f32::NAN);
            continue;
        }
        // s = scale q k^T
        gemm(
            (rows, e, dh),
            s,
            false,
            (&q[r0 * dh..], dh, 1),
            (k, 1, dh),
            p.scale,
        );
        for (r, row) in s.chunks_exact_mut(e).enumerate() {
            let i = r0 + r;
            for (x, &b) in row.iter_mut().zip(&p.bias[i * p.lk..i * p.lk + e]) {
                *x += b;
            }
            let max = max_lanes(row);
            for x in row.iter_mut() {
                *x = exp_f32(*x - max);
            }
            let sum = sum_lanes(row);
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
            lse[r0 + r] = max + sum.ln();
        }
        // o = softmax v
        gemm((rows, dh, e), o, false, (s, e, 1), (v, dh, 1), 1.0);
    }
}

/// One head's backward: `dq` `[Lq, Dh]`, `dk` and `dv` `[Lk, Dh]` (zeroed on entry).
#[inline(always)]
fn head_backward_body(
    p: &Problem,
    h: &Head,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    (s, ds): (&mut [f32], &mut [f32]),
) {
    let dh = p.dh;
    for &(r0, r1, e) in &p.blocks {
        if e == 0 {
            continue;
        }
        let rows = r1 - r0;
        let (s, ds) = (&mut s[..rows * e], &mut ds[..rows * e]);
        let q = &h.q[r0 * dh..];
        let d_o = &h.grad_out[r0 * dh..r1 * dh];
        // The probabilities again: p = exp(scale q k^T + bias - lse).
        gemm((rows, e, dh), s, false, (q, dh, 1), (h.k, 1, dh), p.scale);
        for (r, row) in s.chunks_exact_mut(e).enumerate() {
            let i = r0 + r;
            let lse = h.lse[i];
            for (x, &b) in row.iter_mut().zip(&p.bias[i * p.lk..i * p.lk + e]) {
                *x = exp_f32(*x + b - lse);
            }
        }
        // dp = do v^T, then ds = p (dp - rowsum(do * o)).
        gemm((rows, e, dh), ds, false, (d_o, dh, 1), (h.v, 1, dh), 1.0);
        for (r, (drow, prow)) in ds.chunks_exact_mut(e).zip(s.chunks_exact(e)).enumerate() {
            let i = r0 + r;
            let delta = dot(
                &h.grad_out[i * dh..(i + 1) * dh],
                &h.out[i * dh..(i + 1) * dh],
            );
            for (d, &pv) in drow.iter_mut().zip(prow) {
                *d = pv * (*d - delta);
            }
        }
        // dv += p^T do; dq = scale ds k; dk += scale ds^T q.
        gemm((e, dh, rows), dv, true, (s, 1, e), (d_o, dh, 1), 1.0);
        gemm(
            (rows, dh, e),
            &mut dq[r0 * dh..r1 * dh],
            false,
            (ds, e, 1),
            (h.k, dh, 1),
            p.scale,
        );
        gemm((e, dh, rows), dk, true, (ds, 1, e), (q, dh, 1), p.scale);
    }
}

simd_dispatch!(packed_forward => packed_forward_body(
    p: &Problem, t: &PackedTables, qkv: &[f32], out: &mut [f32], lse: &mut [f32]
));
simd_dispatch!(packed_backward => packed_backward_body(
    p: &Problem, t: &PackedTables, item: &PackedItem, dqkv: &mut [f32]
));
simd_dispatch!(head_forward => head_forward_body(
    p: &Problem, q: &[f32], k: &[f32], v: &[f32], o: &mut [f32], lse: &mut [f32], s: &mut [f32]
));
simd_dispatch!(head_backward => head_backward_body(
    p: &Problem, h: &Head, dq: &mut [f32], dk: &mut [f32], dv: &mut [f32],
    scratch: (&mut [f32], &mut [f32])
));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world_model::frame_causal_bias;
    use burn::tensor::Distribution;

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Value and gradients of the fused op against the tensor ops: with the frame-causal
    /// bias (cached frames too: more keys than queries), without a bias, and odd sizes.
    #[test]
    fn the_fused_attention_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        // (batch, heads, new frames, cached frames, tokens per frame, head width)
        for (b, h, t, cached, n, dh, masked) in [
            (2, 3, 4, 0, 5, 8, true),
            (1, 2, 3, 2, 4, 16, true),
            (3, 1, 1, 0, 7, 5, false),
            (2, 2, 2, 1, 3, 12, false),
        ] {
            let (lq, lk) = (t * n, (cached + t) * n);
            let rand = |l: usize| {
                Tensor::<4>::random([b, h, l, dh], Distribution::Normal(0.0, 1.0), &dev)
                    .require_grad()
            };
            let (q, k, v) = (rand(lq), rand(lk), rand(lk));
            let bias = masked.then(|| frame_causal_bias(cached, t, n, &dev));
            let scale = 1.0 / (dh as f64).sqrt();
            // A weighted sum, so every output element has its own gradient.
            let weights = Tensor::<4>::random([b, h, lq, dh], Distribution::Default, &dev);
            let run = |fused: bool| {
                let (q, k, v) = (q.clone(), k.clone(), v.clone());
                let out = if fused {
                    attention(q.clone(), k.clone(), v.clone(), bias.clone(), scale)
                } else {
                    attention_ops(q.clone(), k.clone(), v.clone(), bias.clone(), scale)
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                let g = |x: &Tensor<4>| x.grad(&grads).expect("a gradient");
                (out.inner(), g(&q), g(&k), g(&v))
            };
            let (o1, q1, k1, v1) = run(true);
            let (o2, q2, k2, v2) = run(false);
            for (what, fused, ops) in [
                ("output", o1, o2),
                ("dq", q1, q2),
                ("dk", k1, k2),
                ("dv", v1, v2),
            ] {
                let d = max_abs_diff(fused, ops);
                assert!(
                    d < 1e-5,
                    "{what} differs by {d} at b{b} h{h} t{t} cached{cached} n{n} dh{dh}"
                );
            }
        }
    }

    /// Without autodiff (planning, evaluation) the op gives the tensor ops' output, and a
    /// query frame is untouched by later frames (the mask's keys are skipped, not weighted).
    #[test]
    fn the_fused_attention_is_frame_causal_without_autodiff() {
        let dev = Device::flex();
        let (b, h, t, n, dh) = (2, 2, 3, 4, 8);
        let l = t * n;
        let rand = || Tensor::<4>::random([b, h, l, dh], Distribution::Normal(0.0, 1.0), &dev);
        let (q, k, v) = (rand(), rand(), rand());
        let bias = Some(frame_causal_bias(0, t, n, &dev));
        let scale = 0.3;
        let fused = attention(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
        let ops = attention_ops(q.clone(), k.clone(), v.clone(), bias.clone(), scale);
        assert!(max_abs_diff(fused.clone(), ops) < 1e-5);
        // Change the last frame's keys and values: the first two frames' outputs stay.
        let k2 = k.slice_assign(s![.., .., 2 * n..l, ..], rand().slice(s![.., .., 0..n, ..]));
        let v2 = v.slice_assign(s![.., .., 2 * n..l, ..], rand().slice(s![.., .., 0..n, ..]));
        let again = attention(q, k2, v2, bias, scale);
        let early = |x: Tensor<4>| x.slice(s![.., .., 0..2 * n, ..]);
        assert_eq!(early(fused).into_data(), early(again).into_data());
    }

    /// The packed op (RoPE, attention, heads side by side) and its gradient against the
    /// block's tensor ops: slices of the permuted projection, rotated, attended, transposed.
    #[test]
    fn the_packed_attention_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        for (b, heads, frames, rows, cols, dh, masked) in [
            (2, 2, 3, 2, 2, 8, true),
            (1, 3, 2, 1, 3, 6, false),
            (3, 1, 4, 1, 2, 4, true),
        ] {
            let (n, w) = (rows * cols, heads * dh);
            let l = frames * n;
            let rope = crate::world_model::Rope::new(1, frames, rows, cols, dh, 10000.0, &dev);
            let qkv = Tensor::<3>::random([b, l, 3 * w], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let bias = masked.then(|| frame_causal_bias(0, frames, n, &dev));
            let scale = 1.0 / (dh as f64).sqrt();
            let weights = Tensor::<3>::random([b, l, w], Distribution::Default, &dev);
            let run = |fused: bool| {
                let out = if fused {
                    qkv_attention(qkv.clone(), rope.tables(), bias.clone(), heads, scale)
                } else {
                    let x = qkv
                        .clone()
                        .reshape([b, l, 3, heads, dh])
                        .permute([2, 0, 3, 1, 4]);
                    let part = |i: usize| x.clone().slice(s![i..i + 1]).squeeze_dim::<4>(0);
                    let (q, k) = (rope.apply_ops(part(0)), rope.apply_ops(part(1)));
                    attention_ops(q, k, part(2), bias.clone(), scale)
                        .swap_dims(1, 2)
                        .reshape([b, l, w])
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                (out.inner(), qkv.grad(&grads).expect("a gradient"))
            };
            let (o1, g1) = run(true);
            let (o2, g2) = run(false);
            let diff = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
            let (dout, dgrad) = (diff(o1, o2), diff(g1, g2));
            assert!(
                dout < 1e-5 && dgrad < 1e-5,
                "output {dout}, gradient {dgrad}"
            );
        }
    }

    /// A ViT block's attention (the packed op, unmasked) and its gradient against the tensor
    /// ops on the split heads, without rotation (odd head widths included: the rotation needs
    /// even ones, without it any width goes) and with the world model's RoPE tables; and
    /// [`self_attention_ops`] (what other devices run) against the same ops.
    #[test]
    fn self_attention_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        for (b, heads, l, dh, rotated) in [
            (2, 4, 16, 8, false),
            (1, 3, 7, 5, false),
            (3, 1, 5, 16, false),
            (2, 2, 6, 8, true),
            (1, 3, 9, 4, true),
        ] {
            let w = heads * dh;
            let qkv = Tensor::<3>::random([b, l, 3 * w], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let weights = Tensor::<3>::random([b, l, w], Distribution::Default, &dev);
            let rope = rotated.then(|| {
                let rope = crate::world_model::Rope::new(0, l, 1, 1, dh, 100.0, &dev);
                (rope.tables(), rope)
            });
            let tables = || rope.as_ref().map(|r| r.0.clone());
            let run = |path: usize| {
                let out = if path == 0 {
                    self_attention(qkv.clone(), tables(), heads)
                } else if path == 1 {
                    self_attention_ops(qkv.clone(), tables(), heads)
                } else {
                    let part = |i: usize| {
                        let x = qkv
                            .clone()
                            .slice(s![.., .., i * w..(i + 1) * w])
                            .reshape([b, l, heads, dh])
                            .swap_dims(1, 2);
                        match (&rope, i) {
                            (Some((_, r)), 0 | 1) => r.apply_ops(x),
                            _ => x,
                        }
                    };
                    let scale = 1.0 / (dh as f64).sqrt();
                    attention_ops(part(0), part(1), part(2), None, scale)
                        .swap_dims(1, 2)
                        .reshape([b, l, w])
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                (out.inner(), qkv.grad(&grads).expect("a gradient"))
            };
            let (o2, g2) = run(2);
            for path in [0, 1] {
                let (o1, g1) = run(path);
                let diff = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
                let (dout, dgrad) = (diff(o1, o2.clone()), diff(g1, g2.clone()));
                assert!(
                    dout < 1e-5 && dgrad < 1e-5,
                    "path {path}, heads {heads}, width {dh}, rotated {rotated}: output {dout}, \
                     gradient {dgrad}"
                );
            }
        }
    }
}
