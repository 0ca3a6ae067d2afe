//! Canonical correlation analysis between latent actions and true actions.
//!
//! The first canonical correlation of X (n x p) and Y (n x q) is the largest Pearson
//! correlation between projections Xa and Yb. With centred data, covariances Cxx, Cyy, Cxy
//! and Cholesky factors Cxx = Lx Lx^T, Cyy = Ly Ly^T, it is the largest singular value of
//! K = Lx^-1 Cxy Ly^-T, computed here as the square root of the largest eigenvalue of the
//! symmetric K K^T (cyclic Jacobi). Columns with (near) zero variance carry no correlation
//! and are dropped first. Checked against scikit-learn's `CCA(n_components=1)` by the
//! fixture `tests/fixtures/cca_sklearn.json` (made by `tools/reference/make_cca_fixture.py`).
//!
//! [`latent_cca`] applies it to a pretrained policy: for every frame t of every episode of a
//! recording with ground truth, the first latent action z_t of the chunk the policy emits at t
//! is paired with the hidden true action a_t, and the correlation is reported per task.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use burn::prelude::*;
use serde::Serialize;

use crate::checkpoint::{Stage, load_policy};
use crate::data::{FrameData, Labels};
use crate::train::{normals, step_rng};

fn covariance(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let (p, q) = (a[0].len(), b[0].len());
    let mut c = vec![vec![0.0; q]; p];
    for k in 0..n {
        for i in 0..p {
            for j in 0..q {
                c[i][j] += a[k][i] * b[k][j];
            }
        }
    }
    for row in &mut c {
        for v in row {
            *v /= (n - 1) as f64;
        }
    }
    c
}

/// Lower Cholesky factor of a symmetric positive definite matrix.
fn cholesky(m: &[Vec<f64>]) -> Result<Vec<Vec<f64>>> {
    let n = m.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = m[i][i] - s;
                ensure!(d > 0.0, "covariance matrix is singular (collinear columns)");
                l[i][j] = d.sqrt();
            } else {
                l[i][j] = (m[i][j] - s) / l[j][j];
            }
        }
    }
    Ok(l)
}

/// Solves L x = b for every column of `b` (L lower triangular).
fn forward_solve(l: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = l.len();
    let cols = b[0].len();
    let mut x = vec![vec![0.0; cols]; n];
    for c in 0..cols {
        for i in 0..n {
            let s: f64 = (0..i).map(|k| l[i][k] * x[k][c]).sum();
            x[i][c] = (b[i][c] - s) / l[i][i];
        }
    }
    x
}

fn transpose(m: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..m[0].len())
        .map(|j| m.iter().map(|r| r[j]).collect())
        .collect()
}

/// Eigenvalues of a symmetric matrix (cyclic Jacobi rotations).
pub fn symmetric_eigenvalues(m: &[Vec<f64>]) -> Vec<f64> {
    let n = m.len();
    let mut a = m.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).collect()
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
    let lx = cholesky(&covariance(&x, &x))?;
    let ly = cholesky(&covariance(&y, &y))?;
    // K = Lx^-1 Cxy Ly^-T = (Ly^-1 (Lx^-1 Cxy)^T)^T
    let a = forward_solve(&lx, &covariance(&x, &y));
    let k = transpose(&forward_solve(&ly, &transpose(&a)));
    let kkt = covariance_free_product(&k);
    let top = symmetric_eigenvalues(&kkt)
        .into_iter()
        .fold(0.0f64, f64::max);
    Ok(top.max(0.0).sqrt().min(1.0))
}

/// K K^T.
fn covariance_free_product(k: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let p = k.len();
    (0..p)
        .map(|i| {
            (0..p)
                .map(|j| k[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum())
                .collect()
        })
        .collect()
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
            let noise = if cfg.head == crate::config::HeadKind::Diffusion {
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
            task: ep0.task.map_or("unknown".into(), |t| t.name().to_string()),
            domain: ep0.domain.map_or("unknown".into(), |d| d.to_string()),
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

    #[test]
    fn eigenvalues_of_known_matrix() {
        let m = vec![vec![2.0, 1.0], vec![1.0, 2.0]];
        let mut e = symmetric_eigenvalues(&m);
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
    }
}
