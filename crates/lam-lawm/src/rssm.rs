//! The DreamerV3-style recurrent state-space world model (RSSM).
//!
//! Read top to bottom:
//!
//! 1. **Image encoder**: three stride-2 4x4 convolutions (c, 2c, 4c) with SiLU, flattened
//!    and projected to an embedding e_t.
//! 2. **Recurrent state** h_t = GRU(h_t-1, SiLU(LN(Linear([s_t-1, a_t-1])))), h_0 = 0.
//! 3. **Prior** p(s_t | h_t) and **posterior** q(s_t | h_t, e_t): MLPs giving logits of G
//!    categorical groups of C classes, mixed with 1% uniform (unimix).
//! 4. **Stochastic state** s_t: a one-hot sample of the posterior per group (Gumbel-max with
//!    host-drawn noise) with straight-through gradients, `onehot + p - sg(p)`.
//! 5. **Decoder**: Linear([h_t, s_t]) to a 4c x S/8 x S/8 map, three stride-2 transposed
//!    convolutions back to 3 x S x S.
//!
//! [`Rssm::observe`] runs the posterior path over frames x_0..x_T-1 and actions
//! a_0..a_T-2 (the policy's latent chunk), as in DreamerV3's training. [`kl_balanced`] is
//! the KL loss with free bits and KL balancing; [`WmLoss`] combines it with the
//! reconstruction.

use burn::nn::conv::{Conv2d, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Gru, GruConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu, softmax};

use crate::config::WorldModelConfig;
use crate::policy::down_conv;

#[derive(Module, Debug)]
pub struct ImageEncoder {
    pub convs: Vec<Conv2d>,
    pub proj: Linear,
}

impl ImageEncoder {
    fn new(cfg: &WorldModelConfig, image_size: usize, device: &Device) -> Self {
        let c = cfg.channels;
        let widths = [3, c, 2 * c, 4 * c];
        let side = image_size / 8;
        Self {
            convs: (0..3)
                .map(|i| down_conv(widths[i], widths[i + 1], device))
                .collect(),
            proj: LinearConfig::new(4 * c * side * side, cfg.embed).init(device),
        }
    }

    /// `[N, 3, S, S]` -> `[N, embed]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for conv in &self.convs {
            x = silu(conv.forward(x));
        }
        let [n, c, h, w] = x.dims();
        self.proj.forward(x.reshape([n, c * h * w]))
    }
}

#[derive(Module, Debug)]
pub struct ImageDecoder {
    pub proj: Linear,
    pub deconvs: Vec<ConvTranspose2d>,
    pub channels: usize,
    pub side: usize,
}

impl ImageDecoder {
    fn new(cfg: &WorldModelConfig, feat: usize, image_size: usize, device: &Device) -> Self {
        let c = cfg.channels;
        let widths = [4 * c, 2 * c, c, 3];
        let side = image_size / 8;
        Self {
            proj: LinearConfig::new(feat, 4 * c * side * side).init(device),
            deconvs: (0..3)
                .map(|i| {
                    ConvTranspose2dConfig::new([widths[i], widths[i + 1]], [4, 4])
                        .with_stride([2, 2])
                        .with_padding([1, 1])
                        .init(device)
                })
                .collect(),
            channels: 4 * c,
            side,
        }
    }

    /// `[N, feat]` -> `[N, 3, S, S]`.
    pub fn forward(&self, feat: Tensor<2>) -> Tensor<4> {
        let n = feat.dims()[0];
        let mut x = silu(self.proj.forward(feat)).reshape([n, self.channels, self.side, self.side]);
        let last = self.deconvs.len() - 1;
        for (i, d) in self.deconvs.iter().enumerate() {
            x = d.forward(x);
            if i < last {
                x = silu(x);
            }
        }
        x
    }
}

/// Two-layer MLP to categorical logits.
#[derive(Module, Debug)]
pub struct LogitsNet {
    pub fc: Linear,
    pub norm: LayerNorm,
    pub out: Linear,
}

