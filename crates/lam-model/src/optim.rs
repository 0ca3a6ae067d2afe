//! Optimisers and learning-rate schedule of stage 1, built from burn's own parts.
//!
//! - **Muon** (burn's `Muon`: Nesterov momentum, 5 Newton-Schulz steps with coefficients
//!   (3.4445, -4.775, 2.0315), decoupled weight decay) for every 2-D weight matrix of the IDM
//!   and the world model.
//! - **AdamW** (burn's `AdamW`) for everything else: biases, norms, the VQ codebook.
//! - Both follow linear warmup over `warmup_fraction` of the steps, then cosine decay
//!   (burn's `SequentialLrScheduler` of a `LinearLrScheduler` and a
//!   `CosineAnnealingLrScheduler`), each group at its own peak rate.
//!
//! burn stores a `Linear` weight as `[d_in, d_out]`, the transpose of PyTorch's
//! `[d_out, d_in]`. Muon's shape-dependent rate adjustment `sqrt(max(1, rows / cols))` is
//! defined on the PyTorch layout, so [`TorchLayoutMuon`] hands burn's Muon the transposed
//! matrix; the update is then exactly that of `torch.optim.Muon` on the same layer
//! (checked against a fixture made with PyTorch).
//!
//! On the CPU the Muon group's Newton-Schulz steps run after the module optimiser's pass, all
//! matrices at once (`optim/host_muon.rs`); other devices run burn's Muon as is.
//!
//! Parameter ids are derived from module paths ([`stable_param_ids`]) so optimiser state
//! saved in a checkpoint finds its parameters again after a restart.

use std::collections::BTreeMap;

use burn::grad_clipping::GradientClippingConfig;
use burn::lr_scheduler::LrSchedulerConfig;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::{
    ModuleLearningRate, ModuleLrScheduler, ModuleLrSchedulerConfig,
};
use burn::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdamWConfig, GradientsParams, ModuleOptimizer, Muon, MuonConfig, MuonState, Optimizer,
};
use burn::prelude::*;

use crate::config::OptimConfig;

mod host_muon;
use host_muon::QueuedMuon;

/// burn's Muon applied to the PyTorch layout of a weight (see the module docs).
#[derive(Clone)]
pub struct TorchLayoutMuon(pub Muon);

impl Optimizer for TorchLayoutMuon {
    type State<const D: usize> = MuonState<D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // The momentum state lives in the transposed layout throughout.
        let (updated, state) = self
            .0
            .step(lr, tensor.swap_dims(0, 1), grad.swap_dims(0, 1), state);
        (updated.swap_dims(0, 1), state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Muon::to_device(state, device)
    }
}

pub fn muon(cfg: &OptimConfig) -> TorchLayoutMuon {
    TorchLayoutMuon(
        MuonConfig::new()
            .with_momentum(MomentumConfig {
                momentum: cfg.muon_momentum,
                dampening: 0.0,
                nesterov: true,
            })
            .with_weight_decay(
                (cfg.muon_weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(cfg.muon_weight_decay as f32)),
            )
            .build(),
    )
}

/// Path, id and rank of every float parameter, in visiting order.
pub fn param_paths<M: Module>(module: &M) -> Vec<(String, ParamId, usize)> {
    struct V {
        path: Vec<String>,
        out: Vec<(String, ParamId, usize)>,
    }
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push((self.path.join("."), param.id, D));
        }
    }
    let mut v = V {
        path: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Replaces every parameter id by a hash of its module path, so ids are the same in every
/// process that builds the same model.
pub fn stable_param_ids<M: Module>(module: M) -> M {
    struct Mp {
        path: Vec<String>,
    }
    impl ModuleMapper for Mp {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.id = ParamId::from(fnv1a(&self.path.join(".")));
            param
        }
    }
    module.map(&mut Mp { path: Vec::new() })
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Which optimiser a parameter gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Muon,
    AdamW,
}

