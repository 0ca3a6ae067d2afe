//! `lam bench`: Rust against a PyTorch twin of the same computation, on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::{Args, Subcommand};
use lam_model::LamConfig;
use lam_model::config::RegularizerKind;
use lam_model::device::parse_device;
use lam_model::lam::StepNoise;
use lam_model::train::{init_model, step_noise};
use lam_model::{checkpoint, optim};
use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time the stage-1 training step against the PyTorch twin (tools/reference/lam_twin.py).
    Train(TrainBenchArgs),
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// Preset whose model and batch sizes are timed.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Overrides, as for `lam train` (e.g. --set model.wm_dim=256).
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warmup steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Threads for PyTorch (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Python interpreter with torch and safetensors.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// cpu, cuda or cuda:N (the twin always runs on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Skip the twin (Rust timing only).
    #[arg(long)]
    pub rust_only: bool,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => bench_train(args),
    }
}

fn twin_script() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("tools/reference/lam_twin.py"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/reference/lam_twin.py"),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .context("tools/reference/lam_twin.py not found (run from the repository root)")
}

fn write_batch(path: &Path, clips: &Tensor<4>) -> Result<()> {
    let shape = clips.dims().to_vec();
    let values: Vec<f32> = clips
        .clone()
        .into_data()
        .try_into_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, shape, &bytes)?;
    std::fs::write(path, safetensors::serialize([("clips", view)], None)?)?;
    Ok(())
}

fn bench_train(args: TrainBenchArgs) -> Result<()> {
    let cfg = LamConfig::preset(&args.preset)?.with_overrides(&args.overrides)?;
    ensure!(
        cfg.regularizer.kind == RegularizerKind::Sparse,
        "the twin implements the sparse regulariser; benchmark with regularizer.kind=sparse"
    );
    let device = parse_device(&args.device)?;
    let ad = device.clone().autodiff();
    let m = &cfg.model;
    let b = cfg.train.batch_size;
    let total = args.warmup + args.steps;
    let mut model = init_model(&cfg, &ad);
    ad.seed(cfg.train.seed + 1);
    let clips = Tensor::<4>::random(
        [b, m.frames, m.tokens(), m.embed_dim],
        Distribution::Normal(0.0, 1.0),
        &ad,
    );

    // Hand the twin the same initial weights and batch.
    let dir = tempfile::tempdir()?;
    checkpoint::save_weights(&model, &dir.path().join("model.safetensors"))?;
    write_batch(&dir.path().join("batch.safetensors"), &clips)?;
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg)?)?;
    let parity: Vec<(&str, f32)> = model
        .valid()
        .forward_loss(&cfg, clips.clone().inner(), &StepNoise::default())
        .terms
        .named();

    let built = optim::build(&model, &cfg.optim, total)?;
    let (mut opt, mut sched) = (built.optimizer, built.scheduler);
    let mut step = |model: lam_model::LatentActionModel, s: usize| {
        let noise = step_noise(&cfg, s, b * (m.frames - 1));
        let out = model.forward_loss(&cfg, clips.clone(), &noise);
        let grads = GradientsParams::from_grads(out.terms.total.backward(), &model);
        let model = opt.step(sched.step(), model, grads);
        let _ = device.sync();
        model
    };
    for s in 0..args.warmup {
        model = step(model, s);
    }
    let t0 = Instant::now();
    for s in args.warmup..total {
        model = step(model, s);
    }
    let rust_ms = t0.elapsed().as_secs_f64() * 1000.0 / args.steps as f64;
    let params = model.num_params();

    let mut result = json!({
        "bench": "train_step",
        "preset": args.preset,
        "overrides": args.overrides,
        "shapes": {"batch": b, "frames": m.frames, "tokens": m.tokens(), "embed_dim": m.embed_dim,
                    "wm_dim": m.wm_dim, "wm_depth": m.wm_depth, "latent_dim": m.latent_dim},
        "params": params,
        "device": args.device,
        "rust_ms_per_step": rust_ms,
    });
    println!(
        "stage-1 training step, batch {b} x T={} x N={} x D={}, {params} parameters",
        m.frames,
        m.tokens(),
        m.embed_dim
    );
    println!("  lam (burn, {})      {rust_ms:>9.2} ms/step", args.device);
    if !args.rust_only {
        let script = twin_script()?;
        let output = Command::new(&args.python)
            .arg(&script)
            .args(["--dir", &dir.path().display().to_string()])
            .args([
                "--steps",
                &args.steps.to_string(),
                "--warmup",
                &args.warmup.to_string(),
            ])
            .args(["--threads", &args.threads.to_string()])
            .output()
            .with_context(|| format!("cannot start `{}` for the PyTorch twin", args.python))?;
        if !output.status.success() {
            bail!(
                "PyTorch twin failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let twin: Value = serde_json::from_slice(&output.stdout).context("twin printed no JSON")?;
        let torch_ms = twin["ms_per_step"]
            .as_f64()
            .context("twin JSON lacks ms_per_step")?;
        let ratio = torch_ms / rust_ms;
        println!(
            "  PyTorch twin ({} threads) {torch_ms:>9.2} ms/step",
            twin["threads"]
        );
        println!("  speed vs PyTorch       {ratio:>9.2}x  (>1: lam is faster)");
        let mut worst: f64 = 0.0;
        for (name, v) in &parity {
            if let Some(t) = twin["parity"][*name].as_f64() {
                let rel = ((*v as f64) - t).abs() / t.abs().max(1e-6);
                worst = worst.max(rel);
            }
        }
        println!(
            "  parity: same weights and batch, loss {:.6} (lam) vs {:.6} (PyTorch), worst relative term error {worst:.2e}",
            parity[0].1,
            twin["parity"]["loss"].as_f64().unwrap_or(f64::NAN)
        );
        result["torch_ms_per_step"] = json!(torch_ms);
        result["speed_ratio_vs_torch"] = json!(ratio);
        result["torch"] = twin["torch"].clone();
        result["torch_threads"] = twin["threads"].clone();
        result["parity_lam"] = json!(
            parity
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        );
        result["parity_torch"] = twin["parity"].clone();
        result["parity_worst_relative_error"] = json!(worst);
    }
    if let Some(out) = args.out {
        lam_data::shards::write_atomic(&out, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    Ok(())
}
