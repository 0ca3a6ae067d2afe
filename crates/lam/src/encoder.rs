//! Command-line front ends: `lam encoder pretrain|info` and `lam embed`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::prelude::Device;
use clap::{Args, Subcommand, ValueEnum};
use lam_ingest::{ClipSpec, Normalization};

use lam_encoder::embed::{EmbedOptions, Source, embed};
use lam_encoder::encoder::{Encoder, Pooling};
use lam_encoder::pretrain::{
    Frames, PretrainConfig, PretrainRun, frames_from_source, pretrain, synthetic_frames,
};
use lam_encoder::probe::ProbeConfig;
use lam_encoder::sim::SimEncoderConfig;
use lam_encoder::vjepa2::FrameMode;

use crate::settings_args::ConfigArgs;

#[derive(Subcommand)]
pub enum EncoderCommand {
    /// Pretrain the small sim encoder (SIGReg-regularised JEPA) on unlabeled frames.
    Pretrain(PretrainArgs),
    /// Describe an encoder folder (Hugging Face model or sim-encoder checkpoint).
    Info(InfoArgs),
    /// Held-out linear-probe R^2 of a sim encoder for the simulator's true positions (agent,
    /// objects, interior walls) on freshly played episodes.
    Probe(ProbeArgs),
    /// Fit episode-static context features (the scene layout the keypoints drop: reach's
    /// door) of a sim encoder on unlabeled video, into ENCODER/context.json, for
    /// `lam embed --pooling keypoints-context`.
    Context(ContextArgs),
}

