//! A folder of video files, searched recursively by extension.

use crate::clip::Clip;
use crate::decode::{DecodeOptions, Window};
use crate::error::{IngestError, Result};
use crate::source::{ClipSource, Item};
use crate::spec::ClipSpec;
use crate::video::{ItemStats, for_each_video_clip};
use std::path::{Path, PathBuf};

/// How a video folder is searched.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderOptions {
    /// File extensions taken as videos, compared case-insensitively.
    /// Default: mp4, webm, mkv, avi, mov.
    pub extensions: Vec<String>,
    /// Follow symbolic links to files and folders. Default true (datasets are
    /// often assembled from links); link cycles are not followed twice.
    pub follow_links: bool,
    /// Decoder settings.
    pub decode: DecodeOptions,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions {
            extensions: ["mp4", "webm", "mkv", "avi", "mov"]
                .map(String::from)
                .to_vec(),
            follow_links: true,
            decode: DecodeOptions::default(),
        }
    }
}

/// Every video under a folder, one item per file, in sorted path order.
/// Item ids are paths relative to the folder with `/` separators; the split
/// groups by that id.
pub struct VideoFolder {
    root: PathBuf,
    items: Vec<Item>,
    problems: Vec<(PathBuf, String)>,
    decode: DecodeOptions,
}

impl VideoFolder {
    /// Lists the videos under `root`. Fails when `root` is missing or not a
    /// folder; unreadable subfolders are kept as listing problems.
    pub fn open(root: impl AsRef<Path>, options: &FolderOptions) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let meta = std::fs::metadata(&root).map_err(|e| IngestError::io(&root, e))?;
        if !meta.is_dir() {
            return Err(IngestError::dataset(&root, "not a folder"));
        }
        let exts: Vec<String> = options
            .extensions
            .iter()
            .map(|e| e.to_lowercase())
            .collect();
        let mut files = Vec::new();
        let mut problems = Vec::new();
        let mut seen = std::collections::HashSet::new();
        walk(
            &root,
            options.follow_links,
            &exts,
            &mut files,
            &mut problems,
            &mut seen,
        );
        files.sort();
        let items = files
            .into_iter()
            .map(|path| {
                let rel = path.strip_prefix(&root).unwrap_or(&path);
                let id = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                Item {
                    group: id.clone(),
                    id,
                    path,
                    window: Window::ALL,
                    episode: None,
                    camera: None,
                }
            })
            .collect();
        Ok(VideoFolder {
            root,
            items,
            problems,
            decode: options.decode.clone(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn walk(
    dir: &Path,
    follow: bool,
    exts: &[String],
    files: &mut Vec<PathBuf>,
    problems: &mut Vec<(PathBuf, String)>,
    seen: &mut std::collections::HashSet<PathBuf>,
) {
    if let Ok(canon) = dir.canonicalize()
        && !seen.insert(canon)
    {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push((dir.to_path_buf(), format!("cannot list folder: {e}")));
            return;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push((dir.to_path_buf(), format!("cannot list folder: {e}")));
                continue;
            }
        };
        let path = entry.path();
        let Ok(ft) = entry.file_type() else {
            problems.push((path, "cannot read file type".into()));
            continue;
        };
        let (is_dir, is_file) = if ft.is_symlink() {
            if !follow {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(m) => (m.is_dir(), m.is_file()),
                Err(e) => {
                    let ext_match = has_ext(&path, exts);
                    if ext_match {
                        problems.push((path, format!("broken link: {e}")));
                    }
                    continue;
                }
            }
        } else {
            (ft.is_dir(), ft.is_file())
        };
        if is_dir {
            walk(&path, follow, exts, files, problems, seen);
        } else if is_file && has_ext(&path, exts) {
            files.push(path);
        }
    }
}

fn has_ext(path: &Path, exts: &[String]) -> bool {
    path.extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .is_some_and(|e| exts.contains(&e))
}

impl ClipSource for VideoFolder {
    fn describe(&self) -> String {
        format!(
            "video folder {} ({} videos)",
            self.root.display(),
            self.items.len()
        )
    }

    fn items(&self) -> &[Item] {
        &self.items
    }

    fn listing_problems(&self) -> &[(PathBuf, String)] {
        &self.problems
    }

    fn for_each_clip(
        &self,
        item: &Item,
        spec: &ClipSpec,
        sink: &mut dyn FnMut(Clip) -> Result<()>,
    ) -> Result<ItemStats> {
        for_each_video_clip(&item.path, item.window, &item.id, spec, &self.decode, sink)
    }
}
