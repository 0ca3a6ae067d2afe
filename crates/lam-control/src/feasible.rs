//! Feasibility projection: a planned latent action replaced by the nearest one the unlabeled
//! video shows from frames like the one it starts at.
//!
//! A latent action says what happened. Pushed into a wall the agent does not move, so the
//! video holds no latent that moves it through one, and the controller (fitted on a few
//! labeled episodes, mostly in the open) maps a push toward the wall to the motion the push
//! makes in the open. The world model, given that latent, predicts the motion: the planner
//! sees a way through the wall, and the agent stays pressed against it.
//!
//! The video does show what can happen from each frame. This module keeps every transition of
//! the world model's training shards as its pooled model-space frame s_i and its IDM latent
//! z_i, and maps a latent z planned from frame s to the point nearest z in the convex hull of
//! the latents of s's K nearest frames. On open floor those latents go every way and z passes
//! nearly unchanged; against a wall none goes into it, and a push into the wall becomes the
//! part of it along the wall: the slide a frictionless contact makes, learned from video
//! alone. The hull holds every mixture of the neighbours' latents, so a slower motion or none
//! at all stays possible wherever a faster one was seen.
//!
//! Frames are compared after standardising each channel with the set's mean and std (channels
//! that never vary count for nothing). The hull projection is solved per query by pairwise
//! Frank-Wolfe on the mixture weights, which converges linearly on a simplex. The projection
//! runs on the host and is not differentiable: the sampling planners use it
//! (`lam plan eval --feasible SHARDS`).

use std::collections::HashSet;

use anyhow::{Result, ensure};
use burn::prelude::*;

use lam_data::ShardSet;
use lam_model::LatentActionModel;

use crate::controller::{Controller, Transitions as LabeledTransitions};
use crate::host;
use crate::support::{channel_mean_std, pooled_transitions};

/// Frank-Wolfe iterations per projection (each moves weight between two neighbours).
const ITERATIONS: usize = 200;

/// [`FeasibleSet::match_domain`]: a channel whose mean in the other domain lies further than
/// this many of the set's stds from the set's mean is left out of the distance.
pub const MATCH_MEAN: f32 = 1.0;
/// [`FeasibleSet::match_domain`]: ... or whose std there is more than this factor above or
/// below the set's.
pub const MATCH_SPREAD: f32 = 3.0;
/// [`FeasibleSet::change_only_matched_channels`]: a channel whose change spread in the
/// agent's domain differs by more than this factor from the video's is not projected.
pub const MATCH_CHANGE: f32 = 2.0;

/// Transitions of a world model's video: pooled model-space frames and their IDM latents.
pub struct FeasibleSet {
    /// Standardised frames `[M, D]`.
    frames: Tensor<2>,
    /// Their squared norms `[1, M]`.
    norms: Tensor<2>,
    /// Latents `[M, d]`, row-major on host.
    latents: Vec<f32>,
    /// With [`Self::restrict`]: an orthonormal basis `[r, d]` (row-major) of the latent
    /// directions the projection acts on, and the latents' coordinates in it `[M, r]`.
    basis: Option<(Vec<f32>, Vec<f32>)>,
    mean: Vec<f32>,
    std: Vec<f32>,
    dim: usize,
    latent_dim: usize,
}

/// A feasible set and the neighbours each projection reads.
#[derive(Clone, Copy)]
pub struct Feasible<'a> {
    pub set: &'a FeasibleSet,
    /// Nearest frames whose latents span the hull (K).
    pub neighbours: usize,
    /// What is projected: the planned latents, or the world model's predicted changes.
    pub target: Target,
}

/// What a [`Feasible`] projects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Each planned latent, onto the hull of the latents the video shows from like frames
    /// (the set holds IDM latents).
    Latent,
    /// Each predicted frame's change from the frame before, onto the hull of the changes the
    /// video shows from like frames (the set holds changes):
    /// what the video shows of walls, read in frames rather than in latents, so it holds
    /// across bodies whose latents differ.
    Change,
}

impl Feasible<'_> {
    /// Latents `[B, d]` planned from pooled model-space frames `[B, D]`, each replaced by the
    /// nearest point of its frame's hull.
    pub fn project(&self, frames: Tensor<2>, z: Tensor<2>) -> Tensor<2> {
        self.set.project(frames, z, self.neighbours)
    }

    /// Predicted frames `[B, N, D]` from frames `[B, N, D]` whose pooled change is replaced
    /// by the nearest change of the hull ([`Target::Change`]); each token moves by the pooled
    /// correction.
    pub fn correct_prediction(&self, from: &Tensor<3>, pred: Tensor<3>) -> Tensor<3> {
        let [b, _, d] = pred.dims();
        let p0 = from.clone().mean_dim(1).reshape([b, d]);
        let p1 = pred.clone().mean_dim(1).reshape([b, d]);
        let change = p1.clone() - p0.clone();
        let kept = self.set.project(p0, change.clone(), self.neighbours);
        pred + (kept - change).unsqueeze_dim::<3>(1)
    }
}

