//! Layers of the world model (and the encoders) as CPU ops with their own backward: layer norm with its
//! AdaLN modulation, exact GELU, the rotation of queries and keys (RoPE), and linear layers
//! with their bias added inside the product.
//!
//! burn's autodiff builds layer norm from about ten tensor ops (mean, centre, square, mean,
//! add, square root, divide, scale, shift), the modulation adds three, GELU's `erf` runs
//! through libm one element at a time and RoPE is a small batched matmul (the half swap) and
//! three element-wise ops, and a linear layer adds its bias in a pass of its own after the
//! product; every op is a pass over the activations forward and more backward. On the `flex` backend each becomes one backend extension op here: one
//! vectorised pass forward (keeping each row's mean and inverse deviation) and one backward.
//! Other devices run the tensor ops ([`norm_modulate_ops`], burn's `gelu`, [`crate::world_model::Rope`]'s
//! tensor form), which the tests below check these ops against.
//!
//! `LAM_TENSOR_OPS` names fused ops the CPU should run as tensor ops instead, to time one
//! against the other: a comma-separated list of `attention`, `norm`, `gelu`, `rope`, `linear`,
//! or `all`.
//!
//! Also here: what the fused ops share (the SIMD dispatch, host buffers as flex tensors).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, backend_extension};
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::{Bytes, Shape};
use rayon::prelude::*;

use crate::world_model::host::{erf_f32, exp_f32, gelu as gelu_f32, row_stats, sum_lanes};

/// Whether `device` runs the fused CPU op `name` (`attention`, `norm`, `gelu`, `rope`,
/// `linear`, or `muon`: the optimiser's Newton-Schulz steps): the `flex` backend, with or
/// without autodiff, unless `LAM_TENSOR_OPS` names the op (or `all`).
pub(crate) fn on_cpu(device: &Device, name: &str) -> bool {
    if device.clone().without_autodiff() != Device::flex() {
        return false;
    }
    match std::env::var("LAM_TENSOR_OPS") {
        Ok(list) => !list
            .split(',')
            .any(|s| s.trim() == name || s.trim() == "all"),
        Err(_) => true,
    }
}

/// Layer norm `norm` of `x` `[B, T, N, W]`, then AdaLN modulation by `shift` and `scale`
/// `[B, T, 1, W]` (one vector per frame): `norm(x) * (1 + scale) + shift`.
pub fn norm_modulate(
    x: Tensor<4>,
    norm: &LayerNorm,
    shift: Tensor<4>,
    scale: Tensor<4>,
) -> Tensor<4> {
    if !on_cpu(&x.device(), "norm") {
        return norm_modulate_ops(x, norm, shift, scale);
    }
    let gamma = norm.gamma.val();
    let beta = match &norm.beta {
        Some(b) => b.val(),
        None => gamma.zeros_like(),
    };
    Tensor::from_dispatch(<Dispatch as FusedElementwise>::fused_norm_modulate(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        shift.into_dispatch(),
        scale.into_dispatch(),
    ))
}

/// [`norm_modulate`] in burn's tensor ops (every backend).
pub fn norm_modulate_ops(
    x: Tensor<4>,
    norm: &LayerNorm,
    shift: Tensor<4>,
    scale: Tensor<4>,
) -> Tensor<4> {
    norm.forward(x) * (scale + 1.0) + shift
}

/// Exact (erf) GELU, as burn's `gelu`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_cpu(&x.device(), "gelu") {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedElementwise>::fused_gelu(
        x.into_dispatch(),
    ))
}

/// The linear layer `l` on `x` `[.., d_in]`: `x W + b` (burn's `Linear::forward`).
pub fn linear<const D: usize>(l: &Linear, x: Tensor<D>) -> Tensor<D> {
    if !on_cpu(&x.device(), "linear") {
        return l.forward(x);
    }
    let dims = x.dims();
    let [d_in, d_out] = l.weight.dims();
    assert_eq!(
        dims[D - 1],
        d_in,
        "linear layer of {d_in} inputs given {dims:?}"
    );
    let rows = dims[..D - 1].iter().product::<usize>();
    let weight = l.weight.val();
    let bias = match &l.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([d_out], &x.device()),
    };
    let out: Tensor<2> = Tensor::from_dispatch(<Dispatch as FusedElementwise>::fused_linear(
        x.reshape([rows, d_in]).into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ));
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    out.reshape(out_dims)
}

