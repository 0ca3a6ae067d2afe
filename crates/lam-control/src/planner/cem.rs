//! The cross-entropy method: each iteration the Gaussian is refitted to the `elites` lowest-cost
//! candidates (per-entry mean and standard deviation, the latter at least `min_std`).

use super::PlannerConfig;
use super::sampling::Sampler;

pub(super) struct Cem;

impl Sampler for Cem {
    fn refit(
        &mut self,
        cfg: &PlannerConfig,
        seqs: &[f32],
        _costs: &[f32],
        order: &[usize],
        mean: &mut [f32],
        std: &mut [f32],
    ) {
        refit_to_elites(cfg, seqs, order, mean, std);
    }
}

/// Refits `mean` and `std` to the elites (the first `cfg.elites` of `order`); returns them.
pub(super) fn refit_to_elites<'a>(
    cfg: &PlannerConfig,
    seqs: &[f32],
    order: &'a [usize],
    mean: &mut [f32],
    std: &mut [f32],
) -> &'a [usize] {
    let width = mean.len();
    let k = cfg.elites.min(order.len());
    let elites = &order[..k];
    for j in 0..width {
        let m = elites.iter().map(|&e| seqs[e * width + j]).sum::<f32>() / k as f32;
        let v = elites
            .iter()
            .map(|&e| (seqs[e * width + j] - m).powi(2))
            .sum::<f32>()
            / k as f32;
        mean[j] = m;
        std[j] = v.sqrt().max(cfg.min_std as f32);
    }
    elites
}
