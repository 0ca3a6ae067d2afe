//! LeRobot v3.0 datasets as lam records them (the simulated suite's recordings): the writer,
//! and the recording's view through lam-ingest's one LeRobot reader (frames at their own
//! size, the provenance, the ground truth).
//!
//! Layout written (paths relative to the dataset root):
//!
//! ```text
//! meta/info.json                                  features, fps, path templates
//! meta/stats.json                                 per-feature min/max/mean/std
//! meta/tasks.parquet                              task_index, task
//! meta/episodes/chunk-000/file-000.parquet        one row per episode
//! data/chunk-{c:03}/file-{f:03}.parquet           one row per frame
//! videos/observation.image/chunk-{c:03}/file-{f:03}.mp4
//! ground_truth/frames.parquet                     true actions and states (every domain)
//! ground_truth/info.json                          names, seeds, goals
//! ```
//!
//! Frame rows carry `timestamp`, `frame_index`, `episode_index`, `index`,
//! `task_index`, `next.done`; for domains whose actions are observable also
//! `action`, `observation.state` (agent x, y) and `next.success`. The `human`
//! domain's actions and states are only in `ground_truth/`, never in `data/`.
//! Episodes are grouped `episodes_per_file` to a data file and a video file;
//! an episode's frames sit at `from_timestamp + timestamp` in its video.

use super::columns::Columns;
use super::{Episode, LeRobotDataset, LeRobotOptions, Matrix};
use crate::parquet_writer::TableBuilder;
use crate::preprocess::unit_to_byte;
use crate::source::ClipSource;
use crate::spec::{ClipSpec, Normalization};
use crate::video_writer::{VideoWriter, output_codec};
use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The camera feature name.
pub const VIDEO_KEY: &str = "observation.image";
/// Files per chunk folder.
pub const CHUNKS_SIZE: usize = 1000;

/// What a dataset holds, fixed when it is created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSpec {
    /// Frames per second.
    pub fps: u32,
    /// Frame side in pixels.
    pub size: u32,
    /// Names of the action components (empty: no `action` column).
    pub action_names: Vec<String>,
    /// Whether actions and agent positions go into the dataset (false for
    /// `human`; they still go to the ground truth).
    pub export_actions: bool,
    /// Names of the ground-truth state components.
    pub state_names: Vec<String>,
    /// Robot type written to `info.json`.
    pub robot_type: String,
    /// Episodes per data/video file [50].
    pub episodes_per_file: usize,
    /// Free-form description of how the data was made (task, domain, policy,
    /// seeds, physics), stored under `info.json` key `lam_sim`.
    pub provenance: Value,
}

/// One recorded episode, as handed to the writer.
#[derive(Clone, Debug, Default)]
pub struct EpisodeRecord {
    /// RGB frames, `size * size * 3` bytes each.
    pub frames: Vec<Vec<u8>>,
    /// Action taken at each frame (same count as frames).
    pub actions: Vec<Vec<f32>>,
    /// Ground-truth state at each frame.
    pub states: Vec<Vec<f32>>,
    /// Agent position at each frame (the robot's proprioception).
    pub agent_pos: Vec<[f32; 2]>,
    /// Success test at each frame.
    pub success: Vec<bool>,
    /// Language instruction.
    pub task: String,
    /// Extra ground truth about the episode (seed, goal), stored in
    /// `ground_truth/info.json`.
    pub info: Value,
}

#[derive(Default)]
struct FileRows {
    state: Vec<f32>,
    action: Vec<f32>,
    timestamp: Vec<f32>,
    frame_index: Vec<i64>,
    episode_index: Vec<i64>,
    index: Vec<i64>,
    task_index: Vec<i64>,
    done: Vec<bool>,
    success: Vec<bool>,
}

#[derive(Default)]
struct Stats {
    n: u64,
    min: Vec<f64>,
    max: Vec<f64>,
    sum: Vec<f64>,
    sq: Vec<f64>,
}