/// Rotates `x` `[B, H, L, Dh]` by the tables `cos` and `sin` `[L, Dh]` (constants: no
/// gradient flows into them): `x * cos + swap(x) * sin`, where `swap` exchanges the two halves
/// of each head (see [`crate::world_model::Rope`]). The CPU's op behind [`crate::world_model::Rope::apply`].
pub(crate) fn rope(x: Tensor<4>, cos: Tensor<2>, sin: Tensor<2>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedElementwise>::fused_rope(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

/// The backend ops behind [`norm_modulate`], [`gelu`] and `rope`. The layer norm's epsilon is
/// burn's default (1e-5), which every world-model norm uses.
#[backend_extension(Flex, Autodiff)]
pub trait FusedElementwise: Backend {
    fn fused_norm_modulate(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    fn fused_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl FusedElementwise for Flex {
    fn fused_norm_modulate(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shift: FlexTensor,
        scale: FlexTensor,
    ) -> FlexTensor {
        NormInputs::new(x, gamma, beta, shift, scale).forward().0
    }

    fn fused_gelu(x: FlexTensor) -> FlexTensor {
        gelu_forward(&contiguous_f32(x, "GELU's input"))
    }

    fn fused_rope(x: FlexTensor, cos: FlexTensor, sin: FlexTensor) -> FlexTensor {
        RopeTables::new(cos, sin).rotate(&contiguous_f32(x, "RoPE's input"), false)
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        LinearInputs::new(x, weight, bias).forward()
    }
}

impl<C: CheckpointStrategy> FusedElementwise for Autodiff<Flex, C> {
    fn fused_norm_modulate(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [
            x.node(),
            gamma.node(),
            beta.node(),
            shift.node(),
            scale.node(),
        ];
        let inputs = NormInputs::new(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            shift.into_primitive(),
            scale.into_primitive(),
        );
        record::<_, C, 5>(NormBackward, nodes, || {
            let (out, stats) = inputs.forward();
            (out, NormSaved { inputs, stats })
        })
    }

    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = contiguous_f32(x.into_primitive(), "GELU's input");
        record::<_, C, 1>(GeluBackward, nodes, || (gelu_forward(&x), x))
    }

    fn fused_rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let tables = RopeTables::new(cos.into_primitive(), sin.into_primitive());
        let x = contiguous_f32(x.into_primitive(), "RoPE's input");
        record::<_, C, 1>(RopeBackward, nodes, || (tables.rotate(&x, false), tables))
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let inputs = LinearInputs::new(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        record::<_, C, 3>(LinearBackward, nodes, || (inputs.forward(), inputs))
    }
}

/// Records the op `op` on the inputs `nodes`: `run` computes its output and what its backward
/// keeps; the kept state is dropped where no input is tracked.
pub(crate) fn record<BO, C, const N: usize>(
    op: BO,
    nodes: [NodeGuard; N],
    run: impl FnOnce() -> (FlexTensor, BO::State),
) -> FloatTensor<Autodiff<Flex, C>>
where
    BO: Backward<Flex, N>,
    C: CheckpointStrategy,
{
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, state) = run();
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(run().0),
    }
}

// ---- layer norm with modulation ----

#[derive(Debug)]
struct NormBackward;

#[derive(Clone, Debug)]
struct NormInputs {
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    shift: FlexTensor,
    scale: FlexTensor,
    /// Frames (B T), tokens per frame N, width W.
    frames: usize,
    tokens: usize,
    width: usize,
}

/// What the backward needs: the inputs and each row's mean and inverse deviation.
#[derive(Clone, Debug)]
struct NormSaved {
    inputs: NormInputs,
    stats: Vec<(f32, f32)>,
}

impl NormInputs {
    fn new(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        shift: FlexTensor,
        scale: FlexTensor,
    ) -> Self {
        let x = contiguous_f32(x, "the normalised activations");
        let s = x.layout().shape().clone();
        assert_eq!(
            s.num_dims(),
            4,
            "fused layer norm takes [B, T, N, W] activations"
        );
        let (frames, tokens, width) = (s[0] * s[1], s[2], s[3]);
        let per_frame = |t: FlexTensor, what: &str| {
            let t = contiguous_f32(t, what);
            let d = t.layout().shape();
            assert!(
                d.num_dims() == 4 && d[0] * d[1] == frames && d[2] == 1 && d[3] == width,
                "fused layer norm: {what} {d:?} is not [{}, {}, 1, {width}]",
                s[0],
                s[1]
            );
            t
        };
        let per_channel = |t: FlexTensor, what: &str| {
            let t = contiguous_f32(t, what);
            assert_eq!(
                t.layout().shape().num_elements(),
                width,
                "fused layer norm: {what}"
            );
            t
        };
        Self {
            gamma: per_channel(gamma, "gamma"),
            beta: per_channel(beta, "beta"),
            shift: per_frame(shift, "the shift"),
            scale: per_frame(scale, "the scale"),
            x,
            frames,
            tokens,
            width,
        }
    }

    fn forward(&self) -> (FlexTensor, Vec<(f32, f32)>) {
        let (nw, w) = (self.tokens * self.width, self.width);
        let x = self.x.storage::<f32>();
        let (gamma, beta) = (self.gamma.storage::<f32>(), self.beta.storage::<f32>());
        let (shift, scale) = (self.shift.storage::<f32>(), self.scale.storage::<f32>());
        let mut out = zeros(x.len());
        let mut stats = vec![(0.0f32, 0.0f32); self.frames * self.tokens];
        let tasks = out
            .chunks_mut(nw)
            .zip(stats.chunks_mut(self.tokens))
            .collect();
        run_tasks(tasks, x.len() >= PARALLEL_ELEMENTS, |f, (out, stats)| {
            let frame = NormFrame {
                x: &x[f * nw..(f + 1) * nw],
                gamma,
                beta,
                shift: &shift[f * w..(f + 1) * w],
                scale: &scale[f * w..(f + 1) * w],
            };
            norm_frame_forward(&frame, out, stats);
        });
        (float_tensor(out, self.x.layout().shape().clone()), stats)
    }
}

/// One frame's rows and the vectors that apply to them.
struct NormFrame<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    shift: &'a [f32],
    scale: &'a [f32],
}

