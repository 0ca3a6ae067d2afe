//! The stage-1 latent action model: IDM + regulariser + world model, and its training loss.
//!
//! For a batch of clips `[B, T, N, D]`:
//!
//! 1. pool every frame's tokens, infer raw latents for the T-1 transitions with the IDM;
//! 2. regularise them into z (sparse: as is; noisy: z = mu + sigma * eps; vq: nearest code,
//!    straight-through);
//! 3. action dropout: each z_t is replaced by zeros with probability p;
//! 4. the world model predicts frames 1..T-1 from frames 0..T-2 and z (teacher forcing);
//! 5. loss = L1(prediction, target) + regulariser terms; with `model.rollout_weight` > 0, plus
//!    that weight times the L1 of a second pass fed its own predictions as context.
//!
//! All randomness (dropout mask, Gaussian noise) is passed in by the caller as host data so a
//! run is reproducible and resumable from its seed and step alone.

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::config::{Conditioning, LamConfig, RegularizerKind};
use crate::idm::{Idm, IdmConfig, IdmHead};
use crate::regularizer::{energy, kl_standard_normal, vcm, vector_quantize};
use crate::world_model::WorldModel;

#[derive(Module, Debug)]
pub struct LatentActionModel {
    pub idm: Idm,
    pub world_model: WorldModel,
    /// VQ codebook `[k, d]` (only for the `vq` regulariser).
    pub codebook: Option<Param<Tensor<2>>>,
    /// Per-channel mean and std `[D]` of the training tokens (only with
    /// `model.standardize`; fixed, not trained).
    pub token_mean: Option<Param<Tensor<1>>>,
    pub token_std: Option<Param<Tensor<1>>>,
    /// How the IDM's output becomes z (the run's `regularizer.kind`; not saved with the
    /// weights: the run's config sets it).
    #[module(skip)]
    pub regularizer: RegularizerKind,
}

/// Host-side randomness for one forward pass.
#[derive(Clone, Debug, Default)]
pub struct StepNoise {
    /// `[B * (T-1)]`: 1.0 keeps z_t, 0.0 drops it. Empty = keep all.
    pub keep: Vec<f32>,
    /// `[B * (T-1) * d]` standard normal draws for the noisy regulariser. Empty = use mu.
    pub eps: Vec<f32>,
}

/// Latents inferred for a batch, before action dropout.
pub struct Latents {
    /// `[B, T-1, d]` the z fed to the world model.
    pub z: Tensor<3>,
    /// noisy only: mean and log-variance `[M, d]`.
    pub mu_logvar: Option<(Tensor<2>, Tensor<2>)>,
    /// vq only: loss terms, chosen codes and the encoder outputs `[M, d]` before
    /// quantisation (what a dead code is reset to).
    pub vq: Option<(Tensor<1>, Tensor<1>, Vec<usize>, Tensor<2>)>,
}

/// Scalar loss terms of one step (each `[1]`); unused terms are zero.
pub struct LossTerms {
    pub total: Tensor<1>,
    pub pred: Tensor<1>,
    pub vcm_variance: Tensor<1>,
    pub vcm_covariance: Tensor<1>,
    pub vcm_mean: Tensor<1>,
    pub energy: Tensor<1>,
    pub kl: Tensor<1>,
    pub vq_codebook: Tensor<1>,
    pub vq_commitment: Tensor<1>,
}

impl LossTerms {
    /// Names and values, for logging.
    pub fn named(&self) -> Vec<(&'static str, f32)> {
        let v = |t: &Tensor<1>| t.clone().into_scalar::<f32>();
        vec![
            ("loss", v(&self.total)),
            ("pred", v(&self.pred)),
            ("vcm_variance", v(&self.vcm_variance)),
            ("vcm_covariance", v(&self.vcm_covariance)),
            ("vcm_mean", v(&self.vcm_mean)),
            ("energy", v(&self.energy)),
            ("kl", v(&self.kl)),
            ("vq_codebook", v(&self.vq_codebook)),
            ("vq_commitment", v(&self.vq_commitment)),
        ]
    }
}

/// Output of a training forward pass.
pub struct StepOutput {
    pub terms: LossTerms,
    /// `[B * (T-1), d]` latents (before dropout), for statistics.
    pub z: Tensor<2>,
    /// vq only: chosen code per latent.
    pub codes: Vec<usize>,
    /// vq only: `[B * (T-1), d]` encoder outputs before quantisation.
    pub vq_inputs: Option<Tensor<2>>,
}

