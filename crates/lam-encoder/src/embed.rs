//! From a data source through an encoder to the embedding shards `lam train` reads.
//!
//! ```text
//! source (video folder | LeRobot dataset | lam-sim recording)
//!   -> clips [T, 3, S, S] (lam-ingest: fps, frames, size, stride, normalisation)
//!   -> encoder, B clips at a time -> [T, N, D] per clip
//!   -> shards in OUT (lam-data ShardWriter; train / val by episode or video, 98/2 default)
//! ```
//!
//! Output folder:
//!
//! - `index.json`, `shard-NNNNN.safetensors`: the shard set; the index's `source` map records
//!   the encoder, data and clip settings;
//! - `report.json`: the run's [`lam_ingest::IngestReport`] (items read, clips, every skipped
//!   file with its reason) plus clip counts of this invocation;
//! - `ids.json`: clip id -> item id (video path or `episode_NNNNNN/camera`).
//!
//! Every file is written to a temporary name and renamed. Resuming: shards listed in an
//! existing index are kept; the clips they hold (counted per split, in the source's
//! deterministic order) are skipped without encoding, and the clips of an interrupted shard
//! are encoded again. The settings recorded in the index must match the new run's.
//!
//! Labeled sources: when a LeRobot dataset has an action feature of shape `[A]`, the shards
//! carry action blocks `[clips, T-1, k A]`: when the clip rate divides the dataset's rate,
//! k = dataset fps / clip fps and the block of transition t is the k action rows from clip
//! frame t's row up to frame t+1's (every action taken between the two frames, in order); when
//! it does not divide, k = 1 and the row in effect at frame t's time (`EpisodeData::row_at`).
//! The index's source map records `action_block` = k.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use lam_data::shards::{INDEX_FILE, ShardIndex, ShardWriter, write_atomic};
use lam_data::{Split as ShardSplit, shards::Clip as ShardClip};
use lam_ingest::{
    Clip, ClipSpec, EpisodeData, IngestError, IngestReport, Item, Part, RunOptions, Split, Subset,
};
use serde::Serialize;
use serde_json::json;

use crate::encoder::{Encoder, Pooling};
use crate::vjepa2::FrameMode;

/// Settings of one embedding job.
#[derive(Clone, Debug)]
pub struct EmbedOptions {
    /// Source: a folder of videos, or a LeRobot dataset folder (has `meta/info.json`; lam-sim
    /// recordings are such datasets).
    pub data: PathBuf,
    /// Encoder folder (Hugging Face model or sim-encoder checkpoint).
    pub encoder: PathBuf,
    /// Output shard folder.
    pub out: PathBuf,
    /// Clip frame rate. Default 4.
    pub fps: f64,
    /// Frames per clip T. Default 8.
    pub frames: usize,
    /// Frame side; `None` takes the encoder's training size.
    pub size: Option<u32>,
    /// Resampled frames between clip starts; `None` = `frames` (no overlap).
    pub stride: Option<usize>,
    /// Clips encoded together. Default 8.
    pub batch: usize,
    /// Clips per shard file. Default 256.
    pub clips_per_shard: usize,
    /// Validation fraction of the split by video / episode. Default 0.02.
    pub val_fraction: f64,
    /// Split seed. Default 0.
    pub split_seed: u64,
    /// At most this many clips per item (per phase).
    pub max_clips_per_item: Option<usize>,
    /// Time grids per item (see [`ClipSpec::phases`]). Default 1.
    pub phases: usize,
    /// Token pooling. Default none.
    pub pooling: Pooling,
    /// V-JEPA 2 frame mapping. Default per-frame.
    pub frame_mode: FrameMode,
    /// Items decoded in parallel. Default 2.
    pub workers: usize,
    /// LeRobot cameras to take (default all).
    pub cameras: Option<Vec<String>>,
    /// Show a progress bar.
    pub progress: bool,
    /// Embed only this part of the source's items (`lam embed --part K/N`, for a job array),
    /// into `out/part-K-of-N`; [`merge_parts`] joins the finished parts into `out`.
    pub part: Option<Part>,
}

