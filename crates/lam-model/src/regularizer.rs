//! Latent-action regularisers: the terms that keep z_t an action, not a copy of s_t+1.
//!
//! All functions take the latents of a batch flattened to `[M, d]` (M = clips x transitions)
//! and return scalar tensors `[1]`, so they compose with autodiff.
//!
//! - **sparse**: `VCM(Z) + mean_i E(z_i)` with
//!   `E(z) = l2 * max(sqrt(d) - |z|_2, 0) + l1 * |z|_1` and VCM the weighted sum of
//!   variance `mean_j max(0, 1 - sqrt(Var_j + 1e-4))` (unbiased variance),
//!   covariance `sum_{i != j} C_ij^2 / d` (C the unbiased covariance) and
//!   mean `mean_j (mean_i z_ij)^2`.
//! - **noisy**: `KL(N(mu, sigma^2) || N(0, I)) = 0.5 * sum_j (mu^2 + sigma^2 - 1 - log sigma^2)`,
//!   averaged over the M latents, times beta.
//! - **vq**: nearest-code quantisation with the straight-through estimator
//!   `z_q = z_e + sg(e - z_e)`, codebook loss `mean((e - sg(z_e))^2)` and commitment loss
//!   `mean((z_e - sg(e))^2)` (means over all M x d entries).

use burn::prelude::*;

/// The three VCM terms (unweighted).
pub struct Vcm {
    pub variance: Tensor<1>,
    pub covariance: Tensor<1>,
    pub mean: Tensor<1>,
}

pub fn vcm(z: Tensor<2>) -> Vcm {
    let [m, d] = z.dims();
    let mu = z.clone().mean_dim(0); // [1, d]
    let centred = z - mu.clone();
    let var = centred
        .clone()
        .square()
        .sum_dim(0)
        .div_scalar((m - 1) as f64); // [1, d]
    let std = (var + 1e-4).sqrt();
    let variance = (std.neg() + 1.0).clamp_min(0.0).mean();
    let cov = centred
        .clone()
        .transpose()
        .matmul(centred)
        .div_scalar((m - 1) as f64); // [d, d]
    let diag = Tensor::<2>::eye(d, &cov.device());
    let off = cov * (diag.neg() + 1.0);
    let covariance = off.square().sum().div_scalar(d as f64);
    let mean = mu.square().mean();
    Vcm {
        variance,
        covariance,
        mean,
    }
}

/// `mean_i E(z_i)`, `E(z) = l2 * max(sqrt(d) - |z|_2, 0) + l1 * |z|_1`.
pub fn energy(z: Tensor<2>, l1: f64, l2: f64) -> Tensor<1> {
    let d = z.dims()[1];
    let norm = (z.clone().square().sum_dim(1) + 1e-12).sqrt(); // [M, 1]
    let hinge = (norm.neg() + (d as f64).sqrt()).clamp_min(0.0);
    let l1_norm = z.abs().sum_dim(1);
    (hinge * l2 + l1_norm * l1).mean()
}

/// KL of a diagonal Gaussian to N(0, I), summed over dims, averaged over rows.
pub fn kl_standard_normal(mu: Tensor<2>, logvar: Tensor<2>) -> Tensor<1> {
    let per = mu.square() + logvar.clone().exp() - logvar - 1.0;
    per.sum_dim(1).mean().mul_scalar(0.5)
}

/// Result of vector quantisation.
pub struct Quantized {
    /// Straight-through latents `[M, d]`: forward value is the code, gradient flows to z_e.
    pub z: Tensor<2>,
    /// `mean((e - sg(z_e))^2)`: moves codes toward encoder outputs.
    pub codebook_loss: Tensor<1>,
    /// `mean((z_e - sg(e))^2)`: keeps encoder outputs near their codes (weighted outside).
    pub commitment_loss: Tensor<1>,
    /// Index of the chosen code per row.
    pub indices: Vec<usize>,
}

pub fn vector_quantize(z_e: Tensor<2>, codebook: Tensor<2>) -> Quantized {
    let indices_t = nearest_codes(z_e.clone().detach(), codebook.clone().detach());
    let e = codebook.select(0, indices_t.clone());
    let codebook_loss = (e.clone() - z_e.clone().detach()).square().mean();
    let commitment_loss = (z_e.clone() - e.clone().detach()).square().mean();
    let z = z_e.clone() + (e - z_e).detach();
    let indices = indices_t
        .into_data()
        .iter::<i64>()
        .map(|i| i as usize)
        .collect();
    Quantized {
        z,
        codebook_loss,
        commitment_loss,
        indices,
    }
}

/// Index of the nearest code (L2) for every row: `[M]`.
pub fn nearest_codes(z: Tensor<2>, codebook: Tensor<2>) -> Tensor<1, Int> {
    let z2 = z.clone().square().sum_dim(1); // [M, 1]
    let e2 = codebook.clone().square().sum_dim(1).transpose(); // [1, K]
    let dist = z2 + e2 - z.matmul(codebook.transpose()).mul_scalar(2.0);
    dist.argmin(1).squeeze_dim::<1>(1)
}