impl Stats {
    fn add(&mut self, x: &[f32]) {
        if self.min.is_empty() {
            self.min = vec![f64::INFINITY; x.len()];
            self.max = vec![f64::NEG_INFINITY; x.len()];
            self.sum = vec![0.0; x.len()];
            self.sq = vec![0.0; x.len()];
        }
        for (k, &v) in x.iter().enumerate() {
            let v = v as f64;
            self.min[k] = self.min[k].min(v);
            self.max[k] = self.max[k].max(v);
            self.sum[k] += v;
            self.sq[k] += v * v;
        }
        self.n += 1;
    }

    fn to_json(&self, image: bool) -> Value {
        let n = self.n.max(1) as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let std: Vec<f64> = self
            .sq
            .iter()
            .zip(&mean)
            .map(|(q, m)| (q / n - m * m).max(0.0).sqrt())
            .collect();
        // Image statistics are per channel with shape [3, 1, 1], as LeRobot stores them.
        let shape = |v: &[f64]| -> Value {
            if image {
                json!(v.iter().map(|x| vec![vec![*x]]).collect::<Vec<_>>())
            } else {
                json!(v)
            }
        };
        json!({"min": shape(&self.min), "max": shape(&self.max), "mean": shape(&mean), "std": shape(&std), "count": [self.n]})
    }
}

/// Writes a LeRobot v3 dataset. Everything goes to a temporary folder next
/// to the destination, renamed into place by [`DatasetWriter::finish`], so an
/// interrupted recording never leaves a half-written dataset behind.
pub struct DatasetWriter {
    root: PathBuf,
    tmp: PathBuf,
    spec: DatasetSpec,
    codec: &'static str,
    file_index: usize,
    episodes_in_file: usize,
    rows: FileRows,
    video: Option<VideoWriter>,
    video_frames: u64,
    episodes: Vec<EpisodeRow>,
    tasks: Vec<String>,
    total_frames: i64,
    gt_episode: Vec<i64>,
    gt_frame: Vec<i64>,
    gt_action: Vec<f32>,
    gt_state: Vec<f32>,
    gt_success: Vec<bool>,
    gt_info: Vec<Value>,
    action_stats: Stats,
    state_stats: Stats,
    image_stats: Stats,
}

fn chunk_file(file_index: usize) -> (usize, usize) {
    (file_index / CHUNKS_SIZE, file_index % CHUNKS_SIZE)
}

fn data_rel(chunk: usize, file: usize) -> String {
    format!("data/chunk-{chunk:03}/file-{file:03}.parquet")
}

fn video_rel(key: &str, chunk: usize, file: usize) -> String {
    format!("videos/{key}/chunk-{chunk:03}/file-{file:03}.mp4")
}

