//! Canonical correlation analysis between latent actions and true actions.
//!
//! The first canonical correlation of X (n x p) and Y (n x q) is the largest Pearson
//! correlation between projections Xa and Yb. With centred data, covariances Cxx, Cyy, Cxy
//! and Cholesky factors Cxx = Lx Lx^T, Cyy = Ly Ly^T, it is the largest singular value of
//! K = Lx^-1 Cxy Ly^-T, computed here as the square root of the largest eigenvalue of the
//! symmetric K K^T (nalgebra's Cholesky, triangular solves and symmetric eigenvalues). Columns with (near) zero variance carry no correlation
//! and are dropped first. Checked against scikit-learn's `CCA(n_components=1)` by the
//! fixture `tests/fixtures/cca_sklearn.json` (made by `tools/reference/make_cca_fixture.py`).
//!
//! [`latent_cca`] applies it to a pretrained policy: for every frame t of every episode of a
//! recording with ground truth, the first latent action z_t of the chunk the policy emits at t
//! is paired with the hidden true action a_t, and the correlation is reported per task.

use std::path::PathBuf;

use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use nalgebra::DMatrix;
use serde::Serialize;

use crate::data::{FrameData, Labels};
use crate::train::{normals, step_rng};
use lam_lawm::checkpoint::{Stage, load_policy};

/// Rows as a matrix.
fn matrix(rows: &[Vec<f64>]) -> DMatrix<f64> {
    DMatrix::from_fn(rows.len(), rows[0].len(), |i, j| rows[i][j])
}

/// Centres the columns and drops those whose standard deviation is below 1e-9 times the
/// largest one.
fn centred_informative(x: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = x.len() as f64;
    let p = x[0].len();
    let mean: Vec<f64> = (0..p)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..p)
        .map(|j| (x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
        .collect();
    let top = sd.iter().cloned().fold(0.0, f64::max);
    let keep: Vec<usize> = (0..p).filter(|&j| sd[j] > 1e-9 * top.max(1e-300)).collect();
    x.iter()
        .map(|r| keep.iter().map(|&j| r[j] - mean[j]).collect())
        .collect()
}

/// First canonical correlation between the rows of `x` and `y` (same number of rows).
pub fn first_canonical_correlation(x: &[Vec<f64>], y: &[Vec<f64>]) -> Result<f64> {
    ensure!(
        x.len() == y.len(),
        "CCA needs paired rows: {} vs {}",
        x.len(),
        y.len()
    );
    ensure!(x.len() >= 3, "CCA needs at least 3 rows, got {}", x.len());
    let (x, y) = (centred_informative(x), centred_informative(y));
    if x[0].is_empty() || y[0].is_empty() {
        return Ok(0.0);
    }
    let (x, y) = (matrix(&x), matrix(&y));
    let n1 = (x.nrows() - 1) as f64;
    let cov = |a: &DMatrix<f64>, b: &DMatrix<f64>| a.transpose() * b / n1;
    let singular = "covariance matrix is singular (collinear columns)";
    let lx = cov(&x, &x).cholesky().context(singular)?.unpack();
    let ly = cov(&y, &y).cholesky().context(singular)?.unpack();
    // K = Lx^-1 Cxy Ly^-T = (Ly^-1 (Lx^-1 Cxy)^T)^T
    let a = lx.solve_lower_triangular(&cov(&x, &y)).context(singular)?;
    let k = ly
        .solve_lower_triangular(&a.transpose())
        .context(singular)?
        .transpose();
    let top = (&k * k.transpose()).symmetric_eigenvalues().max();
    Ok(top.max(0.0).sqrt().min(1.0))
}

/// CCA of one task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskCca {
    pub task: String,
    pub domain: String,
    pub samples: usize,
    pub correlation: f64,
}

/// Per-task first canonical correlation between a pretrained policy's first latent action and
/// the true action, over at most `max_frames` frames per dataset folder.
pub fn latent_cca(
    checkpoint: &std::path::Path,
    dirs: &[PathBuf],
    max_frames: usize,
    device: &Device,
) -> Result<Vec<TaskCca>> {
    let (policy, state) = load_policy(checkpoint, device)?;
    ensure!(
        state.stage == Stage::Pretrain,
        "{} is not a world-model pretraining checkpoint (its head emits real actions)",
        checkpoint.display()
    );
    let cfg = &state.config.policy;
    let embedder = state.embedder();
    let mut out = Vec::new();
    for dir in dirs {
        let data = FrameData::load(
            std::slice::from_ref(dir),
            cfg.image_size,
            &embedder,
            Labels::GroundTruth,
            None,
        )?;
        let mut samples: Vec<(usize, usize)> = data
            .episodes
            .iter()
            .enumerate()
            .flat_map(|(e, ep)| (0..ep.len).map(move |t| (e, t)))
            .collect();
        samples.truncate(max_frames);
        let mut z_rows = Vec::with_capacity(samples.len());
        let mut a_rows = Vec::with_capacity(samples.len());
        for (i, chunk) in samples.chunks(64).enumerate() {
            let frames = data.history(chunk, cfg.history, device);
            let instr = data.instructions(chunk, device);
            let noise = if cfg.head == lam_lawm::config::HeadKind::Diffusion {
                normals(
                    &mut step_rng(0, i, 7),
                    chunk.len() * cfg.chunk * state.action_dim,
                )
            } else {
                Vec::new()
            };
            let z = policy.chunk(cfg, frames, instr, &noise);
            let d = state.action_dim;
            let zv: Vec<f32> = z
                .slice(s![.., 0..1])
                .into_data()
                .try_into_vec::<f32>()
                .expect("f32 latents");
            for (j, &(e, t)) in chunk.iter().enumerate() {
                z_rows.push(zv[j * d..(j + 1) * d].iter().map(|&v| v as f64).collect());
                let a = &data.episodes[e]
                    .actions
                    .as_ref()
                    .expect("ground truth loaded")[t];
                a_rows.push(a.iter().map(|&v| v as f64).collect::<Vec<f64>>());
            }
        }
        let ep0 = &data.episodes[0];
        out.push(TaskCca {
            task: ep0.task.clone().unwrap_or_else(|| "unknown".into()),
            domain: ep0.domain.clone().unwrap_or_else(|| "unknown".into()),
            samples: z_rows.len(),
            correlation: first_canonical_correlation(&z_rows, &a_rows)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfectly_correlated_is_one() {
        let x: Vec<Vec<f64>> = (0..50)
            .map(|i| vec![i as f64, ((i * 7) % 11) as f64])
            .collect();
        let y: Vec<Vec<f64>> = x.iter().map(|r| vec![2.0 * r[0] - r[1] + 3.0]).collect();
        let rho = first_canonical_correlation(&x, &y).unwrap();
        assert!((rho - 1.0).abs() < 1e-9, "{rho}");
    }
}