#[inline(always)]
fn norm_frame_forward_body(f: &NormFrame, out: &mut [f32], stats: &mut [(f32, f32)]) {
    let w = f.gamma.len();
    let (gamma, beta, shift, scale) = (f.gamma, &f.beta[..w], &f.shift[..w], &f.scale[..w]);
    for ((x, out), st) in f.x.chunks_exact(w).zip(out.chunks_exact_mut(w)).zip(stats) {
        let (mean, inv) = row_stats(x);
        *st = (mean, inv);
        for j in 0..w {
            let u = (x[j] - mean) * inv * gamma[j] + beta[j];
            out[j] = u * (scale[j] + 1.0) + shift[j];
        }
    }
}

impl Backward<Flex, 5> for NormBackward {
    type State = NormSaved;

    fn backward(self, ops: Ops<NormSaved, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let s = &ops.state;
        let i = &s.inputs;
        let (n, w) = (i.tokens, i.width);
        let nw = n * w;
        let (x, dy) = (i.x.storage::<f32>(), dy.storage::<f32>());
        let (gamma, beta) = (i.gamma.storage::<f32>(), i.beta.storage::<f32>());
        let scale = i.scale.storage::<f32>();
        let mut dx = zeros(x.len());
        let mut dshift = vec![0.0f32; i.frames * w];
        let mut dscale = vec![0.0f32; i.frames * w];
        // Per frame: dx, the frame's shift and scale gradients, and a partial sum of the
        // gamma and beta gradients (reduced over frames after).
        let tasks = dx
            .chunks_mut(nw)
            .zip(dshift.chunks_mut(w))
            .zip(dscale.chunks_mut(w))
            .collect();
        let parallel = x.len() >= PARALLEL_ELEMENTS;
        let dgamma_beta = sum_tasks(tasks, parallel, 2 * w, |acc, f, ((dx, dshift), dscale)| {
            let frame = NormFrame {
                x: &x[f * nw..(f + 1) * nw],
                gamma,
                beta,
                shift: &[],
                scale: &scale[f * w..(f + 1) * w],
            };
            let grads = NormFrameGrads {
                dx,
                dshift,
                dscale,
                dgamma_beta: acc,
            };
            let stats = &s.stats[f * n..(f + 1) * n];
            norm_frame_backward(&frame, stats, &dy[f * nw..(f + 1) * nw], grads);
        });
        let x_shape = i.x.layout().shape().clone();
        let frame_shape = i.shift.layout().shape().clone();
        let channel_shape = i.gamma.layout().shape().clone();
        let out = [
            float_tensor(dx, x_shape),
            float_tensor(dgamma_beta[..w].to_vec(), channel_shape.clone()),
            float_tensor(dgamma_beta[w..].to_vec(), channel_shape),
            float_tensor(dshift, frame_shape.clone()),
            float_tensor(dscale, frame_shape),
        ];
        for (parent, grad) in ops.parents.into_iter().zip(out) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Where one frame's gradients go; `dgamma_beta` (`[2W]`: gamma's, then beta's) is added to.
struct NormFrameGrads<'a> {
    dx: &'a mut [f32],
    dshift: &'a mut [f32],
    dscale: &'a mut [f32],
    dgamma_beta: &'a mut [f32],
}

/// With x^ = (x - mean) inv, u = x^ gamma + beta and y = u (1 + scale) + shift:
/// dshift = sum over tokens of dy, dscale = sum of dy u, du = dy (1 + scale),
/// dgamma = sum du x^, dbeta = sum du, and dx = inv (g - mean(g) - x^ mean(g x^)) for
/// g = du gamma.
#[inline(always)]
fn norm_frame_backward_body(f: &NormFrame, stats: &[(f32, f32)], dy: &[f32], out: NormFrameGrads) {
    let w = f.gamma.len();
    let (gamma, beta, scale) = (f.gamma, &f.beta[..w], &f.scale[..w]);
    let (dshift, dscale) = (&mut out.dshift[..w], &mut out.dscale[..w]);
    let (dgamma, dbeta) = out.dgamma_beta.split_at_mut(w);
    let mut xh = vec![0.0f32; w];
    let rows = f.x.chunks_exact(w).zip(dy.chunks_exact(w));
    for (((x, dy), dx), &(mean, inv)) in rows.zip(out.dx.chunks_exact_mut(w)).zip(stats) {
        for j in 0..w {
            xh[j] = (x[j] - mean) * inv;
            let u = xh[j] * gamma[j] + beta[j];
            dshift[j] += dy[j];
            dscale[j] += dy[j] * u;
            let du = dy[j] * (scale[j] + 1.0);
            dgamma[j] += du * xh[j];
            dbeta[j] += du;
            dx[j] = du * gamma[j];
        }
        let m1 = sum_lanes(dx) / w as f32;
        let m2 = dot(dx, &xh) / w as f32;
        for j in 0..w {
            dx[j] = inv * (dx[j] - m1 - xh[j] * m2);
        }
    }
}

simd_dispatch!(norm_frame_forward => norm_frame_forward_body(
    f: &NormFrame, out: &mut [f32], stats: &mut [(f32, f32)]
));
simd_dispatch!(norm_frame_backward => norm_frame_backward_body(
    f: &NormFrame, stats: &[(f32, f32)], dy: &[f32], out: NormFrameGrads
));

// ---- GELU ----

#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    /// The input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let x = &ops.state;
            let mut dx = zeros(x.layout().shape().num_elements());
            let parallel = dx.len() >= PARALLEL_ELEMENTS;
            let tasks = dx
                .chunks_mut(GELU_CHUNK)
                .zip(x.storage::<f32>().chunks(GELU_CHUNK))
                .zip(dy.storage::<f32>().chunks(GELU_CHUNK))
                .collect();
            run_tasks(tasks, parallel, |_, ((dx, x), dy)| {
                gelu_backward_chunk(x, dy, dx)
            });
            grads.register::<Flex>(node.id, float_tensor(dx, x.layout().shape().clone()));
        }
    }
}