impl LogitsNet {
    fn new(d_in: usize, hidden: usize, d_out: usize, device: &Device) -> Self {
        Self {
            fc: LinearConfig::new(d_in, hidden).init(device),
            norm: LayerNormConfig::new(hidden).init(device),
            out: LinearConfig::new(hidden, d_out).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(silu(self.norm.forward(self.fc.forward(x))))
    }
}

#[derive(Module, Debug)]
pub struct Rssm {
    pub encoder: ImageEncoder,
    pub img_in: Linear,
    pub img_norm: LayerNorm,
    pub gru: Gru,
    pub prior: LogitsNet,
    pub posterior: LogitsNet,
    pub decoder: ImageDecoder,
    pub groups: usize,
    pub classes: usize,
    pub deter: usize,
    pub embed: usize,
    pub unimix: f64,
}

/// What the posterior path produces for a batch of sequences.
pub struct Observed {
    /// Reconstructions `[B, T, 3, S, S]`.
    pub recon: Tensor<5>,
    /// Posterior log-probabilities (unimix applied) `[B, T, G, C]`.
    pub post_logp: Tensor<4>,
    /// Prior log-probabilities `[B, T, G, C]`.
    pub prior_logp: Tensor<4>,
}

impl WorldModelConfig {
    /// A world model of `image_size`-pixel square frames, conditioned on `action_dim`-D
    /// actions (or latent actions).
    pub fn init(&self, image_size: usize, action_dim: usize, device: &Device) -> Rssm {
        let cfg = self;
        let stoch = cfg.groups * cfg.classes;
        Rssm {
            encoder: ImageEncoder::new(cfg, image_size, device),
            img_in: LinearConfig::new(stoch + action_dim, cfg.hidden).init(device),
            img_norm: LayerNormConfig::new(cfg.hidden).init(device),
            gru: GruConfig::new(cfg.hidden, cfg.deter, true).init(device),
            prior: LogitsNet::new(cfg.deter, cfg.hidden, stoch, device),
            posterior: LogitsNet::new(cfg.deter + cfg.embed, cfg.hidden, stoch, device),
            decoder: ImageDecoder::new(cfg, cfg.deter + stoch, image_size, device),
            groups: cfg.groups,
            classes: cfg.classes,
            deter: cfg.deter,
            embed: cfg.embed,
            unimix: cfg.unimix,
        }
    }
}

impl Rssm {
    /// Log-probabilities `[B, G, C]` of logits `[B, G*C]` after the uniform mixture.
    pub fn unimix_logp(&self, logits: Tensor<2>) -> Tensor<3> {
        let b = logits.dims()[0];
        let logits = logits.reshape([b, self.groups, self.classes]);
        if self.unimix <= 0.0 {
            return log_softmax(logits, 2);
        }
        let p = softmax(logits, 2) * (1.0 - self.unimix) + self.unimix / self.classes as f64;
        p.log()
    }

    /// One-hot sample `[B, G*C]` of `logp` `[B, G, C]` by Gumbel-max with `gumbel`
    /// (`B*G*C` Gumbel(0, 1) values), with straight-through gradients to the probabilities.
    pub fn sample_st(&self, logp: Tensor<3>, gumbel: &[f32]) -> Tensor<2> {
        let [b, g, c] = logp.dims();
        let noise =
            Tensor::<3>::from_data(TensorData::new(gumbel.to_vec(), [b, g, c]), &logp.device());
        let y = logp.clone().detach() + noise;
        let hard = y.clone().equal(y.max_dim(2).repeat_dim(2, c)).float();
        let p = logp.exp();
        (hard + p.clone() - p.detach()).reshape([b, g * c])
    }

    /// One recurrent step: h_t from h_t-1, s_t-1 and a_t-1.
    pub fn step(&self, h: Tensor<2>, s: Tensor<2>, a: Tensor<2>) -> Tensor<2> {
        let x = silu(
            self.img_norm
                .forward(self.img_in.forward(Tensor::cat(vec![s, a], 1))),
        );
        self.gru
            .forward(x.unsqueeze_dim::<3>(1), Some(h))
            .squeeze_dim::<2>(1)
    }

    /// Prior log-probabilities `[B, G, C]` from h_t.
    pub fn prior_logp(&self, h: Tensor<2>) -> Tensor<3> {
        self.unimix_logp(self.prior.forward(h))
    }

