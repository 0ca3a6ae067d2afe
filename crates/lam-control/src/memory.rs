//! What the episode has shown: a correction of the world model's predictions from the blocks
//! the robot has already executed.
//!
//! A learned world model is wrong in places, and the closed loop sees where: a block of robot
//! actions executed from frame s led to frame s', whatever the model predicted. The commonest
//! case is contact: the model, which learned from video that a push moves the body, predicts
//! the robot past a door jamb it is pressed on, the planner keeps choosing that push, and the
//! robot stays where it is for the rest of the episode. [`EpisodeMemory`] keeps the episode's
//! executed blocks (frame, actions, frame reached) and blends each predicted step of a rollout
//! toward what the memory says that step does: the change a remembered block made, applied
//! from the frame the step starts at, weighted by how alike the step's frame and actions are
//! to the remembered block's (a Gaussian kernel on each, in the model's standardised frame
//! units and the robot's action units). Far from everything remembered, the model's
//! prediction stands; at a remembered frame with a remembered action, the observed outcome
//! replaces it. Kernel regression on the episode's own transitions, as residual models in
//! adaptive MPC do, with no training and no labels beyond the actions the robot sent.

use anyhow::{Result, ensure};
use burn::prelude::*;
use lam_model::LatentActionModel;
use serde::Serialize;

/// How far a remembered block reaches. Defaults: see each field.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryConfig {
    /// Width of the frame kernel: the mean squared difference per channel of two pooled,
    /// standardised frames at which a block's weight falls to 1/e. Default 0.1 (about a third
    /// of a standard deviation per channel).
    pub frame_scale: f32,
    /// Width of the action kernel: the mean squared difference per number of two blocks of
    /// robot actions at which the weight falls to 1/e. Default 0.3 (on actions in [-1, 1]:
    /// two held full-speed pushes 45 degrees apart weigh about e^-1).
    pub action_scale: f32,
    /// Blocks kept: past this many, the oldest is forgotten, so a long-lived session (a
    /// `lam serve` client that never resets) plans in bounded time and memory. Default 64 (a
    /// protocol episode of 50 steps in blocks of 5 executes 10).
    pub capacity: usize,
}

/// The defaults are the widths that planned best on `reach` from pixels (the demo's models,
/// 50 protocol episodes: 0.1 / 0.3 90%, 0.01 / 0.05 80%, none 74%; docs/benchmarks.md,
/// "What the episode has shown").
impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            frame_scale: 0.1,
            action_scale: 0.3,
            capacity: 64,
        }
    }
}

impl MemoryConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("memory frame scale", self.frame_scale),
            ("memory action scale", self.action_scale),
        ] {
            ensure!(
                v.is_finite() && v > 0.0,
                "{name} must be a finite number > 0, got {v}"
            );
        }
        ensure!(
            self.capacity > 0,
            "memory capacity must be at least 1 block, got 0"
        );
        Ok(())
    }
}

/// One executed block: the encoder tokens of the frame it started at and of the frame it
/// reached (`[1, N, D]`, as encoded), and the robot actions sent (`k A` numbers).
#[derive(Clone, Debug)]
pub struct Transition {
    pub from: Tensor<3>,
    pub actions: Vec<f32>,
    pub to: Tensor<3>,
}

/// An episode's executed blocks in one world model's standardised units, ready to correct
/// that model's rollouts.
#[derive(Clone, Debug)]
pub struct EpisodeMemory {
    cfg: MemoryConfig,
    /// Pooled start frames `[E, D]`.
    from: Tensor<2>,
    /// Robot actions of each block `[E, kA]`.
    actions: Tensor<2>,
    /// Token-wise change each block made `[E, N * D]`.
    change: Tensor<2>,
}

impl EpisodeMemory {
    /// The memory of the last [`MemoryConfig::capacity`] of `transitions` (oldest first) as
    /// `lam` standardises frames; `None` when there are none.
    pub fn new(
        lam: &LatentActionModel,
        transitions: &[Transition],
        cfg: MemoryConfig,
    ) -> Option<Self> {
        let transitions = &transitions[transitions.len().saturating_sub(cfg.capacity)..];
        let first = transitions.first()?;
        let [_, n, d] = first.from.dims();
        let device = first.from.device();
        let e = transitions.len();
        let width = first.actions.len();
        let from = Tensor::cat(
            transitions
                .iter()
                .map(|t| lam.normalize(t.from.clone()))
                .collect(),
            0,
        );
        let to = Tensor::cat(
            transitions
                .iter()
                .map(|t| lam.normalize(t.to.clone()))
                .collect(),
            0,
        );
        let actions: Vec<f32> = transitions
            .iter()
            .flat_map(|t| t.actions.iter().copied())
            .collect();
        assert_eq!(
            actions.len(),
            e * width,
            "every block holds {width} numbers"
        );
        Some(Self {
            cfg,
            change: (to - from.clone()).reshape([e, n * d]),
            from: from.mean_dim(1).reshape([e, d]),
            actions: Tensor::from_data(TensorData::new(actions, [e, width]), &device),
        })
    }