fn write_json(path: &Path, v: &Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(v)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

impl DatasetWriter {
    /// Starts a dataset at `root`, which must not exist yet (or be an empty
    /// folder).
    pub fn create(root: &Path, spec: DatasetSpec) -> anyhow::Result<Self> {
        if root.exists() {
            let empty = root.is_dir() && std::fs::read_dir(root)?.next().is_none();
            anyhow::ensure!(
                empty,
                "output {} already exists and is not an empty folder; choose a new path",
                root.display()
            );
            std::fs::remove_dir(root)?;
        }
        anyhow::ensure!(
            spec.episodes_per_file >= 1,
            "episodes_per_file must be at least 1"
        );
        let name = root
            .file_name()
            .ok_or_else(|| anyhow!("output path {} has no folder name", root.display()))?;
        let parent = root
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        for d in ["meta/episodes/chunk-000", "ground_truth"] {
            std::fs::create_dir_all(tmp.join(d))
                .with_context(|| format!("cannot create {}", tmp.join(d).display()))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            spec,
            codec: output_codec(),
            file_index: 0,
            episodes_in_file: 0,
            rows: FileRows::default(),
            video: None,
            video_frames: 0,
            episodes: vec![],
            tasks: vec![],
            total_frames: 0,
            gt_episode: vec![],
            gt_frame: vec![],
            gt_action: vec![],
            gt_state: vec![],
            gt_success: vec![],
            gt_info: vec![],
            action_stats: Stats::default(),
            state_stats: Stats::default(),
            image_stats: Stats::default(),
        })
    }

    /// Number of episodes added so far.
    pub fn episodes(&self) -> usize {
        self.episodes.len()
    }

    /// Appends an episode.
    pub fn add_episode(&mut self, ep: &EpisodeRecord) -> anyhow::Result<()> {
        let n = ep.frames.len();
        anyhow::ensure!(n > 0, "episode {} has no frames", self.episodes.len());
        anyhow::ensure!(
            ep.actions.len() == n
                && ep.states.len() == n
                && ep.agent_pos.len() == n
                && ep.success.len() == n,
            "episode {}: {} frames but {} actions, {} states, {} positions, {} success flags",
            self.episodes.len(),
            n,
            ep.actions.len(),
            ep.states.len(),
            ep.agent_pos.len(),
            ep.success.len()
        );
        let (chunk, file) = chunk_file(self.file_index);
        if self.video.is_none() {
            let rel = video_rel(VIDEO_KEY, chunk, file);
            let path = self.tmp.join(&rel);
            std::fs::create_dir_all(path.parent().expect("video path has a parent"))?;
            self.video = Some(VideoWriter::create(
                &path,
                self.spec.size,
                self.spec.size,
                self.spec.fps,
            )?);
            self.video_frames = 0;
        }
        let episode_index = self.episodes.len() as i64;
        let task_index = match self.tasks.iter().position(|t| *t == ep.task) {
            Some(i) => i,
            None => {
                self.tasks.push(ep.task.clone());
                self.tasks.len() - 1
            }
        } as i64;
        let fps = self.spec.fps as f64;
        let from_ts = self.video_frames as f64 / fps;
        let video = self.video.as_mut().expect("video opened above");
        for (t, frame) in ep.frames.iter().enumerate() {
            video.push(frame)?;
            if t % 4 == 0 {
                let mut sum = [0f64; 3];
                let mut sq = [0f64; 3];
                let mut lo = [255u8; 3];
                let mut hi = [0u8; 3];
                for px in frame.chunks_exact(3) {
                    for c in 0..3 {
                        let v = px[c] as f64 / 255.0;
                        sum[c] += v;
                        sq[c] += v * v;
                        lo[c] = lo[c].min(px[c]);
                        hi[c] = hi[c].max(px[c]);
                    }
                }
                let npx = (frame.len() / 3) as f64;
                let s = &mut self.image_stats;
                if s.min.is_empty() {
                    s.min = vec![f64::INFINITY; 3];
                    s.max = vec![f64::NEG_INFINITY; 3];
                    s.sum = vec![0.0; 3];
                    s.sq = vec![0.0; 3];
                }
                for c in 0..3 {
                    s.min[c] = s.min[c].min(lo[c] as f64 / 255.0);
                    s.max[c] = s.max[c].max(hi[c] as f64 / 255.0);
                    s.sum[c] += sum[c] / npx;
                    s.sq[c] += sq[c] / npx;
                }
                s.n += 1;
            }
            let r = &mut self.rows;
            if self.spec.export_actions {
                r.action.extend_from_slice(&ep.actions[t]);
                r.state.extend_from_slice(&ep.agent_pos[t]);
                self.action_stats.add(&ep.actions[t]);
                self.state_stats.add(&ep.agent_pos[t]);
                r.success.push(ep.success[t]);
            }
            r.timestamp.push((t as f64 / fps) as f32);
            r.frame_index.push(t as i64);
            r.episode_index.push(episode_index);
            r.index.push(self.total_frames + t as i64);
            r.task_index.push(task_index);
            r.done.push(t + 1 == n);
            self.gt_episode.push(episode_index);
            self.gt_frame.push(t as i64);
            self.gt_action.extend_from_slice(&ep.actions[t]);
            self.gt_state.extend_from_slice(&ep.states[t]);
            self.gt_success.push(ep.success[t]);
        }
        self.video_frames += n as u64;
        let to_ts = self.video_frames as f64 / fps;
        let (chunk_i, file_i) = (chunk as i64, file as i64);
        self.episodes.push(EpisodeRow {
            episode_index,
            tasks: vec![ep.task.clone()],
            length: n as i64,
            data_file: (chunk_i, file_i),
            dataset_range: (self.total_frames, self.total_frames + n as i64),
            video_file: (chunk_i, file_i),
            video_range: (from_ts, to_ts),
        });
        let mut info = ep.info.clone();
        if let Value::Object(m) = &mut info {
            m.insert("episode_index".into(), json!(episode_index));
            m.insert("task".into(), json!(ep.task));
        }
        self.gt_info.push(info);
        self.total_frames += n as i64;
        self.episodes_in_file += 1;
        if self.episodes_in_file >= self.spec.episodes_per_file {
            self.flush_file()?;
        }
        Ok(())
    }

    fn flush_file(&mut self) -> anyhow::Result<()> {
        if self.episodes_in_file == 0 {
            return Ok(());
        }
        let (chunk, file) = chunk_file(self.file_index);
        let rows = std::mem::take(&mut self.rows);
        let mut t = TableBuilder::new();
        if self.spec.export_actions {
            t.f32_vectors("observation.state", 2, rows.state);
            t.f32_vectors("action", self.spec.action_names.len(), rows.action);
        }
        t.f32("timestamp", rows.timestamp)
            .i64("frame_index", rows.frame_index)
            .i64("episode_index", rows.episode_index)
            .i64("index", rows.index)
            .i64("task_index", rows.task_index)
            .bool("next.done", rows.done);
        if self.spec.export_actions {
            t.bool("next.success", rows.success);
        }
        let path = self.tmp.join(data_rel(chunk, file));
        std::fs::create_dir_all(path.parent().expect("data path has a parent"))?;
        t.write(&path)?;
        if let Some(v) = self.video.take() {
            v.finish()?;
        }
        self.file_index += 1;
        self.episodes_in_file = 0;
        Ok(())
    }

    /// Writes the metadata and ground truth and moves the dataset into place.
    /// Returns the dataset root.
    pub fn finish(mut self) -> anyhow::Result<PathBuf> {
        anyhow::ensure!(
            !self.episodes.is_empty(),
            "no episodes were recorded for {}",
            self.root.display()
        );
        self.flush_file()?;
        let spec = &self.spec;
        let n_ep = self.episodes.len();
        // Episodes.
        let mut t = TableBuilder::new();
        let eps = &self.episodes;
        let col_i = |f: &dyn Fn(&EpisodeRow) -> i64| eps.iter().map(f).collect::<Vec<i64>>();
        let col_f = |f: &dyn Fn(&EpisodeRow) -> f64| eps.iter().map(f).collect::<Vec<f64>>();
        let vk = |s: &str| format!("videos/{VIDEO_KEY}/{s}");
        t.i64("episode_index", col_i(&|e| e.episode_index))
            .str_list("tasks", eps.iter().map(|e| e.tasks.clone()).collect())
            .i64("length", col_i(&|e| e.length))
            .i64("data/chunk_index", col_i(&|e| e.data_file.0))
            .i64("data/file_index", col_i(&|e| e.data_file.1))
            .i64("dataset_from_index", col_i(&|e| e.dataset_range.0))
            .i64("dataset_to_index", col_i(&|e| e.dataset_range.1))
            .i64(&vk("chunk_index"), col_i(&|e| e.video_file.0))
            .i64(&vk("file_index"), col_i(&|e| e.video_file.1))
            .f64(&vk("from_timestamp"), col_f(&|e| e.video_range.0))
            .f64(&vk("to_timestamp"), col_f(&|e| e.video_range.1))
            .i64("meta/episodes/chunk_index", vec![0; n_ep])
            .i64("meta/episodes/file_index", vec![0; n_ep]);
        t.write(&self.tmp.join("meta/episodes/chunk-000/file-000.parquet"))?;
        // Tasks.
        let mut t = TableBuilder::new();
        t.i64("task_index", (0..self.tasks.len() as i64).collect())
            .str("task", self.tasks.clone());
        t.write(&self.tmp.join("meta/tasks.parquet"))?;
        // Info.
        let s = spec.size;
        let scalar = |dtype: &str| json!({"dtype": dtype, "shape": [1], "names": null});
        let mut features = serde_json::Map::new();
        features.insert(
            VIDEO_KEY.into(),
            json!({"dtype": "video", "shape": [s, s, 3], "names": ["height", "width", "channels"],
                   "info": {"video.height": s, "video.width": s, "video.codec": self.codec, "video.pix_fmt": "yuv420p",
                            "video.is_depth_map": false, "video.fps": spec.fps, "video.channels": 3, "has_audio": false}}),
        );
        if spec.export_actions {
            features.insert(
                "observation.state".into(),
                json!({"dtype": "float32", "shape": [2], "names": ["x", "y"]}),
            );
            features.insert(
                "action".into(),
                json!({"dtype": "float32", "shape": [spec.action_names.len()], "names": spec.action_names}),
            );
        }
        for (k, d) in [
            ("timestamp", "float32"),
            ("frame_index", "int64"),
            ("episode_index", "int64"),
            ("index", "int64"),
            ("task_index", "int64"),
            ("next.done", "bool"),
        ] {
            features.insert(k.into(), scalar(d));
        }
        if spec.export_actions {
            features.insert("next.success".into(), scalar("bool"));
        }
        let n_files = self.file_index;
        let info = json!({
            "codebase_version": "v3.0",
            "robot_type": spec.robot_type,
            "total_episodes": n_ep,
            "total_frames": self.total_frames,
            "total_tasks": self.tasks.len(),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": spec.fps,
            "splits": {"train": format!("0:{n_ep}")},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features,
            "lam_sim": {"files": n_files, "episodes_per_file": spec.episodes_per_file, "provenance": spec.provenance},
        });
        write_json(&self.tmp.join("meta/info.json"), &info)?;
        // Stats.
        let mut stats = serde_json::Map::new();
        stats.insert(VIDEO_KEY.into(), self.image_stats.to_json(true));
        if spec.export_actions {
            stats.insert("action".into(), self.action_stats.to_json(false));
            stats.insert("observation.state".into(), self.state_stats.to_json(false));
        }
        write_json(&self.tmp.join("meta/stats.json"), &Value::Object(stats))?;
        // Ground truth.
        let mut t = TableBuilder::new();
        t.i64("episode_index", std::mem::take(&mut self.gt_episode))
            .i64("frame_index", std::mem::take(&mut self.gt_frame))
            .f32_vectors(
                "action",
                spec.action_names.len(),
                std::mem::take(&mut self.gt_action),
            )
            .f32_vectors(
                "state",
                spec.state_names.len(),
                std::mem::take(&mut self.gt_state),
            )
            .bool("success", std::mem::take(&mut self.gt_success));
        t.write(&self.tmp.join("ground_truth/frames.parquet"))?;
        write_json(
            &self.tmp.join("ground_truth/info.json"),
            &json!({"action_names": spec.action_names, "state_names": spec.state_names,
                    "actions_in_dataset": spec.export_actions, "episodes": self.gt_info, "provenance": spec.provenance}),
        )?;
        std::fs::rename(&self.tmp, &self.root).with_context(|| {
            format!(
                "cannot move {} to {}",
                self.tmp.display(),
                self.root.display()
            )
        })?;
        Ok(self.root.clone())
    }
}

