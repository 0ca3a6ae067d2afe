//! Frame-embedding shards: the on-disk format `lam train` and `lam eval` read.
//!
//! A shard set is a folder:
//!
//! ```text
//! DIR/index.json                  the index (see [`ShardIndex`])
//! DIR/shard-00000.safetensors     one safetensors file per shard
//! DIR/shard-00001.safetensors
//! ```
//!
//! Each shard holds these tensors, little-endian, row-major:
//!
//! - `embeddings`: F32 `[clips, T, N, D]`: clip, frame, patch token, channel;
//! - `clip_ids`: I64 `[clips]` (optional): the source video / episode id of each clip;
//! - `actions`: F32 `[clips, T - 1, A]` (optional): the action taken between frame t and t+1,
//!   only in labeled (robot) sets; `A` is `action_dim` in the index.
//!
//! The index lists every shard with its clip count and split (`train` or `val`), so a reader
//! can check the whole set without opening the data. Shards and the index are written to a
//! temporary name and renamed, so a reader never sees a half-written file.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

/// Name of the index file inside a shard folder.
pub const INDEX_FILE: &str = "index.json";
/// Value of [`ShardIndex::format`].
pub const FORMAT: &str = "lam-shards";

/// Which part of a data set a shard belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            other => bail!("unknown split `{other}` (expected `train` or `val`)"),
        }
    }
}

/// One entry of the index.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardEntry {
    /// File name relative to the shard folder.
    pub file: String,
    /// Number of clips in the file.
    pub clips: usize,
    /// Split of every clip in the file.
    pub split: Split,
}

/// `index.json`: shapes shared by all shards plus the shard list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShardIndex {
    /// Always `lam-shards`.
    pub format: String,
    /// Format version, currently 1.
    pub version: u32,
    /// Frames per clip (T).
    pub frames: usize,
    /// Patch tokens per frame (N).
    pub tokens: usize,
    /// Channels per token (D).
    pub dim: usize,
    /// Token grid `[rows, cols]` with rows * cols = N, used for 2-D positions.
    pub grid: [usize; 2],
    /// Action dimension when the shards carry `actions`.
    #[serde(default)]
    pub action_dim: Option<usize>,
    /// Free-form description of where the embeddings came from (encoder, source, fps).
    #[serde(default)]
    pub source: BTreeMap<String, String>,
    /// The shard files.
    pub shards: Vec<ShardEntry>,
}

impl ShardIndex {
    /// Number of f32 values in one clip.
    pub fn clip_len(&self) -> usize {
        self.frames * self.tokens * self.dim
    }

    /// Reads and checks `DIR/index.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(INDEX_FILE);
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read shard index {} (is {} a shard folder?)",
                path.display(),
                dir.display()
            )
        })?;
        let index: ShardIndex = serde_json::from_str(&text)
            .with_context(|| format!("malformed shard index {}", path.display()))?;
        ensure!(
            index.format == FORMAT,
            "{}: format is `{}`, expected `{FORMAT}`",
            path.display(),
            index.format
        );
        ensure!(
            index.version == 1,
            "{}: unsupported version {}",
            path.display(),
            index.version
        );
        ensure!(
            index.frames >= 2 && index.tokens >= 1 && index.dim >= 1,
            "{}: frames must be >= 2 and tokens, dim >= 1 (got frames={}, tokens={}, dim={})",
            path.display(),
            index.frames,
            index.tokens,
            index.dim
        );
        ensure!(
            index.grid[0] * index.grid[1] == index.tokens,
            "{}: grid {:?} does not hold {} tokens",
            path.display(),
            index.grid,
            index.tokens
        );
        Ok(index)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32_from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// One clip to write: embeddings `[T, N, D]`, optional actions `[T - 1, A]`, source id.
#[derive(Clone, Debug)]
pub struct Clip {
    pub embeddings: Vec<f32>,
    pub actions: Option<Vec<f32>>,
    pub id: i64,
}

/// Writes clips into shards of at most `clips_per_shard` clips, then the index.
pub struct ShardWriter {
    dir: PathBuf,
    index: ShardIndex,
    clips_per_shard: usize,
    pending: BTreeMap<Split, Vec<Clip>>,
}

