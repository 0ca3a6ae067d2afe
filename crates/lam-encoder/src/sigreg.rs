//! SIGReg, the Sketched Isotropic Gaussian Regulariser (LeJEPA / LeWorldModel): how far the
//! rows of a batch are from an isotropic standard Gaussian, seen along random directions.
//!
//! Each row is projected on `M` unit directions; for every 1-D projection `u` the
//! Epps-Pulley statistic compares its empirical characteristic function with the Gaussian's,
//!
//! ```text
//! integral over t of w(t) |mean_n exp(i t u_n) - exp(-t^2/2)|^2,   w(t) = exp(-t^2/2),
//! ```
//!
//! by the trapezoid rule on the knots of [`sigreg_knots`] (using the integrand's symmetry,
//! on [0, t_max] doubled), and the statistics are averaged over directions. A collapsed batch
//! (all rows equal) scores about 0.5, a Gaussian one 0.
//!
//! [`sigreg`] is written once in tensor ops. On the CPU backend, with evenly spaced knots from
//! 0 (what [`sigreg_knots`] makes), the statistic and its gradient with respect to the
//! projections are computed in one host pass instead ([`statistic_and_gradient`]: one sine and
//! cosine per projection, the knots' multiples by the angle-addition recurrence, vectorised
//! over directions), and enter the graph as a first-order surrogate with the same value and
//! gradient. The test `host_sigreg_matches_the_tensor_ops` holds the two to each other; the
//! environment variable `LAM_SIGREG_TENSOR_OPS` (any value) makes the CPU take the tensor ops
//! too, to time one against the other.

use burn::prelude::*;

/// Quadrature points on [0, t_max] and weights for the symmetric integral over
/// [-t_max, t_max] with the window exp(-t^2/2).
pub fn sigreg_knots(knots: usize, t_max: f64) -> (Vec<f32>, Vec<f32>) {
    let h = t_max / (knots - 1) as f64;
    let t: Vec<f64> = (0..knots).map(|i| i as f64 * h).collect();
    let w = t
        .iter()
        .enumerate()
        .map(|(i, &ti)| {
            let trap = if i == 0 || i == knots - 1 { 0.5 } else { 1.0 };
            (2.0 * h * trap * (-ti * ti / 2.0).exp()) as f32
        })
        .collect();
    (t.iter().map(|&v| v as f32).collect(), w)
}

/// SIGReg statistic of the rows of `x` `[N, D]` along the unit columns of `directions`
/// `[D, M]`; `t` are the quadrature points `[K]` and `w` their weights (window included).
/// Returns `[1]`.
pub fn sigreg(x: Tensor<2>, directions: Tensor<2>, t: Tensor<1>, w: Tensor<1>) -> Tensor<1> {
    let proj = x.matmul(directions); // [N, M]
    if std::env::var_os("LAM_SIGREG_TENSOR_OPS").is_none()
        && proj.device().without_autodiff() == Device::flex()
    {
        let knots = host(t.clone());
        if let Some(step) = even_step(&knots) {
            return host_surrogate(proj, step, &host(w));
        }
    }
    sigreg_tensor_ops(proj, t, w)
}

/// The statistic of projections `proj` `[N, M]` in tensor ops (every backend).
fn sigreg_tensor_ops(proj: Tensor<2>, t: Tensor<1>, w: Tensor<1>) -> Tensor<1> {
    let [k] = t.dims();
    let arg = proj.unsqueeze_dim::<3>(2) * t.clone().reshape([1, 1, k]);
    let re = arg.clone().cos().mean_dim(0); // [1, M, K]
    let im = arg.sin().mean_dim(0);
    let gauss = (t.clone() * t).mul_scalar(-0.5).exp().reshape([1, 1, k]);
    let d = re - gauss;
    let err = d.clone() * d + im.clone() * im;
    (err * w.reshape([1, 1, k])).sum_dim(2).mean()
}

