//! A synthetic frame-embedding source with hidden actions, for tests and quick runs.
//!
//! Each clip is a scene on a `rows x cols` token grid. A per-clip random background gives
//! every token its own embedding; an agent moves over the grid by a hidden 2-D velocity
//! action `a_t` in `[-1, 1]^2` (`p_t+1 = clamp(p_t + step * a_t)`), and its presence adds a
//! Gaussian bump to the tokens near it, along a fixed "agent" direction plus a fixed code of
//! the token's cell (as a ViT token mixes content and position), so the agent's position
//! survives mean pooling over tokens. A learner that sees only the embeddings must recover
//! `a_t` from consecutive frames; the actions are written to the shards only when `labeled`
//! is set (as for robot data).

use std::path::Path;

use anyhow::{Result, ensure};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use crate::shards::{Clip, INDEX_FILE, ShardIndex, ShardWriter, Split};

/// Settings of the synthetic source. Defaults give a small CPU-sized set.
#[derive(Clone, Debug)]
pub struct SyntheticConfig {
    /// Clips to generate (default 512).
    pub clips: usize,
    /// Frames per clip, T (default 8).
    pub frames: usize,
    /// Token grid, N = rows * cols (default 4 x 4).
    pub grid: [usize; 2],
    /// Channels per token, D (default 32).
    pub dim: usize,
    /// Agent displacement per unit action, in grid widths (default 0.15).
    pub step: f32,
    /// Standard deviation of per-token observation noise (default 0.02).
    pub noise: f32,
    /// Fraction of clips in the validation split (default 0.1).
    pub val_fraction: f32,
    /// Write the actions into the shards (default false: unlabeled video).
    pub labeled: bool,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            clips: 512,
            frames: 8,
            grid: [4, 4],
            dim: 32,
            step: 0.15,
            noise: 0.02,
            val_fraction: 0.1,
            labeled: false,
            seed: 0,
        }
    }
}

/// Generates one clip: embeddings `[T, N, D]` and actions `[T - 1, 2]`.
/// `agent_dir`: `[D]`; `cell_codes`: `[N, D]`.
pub fn generate_clip(
    cfg: &SyntheticConfig,
    agent_dir: &[f32],
    cell_codes: &[f32],
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let [rows, cols] = cfg.grid;
    let n = rows * cols;
    let d = cfg.dim;
    let normal = |rng: &mut StdRng| -> f32 { StandardNormal.sample(rng) };
    let background: Vec<f32> = (0..n * d).map(|_| 0.5 * normal(rng)).collect();
    let mut pos = [rng.random_range(0.2..0.8f32), rng.random_range(0.2..0.8f32)];
    let mut actions = Vec::with_capacity((cfg.frames - 1) * 2);
    let mut emb = Vec::with_capacity(cfg.frames * n * d);
    let sigma2 = 2.0 * (0.6 / rows.max(cols) as f32).powi(2);
    for t in 0..cfg.frames {
        for r in 0..rows {
            for c in 0..cols {
                let centre = [
                    (r as f32 + 0.5) / rows as f32,
                    (c as f32 + 0.5) / cols as f32,
                ];
                let dist2 = (pos[0] - centre[0]).powi(2) + (pos[1] - centre[1]).powi(2);
                let presence = 2.0 * (-dist2 / sigma2).exp();
                let tok = r * cols + c;
                for k in 0..d {
                    let agent = agent_dir[k] + cell_codes[tok * d + k];
                    emb.push(background[tok * d + k] + presence * agent + cfg.noise * normal(rng));
                }
            }
        }
        if t + 1 < cfg.frames {
            let a = [
                rng.random_range(-1.0..1.0f32),
                rng.random_range(-1.0..1.0f32),
            ];
            pos = [
                (pos[0] + cfg.step * a[0]).clamp(0.0, 1.0),
                (pos[1] + cfg.step * a[1]).clamp(0.0, 1.0),
            ];
            actions.extend(a);
        }
    }
    (emb, actions)
}

/// Writes a synthetic shard set to `dir` and returns its index. A folder that already holds
/// shards is refused: the shard writer would append the new clips to the old ones.
pub fn write_synthetic(dir: &Path, cfg: &SyntheticConfig) -> Result<ShardIndex> {
    ensure!(
        !dir.join(INDEX_FILE).exists(),
        "{} already holds shards ({INDEX_FILE}); remove it or write elsewhere",
        dir.display()
    );
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let agent_dir: Vec<f32> = {
        let v: Vec<f32> = (0..cfg.dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter()
            .map(|x| x / norm * (cfg.dim as f32).sqrt())
            .collect()
    };
    let cell_codes: Vec<f32> = (0..cfg.grid[0] * cfg.grid[1] * cfg.dim)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let action_dim = cfg.labeled.then_some(2);
    let mut writer = ShardWriter::create(dir, cfg.frames, cfg.grid, cfg.dim, action_dim, 256)?;
    writer.set_source("kind", "synthetic");
    writer.set_source("seed", &cfg.seed.to_string());
    let n_val = ((cfg.clips as f32) * cfg.val_fraction).round() as usize;
    for id in 0..cfg.clips {
        let (emb, actions) = generate_clip(cfg, &agent_dir, &cell_codes, &mut rng);
        let split = if id >= cfg.clips - n_val {
            Split::Val
        } else {
            Split::Train
        };
        writer.push(
            split,
            Clip {
                embeddings: emb,
                actions: cfg.labeled.then_some(actions),
                id: id as i64,
            },
        )?;
    }
    writer.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::ShardSet;

    #[test]
    fn deterministic_and_labeled_when_asked() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let cfg = SyntheticConfig {
            clips: 20,
            labeled: true,
            ..Default::default()
        };
        write_synthetic(a.path(), &cfg).unwrap();
        write_synthetic(b.path(), &cfg).unwrap();
        let sa = ShardSet::open(a.path(), None).unwrap();
        let sb = ShardSet::open(b.path(), None).unwrap();
        assert_eq!(sa.len(), 20);
        assert_eq!(sa.clip(5), sb.clip(5));
        let acts = sa.actions(5).unwrap();
        assert_eq!(acts.len(), 7 * 2);
        assert!(acts.iter().all(|a| (-1.0..=1.0).contains(a)));
        assert_eq!(ShardSet::open(a.path(), Some(Split::Val)).unwrap().len(), 2);
        // Writing again into the same folder is refused rather than doubling its clips.
        let err = write_synthetic(a.path(), &cfg).unwrap_err().to_string();
        assert!(err.contains("already holds shards"), "{err}");
        assert_eq!(ShardSet::open(a.path(), None).unwrap().len(), 20);
    }
}