impl EmbedOptions {
    pub fn new(data: PathBuf, encoder: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            encoder,
            out,
            fps: 4.0,
            frames: 8,
            size: None,
            stride: None,
            batch: 8,
            clips_per_shard: 256,
            val_fraction: 0.02,
            split_seed: 0,
            max_clips_per_item: None,
            phases: 1,
            pooling: Pooling::None,
            frame_mode: FrameMode::PerFrame,
            workers: 2,
            cameras: None,
            progress: false,
            part: None,
        }
    }
}

/// What a job did.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedSummary {
    /// Clips encoded and written by this invocation.
    pub written: usize,
    /// Clips already in finished shards, skipped.
    pub resumed: usize,
    /// Clips left out because their actions could not be read.
    pub without_actions: usize,
    pub seconds: f64,
    /// Clips encoded per second (decode included).
    pub clips_per_sec: f64,
    pub frames_per_sec: f64,
    pub report: IngestReport,
    pub index: ShardIndex,
}

/// The sources `lam embed` reads (owned by lam-ingest).
pub use lam_ingest::Source;

struct Pending {
    split: ShardSplit,
    id: i64,
    data: Vec<f32>,
    actions: Option<Vec<f32>>,
}

/// Runs an embedding job (see the module docs).
pub fn embed(opts: &EmbedOptions, device: &Device) -> Result<EmbedSummary> {
    if opts.part.is_some() {
        ensure!(
            !opts.out.join(INDEX_FILE).exists(),
            "{} already holds the merged shards of its parts",
            opts.out.display()
        );
    }
    match opts.part {
        Some(part) => embed_into(opts, &opts.out.join(part.name()), device),
        None => embed_into(opts, &opts.out, device),
    }
}

