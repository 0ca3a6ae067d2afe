//! lam-encoder: frame encoders and the path from data sources to embedding shards.
//!
//! - [`encoder::Encoder`]: one type over every encoder, loaded from a folder by what it holds;
//!   `encode` maps clips `[B, T, 3, H, W]` to per-frame tokens `[B, T, N, D]`.
//! - [`dinov2`] (DINOv2, with and without registers) and [`vjepa2`] (V-JEPA 2): Hugging Face
//!   folders (`config.json` + `*.safetensors`, read by [`hf`]), matching `transformers`.
//! - [`sim`]: the small trainable encoder of the simulated suite; [`pretrain`] trains it
//!   (SIGReg-regularised JEPA, [`sigreg`]) and [`stats`] reports embedding std and effective
//!   rank.
//! - [`transport`]: the keypoint-transport pretraining head (keypoints on every body that
//!   moves).
//! - [`embed`]: source -> clips -> encoder -> shards (`lam embed`), resumable.
//! - [`resize`]: bicubic resizing of position embeddings.

pub mod context;
pub mod dinov2;
pub mod embed;
pub mod encoder;
pub mod end_to_end;
pub mod hf;
pub mod pretrain;
pub mod probe;
pub mod resize;
pub mod sigreg;
pub mod sim;
pub mod stats;
pub mod transport;
pub mod vit;
pub mod vjepa2;

pub use encoder::{Encoder, EncoderInfo, Pooling};
/// The decoding crate, for callers that read sources the way the encoders do.
pub use lam_ingest;
pub use vjepa2::FrameMode;
