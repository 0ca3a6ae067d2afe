//! Inverse-dynamics model: z_t = g(s_t, s_t+1).
//!
//! Each frame's patch tokens are mean-pooled to one D-vector; the pooled pair
//! [pool(s_t), pool(s_t+1)] goes through a 3-layer GELU MLP (Linear-GELU-Linear-GELU-Linear).
//! For the `noisy` regulariser the last layer outputs 2d values, read as (mu, log sigma^2).
//! With `model.idm_input = "delta"` the MLP reads s_t+1 - s_t alone instead of the pair.
//! The IDM sees the future frame on purpose: it labels transitions for the world model.

use crate::fused;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct Idm {
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

/// What the IDM's head outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdmHead {
    /// z directly (sparse, vq).
    Point,
    /// mu and log sigma^2 (noisy).
    Gaussian,
}

/// What the IDM reads of a transition (`model.idm_input`).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IdmInput {
    /// Both pooled frames `[s_t, s_t+1]` (the paper's IDM).
    #[default]
    Pair,
    /// Their difference `s_t+1 - s_t` alone: the latent can say how the frame changed, not
    /// where things are.
    Delta,
}

/// Sizes of an [`Idm`] (a stage-1 run takes them from `model.*`:
/// [`crate::config::ModelConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdmConfig {
    /// Channels of a frame's pooled token, D.
    pub embed_dim: usize,
    /// Hidden width of the MLP (`model.idm_hidden`; paper: 1024).
    pub hidden: usize,
    /// Latent action dimension d.
    pub latent_dim: usize,
    /// Point latents or a Gaussian's mean and log-variance.
    pub head: IdmHead,
    /// Both frames or their difference.
    pub input: IdmInput,
}

impl IdmConfig {
    pub fn init(&self, device: &Device) -> Idm {
        let out = match self.head {
            IdmHead::Point => self.latent_dim,
            IdmHead::Gaussian => 2 * self.latent_dim,
        };
        let width = match self.input {
            IdmInput::Pair => 2 * self.embed_dim,
            IdmInput::Delta => self.embed_dim,
        };
        Idm {
            fc1: LinearConfig::new(width, self.hidden).init(device),
            fc2: LinearConfig::new(self.hidden, self.hidden).init(device),
            fc3: LinearConfig::new(self.hidden, out).init(device),
        }
    }
}

impl Idm {
    /// Mean over the token axis: `[B, T, N, D] -> [B, T, D]`.
    pub fn pool(frames: Tensor<4>) -> Tensor<3> {
        frames.mean_dim(2).squeeze_dim(2)
    }

    /// Raw head output for every consecutive pair of pooled frames:
    /// `[B, T, D] -> [B, T - 1, out]`.
    pub fn forward_pooled(&self, pooled: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = pooled.dims();
        let now = pooled.clone().slice(s![.., 0..t - 1, ..]);
        let next = pooled.slice(s![.., 1..t, ..]);
        self.forward_pair(now, next, b, t - 1, d)
    }

    /// Raw head output for explicit pairs `(s_t, s_t+1)`, each `[B, K, D]` pooled.
    pub fn forward_pair(
        &self,
        now: Tensor<3>,
        next: Tensor<3>,
        b: usize,
        k: usize,
        d: usize,
    ) -> Tensor<3> {
        // The first layer's width says which input the IDM was made for.
        let x = if self.fc1.weight.dims()[0] == d {
            (next - now).reshape([b * k, d])
        } else {
            Tensor::cat(vec![now, next], 2).reshape([b * k, 2 * d])
        };
        let x = fused::gelu(fused::linear(&self.fc1, x));
        let x = fused::gelu(fused::linear(&self.fc2, x));
        let out = fused::linear(&self.fc3, x);
        let o = out.dims()[1];
        out.reshape([b, k, o])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn idm(input: IdmInput, device: &Device) -> Idm {
        IdmConfig {
            embed_dim: 6,
            hidden: 16,
            latent_dim: 3,
            head: IdmHead::Point,
            input,
        }
        .init(device)
    }

    /// A delta IDM labels a transition by how the frame changed: moved elsewhere by the same
    /// amount, the latent is the same; the pair IDM's is not.
    #[test]
    fn delta_idm_reads_the_change_not_the_place() {
        let device = Device::default();
        let now = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let step = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let shift = Tensor::<3>::random([2, 4, 6], Distribution::Normal(0.0, 3.0), &device);
        let gap = |m: &Idm| {
            let here = m.forward_pair(now.clone(), now.clone() + step.clone(), 2, 4, 6);
            let there = m.forward_pair(
                now.clone() + shift.clone(),
                now.clone() + shift.clone() + step.clone(),
                2,
                4,
                6,
            );
            assert_eq!(here.dims(), [2, 4, 3]);
            (here - there).abs().max().into_scalar::<f32>()
        };
        assert!(gap(&idm(IdmInput::Delta, &device)) < 1e-5);
        assert!(gap(&idm(IdmInput::Pair, &device)) > 1e-3);
    }
}
