//! Muon's Newton-Schulz steps on the CPU, every matrix of a step at once.
//!
//! burn's `ModuleOptimizer` steps one parameter at a time, so each Muon matrix's five
//! Newton-Schulz iterations (three products each) ran as tensor ops split over the threads
//! one product at a time; on the medium model that was ~400 ms of a ~1.5 s training step. On
//! the `flex` backend the Muon group gets [`QueuedMuon`] instead of burn's Muon: inside the
//! module optimiser's pass it clips the gradient and applies Nesterov momentum in one pass over
//! host memory, as burn's `GradientClipping::Norm` and `Momentum` compute them (the state it
//! keeps, and what a checkpoint holds, is burn's `MuonState` in PyTorch's layout, as
//! [`super::TorchLayoutMuon`] keeps it), and queues the weight with its momentum-corrected
//! gradient. [`apply`] then runs the queue: one matrix per thread (`gemm` on the calling
//! thread, largest first), normalisation, Newton-Schulz, decoupled weight decay and the
//! shape-adjusted rate exactly as burn's `Muon` computes them, and puts the new weights back
//! into the module. The two paths are checked against each other, step for step and across
//! a checkpoint, in this file's tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::momentum::MomentumState;
use burn::optim::{Muon, MuonState, Optimizer, RecordState, StateSink};
use burn::prelude::*;
use burn::tensor::TensorData;
use rayon::prelude::*;

use crate::config::OptimConfig;
use crate::fused::{PARALLEL_COPY, PARALLEL_MACS, gemm, zeros};

/// burn's `MuonConfig` defaults, which [`super::muon`] keeps: the quintic's coefficients, the
/// number of iterations and the floor of the norm that scales the update to unit norm.
const NS_COEFFICIENTS: (f32, f32, f32) = (3.4445, -4.775, 2.0315);
const NS_STEPS: usize = 5;
const NS_EPSILON: f32 = 1e-7;

/// Elements per task of the host passes over one large gradient.
const HOST_CHUNK: usize = 1 << 14;

/// One matrix waiting for its Newton-Schulz steps.
struct Queued {
    lr: f64,
    /// The weight in burn's layout `[d_in, d_out]` (read to the host in [`apply`]'s parallel
    /// part).
    weight: Tensor<2>,
    dims: [usize; 2],
    /// The momentum-corrected gradient in PyTorch's layout `[d_out, d_in]`, row-major.
    update: Vec<f32>,
}

/// The Muon group's optimiser on the CPU: gradient clipping and Nesterov momentum now (as
/// burn's `GradientClipping::Norm` and `Momentum` compute them, in one pass), Newton-Schulz
/// in [`apply`].
#[derive(Clone)]
pub struct QueuedMuon {
    momentum: f32,
    weight_decay: Option<f32>,
    /// Each gradient's largest L2 norm (`grad_clip`; none when 0).
    clip: Option<f32>,
    queue: Arc<Mutex<Vec<Queued>>>,
}

impl QueuedMuon {
    pub fn new(cfg: &OptimConfig) -> Self {
        Self {
            momentum: cfg.muon_momentum as f32,
            weight_decay: (cfg.muon_weight_decay > 0.0).then_some(cfg.muon_weight_decay as f32),
            clip: (cfg.grad_clip > 0.0).then_some(cfg.grad_clip as f32),
            queue: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn take_queue(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.queue.lock().expect("Muon queue poisoned"))
    }
}

fn host_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec::<f32>()
        .expect("Muon on the CPU: parameters are float32")
}

/// The velocity burn's `MomentumState` holds (its one tensor), as host data.
fn velocity<const D: usize>(state: &MomentumState<D>) -> Vec<f32> {
    let mut sink = StateSink::default();
    state.state_flatten("", &mut sink);
    let (_, data) = sink
        .tensors
        .pop()
        .expect("burn's momentum state holds its velocity");
    data.try_into_vec::<f32>()
        .expect("Muon on the CPU: the momentum is float32")
}