/// `sum(proj * G) + (value - <proj, G>)`, the second term a constant: its value is the
/// statistic and its gradient with respect to `proj` is `G`.
fn host_surrogate(proj: Tensor<2>, step: f64, w: &[f32]) -> Tensor<1> {
    let device = proj.device();
    let [n, m] = proj.dims();
    let p = host(proj.clone().detach());
    let (value, grad) = statistic_and_gradient(&p, n, m, step, w);
    let dot: f64 = p
        .iter()
        .zip(&grad)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum();
    let g = Tensor::<2>::from_data(TensorData::new(grad, [n, m]), &device);
    let rest = Tensor::<1>::from_data(TensorData::new(vec![(value - dot) as f32], [1]), &device);
    (proj * g).sum() + rest
}

/// The knot spacing when `t` is `0, h, 2h, ...` (to float precision), else `None`.
fn even_step(t: &[f32]) -> Option<f64> {
    let h = *t.get(1)? as f64;
    let even = t[0] == 0.0
        && h > 0.0
        && t.iter()
            .enumerate()
            .all(|(i, &v)| (v as f64 - i as f64 * h).abs() <= 1e-6 * (1.0 + v.abs() as f64));
    even.then_some(h)
}

/// The statistic of projections `p` (`[N, M]` row-major) on the knots `0, h, ..., (K-1) h`
/// with weights `w`, and its gradient with respect to `p`. With `C`, `S` the mean cosine and
/// sine of `t_k u` over the rows and `g_k = exp(-t_k^2 / 2)`:
///
/// ```text
/// value        = 1/M sum_m sum_k w_k ((C_mk - g_k)^2 + S_mk^2)
/// d value/d p_nm = 2/(N M) sum_k w_k t_k (S_mk cos(t_k p_nm) - (C_mk - g_k) sin(t_k p_nm))
/// ```
///
/// Sums in f64; `cos(k h u)`, `sin(k h u)` by the angle-addition recurrence from one `sin_cos`.
pub fn statistic_and_gradient(p: &[f32], n: usize, m: usize, h: f64, w: &[f32]) -> (f64, Vec<f32>) {
    let k = w.len();
    assert_eq!(p.len(), n * m, "projections of {n} x {m}");
    // First pass: C and S, knot-major `[K, M]` so that the inner loop runs over directions.
    let (mut c, mut s) = (vec![0f64; k * m], vec![0f64; k * m]);
    let mut rec = Recurrence::new(m);
    for row in p.chunks_exact(m) {
        rec.start(row, h);
        for j in 0..k {
            let (cj, sj) = (&mut c[j * m..(j + 1) * m], &mut s[j * m..(j + 1) * m]);
            for col in 0..m {
                cj[col] += rec.cos[col];
                sj[col] += rec.sin[col];
            }
            rec.advance();
        }
    }
    let inv_n = 1.0 / n as f64;
    let mut value = 0.0;
    // The gradient's coefficients of sin and cos, `[K, M]`.
    let (mut a, mut b) = (vec![0f64; k * m], vec![0f64; k * m]);
    let scale = 2.0 / (n as f64 * m as f64);
    for j in 0..k {
        let t = j as f64 * h;
        let g = (-t * t / 2.0).exp();
        let wj = w[j] as f64;
        for col in 0..m {
            let at = j * m + col;
            let (cm, sm) = (c[at] * inv_n - g, s[at] * inv_n);
            value += wj * (cm * cm + sm * sm);
            a[at] = -scale * wj * t * cm;
            b[at] = scale * wj * t * sm;
        }
    }
    value /= m as f64;
    // Second pass: the gradient of every projection.
    let mut grad = vec![0f32; n * m];
    let mut acc = vec![0f64; m];
    for (row, out) in p.chunks_exact(m).zip(grad.chunks_exact_mut(m)) {
        rec.start(row, h);
        acc.iter_mut().for_each(|v| *v = 0.0);
        for j in 0..k {
            let (aj, bj) = (&a[j * m..(j + 1) * m], &b[j * m..(j + 1) * m]);
            for col in 0..m {
                acc[col] += aj[col] * rec.sin[col] + bj[col] * rec.cos[col];
            }
            rec.advance();
        }
        for (o, v) in out.iter_mut().zip(&acc) {
            *o = *v as f32;
        }
    }
    (value, grad)
}