impl Drop for DatasetWriter {
    fn drop(&mut self) {
        // An unfinished dataset is removed rather than left half-written.
        if self.tmp.exists() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// One episode's row of `meta/episodes`, as the writer keeps it.
#[derive(Clone, Debug, PartialEq)]
struct EpisodeRow {
    episode_index: i64,
    tasks: Vec<String>,
    length: i64,
    /// Data file chunk and file index.
    data_file: (i64, i64),
    /// Global frame index range `[from, to)`.
    dataset_range: (i64, i64),
    /// Video file chunk and file index.
    video_file: (i64, i64),
    /// Video time range `[from, to)` in seconds.
    video_range: (f64, f64),
}

/// One episode read back.
#[derive(Clone, Debug)]
pub struct EpisodeData {
    /// Frame width and height (recordings are square).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// RGB frames, `width * height * 3` bytes each, one per row of the episode.
    pub frames: Vec<Vec<u8>>,
    /// Actions per frame, when the dataset has an `action` column.
    pub actions: Option<Vec<Vec<f32>>>,
    /// `observation.state` per frame, when present.
    pub states: Option<Vec<Vec<f32>>>,
    /// Timestamps (seconds from the episode start).
    pub timestamps: Vec<f32>,
    /// Instruction.
    pub task: String,
}

/// Ground truth of one episode (from `ground_truth/frames.parquet`).
#[derive(Clone, Debug)]
pub struct GroundTruth {
    /// True action per frame.
    pub actions: Vec<Vec<f32>>,
    /// Full physical state per frame (see `SimState::to_vec`).
    pub states: Vec<Vec<f32>>,
    /// Success test per frame.
    pub success: Vec<bool>,
}

/// A recording opened for reading: lam-ingest's one LeRobot reader ([`LeRobotDataset`], which
/// reads any v2.1 / v3.0 dataset) with what only lam's recordings add: `meta/info.json` as
/// written (its `lam_sim` provenance) and the ground truth.
pub struct Dataset {
    inner: LeRobotDataset,
    info: Value,
    /// Every episode's ground truth, read from `ground_truth/frames.parquet` on first use.
    ground_truth: std::sync::OnceLock<Vec<GroundTruth>>,
}

impl Dataset {
    /// Opens the dataset at `root`, reading `meta/info.json` and the episode
    /// tables. Errors name the missing or malformed file.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        if !root.is_dir() {
            bail!("dataset folder {} does not exist", root.display());
        }
        let inner = LeRobotDataset::open(root, &LeRobotOptions::default())?;
        anyhow::ensure!(
            !inner.cameras().is_empty(),
            "{} declares no video feature",
            root.join("meta/info.json").display()
        );
        let info = inner.info().raw.clone();
        Ok(Self {
            inner,
            info,
            ground_truth: std::sync::OnceLock::new(),
        })
    }