impl Optimizer for QueuedMuon {
    type State<const D: usize> = MuonState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        assert_eq!(D, 2, "Muon takes matrices, got a rank-{D} parameter");
        let dims = tensor.dims();
        let [r, c] = [dims[0], dims[1]];
        // The momentum lives in PyTorch's layout `[c, r]`, as burn's Muon keeps it there.
        let mut g = transpose(&host_f32(grad), r, c);
        // burn's clip_by_norm: scale by min(1, max_norm / (norm + f32's smallest normal)).
        let coef = self.clip.map_or(1.0, |max_norm| {
            let squares = if g.len() >= PARALLEL_COPY {
                g.par_chunks(HOST_CHUNK).map(sum_squares).sum()
            } else {
                sum_squares(&g)
            };
            let norm = squares.sqrt() as f32;
            (max_norm / (norm + f32::MIN_POSITIVE)).min(1.0)
        });
        let mu = self.momentum;
        // v <- g + mu v (a first step starts from v = 0 + g, as burn's); the Nesterov update
        // is g + mu v. One pass, in parallel blocks when the matrix is large.
        let mut v = match state {
            Some(s) => velocity(&s.momentum),
            None => vec![0.0; g.len()],
        };
        let pass = |(v, g): (&mut [f32], &mut [f32])| {
            for (v, g) in v.iter_mut().zip(g.iter_mut()) {
                let gc = *g * coef;
                *v = gc + *v * mu;
                *g = *v * mu + gc;
            }
        };
        if g.len() >= PARALLEL_COPY {
            v.par_chunks_mut(HOST_CHUNK)
                .zip(g.par_chunks_mut(HOST_CHUNK))
                .for_each(pass);
        } else {
            pass((&mut v, &mut g));
        }
        let device = tensor.device();
        let v = Tensor::<D>::from_data(TensorData::new(v, [c, r]), &device);
        self.queue
            .lock()
            .expect("Muon queue poisoned")
            .push(Queued {
                lr,
                weight: tensor.clone().reshape([r, c]),
                dims: [r, c],
                update: g,
            });
        (tensor, Some(MuonState::new(MomentumState::new(v))))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Muon::to_device(state, device)
    }
}

/// Runs the matrices `muon` queued during `optimizer.step`, in parallel, and puts their new
/// weights into `module`. `ids` are the Muon group's parameters that had a gradient, in the
/// order the module optimiser visited them (the module's own order).
pub fn apply<M: Module>(muon: &QueuedMuon, ids: &[ParamId], module: M) -> M {
    let queued = muon.take_queue();
    assert_eq!(
        queued.len(),
        ids.len(),
        "Muon on the CPU: {} matrices queued for {} parameters",
        queued.len(),
        ids.len()
    );
    let weight_decay = muon.weight_decay;
    let macs: usize = queued.iter().map(|q| newton_schulz_macs(q.dims)).sum();
    let mut jobs: Vec<(usize, Queued)> = queued.into_iter().enumerate().collect();
    // Largest first, so that the last matrix to finish is a small one.
    jobs.sort_by_key(|(_, q)| std::cmp::Reverse(newton_schulz_macs(q.dims)));
    let run = |(i, q): (usize, Queued)| (i, q.dims, muon_update(q, weight_decay));
    let done: Vec<(usize, [usize; 2], Vec<f32>)> = if macs >= PARALLEL_MACS {
        jobs.into_par_iter().with_max_len(1).map(run).collect()
    } else {
        jobs.into_iter().map(run).collect()
    };
    let mut updates = HashMap::with_capacity(done.len());
    for (i, dims, weight) in done {
        updates.insert(ids[i], TensorData::new(weight, dims));
    }
    let mut mapper = PutWeights { updates };
    let module = module.map(&mut mapper);
    assert!(
        mapper.updates.is_empty(),
        "Muon on the CPU: updated parameters not found in the module"
    );
    module
}

struct PutWeights {
    updates: HashMap<ParamId, TensorData>,
}

impl ModuleMapper for PutWeights {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.updates.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let mut next = Tensor::<D>::from_data(data, &tensor.device());
        if tensor.is_require_grad() {
            next = next.require_grad();
        }
        Param::from_mapped_value(id, next, mapper)
    }
}

/// Multiply-adds of the Newton-Schulz steps of a `dims` matrix.
fn newton_schulz_macs([r, c]: [usize; 2]) -> usize {
    let (m, n) = (r.min(c), r.max(c));
    NS_STEPS * (2 * m * m * n + m * m * m)
}