/// Elements per parallel task.
const GELU_CHUNK: usize = 1 << 14;

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    let mut out = zeros(x.layout().shape().num_elements());
    let parallel = out.len() >= PARALLEL_ELEMENTS;
    let tasks = out
        .chunks_mut(GELU_CHUNK)
        .zip(x.storage::<f32>().chunks(GELU_CHUNK))
        .collect();
    run_tasks(tasks, parallel, |_, (out, x)| gelu_chunk(x, out));
    float_tensor(out, x.layout().shape().clone())
}

#[inline(always)]
fn gelu_chunk_body(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_f32(v);
    }
}

/// d gelu / dx = Phi(x) + x phi(x).
#[inline(always)]
fn gelu_backward_chunk_body(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f32::consts::PI).sqrt();
    for ((d, &v), &g) in dx.iter_mut().zip(x).zip(dy) {
        let cdf = 0.5 * (1.0 + erf_f32(v * std::f32::consts::FRAC_1_SQRT_2));
        let pdf = inv_sqrt_2pi * exp_f32(-0.5 * v * v);
        *d = g * (cdf + v * pdf);
    }
}

simd_dispatch!(gelu_chunk => gelu_chunk_body(x: &[f32], out: &mut [f32]));
simd_dispatch!(gelu_backward_chunk => gelu_backward_chunk_body(
    x: &[f32], dy: &[f32], dx: &mut [f32]
));

// ---- RoPE ----

#[derive(Debug)]
struct RopeBackward;

/// The rotation tables `[L, Dh]` (what the backward needs: the rotation is linear).
#[derive(Clone, Debug)]
struct RopeTables {
    cos: FlexTensor,
    sin: FlexTensor,
    len: usize,
    dh: usize,
}

impl RopeTables {
    fn new(cos: FlexTensor, sin: FlexTensor) -> Self {
        let (cos, sin) = (
            contiguous_f32(cos, "RoPE's cos"),
            contiguous_f32(sin, "RoPE's sin"),
        );
        let s = cos.layout().shape().clone();
        assert!(
            s.num_dims() == 2 && sin.layout().shape() == &s && s[1] % 2 == 0,
            "RoPE tables must both be [L, Dh] with Dh even (cos {s:?}, sin {:?})",
            sin.layout().shape()
        );
        Self {
            len: s[0],
            dh: s[1],
            cos,
            sin,
        }
    }

    /// `x * cos + swap(x) * sin` for `x` `[.., L, Dh]`, or with `inverse` its transpose,
    /// `x * cos + swap(x * sin)` (the backward of the rotation).
    fn rotate(&self, x: &FlexTensor, inverse: bool) -> FlexTensor {
        let shape = x.layout().shape().clone();
        let d = shape.num_dims();
        assert!(
            d >= 2 && shape[d - 2] == self.len && shape[d - 1] == self.dh,
            "RoPE: input {shape:?} does not end in [{}, {}]",
            self.len,
            self.dh
        );
        let ld = self.len * self.dh;
        let (cos, sin) = (self.cos.storage::<f32>(), self.sin.storage::<f32>());
        let mut out = zeros(shape.num_elements());
        let parallel = out.len() >= PARALLEL_ELEMENTS;
        let tasks = out
            .chunks_mut(ld)
            .zip(x.storage::<f32>().chunks(ld))
            .collect();
        run_tasks(tasks, parallel, |_, (out, x)| {
            rope_head(x, cos, sin, self.dh, inverse, out)
        });
        float_tensor(out, shape)
    }
}