impl FeasibleSet {
    /// A set from frames `[M, D]` and latents `[M, d]` (row-major); rows that repeat a frame
    /// and latent exactly (overlapping clips) are kept once.
    pub fn new(
        frames: &[f32],
        latents: &[f32],
        dim: usize,
        latent_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        ensure!(
            dim > 0 && latent_dim > 0,
            "feasible set: frame and latent widths must be positive"
        );
        ensure!(
            frames.len() % dim == 0 && latents.len() % latent_dim == 0,
            "feasible set: {} frame values are not rows of {dim}, or {} latent values rows of \
             {latent_dim}",
            frames.len(),
            latents.len()
        );
        let m = frames.len() / dim;
        ensure!(
            latents.len() / latent_dim == m,
            "feasible set: {m} frames but {} latents",
            latents.len() / latent_dim
        );
        ensure!(m > 0, "feasible set: no transitions");
        if let Some(i) = frames.iter().chain(latents).position(|v| !v.is_finite()) {
            anyhow::bail!("feasible set: value {i} is not finite");
        }
        let mut seen = HashSet::new();
        let (mut fr, mut la) = (Vec::new(), Vec::new());
        for i in 0..m {
            let (f, z) = (
                &frames[i * dim..(i + 1) * dim],
                &latents[i * latent_dim..(i + 1) * latent_dim],
            );
            let key: Vec<u32> = f.iter().chain(z).map(|v| v.to_bits()).collect();
            if seen.insert(key) {
                fr.extend_from_slice(f);
                la.extend_from_slice(z);
            }
        }
        let m = fr.len() / dim;
        let (mean, std) = channel_mean_std(&fr, dim);
        // A channel that never varies says nothing about where a frame is.
        let std: Vec<f32> = std
            .into_iter()
            .map(|s| if s < 1e-6 { f32::INFINITY } else { s })
            .collect();
        let standard: Vec<f32> = fr
            .chunks_exact(dim)
            .flat_map(|row| {
                row.iter()
                    .zip(mean.iter().zip(&std))
                    .map(|(v, (mu, s))| (v - mu) / s)
            })
            .collect();
        let frames = Tensor::<2>::from_data(TensorData::new(standard, [m, dim]), device);
        let norms = frames.clone().square().sum_dim(1).reshape([1, m]);
        Ok(Self {
            frames,
            norms,
            latents: la,
            basis: None,
            mean,
            std,
            dim,
            latent_dim,
        })
    }

    /// Every transition of a shard set ([`transitions`]), as the world model trained on them:
    /// each frame with its IDM latent ([`Target::Latent`]) or with what it changed, pooled
    /// next frame minus frame ([`Target::Change`]).
    pub fn of_shards(
        lam: &LatentActionModel,
        data: &ShardSet,
        target: Target,
        device: &Device,
        batch: usize,
    ) -> Result<Self> {
        let t = transitions(lam, data, device, batch)?;
        match target {
            Target::Latent => Self::new(&t.frames, &t.latents, t.dim, t.latent_dim, device),
            Target::Change => Self::new(&t.frames, &t.changes, t.dim, t.dim, device),
        }
    }

    /// For a set of frame changes: project only the channels that count in the frame
    /// distance (not those [`Self::match_domain`] left out, nor constant ones), and, given
    /// the agent's own changes (`[M, D]` row-major), only those whose change spread there is
    /// within [`MATCH_CHANGE`] times the video's (a feature that follows the agent's body in
    /// one domain and not in the other). The rest move as the world model predicts them.
    /// Returns the channels projected.
    pub fn change_only_matched_channels(
        &mut self,
        domain_changes: Option<&[f32]>,
    ) -> Result<Vec<usize>> {
        let d = self.dim;
        ensure!(
            self.latent_dim == d,
            "feasible set: its latents are not frame changes"
        );
        let (_, own) = channel_mean_std(&self.latents, d);
        let other = match domain_changes {
            Some(c) => {
                ensure!(
                    !c.is_empty() && c.len() % d == 0,
                    "feasible set: {} domain change values are not rows of {d}",
                    c.len()
                );
                Some(channel_mean_std(c, d).1)
            }
            None => None,
        };
        let live: Vec<usize> = (0..d)
            .filter(|&c| self.std[c].is_finite())
            .filter(|&c| match &other {
                Some(o) => o[c] <= own[c] * MATCH_CHANGE && o[c] * MATCH_CHANGE >= own[c],
                None => true,
            })
            .collect();
        ensure!(!live.is_empty(), "feasible set: no channel to project");
        let basis: Vec<f32> = live
            .iter()
            .flat_map(|&c| (0..d).map(move |j| if j == c { 1.0 } else { 0.0 }))
            .collect();
        self.set_basis(basis);
        Ok(live)
    }