/// Muon for 2-D weights under `idm` / `world_model`, AdamW for the rest.
pub fn group_of(path: &str, rank: usize) -> Group {
    let in_scope = path.starts_with("idm") || path.starts_with("world_model");
    if in_scope && rank == 2 && path.ends_with("weight") {
        Group::Muon
    } else {
        Group::AdamW
    }
}

/// Stage 1's optimiser: burn's `ModuleOptimizer` with AdamW and a Muon group; on the CPU the
/// Muon group's Newton-Schulz steps run after the module optimiser's pass, every matrix at
/// once (`optim/host_muon.rs`). Its state (and a checkpoint's) is the module optimiser's either way.
#[derive(Clone)]
pub struct TwoGroupOptimizer {
    inner: ModuleOptimizer,
    /// The CPU's Muon and its parameters in the module's order; `None`: burn's Muon.
    queued: Option<(QueuedMuon, Vec<ParamId>)>,
}

impl TwoGroupOptimizer {
    /// One optimiser step of `module` with `grads`.
    pub fn step<M: Module>(
        &mut self,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
    ) -> M {
        let Some((muon, ids)) = &self.queued else {
            return self.inner.step(lr, module, grads);
        };
        let stepped: Vec<ParamId> = ids
            .iter()
            .copied()
            .filter(|id| grads.get::<2>(*id).is_some())
            .collect();
        let module = self.inner.step(lr, module, grads);
        host_muon::apply(muon, &stepped, module)
    }

    /// The module optimiser that holds the state (what a checkpoint saves).
    pub fn module_optimizer(&self) -> &ModuleOptimizer {
        &self.inner
    }

    /// The same optimiser with `f` applied to its module optimiser (loading a checkpoint's
    /// state).
    pub fn map_module_optimizer<E>(
        self,
        f: impl FnOnce(ModuleOptimizer) -> Result<ModuleOptimizer, E>,
    ) -> Result<Self, E> {
        Ok(Self {
            inner: f(self.inner)?,
            queued: self.queued,
        })
    }
}

/// The two-group optimiser and its schedule for `module`, over `total_steps` steps.
pub struct TwoGroupOptim {
    pub optimizer: TwoGroupOptimizer,
    pub scheduler: ModuleLrScheduler,
    /// Parameter counts per group, for the run log.
    pub counts: BTreeMap<&'static str, usize>,
}

pub fn build<M: Module>(
    module: &M,
    cfg: &OptimConfig,
    total_steps: usize,
) -> anyhow::Result<TwoGroupOptim> {
    let on_cpu = module
        .devices()
        .first()
        .is_some_and(|d| crate::fused::on_cpu(d, "muon"));
    build_on(module, cfg, total_steps, on_cpu)
}

/// [`build`], with the Muon group's Newton-Schulz steps on the host (`host_muon`, the CPU's
/// path) or as burn's tensor ops.
pub(crate) fn build_on<M: Module>(
    module: &M,
    cfg: &OptimConfig,
    total_steps: usize,
    host_muon: bool,
) -> anyhow::Result<TwoGroupOptim> {
    let mut muon_ids = Vec::new();
    let mut counts = BTreeMap::from([("muon_tensors", 0), ("adamw_tensors", 0)]);
    for (path, id, rank) in param_paths(module) {
        match group_of(&path, rank) {
            Group::Muon => {
                muon_ids.push(id);
                *counts.get_mut("muon_tensors").unwrap() += 1;
            }
            Group::AdamW => *counts.get_mut("adamw_tensors").unwrap() += 1,
        }
    }
    let clip = (cfg.grad_clip > 0.0).then(|| GradientClippingConfig::Norm(cfg.grad_clip as f32));
    let adamw = AdamWConfig::new()
        .with_beta_1(cfg.adamw_betas[0] as f32)
        .with_beta_2(cfg.adamw_betas[1] as f32)
        .with_epsilon(cfg.adamw_eps as f32)
        .with_weight_decay(cfg.weight_decay as f32)
        .with_grad_clipping(clip.clone());
    let muon_group = ParamGroup::from_ids(muon_ids.clone());
    let adamw = adamw.init();
    let clip = clip.map(|c| c.init());
    let optimizer = if host_muon {
        // The queued Muon clips its gradients itself.
        let queued = QueuedMuon::new(cfg);
        TwoGroupOptimizer {
            inner: adamw.with_group(muon_group.clone(), queued.clone(), None),
            queued: Some((queued, muon_ids)),
        }
    } else {
        TwoGroupOptimizer {
            inner: adamw.with_group(muon_group.clone(), muon(cfg), clip),
            queued: None,
        }
    };
    let scheduler = ModuleLrSchedulerConfig::new(warmup_cosine(cfg.adamw_lr, cfg, total_steps)?)
        .with_group(muon_group, warmup_cosine(cfg.muon_lr, cfg, total_steps)?)
        .init()
        .map_err(|e| anyhow::anyhow!("learning-rate schedule: {e}"))?;
    Ok(TwoGroupOptim {
        optimizer,
        scheduler,
        counts,
    })
}

