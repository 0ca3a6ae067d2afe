//! Linear probes: how much of the simulator's true state a frozen encoder's embeddings hold.
//!
//! A collapse statistic (std, effective rank) says the embeddings vary; a probe says whether
//! they vary with what matters. Frames come with the physical state (agent position, and each
//! movable object's position; rendered by the simulator through a [`ProbeFrames`], which for
//! the suite is `lam_eval::probe::sim_probe_set`), the encoder
//! embeds them, and a ridge regression (closed form, on the host) maps the embeddings to the
//! state. It is fit on some episodes and scored by R^2 on held-out episodes, for two feature
//! sets:
//!
//! - `pooled`: the mean token of each frame (D numbers; what lam's IDM sees),
//! - `tokens`: all tokens of the frame concatenated (N * D numbers).
//!
//! Ridge in dual form: with the centred training features `X` `[n, p]` and targets `Y`
//! `[n, k]`, `alpha = (X X^T + lambda I)^-1 Y` and predictions `X_test X^T alpha` (plus the
//! training mean of `Y`), so the cost is set by the number of frames, not by p. `lambda` is
//! chosen from a grid relative to `trace(X X^T) / n` on the last fifth of the training
//! episodes, then the fit is redone on all of them.

use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use lam_ingest::Normalization;
use serde::{Deserialize, Serialize};

use crate::sim::SimEncoder;

/// Which frames a sim probe uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Task played (`reach`, `push`, `pusht`, `sort`). Default `push`.
    pub task: String,
    /// Embodiment (`robot`, `robot-polar`, `human`). Default `robot`.
    pub domain: String,
    /// Episodes rendered; the last quarter is held out for scoring. Default 40.
    pub episodes: usize,
    /// Frames kept per episode. Default 30.
    pub frames_per_episode: usize,
    /// Control steps between kept frames. Default 2.
    pub stride: usize,
    /// Seed of the first episode (episode `i` uses `seed + i`); far from the seeds recordings
    /// start at, so probe episodes are not training episodes. Default 1,000,000.
    pub seed: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            task: "push".into(),
            domain: "robot".into(),
            episodes: 40,
            frames_per_episode: 30,
            stride: 2,
            seed: 1_000_000,
        }
    }
}

/// Frames with their true state.
#[derive(Clone, Debug)]
pub struct ProbeSet {
    /// Frame side.
    pub size: usize,
    /// Normalised frames `[n, 3, size, size]`, row-major.
    pub frames: Vec<f32>,
    /// Targets `[n, k]`, row-major.
    pub targets: Vec<f32>,
    /// Names of the k targets (`agent.x`, `agent.y`, `object0.x`, ..., then `wall0.pos`, ...
    /// for the interior walls: where `reach`'s door is).
    pub names: Vec<String>,
    /// Targets that are object positions (after the agent's two).
    pub object_targets: usize,
    /// Episode of each frame.
    pub episode: Vec<usize>,
}

impl ProbeSet {
    pub fn len(&self) -> usize {
        self.episode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.episode.is_empty()
    }
}

/// Where a probe's frames come from: `(settings, frame side, normalisation)` to frames with
/// their true state. The simulated suite's is `lam_eval::probe::sim_probe_set` (this crate
/// knows no simulator); runs that probe take one ([`crate::pretrain::PretrainRun`],
/// [`crate::end_to_end::EndToEndRun`]).
pub type ProbeFrames = fn(&ProbeConfig, usize, &Normalization) -> Result<ProbeSet>;

/// The frames of a configured probe, from `frames`; `None` when no probe is configured, or
/// (with a warning) when one is but no frame source was given.
pub fn probe_set(
    cfg: Option<&ProbeConfig>,
    frames: Option<ProbeFrames>,
    size: usize,
    norm: &Normalization,
) -> Result<Option<ProbeSet>> {
    match (cfg, frames) {
        (Some(c), Some(f)) => f(c, size, norm).map(Some),
        (Some(_), None) => {
            tracing::warn!("a state probe is configured but no frames were given: skipped");
            Ok(None)
        }
        (None, _) => Ok(None),
    }
}

/// Held-out R^2 of one ridge probe.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeFit {
    /// Features per frame.
    pub features: usize,
    /// The ridge penalty chosen (absolute, on centred features).
    pub lambda: f64,
    /// R^2 per target on the held-out frames.
    pub r2: Vec<f64>,
    /// R^2 of the agent's position (x and y pooled: 1 - SSE / SST over both).
    pub agent: f64,
    /// R^2 of the objects' positions (all objects, x and y), if there are objects.
    pub objects: Option<f64>,
    /// R^2 of the interior walls' positions (reach: where the door is), if there are any.
    pub walls: Option<f64>,
}

