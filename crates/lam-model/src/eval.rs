//! Stage-1 evaluations of the paper: the leakage (scene-cut) ratio and the transfer /
//! cycle-consistency test.
//!
//! **Leakage.** For clip A and another clip B, at every transition c the IDM sees
//! (s^A_c, s^B_c+1), an artificial scene cut. The world model rolls A's frames 0..c with A's
//! own latents before c and the cut latent at c; `E_cut` is the L1 error of its prediction
//! against s^B_c+1. `E_normal` is the error on A's real transition. Ratio `E_cut / (E_normal +
//! 1e-8)`: ~1 means z copies the next frame (leak), ~2 or more means z carries an action.
//! `E_cut_no_action` (z = 0 at the cut) shows how far B's frame is from A's continuation.
//!
//! **Transfer.** z^A from clip A is applied to clip B's context; the IDM re-infers z' from
//! (s^B_t, predicted s^B_t+1); z' is applied back to A. Reported: A's original error with z^A,
//! the transfer error with z', their ratio (1 = the action survives the round trip), and the
//! cosine between z^A and z'.
//!
//! **Open loop.** From each clip's first frame alone, the world model steps through the clip
//! under the IDM's latents of its real transitions, fed back its own predictions (no later
//! real frame); the mean L1 error over the predicted frames and at the last one. A world model
//! that ignores its visual context and reads the next frame from z does well teacher-forced
//! and drifts here (the paper's action-dropout ablation).

use anyhow::{Result, ensure};
use burn::prelude::*;
use lam_data::ShardSet;
use serde::Serialize;

use crate::config::LamConfig;
use crate::idm::Idm;
use crate::lam::LatentActionModel;
use crate::train::clips_tensor;

#[derive(Clone, Debug, Serialize)]
pub struct LeakageReport {
    pub clips: usize,
    pub e_normal: f64,
    pub e_cut: f64,
    pub e_cut_no_action: f64,
    pub ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct TransferReport {
    pub clips: usize,
    pub original_error: f64,
    pub transfer_error: f64,
    pub ratio: f64,
    pub latent_cosine: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct OpenLoopReport {
    pub clips: usize,
    /// Predicted frames per clip (the clip's frames after the first).
    pub steps: usize,
    pub error: f64,
    pub last_step_error: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub leakage: LeakageReport,
    pub transfer: TransferReport,
    pub open_loop: OpenLoopReport,
}

impl EvalReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let l = &self.leakage;
        let t = &self.transfer;
        format!(
            "leakage (scene cut), {} clips\n  E_normal          {:>10.5}\n  E_cut             {:>10.5}\n  E_cut (z = 0)     {:>10.5}\n  ratio             {:>10.3}\n\
             transfer (cycle), {} clips\n  original error    {:>10.5}\n  transfer error    {:>10.5}\n  ratio             {:>10.3}\n  cos(z, z')        {:>10.3}\n\
             open loop, {} clips of {} predicted frames\n  error             {:>10.5}\n  last frame        {:>10.5}\n",
            l.clips,
            l.e_normal,
            l.e_cut,
            l.e_cut_no_action,
            l.ratio,
            t.clips,
            t.original_error,
            t.transfer_error,
            t.ratio,
            t.latent_cosine,
            self.open_loop.clips,
            self.open_loop.steps,
            self.open_loop.error,
            self.open_loop.last_step_error,
        )
    }
}