/// Number of warmup steps for a run of `total_steps`.
pub fn warmup_steps(cfg: &OptimConfig, total_steps: usize) -> usize {
    ((total_steps as f64 * cfg.warmup_fraction).round() as usize).min(total_steps.saturating_sub(1))
}

/// Linear warmup from peak/W to peak over W steps, then cosine from peak to
/// `min_lr_fraction * peak` over the remaining steps. Step s (0-based) gets
/// `peak * (s + 1) / W` for s < W and `min + (peak - min) * (1 + cos(pi * (s - W) / (S - W))) / 2`
/// after.
pub fn warmup_cosine(
    peak: f64,
    cfg: &OptimConfig,
    total_steps: usize,
) -> anyhow::Result<LrSchedulerConfig> {
    let warm = warmup_steps(cfg, total_steps);
    let min = peak * cfg.min_lr_fraction;
    let cosine = LrSchedulerConfig::Cosine(
        CosineAnnealingLrSchedulerConfig::new(peak, total_steps - warm).with_min_lr(min),
    );
    Ok(match warm {
        0 => cosine,
        1 => LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
            vec![LrSchedulerConfig::Constant(peak), cosine],
            vec![1],
        )),
        w => LrSchedulerConfig::Sequential(SequentialLrSchedulerConfig::new(
            vec![
                LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(
                    peak / w as f64,
                    peak,
                    w - 1,
                )),
                cosine,
            ],
            vec![w],
        )),
    })
}

/// Closed form of [`warmup_cosine`], for logs and tests.
pub fn warmup_cosine_at(peak: f64, cfg: &OptimConfig, total_steps: usize, step: usize) -> f64 {
    let warm = warmup_steps(cfg, total_steps);
    warmup_cosine_lr(peak, warm, total_steps, cfg.min_lr_fraction, step)
}

/// Warmup steps of the encoder, end-to-end and LAWM schedules: `fraction` of `total`,
/// rounded, at least 1.
pub fn warmup_steps_at_least_one(fraction: f64, total: usize) -> usize {
    ((total as f64 * fraction).round() as usize).max(1)
}

/// The one warmup + cosine learning-rate formula of lam (stage 1's closed form, the sim
/// encoder's pretraining, LAWM): step s (0-based) gets `peak * (s + 1) / warm` for
/// s < warm, then `min + (peak - min) * (1 + cos(pi * p)) / 2` with
/// p = (s - warm) / (total - warm) (at most 1) and min = `min_fraction * peak`.
pub fn warmup_cosine_lr(
    peak: f64,
    warm: usize,
    total: usize,
    min_fraction: f64,
    step: usize,
) -> f64 {
    if step < warm {
        return peak * (step + 1) as f64 / warm as f64;
    }
    let span = total.saturating_sub(warm).max(1) as f64;
    let p = ((step - warm) as f64 / span).min(1.0);
    let min = peak * min_fraction;
    min + 0.5 * (peak - min) * (1.0 + (std::f64::consts::PI * p).cos())
}