/// What [`probe_encoder`] reports.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub task: String,
    pub domain: String,
    pub train_frames: usize,
    pub test_frames: usize,
    pub targets: Vec<String>,
    /// On the per-frame mean token.
    pub pooled: ProbeFit,
    /// On all tokens concatenated.
    pub tokens: ProbeFit,
    /// On the keypoint positions alone (the last `2 keypoints` channels of the mean token:
    /// what `lam embed --pooling keypoints` keeps), for encoders with keypoints.
    pub keypoints: Option<ProbeFit>,
    /// On the keypoint positions plus [`CONTEXT_FEATURES`] episode-static context features of
    /// all tokens ([`crate::context`]: fitted on the probe's training episodes with the episode
    /// as the only label), for encoders with keypoints: whether the layout the keypoints drop
    /// can be put back without labels.
    pub keypoints_context: Option<ProbeFit>,
    /// Where those context features came from: `context.json` (the encoder folder's, fitted
    /// on unlabeled video by `lam encoder context`) or `probe episodes`.
    pub context_from: Option<String>,
}

/// Context features the probe adds to the keypoints.
pub const CONTEXT_FEATURES: usize = 4;

/// Ridge R^2 on held-out rows. `x_*` are `[n, p]`, `y_*` `[n, k]`, row-major.
pub fn ridge_probe(
    x_train: &[f32],
    y_train: &[f32],
    x_test: &[f32],
    y_test: &[f32],
    p: usize,
    k: usize,
) -> Result<(f64, Vec<f64>)> {
    let n = x_train.len() / p;
    ensure!(
        n >= 5 && x_train.len() == n * p && y_train.len() == n * k,
        "ridge: {n} training rows do not fit p = {p}, k = {k}"
    );
    // Choose lambda on the last fifth of the training rows.
    let cut = n - n / 5;
    let grid = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let inner = RidgeGram::new(&x_train[..cut * p], &y_train[..cut * k], p, k);
    let kern = inner.kernel(&x_train[cut * p..]);
    let mut best = (f64::NEG_INFINITY, grid[0]);
    for &g in &grid {
        // A penalty too small for a rank-deficient Gram (rounding) fails the Cholesky
        // factorisation: that grid point is skipped.
        let Ok(pred) = inner.predict(g * inner.scale(), &kern) else {
            continue;
        };
        let r2 = r2_scores(&y_train[cut * k..], &pred, k);
        let mean = r2.iter().sum::<f64>() / k as f64;
        if mean > best.0 {
            best = (mean, g);
        }
    }
    ensure!(
        best.0.is_finite(),
        "ridge: no penalty of the grid gave a solvable system"
    );
    let full = RidgeGram::new(x_train, y_train, p, k);
    let lambda = best.1 * full.scale();
    let pred = full.predict(lambda, &full.kernel(x_test))?;
    Ok((lambda, r2_scores(y_test, &pred, k)))
}

/// Centred training rows and their Gram matrix.
struct RidgeGram {
    x: Vec<f32>,
    mean_x: Vec<f32>,
    y: Vec<f64>,
    mean_y: Vec<f64>,
    gram: Vec<f64>,
    n: usize,
    p: usize,
    k: usize,
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

impl RidgeGram {
    fn new(x: &[f32], y: &[f32], p: usize, k: usize) -> Self {
        let n = x.len() / p;
        let mut mean_x = vec![0.0f64; p];
        for row in x.chunks_exact(p) {
            for (m, &v) in mean_x.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        let mean_x: Vec<f32> = mean_x.iter().map(|m| (m / n as f64) as f32).collect();
        let xc: Vec<f32> = x
            .chunks_exact(p)
            .flat_map(|row| row.iter().zip(&mean_x).map(|(v, m)| v - m))
            .collect();
        let mut mean_y = vec![0.0f64; k];
        for row in y.chunks_exact(k) {
            for (m, &v) in mean_y.iter_mut().zip(row) {
                *m += v as f64 / n as f64;
            }
        }
        let yc: Vec<f64> = y
            .chunks_exact(k)
            .flat_map(|row| row.iter().zip(&mean_y).map(|(&v, m)| v as f64 - m))
            .collect();
        let mut gram = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = dot(&xc[i * p..(i + 1) * p], &xc[j * p..(j + 1) * p]);
                gram[i * n + j] = v;
                gram[j * n + i] = v;
            }
        }
        RidgeGram {
            x: xc,
            mean_x,
            y: yc,
            mean_y,
            gram,
            n,
            p,
            k,
        }
    }

