//! Episode-static context features: the directions of a frame's feature vector that vary most
//! between videos and least within them.
//!
//! A scene's layout (where `reach`'s door is, a table's edge, a shelf) stays put while the
//! agent moves, so it is what a video's frames share and other videos' frames do not. With the
//! video each frame came from as the only label (unlabeled video has it for free), the
//! directions `w` maximising the ratio of between-video to within-video variance,
//! `w' S_b w / w' S_w w`, are found as a generalised symmetric eigenproblem (slow features
//! in the limit of a constant signal; Fisher's discriminant with videos as classes). The
//! keypoint embedding follows what moves and drops the layout; these few numbers put it back.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use serde::{Deserialize, Serialize};

/// File of an encoder folder that holds its fitted projection.
pub const CONTEXT_FILE: &str = "context.json";

/// A fitted projection: `context(x) = (x - mean) W`, each output scaled to unit variance over
/// the frames it was fitted on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContextProjection {
    /// Input features per frame.
    pub inputs: usize,
    /// Output features per frame.
    pub outputs: usize,
    /// Mean of the fitted frames, `[inputs]`.
    pub mean: Vec<f32>,
    /// `[inputs, outputs]`, row-major.
    pub weights: Vec<f32>,
    /// Between- to within-video variance ratio of each output (the eigenvalues), largest first.
    pub ratios: Vec<f64>,
}

impl ContextProjection {
    /// Fits `outputs` directions on `features` `[n, inputs]` (row-major) of frames from the
    /// videos `video` `[n]`. `shrink` (e.g. 1e-3) adds that fraction of the mean within-video
    /// variance to the diagonal, so directions the data never varies along stay harmless.
    pub fn fit(
        features: &[f32],
        inputs: usize,
        video: &[usize],
        outputs: usize,
        shrink: f64,
    ) -> Result<Self> {
        let n = video.len();
        ensure!(
            inputs > 0 && features.len() == n * inputs,
            "context: {} features for {n} frames of {inputs}",
            features.len()
        );
        let videos = video.iter().max().map_or(0, |v| v + 1);
        ensure!(
            outputs >= 1 && outputs < videos && outputs <= inputs,
            "context: {outputs} directions need more than {outputs} videos (got {videos}) and at \
             most {inputs} inputs"
        );
        let x = DMatrix::<f64>::from_row_iterator(n, inputs, features.iter().map(|&v| v as f64));
        let mean: DVector<f64> = x.row_mean().transpose();
        let mut sums = DMatrix::<f64>::zeros(videos, inputs);
        let mut counts = vec![0usize; videos];
        for (i, &v) in video.iter().enumerate() {
            counts[v] += 1;
            let mut row = sums.row_mut(v);
            row += x.row(i);
        }
        let mut within = DMatrix::<f64>::zeros(n, inputs);
        let mut between = DMatrix::<f64>::zeros(videos, inputs);
        for v in 0..videos {
            if counts[v] > 0 {
                let m = sums.row(v) / counts[v] as f64;
                between.set_row(v, &((&m - mean.transpose()) * (counts[v] as f64).sqrt()));
                sums.set_row(v, &m);
            }
        }
        for (i, &v) in video.iter().enumerate() {
            within.set_row(i, &(x.row(i) - sums.row(v)));
        }
        let mut s_w = within.transpose() * &within;
        let s_b = between.transpose() * &between;
        let ridge = shrink * s_w.trace() / inputs as f64 + 1e-12;
        for i in 0..inputs {
            s_w[(i, i)] += ridge;
        }
        let chol = s_w
            .cholesky()
            .ok_or_else(|| anyhow::anyhow!("context: within-video scatter is not positive"))?;
        // M = L^-1 S_b L^-T, then w = L^-T v for M's leading eigenvectors v.
        let l = chol.l();
        let linv_sb = l
            .solve_lower_triangular(&s_b)
            .ok_or_else(|| anyhow::anyhow!("context: singular factor"))?;
        let m = l
            .solve_lower_triangular(&linv_sb.transpose())
            .ok_or_else(|| anyhow::anyhow!("context: singular factor"))?;
        let m = (&m + m.transpose()) * 0.5;
        let eig = SymmetricEigen::new(m);
        let mut order: Vec<usize> = (0..inputs).collect();
        order.sort_by(|&a, &b| eig.eigenvalues[b].total_cmp(&eig.eigenvalues[a]));
        let lt = l.transpose();
        let mut weights = DMatrix::<f64>::zeros(inputs, outputs);
        let mut ratios = Vec::with_capacity(outputs);
        let centred = &x - DMatrix::from_fn(n, inputs, |_, c| mean[c]);
        for (j, &o) in order.iter().take(outputs).enumerate() {
            let v = eig.eigenvectors.column(o).into_owned();
            let w = lt
                .solve_upper_triangular(&v)
                .ok_or_else(|| anyhow::anyhow!("context: singular factor"))?;
            let out = &centred * &w;
            let std = (out.norm_squared() / n as f64).sqrt().max(1e-12);
            weights.set_column(j, &(w / std));
            ratios.push(eig.eigenvalues[o]);
        }
        Ok(Self {
            inputs,
            outputs,
            mean: mean.iter().map(|&v| v as f32).collect(),
            weights: weights
                .row_iter()
                .flat_map(|r| r.iter().map(|&v| v as f32).collect::<Vec<_>>())
                .collect(),
            ratios,
        })
    }

