//! The jointly trained pair of the pretraining stage: policy + world model, and its loss.
//!
//! For a sample at time t: the policy sees frames t-H+1..t and the instruction and emits the
//! latent chunk z_t..z_t+n-1; the RSSM observes frames x_t..x_t+n with actions z (the action
//! between x_t+i and x_t+i+1 is z_t+i) and reconstructs every frame. Loss (eq. 5 of the
//! paper): per-frame squared error summed over pixels, averaged over samples and frames,
//! plus beta times the balanced KL with free bits (see [`crate::rssm::kl_balanced`]).

use burn::prelude::*;

use crate::config::LawmConfig;
use crate::policy::Policy;
use crate::rssm::{Rssm, kl_balanced};

#[derive(Module, Debug)]
pub struct Lawm {
    pub policy: Policy,
    pub world_model: Rssm,
}

/// Host-drawn randomness of one pretraining step.
#[derive(Clone, Debug, Default)]
pub struct PretrainNoise {
    /// Starting noise of the diffusion head's DDIM (`B*n*d` values; empty for the MLP head).
    pub policy: Vec<f32>,
    /// Gumbel(0, 1) values for the RSSM's posterior samples (`B*(n+1)*G*C`).
    pub gumbel: Vec<f32>,
}

/// Loss terms of one pretraining step.
pub struct PretrainOut {
    pub loss: Tensor<1>,
    /// Squared error summed over a frame's pixels, averaged over frames.
    pub recon: Tensor<1>,
    /// Mean squared error per pixel (for logs).
    pub mse: Tensor<1>,
    pub dyn_kl: Tensor<1>,
    pub rep_kl: Tensor<1>,
    pub raw_kl: Tensor<1>,
    /// The latent chunk `[B, n, d]`.
    pub latents: Tensor<3>,
}

impl LawmConfig {
    /// The policy and the world model, both on latent actions.
    pub fn init(&self, device: &Device) -> Lawm {
        Lawm {
            policy: self.policy.init(self.policy.latent_dim, device),
            world_model: self.world_model.init(
                self.policy.image_size,
                self.policy.latent_dim,
                device,
            ),
        }
    }
}

impl Lawm {
    /// `policy_frames` `[B, H, 3, S, S]`, `instr` `[B, I]`, `wm_frames` `[B, n+1, 3, S, S]`.
    pub fn forward_loss(
        &self,
        cfg: &LawmConfig,
        policy_frames: Tensor<5>,
        instr: Tensor<2>,
        wm_frames: Tensor<5>,
        noise: &PretrainNoise,
    ) -> PretrainOut {
        let z = self
            .policy
            .chunk(&cfg.policy, policy_frames, instr, &noise.policy);
        let obs = self
            .world_model
            .observe(wm_frames.clone(), z.clone(), &noise.gumbel);
        let [b, t, c, h, w] = wm_frames.dims();
        let sq = (obs.recon - wm_frames).powi_scalar(2);
        let mse = sq.clone().mean();
        let recon = sq.sum() / (b * t) as f64;
        let _ = (c, h, w);
        let wm = &cfg.world_model;
        let kl = kl_balanced(
            obs.post_logp,
            obs.prior_logp,
            wm.free_bits,
            wm.dyn_scale,
            wm.rep_scale,
        );
        PretrainOut {
            loss: recon.clone() + kl.loss * wm.kl_weight,
            recon,
            mse,
            dyn_kl: kl.dyn_kl,
            rep_kl: kl.rep_kl,
            raw_kl: kl.raw_kl,
            latents: z,
        }
    }
}
