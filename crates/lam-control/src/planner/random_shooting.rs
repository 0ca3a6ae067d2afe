//! Random shooting: one draw of `samples` sequences from the search space's prior; the one
//! with the lowest cost is the plan.

use super::PlannerConfig;
use super::sampling::Sampler;

pub(super) struct RandomShooting;

impl Sampler for RandomShooting {
    fn iterations(&self, _cfg: &PlannerConfig) -> usize {
        1
    }

    fn refit(
        &mut self,
        _cfg: &PlannerConfig,
        _seqs: &[f32],
        _costs: &[f32],
        _order: &[usize],
        _mean: &mut [f32],
        _std: &mut [f32],
    ) {
    }
}
