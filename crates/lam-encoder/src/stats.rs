//! Collapse detectors for embeddings: per-channel standard deviation and effective rank.
//!
//! A collapsed encoder maps every input to (nearly) the same vector, so the per-channel std
//! goes to 0; a dimensionally collapsed one spreads its outputs over a few directions only,
//! which the effective rank shows: `exp(H(p))`, the exponential of the entropy of the
//! covariance eigenvalues normalised to sum to one (`p_i = l_i / sum l`). It is D for
//! isotropic embeddings and 1 when all variance lies along one direction. Eigenvalues are
//! computed on the host with cyclic Jacobi rotations (D is small: 32 to 1024).

use serde::Serialize;

/// Statistics of a set of embedding vectors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmbeddingStats {
    /// Number of vectors.
    pub samples: usize,
    /// Channels per vector (D).
    pub dim: usize,
    /// Mean over channels of the per-channel standard deviation.
    pub mean_std: f64,
    /// Smallest per-channel standard deviation.
    pub min_std: f64,
    /// `exp(entropy of normalised covariance eigenvalues)`, in [1, D].
    pub effective_rank: f64,
}

/// Statistics of `values`, `samples x dim` row-major.
pub fn embedding_stats(values: &[f32], dim: usize) -> EmbeddingStats {
    assert!(
        dim > 0 && values.len() % dim == 0,
        "values are not rows of {dim}"
    );
    let n = values.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in values.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += v as f64;
        }
    }
    for m in &mut mean {
        *m /= n.max(1) as f64;
    }
    let mut cov = vec![0.0f64; dim * dim];
    let mut centred = vec![0.0f64; dim];
    for row in values.chunks_exact(dim) {
        for ((c, &v), m) in centred.iter_mut().zip(row).zip(&mean) {
            *c = v as f64 - m;
        }
        for i in 0..dim {
            let ci = centred[i];
            for j in i..dim {
                cov[i * dim + j] += ci * centred[j];
            }
        }
    }
    let denom = (n.max(2) - 1) as f64;
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / denom;
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    let stds: Vec<f64> = (0..dim).map(|i| cov[i * dim + i].max(0.0).sqrt()).collect();
    let eig = symmetric_eigenvalues(cov, dim);
    EmbeddingStats {
        samples: n,
        dim,
        mean_std: stds.iter().sum::<f64>() / dim as f64,
        min_std: stds.iter().copied().fold(f64::INFINITY, f64::min),
        effective_rank: effective_rank(&eig),
    }
}

/// `exp(-sum p log p)` of the non-negative parts of `eigenvalues`, normalised; 0 if all are 0.
pub fn effective_rank(eigenvalues: &[f64]) -> f64 {
    let total: f64 = eigenvalues.iter().map(|l| l.max(0.0)).sum();
    if total <= 0.0 {
        return 0.0;
    }
    let h: f64 = eigenvalues
        .iter()
        .map(|l| l.max(0.0) / total)
        .filter(|&p| p > 0.0)
        .map(|p| -p * p.ln())
        .sum();
    h.exp()
}

/// Eigenvalues of the symmetric `n x n` matrix `a` (row-major).
pub fn symmetric_eigenvalues(a: Vec<f64>, n: usize) -> Vec<f64> {
    nalgebra::DMatrix::from_row_slice(n, n, &a)
        .symmetric_eigenvalues()
        .iter()
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_known_eigenvalues() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut e = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(f64::total_cmp);
        assert!(
            (e[0] - 1.0).abs() < 1e-10 && (e[1] - 3.0).abs() < 1e-10,
            "{e:?}"
        );
        // A rotated diagonal matrix keeps its eigenvalues.
        let (c, s) = (0.6f64, 0.8f64);
        let d = [5.0, 2.0, 0.5];
        // R = rotation in the (0, 1) plane; A = R diag(d) R^T.
        let r = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| r[i * 3 + k] * d[k] * r[j * 3 + k]).sum();
            }
        }
        let mut e = symmetric_eigenvalues(a, 3);
        e.sort_by(f64::total_cmp);
        for (got, want) in e.iter().zip([0.5, 2.0, 5.0]) {
            assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        }
    }

    #[test]
    fn rank_of_isotropic_and_collapsed_sets() {
        // Isotropic: the 4 signed unit vectors of 2-D -> rank 2, std equal.
        let iso = [1.0f32, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0];
        let s = embedding_stats(&iso, 2);
        assert!((s.effective_rank - 2.0).abs() < 1e-9, "{s:?}");
        // All variance along (1, 1): rank 1.
        let line = [1.0f32, 1.0, -1.0, -1.0, 2.0, 2.0, -2.0, -2.0];
        let s = embedding_stats(&line, 2);
        assert!((s.effective_rank - 1.0).abs() < 1e-6, "{s:?}");
        // Constant vectors: std 0, rank 0.
        let s = embedding_stats(&[3.0f32; 12], 3);
        assert_eq!((s.mean_std, s.effective_rank), (0.0, 0.0));
    }
}
