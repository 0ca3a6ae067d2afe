//! Bicubic resizing of a grid of vectors (the position embeddings of a ViT when the input
//! size differs from the one it was trained at), on the host.
//!
//! Two variants, both with `align_corners = False` semantics (pixel centres at `i + 0.5`):
//!
//! - plain: the cubic convolution kernel with a = -0.75 over the 4 nearest source samples,
//!   indices clamped at the borders. This is what DINOv2 checkpoints use.
//! - antialiased: the kernel with a = -0.5, stretched by the downscale factor when shrinking,
//!   over every source sample within its support, weights renormalised to sum to one (samples
//!   outside the grid are left out rather than clamped). DINOv2-with-registers uses this.

/// Source samples and weights of each output position along one axis.
fn axis_weights(input: usize, output: usize, antialias: bool) -> Vec<Vec<(usize, f64)>> {
    let scale = input as f64 / output as f64;
    (0..output)
        .map(|i| {
            if antialias {
                let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
                let inv = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
                let center = scale * (i as f64 + 0.5);
                let lo = ((center - support + 0.5) as i64).max(0) as usize;
                let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
                let mut w: Vec<(usize, f64)> = (lo..hi)
                    .map(|j| (j, cubic((j as f64 - center + 0.5) * inv, -0.5)))
                    .collect();
                let total: f64 = w.iter().map(|(_, v)| v).sum();
                if total != 0.0 {
                    for (_, v) in &mut w {
                        *v /= total;
                    }
                }
                w
            } else {
                let real = scale * (i as f64 + 0.5) - 0.5;
                let base = real.floor();
                let t = real - base;
                let a = -0.75;
                let coeffs = [
                    cubic(t + 1.0, a),
                    cubic(t, a),
                    cubic(1.0 - t, a),
                    cubic(2.0 - t, a),
                ];
                coeffs
                    .iter()
                    .enumerate()
                    .map(|(k, &c)| {
                        let j = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1);
                        (j as usize, c)
                    })
                    .collect()
            }
        })
        .collect()
}

/// The cubic convolution kernel with parameter `a`.
fn cubic(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Resizes a row-major grid `[rows, cols, dim]` to `[out_rows, out_cols, dim]`.
pub fn bicubic(
    grid: &[f32],
    rows: usize,
    cols: usize,
    dim: usize,
    out_rows: usize,
    out_cols: usize,
    antialias: bool,
) -> Vec<f32> {
    assert_eq!(grid.len(), rows * cols * dim, "grid size");
    // Along columns first: [rows, out_cols, dim].
    let wc = axis_weights(cols, out_cols, antialias);
    let mut mid = vec![0.0f64; rows * out_cols * dim];
    for r in 0..rows {
        for (oc, taps) in wc.iter().enumerate() {
            let out = &mut mid[(r * out_cols + oc) * dim..(r * out_cols + oc + 1) * dim];
            for &(c, w) in taps {
                let src = &grid[(r * cols + c) * dim..(r * cols + c + 1) * dim];
                for (o, &s) in out.iter_mut().zip(src) {
                    *o += w * s as f64;
                }
            }
        }
    }
    let wr = axis_weights(rows, out_rows, antialias);
    let mut out = vec![0.0f32; out_rows * out_cols * dim];
    for (or, taps) in wr.iter().enumerate() {
        for oc in 0..out_cols {
            let dst = &mut out[(or * out_cols + oc) * dim..(or * out_cols + oc + 1) * dim];
            let mut acc = vec![0.0f64; dim];
            for &(r, w) in taps {
                let src = &mid[(r * out_cols + oc) * dim..(r * out_cols + oc + 1) * dim];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += w * s;
                }
            }
            for (d, a) in dst.iter_mut().zip(acc) {
                *d = a as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_constants_stay_constant() {
        let g: Vec<f32> = (0..3 * 3 * 2).map(|v| v as f32).collect();
        for aa in [false, true] {
            let same = bicubic(&g, 3, 3, 2, 3, 3, aa);
            for (a, b) in same.iter().zip(&g) {
                assert!((a - b).abs() < 1e-5, "{aa}: {a} vs {b}");
            }
            let c = vec![2.5f32; 4 * 4];
            for v in bicubic(&c, 4, 4, 1, 7, 3, aa) {
                assert!((v - 2.5).abs() < 1e-5);
            }
        }
    }
}