impl ShardWriter {
    /// Starts a new shard set in `dir` (created if missing). Existing shards listed in an
    /// index already there are kept (so an interrupted job can resume), provided the shapes
    /// agree.
    pub fn create(
        dir: &Path,
        frames: usize,
        grid: [usize; 2],
        dim: usize,
        action_dim: Option<usize>,
        clips_per_shard: usize,
    ) -> Result<Self> {
        ensure!(clips_per_shard > 0, "clips_per_shard must be > 0");
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let fresh = ShardIndex {
            format: FORMAT.into(),
            version: 1,
            frames,
            tokens: grid[0] * grid[1],
            dim,
            grid,
            action_dim,
            source: BTreeMap::new(),
            shards: Vec::new(),
        };
        let index = if dir.join(INDEX_FILE).exists() {
            let old = ShardIndex::load(dir)?;
            ensure!(
                (old.frames, old.tokens, old.dim, old.action_dim)
                    == (fresh.frames, fresh.tokens, fresh.dim, fresh.action_dim),
                "{}: existing shards have frames={}, tokens={}, dim={}, action_dim={:?}; \
                 refusing to append frames={}, tokens={}, dim={}, action_dim={:?}",
                dir.display(),
                old.frames,
                old.tokens,
                old.dim,
                old.action_dim,
                fresh.frames,
                fresh.tokens,
                fresh.dim,
                fresh.action_dim
            );
            old
        } else {
            fresh
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            clips_per_shard,
            pending: BTreeMap::new(),
        })
    }

    /// Records a key/value pair describing the source in the index.
    pub fn set_source(&mut self, key: &str, value: &str) {
        self.index.source.insert(key.into(), value.into());
    }

    /// Number of shards already finished (written and listed).
    pub fn finished_shards(&self) -> usize {
        self.index.shards.len()
    }

    /// Adds one clip; a full shard is written at once.
    pub fn push(&mut self, split: Split, clip: Clip) -> Result<()> {
        let want = self.index.clip_len();
        ensure!(
            clip.embeddings.len() == want,
            "clip {} has {} values, expected T*N*D = {}*{}*{} = {want}",
            clip.id,
            clip.embeddings.len(),
            self.index.frames,
            self.index.tokens,
            self.index.dim
        );
        match (self.index.action_dim, &clip.actions) {
            (Some(a), Some(acts)) => ensure!(
                acts.len() == (self.index.frames - 1) * a,
                "clip {} has {} action values, expected (T-1)*A = {}",
                clip.id,
                acts.len(),
                (self.index.frames - 1) * a
            ),
            (None, None) => {}
            (Some(_), None) => bail!(
                "clip {} has no actions but the shard set is labeled",
                clip.id
            ),
            (None, Some(_)) => bail!(
                "clip {} has actions but the shard set is unlabeled",
                clip.id
            ),
        }
        let full = {
            let queue = self.pending.entry(split).or_default();
            queue.push(clip);
            queue.len() >= self.clips_per_shard
        };
        if full {
            self.flush(split)?;
        }
        Ok(())
    }

    fn flush(&mut self, split: Split) -> Result<()> {
        let clips = self.pending.remove(&split).unwrap_or_default();
        if clips.is_empty() {
            return Ok(());
        }
        let n = clips.len();
        let file = format!("shard-{:05}.safetensors", self.index.shards.len());
        let (t, tok, d) = (self.index.frames, self.index.tokens, self.index.dim);
        let emb: Vec<f32> = clips
            .iter()
            .flat_map(|c| c.embeddings.iter().copied())
            .collect();
        let ids: Vec<u8> = clips.iter().flat_map(|c| c.id.to_le_bytes()).collect();
        let emb_bytes = f32_bytes(&emb);
        let mut views: Vec<(String, TensorView<'_>)> = vec![
            (
                "embeddings".into(),
                TensorView::new(Dtype::F32, vec![n, t, tok, d], &emb_bytes)?,
            ),
            (
                "clip_ids".into(),
                TensorView::new(Dtype::I64, vec![n], &ids)?,
            ),
        ];
        let act_bytes;
        if let Some(a) = self.index.action_dim {
            let acts: Vec<f32> = clips
                .iter()
                .flat_map(|c| c.actions.as_ref().unwrap().iter().copied())
                .collect();
            act_bytes = f32_bytes(&acts);
            views.push((
                "actions".into(),
                TensorView::new(Dtype::F32, vec![n, t - 1, a], &act_bytes)?,
            ));
        }
        let bytes = safetensors::serialize(views, None)?;
        write_atomic(&self.dir.join(&file), &bytes)?;
        self.index.shards.push(ShardEntry {
            file,
            clips: n,
            split,
        });
        self.write_index()
    }

    fn write_index(&self) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.index)?;
        write_atomic(&self.dir.join(INDEX_FILE), text.as_bytes())
    }

    /// Writes the partly filled shards and the final index.
    pub fn finish(mut self) -> Result<ShardIndex> {
        self.flush(Split::Train)?;
        self.flush(Split::Val)?;
        self.write_index()?;
        Ok(self.index)
    }
}