    /// Blocks remembered.
    pub fn len(&self) -> usize {
        self.from.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight `[C, E]` of each remembered block for steps from pooled frames `pooled`
    /// `[C, D]` under robot actions `actions` `[C, kA]`.
    fn weights(&self, pooled: Tensor<2>, actions: Tensor<2>) -> Tensor<2> {
        let d = pooled.dims()[1] as f32;
        let w = actions.dims()[1] as f32;
        let frames = mean_square_distance(pooled, self.from.clone()) / d;
        let acts = mean_square_distance(actions, self.actions.clone()) / w;
        (frames / self.cfg.frame_scale + acts / self.cfg.action_scale)
            .neg()
            .exp()
    }

    /// The prediction `pred` `[C, N, D]` of steps from frames `from` `[C, N, D]` under robot
    /// actions `actions` `[C, kA]`, blended toward the remembered outcome: with weights w_e,
    /// a share min(1, sum w_e) of the way to `from` plus the w-weighted mean of the
    /// remembered changes.
    pub fn correct(&self, from: &Tensor<3>, actions: Tensor<2>, pred: Tensor<3>) -> Tensor<3> {
        let [c, n, d] = pred.dims();
        let w = self.weights(from.clone().mean_dim(1).reshape([c, d]), actions);
        let total = w.clone().sum_dim(1); // [C, 1]
        let share = total.clone().clamp_max(1.0);
        let change = w.matmul(self.change.clone()) / total.clamp_min(1e-12); // [C, N * D]
        let remembered = from.clone() + change.reshape([c, n, d]);
        let share = share.reshape([c, 1, 1]);
        pred.clone() + (remembered - pred) * share
    }
}

/// Squared Euclidean distances `[A, B]` between the rows of `a` `[A, W]` and `b` `[B, W]`.
fn mean_square_distance(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    let aa = a.clone().square().sum_dim(1); // [A, 1]
    let bb = b.clone().square().sum_dim(1).transpose(); // [1, B]
    (aa + bb - a.matmul(b.transpose()) * 2.0).clamp_min(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lam_model::config::LamConfig;

    fn tokens(v: &[f32], device: &Device) -> Tensor<3> {
        Tensor::from_data(TensorData::new(v.to_vec(), [1, 1, v.len()]), device)
    }

    fn host(t: Tensor<3>) -> Vec<f32> {
        crate::host(t)
    }

    /// An untrained tiny model on `d`-channel frames (no standardisation: frames as given).
    fn model(d: usize, device: &Device) -> LatentActionModel {
        let mut cfg = LamConfig::preset("tiny").unwrap();
        cfg.model.embed_dim = d;
        lam_model::train::init_model(&cfg, device)
    }

    /// Kernels narrow enough that unlike blocks weigh nothing to the printed digits.
    fn narrow() -> MemoryConfig {
        MemoryConfig {
            frame_scale: 0.01,
            action_scale: 0.05,
            ..Default::default()
        }
    }

    #[test]
    fn a_remembered_block_replaces_the_prediction_and_an_unlike_one_leaves_it() {
        let device = Device::flex();
        let lam = model(3, &device);
        // The robot pressed right from the origin and did not move.
        let stuck = Transition {
            from: tokens(&[0.0, 0.0, 1.0], &device),
            actions: vec![1.0, 0.0],
            to: tokens(&[0.0, 0.0, 1.0], &device),
        };
        let memory = EpisodeMemory::new(&lam, &[stuck], narrow()).unwrap();
        assert_eq!(memory.len(), 1);
        // Three candidates from the same frame, all predicted to move right by 0.5: the same
        // push, the opposite one, and the same push from a frame two units away.
        let from = Tensor::cat(
            vec![
                tokens(&[0.0, 0.0, 1.0], &device),
                tokens(&[0.0, 0.0, 1.0], &device),
                tokens(&[2.0, 0.0, 1.0], &device),
            ],
            0,
        );
        let pred = from.clone() + tokens(&[0.5, 0.0, 0.0], &device);
        let actions = Tensor::<2>::from_data(
            TensorData::new(vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.0], [3, 2]),
            &device,
        );
        let out = host(memory.correct(&from, actions, pred));
        // The same push from the same frame: the remembered outcome (no motion).
        assert!(out[0].abs() < 1e-5, "{out:?}");
        // Unlike pushes, or the same push elsewhere: the model's prediction.
        assert!((out[3] - 0.5).abs() < 1e-5, "{out:?}");
        assert!((out[6] - 2.5).abs() < 1e-5, "{out:?}");
        // Channels that did not change stay.
        assert!(
            out.iter()
                .skip(2)
                .step_by(3)
                .all(|v| (v - 1.0).abs() < 1e-5)
        );
    }

    #[test]
    fn two_remembered_blocks_share_the_weight_and_the_scales_are_checked() {
        let device = Device::flex();
        let lam = model(2, &device);
        // The same push from the same frame, once moving 0.2 and once 0.4.
        let t = |dx: f32| Transition {
            from: tokens(&[0.0, 0.0], &device),
            actions: vec![0.0, 1.0],
            to: tokens(&[dx, 0.0], &device),
        };
        let memory = EpisodeMemory::new(&lam, &[t(0.2), t(0.4)], narrow()).unwrap();
        let from = tokens(&[0.0, 0.0], &device);
        let pred = tokens(&[1.0, 0.0], &device);
        let a = Tensor::<2>::from_data(TensorData::new(vec![0.0, 1.0], [1, 2]), &device);
        let out = host(memory.correct(&from, a.clone(), pred.clone()));
        assert!((out[0] - 0.3).abs() < 1e-5, "{out:?}");
        // With room for one block, the newer one alone is what the memory holds.
        let one = MemoryConfig {
            capacity: 1,
            ..narrow()
        };
        let memory = EpisodeMemory::new(&lam, &[t(0.2), t(0.4)], one).unwrap();
        assert_eq!(memory.len(), 1);
        let out = host(memory.correct(&from, a, pred));
        assert!((out[0] - 0.4).abs() < 1e-5, "{out:?}");
        assert!(EpisodeMemory::new(&lam, &[], MemoryConfig::default()).is_none());
        let e = MemoryConfig {
            capacity: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("memory capacity"), "{e}");
        let bad = MemoryConfig {
            frame_scale: 0.0,
            ..Default::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("memory frame scale"), "{e}");
    }
}
