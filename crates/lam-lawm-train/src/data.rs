//! Episodes held in memory as u8 frames, from lam-sim recordings (through lam-ingest's
//! recording reader: their provenance and hidden ground truth) or any other source lam-ingest
//! reads (LeRobot v2.1 / v3.0 datasets, folders of videos). Tasks and embodiments are the
//! names a recording declares; this crate knows no simulator.
//!
//! - Pretraining loads frames and instructions only ([`Labels::None`]): the action column,
//!   if the dataset has one, is discarded as soon as an episode is decoded.
//! - Finetuning loads the exported actions ([`Labels::Actions`]) and fails, naming the
//!   folder, when the dataset has none (e.g. the `human` domain).
//! - The CCA analysis loads the hidden true actions from `ground_truth/`
//!   ([`Labels::GroundTruth`]); training never does.
//!
//! Frames are stored channel-first as bytes, prepared by lam-ingest's one frame preparation
//! at the model's side (what the policy sees when it acts: [`lam_ingest::preprocess::rgb_bytes`]).
//! Pixel values enter the networks as `x / 255 - 0.5`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use lam_ingest::lerobot::recording::Dataset;
use lam_ingest::preprocess::unit_to_byte;
use lam_ingest::{ClipSource, LeRobotDataset};

use lam_lawm::instruction::InstructionEmbedder;
pub use lam_lawm::policy::ActionNorm;

/// Which action labels to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Labels {
    None,
    Actions,
    GroundTruth,
}

/// One episode in memory.
#[derive(Clone, Debug)]
pub struct Episode {
    /// `len` frames of `3 * S * S` bytes, channel-first.
    pub frames: Vec<u8>,
    pub len: usize,
    /// Instruction embedding the policy is conditioned on.
    pub instruction: Vec<f32>,
    /// Actions per frame (exported or ground truth, as asked).
    pub actions: Option<Vec<Vec<f32>>>,
    /// The suite task a lam-sim recording declares (`reach`, `push`, ...).
    pub task: Option<String>,
    /// The embodiment a lam-sim recording declares (`robot`, `human`, ...).
    pub domain: Option<String>,
}

/// Episodes of one or more datasets.
pub struct FrameData {
    pub episodes: Vec<Episode>,
    pub size: usize,
    pub action_dim: Option<usize>,
    pub dirs: Vec<PathBuf>,
    /// The words of the instructions the episodes are conditioned on (sorted, distinct).
    pub vocabulary: Vec<String>,
}

/// The suite's one language-conditioned task: its episode instruction says which box goes to
/// which zone.
pub const LANGUAGE_TASK: &str = "sort";

/// The text a policy is conditioned on for an episode of suite task `task` whose instruction
/// is `instruction`: the language task ([`LANGUAGE_TASK`]) on its episode instruction ("push
/// the red box into the blue zone"), the suite's other tasks on the task's name (as the LAWM
/// paper conditions its single-task policies); `None` (a dataset of unknown origin) keeps the
/// instruction.
pub fn conditioning_text(task: Option<&str>, instruction: &str) -> String {
    match task {
        Some(LANGUAGE_TASK) | None => instruction.to_string(),
        Some(t) => t.to_string(),
    }
}

/// Task and domain names a lam-sim recording declares in `meta/info.json`
/// (`provenance.task_name` / `domain_name`; recordings made before those fields were written
/// give the lower case of `task` / `domain`, the simulator's type names).
pub fn provenance(ds: &Dataset) -> (Option<String>, Option<String>) {
    let p = &ds.info()["lam_sim"]["provenance"];
    let name = |key: &str| {
        p[format!("{key}_name")]
            .as_str()
            .map(str::to_string)
            .or_else(|| p[key].as_str().map(str::to_lowercase))
    };
    (name("task"), name("domain"))
}

/// A CHW frame of side `s` translated by `(dx, dy)` pixels, the uncovered border filled by
/// repeating the edge pixels (DrQ's pad-and-crop with replicate padding).
pub fn shift_frame(f: &[u8], s: usize, (dx, dy): (i32, i32)) -> impl Iterator<Item = u8> + '_ {
    let last = s as i32 - 1;
    (0..3).flat_map(move |c| {
        (0..s as i32).flat_map(move |y| {
            let sy = (y - dy).clamp(0, last) as usize;
            (0..s as i32).map(move |x| {
                let sx = (x - dx).clamp(0, last) as usize;
                f[(c * s + sy) * s + sx]
            })
        })
    })
}