    /// Posterior log-probabilities `[B, G, C]` from h_t and the image embedding e_t.
    pub fn posterior_logp(&self, h: Tensor<2>, e: Tensor<2>) -> Tensor<3> {
        self.unimix_logp(self.posterior.forward(Tensor::cat(vec![h, e], 1)))
    }

    /// Posterior path over `frames` `[B, T, 3, S, S]` and `actions` `[B, T-1, A]`;
    /// `gumbel` holds `B*T*G*C` Gumbel(0, 1) values (time-major blocks of `B*G*C`).
    pub fn observe(&self, frames: Tensor<5>, actions: Tensor<3>, gumbel: &[f32]) -> Observed {
        let [b, t, c, s1, s2] = frames.dims();
        let device = frames.device();
        let (g, k) = (self.groups, self.classes);
        let block = b * g * k;
        assert_eq!(
            gumbel.len(),
            t * block,
            "observe needs B*T*G*C Gumbel values"
        );
        let embed = self
            .encoder
            .forward(frames.clone().reshape([b * t, c, s1, s2]))
            .reshape([b, t, self.embed]);
        let mut h = Tensor::<2>::zeros([b, self.deter], &device);
        let mut s = Tensor::<2>::zeros([b, g * k], &device);
        let (mut feats, mut posts, mut priors) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..t {
            if i > 0 {
                let a = actions.clone().slice(s![.., i - 1..i]).squeeze_dim::<2>(1);
                h = self.step(h, s, a);
            }
            let prior = self.prior_logp(h.clone());
            let e = embed.clone().slice(s![.., i..i + 1]).squeeze_dim::<2>(1);
            let post = self.posterior_logp(h.clone(), e);
            s = self.sample_st(post.clone(), &gumbel[i * block..(i + 1) * block]);
            feats.push(Tensor::cat(vec![h.clone(), s.clone()], 1).unsqueeze_dim::<3>(1));
            posts.push(post.unsqueeze_dim::<4>(1));
            priors.push(prior.unsqueeze_dim::<4>(1));
        }
        let feats = Tensor::cat(feats, 1);
        let f = feats.dims()[2];
        let recon = self
            .decoder
            .forward(feats.reshape([b * t, f]))
            .reshape([b, t, c, s1, s2]);
        Observed {
            recon,
            post_logp: Tensor::cat(posts, 1),
            prior_logp: Tensor::cat(priors, 1),
        }
    }
}

/// KL terms of one batch, already averaged.
pub struct KlTerms {
    /// Total weighted KL loss `dyn_scale * dyn + rep_scale * rep`.
    pub loss: Tensor<1>,
    /// max(free, KL(sg(post) || prior)) averaged over samples.
    pub dyn_kl: Tensor<1>,
    /// max(free, KL(post || sg(prior))) averaged over samples.
    pub rep_kl: Tensor<1>,
    /// Raw KL(post || prior) averaged over samples (no clipping; for logs).
    pub raw_kl: Tensor<1>,
}

/// DreamerV3's KL loss with free bits and balancing, from log-probabilities `[..., G, C]`
/// (rank 4: `[B, T, G, C]`). The KL of a sample sums over groups and classes; each term is
/// clipped below at `free_bits` per sample, then averaged over samples.
pub fn kl_balanced(
    post_logp: Tensor<4>,
    prior_logp: Tensor<4>,
    free_bits: f64,
    dyn_scale: f64,
    rep_scale: f64,
) -> KlTerms {
    let kl = |p: Tensor<4>, q: Tensor<4>| -> Tensor<2> {
        let [b, t, _, _] = p.dims();
        (p.clone().exp() * (p - q))
            .sum_dims_squeeze::<2, usize>(&[2, 3])
            .reshape([b, t])
    };
    let dyn_raw = kl(post_logp.clone().detach(), prior_logp.clone());
    let rep_raw = kl(post_logp.clone(), prior_logp.clone().detach());
    let raw_kl = dyn_raw.clone().detach().mean();
    let dyn_kl = dyn_raw.clamp_min(free_bits).mean();
    let rep_kl = rep_raw.clamp_min(free_bits).mean();
    KlTerms {
        loss: dyn_kl.clone() * dyn_scale + rep_kl.clone() * rep_scale,
        dyn_kl,
        rep_kl,
        raw_kl,
    }
}