    /// Leaves out of the frame distance every channel whose values in another domain's
    /// frames (`[N, D]` row-major: the frames the agent will plan from, such as the robot's
    /// labeled episodes) do not look like the set's: a mean more than [`MATCH_MEAN`] of the
    /// set's stds from the set's mean, or a std outside [`MATCH_SPREAD`] times the set's. A
    /// part drawn differently in the two domains (the robot's body against the hand) is then
    /// not read as "far from every frame of the video". Returns the channels left out.
    pub fn match_domain(&mut self, frames: &[f32]) -> Result<Vec<usize>> {
        let d = self.dim;
        ensure!(
            !frames.is_empty() && frames.len() % d == 0,
            "feasible set: {} domain frame values are not rows of {d}",
            frames.len()
        );
        if let Some(i) = frames.iter().position(|v| !v.is_finite()) {
            anyhow::bail!("feasible set: domain frame value {i} is not finite");
        }
        let (mean, std) = channel_mean_std(frames, d);
        let dropped: Vec<usize> = (0..d)
            .filter(|&c| {
                let s = self.std[c];
                s.is_finite()
                    && ((mean[c] - self.mean[c]).abs() > MATCH_MEAN * s
                        || std[c] < s / MATCH_SPREAD
                        || std[c] > s * MATCH_SPREAD)
            })
            .collect();
        self.leave_out(&dropped);
        Ok(dropped)
    }

    /// Leaves channels out of the frame distance.
    pub fn leave_out(&mut self, dropped: &[usize]) {
        let d = self.dim;
        if dropped.is_empty() {
            return;
        }
        let keep: Vec<f32> = (0..d)
            .map(|c| if dropped.contains(&c) { 0.0 } else { 1.0 })
            .collect();
        for &c in dropped {
            self.std[c] = f32::INFINITY;
        }
        let device = self.frames.device();
        let keep = Tensor::<2>::from_data(TensorData::new(keep, [1, d]), &device);
        self.frames = self.frames.clone() * keep;
        self.norms = self
            .frames
            .clone()
            .square()
            .sum_dim(1)
            .reshape([1, self.len()]);
    }