    /// The projection saved in encoder folder `dir`, if it has one.
    pub fn load_beside(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CONTEXT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let c: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a context projection", path.display()))?;
        ensure!(
            c.mean.len() == c.inputs && c.weights.len() == c.inputs * c.outputs && c.outputs > 0,
            "{}: {} means and {} weights for {} inputs x {} outputs",
            path.display(),
            c.mean.len(),
            c.weights.len(),
            c.inputs,
            c.outputs
        );
        ensure!(
            c.mean.iter().chain(&c.weights).all(|v| v.is_finite()),
            "{} holds a non-finite number",
            path.display()
        );
        Ok(Some(c))
    }

    /// Writes the projection into encoder folder `dir` (atomically).
    pub fn save_beside(&self, dir: &Path) -> Result<()> {
        lam_data::shards::write_atomic(
            &dir.join(CONTEXT_FILE),
            serde_json::to_string(self)?.as_bytes(),
        )
    }

    /// The context features `[n, outputs]` of `features` `[n, inputs]`.
    pub fn apply(&self, features: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(features.len() / self.inputs * self.outputs);
        for row in features.chunks_exact(self.inputs) {
            for j in 0..self.outputs {
                let mut acc = 0.0f32;
                for (i, &x) in row.iter().enumerate() {
                    acc += (x - self.mean[i]) * self.weights[i * self.outputs + j];
                }
                out.push(acc);
            }
        }
        out
    }
}

/// What [`fit_from_source`] used.
#[derive(Clone, Debug, Serialize)]
pub struct ContextFit {
    pub videos: usize,
    pub frames: usize,
    /// Between- to within-video variance ratio of each feature, largest first.
    pub ratios: Vec<f64>,
}