impl FrameData {
    /// Loads up to `max_episodes` episodes (all when `None`) from each folder of `dirs`.
    pub fn load(
        dirs: &[PathBuf],
        size: usize,
        embedder: &InstructionEmbedder,
        labels: Labels,
        max_episodes: Option<usize>,
    ) -> Result<Self> {
        ensure!(!dirs.is_empty(), "no dataset folder given");
        let mut l = Loading {
            size,
            embedder,
            labels,
            max_episodes,
            episodes: Vec::new(),
            action_dim: None,
            texts: std::collections::BTreeSet::new(),
        };
        for dir in dirs {
            let before = l.episodes.len();
            load_source(dir, sim_recording(dir).as_ref(), &mut l)?;
            ensure!(
                l.episodes.len() > before,
                "dataset {} has no episodes",
                dir.display()
            );
        }
        let Loading {
            episodes,
            action_dim,
            texts,
            ..
        } = l;
        Ok(Self {
            episodes,
            size,
            action_dim,
            dirs: dirs.to_vec(),
            vocabulary: lam_lawm::instruction::vocabulary_of(texts.iter().map(String::as_str)),
        })
    }

    /// `(episode, t)` pairs that have `chunk` frames (and actions) after t.
    pub fn windows(&self, chunk: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (e, ep) in self.episodes.iter().enumerate() {
            for t in 0..ep.len.saturating_sub(chunk) {
                out.push((e, t));
            }
        }
        out
    }

    fn frame(&self, e: usize, t: usize) -> &[u8] {
        let n = 3 * self.size * self.size;
        &self.episodes[e].frames[t * n..(t + 1) * n]
    }

    /// Frames `[B, K, 3, S, S]` with frame indices given per sample (already clamped), each
    /// sample's frames translated by its `(dx, dy)` of `shifts` (none when empty).
    fn frames_tensor(
        &self,
        picks: &[(usize, Vec<usize>)],
        shifts: &[(i32, i32)],
        device: &Device,
    ) -> Tensor<5> {
        let k = picks.first().map_or(0, |p| p.1.len());
        let s = self.size;
        let mut data = Vec::with_capacity(picks.len() * k * 3 * s * s);
        for (j, (e, ts)) in picks.iter().enumerate() {
            let shift = shifts.get(j).copied().unwrap_or((0, 0));
            for &t in ts {
                let f = self.frame(*e, t);
                if shift == (0, 0) {
                    data.extend(f.iter().map(|&v| v as f32 / 255.0 - 0.5));
                } else {
                    data.extend(shift_frame(f, s, shift).map(|v| v as f32 / 255.0 - 0.5));
                }
            }
        }
        Tensor::from_data(TensorData::new(data, [picks.len(), k, 3, s, s]), device)
    }

    /// Observation histories `[B, H, 3, S, S]` ending at each sample's t (the first frame
    /// repeated before an episode's start).
    pub fn history(&self, samples: &[(usize, usize)], h: usize, device: &Device) -> Tensor<5> {
        self.history_shifted(samples, h, &[], device)
    }

    /// [`FrameData::history`] with every sample's frames translated by its `(dx, dy)` of
    /// `shifts` (see [`shift_frame`]): the random-shift augmentation of policy training.
    pub fn history_shifted(
        &self,
        samples: &[(usize, usize)],
        h: usize,
        shifts: &[(i32, i32)],
        device: &Device,
    ) -> Tensor<5> {
        let picks: Vec<(usize, Vec<usize>)> = samples
            .iter()
            .map(|&(e, t)| (e, (0..h).map(|j| (t + j + 1).saturating_sub(h)).collect()))
            .collect();
        self.frames_tensor(&picks, shifts, device)
    }

    /// Frames t..t+n `[B, n+1, 3, S, S]`.
    pub fn future(&self, samples: &[(usize, usize)], n: usize, device: &Device) -> Tensor<5> {
        let picks: Vec<(usize, Vec<usize>)> = samples
            .iter()
            .map(|&(e, t)| (e, (t..=t + n).collect()))
            .collect();
        self.frames_tensor(&picks, &[], device)
    }

    /// Instruction embeddings `[B, I]`.
    pub fn instructions(&self, samples: &[(usize, usize)], device: &Device) -> Tensor<2> {
        let i = self.episodes[0].instruction.len();
        let data: Vec<f32> = samples
            .iter()
            .flat_map(|&(e, _)| self.episodes[e].instruction.clone())
            .collect();
        Tensor::from_data(TensorData::new(data, [samples.len(), i]), device)
    }