    /// Number of episodes.
    pub fn len(&self) -> usize {
        self.inner.episodes().len()
    }

    /// Whether the dataset has no episodes.
    pub fn is_empty(&self) -> bool {
        self.inner.episodes().is_empty()
    }

    /// Frames per second.
    pub fn fps(&self) -> f64 {
        self.inner.fps()
    }

    /// The recording as the LeRobot dataset it is (its clips, episodes and rows).
    pub fn lerobot(&self) -> &LeRobotDataset {
        &self.inner
    }

    /// The parsed `meta/info.json`.
    pub fn info(&self) -> &Value {
        &self.info
    }

    /// The episodes, sorted by index.
    pub fn episodes(&self) -> &[Episode] {
        self.inner.episodes()
    }

    /// Reads the frames (the first camera, every row's frame at the video's own size, through
    /// the one decoder and frame preparation), actions and states of `episode`.
    pub fn read_episode(&self, episode: usize) -> anyhow::Result<EpisodeData> {
        let index = episode as u64;
        let meta = self.inner.episode(index).ok_or_else(|| {
            anyhow!(
                "episode {episode} is not in {} ({} episodes)",
                self.inner.root().display(),
                self.len()
            )
        })?;
        let rows = self.inner.episode_data(index)?;
        let camera = &self.inner.cameras()[0];
        let item = self
            .inner
            .items()
            .iter()
            .find(|i| i.episode == Some(index) && i.camera.as_ref() == Some(camera))
            .ok_or_else(|| anyhow!("episode {episode} has no {camera} video"))?;
        let side = self.inner.info().features[camera]
            .shape
            .first()
            .copied()
            .filter(|&s| s > 0)
            .with_context(|| {
                format!(
                    "{}: the {camera} feature has no frame size",
                    self.inner.root().join("meta/info.json").display()
                )
            })?;
        let spec = ClipSpec {
            fps: self.fps(),
            frames: 1,
            size: side as u32,
            stride: 1,
            norm: Normalization::UNIT,
            max_clips: None,
            phases: 1,
        };
        let mut clips = self.inner.clips(item, &spec)?;
        clips.sort_by_key(|c| c.index);
        anyhow::ensure!(
            clips.len() == rows.len() && rows.len() as u64 == meta.length,
            "{}: episode {episode} has {} rows (meta/episodes says {}) but {} video frames",
            item.path.display(),
            rows.len(),
            meta.length,
            clips.len()
        );
        // Values in [0, 1], channel-first, back to packed RGB bytes.
        let plane = side * side;
        let frames = clips
            .iter()
            .map(|c| {
                (0..plane)
                    .flat_map(|i| (0..3).map(move |ch| (i, ch)))
                    .map(|(i, ch)| unit_to_byte(c.data[ch * plane + i]))
                    .collect()
            })
            .collect();
        let vectors = |m: &Option<Matrix>| {
            m.as_ref()
                .map(|m| (0..m.rows).map(|r| m.row(r).to_vec()).collect())
        };
        Ok(EpisodeData {
            width: side as u32,
            height: side as u32,
            frames,
            actions: vectors(&rows.actions),
            states: vectors(&rows.states),
            timestamps: rows.timestamps.iter().map(|&t| t as f32).collect(),
            task: meta.tasks.first().cloned().unwrap_or_default(),
        })
    }