#[derive(Args)]
pub struct ContextArgs {
    /// Encoder folder (the projection is written into it).
    pub encoder: PathBuf,
    /// Unlabeled video: a lam-sim recording, a LeRobot dataset or a video folder.
    #[arg(long)]
    pub data: PathBuf,
    /// Context features.
    #[arg(long, default_value_t = 4)]
    pub features: usize,
    /// Frames per video (the first ones, at --fps).
    #[arg(long, default_value_t = 8)]
    pub frames_per_video: usize,
    /// Videos read at most.
    #[arg(long, default_value_t = 400)]
    pub videos: usize,
    /// Frames per second the clips are read at.
    #[arg(long, default_value_t = 2.0)]
    pub fps: f64,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// Sim-encoder folder (`lam encoder pretrain`'s `encoder/`).
    pub path: PathBuf,
    /// Task played: reach, push, pusht or sort.
    #[arg(long, default_value = "reach")]
    pub task: String,
    /// Embodiment: robot, robot-polar or human.
    #[arg(long, default_value = "robot")]
    pub domain: String,
    /// Episodes played (mixed policy); the last quarter is held out for scoring.
    #[arg(long, default_value_t = lam_encoder::probe::ProbeConfig::default().episodes)]
    pub episodes: usize,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct PretrainArgs {
    /// Frames from this source: a lam-sim recording, a LeRobot dataset or a video folder.
    /// Repeat to pretrain on several (e.g. unlabeled video of two embodiments); --max-frames
    /// is then split evenly between them.
    #[arg(long, conflicts_with = "synthetic")]
    pub data: Vec<PathBuf>,
    /// Instead of --data, this many generated episodes of moving shapes (40 frames each).
    #[arg(long)]
    pub synthetic: Option<usize>,
    /// Output folder: encoder/ (the checkpoint), metrics.jsonl, summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Frame rate frames are sampled at from --data.
    #[arg(long, default_value_t = 10.0)]
    pub fps: f64,
    /// At most this many frames are loaded (in all, over the --data sources).
    #[arg(long, default_value_t = 4000)]
    pub max_frames: usize,
    /// Read every video / episode this many times, on frame grids shifted by 1 / (phases x
    /// fps) seconds: at 2 fps from a 10 fps recording, 5 phases read every recorded frame,
    /// still in pairs one block apart (five times the pairs from the same episodes).
    #[arg(long, default_value_t = 1)]
    pub phases: usize,
    /// Optimiser steps.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// Frame pairs per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SIGReg weight on the tokens.
    #[arg(long, default_value_t = 1.0)]
    pub sigreg_weight: f64,
    /// SIGReg weight on the per-frame mean tokens.
    #[arg(long, default_value_t = 1.0)]
    pub sigreg_frame_weight: f64,
    /// Weight of the pixel-reconstruction term (tokens -> their patch's pixels).
    #[arg(long, default_value_t = PretrainConfig::default().recon_weight)]
    pub recon_weight: f64,
    /// Weight of the frame-level reconstruction (mean token + pixel coordinates -> colour).
    #[arg(long, default_value_t = PretrainConfig::default().frame_recon_weight)]
    pub frame_recon_weight: f64,
    /// Weight of the keypoint motion term (keypoint blobs render the frame difference).
    #[arg(long, default_value_t = PretrainConfig::default().keypoint_motion_weight)]
    pub keypoint_motion_weight: f64,
    /// Weight of the keypoint-transport term (the pair's second frame rebuilt from the first
    /// one's features with the features at the keypoints swapped: a keypoint on every body
    /// that moves, pushed objects included). 0 turns it off.
    #[arg(long, default_value_t = PretrainConfig::default().keypoint_transport_weight)]
    pub keypoint_transport_weight: f64,
    /// Share of the frame-level reconstruction's pixels drawn among the pixels that change
    /// between the two frames of a pair (what moves).
    #[arg(long, default_value_t = PretrainConfig::default().frame_recon_motion)]
    pub frame_recon_motion: f64,
    /// Task of the linear probe of the true state (agent and object positions), rendered
    /// straight from the simulator: reach, push, pusht or sort.
    #[arg(long, default_value = "push")]
    pub probe_task: String,
    /// Embodiment of the probe episodes: robot, robot-polar or human.
    #[arg(long, default_value = "robot")]
    pub probe_domain: String,
    /// Probe episodes (0: no probe).
    #[arg(long, default_value_t = 40)]
    pub probe_episodes: usize,
    /// Frame side (the encoder's input).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Patch side (token grid = size / patch).
    #[arg(long, default_value_t = 8)]
    pub patch: usize,
    /// Token channels D.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 2)]
    pub depth: usize,
    /// Keypoints (each an (x, y) pair of the last channels).
    #[arg(long, default_value_t = SimEncoderConfig::default().keypoints)]
    pub keypoints: usize,
    /// Take the keypoints from a convolutional stem on the pixels (spatial softmax, trained
    /// toward what moves) instead of the tokens; `--pixel-keypoints false` for token keypoints.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pixel_keypoints: bool,
    /// Gain on the pixel-keypoint maps before the spatial softmax (sharper keypoints).
    #[arg(long, default_value_t = 1.0)]
    pub keypoint_sharpness: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between resumable checkpoints in OUT/checkpoints and collapse checks (0: none).
    #[arg(long, default_value_t = PretrainConfig::default().checkpoint_every)]
    pub checkpoint_every: usize,
    /// Continue from the newest checkpoint in --out (same settings); starts at step 0 when
    /// there is none yet. Without it an earlier run's checkpoints in --out are removed.
    #[arg(long)]
    pub resume: bool,
    /// At the first failed collapse check (frame embedding effective rank below
    /// --collapse-min-rank, or token or frame mean channel std below --collapse-std-ratio
    /// times the untrained encoder's) stop and write the encoder of the last checkpoint
    /// before it; without it a warning names the metric and training goes on.
    #[arg(long)]
    pub stop_on_collapse: bool,
    #[arg(long, default_value_t = PretrainConfig::default().collapse_min_rank)]
    pub collapse_min_rank: f64,
    #[arg(long, default_value_t = PretrainConfig::default().collapse_std_ratio)]
    pub collapse_std_ratio: f64,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// `--config OUT/config.toml`, `--set encoder.heads=8 --set weight_decay=0.05` (every
    /// field of the pretraining settings; the flags above are shortcuts for the same keys).
    #[command(flatten)]
    pub settings: ConfigArgs,
}

/// Each settings flag of `lam encoder pretrain` and the key of `PretrainConfig` it sets.
const PRETRAIN_FLAG_KEYS: &[(&str, &str)] = &[
    ("size", "encoder.image_size"),
    ("patch", "encoder.patch_size"),
    ("dim", "encoder.dim"),
    ("depth", "encoder.depth"),
    ("keypoints", "encoder.keypoints"),
    ("pixel_keypoints", "encoder.pixel_keypoints"),
    ("keypoint_sharpness", "encoder.keypoint_sharpness"),
    ("steps", "steps"),
    ("batch", "batch"),
    ("lr", "lr"),
    ("sigreg_weight", "sigreg_weight"),
    ("sigreg_frame_weight", "sigreg_frame_weight"),
    ("recon_weight", "recon_weight"),
    ("frame_recon_weight", "frame_recon_weight"),
    ("frame_recon_motion", "frame_recon_motion"),
    ("keypoint_motion_weight", "keypoint_motion_weight"),
    ("keypoint_transport_weight", "keypoint_transport_weight"),
    ("probe_task", "probe"),
    ("probe_domain", "probe"),
    ("probe_episodes", "probe"),
    ("seed", "seed"),
    ("checkpoint_every", "checkpoint_every"),
    ("collapse_min_rank", "collapse_min_rank"),
    ("collapse_std_ratio", "collapse_std_ratio"),
];

#[derive(Args)]
pub struct InfoArgs {
    /// Encoder folder.
    pub path: PathBuf,
    /// Show the token grid for frames of this side (default: the encoder's).
    #[arg(long)]
    pub size: Option<usize>,
}

/// How frames are pooled to tokens (`lam_encoder::encoder::Pooling`).
fn run_context(a: ContextArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let encoder = lam_encoder::encoder::Encoder::load(&a.encoder, &device)?;
    let source = Source::open(&a.data, None)?;
    let spec = ClipSpec {
        fps: a.fps,
        frames: 8,
        size: encoder.info.default_size as u32,
        stride: 8,
        norm: encoder.info.norm,
        max_clips: None,
        phases: 1,
    };
    let (context, fit) = lam_encoder::context::fit_from_source(
        &encoder,
        source.as_clip_source(),
        &spec,
        a.frames_per_video,
        a.videos,
        a.features,
        &device,
    )?;
    context.save_beside(&a.encoder)?;
    let ratios: Vec<String> = fit.ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "{}/{}: {} context features of {} token numbers, fitted on {} frames of {} videos \
         (between- / within-video variance {})",
        a.encoder.display(),
        lam_encoder::context::CONTEXT_FILE,
        context.outputs,
        context.inputs,
        fit.frames,
        fit.videos,
        ratios.join(", ")
    );
    Ok(())
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolingArg {
    /// All patch tokens.
    None,
    /// The mean patch token.
    Mean,
    /// Sim encoders with keypoints: the keypoint positions alone.
    Keypoints,
    /// The keypoint positions and the encoder's context features (`lam encoder context`).
    KeypointsContext,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::None => Pooling::None,
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Keypoints => Pooling::Keypoints,
            PoolingArg::KeypointsContext => Pooling::KeypointsContext,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FrameModeArg {
    /// Each frame encoded alone (repeated to fill a tubelet).
    PerFrame,
    /// The clip encoded at once; both frames of a tubelet share its tokens.
    Tubelet,
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Source: a folder of videos, a LeRobot dataset, or a lam-sim recording.
    #[arg(long)]
    pub data: PathBuf,
    /// Encoder folder: a Hugging Face model (config.json + *.safetensors) or a sim-encoder
    /// checkpoint (from `lam encoder pretrain`); or `oracle`: the simulator's true state of a
    /// lam-sim recording, one token per frame (see `lam_suite::oracle`).
    #[arg(long)]
    pub encoder: PathBuf,
    /// Output shard folder (resumed if it already holds shards of the same settings).
    #[arg(long)]
    pub out: PathBuf,
    /// Clip frame rate.
    #[arg(long, default_value_t = 4.0)]
    pub fps: f64,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Frame side in pixels (default: the encoder's training size, e.g. 224 for DINOv2).
    #[arg(long)]
    pub size: Option<u32>,
    /// Resampled frames between clip starts (default: --frames, no overlap).
    #[arg(long)]
    pub stride: Option<usize>,
    /// Clips encoded together.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Clips per shard file.
    #[arg(long, default_value_t = 256)]
    pub clips_per_shard: usize,
    /// Fraction of videos / episodes in the validation split.
    #[arg(long, default_value_t = 0.02)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// At most this many clips per video / episode camera.
    #[arg(long)]
    pub max_clips_per_item: Option<usize>,
    /// Cut every video / episode this many times, on clip grids shifted by 1 / (phases x fps)
    /// seconds: with clips at 2 fps of a 10 fps recording, 5 phases start a clip at every
    /// step, five times the transitions (labeled blocks included) from the same episodes.
    #[arg(long, default_value_t = 1)]
    pub phases: usize,
    /// Token pooling per frame.
    #[arg(long, value_enum, default_value = "none")]
    pub pooling: PoolingArg,
    /// V-JEPA 2: how frames map to tubelet tokens.
    #[arg(long, value_enum, default_value = "per-frame")]
    pub frame_mode: FrameModeArg,
    /// Videos decoded in parallel.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// LeRobot camera (video feature) to take; repeat for several (default: all).
    #[arg(long = "camera")]
    pub cameras: Vec<String>,
    /// Embed only part K of N of the source's videos / episodes (a job array: run K = 1..N
    /// anywhere, each resumable), into OUT/part-K-of-N; then `lam data merge-parts OUT`.
    #[arg(long, value_name = "K/N")]
    pub part: Option<lam_ingest::Part>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

pub use lam_model::device::parse_device;

pub fn run_encoder(cmd: EncoderCommand) -> Result<()> {
    match cmd {
        EncoderCommand::Pretrain(a) => run_pretrain(a),
        EncoderCommand::Info(a) => run_info(a),
        EncoderCommand::Probe(a) => run_probe(a),
        EncoderCommand::Context(a) => run_context(a),
    }
}

fn run_pretrain(a: PretrainArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let from_flags = PretrainConfig {
        encoder: SimEncoderConfig {
            image_size: a.size,
            patch_size: a.patch,
            dim: a.dim,
            depth: a.depth,
            keypoints: a.keypoints,
            pixel_keypoints: a.pixel_keypoints,
            keypoint_sharpness: a.keypoint_sharpness,
            ..SimEncoderConfig::default()
        },
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        sigreg_weight: a.sigreg_weight,
        sigreg_frame_weight: a.sigreg_frame_weight,
        recon_weight: a.recon_weight,
        frame_recon_weight: a.frame_recon_weight,
        frame_recon_motion: a.frame_recon_motion,
        keypoint_motion_weight: a.keypoint_motion_weight,
        keypoint_transport_weight: a.keypoint_transport_weight,
        probe: (a.probe_episodes > 0).then(|| ProbeConfig {
            task: a.probe_task.clone(),
            domain: a.probe_domain.clone(),
            episodes: a.probe_episodes,
            ..ProbeConfig::default()
        }),
        seed: a.seed,
        checkpoint_every: a.checkpoint_every,
        collapse_min_rank: a.collapse_min_rank,
        collapse_std_ratio: a.collapse_std_ratio,
        ..PretrainConfig::default()
    };
    let cfg = a.settings.resolve(from_flags, PRETRAIN_FLAG_KEYS)?;
    let norm = Normalization::IMAGENET;
    let frames = match (a.data.as_slice(), a.synthetic) {
        ([], Some(runs)) => synthetic_frames(runs, 40, cfg.encoder.image_size, &norm, cfg.seed),
        ([], None) => bail!("give --data SRC or --synthetic EPISODES"),
        (paths, _) => {
            let spec = ClipSpec {
                fps: a.fps,
                frames: 8,
                size: cfg.encoder.image_size as u32,
                stride: 8,
                norm,
                max_clips: None,
                phases: a.phases,
            };
            let mut frames = Frames {
                size: spec.size as usize,
                ..Frames::default()
            };
            for (i, path) in paths.iter().enumerate() {
                // An even share of what is left, so a short source leaves its rest to the next.
                let share = (a.max_frames - frames.len()) / (paths.len() - i);
                let source = Source::open(path, None)?;
                let (part, report) = frames_from_source(source.as_clip_source(), &spec, share)?;
                eprintln!("{report}");
                frames.append(part);
            }
            frames
        }
    };
    eprintln!(
        "pretraining on {} frames ({} consecutive pairs)",
        frames.len(),
        frames.pairs.len()
    );
    let run = PretrainRun {
        progress: !a.quiet,
        resume: a.resume,
        stop_on_collapse: a.stop_on_collapse,
        probe_frames: Some(lam_eval::probe::SIM_PROBE_FRAMES),
        ..PretrainRun::new(&a.out)
    };
    let s = pretrain(&cfg, &frames, norm, &device, &run)?;
    print!("{}", lam_encoder::pretrain::report(&s));
    println!("checkpoint: {}", s.checkpoint.display());
    Ok(())
}

fn run_info(a: InfoArgs) -> Result<()> {
    let encoder = Encoder::load(&a.path, &Device::flex())?;
    let size = a.size.unwrap_or(encoder.info.default_size);
    encoder.check_size(size)?;
    let grid = encoder.grid(size);
    let info = &encoder.info;
    println!("{} ({})", info.path.display(), info.architecture);
    println!(
        "  D = {}, patch {} px, {} parameters",
        info.dim, info.patch_size, info.params
    );
    println!(
        "  frames of {size}x{size} -> {}x{} = {} tokens per frame",
        grid[0],
        grid[1],
        grid[0] * grid[1]
    );
    println!(
        "  normalisation mean {:?} std {:?}",
        info.norm.mean, info.norm.std
    );
    println!("  config: {}", info.config);
    Ok(())
}

fn run_probe(a: ProbeArgs) -> Result<()> {
    let device = Device::flex();
    let encoder = Encoder::load(&a.path, &device)?;
    let lam_encoder::encoder::Model::Sim(sim) = &encoder.model else {
        anyhow::bail!(
            "{} is a {} model; the probe takes sim-encoder checkpoints",
            a.path.display(),
            encoder.info.architecture
        );
    };
    let cfg = lam_encoder::probe::ProbeConfig {
        task: a.task.clone(),
        domain: a.domain.clone(),
        episodes: a.episodes,
        ..Default::default()
    };
    let set = lam_eval::probe::sim_probe_set(&cfg, encoder.info.default_size, &encoder.info.norm)?;
    let report = lam_encoder::probe::probe_encoder(
        sim,
        &set,
        &cfg,
        encoder.keypoints(),
        encoder.context.as_ref(),
        &device,
    )?;
    println!(
        "{}",
        lam_encoder::probe::probe_line(&a.path.display().to_string(), &report)
    );
    if let Some(path) = &a.json {
        lam_data::shards::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}

pub fn run_embed(a: EmbedArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let opts = EmbedOptions {
        fps: a.fps,
        frames: a.frames,
        size: a.size,
        stride: a.stride,
        batch: a.batch,
        clips_per_shard: a.clips_per_shard,
        val_fraction: a.val_fraction,
        split_seed: a.split_seed,
        max_clips_per_item: a.max_clips_per_item,
        phases: a.phases,
        pooling: a.pooling.into(),
        frame_mode: match a.frame_mode {
            FrameModeArg::PerFrame => FrameMode::PerFrame,
            FrameModeArg::Tubelet => FrameMode::Tubelet,
        },
        workers: a.workers,
        cameras: (!a.cameras.is_empty()).then_some(a.cameras),
        progress: !a.quiet,
        part: a.part,
        ..EmbedOptions::new(a.data, a.encoder, a.out.clone())
    };
    if lam_suite::oracle::is_oracle(&opts.encoder) {
        anyhow::ensure!(
            opts.part.is_none(),
            "--part splits encoder jobs; the oracle reads a recording's state in seconds"
        );
        let s = lam_suite::oracle::embed_oracle(&lam_suite::oracle::OracleOptions {
            data: opts.data.clone(),
            out: opts.out.clone(),
            fps: opts.fps,
            frames: opts.frames,
            stride: opts.stride,
            clips_per_shard: opts.clips_per_shard,
            val_fraction: opts.val_fraction,
            split_seed: opts.split_seed,
            max_clips_per_item: opts.max_clips_per_item,
            phases: opts.phases,
        })?;
        println!(
            "oracle shards: {} clips of {} episodes in {:.1}s -> {} (D={}, {} recording \
             frames per clip frame{})",
            s.clips,
            s.episodes,
            s.seconds,
            a.out.display(),
            s.dim,
            s.frame_step,
            s.action_dim
                .map_or(String::new(), |d| format!(", action blocks of {d}"))
        );
        return Ok(());
    }
    let s = embed(&opts, &device)?;
    println!(
        "{} clips written ({} already done) in {:.1}s: {:.2} clips/s, {:.1} frames/s",
        s.written, s.resumed, s.seconds, s.clips_per_sec, s.frames_per_sec
    );
    println!("{}", s.report);
    println!(
        "shards: {} ({} files, T={}, grid {:?}, D={}{})",
        a.out.display(),
        s.index.shards.len(),
        s.index.frames,
        s.index.grid,
        s.index.dim,
        s.index
            .action_dim
            .map_or(String::new(), |d| format!(", actions A={d}"))
    );
    Ok(())
}