/// `cos(j h u)` and `sin(j h u)` of a row of projections `u`, for j = 0, 1, 2, ...
struct Recurrence {
    cos: Vec<f64>,
    sin: Vec<f64>,
    /// cos(h u), sin(h u).
    step_cos: Vec<f64>,
    step_sin: Vec<f64>,
}

impl Recurrence {
    fn new(m: usize) -> Self {
        Self {
            cos: vec![0.0; m],
            sin: vec![0.0; m],
            step_cos: vec![0.0; m],
            step_sin: vec![0.0; m],
        }
    }

    /// Back to j = 0 for the projections `row`.
    fn start(&mut self, row: &[f32], h: f64) {
        for (col, &u) in row.iter().enumerate() {
            let (sn, cs) = (h * u as f64).sin_cos();
            self.step_sin[col] = sn;
            self.step_cos[col] = cs;
        }
        self.cos.iter_mut().for_each(|v| *v = 1.0);
        self.sin.iter_mut().for_each(|v| *v = 0.0);
    }

    /// j -> j + 1.
    fn advance(&mut self) {
        for col in 0..self.cos.len() {
            let (c, s) = (self.cos[col], self.sin[col]);
            let (dc, ds) = (self.step_cos[col], self.step_sin[col]);
            self.cos[col] = c * dc - s * ds;
            self.sin[col] = s * dc + c * ds;
        }
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random(rng: &mut StdRng, len: usize, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
            .collect()
    }

    #[test]
    fn host_sigreg_matches_the_tensor_ops() {
        let device = Device::flex().autodiff();
        // The device `sigreg` takes the host pass on.
        assert_eq!(device.clone().without_autodiff(), Device::flex());
        let mut rng = StdRng::seed_from_u64(5);
        let (n, d, m) = (48, 6, 20);
        let (t, w) = sigreg_knots(17, 3.0);
        let tt = Tensor::<1>::from_data(TensorData::new(t.clone(), [17]), &device);
        let wt = Tensor::<1>::from_data(TensorData::new(w.clone(), [17]), &device);
        // A spread batch and a nearly collapsed one (large and small statistics).
        for scale in [1.5f32, 0.05] {
            let xv = random(&mut rng, n * d, scale);
            let mut dirs = random(&mut rng, d * m, 1.0);
            for col in 0..m {
                let norm = (0..d)
                    .map(|i| dirs[i * m + col].powi(2))
                    .sum::<f32>()
                    .sqrt();
                (0..d).for_each(|i| dirs[i * m + col] /= norm);
            }
            let run = |host_path: bool| {
                let x = Tensor::<2>::from_data(TensorData::new(xv.clone(), [n, d]), &device)
                    .require_grad();
                let dt = Tensor::<2>::from_data(TensorData::new(dirs.clone(), [d, m]), &device);
                let loss = if host_path {
                    sigreg(x.clone(), dt, tt.clone(), wt.clone())
                } else {
                    sigreg_tensor_ops(x.clone().matmul(dt), tt.clone(), wt.clone())
                };
                let value = host(loss.clone())[0];
                let grads = loss.backward();
                (value, host(x.grad(&grads).expect("gradient of x")))
            };
            let (v_host, g_host) = run(true);
            let (v_ops, g_ops) = run(false);
            assert!(
                (v_host - v_ops).abs() <= 1e-5 * v_ops.abs().max(1e-3),
                "value {v_host} vs {v_ops}"
            );
            let g_max = g_ops.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, b) in g_host.iter().zip(&g_ops) {
                assert!(
                    (a - b).abs() <= 1e-4 * g_max,
                    "gradient {a} vs {b} (max {g_max})"
                );
            }
        }
        // Knots that are not evenly spaced from 0 take the tensor ops.
        assert!(even_step(&t).is_some());
        assert!(even_step(&[0.5, 1.0, 1.5]).is_none());
        assert!(even_step(&[0.0, 1.0, 3.0]).is_none());
    }
}