/// Writes the clips of every shard set of `inputs` into one new shard set `out` (each clip
/// to its own split): their frames, grid and channels must agree. Actions are kept when every
/// input has them with the same dimension, and dropped otherwise (video for stage 1 needs
/// none). The clip ids of each input are offset past the previous inputs' so that clips of
/// different sources never share an id (a scene cut pairs clips of different ids). Returns
/// the clips written and whether actions were kept.
pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<(usize, bool)> {
    ensure!(
        inputs.len() >= 2,
        "merging needs at least two shard folders"
    );
    ensure!(
        !out.join(INDEX_FILE).exists(),
        "{} already holds shards; merge into a new folder",
        out.display()
    );
    let indexes: Vec<ShardIndex> = inputs
        .iter()
        .map(|d| ShardIndex::load(d))
        .collect::<Result<_>>()?;
    let first = &indexes[0];
    for (dir, ix) in inputs.iter().zip(&indexes).skip(1) {
        ensure!(
            (ix.frames, ix.grid, ix.dim) == (first.frames, first.grid, first.dim),
            "{} has frames={}, grid={:?}, dim={}, but {} has frames={}, grid={:?}, dim={}: \
             only shards of the same shape merge",
            dir.display(),
            ix.frames,
            ix.grid,
            ix.dim,
            inputs[0].display(),
            first.frames,
            first.grid,
            first.dim
        );
    }
    let action_dim = first
        .action_dim
        .filter(|a| indexes.iter().all(|ix| ix.action_dim == Some(*a)));
    let mut w = ShardWriter::create(out, first.frames, first.grid, first.dim, action_dim, 256)?;
    let names: Vec<String> = inputs.iter().map(|d| d.display().to_string()).collect();
    w.set_source("merged", &names.join(", "));
    let (mut written, mut offset) = (0usize, 0i64);
    for dir in inputs {
        let mut top = offset;
        for split in [Split::Train, Split::Val] {
            let set = ShardSet::open(dir, Some(split))?;
            for i in 0..set.len() {
                let id = set.clip_id(i);
                top = top.max(offset + id + 1);
                w.push(
                    split,
                    Clip {
                        embeddings: set.clip(i),
                        actions: action_dim.and_then(|_| set.actions(i)),
                        id: offset + id,
                    },
                )?;
                written += 1;
            }
        }
        offset = top;
    }
    w.finish()?;
    Ok((written, action_dim.is_some()))
}

struct OpenShard {
    path: PathBuf,
    map: Mmap,
    clips: usize,
    emb_offset: usize,
    act_offset: Option<usize>,
    ids: Vec<i64>,
}

/// A clip left out of a [`ShardSet`] because its embeddings or actions hold NaN or Inf.
#[derive(Clone, Debug, PartialEq)]
pub struct SkippedClip {
    pub file: PathBuf,
    /// Position of the clip inside its shard file.
    pub clip: usize,
    /// Its source id (video / episode).
    pub id: i64,
    /// Which tensor held the first non-finite value: `embeddings` or `actions`.
    pub tensor: &'static str,
}

impl std::fmt::Display for SkippedClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} clip {} (source id {}): non-finite {}",
            self.file.display(),
            self.clip,
            self.id,
            self.tensor
        )
    }
}

