//! The oracle encoder of the simulated suite: a frame's embedding is the simulator's true
//! state (agent position, object positions and angles; [`lam_sim::SimState::oracle_embedding`]),
//! one token per frame. It is what a perfect vision system would give, so rows planned on it
//! tell whether dynamics and planning work when vision does.
//!
//! Pass `oracle` wherever an encoder folder is taken: `lam embed --encoder oracle` reads a
//! lam-sim recording's ground truth (`ground_truth/frames.parquet`, every domain) instead of
//! decoding its video ([`embed_oracle`], here because it needs no network: the suite's data
//! alone), and `lam plan eval --encoder oracle` reads the environment's state. Clips follow
//! the same rules as lam-encoder's embedding: frames resampled to `fps` (which must divide the
//! recording's rate, [`lam_ingest::spec::frame_step`]), `frames` per clip, `stride` resampled
//! frames between clip starts, split by episode; a labeled recording (actions exported, i.e.
//! not `human`) gives action blocks `[T - 1, k A]`, the k = recording fps / clip fps actions
//! taken between two clip frames.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use lam_data::shards::{ShardWriter, write_atomic};
use lam_data::{Split as ShardSplit, shards::Clip as ShardClip};
use lam_ingest::spec::frame_step;
use lam_ingest::{Split, Subset};
use serde_json::json;

/// The name that selects the oracle encoder.
pub const ORACLE: &str = "oracle";

/// Whether `path` names the oracle encoder rather than a folder.
pub fn is_oracle(path: &Path) -> bool {
    path.as_os_str() == ORACLE
}

/// What an oracle embedding job reads and writes (the subset of `lam embed`'s settings that
/// apply to it; defaults as `lam embed`'s).
#[derive(Clone, Debug)]
pub struct OracleOptions {
    /// A lam-sim recording.
    pub data: PathBuf,
    /// Output shard folder.
    pub out: PathBuf,
    /// Clip frame rate (4).
    pub fps: f64,
    /// Frames per clip T (8).
    pub frames: usize,
    /// Resampled frames between clip starts; `None` = `frames` (no overlap).
    pub stride: Option<usize>,
    /// Clips per shard file (256).
    pub clips_per_shard: usize,
    /// Validation fraction of the split by episode (0.02).
    pub val_fraction: f64,
    /// Split seed (0).
    pub split_seed: u64,
    /// At most this many clips per episode (per phase).
    pub max_clips_per_item: Option<usize>,
    /// Grids per episode (1), as `lam embed --phases` on video: phase p cuts the clips again
    /// from recording frame `p k / phases` on (the frame on screen 1 / (phases fps) seconds
    /// later per phase), so with `phases` = k (recording frames per clip frame) every step
    /// starts a clip.
    pub phases: usize,
}

impl OracleOptions {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            out,
            fps: 4.0,
            frames: 8,
            stride: None,
            clips_per_shard: 256,
            val_fraction: 0.02,
            split_seed: 0,
            max_clips_per_item: None,
            phases: 1,
        }
    }
}

/// What an oracle embedding job wrote.
#[derive(Clone, Debug)]
pub struct OracleSummary {
    pub clips: usize,
    pub episodes: usize,
    pub dim: usize,
    /// Width of one stored action block (k A), when the recording is labeled.
    pub action_dim: Option<usize>,
    /// Recording frames per clip frame (k).
    pub frame_step: usize,
    pub seconds: f64,
}