/// Fits `outputs` context features of `encoder`'s tokens (all of them, unpooled) on frames of
/// `source` read as clips of `spec`: at most `frames_per_video` frames per video (the first
/// ones) and `max_videos` videos.
pub fn fit_from_source(
    encoder: &crate::encoder::Encoder,
    source: &dyn lam_ingest::ClipSource,
    spec: &lam_ingest::ClipSpec,
    frames_per_video: usize,
    max_videos: usize,
    outputs: usize,
    device: &burn::prelude::Device,
) -> Result<(ContextProjection, ContextFit)> {
    use std::collections::HashMap;
    ensure!(
        encoder.pooling == crate::encoder::Pooling::None,
        "context: fit on unpooled tokens"
    );
    ensure!(
        frames_per_video >= 2,
        "context: needs at least 2 frames per video"
    );
    let size = spec.size as usize;
    let per = 3 * size * size;
    let mut videos: HashMap<String, usize> = HashMap::new();
    let mut kept = Vec::new();
    let (mut pixels, mut video) = (Vec::new(), Vec::new());
    lam_ingest::run(
        source,
        spec,
        &lam_ingest::RunOptions::default(),
        &mut |item, clips| {
            for clip in clips {
                let next = videos.len();
                let v = *videos.entry(item.id.clone()).or_insert(next);
                if v >= max_videos {
                    continue;
                }
                if kept.len() <= v {
                    kept.resize(v + 1, 0usize);
                }
                for frame in clip.data.chunks_exact(per) {
                    if kept[v] < frames_per_video {
                        pixels.extend_from_slice(frame);
                        video.push(v);
                        kept[v] += 1;
                    }
                }
            }
            Ok(())
        },
    )
    .with_context(|| format!("reading frames from {}", source.describe()))?;
    // Videos with a single frame say nothing about within-video variation.
    let used: Vec<usize> = (0..video.len()).filter(|&i| kept[video[i]] >= 2).collect();
    let mut renumber: HashMap<usize, usize> = HashMap::new();
    let video: Vec<usize> = used
        .iter()
        .map(|&i| {
            let next = renumber.len();
            *renumber.entry(video[i]).or_insert(next)
        })
        .collect();
    let mut tokens = Vec::new();
    let mut width = 0;
    for chunk in used.chunks(64) {
        let mut x = Vec::with_capacity(chunk.len() * per);
        for &i in chunk {
            x.extend_from_slice(&pixels[i * per..(i + 1) * per]);
        }
        let out = encoder.encode_host(x, [chunk.len(), 1, 3, size, size], device)?;
        width = out.len() / chunk.len();
        tokens.extend(out);
    }
    let fitted = ContextProjection::fit(&tokens, width, &video, outputs, 1e-3)?;
    let report = ContextFit {
        videos: renumber.len(),
        frames: video.len(),
        ratios: fitted.ratios.clone(),
    };
    Ok((fitted, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    /// Frames whose features mix a per-video constant (the layout) with a large per-frame
    /// motion: the fitted direction recovers the constant, the raw features do not.
    #[test]
    fn recovers_what_is_constant_within_each_video() {
        let mut rng = StdRng::seed_from_u64(3);
        let (videos, frames, p) = (30, 20, 6);
        let mix: Vec<f32> = (0..p).map(|_| rng.random_range(-1.0..1.0)).collect();
        let motion: Vec<f32> = (0..p).map(|_| rng.random_range(-1.0..1.0)).collect();
        let (mut x, mut video, mut layout) = (Vec::new(), Vec::new(), Vec::new());
        for v in 0..videos {
            let door: f32 = rng.random_range(-1.0..1.0);
            for _ in 0..frames {
                let agent: f32 = rng.random_range(-5.0..5.0);
                for i in 0..p {
                    x.push(door * mix[i] + agent * motion[i] + 0.01 * rng.random_range(-1.0..1.0));
                }
                video.push(v);
                layout.push(door);
            }
        }
        let ctx = ContextProjection::fit(&x, p, &video, 1, 1e-6).unwrap();
        assert!(ctx.ratios[0] > 100.0, "ratio {}", ctx.ratios[0]);
        let c = ctx.apply(&x);
        let corr = correlation(&c, &layout);
        assert!(corr.abs() > 0.99, "correlation with the layout {corr}");
        // Unit variance over the fitted frames.
        let var = c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len() as f64;
        assert!((var - 1.0).abs() < 1e-3, "variance {var}");
        assert!(ContextProjection::fit(&x, p, &video, 30, 1e-6).is_err());
    }

    fn correlation(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (
            a.iter().map(|&v| v as f64).sum::<f64>() / n,
            b.iter().map(|&v| v as f64).sum::<f64>() / n,
        );
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (x as f64 - ma, y as f64 - mb);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt()
    }
}