/// A read-only view of the clips of one split of a shard set, memory-mapped. Clips whose
/// embeddings or actions are not all finite are left out when the set is opened, and listed
/// in `skipped`.
pub struct ShardSet {
    pub dir: PathBuf,
    pub index: ShardIndex,
    /// Clips left out because they hold NaN or Inf.
    pub skipped: Vec<SkippedClip>,
    shards: Vec<OpenShard>,
    /// (shard, clip within shard) for every clip of the selected split.
    clips: Vec<(usize, usize)>,
}

impl ShardSet {
    /// Opens the shards of `split` (all shards when `None`) and checks every file's header
    /// against the index. Errors name the file and what is wrong.
    pub fn open(dir: &Path, split: Option<Split>) -> Result<Self> {
        let index = ShardIndex::load(dir)?;
        let mut shards = Vec::new();
        let mut clips = Vec::new();
        let mut skipped = Vec::new();
        for entry in index
            .shards
            .iter()
            .filter(|e| split.is_none_or(|s| s == e.split))
        {
            let path = dir.join(&entry.file);
            let file = fs::File::open(&path).with_context(|| {
                format!("shard {} listed in the index is missing", path.display())
            })?;
            // SAFETY: shards are written once (temp file + rename) and never modified in place.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map shard {}", path.display()))?;
            let (emb_offset, act_offset, ids) = check_shard(&path, &map, &index, entry.clips)?;
            let shard = shards.len();
            let finite = |start: usize, len: usize| {
                map[start..start + len]
                    .chunks_exact(4)
                    .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            };
            let emb_len = index.clip_len() * 4;
            let act_len = index.action_dim.map(|a| (index.frames - 1) * a * 4);
            for c in 0..entry.clips {
                let tensor = if !finite(emb_offset + c * emb_len, emb_len) {
                    Some("embeddings")
                } else if let (Some(off), Some(len)) = (act_offset, act_len) {
                    (!finite(off + c * len, len)).then_some("actions")
                } else {
                    None
                };
                match tensor {
                    Some(tensor) => skipped.push(SkippedClip {
                        file: path.clone(),
                        clip: c,
                        id: ids[c],
                        tensor,
                    }),
                    None => clips.push((shard, c)),
                }
            }
            shards.push(OpenShard {
                path,
                map,
                clips: entry.clips,
                emb_offset,
                act_offset,
                ids,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            skipped,
            shards,
            clips,
        })
    }

    /// Number of clips in the selected split.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }

    /// Embeddings of clip `i`, `[T, N, D]` flattened.
    pub fn clip(&self, i: usize) -> Vec<f32> {
        let (s, c) = self.clips[i];
        let shard = &self.shards[s];
        let len = self.index.clip_len() * 4;
        let start = shard.emb_offset + c * len;
        f32_from_bytes(&shard.map[start..start + len])
    }

    /// Actions of clip `i`, `[T - 1, A]` flattened, when the set is labeled.
    pub fn actions(&self, i: usize) -> Option<Vec<f32>> {
        let (s, c) = self.clips[i];
        let shard = &self.shards[s];
        let a = self.index.action_dim?;
        let len = (self.index.frames - 1) * a * 4;
        let start = shard.act_offset? + c * len;
        Some(f32_from_bytes(&shard.map[start..start + len]))
    }

    /// Source id (video / episode) of clip `i`.
    pub fn clip_id(&self, i: usize) -> i64 {
        let (s, c) = self.clips[i];
        self.shards[s].ids[c]
    }

    /// Embeddings of several clips stacked: `[B, T, N, D]` flattened.
    pub fn batch(&self, indices: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(indices.len() * self.index.clip_len());
        for &i in indices {
            out.extend(self.clip(i));
        }
        out
    }

    /// Files backing this view.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Clips per file, in the order of [`files`](Self::files).
    pub fn clips_per_file(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.clips).collect()
    }
}