/// burn's `Muon` step on one queued matrix: the new weight, in burn's layout.
fn muon_update(q: Queued, weight_decay: Option<f32>) -> Vec<f32> {
    let [r, c] = q.dims;
    // The update is `[c, r]` (PyTorch's layout); burn's Muon orthogonalises it as is when it
    // has no more rows than columns, else its transpose.
    let as_is = c <= r;
    let (m, n) = if as_is { (c, r) } else { (r, c) };
    let mut x = if as_is {
        q.update
    } else {
        transpose(&q.update, c, r)
    };
    newton_schulz(&mut x, m, n);
    // sqrt(max(1, rows / cols)) of the PyTorch layout, as burn's `AdjustLrFn::Original`.
    let adjusted = (q.lr * (c as f64 / r as f64).max(1.0).sqrt()) as f32;
    let decay = weight_decay.map_or(1.0, |p| (1.0 - q.lr * p as f64) as f32);
    // The orthogonalised update in burn's layout.
    let update = if as_is { transpose(&x, c, r) } else { x };
    let mut w = host_f32(q.weight);
    for (v, u) in w.iter_mut().zip(&update) {
        *v = *v * decay - u * adjusted;
    }
    w
}

/// `a` (`rows x cols`, row-major) transposed, in tiles that stay in cache (blocks of output
/// rows on rayon's threads when `a` is large).
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = zeros(a.len());
    if rows == 0 || cols == 0 {
        return t;
    }
    // Output rows j0..j0 + TILE: columns j0.. of `a`.
    let block = |(b, out): (usize, &mut [f32])| {
        let j0 = b * TILE;
        let width = out.len() / rows;
        for i0 in (0..rows).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in 0..width {
                    out[j * rows + i] = a[i * cols + j0 + j];
                }
            }
        }
    };
    if a.len() >= PARALLEL_COPY {
        t.par_chunks_mut(TILE * rows).enumerate().for_each(block);
    } else {
        t.chunks_mut(TILE * rows).enumerate().for_each(block);
    }
    t
}

/// Sum of the squares, in f64.
fn sum_squares(x: &[f32]) -> f64 {
    x.iter().map(|v| (*v as f64) * (*v as f64)).sum()
}

/// Five steps of the quintic Newton-Schulz iteration on `x` (`m x n`, `m <= n`, row-major),
/// after scaling it to unit Frobenius norm, as burn's `Muon::zeropower_via_newtonschulz`:
/// `A = X X^T`, `B = b A + c A A`, `X <- a X + B X`.
fn newton_schulz(x: &mut Vec<f32>, m: usize, n: usize) {
    let (a, b, c) = NS_COEFFICIENTS;
    let norm = (sum_squares(x).sqrt() as f32).max(NS_EPSILON);
    x.iter_mut().for_each(|v| *v /= norm);
    let one = gemm::Parallelism::None;
    let mut am = vec![0.0f32; m * m];
    let mut bm = vec![0.0f32; m * m];
    let mut y = vec![0.0f32; m * n];
    for _ in 0..NS_STEPS {
        // A = X X^T: X^T read through swapped strides.
        gemm((m, m, n), &mut am, false, (x, n, 1), (x, 1, n), 1.0, one);
        bm.iter_mut().zip(&am).for_each(|(o, v)| *o = b * v);
        gemm((m, m, m), &mut bm, true, (&am, m, 1), (&am, m, 1), c, one);
        y.iter_mut().zip(x.iter()).for_each(|(o, v)| *o = a * v);
        gemm((m, n, m), &mut y, true, (&bm, m, 1), (x, n, 1), 1.0, one);
        std::mem::swap(x, &mut y);
    }
}