    /// Normalised action chunks a_t..a_t+n-1 `[B, n, d]`.
    pub fn action_chunks(
        &self,
        samples: &[(usize, usize)],
        n: usize,
        norm: &ActionNorm,
        device: &Device,
    ) -> Tensor<3> {
        let d = self.action_dim.expect("actions loaded");
        let mut data = Vec::with_capacity(samples.len() * n * d);
        for &(e, t) in samples {
            let acts = self.episodes[e].actions.as_ref().expect("actions loaded");
            for a in &acts[t..t + n] {
                data.extend(norm.normalize(a));
            }
        }
        Tensor::from_data(TensorData::new(data, [samples.len(), n, d]), device)
    }

    /// Mean and standard deviation of every action dimension (std floored at 1e-3).
    pub fn action_norm(&self) -> Result<ActionNorm> {
        let d = self.action_dim.context("no actions loaded to normalise")?;
        let mut sum = vec![0f64; d];
        let mut sq = vec![0f64; d];
        let mut n = 0f64;
        for ep in &self.episodes {
            for a in ep.actions.iter().flatten() {
                for i in 0..d {
                    sum[i] += a[i] as f64;
                    sq[i] += (a[i] as f64).powi(2);
                }
                n += 1.0;
            }
        }
        ensure!(n > 0.0, "no actions loaded to normalise");
        let mean: Vec<f32> = sum.iter().map(|s| (s / n) as f32).collect();
        let std: Vec<f32> = (0..d)
            .map(|i| ((sq[i] / n - (sum[i] / n).powi(2)).max(0.0).sqrt() as f32).max(1e-3))
            .collect();
        Ok(ActionNorm { mean, std })
    }

    /// Tasks present, in first-seen order.
    pub fn tasks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in self.episodes.iter().filter_map(|e| e.task.as_ref()) {
            if !out.contains(t) {
                out.push(t.clone());
            }
        }
        out
    }
}

/// Checks that every folder exists before any work starts (a clear error naming it).
pub fn check_dirs(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        ensure!(
            Path::new(d).is_dir(),
            "dataset folder {} does not exist",
            d.display()
        );
    }
    Ok(())
}

/// Episodes being loaded from several folders, and how.
struct Loading<'a> {
    size: usize,
    embedder: &'a InstructionEmbedder,
    labels: Labels,
    max_episodes: Option<usize>,
    episodes: Vec<Episode>,
    action_dim: Option<usize>,
    texts: std::collections::BTreeSet<String>,
}

impl Loading<'_> {
    /// Adds an episode of dataset `dir` conditioned on `text`, checking that its actions have
    /// the width of the earlier datasets'.
    fn push(&mut self, dir: &Path, text: String, episode: Episode) -> Result<()> {
        if let Some(a) = &episode.actions {
            let d = a.first().map_or(0, Vec::len);
            if let Some(prev) = self.action_dim
                && prev != d
            {
                bail!(
                    "{}: actions have {d} dimensions, earlier datasets have {prev}",
                    dir.display()
                );
            }
            self.action_dim = Some(d);
        }
        self.texts.insert(text);
        self.episodes.push(episode);
        Ok(())
    }
}

/// A lam-sim recording (a LeRobot v3 dataset whose meta declares its task and domain), if
/// `dir` is one: read through lam-ingest's recording reader for its hidden ground truth and
/// provenance.
fn sim_recording(dir: &Path) -> Option<Dataset> {
    let ds = Dataset::open(dir).ok()?;
    provenance(&ds).0.is_some().then_some(ds)
}

/// Frames per second LAWM samples a folder of videos at (LeRobot datasets: their own rate).
pub const VIDEO_FOLDER_FPS: f64 = 10.0;