fn embed_into(opts: &EmbedOptions, out_dir: &Path, device: &Device) -> Result<EmbedSummary> {
    ensure!(
        opts.frames >= 2,
        "--frames must be at least 2 (shards hold transitions), got {}",
        opts.frames
    );
    ensure!(opts.batch > 0, "--batch must be at least 1");
    let encoder = Encoder::load(&opts.encoder, device)?
        .with_pooling(opts.pooling)
        .with_frame_mode(opts.frame_mode);
    let size = opts.size.unwrap_or(encoder.info.default_size as u32);
    encoder.check_size(size as usize)?;
    let spec = ClipSpec {
        fps: opts.fps,
        frames: opts.frames,
        size,
        stride: opts.stride.unwrap_or(opts.frames),
        norm: encoder.info.norm,
        max_clips: opts.max_clips_per_item,
        phases: opts.phases,
    };
    spec.validate()?;
    let source = Source::open(&opts.data, opts.cameras.clone())?;
    let clip_source = source.as_clip_source();
    let block = match &source {
        Source::LeRobot(d) => lam_ingest::spec::frame_step(d.fps(), opts.fps).unwrap_or(1),
        Source::Folder(_) => 1,
    };
    // More grids than recording frames per clip frame would cut the same clips twice.
    if let Source::LeRobot(d) = &source
        && let Ok(k) = lam_ingest::spec::frame_step(d.fps(), opts.fps)
    {
        ensure!(
            opts.phases <= k,
            "--phases must be between 1 and the {k} recording frames per clip frame, got {}",
            opts.phases
        );
    }
    let action_dim = source.action_dim().map(|a| a * block);
    let grid = encoder.grid(size as usize);
    anyhow::ensure!(
        !matches!(opts.pooling, Pooling::Keypoints | Pooling::KeypointsContext)
            || encoder.keypoints() > 0,
        "--pooling keypoints needs a sim encoder with keypoints; {} has none",
        opts.encoder.display()
    );
    anyhow::ensure!(
        opts.pooling != Pooling::KeypointsContext || encoder.context.is_some(),
        "--pooling keypoints-context needs {}/{}: fit it first with `lam encoder context`",
        opts.encoder.display(),
        crate::context::CONTEXT_FILE
    );
    let dim = encoder.out_dim();

    let settings: BTreeMap<String, String> = [
        ("encoder", opts.encoder.display().to_string()),
        ("architecture", encoder.info.architecture.clone()),
        ("data", opts.data.display().to_string()),
        ("fps", spec.fps.to_string()),
        ("size", spec.size.to_string()),
        ("stride", spec.stride.to_string()),
        ("max_clips_per_item", format!("{:?}", spec.max_clips)),
        ("pooling", format!("{:?}", opts.pooling).to_lowercase()),
        ("frame_mode", format!("{:?}", opts.frame_mode)),
        ("val_fraction", opts.val_fraction.to_string()),
        ("split_seed", opts.split_seed.to_string()),
        ("cameras", format!("{:?}", opts.cameras)),
        ("action_block", block.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    // One grid is what shard sets made before phases existed hold: they stay resumable.
    .chain((spec.phases > 1).then(|| ("phases".to_string(), spec.phases.to_string())))
    .chain(opts.part.map(|p| (PART_KEY.to_string(), p.to_string())))
    .collect();
    fs::create_dir_all(out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    remove_temporaries(&out_dir)?;
    let mut done = BTreeMap::from([(ShardSplit::Train, 0usize), (ShardSplit::Val, 0usize)]);
    if out_dir.join(INDEX_FILE).exists() {
        let old = ShardIndex::load(&out_dir)?;
        for (k, v) in &settings {
            let was = old.source.get(k);
            if was != Some(v) {
                bail!(
                    "{}: cannot resume: it was made with {k} = {}, this run has {k} = {v}; \
                     use another --out or delete the folder",
                    out_dir.join(INDEX_FILE).display(),
                    was.map_or("(unset)", |s| s.as_str())
                );
            }
        }
        for e in &old.shards {
            *done.get_mut(&e.split).expect("two splits") += e.clips;
        }
    }
    let mut writer = ShardWriter::create(
        &out_dir,
        opts.frames,
        grid,
        dim,
        action_dim,
        opts.clips_per_shard,
    )?;
    for (k, v) in &settings {
        writer.set_source(k, v);
    }
    let split = Split {
        val_fraction: opts.val_fraction,
        seed: opts.split_seed,
    };
    let item_index: BTreeMap<&str, usize> = clip_source
        .items()
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let bar = if opts.progress {
        ProgressBar::new(clip_source.items().len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} items {msg}",
        )
        .expect("valid template"),
    );
    let started = Instant::now();
    let mut seen = BTreeMap::from([(ShardSplit::Train, 0usize), (ShardSplit::Val, 0usize)]);
    let mut pending: Vec<Pending> = Vec::new();
    let mut written = 0usize;
    let mut resumed = 0usize;
    let mut ids: BTreeMap<i64, String> = BTreeMap::new();
    let mut no_actions: Vec<(PathBuf, String)> = Vec::new();
    let mut episode_cache: Option<(u64, Arc<EpisodeData>)> = None;
    let (t, s) = (opts.frames, size as usize);
    let flush =
        |pending: &mut Vec<Pending>, writer: &mut ShardWriter, written: &mut usize| -> Result<()> {
            if pending.is_empty() {
                return Ok(());
            }
            let b = pending.len();
            let mut data = Vec::with_capacity(b * t * 3 * s * s);
            for p in pending.iter() {
                data.extend_from_slice(&p.data);
            }
            let out = encoder.encode_host(data, [b, t, 3, s, s], device)?;
            let per = out.len() / b;
            for (i, p) in pending.drain(..).enumerate() {
                writer.push(
                    p.split,
                    ShardClip {
                        embeddings: out[i * per..(i + 1) * per].to_vec(),
                        actions: p.actions,
                        id: p.id,
                    },
                )?;
                *written += 1;
            }
            Ok(())
        };
    let report = lam_ingest::run(
        clip_source,
        &spec,
        &RunOptions {
            split: None,
            part: opts.part,
            workers: opts.workers.max(1),
        },
        &mut |item: &Item, clips: Vec<Clip>| {
            let side = match split.subset(&item.group) {
                Subset::Train => ShardSplit::Train,
                Subset::Val => ShardSplit::Val,
            };
            let id = item
                .episode
                .map_or_else(|| item_index[item.id.as_str()] as i64, |e| e as i64);
            ids.insert(id, item.group.clone());
            let episode = match (&source, action_dim, item.episode) {
                (Source::LeRobot(d), Some(_), Some(ep)) => match &episode_cache {
                    Some((e, data)) if *e == ep => Some(data.clone()),
                    _ => match d.episode_data(ep) {
                        Ok(data) => {
                            let data = Arc::new(data);
                            episode_cache = Some((ep, data.clone()));
                            Some(data)
                        }
                        Err(e) => {
                            no_actions.push((item.path.clone(), e.to_string()));
                            bar.inc(1);
                            return Ok(());
                        }
                    },
                },
                _ => None,
            };
            for clip in clips {
                let count = seen.get_mut(&side).expect("two splits");
                *count += 1;
                if *count <= done[&side] {
                    resumed += 1;
                    continue;
                }
                let actions = match (&episode, action_dim) {
                    (Some(ep), Some(a)) => match clip_actions(ep, &clip, a / block, block) {
                        Ok(v) => Some(v),
                        Err(reason) => {
                            no_actions.push((item.path.clone(), format!("{reason} ({})", item.id)));
                            continue;
                        }
                    },
                    _ => None,
                };
                pending.push(Pending {
                    split: side,
                    id,
                    data: clip.data,
                    actions,
                });
                if pending.len() >= opts.batch {
                    flush(&mut pending, &mut writer, &mut written)
                        .map_err(|e| IngestError::sink(format!("{e:#}")))?;
                }
            }
            bar.inc(1);
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "{written} clips, {:.1} clips/s",
                written as f64 / secs
            ));
            Ok(())
        },
    )?;
    flush(&mut pending, &mut writer, &mut written)?;
    let index = writer.finish()?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mut report = report;
    let without_actions = no_actions.len();
    for (p, r) in no_actions {
        report.skip(p, r);
    }
    let clips_per_sec = written as f64 / seconds.max(1e-9);
    let summary = EmbedSummary {
        written,
        resumed,
        without_actions,
        seconds,
        clips_per_sec,
        frames_per_sec: clips_per_sec * opts.frames as f64,
        report,
        index,
    };
    write_atomic(
        &out_dir.join("report.json"),
        serde_json::to_string_pretty(&json!({
            "source": clip_source.describe(),
            "encoder": encoder.info.path,
            "written": summary.written,
            "resumed": summary.resumed,
            "seconds": summary.seconds,
            "clips_per_sec": summary.clips_per_sec,
            "report": summary.report,
        }))?
        .as_bytes(),
    )?;
    let mut all_ids: BTreeMap<i64, String> = match fs::read_to_string(out_dir.join("ids.json")) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_default(),
        Err(_) => BTreeMap::new(),
    };
    all_ids.extend(ids);
    write_atomic(
        &out_dir.join("ids.json"),
        serde_json::to_string_pretty(&all_ids)?.as_bytes(),
    )?;
    Ok(summary)
}