impl Backward<Flex, 1> for RopeBackward {
    type State = RopeTables;

    fn backward(self, ops: Ops<RopeTables, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let [parent] = ops.parents;
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, ops.state.rotate(&dy, true));
        }
    }
}

/// One head's rows: with h = Dh / 2 and j' = (j + h) mod Dh, forward
/// out_j = x_j cos_j + x_j' sin_j; inverse out_j = x_j cos_j + x_j' sin_j'.
#[inline(always)]
pub(crate) fn rope_head_body(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    dh: usize,
    inverse: bool,
    out: &mut [f32],
) {
    let h = dh / 2;
    let rows = x.chunks_exact(dh).zip(out.chunks_exact_mut(dh));
    for ((x, out), (cos, sin)) in rows.zip(cos.chunks_exact(dh).zip(sin.chunks_exact(dh))) {
        let (x1, x2) = x.split_at(h);
        let (o1, o2) = out.split_at_mut(h);
        let (c1, c2) = cos.split_at(h);
        let (s1, s2) = sin.split_at(h);
        let (sa, sb) = if inverse { (s2, s1) } else { (s1, s2) };
        for j in 0..h {
            o1[j] = x1[j] * c1[j] + x2[j] * sa[j];
            o2[j] = x2[j] * c2[j] + x1[j] * sb[j];
        }
    }
}

simd_dispatch!(rope_head => rope_head_body(
    x: &[f32], cos: &[f32], sin: &[f32], dh: usize, inverse: bool, out: &mut [f32]
));

// ---- linear layers ----

#[derive(Debug)]
struct LinearBackward;

/// `x` `[M, K]`, the weight `[K, N]` and the bias `[N]` (what the backward needs too).
#[derive(Clone, Debug)]
struct LinearInputs {
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
    m: usize,
    k: usize,
    n: usize,
}

impl LinearInputs {
    fn new(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> Self {
        let x = contiguous_f32(x, "the linear layer's input");
        let weight = contiguous_f32(weight, "the linear layer's weight");
        let bias = contiguous_f32(bias, "the linear layer's bias");
        let (xs, ws) = (x.layout().shape(), weight.layout().shape());
        assert!(
            xs.num_dims() == 2 && ws.num_dims() == 2 && xs[1] == ws[0],
            "fused linear: input {xs:?} and weight {ws:?} do not fit"
        );
        let (m, k, n) = (xs[0], xs[1], ws[1]);
        assert_eq!(
            bias.layout().shape().num_elements(),
            n,
            "fused linear: bias"
        );
        Self {
            x,
            weight,
            bias,
            m,
            k,
            n,
        }
    }

    /// `x W + b` `[M, N]`: every row starts as the bias and the product is added to it.
    fn forward(&self) -> FlexTensor {
        let (m, k, n) = (self.m, self.k, self.n);
        let mut out = repeat_rows(self.bias.storage::<f32>(), m);
        let (x, w) = (self.x.storage::<f32>(), self.weight.storage::<f32>());
        let dims = (m, n, k);
        gemm(
            dims,
            &mut out,
            true,
            (x, k, 1),
            (w, n, 1),
            1.0,
            parallelism_for(dims),
        );
        float_tensor(out, [m, n])
    }
}

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearInputs;

    fn backward(self, ops: Ops<LinearInputs, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<Flex>(&ops.node).to_contiguous();
        let i = &ops.state;
        let (m, k, n) = (i.m, i.k, i.n);
        let dy_ = dy.storage::<f32>();
        let [px, pw, pb] = ops.parents;
        if let Some(node) = px {
            // dx = dy W^T
            let dx = big_gemm_new((m, k, n), (dy_, n, 1), (i.weight.storage::<f32>(), 1, n));
            grads.register::<Flex>(node.id, float_tensor(dx, [m, k]));
        }
        if let Some(node) = pw {
            // dW = x^T dy
            let dw = big_gemm_new((k, n, m), (i.x.storage::<f32>(), 1, k), (dy_, n, 1));
            grads.register::<Flex>(node.id, float_tensor(dw, [k, n]));
        }
        if let Some(node) = pb {
            // db = the column sums of dy, row blocks in parallel.
            let tasks = dy_.chunks(n * 256).collect();
            let db = sum_tasks(tasks, m * n >= PARALLEL_ELEMENTS, n, |acc, _, rows| {
                for row in rows.chunks_exact(n) {
                    acc.iter_mut().zip(row).for_each(|(a, &g)| *a += g);
                }
            });
            grads.register::<Flex>(node.id, float_tensor(db, [n]));
        }
    }
}