    /// `trace(X X^T) / n`: the scale lambda is given relative to.
    fn scale(&self) -> f64 {
        ((0..self.n).map(|i| self.gram[i * self.n + i]).sum::<f64>() / self.n as f64).max(1e-12)
    }

    /// Kernel rows `[m, n]` of rows `x` `[m, p]` against the centred training rows.
    fn kernel(&self, x: &[f32]) -> Vec<f64> {
        let (n, p) = (self.n, self.p);
        let mut out = Vec::with_capacity(x.len() / p * n);
        let mut row = vec![0.0f32; p];
        for r in x.chunks_exact(p) {
            for ((o, &v), m) in row.iter_mut().zip(r).zip(&self.mean_x) {
                *o = v - m;
            }
            out.extend((0..n).map(|j| dot(&row, &self.x[j * p..(j + 1) * p])));
        }
        out
    }

    /// Predictions `[m, k]` from kernel rows `kern` `[m, n]` with penalty `lambda`.
    fn predict(&self, lambda: f64, kern: &[f64]) -> Result<Vec<f64>> {
        let (n, k) = (self.n, self.k);
        let mut a = self.gram.clone();
        for i in 0..n {
            a[i * n + i] += lambda;
        }
        let alpha = cholesky_solve(&a, &self.y, n, k)?;
        let mut out = Vec::with_capacity(kern.len() / n * k);
        for row in kern.chunks_exact(n) {
            for t in 0..k {
                let v: f64 = row
                    .iter()
                    .enumerate()
                    .map(|(j, kv)| kv * alpha[j * k + t])
                    .sum();
                out.push(v + self.mean_y[t]);
            }
        }
        Ok(out)
    }
}

/// Solves `A X = B` for symmetric positive definite `A` `[n, n]` and `B` `[n, k]`, both
/// row-major.
fn cholesky_solve(a: &[f64], b: &[f64], n: usize, k: usize) -> Result<Vec<f64>> {
    let chol = nalgebra::DMatrix::from_row_slice(n, n, a)
        .cholesky()
        .filter(|c| c.l_dirty().iter().all(|v| v.is_finite()))
        .context("ridge: matrix not positive definite")?;
    let x = chol.solve(&nalgebra::DMatrix::from_row_slice(n, k, b));
    Ok((0..n)
        .flat_map(|i| (0..k).map(move |t| (i, t)))
        .map(|(i, t)| x[(i, t)])
        .collect())
}

/// One line of held-out probe R^2: agent, object and interior-wall positions, pooled and
/// per-token.
pub fn probe_line(name: &str, p: &ProbeReport) -> String {
    let objects = |f: &ProbeFit| {
        let objects = f
            .objects
            .map_or(String::new(), |o| format!(", objects {o:.3}"));
        let walls = f.walls.map_or(String::new(), |w| format!(", walls {w:.3}"));
        objects + &walls
    };
    let keypoints = p.keypoints.as_ref().map_or(String::new(), |k| {
        let ctx = p.keypoints_context.as_ref().map_or(String::new(), |c| {
            format!(
                "; keypoints + {} context features ({}): agent {:.3}{}",
                c.features - p.keypoints.as_ref().map_or(0, |k| k.features),
                p.context_from.as_deref().unwrap_or("?"),
                c.agent,
                objects(c)
            )
        });
        format!("; keypoints alone: agent {:.3}{}{ctx}", k.agent, objects(k))
    });
    format!(
        "{name}: probe R^2 ({} {}, {} held-out frames): mean token: agent {:.3}{}; all tokens: agent {:.3}{}{keypoints}",
        p.task,
        p.domain,
        p.test_frames,
        p.pooled.agent,
        objects(&p.pooled),
        p.tokens.agent,
        objects(&p.tokens)
    )
}

/// Per-target R^2 of predictions `pred` against `y`, both `[m, k]`.
pub fn r2_scores(y: &[f32], pred: &[f64], k: usize) -> Vec<f64> {
    let (sse, sst) = sums(y, pred, k);
    sse.iter()
        .zip(&sst)
        .map(|(e, t)| 1.0 - e / t.max(1e-12))
        .collect()
}