/// The episodes of any source lam-ingest reads: a LeRobot v2.1 / v3.0 dataset (the first
/// camera of each episode at the dataset's rate, its task string as the instruction, its
/// `action` column as labels) or a folder of videos (one episode per video at
/// [`VIDEO_FOLDER_FPS`], no instruction, no labels). A lam-sim `recording` adds its task and
/// domain (the instruction is then [`conditioning_text`]'s) and its hidden true actions
/// ([`Labels::GroundTruth`]). Frames are prepared by lam-ingest's one frame preparation
/// (short side resized, centre crop), as the policy sees them when it acts.
fn load_source(dir: &Path, recording: Option<&Dataset>, l: &mut Loading) -> Result<()> {
    let (size, labels, max_episodes) = (l.size, l.labels, l.max_episodes);
    ensure!(
        labels != Labels::GroundTruth || recording.is_some(),
        "{}: hidden true actions exist only in lam-sim recordings (their ground_truth/)",
        dir.display()
    );
    let (task, domain) = recording.map(provenance).unwrap_or((None, None));
    // A recording is already open; anything else is opened here.
    let opened;
    let (lerobot, clips): (Option<&LeRobotDataset>, &dyn ClipSource) = match recording {
        Some(rec) => (Some(rec.lerobot()), rec.lerobot()),
        None => {
            opened = lam_ingest::Source::open(dir, None)
                .with_context(|| format!("cannot open dataset {}", dir.display()))?;
            match &opened {
                lam_ingest::Source::LeRobot(d) => (Some(d), d),
                lam_ingest::Source::Folder(f) => (None, f),
            }
        }
    };
    let fps = lerobot.map_or(VIDEO_FOLDER_FPS, |d| d.fps());
    if labels == Labels::Actions {
        ensure!(
            lerobot.and_then(|d| d.action_dim()).is_some(),
            "dataset {} has no action column (a lam-sim recording of a domain that hides its \
             actions, or no 1-D action feature); finetuning needs labeled demonstrations",
            dir.display()
        );
    }
    // One frame per clip: the whole episode, frame by frame, values in [0, 1].
    let spec = lam_ingest::ClipSpec {
        fps,
        frames: 1,
        size: size as u32,
        stride: 1,
        norm: lam_ingest::Normalization::UNIT,
        max_clips: None,
        phases: 1,
    };
    let mut groups = std::collections::BTreeSet::new();
    for item in clips.items() {
        // One camera per episode.
        if !groups.insert(item.group.clone()) {
            continue;
        }
        if max_episodes.is_some_and(|m| groups.len() > m) {
            break;
        }
        let mut frames_of = clips
            .clips(item, &spec)
            .with_context(|| format!("{}: cannot read {}", dir.display(), item.id))?;
        frames_of.sort_by_key(|c| c.index);
        if frames_of.len() < 2 {
            tracing::warn!(
                "{}: {} has fewer than 2 frames, left out",
                dir.display(),
                item.id
            );
            continue;
        }
        let mut frames = Vec::with_capacity(frames_of.len() * 3 * size * size);
        for c in &frames_of {
            frames.extend(c.data.iter().copied().map(unit_to_byte));
        }
        let (text, actions) = match (lerobot, item.episode) {
            (Some(d), Some(ep)) => {
                let text = d
                    .episode(ep)
                    .and_then(|e| e.tasks.first().cloned())
                    .unwrap_or_default();
                let actions = match labels {
                    Labels::None => None,
                    Labels::Actions | Labels::GroundTruth => {
                        // The episode's row of each frame, then that row's label.
                        let data = d.episode_data(ep)?;
                        let rows = frames_of
                            .iter()
                            .map(|c| {
                                data.row_at(c.times[0]).with_context(|| {
                                    format!(
                                        "{}: episode {ep} has no row at {:.3} s",
                                        dir.display(),
                                        c.times[0]
                                    )
                                })
                            })
                            .collect::<Result<Vec<usize>>>()?;
                        Some(match recording {
                            Some(rec) if labels == Labels::GroundTruth => {
                                let truth = rec.read_ground_truth(ep as usize)?.actions;
                                rows.iter()
                                    .map(|&r| {
                                        truth.get(r).cloned().with_context(|| {
                                            format!(
                                                "{}: episode {ep}'s ground truth has no row {r}",
                                                dir.display()
                                            )
                                        })
                                    })
                                    .collect::<Result<Vec<_>>>()?
                            }
                            _ => {
                                let table = data.actions.as_ref().with_context(|| {
                                    format!("{}: episode {ep} has no actions", dir.display())
                                })?;
                                rows.iter().map(|&r| table.row(r).to_vec()).collect()
                            }
                        })
                    }
                };
                (conditioning_text(task.as_deref(), &text), actions)
            }
            _ => (String::new(), None),
        };
        let episode = Episode {
            len: frames_of.len(),
            frames,
            instruction: l.embedder.embed(&text),
            actions,
            task: task.clone(),
            domain: domain.clone(),
        };
        l.push(dir, text, episode)?;
    }
    Ok(())
}
