//! Encoder throughput: frames per second of lam-encoder on Hugging Face folders.
//!
//! ```text
//! cargo run --release -p lam-encoder --example encoder_bench -- FOLDER [--size 224] [--frames 16] [--batch 8] [--reps 3]
//! ```
//!
//! Encodes `frames` frames of `size x size` (random pixels) per repetition in clips of 2
//! frames, `batch / 2` clips per call, after one warm-up call; prints one JSON line with the
//! best repetition's frames/s. tools/reference/encoder_bench.py runs the transformers model
//! on the same folder the same way and prints both figures with their ratio.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use lam_encoder::Encoder;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = PathBuf::from(
        args.next()
            .context("usage: encoder_bench FOLDER [options]")?,
    );
    let (mut size, mut frames, mut batch, mut reps) = (224usize, 16usize, 8usize, 3usize);
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()?;
        match flag.as_str() {
            "--size" => size = value,
            "--frames" => frames = value,
            "--batch" => batch = value,
            "--reps" => reps = value,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    let device = Device::flex();
    let encoder = Encoder::load(&folder, &device)?;
    let clips = (batch / 2).max(1);
    let per_call = clips * 2;
    let pixels: Vec<f32> = (0..per_call * 3 * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let run = || -> Result<usize> {
        let out = encoder.encode_host(pixels.clone(), [clips, 2, 3, size, size], &device)?;
        Ok(out.len())
    };
    run()?;
    let calls = frames.div_ceil(per_call);
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..calls {
            run()?;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let fps = (calls * per_call) as f64 / best;
    println!(
        "{}",
        serde_json::json!({
            "impl": "lam-encoder (burn flex)",
            "architecture": encoder.info.architecture,
            "size": size,
            "frames_per_sec": fps,
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        })
    );
    Ok(())
}
