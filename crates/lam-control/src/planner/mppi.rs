//! MPPI: the Gaussian is refitted to every candidate weighted by `exp(-(cost - min) /
//! temperature)` (mean and standard deviation, the latter at least `min_std`).

use super::PlannerConfig;
use super::sampling::Sampler;

pub(super) struct Mppi;

impl Sampler for Mppi {
    fn refit(
        &mut self,
        cfg: &PlannerConfig,
        seqs: &[f32],
        costs: &[f32],
        order: &[usize],
        mean: &mut [f32],
        std: &mut [f32],
    ) {
        let (width, c) = (mean.len(), costs.len());
        let cmin = costs[order[0]];
        let w: Vec<f64> = costs
            .iter()
            .map(|&x| (-((x - cmin) as f64) / cfg.temperature).exp())
            .collect();
        let total: f64 = w.iter().sum();
        for j in 0..width {
            let m = (0..c)
                .map(|i| w[i] * seqs[i * width + j] as f64)
                .sum::<f64>()
                / total;
            let v = (0..c)
                .map(|i| w[i] * (seqs[i * width + j] as f64 - m).powi(2))
                .sum::<f64>()
                / total;
            mean[j] = m as f32;
            std[j] = (v.sqrt() as f32).max(cfg.min_std as f32);
        }
    }
}