#[cfg(test)]
mod tests {
    use burn::module::{ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::Distribution;

    use crate::LamConfig;
    use crate::lam::{LatentActionModel, StepNoise};
    use crate::optim::{TwoGroupOptim, build_on};
    use crate::train::init_model;

    use super::*;

    fn weights(model: &LatentActionModel) -> Vec<(String, Vec<f32>)> {
        struct V(Vec<(String, Vec<f32>)>, Vec<String>);
        impl ModuleVisitor for V {
            fn enter_module(&mut self, name: &str, _: &str) {
                self.1.push(name.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.1.pop();
            }
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                self.0.push((self.1.join("."), host_f32(p.val())));
            }
        }
        let mut v = V(Vec::new(), Vec::new());
        model.visit(&mut v);
        v.0
    }

    fn train(
        cfg: &LamConfig,
        mut model: LatentActionModel,
        built: &mut TwoGroupOptim,
        clips: &Tensor<4>,
        steps: usize,
    ) -> LatentActionModel {
        for _ in 0..steps {
            let loss = model
                .forward_loss(cfg, clips.clone(), &StepNoise::default())
                .terms
                .total;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = built.optimizer.step(built.scheduler.step(), model, grads);
        }
        model
    }

    fn assert_same(a: &LatentActionModel, b: &LatentActionModel, what: &str) {
        let mut muon_moved = 0;
        for ((name, x), (_, y)) in weights(a).iter().zip(&weights(b)) {
            let scale = x.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
            let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(
                worst <= 2e-6 * scale + 1e-6,
                "{what}: {name} differs by {worst}"
            );
            muon_moved += usize::from(name.ends_with("qkv.weight"));
        }
        assert!(muon_moved > 0, "{what}: no Muon matrix compared");
    }

    /// The tiled transpose, on one thread and in parallel blocks (sides not multiples of the
    /// tile), against the element-by-element definition.
    #[test]
    fn the_transpose_is_the_transpose() {
        for (rows, cols) in [(3, 5), (33, 70), (300, 900)] {
            let a: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&a, rows, cols);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(
                        t[j * rows + i],
                        a[i * cols + j],
                        "({i}, {j}) of {rows}x{cols}"
                    );
                }
            }
        }
    }

    /// The CPU's queued Muon steps the model as burn's Muon does (matrices taller than wide,
    /// wider than tall and square: the tiny world model has all three; gradients clipped,
    /// weight decay), and its state is burn's: a checkpoint of one resumes in the other.
    #[test]
    fn the_queued_muon_steps_as_burns_muon_and_shares_its_state() {
        let mut cfg = LamConfig::preset("tiny").unwrap();
        cfg.train.batch_size = 2;
        cfg.optim.muon_weight_decay = 0.05;
        // Small enough that most gradients are clipped.
        cfg.optim.grad_clip = 0.05;
        let dev = Device::flex().autodiff();
        let m = &cfg.model;
        let clips = Tensor::<4>::random(
            [2, m.frames, m.tokens(), m.embed_dim],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let model = init_model(&cfg, &dev);
        let mut host = build_on(&model, &cfg.optim, 10, true).unwrap();
        let mut burn = build_on(&model, &cfg.optim, 10, false).unwrap();
        assert!(host.optimizer.queued.is_some() && burn.optimizer.queued.is_none());
        let a = train(&cfg, model.clone(), &mut host, &clips, 3);
        let b = train(&cfg, model.clone(), &mut burn, &clips, 3);
        assert_same(&a, &b, "three steps");
        let moved = weights(&a)
            .iter()
            .zip(&weights(&model))
            .filter(|((n, x), (_, y))| n.ends_with("fc1.weight") && x != y)
            .count();
        assert!(moved > 0, "the Muon matrices did not move");

        // The host path's state, loaded into burn's Muon (and back), continues the same run.
        let record = host.optimizer.module_optimizer().to_record();
        let mut burn2 = build_on(&model, &cfg.optim, 10, false).unwrap();
        burn2.optimizer.inner = burn2.optimizer.inner.load_record(record);
        burn2.scheduler = host.scheduler.clone();
        let record = burn.optimizer.module_optimizer().to_record();
        let mut host2 = build_on(&model, &cfg.optim, 10, true).unwrap();
        host2.optimizer.inner = host2.optimizer.inner.load_record(record);
        host2.scheduler = burn.scheduler.clone();
        let c = train(&cfg, a.clone(), &mut burn2, &clips, 2);
        let d = train(&cfg, b.clone(), &mut host2, &clips, 2);
        let e = train(&cfg, a, &mut host, &clips, 2);
        assert_same(&c, &e, "burn's Muon resumed from the host path's state");
        assert_same(&d, &e, "the host path resumed from burn's Muon's state");
    }
}