fn sums(y: &[f32], pred: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let m = y.len() / k;
    let mut mean = vec![0.0f64; k];
    for row in y.chunks_exact(k) {
        for (s, &v) in mean.iter_mut().zip(row) {
            *s += v as f64 / m as f64;
        }
    }
    let (mut sse, mut sst) = (vec![0.0f64; k], vec![0.0f64; k]);
    for (row, prow) in y.chunks_exact(k).zip(pred.chunks_exact(k)) {
        for t in 0..k {
            sse[t] += (row[t] as f64 - prow[t]).powi(2);
            sst[t] += (row[t] as f64 - mean[t]).powi(2);
        }
    }
    (sse, sst)
}

/// Fits a probe of `features` (`p` numbers per frame of `set`) on `train` rows and scores it
/// on `test` rows, with grouped R^2 for the agent (targets 0, 1), the objects and the interior
/// walls.
pub fn fit_features(
    features: &[f32],
    p: usize,
    set: &ProbeSet,
    train: &[usize],
    test: &[usize],
) -> Result<ProbeFit> {
    let k = set.names.len();
    let rows = |idx: &[usize], v: &[f32], w: usize| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| v[i * w..(i + 1) * w].iter().copied())
            .collect()
    };
    let (xt, yt) = (rows(train, features, p), rows(train, &set.targets, k));
    let (xv, yv) = (rows(test, features, p), rows(test, &set.targets, k));
    let (lambda, r2) = ridge_probe(&xt, &yt, &xv, &yv, p, k)?;
    // Grouped R^2 from the per-target R^2 and held-out variances: SSE_t = (1 - R^2_t) SST_t.
    let (_, sst) = sums(&yv, &vec![0.0; yv.len()], k);
    let group = |range: std::ops::Range<usize>| -> f64 {
        let sse: f64 = range.clone().map(|t| (1.0 - r2[t]) * sst[t]).sum();
        let tot: f64 = range.map(|t| sst[t]).sum();
        1.0 - sse / tot.max(1e-12)
    };
    Ok(ProbeFit {
        features: p,
        lambda,
        agent: group(0..2),
        objects: (set.object_targets > 0).then(|| group(2..2 + set.object_targets)),
        walls: (k > 2 + set.object_targets).then(|| group(2 + set.object_targets..k)),
        r2,
    })
}

/// Frames of the first three quarters of the episodes (fit) and of the rest (scored).
pub fn held_out_split(set: &ProbeSet) -> (Vec<usize>, Vec<usize>) {
    let episodes = set.episode.iter().max().map_or(0, |e| e + 1);
    let first_test = episodes - episodes / 4;
    (0..set.len()).partition(|&i| set.episode[i] < first_test)
}