/// The setting a part's shard index records its part under (`K/N`).
const PART_KEY: &str = "part";

/// What [`merge_parts`] did.
#[derive(Clone, Debug, Serialize)]
pub struct MergedParts {
    pub parts: usize,
    pub clips: usize,
    pub index: ShardIndex,
}

/// Joins the parts `dir/part-K-of-N` of a job array (`lam embed --part K/N --out dir`) into
/// one shard folder `dir`, after checking that all N parts are there, each finished (its
/// `report.json`, written when a part's job ends) and made with the same settings but the
/// part. Clips keep their source ids (the parts share one item numbering); the parts stay,
/// so a failed merge can be repeated.
pub fn merge_parts(dir: &Path) -> Result<MergedParts> {
    ensure!(
        !dir.join(INDEX_FILE).exists(),
        "{} already holds merged shards",
        dir.display()
    );
    let mut parts: Vec<(Part, PathBuf)> = fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            Part::from_name(&name).map(|p| (p, e.path()))
        })
        .collect();
    parts.sort_by_key(|(p, _)| (p.of, p.index));
    let Some(&(first, _)) = parts.first() else {
        bail!(
            "{} has no part-K-of-N folders (written by lam embed --part K/N --out {})",
            dir.display(),
            dir.display()
        );
    };
    let n = first.of;
    ensure!(
        parts.iter().all(|(p, _)| p.of == n),
        "{} holds parts of different counts ({}); one job array per folder",
        dir.display(),
        parts
            .iter()
            .map(|(p, _)| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let missing: Vec<String> = (1..=n)
        .filter(|k| !parts.iter().any(|(p, _)| p.index == *k))
        .map(|k| format!("{k}/{n}"))
        .collect();
    ensure!(
        missing.is_empty(),
        "{}: parts {} are missing; run lam embed --part K/N for each",
        dir.display(),
        missing.join(", ")
    );
    let mut indexes = Vec::new();
    for (p, path) in &parts {
        ensure!(
            path.join("report.json").exists(),
            "part {p} ({}) has not finished; rerun its lam embed --part {p} to resume it",
            path.display()
        );
        indexes.push(ShardIndex::load(path)?);
    }
    let settings = |ix: &ShardIndex| {
        let mut s = ix.source.clone();
        s.remove(PART_KEY);
        s
    };
    let first_ix = &indexes[0];
    for ((p, path), ix) in parts.iter().zip(&indexes).skip(1) {
        ensure!(
            settings(ix) == settings(first_ix)
                && (ix.frames, ix.grid, ix.dim, ix.action_dim)
                    == (
                        first_ix.frames,
                        first_ix.grid,
                        first_ix.dim,
                        first_ix.action_dim
                    ),
            "part {p} ({}) was made with other settings or shapes than part 1/{n}; \
             every part of a job array takes the same command but --part",
            path.display()
        );
    }
    let mut writer = ShardWriter::create(
        dir,
        first_ix.frames,
        first_ix.grid,
        first_ix.dim,
        first_ix.action_dim,
        256,
    )?;
    for (k, v) in settings(first_ix) {
        writer.set_source(&k, &v);
    }
    writer.set_source("parts", &n.to_string());
    let mut ids: BTreeMap<i64, String> = BTreeMap::new();
    let mut clips = 0;
    for (_, path) in &parts {
        for split in [ShardSplit::Train, ShardSplit::Val] {
            let set = lam_data::ShardSet::open(path, Some(split))?;
            for i in 0..set.len() {
                writer.push(
                    split,
                    ShardClip {
                        embeddings: set.clip(i),
                        actions: set.actions(i),
                        id: set.clip_id(i),
                    },
                )?;
                clips += 1;
            }
        }
        if let Ok(text) = fs::read_to_string(path.join("ids.json")) {
            let part_ids: BTreeMap<i64, String> = serde_json::from_str(&text)
                .with_context(|| format!("malformed {}", path.join("ids.json").display()))?;
            ids.extend(part_ids);
        }
    }
    write_atomic(
        &dir.join("ids.json"),
        serde_json::to_string_pretty(&ids)?.as_bytes(),
    )?;
    let index = writer.finish()?;
    Ok(MergedParts {
        parts: n,
        clips,
        index,
    })
}

/// Action blocks `[T-1, k A]` of a clip: for each frame but the last, the `block` rows from the
/// row in effect at its time on.
fn clip_actions(ep: &EpisodeData, clip: &Clip, a: usize, block: usize) -> Result<Vec<f32>, String> {
    let m = ep
        .actions
        .as_ref()
        .ok_or_else(|| format!("episode {} has no action column", ep.episode))?;
    if m.cols != a {
        return Err(format!(
            "episode {} has actions of width {}, info.json says {a}",
            ep.episode, m.cols
        ));
    }
    let mut out = Vec::with_capacity((clip.frames - 1) * a * block);
    for &time in &clip.times[..clip.frames - 1] {
        let first = ep.row_at(time).ok_or_else(|| {
            format!(
                "episode {}: no data row at or before t = {time:.3}s",
                ep.episode
            )
        })?;
        for row in first..first + block {
            if row >= m.rows {
                return Err(format!(
                    "episode {}: action block of {block} rows from row {first} runs past its \
                     {} rows",
                    ep.episode, m.rows
                ));
            }
            let values = m.row(row);
            if values.iter().any(|v| !v.is_finite()) {
                return Err(format!(
                    "episode {}: non-finite action in row {row}",
                    ep.episode
                ));
            }
            out.extend_from_slice(values);
        }
    }
    Ok(out)
}

/// Removes temporary files an interrupted job left (`*.tmp-PID`).
fn remove_temporaries(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_string());
        if name.is_some_and(|n| n.contains(".tmp-")) && path.is_file() {
            fs::remove_file(&path)
                .with_context(|| format!("cannot remove stale {}", path.display()))?;
        }
    }
    Ok(())
}
