//! Latent statistics logged during training, computed on host copies of the latents.

use serde_json::{Map, Value, json};

/// A latent dimension counts as active when its batch standard deviation exceeds this.
pub const ACTIVE_STD: f64 = 0.1;

/// Per-dimension standard deviation of row-major `[M, d]` values.
pub fn per_dim_std(z: &[f32], d: usize) -> Vec<f64> {
    let m = z.len() / d;
    (0..d)
        .map(|j| {
            let mean = (0..m).map(|i| z[i * d + j] as f64).sum::<f64>() / m as f64;
            let var = (0..m)
                .map(|i| (z[i * d + j] as f64 - mean).powi(2))
                .sum::<f64>()
                / (m.max(2) - 1) as f64;
            var.sqrt()
        })
        .collect()
}

/// `z_std_mean`, `z_std_min`, `z_std_max`, `z_norm_mean`, `active_dims`, and for VQ
/// `codebook_used` (distinct codes in the batch) and `codebook_perplexity`.
pub fn latent_stats(z: &[f32], d: usize, vq: Option<(&[usize], usize)>) -> Map<String, Value> {
    let m = z.len() / d;
    let std = per_dim_std(z, d);
    let norm = (0..m)
        .map(|i| {
            z[i * d..(i + 1) * d]
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum::<f64>()
        / m.max(1) as f64;
    let mut out = Map::new();
    out.insert(
        "z_std_mean".into(),
        json!(std.iter().sum::<f64>() / d as f64),
    );
    out.insert(
        "z_std_min".into(),
        json!(std.iter().cloned().fold(f64::INFINITY, f64::min)),
    );
    out.insert(
        "z_std_max".into(),
        json!(std.iter().cloned().fold(0.0, f64::max)),
    );
    out.insert("z_norm_mean".into(), json!(norm));
    out.insert(
        "active_dims".into(),
        json!(std.iter().filter(|s| **s > ACTIVE_STD).count()),
    );
    if let Some((codes, k)) = vq {
        let mut counts = vec![0usize; k];
        for &c in codes {
            counts[c] += 1;
        }
        let n = codes.len().max(1) as f64;
        let entropy: f64 = counts
            .iter()
            .filter(|c| **c > 0)
            .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
            .sum();
        out.insert(
            "codebook_used".into(),
            json!(counts.iter().filter(|c| **c > 0).count()),
        );
        out.insert("codebook_perplexity".into(), json!(entropy.exp()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_values() {
        // Two dims: the first varies (values 0, 2 -> std sqrt(2)), the second is constant.
        let z = [0.0, 1.0, 2.0, 1.0];
        let s = latent_stats(&z, 2, Some((&[0, 3], 4)));
        assert!((s["z_std_max"].as_f64().unwrap() - 2f64.sqrt()).abs() < 1e-9);
        assert_eq!(s["z_std_min"].as_f64().unwrap(), 0.0);
        assert_eq!(s["active_dims"].as_u64().unwrap(), 1);
        assert_eq!(s["codebook_used"].as_u64().unwrap(), 2);
        assert!((s["codebook_perplexity"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    }
}
