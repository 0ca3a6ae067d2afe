//! LeRobot datasets (layouts v2.0/v2.1 and v3.0) as a clip source, with
//! per-episode actions and states.
//!
//! Items are (episode, camera) pairs; an item's clips come from the time
//! window the episode occupies in the camera's video file (the whole file in
//! v2, `from_timestamp..to_timestamp` of a shared file in v3, reached by
//! seeking). Clip times are seconds from the episode's start, the clock of
//! the `timestamp` column, so [`EpisodeData::row_at`] finds the action row
//! of each clip frame. The split groups an episode's cameras together.

pub(crate) mod columns;
mod episodes;
mod frames;
mod info;
pub mod recording;
mod template;

pub use episodes::{Episode, EpisodeVideo};
pub use frames::{EpisodeData, FrameTable, Matrix};
pub use info::{Feature, Info, Layout};
pub use template::{Value, render};

use crate::clip::Clip;
use crate::decode::{DecodeOptions, Window};
use crate::error::{IngestError, Result};
use crate::source::{ClipSource, Item};
use crate::spec::ClipSpec;
use crate::video::{ItemStats, for_each_video_clip};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How a LeRobot dataset is read.
#[derive(Clone, Debug, PartialEq)]
pub struct LeRobotOptions {
    /// Cameras (video feature keys) to take; `None` (default) takes all.
    pub cameras: Option<Vec<String>>,
    /// Feature holding the robot's actions. Default `action`.
    pub action_key: String,
    /// Feature holding the robot's state. Default `observation.state`.
    pub state_key: String,
    /// Decoder settings.
    pub decode: DecodeOptions,
}

impl Default for LeRobotOptions {
    fn default() -> Self {
        LeRobotOptions {
            cameras: None,
            action_key: "action".into(),
            state_key: "observation.state".into(),
            decode: DecodeOptions::default(),
        }
    }
}

/// An opened LeRobot dataset folder.
pub struct LeRobotDataset {
    root: PathBuf,
    info: Info,
    cameras: Vec<String>,
    episodes: Vec<Episode>,
    items: Vec<Item>,
    options: LeRobotOptions,
    /// The last data file read (v3 files hold many episodes, usually read in
    /// order).
    cache: Mutex<Option<(PathBuf, Arc<FrameTable>)>>,
}

impl LeRobotDataset {
    /// Opens the dataset at `root`: reads `meta/info.json` and the episode
    /// metadata. Errors name the file and the problem (missing folder,
    /// missing or malformed info.json, unknown version, a camera that is not
    /// a video feature, unreadable episode metadata).
    pub fn open(root: impl AsRef<Path>, options: &LeRobotOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| IngestError::io(&root, e))?;
        if !meta.is_dir() {
            return Err(IngestError::dataset(&root, "not a folder"));
        }
        let info_path = root.join("meta/info.json");
        let info = Info::read(&info_path)?;
        let all = info.video_keys();
        let cameras = match &options.cameras {
            None => all.clone(),
            Some(want) => {
                for c in want {
                    if !all.contains(c) {
                        return Err(IngestError::dataset(
                            &info_path,
                            format!("no video feature {c:?}; video features: {all:?}"),
                        ));
                    }
                }
                want.clone()
            }
        };
        if !cameras.is_empty() && info.video_path.is_none() {
            return Err(IngestError::dataset(
                &info_path,
                "video features but no video_path",
            ));
        }
        let episodes = episodes::read_episodes(&root, &info, &cameras)?;
        let mut items = Vec::with_capacity(episodes.len() * cameras.len());
        for ep in &episodes {
            let group = format!("episode_{:06}", ep.index);
            for (key, v) in &ep.videos {
                items.push(Item {
                    id: format!("{group}/{key}"),
                    group: group.clone(),
                    path: v.path.clone(),
                    window: Window {
                        start: Some(v.from_timestamp),
                        end: Some(v.to_timestamp),
                    },
                    episode: Some(ep.index),
                    camera: Some(key.clone()),
                });
            }
        }
        Ok(LeRobotDataset {
            root,
            info,
            cameras,
            episodes,
            items,
            options: options.clone(),
            cache: Mutex::new(None),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn info(&self) -> &Info {
        &self.info
    }

    pub fn layout(&self) -> Layout {
        self.info.layout()
    }

    /// Dataset frame rate (rows and videos).
    pub fn fps(&self) -> f64 {
        self.info.fps
    }

    /// Cameras taken, sorted unless chosen in [`LeRobotOptions::cameras`].
    pub fn cameras(&self) -> &[String] {
        &self.cameras
    }

    /// Episodes sorted by index.
    pub fn episodes(&self) -> &[Episode] {
        &self.episodes
    }

    pub fn episode(&self, index: u64) -> Option<&Episode> {
        self.episodes
            .binary_search_by_key(&index, |e| e.index)
            .ok()
            .map(|i| &self.episodes[i])
    }

    /// Shape of the action feature per info.json, if the dataset has one.
    pub fn action_shape(&self) -> Option<&[usize]> {
        self.info
            .features
            .get(&self.options.action_key)
            .map(|f| f.shape.as_slice())
    }

    /// Action dimension of a labeled dataset (a 1-D action feature of positive width).
    pub fn action_dim(&self) -> Option<usize> {
        match self.action_shape() {
            Some([a]) if *a > 0 => Some(*a),
            _ => None,
        }
    }

    /// Timestamps, actions and states of episode `index`. Errors name the
    /// data file: missing, unreadable, missing columns, or no rows for the
    /// episode.
    pub fn episode_data(&self, index: u64) -> Result<EpisodeData> {
        let ep = self.episode(index).ok_or_else(|| {
            IngestError::dataset(
                &self.root,
                format!("no episode {index} in the episode metadata"),
            )
        })?;
        let table = self.table(&ep.data_path)?;
        let data = table.episode(index);
        if data.is_empty() {
            return Err(IngestError::dataset(
                &ep.data_path,
                format!("no rows for episode {index}"),
            ));
        }
        Ok(data)
    }

    fn table(&self, path: &Path) -> Result<Arc<FrameTable>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((p, t)) = cache.as_ref()
                && p == path
            {
                return Ok(t.clone());
            }
        }
        let table = Arc::new(FrameTable::read(
            path,
            &self.options.action_key,
            &self.options.state_key,
        )?);
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((path.to_path_buf(), table.clone()));
        Ok(table)
    }
}

impl ClipSource for LeRobotDataset {
    fn describe(&self) -> String {
        format!(
            "LeRobot {} dataset {} ({} episodes, cameras {:?})",
            self.info.codebase_version,
            self.root.display(),
            self.episodes.len(),
            self.cameras
        )
    }

    fn items(&self) -> &[Item] {
        &self.items
    }

    fn for_each_clip(
        &self,
        item: &Item,
        spec: &ClipSpec,
        sink: &mut dyn FnMut(Clip) -> Result<()>,
    ) -> Result<ItemStats> {
        for_each_video_clip(
            &item.path,
            item.window,
            &item.id,
            spec,
            &self.options.decode,
            sink,
        )
    }
}