impl LatentActionModel {
    pub fn new(cfg: &LamConfig, device: &Device) -> Self {
        let m = &cfg.model;
        let head = match cfg.regularizer.kind {
            RegularizerKind::Noisy => IdmHead::Gaussian,
            _ => IdmHead::Point,
        };
        // `from_tensor` asks for gradients only on an autodiff device, so a VQ model can be
        // made for inference too.
        let codebook = (cfg.regularizer.kind == RegularizerKind::Vq).then(|| {
            Param::from_tensor(Tensor::random(
                [cfg.regularizer.codebook_size, m.latent_dim],
                Distribution::Normal(0.0, 1.0),
                device,
            ))
        });
        let fixed = |v: f32| {
            m.standardize.then(|| {
                Param::initialized(
                    ParamId::new(),
                    Tensor::<1>::full([m.embed_dim], v, device).set_require_grad(false),
                )
            })
        };
        Self {
            idm: IdmConfig {
                embed_dim: m.embed_dim,
                hidden: m.idm_hidden,
                latent_dim: m.latent_dim,
                head,
                input: m.idm_input,
            }
            .init(device),
            world_model: m.world_model().init(device),
            codebook,
            token_mean: fixed(0.0),
            token_std: fixed(1.0),
            regularizer: cfg.regularizer.kind,
        }
    }

