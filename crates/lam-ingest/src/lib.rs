//! lam-ingest: from video files and LeRobot datasets to preprocessed clips.
//!
//! No tensor library here: clips are plain `Vec<f32>` in a documented layout
//! (see [`Clip`]: `[T, 3, H, W]`, row-major, RGB, normalised), ready to be
//! wrapped by whatever encoder consumes them.
//!
//! - [`decode`]: FFmpeg decoding and resampling to a frame rate by timestamps.
//! - [`preprocess`]: short-side resize (swscale), centre crop, normalisation.
//! - [`ClipSpec`]: fps, frames per clip, size, stride, normalisation.
//! - [`ClipSource`]: the interface of data sources; [`VideoFolder`] and
//!   [`lerobot::LeRobotDataset`] implement it.
//! - [`lerobot::recording`]: the LeRobot v3.0 datasets lam writes (the simulated suite's
//!   recordings: [`video_writer`] encodes their videos, [`parquet_writer`] their tables).
//! - [`run`]: reads a whole source, skipping and reporting bad files
//!   ([`IngestReport`]); [`Split`] picks train or validation items.
//!
//! ```no_run
//! use lam_ingest::{ClipSpec, FolderOptions, RunOptions, Split, Subset, VideoFolder, run};
//!
//! let folder = VideoFolder::open("videos/", &FolderOptions::default())?;
//! // Paper defaults: 4 fps, 8 frames, 224 x 224, ImageNet normalisation.
//! let spec = ClipSpec::default();
//! let options = RunOptions {
//!     split: Some((Split::default(), Subset::Train)),
//!     ..RunOptions::default()
//! };
//! let report = run(&folder, &spec, &options, &mut |item, clips| {
//!     for clip in &clips {
//!         assert_eq!(clip.shape(), [8, 3, 224, 224]);
//!         // clip.data: [T, 3, H, W] row-major f32, ready for an encoder
//!     }
//!     println!("{}: {} clips", item.id, clips.len());
//!     Ok(())
//! })?;
//! println!("{report}"); // counts, then every skipped file with its reason
//! # Ok::<(), lam_ingest::IngestError>(())
//! ```

pub mod clip;
pub mod decode;
pub mod error;
pub mod folder;
pub mod lerobot;
pub mod parquet_writer;
pub mod preprocess;
pub mod report;
pub mod run;
pub mod source;
pub mod spec;
pub mod split;
pub mod video;
pub mod video_writer;

pub use clip::{Clip, ClipAssembler, Frame};
pub use decode::{DecodeOptions, VideoInfo, VideoReader, Window};
pub use error::{IngestError, Result};
pub use folder::{FolderOptions, VideoFolder};
pub use lerobot::{EpisodeData, LeRobotDataset, LeRobotOptions};
pub use preprocess::{Geometry, Preprocessor};
pub use report::IngestReport;
pub use run::{RunOptions, run};
pub use source::{ClipSource, Item, Source};
pub use spec::{ClipSpec, Normalization};
pub use split::{Part, Split, Subset};
pub use video::{ItemStats, for_each_video_clip, for_each_video_frame};