/// `dst[m, n] (+)= beta lhs[m, k] rhs[k, n]` (row-major with the given row and column
/// strides; a transposed operand is read through swapped strides), with gemm's
/// `parallelism`. The one call into the `gemm` crate for the fused ops and the planner's host
/// kernels.
pub(crate) fn gemm(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    accumulate: bool,
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let (m, n, _) = dims;
    assert!(dst.len() >= m * n);
    // SAFETY: `dst` holds `m * n` elements (checked above) and, a distinct `&mut`, does not
    // alias the operands.
    unsafe {
        gemm_raw(
            dims,
            dst.as_mut_ptr(),
            accumulate,
            lhs,
            rhs,
            beta,
            parallelism,
        )
    }
}

/// `beta lhs[m, k] rhs[k, n]` in a new buffer, written by the product itself (no zeroing
/// pass first: on the calling thread that pass held the other threads up).
pub(crate) fn gemm_new(
    dims: (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
    beta: f32,
    parallelism: gemm::Parallelism,
) -> Vec<f32> {
    let (m, n, k) = dims;
    if k == 0 {
        return zeros(m * n);
    }
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the buffer has room for `m * n` elements and is not read (`accumulate` false);
    // with `k > 0` the product writes every one of them, so the length may then be set.
    unsafe {
        gemm_raw(dims, out.as_mut_ptr(), false, lhs, rhs, beta, parallelism);
        out.set_len(m * n);
    }
    out
}

/// [`gemm`] into `dst`, which must have room for `m * n` elements, not alias the operands,
/// and (with `accumulate`) hold initialised values.
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: `dst` has room for `m * n` elements (the caller's contract).
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    assert!(lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: every operand element read lies inside its slice (checked above); `dst` is the
    // caller's to guarantee.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            beta,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// gemm's parallelism for a product of `m * n * k` multiply-adds: rayon's threads when the
/// product is large enough to pay for them.
fn parallelism_for((m, n, k): (usize, usize, usize)) -> gemm::Parallelism {
    if m * n * k >= PARALLEL_MACS {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// [`gemm_new`] (`beta` 1) on rayon's threads when the product is large enough.
fn big_gemm_new(
    dims: (usize, usize, usize),
    lhs: (&[f32], usize, usize),
    rhs: (&[f32], usize, usize),
) -> Vec<f32> {
    gemm_new(dims, lhs, rhs, 1.0, parallelism_for(dims))
}

// ---- shared by the fused ops ----

/// Work (elements, or multiply-adds for products) below which an op runs on the calling
/// thread: handing a small op to rayon's threads costs more than it saves (the demo's
/// one-token model trained 25% slower with every op handed over).
pub(crate) const PARALLEL_ELEMENTS: usize = 1 << 15;
/// Elements below which a pass that only moves memory (a fill, a copy, a transpose) stays on
/// the calling thread: such a pass does little per element, so only large buffers (from a
/// megabyte: the medium model's activations) are handed over. Against `PARALLEL_ELEMENTS`
/// here the tiny and end-to-end steps differed within the machine's noise.
pub(crate) const PARALLEL_COPY: usize = 1 << 18;
pub(crate) const PARALLEL_MACS: usize = 192 * 192 * 192;

/// Runs `f(i, task)` for every task, on rayon's threads when `parallel`.
pub(crate) fn run_tasks<T: Send>(tasks: Vec<T>, parallel: bool, f: impl Fn(usize, T) + Sync) {
    if parallel {
        tasks.into_par_iter().enumerate().for_each(|(i, t)| f(i, t));
    } else {
        tasks.into_iter().enumerate().for_each(|(i, t)| f(i, t));
    }
}

/// Sums `f(acc, i, task)`'s additions to a zeroed `width`-vector over every task, on rayon's
/// threads (one vector per thread, added after) when `parallel`.
pub(crate) fn sum_tasks<T: Send>(
    tasks: Vec<T>,
    parallel: bool,
    width: usize,
    f: impl Fn(&mut [f32], usize, T) + Sync,
) -> Vec<f32> {
    let add = |mut a: Vec<f32>, b: Vec<f32>| {
        a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
        a
    };
    let step = |mut acc: Vec<f32>, (i, t): (usize, T)| {
        f(&mut acc, i, t);
        acc
    };
    if parallel {
        tasks
            .into_par_iter()
            .enumerate()
            .fold(|| vec![0.0f32; width], step)
            .reduce(|| vec![0.0f32; width], add)
    } else {
        tasks
            .into_iter()
            .enumerate()
            .fold(vec![0.0f32; width], step)
    }
}

/// Elements per task of the parallel buffer fills.
const FILL_CHUNK: usize = 1 << 15;

/// `n` zeros, written on rayon's threads when `n` is large: `vec![0.0; n]` zeroes a reused
/// block (or faults in a fresh one) on the calling thread while the others wait.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    filled(n, 1, |_, out| {
        for o in out {
            o.write(0.0);
        }
    })
}

/// `row` repeated `times` times, one after the other (written on rayon's threads when large).
pub(crate) fn repeat_rows(row: &[f32], times: usize) -> Vec<f32> {
    filled(row.len() * times, row.len().max(1), |_, out| {
        for chunk in out.chunks_mut(row.len()) {
            for (o, &v) in chunk.iter_mut().zip(row) {
                o.write(v);
            }
        }
    })
}

/// A buffer of `n` elements written chunk by chunk by `write(first, chunk)` (chunks of a
/// multiple of `unit` elements; on rayon's threads when `n` is large). `write` must write
/// every element of its chunk.
fn filled(
    n: usize,
    unit: usize,
    write: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(n);
    let chunk = FILL_CHUNK.div_ceil(unit).max(1) * unit;
    let spare = &mut out.spare_capacity_mut()[..n];
    if n >= PARALLEL_COPY {
        spare
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| write(i * chunk, c));
    } else {
        spare
            .chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| write(i * chunk, c));
    }
    // SAFETY: `write` wrote every one of the first `n` elements (its contract; both callers
    // above write each element of their chunk).
    unsafe { out.set_len(n) };
    out
}