    /// Encoder tokens `[..., D]` as the model sees them: standardised per channel with
    /// `model.standardize`, unchanged otherwise. Every entry point from encoder tokens
    /// (training clips, evaluation, pseudo-labels, planning frames and goals) goes through
    /// this.
    pub fn normalize<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match (&self.token_mean, &self.token_std) {
            (Some(mean), Some(std)) => {
                (x - mean.val().unsqueeze::<D>()) / std.val().unsqueeze::<D>()
            }
            _ => x,
        }
    }

    /// Sets the standardisation statistics (per-channel mean and std, host values).
    pub fn with_token_stats(mut self, mean: &[f32], std: &[f32]) -> Self {
        let device = self.world_model.in_proj.weight.device();
        let set = |p: Option<Param<Tensor<1>>>, v: &[f32]| {
            p.map(|p| {
                p.map(|_| {
                    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), &device)
                        .set_require_grad(false)
                })
            })
        };
        self.token_mean = set(self.token_mean, mean);
        self.token_std = set(self.token_std, std);
        self
    }

    /// Latents for explicit pairs of pooled frames `[B, K, D]`. With `eps` empty the noisy
    /// regulariser uses the mean (evaluation); otherwise z = mu + exp(logvar / 2) * eps.
    pub fn infer(&self, now: Tensor<3>, next: Tensor<3>, eps: &[f32]) -> Latents {
        let [b, k, d] = now.dims();
        let raw = self.idm.forward_pair(now, next, b, k, d);
        self.regularize(raw, eps)
    }

    /// Latents for every consecutive pair of frames of `[B, T, N, D]`.
    pub fn infer_clip(&self, frames: Tensor<4>, eps: &[f32]) -> Latents {
        let raw = self.idm.forward_pooled(Idm::pool(frames));
        self.regularize(raw, eps)
    }

    fn regularize(&self, raw: Tensor<3>, eps: &[f32]) -> Latents {
        let [b, k, o] = raw.dims();
        let device = raw.device();
        match self.regularizer {
            RegularizerKind::Sparse => Latents {
                z: raw,
                mu_logvar: None,
                vq: None,
            },
            RegularizerKind::Noisy => {
                let d = o / 2;
                let mu = raw.clone().slice(s![.., .., 0..d]).reshape([b * k, d]);
                let logvar = raw.slice(s![.., .., d..o]).reshape([b * k, d]);
                let z = if eps.is_empty() {
                    mu.clone()
                } else {
                    let eps =
                        Tensor::<2>::from_data(TensorData::new(eps.to_vec(), [b * k, d]), &device);
                    mu.clone() + logvar.clone().mul_scalar(0.5).exp() * eps
                };
                Latents {
                    z: z.reshape([b, k, d]),
                    mu_logvar: Some((mu, logvar)),
                    vq: None,
                }
            }
            RegularizerKind::Vq => {
                let codebook = self
                    .codebook
                    .as_ref()
                    .expect("vq model has a codebook")
                    .val();
                let inputs = raw.reshape([b * k, o]);
                let q = vector_quantize(inputs.clone(), codebook);
                Latents {
                    z: q.z.reshape([b, k, o]),
                    mu_logvar: None,
                    vq: Some((q.codebook_loss, q.commitment_loss, q.indices, inputs)),
                }
            }
        }
    }

    /// Training forward pass and loss on clips `[B, T, N, D]` of a latent-action model.
    pub fn forward_loss(&self, cfg: &LamConfig, clips: Tensor<4>, noise: &StepNoise) -> StepOutput {
        self.forward_loss_with(cfg, clips, None, noise)
    }

    /// Training forward pass and loss. With `model.conditioning = "action"` the world model is
    /// conditioned on `actions` `[B, T-1, A]` (required) instead of IDM latents, and the loss
    /// is the prediction loss alone.
    pub fn forward_loss_with(
        &self,
        cfg: &LamConfig,
        clips: Tensor<4>,
        actions: Option<Tensor<3>>,
        noise: &StepNoise,
    ) -> StepOutput {
        self.forward_loss_to(cfg, clips, None, actions, noise)
    }

    /// [`forward_loss_with`](Self::forward_loss_with) with the world model's targets given
    /// apart (`[B, T-1, N, D]`, frames 1..T as another encoder saw them: end-to-end training
    /// with an EMA target encoder); `None` takes them from `clips`.
    pub fn forward_loss_to(
        &self,
        cfg: &LamConfig,
        clips: Tensor<4>,
        targets: Option<Tensor<4>>,
        actions: Option<Tensor<3>>,
        noise: &StepNoise,
    ) -> StepOutput {
        let reg = &cfg.regularizer;
        let clips = self.normalize(clips);
        let [b, t, _, _] = clips.dims();
        let device = clips.device();
        let zero = || Tensor::<1>::zeros([1], &device);
        let conditioned_on_actions = cfg.model.conditioning == Conditioning::Action;
        let latents = if conditioned_on_actions {
            Latents {
                z: actions.expect("an action-conditioned world model needs the clips' actions"),
                mu_logvar: None,
                vq: None,
            }
        } else {
            self.infer_clip(clips.clone(), &noise.eps)
        };
        let d = latents.z.dims()[2];
        let z_flat = latents.z.clone().reshape([b * (t - 1), d]);

        let z_in = if noise.keep.is_empty() {
            latents.z.clone()
        } else {
            let keep =
                Tensor::<3>::from_data(TensorData::new(noise.keep.clone(), [b, t - 1, 1]), &device);
            latents.z.clone() * keep
        };
        let context = clips.clone().slice(s![.., 0..t - 1, .., ..]);
        let target = match targets {
            Some(targets) => self.normalize(targets),
            None => clips.slice(s![.., 1..t, .., ..]),
        };
        let pred_frames = self.world_model.forward(context.clone(), z_in.clone());
        let pred = (pred_frames.clone() - target.clone()).abs().mean();
        let mut rollout = zero();
        if cfg.model.rollout_weight > 0.0 && t >= 3 {
            // Self-fed pass: context frames 1..T-2 are the model's own predictions of them, so
            // frame k+1 is predicted from the true first frame and predicted frames 1..k.
            let fed = Tensor::cat(
                vec![
                    context.slice(s![.., 0..1, .., ..]),
                    pred_frames.slice(s![.., 0..t - 2, .., ..]),
                ],
                1,
            );
            let again = self.world_model.forward(fed, z_in);
            rollout = (again.slice(s![.., 1..t - 1, .., ..])
                - target.slice(s![.., 1..t - 1, .., ..]))
            .abs()
            .mean()
            .mul_scalar(cfg.model.rollout_weight);
        }

        let (mut vcm_variance, mut vcm_covariance, mut vcm_mean) = (zero(), zero(), zero());
        let (mut energy_t, mut kl, mut vq_codebook, mut vq_commitment) =
            (zero(), zero(), zero(), zero());
        let mut codes = Vec::new();
        let mut vq_inputs = None;
        let reg_total = match reg.kind {
            _ if conditioned_on_actions => zero(),
            RegularizerKind::Sparse => {
                let v = vcm(z_flat.clone());
                vcm_variance = v.variance;
                vcm_covariance = v.covariance;
                vcm_mean = v.mean;
                energy_t = energy(z_flat.clone(), reg.l1, reg.l2);
                vcm_variance.clone().mul_scalar(reg.vcm_variance)
                    + vcm_covariance.clone().mul_scalar(reg.vcm_covariance)
                    + vcm_mean.clone().mul_scalar(reg.vcm_mean)
                    + energy_t.clone()
            }
            RegularizerKind::Noisy => {
                let (mu, logvar) = latents
                    .mu_logvar
                    .expect("noisy latents carry mu and logvar");
                kl = kl_standard_normal(mu, logvar);
                kl.clone().mul_scalar(reg.beta)
            }
            RegularizerKind::Vq => {
                let (cb, commit, idx, inputs) = latents.vq.expect("vq latents carry their losses");
                vq_codebook = cb;
                vq_commitment = commit;
                codes = idx;
                vq_inputs = Some(inputs);
                vq_codebook.clone() + vq_commitment.clone().mul_scalar(reg.commitment)
            }
        };
        let total = pred.clone() + reg_total + rollout;
        StepOutput {
            terms: LossTerms {
                total,
                pred,
                vcm_variance,
                vcm_covariance,
                vcm_mean,
                energy: energy_t,
                kl,
                vq_codebook,
                vq_commitment,
            },
            z: z_flat,
            codes,
            vq_inputs,
        }
    }
}