    /// What the projection does to the labeled transitions of the agent's own domain
    /// (frames `[M, D]`, the IDM's latents of what happened `z_obs` and the controller's
    /// latents of the actions taken `z_ctrl`, all `[M, d]` row-major), with `k` neighbours.
    /// The projection should leave what happened in place and pull the controller's latent
    /// toward it where the two disagree most (the contacts).
    pub fn check(
        &self,
        frames: &[f32],
        z_obs: &[f32],
        z_ctrl: &[f32],
        k: usize,
        device: &Device,
    ) -> Result<FeasibleCheck> {
        let (d, dz) = (self.dim, self.latent_dim);
        let m = frames.len() / d;
        ensure!(
            m > 0 && frames.len() == m * d && z_obs.len() == m * dz && z_ctrl.len() == m * dz,
            "feasible check: {} frame values of width {d}, {} observed and {} controller latent \
             values of width {dz} do not make the same rows",
            frames.len(),
            z_obs.len(),
            z_ctrl.len()
        );
        let project = |z: &[f32]| -> Vec<f32> {
            let mut out = Vec::with_capacity(z.len());
            for start in (0..m).step_by(256) {
                let end = (start + 256).min(m);
                let f = Tensor::<2>::from_data(
                    TensorData::new(frames[start * d..end * d].to_vec(), [end - start, d]),
                    device,
                );
                let zt = Tensor::<2>::from_data(
                    TensorData::new(z[start * dz..end * dz].to_vec(), [end - start, dz]),
                    device,
                );
                out.extend(host(self.project(f, zt, k)));
            }
            out
        };
        let dist = |a: &[f32], b: &[f32]| -> Vec<f32> {
            a.chunks_exact(dz)
                .zip(b.chunks_exact(dz))
                .map(|(x, y)| {
                    x.iter()
                        .zip(y)
                        .map(|(p, q)| (p - q) * (p - q))
                        .sum::<f32>()
                        .sqrt()
                })
                .collect()
        };
        let norms: Vec<f32> = z_obs
            .chunks_exact(dz)
            .map(|z| dot(z, z).sqrt().max(1e-6))
            .collect();
        let moved: Vec<f32> = dist(&project(z_obs), z_obs)
            .iter()
            .zip(&norms)
            .map(|(a, n)| a / n)
            .collect();
        let before = dist(z_ctrl, z_obs);
        let after = dist(&project(z_ctrl), z_obs);
        // The tenth of the transitions where the controller misses most.
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&i, &j| before[j].total_cmp(&before[i]));
        let worst = &order[..m.div_ceil(10)];
        let mean =
            |v: &[f32], idx: &[usize]| idx.iter().map(|&i| v[i]).sum::<f32>() / idx.len() as f32;
        Ok(FeasibleCheck {
            transitions: m,
            moved_median: median(moved),
            controller_error: mean(&before, &order),
            projected_error: mean(&after, &order),
            worst_controller_error: mean(&before, worst),
            worst_projected_error: mean(&after, worst),
        })
    }

    /// Transitions kept.
    pub fn len(&self) -> usize {
        self.latents.len() / self.latent_dim
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn frame_dim(&self) -> usize {
        self.dim
    }

    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// Latents `[B, d]` planned from pooled model-space frames `[B, D]`, each replaced by the
    /// point nearest it in the convex hull of the latents of its frame's `k` nearest frames.
    pub fn project(&self, frames: Tensor<2>, z: Tensor<2>, k: usize) -> Tensor<2> {
        let [b, d] = frames.dims();
        let device = frames.device();
        let m = self.len();
        let k = k.clamp(1, m);
        let mean = Tensor::<1>::from_data(TensorData::new(self.mean.clone(), [d]), &device);
        let std = Tensor::<1>::from_data(TensorData::new(self.std.clone(), [d]), &device);
        let q = (frames - mean.unsqueeze()) / std.unsqueeze();
        // Squared distances up to each query's own norm, which does not change its order.
        let dist = self.norms.clone() - q.matmul(self.frames.clone().transpose()).mul_scalar(2.0);
        let dist = host(dist.reshape([b * m]));
        let z = host(z.reshape([b * self.latent_dim]));
        let dz = self.latent_dim;
        // The hull lives in the basis' coordinates when there is one (r numbers per latent),
        // else in the latents themselves.
        let (points, r) = match &self.basis {
            Some((basis, coords)) => (coords, basis.len() / dz),
            None => (&self.latents, dz),
        };
        let mut out = z.clone();
        let mut near: Vec<(f32, usize)> = Vec::with_capacity(k);
        let mut hull = vec![0f32; k * r];
        let (mut zr, mut pr) = (vec![0f32; r], vec![0f32; r]);
        for row in 0..b {
            nearest_rows(&dist[row * m..(row + 1) * m], k, &mut near);
            for (slot, &(_, i)) in near.iter().enumerate() {
                hull[slot * r..(slot + 1) * r].copy_from_slice(&points[i * r..(i + 1) * r]);
            }
            let zrow = &z[row * dz..(row + 1) * dz];
            let orow = &mut out[row * dz..(row + 1) * dz];
            match &self.basis {
                Some((basis, _)) => {
                    // z = B^T (B z) + rest: only the part in the basis is projected.
                    for (j, c) in zr.iter_mut().enumerate() {
                        *c = dot(&basis[j * dz..(j + 1) * dz], zrow);
                    }
                    nearest_in_hull(&hull, r, &zr, &mut pr);
                    for j in 0..r {
                        let shift = pr[j] - zr[j];
                        for (o, bv) in orow.iter_mut().zip(&basis[j * dz..(j + 1) * dz]) {
                            *o += shift * bv;
                        }
                    }
                }
                None => nearest_in_hull(&hull, dz, zrow, orow),
            }
        }
        Tensor::from_data(TensorData::new(out, [b, dz]), &device)
    }

    /// [`Self::check`] on a controller's labeled transitions: `z_ctrl` is what `ctrl` makes of
    /// each transition's action in its frame.
    pub fn check_controller(
        &self,
        ctrl: &Controller,
        t: &LabeledTransitions,
        k: usize,
        device: &Device,
    ) -> Result<FeasibleCheck> {
        let all: Vec<usize> = (0..t.len()).collect();
        let z_ctrl = host(ctrl.latents_of(t, &all, device));
        self.check(&t.frames, &t.latents, &z_ctrl, k, device)
    }

    /// Projects only the part of each latent in the span of `directions` (rows of the latent
    /// width; the controller's latents of random action blocks, say): the `r` leading
    /// principal directions of those rows that hold `share` of their variance. What a push
    /// can change lies in that span; the other parts of a latent (what the IDM also writes of
    /// the scene) pass unchanged instead of being pulled toward the neighbours'. Returns r.
    pub fn restrict(&mut self, directions: &[f32], share: f32) -> Result<usize> {
        let dz = self.latent_dim;
        ensure!(
            !directions.is_empty() && directions.len() % dz == 0,
            "feasible set: {} direction values are not rows of the latent width {dz}",
            directions.len()
        );
        ensure!(
            share > 0.0 && share <= 1.0,
            "feasible set: variance share {share} is not in (0, 1]"
        );
        if let Some(i) = directions.iter().position(|v| !v.is_finite()) {
            anyhow::bail!("feasible set: direction value {i} is not finite");
        }
        let (mean, _) = channel_mean_std(directions, dz);
        let n = (directions.len() / dz) as f64;
        let mut cov = nalgebra::DMatrix::<f64>::zeros(dz, dz);
        for row in directions.chunks_exact(dz) {
            let c = nalgebra::DVector::from_iterator(
                dz,
                row.iter().zip(&mean).map(|(v, m)| (v - m) as f64),
            );
            cov += &c * c.transpose() / n;
        }
        let eig = nalgebra::SymmetricEigen::new(cov);
        let mut order: Vec<usize> = (0..dz).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let total: f64 = eig.eigenvalues.iter().map(|v| v.max(0.0)).sum();
        ensure!(total > 0.0, "feasible set: the directions do not vary");
        let mut r = 0;
        let mut held = 0.0;
        while r < dz && held < share as f64 * total {
            held += eig.eigenvalues[order[r]].max(0.0);
            r += 1;
        }
        let basis: Vec<f32> = order[..r]
            .iter()
            .flat_map(|&c| {
                eig.eigenvectors
                    .column(c)
                    .iter()
                    .map(|&v| v as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        self.set_basis(basis);
        Ok(r)
    }

    /// Projects in the span of orthonormal rows `basis` `[r, d]` only.
    fn set_basis(&mut self, basis: Vec<f32>) {
        let dz = self.latent_dim;
        let r = basis.len() / dz;
        let coords: Vec<f32> = self
            .latents
            .chunks_exact(dz)
            .flat_map(|z| {
                (0..r)
                    .map(|j| dot(&basis[j * dz..(j + 1) * dz], z))
                    .collect::<Vec<_>>()
            })
            .collect();
        self.basis = Some((basis, coords));
    }
}

/// [`FeasibleSet::check`]: latent distances to what happened, mean over the transitions and
/// over the tenth where the controller misses most.
#[derive(Clone, Copy, Debug)]
pub struct FeasibleCheck {
    pub transitions: usize,
    /// Median of |project(z_obs) - z_obs| / |z_obs|: how far the projection moves what did
    /// happen (0 when the video's hulls hold the agent's own motions).
    pub moved_median: f32,
    /// Mean |z_ctrl - z_obs| and |project(z_ctrl) - z_obs|.
    pub controller_error: f32,
    pub projected_error: f32,
    /// The same over the worst tenth by |z_ctrl - z_obs|.
    pub worst_controller_error: f32,
    pub worst_projected_error: f32,
}

fn median(mut v: Vec<f32>) -> f32 {
    v.sort_by(f32::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f32::NAN)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Transitions of a shard set: pooled model-space frames `[M, dim]` and the IDM's latents
/// `[M, latent_dim]` (the mean latent of a noisy regulariser), row-major.
pub struct Transitions {
    pub frames: Vec<f32>,
    pub latents: Vec<f32>,
    /// What each transition changed, pooled next frame minus pooled frame `[M, dim]`.
    pub changes: Vec<f32>,
    pub dim: usize,
    pub latent_dim: usize,
}

/// Every consecutive pair of frames of a shard set's clips, pooled in the model's space, with
/// the latent the IDM gives it.
pub fn transitions(
    lam: &LatentActionModel,
    data: &ShardSet,
    device: &Device,
    batch: usize,
) -> Result<Transitions> {
    let (pooled, t, d) = pooled_transitions(lam, data, device, batch)?;
    let clips = pooled.len() / (t * d);
    let (mut frames, mut latents, mut changes, mut latent_dim) =
        (Vec::new(), Vec::new(), Vec::new(), 1);
    for chunk in (0..clips).collect::<Vec<_>>().chunks(batch.max(1)) {
        let rows: Vec<f32> = chunk
            .iter()
            .flat_map(|&c| pooled[c * t * d..(c + 1) * t * d].iter().copied())
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(rows, [chunk.len(), t, d]), device);
        let now = x.clone().slice(s![.., 0..t - 1, ..]);
        let next = x.slice(s![.., 1..t, ..]);
        let rows = chunk.len() * (t - 1) * d;
        frames.extend(host(now.clone().reshape([rows])));
        changes.extend(host((next.clone() - now.clone()).reshape([rows])));
        let z = lam.infer(now, next, &[]).z;
        latent_dim = z.dims()[2];
        latents.extend(host(z.flatten::<1>(0, 2)));
    }
    Ok(Transitions {
        frames,
        latents,
        changes,
        dim: d,
        latent_dim,
    })
}

/// The `k` smallest entries of `dist` as (distance, index), in `near`: one pass that keeps
/// the k best seen and replaces the worst of them when a nearer one comes.
fn nearest_rows(dist: &[f32], k: usize, near: &mut Vec<(f32, usize)>) {
    near.clear();
    near.extend(dist[..k].iter().copied().zip(0..k));
    let worst = |near: &[(f32, usize)]| {
        (0..near.len())
            .max_by(|&a, &b| near[a].0.total_cmp(&near[b].0))
            .unwrap_or(0)
    };
    let mut w = worst(near);
    for (i, &d) in dist.iter().enumerate().skip(k) {
        if d < near[w].0 {
            near[w] = (d, i);
            w = worst(near);
        }
    }
}

/// The point nearest `z` in the convex hull of `points` (rows of `dim`), into `out`: pairwise
/// Frank-Wolfe on the mixture weights w of f(w) = |P^T w - z|^2 / 2, started at the nearest
/// point; each step moves weight from the neighbour the gradient likes least to the one it
/// likes most, by the exact line search along that direction.
pub fn nearest_in_hull(points: &[f32], dim: usize, z: &[f32], out: &mut [f32]) {
    let k = points.len() / dim;
    let p = |i: usize| &points[i * dim..(i + 1) * dim];
    // Gram matrix G = P P^T and b = P z; the gradient is G w - b.
    let mut gram = vec![0f32; k * k];
    for i in 0..k {
        for j in i..k {
            let g = dot(p(i), p(j));
            gram[i * k + j] = g;
            gram[j * k + i] = g;
        }
    }
    let b: Vec<f32> = (0..k).map(|i| dot(p(i), z)).collect();
    let start = (0..k)
        .min_by(|&i, &j| {
            let di = gram[i * k + i] - 2.0 * b[i];
            let dj = gram[j * k + j] - 2.0 * b[j];
            di.total_cmp(&dj)
        })
        .unwrap_or(0);
    let mut w = vec![0f32; k];
    w[start] = 1.0;
    // G w, kept up to date.
    let mut gw: Vec<f32> = (0..k).map(|i| gram[i * k + start]).collect();
    for _ in 0..ITERATIONS {
        let grad = |i: usize| gw[i] - b[i];
        let toward = (0..k)
            .min_by(|&i, &j| grad(i).total_cmp(&grad(j)))
            .unwrap_or(0);
        let away = (0..k)
            .filter(|&i| w[i] > 0.0)
            .max_by(|&i, &j| grad(i).total_cmp(&grad(j)))
            .unwrap_or(toward);
        let gap = grad(away) - grad(toward);
        if toward == away || gap <= 1e-9 {
            break;
        }
        let curvature =
            gram[toward * k + toward] - 2.0 * gram[toward * k + away] + gram[away * k + away];
        let step = if curvature > 1e-12 {
            (gap / curvature).min(w[away])
        } else {
            w[away]
        };
        w[toward] += step;
        w[away] -= step;
        if w[away] < 1e-9 {
            w[away] = 0.0;
        }
        for (i, g) in gw.iter_mut().enumerate() {
            *g += step * (gram[i * k + toward] - gram[i * k + away]);
        }
    }
    out.fill(0.0);
    for (i, &wi) in w.iter().enumerate() {
        if wi > 0.0 {
            for (o, v) in out.iter_mut().zip(p(i)) {
                *o += wi * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::default()
    }

    #[test]
    fn hull_keeps_points_inside_and_projects_those_outside() {
        // The unit square's corners.
        let sq = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
        let mut out = [0f32; 2];
        nearest_in_hull(&sq, 2, &[0.3, 0.6], &mut out);
        assert!(
            (out[0] - 0.3).abs() < 1e-4 && (out[1] - 0.6).abs() < 1e-4,
            "{out:?}"
        );
        nearest_in_hull(&sq, 2, &[2.0, 0.5], &mut out);
        assert!(
            (out[0] - 1.0).abs() < 1e-4 && (out[1] - 0.5).abs() < 1e-4,
            "{out:?}"
        );
        nearest_in_hull(&sq, 2, &[-1.0, -2.0], &mut out);
        assert!(out[0].abs() < 1e-4 && out[1].abs() < 1e-4, "{out:?}");
    }

    /// A corridor: frames are the agent's x in [0, 1] with a wall at x = 1. From every frame
    /// the video shows motions dx in [-0.2, 0.2] that stay left of the wall, and dy in
    /// [-0.2, 0.2].
    fn corridor() -> FeasibleSet {
        let (mut frames, mut latents) = (Vec::new(), Vec::new());
        for i in 0..=100 {
            let x = i as f32 / 100.0;
            for (dx, dy) in [
                (-0.2, -0.2),
                (-0.2, 0.2),
                (0.2, -0.2),
                (0.2, 0.2),
                (0.0, 0.0),
            ] {
                let dx = f32::min(dx, 1.0 - x);
                frames.push(x);
                latents.extend([dx, dy]);
            }
        }
        FeasibleSet::new(&frames, &latents, 1, 2, &device()).unwrap()
    }

    #[test]
    fn a_push_into_the_wall_becomes_the_slide_along_it() {
        let set = corridor();
        let dev = device();
        let frames = Tensor::<2>::from_data(TensorData::new(vec![0.5, 1.0], [2, 1]), &dev);
        let z = Tensor::<2>::from_data(TensorData::new(vec![0.15, 0.1, 0.15, 0.1], [2, 2]), &dev);
        let out = host(set.project(frames, z, 10));
        // In the open the latent passes unchanged.
        assert!(
            (out[0] - 0.15).abs() < 1e-3 && (out[1] - 0.1).abs() < 1e-3,
            "{out:?}"
        );
        // At the wall the push loses its part into the wall and keeps the slide.
        assert!(
            out[2].abs() < 0.02 && (out[3] - 0.1).abs() < 1e-3,
            "{out:?}"
        );
    }

    /// The corridor with a second channel: a part that sits still at 0 in the video but is
    /// drawn elsewhere (and moves) in the agent's domain.
    #[test]
    fn a_channel_drawn_differently_in_the_agents_domain_is_left_out() {
        let dev = device();
        let (mut frames, mut latents) = (Vec::new(), Vec::new());
        for i in 0..=100 {
            let x = i as f32 / 100.0;
            for (dx, dy) in [(-0.2, -0.2), (0.2, 0.2), (0.2, -0.2), (0.0, 0.0)] {
                // The still part jitters a little so the channel is not constant, upward only
                // in the open half.
                let jitter = if x < 0.5 { 0.01 } else { -0.01 } * (i % 2) as f32;
                frames.extend([x, jitter]);
                latents.extend([f32::min(dx, 1.0 - x), dy]);
            }
        }
        let mut set = FeasibleSet::new(&frames, &latents, 2, 2, &dev).unwrap();
        // At the wall, with the part far off: the nearest video frames by both channels are
        // wherever the part's channel is largest, not at the wall.
        let query = || Tensor::<2>::from_data(TensorData::new(vec![1.0, 5.0], [1, 2]), &dev);
        let z = || Tensor::<2>::from_data(TensorData::new(vec![0.15, 0.1], [1, 2]), &dev);
        let before = host(set.project(query(), z(), 8));
        let agent: Vec<f32> = (0..50)
            .flat_map(|i| [i as f32 / 50.0, 4.0 + (i % 5) as f32])
            .collect();
        let dropped = set.match_domain(&agent).unwrap();
        assert_eq!(dropped, vec![1]);
        let after = host(set.project(query(), z(), 8));
        assert!(
            before[0] > 0.1,
            "the mismatched part hid the wall: {before:?}"
        );
        assert!(
            after[0].abs() < 0.02 && (after[1] - 0.1).abs() < 1e-3,
            "{after:?}"
        );
        assert!(set.match_domain(&[1.0]).is_err());
        assert!(set.match_domain(&[1.0, f32::NAN]).is_err());
    }

    /// The corridor's latents with a third part the IDM also writes (scene noise, unrelated
    /// to the push): without the restriction the projection pulls it toward the neighbours'
    /// values; restricted to what the controller's blocks span (the first two parts) it
    /// passes, and the wall still stops the push.
    #[test]
    fn a_restricted_projection_leaves_what_a_push_cannot_change() {
        let dev = device();
        let (mut frames, mut latents) = (Vec::new(), Vec::new());
        for i in 0..=100 {
            let x = i as f32 / 100.0;
            for (j, (dx, dy)) in [
                (-0.2, -0.2),
                (-0.2, 0.2),
                (0.2, -0.2),
                (0.2, 0.2),
                (0.0, 0.0),
            ]
            .into_iter()
            .enumerate()
            {
                frames.push(x);
                latents.extend([f32::min(dx, 1.0 - x), dy, 0.1 * j as f32 - 0.2]);
            }
        }
        let mut set = FeasibleSet::new(&frames, &latents, 1, 3, &dev).unwrap();
        let query = || Tensor::<2>::from_data(TensorData::new(vec![1.0], [1, 1]), &dev);
        let z = || Tensor::<2>::from_data(TensorData::new(vec![0.15, 0.1, 1.5], [1, 3]), &dev);
        let whole = host(set.project(query(), z(), 10));
        assert!(whole[2] < 0.25, "{whole:?}");
        // The controller's blocks move the first two parts only.
        let blocks: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = i as f32 * 0.37;
                [t.sin(), (2.0 * t).cos(), 0.0]
            })
            .collect();
        assert_eq!(set.restrict(&blocks, 0.99).unwrap(), 2);
        let part = host(set.project(query(), z(), 10));
        assert!(
            part[0].abs() < 0.02 && (part[1] - 0.1).abs() < 1e-3 && (part[2] - 1.5).abs() < 1e-3,
            "{part:?}"
        );
        assert!(set.restrict(&[1.0, 2.0], 0.9).is_err());
        assert!(set.restrict(&blocks, 0.0).is_err());
    }

    #[test]
    fn the_check_sees_the_projection_fix_the_controllers_pushes_into_the_wall() {
        let dev = device();
        let set = corridor();
        // At the wall the agent pushed right and slid up; in the open it moved right. The
        // controller says "right" both times.
        let frames = [1.0, 0.5];
        let z_obs = [0.0, 0.1, 0.15, 0.1];
        let z_ctrl = [0.15, 0.1, 0.15, 0.1];
        let c = set.check(&frames, &z_obs, &z_ctrl, 10, &dev).unwrap();
        assert_eq!(c.transitions, 2);
        assert!(c.moved_median < 0.01, "{c:?}");
        assert!((c.controller_error - 0.075).abs() < 1e-3, "{c:?}");
        assert!(c.projected_error < 0.01, "{c:?}");
        assert!((c.worst_controller_error - 0.15).abs() < 1e-3, "{c:?}");
        assert!(c.worst_projected_error < 0.02, "{c:?}");
        assert!(set.check(&frames, &z_obs[..2], &z_ctrl, 10, &dev).is_err());
    }

    /// Frames of two channels, the agent's x (wall at x = 1) and a part drawn only in the
    /// agent's domain; the video's changes stay left of the wall. A predicted frame that
    /// crosses the wall is pulled back to it, and the agent-only part moves as predicted.
    #[test]
    fn a_predicted_change_through_the_wall_is_stopped_at_it() {
        let dev = device();
        let (mut frames, mut changes) = (Vec::new(), Vec::new());
        for i in 0..=100 {
            let x = i as f32 / 100.0;
            for dx in [-0.2, -0.1, 0.0, 0.1, 0.2] {
                frames.extend([x, 0.01 * (i % 2) as f32]);
                changes.extend([f32::min(dx, 1.0 - x), 0.0]);
            }
        }
        let mut set = FeasibleSet::new(&frames, &changes, 2, 2, &dev).unwrap();
        let agent: Vec<f32> = (0..50)
            .flat_map(|i| [i as f32 / 50.0, 3.0 + (i % 4) as f32])
            .collect();
        assert_eq!(set.match_domain(&agent).unwrap(), vec![1]);
        assert_eq!(set.change_only_matched_channels(None).unwrap(), vec![0]);
        let f = Feasible {
            set: &set,
            neighbours: 10,
            target: Target::Change,
        };
        // Two candidates, one token each: in the open, and at the wall.
        let from =
            Tensor::<3>::from_data(TensorData::new(vec![0.5, 4.0, 1.0, 4.0], [2, 1, 2]), &dev);
        let pred =
            Tensor::<3>::from_data(TensorData::new(vec![0.65, 4.5, 1.15, 4.5], [2, 1, 2]), &dev);
        let out = host(f.correct_prediction(&from, pred));
        assert!(
            (out[0] - 0.65).abs() < 1e-3 && (out[1] - 4.5).abs() < 1e-4,
            "{out:?}"
        );
        assert!(
            (out[2] - 1.0).abs() < 0.03 && (out[3] - 4.5).abs() < 1e-4,
            "{out:?}"
        );
    }

    #[test]
    fn repeated_rows_are_kept_once_and_bad_values_are_refused() {
        let dev = device();
        let set = FeasibleSet::new(&[0.0, 0.0, 1.0], &[1.0, 1.0, 2.0], 1, 1, &dev).unwrap();
        assert_eq!(set.len(), 2);
        let err = FeasibleSet::new(&[0.0, f32::NAN], &[1.0, 1.0], 1, 1, &dev)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not finite"), "{err}");
        assert!(FeasibleSet::new(&[0.0, 1.0], &[1.0], 1, 1, &dev).is_err());
    }
}