/// Checks a shard's tensors against the index; returns the data offsets of `embeddings`
/// and `actions` inside the file, and the clip ids.
fn check_shard(
    path: &Path,
    bytes: &[u8],
    index: &ShardIndex,
    clips: usize,
) -> Result<(usize, Option<usize>, Vec<i64>)> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        anyhow::anyhow!(
            "shard {} is not a valid safetensors file: {e}",
            path.display()
        )
    })?;
    let emb = st
        .tensor("embeddings")
        .map_err(|_| anyhow::anyhow!("shard {} has no `embeddings` tensor", path.display()))?;
    let want = vec![clips, index.frames, index.tokens, index.dim];
    ensure!(
        emb.dtype() == Dtype::F32,
        "shard {}: `embeddings` has dtype {:?}, expected F32",
        path.display(),
        emb.dtype()
    );
    ensure!(
        emb.shape() == want.as_slice(),
        "shard {}: `embeddings` has shape {:?}, expected [clips, T, N, D] = {:?} from the index",
        path.display(),
        emb.shape(),
        want
    );
    let emb_offset = data_offset(bytes, emb.data());
    let act_offset = match index.action_dim {
        Some(a) => {
            let act = st.tensor("actions").map_err(|_| {
                anyhow::anyhow!(
                    "shard {} has no `actions` tensor but the index sets action_dim",
                    path.display()
                )
            })?;
            let want = vec![clips, index.frames - 1, a];
            ensure!(
                act.dtype() == Dtype::F32 && act.shape() == want.as_slice(),
                "shard {}: `actions` is {:?} {:?}, expected F32 {:?}",
                path.display(),
                act.dtype(),
                act.shape(),
                want
            );
            Some(data_offset(bytes, act.data()))
        }
        None => None,
    };
    let ids = match st.tensor("clip_ids") {
        Ok(t) => {
            ensure!(
                t.dtype() == Dtype::I64 && t.shape() == [clips],
                "shard {}: `clip_ids` is {:?} {:?}, expected I64 [{clips}]",
                path.display(),
                t.dtype(),
                t.shape()
            );
            t.data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        }
        Err(_) => (0..clips as i64).collect(),
    };
    Ok((emb_offset, act_offset, ids))
}

