//! Gradient planner: Adam on the action sequence through the world model.
//!
//! `samples` sequences start from the search space's prior (the first at its mean) and are
//! optimised in parallel, all in one batched rollout: the cost of each sequence's final
//! predicted frame is summed and differentiated with respect to the sequences only (the world
//! model's weights and the cached history are constants). Robot-action sequences are clamped
//! to the box after every step. The best sequence seen at any iteration is returned.

use burn::module::{Module, Param};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::{Plan, PlannerConfig, Problem, SearchSpace};
use crate::rollout::{cost, final_frames, pooled_cosine, rollout_tensor};

/// The sequences being optimised, `[C, H * dim]`.
#[derive(Module, Debug)]
struct Sequences {
    x: Param<Tensor<2>>,
}

/// Final predicted frames `[C, N, D]` of sequences `x` `[C, H, dim]` (in the search space),
/// differentiable with respect to `x`.
fn rollout_differentiable(problem: &Problem, space: &SearchSpace, x: Tensor<3>) -> Tensor<3> {
    final_frames(rollout_tensor(problem, space, x))
}

/// Plans by gradient descent (see the module docs).
pub fn plan(cfg: &PlannerConfig, problem: &Problem, space: &SearchSpace) -> Plan {
    let (h, dim) = (cfg.horizon, space.dim());
    let width = h * dim;
    let c = cfg.samples.max(1);
    let (mean, std) = space.init(h);
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut x0: Vec<f32> = (0..c * width)
        .map(|i| {
            let noise: f32 = StandardNormal.sample(&mut rng);
            mean[i % width] + std[i % width] * noise
        })
        .collect();
    x0[..width].copy_from_slice(&mean);
    space.clamp(&mut x0);
    let ad = problem.current.device().autodiff();
    let (low, high) = match space {
        SearchSpace::Action { low, high, .. } => {
            let row = |b: &[f32]| -> Tensor<2> {
                let v: Vec<f32> = (0..width).map(|i| b[i % dim]).collect();
                Tensor::<2>::from_data(TensorData::new(v, [1, width]), &ad).expand([c, width])
            };
            (Some(row(low)), Some(row(high)))
        }
        SearchSpace::Latent { .. } => (None, None),
    };
    // Step size in units of the prior's spread.
    let spread = std.iter().sum::<f32>() / std.len().max(1) as f32;
    let lr = cfg.learning_rate * spread as f64;
    let mut vars = Sequences {
        x: Param::from_tensor(Tensor::from_data(TensorData::new(x0, [c, width]), &ad)),
    };
    let mut optim = AdamConfig::new().init();
    let mut best: (f32, Vec<f32>) = (f32::INFINITY, mean.clone());
    let iterations = cfg.iterations.max(1);
    for it in 0..=iterations {
        let x = vars.x.val();
        let x_host: Vec<f32> = x
            .clone()
            .inner()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 sequences");
        let finals = rollout_differentiable(problem, space, x.reshape([c, h, dim]));
        let costs = cost(cfg.cost, cfg.pooled, finals, problem.goal.clone());
        let costs_host: Vec<f32> = costs
            .clone()
            .inner()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 costs");
        for (i, &v) in costs_host.iter().enumerate() {
            if v < best.0 {
                best = (v, x_host[i * width..(i + 1) * width].to_vec());
            }
        }
        if it == iterations {
            break;
        }
        let grads = GradientsParams::from_grads(costs.sum().backward(), &vars);
        vars = optim.step(lr, vars, grads);
        if let (Some(lo), Some(hi)) = (&low, &high) {
            let (lo, hi) = (lo.clone(), hi.clone());
            vars.x = vars
                .x
                .map(|t| t.max_pair(lo).min_pair(hi).detach().require_grad());
        }
    }
    let device = problem.current.device();
    let seq = Tensor::<3>::from_data(TensorData::new(best.1.clone(), [1, h, dim]), &device);
    let finals = rollout_differentiable(problem, space, seq);
    let confidence = pooled_cosine(finals, problem.goal.clone())
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 cosine")[0];
    Plan {
        sequence: best.1,
        dim,
        cost: best.0,
        confidence,
        rollouts: c * (iterations + 1),
    }
}