/// Writes oracle shards of the lam-sim recording `opts.data` into `opts.out` (replacing any
/// shard set there: the job takes seconds, so it does not resume).
pub fn embed_oracle(opts: &OracleOptions) -> Result<OracleSummary> {
    let started = Instant::now();
    ensure!(
        opts.frames >= 2,
        "--frames must be at least 2 (shards hold transitions), got {}",
        opts.frames
    );
    let data = crate::Dataset::open(&opts.data).with_context(|| {
        format!(
            "the oracle encoder reads lam-sim recordings; {} is not one",
            opts.data.display()
        )
    })?;
    ensure!(
        !data.is_empty(),
        "{} holds no episodes",
        opts.data.display()
    );
    let k = frame_step(data.fps(), opts.fps)?;
    let labeled = data.info()["features"].get("action").is_some();
    // Per-episode layouts (walls, objects) from the ground truth.
    let layouts = crate::layouts(&data)?;
    ensure!(
        layouts.len() == data.len(),
        "{}: {} episodes but {} layouts in its ground truth",
        opts.data.display(),
        data.len(),
        layouts.len()
    );
    let stride = opts.stride.unwrap_or(opts.frames);
    ensure!(stride > 0, "--stride must be at least 1");
    ensure!(
        (1..=k).contains(&opts.phases),
        "--phases must be between 1 and the {k} recording frames per clip frame, got {}",
        opts.phases
    );
    let split = Split {
        val_fraction: opts.val_fraction,
        seed: opts.split_seed,
    };
    if opts.out.join(lam_data::shards::INDEX_FILE).exists() {
        std::fs::remove_dir_all(&opts.out)
            .with_context(|| format!("cannot replace {}", opts.out.display()))?;
    }
    let mut writer: Option<ShardWriter> = None;
    let (mut clips, mut dim, mut action_dim) = (0usize, 0usize, None);
    let mut ids: BTreeMap<i64, String> = BTreeMap::new();
    for ep in 0..data.len() {
        let gt = data.read_ground_truth(ep)?;
        let n = gt.states.len();
        ensure!(
            gt.actions.len() == n,
            "{}: episode {ep} has {n} states but {} actions",
            opts.data.display(),
            gt.actions.len()
        );
        let layout = &layouts[ep];
        let emb: Vec<Vec<f32>> = gt
            .states
            .iter()
            .map(|s| lam_sim::scene::oracle_from_vec(s, layout))
            .collect();
        if emb.iter().flatten().any(|v| !v.is_finite()) {
            anyhow::bail!(
                "{}: episode {ep} has a non-finite state",
                opts.data.display()
            );
        }
        let d = emb.first().map_or(0, |e| e.len());
        let a = gt.actions.first().map_or(0, |a| a.len());
        if writer.is_none() {
            dim = d;
            action_dim = labeled.then_some(k * a);
            writer = Some(ShardWriter::create(
                &opts.out,
                opts.frames,
                [1, 1],
                d,
                action_dim,
                opts.clips_per_shard,
            )?);
        }
        let w = writer.as_mut().expect("created above");
        let group = format!("episode_{ep:06}");
        let side = match split.subset(&group) {
            Subset::Train => ShardSplit::Train,
            Subset::Val => ShardSplit::Val,
        };
        ids.insert(ep as i64, group);
        let span = (opts.frames - 1) * k;
        for phase in 0..opts.phases {
            let offset = phase * k / opts.phases;
            let mut c = 0usize;
            while offset + c * stride * k + span < n {
                if opts.max_clips_per_item.is_some_and(|m| c >= m) {
                    break;
                }
                let first = offset + c * stride * k;
                let mut embeddings = Vec::with_capacity(opts.frames * d);
                for j in 0..opts.frames {
                    embeddings.extend_from_slice(&emb[first + j * k]);
                }
                let actions = labeled.then(|| {
                    let mut v = Vec::with_capacity((opts.frames - 1) * k * a);
                    for row in &gt.actions[first..first + span] {
                        v.extend_from_slice(row);
                    }
                    v
                });
                w.push(
                    side,
                    ShardClip {
                        embeddings,
                        actions,
                        id: ep as i64,
                    },
                )?;
                clips += 1;
                c += 1;
            }
        }
    }
    let mut writer = writer.context("no episode gave a clip")?;
    for (key, value) in [
        ("encoder", ORACLE.to_string()),
        ("architecture", ORACLE.to_string()),
        ("data", opts.data.display().to_string()),
        ("fps", opts.fps.to_string()),
        ("frame_step", k.to_string()),
        ("stride", stride.to_string()),
        ("phases", opts.phases.to_string()),
        ("val_fraction", opts.val_fraction.to_string()),
    ] {
        writer.set_source(key, &value);
    }
    writer.finish()?;
    write_atomic(
        &opts.out.join("ids.json"),
        serde_json::to_string_pretty(&ids)?.as_bytes(),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    write_atomic(
        &opts.out.join("report.json"),
        serde_json::to_string_pretty(&json!({
            "source": opts.data.display().to_string(),
            "encoder": ORACLE,
            "written": clips,
            "seconds": seconds,
            "frame_step": k,
        }))?
        .as_bytes(),
    )?;
    ensure!(
        clips > 0,
        "no episode of {} is long enough for one clip",
        opts.data.display()
    );
    Ok(OracleSummary {
        clips,
        episodes: data.len(),
        dim,
        action_dim,
        frame_step: k,
        seconds,
    })
}