fn data_offset(file: &[u8], data: &[u8]) -> usize {
    data.as_ptr() as usize - file.as_ptr() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(id: i64, len: usize, actions: Option<usize>) -> Clip {
        Clip {
            embeddings: (0..len).map(|v| v as f32 + id as f32 * 1000.0).collect(),
            actions: actions.map(|n| vec![id as f32; n]),
            id,
        }
    }

    #[test]
    fn round_trip_with_splits_and_actions() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path(), 3, [2, 2], 5, Some(2), 2).unwrap();
        for id in 0..5 {
            let split = if id == 4 { Split::Val } else { Split::Train };
            w.push(split, clip(id, 3 * 4 * 5, Some(4))).unwrap();
        }
        let index = w.finish().unwrap();
        assert_eq!(index.shards.len(), 3);
        let train = ShardSet::open(dir.path(), Some(Split::Train)).unwrap();
        assert_eq!(train.len(), 4);
        assert_eq!(train.clip(3), clip(3, 60, None).embeddings);
        assert_eq!(train.clip_id(2), 2);
        assert_eq!(train.actions(1).unwrap(), vec![1.0; 4]);
        let val = ShardSet::open(dir.path(), Some(Split::Val)).unwrap();
        assert_eq!(val.len(), 1);
        assert_eq!(val.clip_id(0), 4);
        assert_eq!(ShardSet::open(dir.path(), None).unwrap().len(), 5);
    }

    #[test]
    fn merged_sets_keep_their_splits_and_never_share_a_clip_id() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        let mut w = ShardWriter::create(&a, 3, [2, 2], 5, Some(2), 2).unwrap();
        for id in 0..3 {
            let split = if id == 2 { Split::Val } else { Split::Train };
            w.push(split, clip(id, 60, Some(4))).unwrap();
        }
        w.finish().unwrap();
        let mut w = ShardWriter::create(&b, 3, [2, 2], 5, None, 2).unwrap();
        for id in 0..2 {
            w.push(Split::Train, clip(id, 60, None)).unwrap();
        }
        w.finish().unwrap();
        let out = tmp.path().join("ab");
        assert_eq!(merge(&[a.clone(), b.clone()], &out).unwrap(), (5, false));
        let train = ShardSet::open(&out, Some(Split::Train)).unwrap();
        let val = ShardSet::open(&out, Some(Split::Val)).unwrap();
        assert_eq!((train.len(), val.len()), (4, 1));
        assert_eq!(train.index.action_dim, None, "b has no actions: dropped");
        let ids: Vec<i64> = (0..4).map(|i| train.clip_id(i)).collect();
        assert_eq!(ids, [0, 1, 3, 4], "b's ids start past a's");
        assert_eq!(train.clip(2), clip(0, 60, None).embeddings);
        // Shapes that differ are refused, naming both folders.
        let mut w = ShardWriter::create(&c, 3, [1, 1], 5, None, 2).unwrap();
        w.push(Split::Train, clip(0, 15, None)).unwrap();
        w.finish().unwrap();
        let err = format!(
            "{:#}",
            merge(&[a.clone(), c], &tmp.path().join("ac")).unwrap_err()
        );
        assert!(err.contains("same shape") && err.contains("/a"), "{err}");
        // An existing shard folder is not written into.
        assert!(merge(&[a, b], &out).is_err());
    }

    #[test]
    fn clips_with_nan_or_inf_are_skipped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path(), 3, [2, 2], 5, Some(2), 2).unwrap();
        for id in 0..4 {
            w.push(Split::Train, clip(id, 60, Some(4))).unwrap();
        }
        w.finish().unwrap();
        let set = ShardSet::open(dir.path(), None).unwrap();
        assert!(set.skipped.is_empty());
        // Corrupt one value of clip 1's embeddings and one of clip 2's actions, in place.
        let poke = |file: &Path, offset: usize, v: f32| {
            let mut bytes = std::fs::read(file).unwrap();
            bytes[offset..offset + 4].copy_from_slice(&v.to_le_bytes());
            std::fs::write(file, bytes).unwrap();
        };
        let (f0, f1) = (set.shards[0].path.clone(), set.shards[1].path.clone());
        poke(&f0, set.shards[0].emb_offset + 60 * 4 + 7 * 4, f32::NAN);
        poke(&f1, set.shards[1].act_offset.unwrap() + 4, f32::INFINITY);
        drop(set);
        let set = ShardSet::open(dir.path(), None).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!((set.clip_id(0), set.clip_id(1)), (0, 3));
        assert_eq!(set.skipped.len(), 2);
        let msg = set.skipped[0].to_string();
        assert!(
            msg.contains("clip 1") && msg.contains("embeddings"),
            "{msg}"
        );
        assert!(msg.contains(&f0.display().to_string()), "{msg}");
        let msg = set.skipped[1].to_string();
        assert!(
            msg.contains("clip 0") && msg.contains("source id 2") && msg.contains("actions"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_shape_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path(), 3, [2, 2], 5, None, 4).unwrap();
        w.push(Split::Train, clip(0, 60, None)).unwrap();
        w.finish().unwrap();
        // Rewrite the index with a different token dim: the shard no longer matches.
        let mut index = ShardIndex::load(dir.path()).unwrap();
        index.dim = 6;
        write_atomic(
            &dir.path().join(INDEX_FILE),
            serde_json::to_string(&index).unwrap().as_bytes(),
        )
        .unwrap();
        let err = ShardSet::open(dir.path(), None).err().unwrap().to_string();
        assert!(err.contains("shard-00000.safetensors"), "{err}");
        assert!(err.contains("expected [clips, T, N, D]"), "{err}");
    }

    #[test]
    fn missing_shard_and_missing_index_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ShardSet::open(dir.path(), None).err().unwrap().to_string();
        assert!(err.contains("index.json"), "{err}");
        let mut w = ShardWriter::create(dir.path(), 2, [1, 1], 1, None, 1).unwrap();
        w.push(Split::Train, clip(0, 2, None)).unwrap();
        w.finish().unwrap();
        fs::remove_file(dir.path().join("shard-00000.safetensors")).unwrap();
        let err = ShardSet::open(dir.path(), None).err().unwrap().to_string();
        assert!(
            err.contains("shard-00000.safetensors") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn rejects_clip_of_wrong_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ShardWriter::create(dir.path(), 2, [1, 1], 3, None, 1).unwrap();
        let err = w
            .push(Split::Train, clip(7, 5, None))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("clip 7") && err.contains("expected"), "{err}");
    }
}