/// `t` as a contiguous float32 tensor (the fused ops run float32 only).
pub(crate) fn contiguous_f32(t: FlexTensor, what: &str) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "fused CPU op: {what} must be float32"
    );
    t.to_contiguous()
}

/// A host buffer as a contiguous float32 flex tensor of `shape`.
pub(crate) fn float_tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape.into()),
        DType::F32,
    )
}

#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for u in 0..8 {
            acc[u] = x[u].mul_add(y[u], acc[u]);
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `$name(args)` runs `$body(args)` compiled for AVX-512 or AVX2 + FMA where the CPU has
/// them (the loops vectorise and `mul_add` is one instruction), else as built. `$body` must
/// be `#[inline(always)]`.
macro_rules! simd_dispatch {
    ($name:ident => $body:ident ($($arg:ident : $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports the enabled features (checked just above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::tensor::Distribution;

    fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The buffers written in parallel chunks: every element, rows whole across chunk ends
    /// (a 7-wide row does not divide the chunk), and the product written into a new buffer
    /// as into a zeroed one.
    #[test]
    fn new_buffers_are_written_whole() {
        for n in [0, 5, PARALLEL_COPY + 3, 3 * FILL_CHUNK + 11] {
            assert!(zeros(n).len() == n && zeros(n).iter().all(|&v| v == 0.0));
        }
        let row: Vec<f32> = (0..7).map(|i| i as f32 + 0.5).collect();
        for times in [0, 3, 40_000] {
            let out = repeat_rows(&row, times);
            assert_eq!(out.len(), 7 * times);
            assert!(out.chunks_exact(7).all(|r| r == row.as_slice()));
        }
        let (m, n, k) = (300, 130, 70);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(0)] {
            let fresh = gemm_new((m, n, k), (&a, k, 1), (&b, n, 1), 0.5, par);
            let mut zeroed = vec![0.0; m * n];
            gemm(
                (m, n, k),
                &mut zeroed,
                false,
                (&a, k, 1),
                (&b, n, 1),
                0.5,
                par,
            );
            assert_eq!(fresh, zeroed);
            // Entry (1, 2) by hand.
            let want: f32 = (0..k).map(|j| a[k + j] * b[j * n + 2]).sum::<f32>() * 0.5;
            assert_eq!(fresh[n + 2], want);
        }
        // Without `accumulate` the product never reads its destination (`gemm_new` relies on
        // it): NaN there does not reach the result, across gemm's blocks of k.
        let k = 700;
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(0)] {
            let mut poisoned = vec![f32::NAN; m * n];
            gemm(
                (m, n, k),
                &mut poisoned,
                false,
                (&a, k, 1),
                (&b, n, 1),
                1.0,
                par,
            );
            let fresh = gemm_new((m, n, k), (&a, k, 1), (&b, n, 1), 1.0, par);
            assert!(poisoned.iter().all(|v| v.is_finite()));
            assert_eq!(poisoned, fresh);
        }
        assert_eq!(
            gemm_new(
                (2, 3, 0),
                (&[], 0, 1),
                (&[], 3, 1),
                1.0,
                gemm::Parallelism::None
            ),
            vec![0.0; 6]
        );
    }

    /// Value and gradients (input, gamma, beta, shift, scale) against the tensor ops.
    #[test]
    fn the_fused_norm_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        for (b, t, n, w) in [(2, 3, 5, 16), (1, 2, 4, 13), (3, 1, 1, 40)] {
            let rand = |dims: [usize; 4], sd: f64| {
                Tensor::<4>::random(dims, Distribution::Normal(0.5, sd), &dev).require_grad()
            };
            let x = rand([b, t, n, w], 2.0);
            let (shift, scale) = (rand([b, t, 1, w], 0.3), rand([b, t, 1, w], 0.3));
            let mut norm = LayerNormConfig::new(w).init(&dev);
            // Parameters away from their initial ones, so that each enters the result.
            let param = |mean: f64| {
                Param::from_tensor(Tensor::<1>::random(
                    [w],
                    Distribution::Normal(mean, 0.5),
                    &dev,
                ))
            };
            norm.gamma = param(1.0);
            norm.beta = Some(param(0.0));
            let weights = Tensor::<4>::random([b, t, n, w], Distribution::Default, &dev);
            let run = |fused: bool| {
                let out = if fused {
                    norm_modulate(x.clone(), &norm, shift.clone(), scale.clone())
                } else {
                    norm_modulate_ops(x.clone(), &norm, shift.clone(), scale.clone())
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                let g4 = |v: &Tensor<4>| v.grad(&grads).expect("a gradient");
                let gamma = norm.gamma.val().grad(&grads).expect("gamma's gradient");
                let beta = norm
                    .beta
                    .as_ref()
                    .unwrap()
                    .val()
                    .grad(&grads)
                    .expect("beta's gradient");
                (out.inner(), g4(&x), g4(&shift), g4(&scale), gamma, beta)
            };
            let (o1, x1, sh1, sc1, g1, b1) = run(true);
            let (o2, x2, sh2, sc2, g2, b2) = run(false);
            for (what, d) in [
                ("output", max_abs_diff(o1, o2)),
                ("dx", max_abs_diff(x1, x2)),
                ("dshift", max_abs_diff(sh1, sh2)),
                ("dscale", max_abs_diff(sc1, sc2)),
                ("dgamma", max_abs_diff(g1, g2)),
                ("dbeta", max_abs_diff(b1, b2)),
            ] {
                assert!(d < 2e-5, "{what} differs by {d} at [{b}, {t}, {n}, {w}]");
            }
        }
    }

    /// Value and gradient against burn's `gelu`, over the range where erf bends and out to
    /// where it is flat.
    #[test]
    fn the_fused_gelu_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        let x =
            Tensor::<2>::random([37, 1001], Distribution::Normal(0.0, 3.0), &dev).require_grad();
        let weights = Tensor::<2>::random([37, 1001], Distribution::Default, &dev);
        let run = |fused: bool| {
            let out = if fused {
                gelu(x.clone())
            } else {
                burn::tensor::activation::gelu(x.clone())
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            (out.inner(), x.grad(&grads).expect("a gradient"))
        };
        let (o1, g1) = run(true);
        let (o2, g2) = run(false);
        assert!(max_abs_diff(o1, o2) < 1e-5);
        assert!(max_abs_diff(g1, g2) < 1e-5);
    }

    /// The rotation and its gradient against the tensor ops (the half-swap matmul).
    #[test]
    fn the_fused_rope_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        for (b, h, frames, rows, cols, dh) in [(2, 3, 4, 2, 2, 8), (1, 2, 3, 4, 4, 12)] {
            let rope = crate::world_model::Rope::new(2, frames, rows, cols, dh, 10000.0, &dev);
            let l = frames * rows * cols;
            let x = Tensor::<4>::random([b, h, l, dh], Distribution::Normal(0.0, 1.0), &dev)
                .require_grad();
            let weights = Tensor::<4>::random([b, h, l, dh], Distribution::Default, &dev);
            let run = |fused: bool| {
                let out = if fused {
                    rope.apply(x.clone())
                } else {
                    rope.apply_ops(x.clone())
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                (out.inner(), x.grad(&grads).expect("a gradient"))
            };
            let (o1, g1) = run(true);
            let (o2, g2) = run(false);
            assert!(max_abs_diff(o1, o2) < 1e-5);
            assert!(max_abs_diff(g1, g2) < 1e-5);
        }
    }

    /// A linear layer on `[B, T, K]`: value and the gradients of input, weight and bias
    /// against burn's `Linear::forward`.
    #[test]
    fn the_fused_linear_matches_the_tensor_ops() {
        let dev = Device::flex().autodiff();
        for (b, t, k, n) in [(2, 3, 5, 7), (4, 33, 64, 96)] {
            let l = burn::nn::LinearConfig::new(k, n).init(&dev);
            let x =
                Tensor::<3>::random([b, t, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
            let weights = Tensor::<3>::random([b, t, n], Distribution::Default, &dev);
            let run = |fused: bool| {
                let out = if fused {
                    linear(&l, x.clone())
                } else {
                    l.forward(x.clone())
                };
                let grads = (out.clone() * weights.clone()).sum().backward();
                let dw = l.weight.val().grad(&grads).expect("the weight's gradient");
                let db = l
                    .bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .grad(&grads)
                    .expect("the bias's gradient");
                (out.inner(), x.grad(&grads).expect("a gradient"), dw, db)
            };
            let (o1, x1, w1, b1) = run(true);
            let (o2, x2, w2, b2) = run(false);
            assert!(max_abs_diff(o1, o2) < 1e-5);
            assert!(max_abs_diff(x1, x2) < 1e-5);
            assert!(max_abs_diff(w1, w2) < 1e-4);
            assert!(max_abs_diff(b1, b2) < 1e-4);
        }
    }
}
