//! The one interface every data source offers: a list of items, and clips
//! of an item.

use crate::clip::Clip;
use crate::decode::Window;
use crate::error::Result;
use crate::spec::ClipSpec;
use crate::video::ItemStats;
use serde::Serialize;
use std::path::PathBuf;

/// One unit a source yields clips from: a video file, or one camera of one
/// LeRobot episode (a time window of a video file).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Item {
    /// Unique and stable within the source: a video's path relative to the
    /// folder (`/`-separated), or `episode_000012/observation.images.top`.
    pub id: String,
    /// Split key: items sharing it land on the same side of a
    /// [`crate::Split`] (all cameras of an episode). For a video, its id.
    pub group: String,
    /// The file clips are decoded from.
    pub path: PathBuf,
    /// The part of the file that belongs to the item (file timeline).
    pub window: Window,
    /// LeRobot episode index, if any.
    pub episode: Option<u64>,
    /// LeRobot camera (video feature key), if any.
    pub camera: Option<String>,
}

/// A source of clips. Implementations list their items once, at open time,
/// in a deterministic order; [`ClipSource::for_each_clip`] may be called
/// for items in any order and from several threads.
pub trait ClipSource: Send + Sync {
    /// Human-readable description (kind and location), for logs.
    fn describe(&self) -> String;

    /// All items, in a deterministic order.
    fn items(&self) -> &[Item];

    /// Files found while listing the source that cannot be items (unreadable
    /// folders...), with the reason; [`crate::run`] reports them as skipped.
    fn listing_problems(&self) -> &[(PathBuf, String)] {
        &[]
    }

    /// Cuts `item` into clips following `spec`, handing each to `sink` as
    /// soon as it is complete (a long video never sits in memory whole).
    /// An error of `sink` is returned as is.
    fn for_each_clip(
        &self,
        item: &Item,
        spec: &ClipSpec,
        sink: &mut dyn FnMut(Clip) -> Result<()>,
    ) -> Result<ItemStats>;

    /// All clips of `item`, collected.
    fn clips(&self, item: &Item, spec: &ClipSpec) -> Result<Vec<Clip>> {
        let mut out = Vec::new();
        self.for_each_clip(item, spec, &mut |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Any source lam reads video from: a LeRobot dataset (v2.1 or v3.0, lam-sim recordings
/// included) or a folder of video files.
pub enum Source {
    Folder(crate::VideoFolder),
    LeRobot(crate::LeRobotDataset),
}

impl Source {
    /// A LeRobot dataset when `path/meta/info.json` exists, else a folder of videos;
    /// `cameras` picks a dataset's cameras (all by default).
    pub fn open(path: &std::path::Path, cameras: Option<Vec<String>>) -> Result<Self> {
        if path.join("meta/info.json").exists() {
            let opts = crate::LeRobotOptions {
                cameras,
                ..crate::LeRobotOptions::default()
            };
            Ok(Source::LeRobot(crate::LeRobotDataset::open(path, &opts)?))
        } else if path.is_dir() {
            Ok(Source::Folder(crate::VideoFolder::open(
                path,
                &crate::FolderOptions::default(),
            )?))
        } else {
            Err(crate::IngestError::Dataset {
                path: path.to_path_buf(),
                reason: "data source is not a folder (expected a folder of videos or a \
                         LeRobot dataset with meta/info.json)"
                    .into(),
            })
        }
    }

    pub fn as_clip_source(&self) -> &dyn ClipSource {
        match self {
            Source::Folder(f) => f,
            Source::LeRobot(d) => d,
        }
    }

    /// Action dimension of a labeled LeRobot dataset (a 1-D action feature).
    pub fn action_dim(&self) -> Option<usize> {
        match self {
            Source::LeRobot(d) => d.action_dim(),
            Source::Folder(_) => None,
        }
    }
}