    /// Every episode's layout (walls, objects, zones: the simulator's `Layout`), in episode
    /// order, from `ground_truth/info.json`, parsed into `T`. Errors name the file and the
    /// episode.
    pub fn read_layouts<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<Vec<T>> {
        let path = self.inner.root().join("ground_truth/info.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let info: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", path.display()))?;
        let episodes = info["episodes"]
            .as_array()
            .ok_or_else(|| anyhow!("{} has no \"episodes\" list", path.display()))?;
        episodes
            .iter()
            .enumerate()
            .map(|(i, e)| {
                serde_json::from_value(e["layout"].clone())
                    .with_context(|| format!("{}: episode {i}'s layout", path.display()))
            })
            .collect()
    }

    /// The ground truth of `episode` from `ground_truth/frames.parquet` (the file is read once,
    /// on the first call, for every episode).
    pub fn read_ground_truth(&self, episode: usize) -> anyhow::Result<GroundTruth> {
        anyhow::ensure!(
            self.inner.episode(episode as u64).is_some(),
            "episode {episode} is not in {} ({} episodes)",
            self.inner.root().display(),
            self.len()
        );
        if self.ground_truth.get().is_none() {
            let all = self.read_all_ground_truth()?;
            // Another caller may have filled it meanwhile: the same file, the same values.
            let _ = self.ground_truth.set(all);
        }
        let all = self.ground_truth.get().expect("filled above");
        all.get(episode).cloned().ok_or_else(|| {
            anyhow!(
                "{}: no ground truth rows for episode {episode}",
                self.inner
                    .root()
                    .join("ground_truth/frames.parquet")
                    .display()
            )
        })
    }

    /// Every episode's ground truth (index = episode index), split from one read of
    /// `ground_truth/frames.parquet`.
    fn read_all_ground_truth(&self) -> anyhow::Result<Vec<GroundTruth>> {
        let path = self.inner.root().join("ground_truth/frames.parquet");
        let t = Columns::read(&path, &["episode_index", "action", "state", "success"])?;
        let ep = t.ints("episode_index")?;
        let (actions, states) = (t.matrix("action")?, t.matrix("state")?);
        let success = t.bools("success")?;
        let episodes = ep.iter().map(|&e| e.max(0) as usize + 1).max().unwrap_or(0);
        let mut all = vec![
            GroundTruth {
                actions: Vec::new(),
                states: Vec::new(),
                success: Vec::new(),
            };
            episodes.max(self.len())
        ];
        for (i, &e) in ep.iter().enumerate() {
            anyhow::ensure!(e >= 0, "{}: row {i} has episode_index {e}", path.display());
            let g = &mut all[e as usize];
            g.actions.push(actions.row(i).to_vec());
            g.states.push(states.row(i).to_vec());
            g.success.push(success[i]);
        }
        Ok(all)
    }
}