/// Embeds `set` with `encoder` and scores pooled and per-token ridge probes, fit on the first
/// three quarters of the episodes and scored on the rest.
pub fn probe_encoder(
    encoder: &SimEncoder,
    set: &ProbeSet,
    cfg: &ProbeConfig,
    keypoints: usize,
    folder_context: Option<&crate::context::ContextProjection>,
    device: &Device,
) -> Result<ProbeReport> {
    ensure!(!set.is_empty(), "probe: no frames");
    let s = set.size;
    let per = 3 * s * s;
    let mut tokens = Vec::new();
    let mut pooled = Vec::new();
    let (mut n_tok, mut d) = (0, 0);
    for start in (0..set.len()).step_by(64) {
        let end = (start + 64).min(set.len());
        let x = Tensor::<4>::from_data(
            TensorData::new(
                set.frames[start * per..end * per].to_vec(),
                [end - start, 3, s, s],
            ),
            device,
        );
        [n_tok, d] = encoder.forward_host(x, &mut tokens, &mut pooled);
    }
    let (train, test) = held_out_split(set);
    let keypoint_features = |k: usize| -> Result<Vec<f32>> {
        ensure!(
            2 * k <= d,
            "probe: {k} keypoints do not fit in {d} channels"
        );
        Ok(pooled
            .chunks_exact(d)
            .flat_map(|row| row[d - 2 * k..].iter().copied())
            .collect())
    };
    let train_episodes = train
        .iter()
        .map(|&i| set.episode[i])
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    // Fitting the context needs more training episodes than features; with fewer (a tiny probe)
    // and no folder projection the row is left out.
    let keypoints_context = match keypoints {
        0 => None,
        _ if folder_context.is_none() && train_episodes <= CONTEXT_FEATURES => None,
        k => {
            let p = n_tok * d;
            let ctx = match folder_context {
                Some(c) => {
                    ensure!(
                        c.inputs == p,
                        "probe: the context projection takes {} numbers, the tokens are {p}",
                        c.inputs
                    );
                    c.clone()
                }
                None => {
                    let fitted: Vec<f32> = train
                        .iter()
                        .flat_map(|&i| tokens[i * p..(i + 1) * p].iter().copied())
                        .collect();
                    let videos: Vec<usize> = train.iter().map(|&i| set.episode[i]).collect();
                    crate::context::ContextProjection::fit(
                        &fitted,
                        p,
                        &videos,
                        CONTEXT_FEATURES,
                        1e-3,
                    )?
                }
            };
            let extra = ctx.apply(&tokens);
            let kp = keypoint_features(k)?;
            let c = ctx.outputs;
            let w = 2 * k + c;
            let both: Vec<f32> = kp
                .chunks_exact(2 * k)
                .zip(extra.chunks_exact(c))
                .flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<_>>())
                .collect();
            Some(fit_features(&both, w, set, &train, &test)?)
        }
    };
    Ok(ProbeReport {
        task: cfg.task.clone(),
        domain: cfg.domain.clone(),
        train_frames: train.len(),
        test_frames: test.len(),
        targets: set.names.clone(),
        pooled: fit_features(&pooled, d, set, &train, &test)?,
        tokens: fit_features(&tokens, n_tok * d, set, &train, &test)?,
        keypoints: match keypoints {
            0 => None,
            k => Some(fit_features(
                &keypoint_features(k)?,
                2 * k,
                set,
                &train,
                &test,
            )?),
        },
        context_from: keypoints_context.as_ref().map(|_| {
            match folder_context {
                Some(_) => crate::context::CONTEXT_FILE,
                None => "probe episodes",
            }
            .to_string()
        }),
        keypoints_context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn normal(rng: &mut StdRng) -> f32 {
        let u1 = rng.random::<f64>().max(1e-300);
        let u2 = rng.random::<f64>();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Rows `[n, p]` of features spread from an 8-dimensional Gaussian latent by the fixed
    /// mixing `mix` `[8, p]` (plus noise 0.1), and targets `[n, 2]`: the first the latent's
    /// first coordinate plus noise `noise`, the second pure noise. Like tokens holding a
    /// few positions in many channels.
    fn data(rng: &mut StdRng, n: usize, mix: &[f32], noise: f32) -> (Vec<f32>, Vec<f32>) {
        let p = mix.len() / 8;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let z: Vec<f32> = (0..8).map(|_| normal(rng)).collect();
            for j in 0..p {
                let v: f32 = (0..8).map(|l| z[l] * mix[l * p + j]).sum();
                x.push(v + 0.1 * normal(rng));
            }
            y.push(z[0] + 3.0 + noise * normal(rng));
            y.push(normal(rng));
        }
        (x, y)
    }

    #[test]
    fn ridge_recovers_a_linear_map_and_scores_noise_near_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        // p < n and p > n (the per-token case) both go through the dual form.
        for (n, p) in [(400, 16), (150, 600)] {
            let mix: Vec<f32> = (0..8 * p).map(|_| normal(&mut rng)).collect();
            // Signal variance 1 against noise variance 0.1^2: R^2 = 1 / 1.01 = 0.990 for the
            // first target if the map is found; the second target is unpredictable.
            let (xt, yt) = data(&mut rng, n, &mix, 0.1);
            let (xv, yv) = data(&mut rng, 200, &mix, 0.1);
            let (lambda, r2) = ridge_probe(&xt, &yt, &xv, &yv, p, 2).unwrap();
            assert!(lambda > 0.0);
            assert!(r2[0] > 0.95 && r2[0] <= 1.0, "n={n} p={p}: {r2:?}");
            assert!(r2[1] < 0.1, "n={n} p={p}: noise target scored {r2:?}");
        }
    }

    #[test]
    fn r2_is_one_for_exact_and_zero_for_the_mean() {
        let y = [1.0f32, 2.0, 3.0, 4.0];
        assert!((r2_scores(&y, &[1.0, 2.0, 3.0, 4.0], 1)[0] - 1.0).abs() < 1e-12);
        assert!(r2_scores(&y, &[2.5; 4], 1)[0].abs() < 1e-12);
    }
}
