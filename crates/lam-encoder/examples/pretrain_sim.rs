//! Pretrains the default sim encoder on a fresh lam-sim recording and prints the collapse
//! statistics before and after (the figures in docs/benchmarks.md), then embeds the recording.
//!
//! ```text
//! cargo run --release -p lam-encoder --example pretrain_sim -- OUT [EPISODES] [STEPS] [CONFIG_JSON]
//! ```
//!
//! `CONFIG_JSON` overrides fields of [`PretrainConfig`], e.g. `'{"recon_weight": 0}'`.
//!
//! Same as `lam sim record --task push --episodes EPISODES --out OUT/rec`, then
//! `lam encoder pretrain --data OUT/rec --out OUT/pretrain --steps STEPS`, then
//! `lam embed --data OUT/rec --encoder OUT/pretrain/encoder --out OUT/shards`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use lam_encoder::embed::{EmbedOptions, Source, embed};
use lam_encoder::pretrain::{PretrainConfig, frames_from_source, pretrain};
use lam_ingest::{ClipSpec, Normalization};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .context("usage: pretrain_sim OUT [EPISODES] [STEPS] [CONFIG_JSON]")?,
    );
    let episodes: usize = args.next().map_or(Ok(60), |v| v.parse())?;
    let steps: usize = args.next().map_or(Ok(400), |v| v.parse())?;
    let mut config = serde_json::to_value(PretrainConfig {
        steps,
        ..PretrainConfig::default()
    })?;
    if let Some(text) = args.next() {
        let overrides: serde_json::Value =
            serde_json::from_str(&text).context("CONFIG_JSON is not JSON")?;
        for (k, v) in overrides
            .as_object()
            .context("CONFIG_JSON is not an object")?
        {
            config[k] = v.clone();
        }
    }
    let cfg: PretrainConfig = serde_json::from_value(config)?;
    let rec = out.join("rec");
    if !rec.join("meta/info.json").exists() {
        let cfg = lam_suite::RecordConfig {
            task: lam_sim::Task::Push,
            episodes,
            ..lam_suite::RecordConfig::default()
        };
        lam_suite::record(&cfg, &rec, true)?;
    }
    let source = Source::open(&rec, None)?;
    let norm = Normalization::IMAGENET;
    let spec = ClipSpec {
        fps: 10.0,
        frames: 8,
        size: 64,
        stride: 8,
        norm,
        max_clips: None,
        phases: 1,
    };
    let (frames, report) = frames_from_source(source.as_clip_source(), &spec, 4000)?;
    eprintln!(
        "{report}\n{} frames, {} pairs",
        frames.len(),
        frames.pairs.len()
    );
    let device = Device::flex();
    let run = lam_encoder::pretrain::PretrainRun {
        progress: true,
        ..lam_encoder::pretrain::PretrainRun::new(&out.join("pretrain"))
    };
    let s = pretrain(&cfg, &frames, norm, &device, &run)?;
    print!("{}", lam_encoder::pretrain::report(&s));
    if std::env::var_os("PRETRAIN_SIM_NO_EMBED").is_some() {
        return Ok(());
    }
    let mut opts = EmbedOptions::new(rec, s.checkpoint.clone(), out.join("shards"));
    opts.fps = 5.0;
    opts.progress = true;
    let e = embed(&opts, &device)?;
    println!(
        "embed: {} clips in {:.1}s, {:.1} clips/s, {:.0} frames/s",
        e.written, e.seconds, e.clips_per_sec, e.frames_per_sec
    );
    Ok(())
}