fn l1_per_position(pred: Tensor<4>, target: Tensor<4>) -> Tensor<2> {
    // [B, T', N, D] -> [B, T']
    let [b, t, _, _] = pred.dims();
    (pred - target).abs().mean_dims(&[2, 3]).reshape([b, t])
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// The scene-cut partner of each clip: a clip of another video (source id), searched from
/// half the set away so that partners spread over the set. A set made from one video only
/// falls back to the clip half the set away (overlapping clips of one video would make the
/// cut no cut at all).
pub fn scene_cut_partners(ids: &[i64]) -> Vec<usize> {
    let n = ids.len();
    (0..n)
        .map(|i| {
            let far = (i + n / 2) % n;
            (0..n)
                .map(|k| (far + k) % n)
                .find(|&j| ids[j] != ids[i])
                .unwrap_or(if far == i { (i + 1) % n } else { far })
        })
        .collect()
}

/// Runs both evaluations on up to `max_clips` clips of `val` in batches of `batch`.
pub fn evaluate(
    cfg: &LamConfig,
    model: &LatentActionModel,
    val: &ShardSet,
    device: &Device,
    max_clips: usize,
    batch: usize,
) -> Result<EvalReport> {
    let n = val.len().min(max_clips);
    ensure!(
        n >= 2,
        "evaluation needs at least 2 clips, {} has {}",
        val.dir.display(),
        val.len()
    );
    let t = cfg.model.frames;
    let (mut e_normal, mut e_cut, mut e_zero) = (0.0, 0.0, 0.0);
    let (mut orig, mut transfer, mut cos) = (0.0, 0.0, 0.0);
    let (mut open, mut open_last) = (0.0, 0.0);
    let mut seen = 0usize;
    let mut start = 0;
    let partners = scene_cut_partners(&(0..n).map(|i| val.clip_id(i)).collect::<Vec<_>>());
    while start < n {
        let end = (start + batch.max(2)).min(n);
        let a_idx: Vec<usize> = (start..end).collect();
        let b_idx: Vec<usize> = a_idx.iter().map(|&i| partners[i]).collect();
        let a = model.normalize(clips_tensor(val, &a_idx, device));
        let bclip = model.normalize(clips_tensor(val, &b_idx, device));
        let m = a_idx.len();
        let ctx_a = a.clone().slice(s![.., 0..t - 1, .., ..]);
        let next_a = a.clone().slice(s![.., 1..t, .., ..]);
        let ctx_b = bclip.clone().slice(s![.., 0..t - 1, .., ..]);
        let next_b = bclip.clone().slice(s![.., 1..t, .., ..]);

        let pooled_a = Idm::pool(a.clone());
        let pooled_b = Idm::pool(bclip.clone());
        let z_a = model
            .infer(
                pooled_a.clone().slice(s![.., 0..t - 1, ..]),
                pooled_a.clone().slice(s![.., 1..t, ..]),
                &[],
            )
            .z;
        let pred_a = model.world_model.forward(ctx_a.clone(), z_a.clone());
        let err_normal = l1_per_position(pred_a.clone(), next_a.clone()); // [m, T-1]
        e_normal += scalar(err_normal.clone().mean()) * m as f64;

        // Scene cut at every position c.
        let z_cut = model
            .infer(
                pooled_a.clone().slice(s![.., 0..t - 1, ..]),
                pooled_b.clone().slice(s![.., 1..t, ..]),
                &[],
            )
            .z;
        let d = z_a.dims()[2];
        let (mut cut_sum, mut zero_sum) = (0.0, 0.0);
        for c in 0..t - 1 {
            let mut parts = vec![z_a.clone().slice(s![.., 0..c, ..])];
            parts.push(z_cut.clone().slice(s![.., c..c + 1, ..]));
            if c + 1 < t - 1 {
                parts.push(z_a.clone().slice(s![.., c + 1..t - 1, ..]));
            }
            let parts: Vec<_> = parts.into_iter().filter(|p| p.dims()[1] > 0).collect();
            let z_seq = Tensor::cat(parts, 1);
            let pred = model.world_model.forward(ctx_a.clone(), z_seq.clone());
            let target = next_b.clone().slice(s![.., c..c + 1, .., ..]);
            cut_sum += scalar(
                (pred.slice(s![.., c..c + 1, .., ..]) - target.clone())
                    .abs()
                    .mean(),
            );
            let zero_at_c = z_seq
                .clone()
                .slice_assign(s![.., c..c + 1, ..], Tensor::zeros([m, 1, d], device));
            let pred0 = model.world_model.forward(ctx_a.clone(), zero_at_c);
            zero_sum += scalar(
                (pred0.slice(s![.., c..c + 1, .., ..]) - target)
                    .abs()
                    .mean(),
            );
        }
        e_cut += cut_sum / (t - 1) as f64 * m as f64;
        e_zero += zero_sum / (t - 1) as f64 * m as f64;

        // Transfer: A's latents on B's context, re-inferred, applied back to A.
        let pred_b = model.world_model.forward(ctx_b.clone(), z_a.clone());
        let z_back = model
            .infer(
                pooled_b.clone().slice(s![.., 0..t - 1, ..]),
                Idm::pool(pred_b),
                &[],
            )
            .z;
        let pred_a2 = model.world_model.forward(ctx_a.clone(), z_back.clone());
        orig += scalar(err_normal.mean()) * m as f64;
        transfer += scalar(l1_per_position(pred_a2, next_a).mean()) * m as f64;
        let dot = (z_a.clone() * z_back.clone()).sum_dim(2);
        let norms = (z_a.clone().square().sum_dim(2) * z_back.square().sum_dim(2)).sqrt() + 1e-12;
        cos += scalar((dot / norms).mean()) * m as f64;

        // Open loop from the first frame under A's latents.
        let (mut cache, mut frame) = (None, a.clone().slice(s![.., 0..1, .., ..]).squeeze_dim(1));
        let mut sum = 0.0;
        for k in 0..t - 1 {
            let zk = z_a.clone().slice(s![.., k..k + 1, ..]).squeeze_dim(1);
            let (pred, next) = model.world_model.step(cache.as_ref(), frame, zk, t);
            let target = a.clone().slice(s![.., k + 1..k + 2, .., ..]).squeeze_dim(1);
            let err = scalar((pred.clone() - target).abs().mean());
            sum += err;
            if k == t - 2 {
                open_last += err * m as f64;
            }
            frame = pred;
            cache = Some(next);
        }
        open += sum / (t - 1) as f64 * m as f64;
        seen += m;
        start = end;
    }
    let k = seen as f64;
    let (e_normal, e_cut, e_zero) = (e_normal / k, e_cut / k, e_zero / k);
    let (orig, transfer, cos) = (orig / k, transfer / k, cos / k);
    Ok(EvalReport {
        leakage: LeakageReport {
            clips: seen,
            e_normal,
            e_cut,
            e_cut_no_action: e_zero,
            ratio: e_cut / (e_normal + 1e-8),
        },
        transfer: TransferReport {
            clips: seen,
            original_error: orig,
            transfer_error: transfer,
            ratio: transfer / (orig + 1e-8),
            latent_cosine: cos,
        },
        open_loop: OpenLoopReport {
            clips: seen,
            steps: t - 1,
            error: open / k,
            last_step_error: open_last / k,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::scene_cut_partners;

    #[test]
    fn scene_cut_partners_come_from_another_video() {
        // Clips 0..4 of video 7, 4..6 of video 9, 6..8 of video 3 (overlapping windows).
        let ids = [7, 7, 7, 7, 9, 9, 3, 3];
        let p = scene_cut_partners(&ids);
        for (i, &j) in p.iter().enumerate() {
            assert_ne!(ids[i], ids[j], "clip {i} got partner {j} of the same video");
        }
        // Spread over the set, not all on one clip.
        let mut distinct = p.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() >= 3, "{p:?}");
        // One video only: a far clip, never the clip itself.
        let p = scene_cut_partners(&[5, 5, 5, 5]);
        assert_eq!(p, vec![2, 3, 0, 1]);
        assert_eq!(scene_cut_partners(&[1, 1]), vec![1, 0]);
    }
}
