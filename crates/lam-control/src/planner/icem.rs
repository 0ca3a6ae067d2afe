//! iCEM: CEM with temporally coloured noise (power-law spectrum `icem_beta` over the horizon,
//! so candidates move smoothly), a population that shrinks by `icem_decay` each iteration
//! (never below twice the elites), a share `icem_keep` of the elites carried into the next
//! iteration, and the mean itself scored in the last.

use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::PlannerConfig;
use super::cem::refit_to_elites;
use super::sampling::Sampler;

#[derive(Default)]
pub(super) struct Icem {
    /// Elites of the last iteration carried into this one.
    carried: Vec<Vec<f32>>,
}

impl Sampler for Icem {
    fn population(&self, cfg: &PlannerConfig, it: usize) -> usize {
        ((cfg.samples as f64 / cfg.icem_decay.powi(it as i32)) as usize).max(2 * cfg.elites)
    }

    fn noise(
        &self,
        cfg: &PlannerConfig,
        rng: &mut StdRng,
        c: usize,
        h: usize,
        dim: usize,
    ) -> Vec<f32> {
        coloured_noise(rng, c, h, dim, cfg.icem_beta)
    }

    fn place(&self, seqs: &mut [f32], mean: &[f32], last: bool) {
        let width = mean.len();
        let c = seqs.len() / width;
        for (k, e) in self.carried.iter().enumerate().take(c) {
            seqs[k * width..(k + 1) * width].copy_from_slice(e);
        }
        if last {
            seqs[(c - 1) * width..].copy_from_slice(mean);
        }
    }

    fn refit(
        &mut self,
        cfg: &PlannerConfig,
        seqs: &[f32],
        _costs: &[f32],
        order: &[usize],
        mean: &mut [f32],
        std: &mut [f32],
    ) {
        let width = mean.len();
        let elites = refit_to_elites(cfg, seqs, order, mean, std);
        let keep = ((elites.len() as f64) * cfg.icem_keep).round() as usize;
        self.carried = elites[..keep]
            .iter()
            .map(|&e| seqs[e * width..(e + 1) * width].to_vec())
            .collect();
    }
}

/// Power-law ("coloured") Gaussian noise over the horizon for `rows` sequences of `dim`
/// channels: spectrum amplitude f^(-beta/2), inverse real DFT, unit variance per channel.
fn coloured_noise(rng: &mut StdRng, rows: usize, h: usize, dim: usize, beta: f64) -> Vec<f32> {
    let mut out = vec![0.0f32; rows * h * dim];
    let normal = |rng: &mut StdRng| -> f64 { StandardNormal.sample(rng) };
    for r in 0..rows {
        for j in 0..dim {
            let mut series = vec![0.0f64; h];
            for f in 1..=h / 2 + h % 2 {
                let amp = (f as f64).powf(-beta / 2.0);
                let (re, im) = (normal(rng) * amp, normal(rng) * amp);
                for (t, v) in series.iter_mut().enumerate() {
                    let phase = 2.0 * std::f64::consts::PI * f as f64 * t as f64 / h as f64;
                    *v += re * phase.cos() - im * phase.sin();
                }
            }
            let mean = series.iter().sum::<f64>() / h as f64;
            let var = series.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / h as f64;
            let scale = if var > 1e-12 { var.sqrt() } else { 1.0 };
            for t in 0..h {
                out[(r * h + t) * dim + j] = if h > 1 {
                    ((series[t] - mean) / scale) as f32
                } else {
                    normal(rng) as f32
                };
            }
        }
    }
    out
}
