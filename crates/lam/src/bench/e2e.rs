//! `lam bench e2e`: the end-to-end stage-1 training step (sim encoder + IDM + world model,
//! `lam train --frames`) against its PyTorch twin (tools/reference/e2e_twin.py).
//!
//! lam's side is the training loop users run, [`train_end_to_end`], over `warmup + steps`
//! steps on synthetic clips; its time per step is the mean of the timed steps' wall times the
//! loop reports (the device synchronised at each step's end; setup, validation and the closing
//! checkpoint outside them), as the twin times its own loop. The twin gets the same initial
//! weights (the encoder and model every run starts from), one batch, the step's SIGReg
//! directions and quadrature, and reports its loss terms on them: the parity check against
//! [`step_forward`], the function the loop runs.

use anyhow::{Result, ensure};
use burn::prelude::*;
use burn::tensor::Distribution;
use clap::Args;
use lam_encoder::end_to_end::{
    ClipFrames, EndToEndConfig, EndToEndRun, Guard, Nets, initial_encoder, initial_model,
    step_forward, train_end_to_end,
};
use lam_encoder::lam_ingest::Normalization;
use lam_encoder::pretrain::directions;
use lam_encoder::sigreg::sigreg_knots;
use lam_model::LamConfig;
use lam_model::checkpoint;
use lam_model::config::RegularizerKind;
use lam_model::device::parse_device;
use lam_model::lam::StepNoise;
use serde_json::json;

use super::{CommonBenchArgs, Rounds, TrainTwin, finish, host, write_tensors};

#[derive(Args)]
pub struct E2eBenchArgs {
    #[command(flatten)]
    pub common: CommonBenchArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed warmup steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Frames per clip (history + the next), as `lam train --frames --clip-frames`.
    #[arg(long, default_value_t = 4)]
    pub clip_frames: usize,
    /// Let the twin run Muon's Newton-Schulz in float32 (lam's math).
    #[arg(long)]
    pub twin_muon_f32: bool,
    /// Rounds of lam's timed runs and the twin's, taken in turn (medians reported, as
    /// `lam bench train --rounds`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
}

/// Distinct synthetic frames the clips are cut from.
const FRAMES: usize = 512;

pub fn bench_e2e(args: E2eBenchArgs) -> Result<()> {
    ensure!(
        args.steps >= 1 && args.warmup >= 1,
        "--steps and --warmup must be at least 1"
    );
    let e2e = EndToEndConfig {
        eval_frames: 16,
        ..EndToEndConfig::default()
    };
    let t = args.clip_frames;
    let mut cfg = LamConfig::preset(&args.common.preset)?.with_overrides(&args.common.overrides)?;
    cfg.model.embed_dim = e2e.embed_dim();
    cfg.model.grid = [1, 1];
    cfg.model.frames = t;
    cfg.model.standardize = true;
    cfg.train.log_every = usize::MAX;
    cfg.train.checkpoint_every = 0;
    cfg.train.val_batches = 1;
    ensure!(
        cfg.regularizer.kind == RegularizerKind::Sparse && e2e.guard == Guard::Sigreg,
        "the twin implements the sparse regulariser and the sigreg guard"
    );
    let device = parse_device(&args.common.device)?;
    let ad = device.clone().autodiff();
    let (b, s) = (cfg.train.batch_size, e2e.encoder.image_size);

    // Synthetic clips: normalised pixels, windows of consecutive frames.
    ad.seed(cfg.train.seed + 1);
    let pixels = Tensor::<2>::random([FRAMES, 3 * s * s], Distribution::Normal(0.0, 1.0), &ad)
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32");
    let windows: Vec<Vec<usize>> = (0..FRAMES - t).map(|i| (i..i + t).collect()).collect();
    let data = ClipFrames {
        size: s,
        frames_per_clip: t,
        pixels,
        val: windows[..b.min(windows.len())].to_vec(),
        train: windows,
    };

    // The twin's inputs: the initial weights, one batch, the step's SIGReg draws.
    let dir = tempfile::tempdir()?;
    let encoder = initial_encoder(&e2e, cfg.train.seed, &ad)?;
    let model = initial_model(&cfg, &ad);
    checkpoint::save_weights(&encoder, &dir.path().join("encoder.safetensors"))?;
    checkpoint::save_weights(&model, &dir.path().join("model.safetensors"))?;
    let idx: Vec<usize> = (0..b).collect();
    let x = data.batch(&data.train, &idx, &ad);
    let dp = e2e.embed_dim();
    let dirs = directions(
        &mut lam_model::train::step_rng(cfg.train.seed, 0, 7),
        dp,
        e2e.sigreg_directions,
    );
    let (tk, wk) = sigreg_knots(e2e.sigreg_knots, e2e.sigreg_t_max);
    let k = tk.len();
    let to_tensor = |v: &[f32], shape: [usize; 1]| {
        Tensor::<1>::from_data(TensorData::new(v.to_vec(), shape), &ad)
    };
    let (tkt, wkt) = (to_tensor(&tk, [k]), to_tensor(&wk, [k]));
    let dirs_t = Tensor::<2>::from_data(
        TensorData::new(dirs.clone(), [dp, e2e.sigreg_directions]),
        &ad,
    );
    let (xs, xv) = host(&x);
    write_tensors(
        &dir.path().join("batch.safetensors"),
        vec![
            ("clips", xs, xv),
            ("directions", vec![dp, e2e.sigreg_directions], dirs),
            ("knots", vec![k], tk),
            ("weights", vec![k], wk),
        ],
    )?;
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg)?)?;
    std::fs::write(dir.path().join("e2e.json"), serde_json::to_string(&e2e)?)?;
    let nets = Nets {
        model: &model,
        encoder: &encoder,
        target: &encoder,
        frozen: &encoder,
    };
    let fwd = step_forward(
        &cfg,
        &e2e,
        nets,
        x,
        &StepNoise::default(),
        Some(dirs_t),
        (&tkt, &wkt),
    );
    let mut parity: Vec<(&str, f32)> = fwd.out.terms.named();
    let guard = fwd.guard.into_scalar::<f32>();
    parity.push(("sigreg", guard));
    let (params_model, params_encoder) = (model.num_params(), encoder.num_params());
    drop((model, encoder));

    // lam: the training loop; the mean of its timed steps' wall times.
    let run = |name: &str| -> Result<Vec<f64>> {
        let mut c = cfg.clone();
        c.train.steps = args.warmup + args.steps;
        let run = EndToEndRun {
            dir: dir.path().join(name),
            resume: false,
            force: true,
            progress: false,
            stop_on_collapse: false,
            stop_after: None,
            probe: None,
            probe_frames: None,
            norm: Normalization::IMAGENET,
            source: "lam bench e2e (synthetic clips)".into(),
        };
        let summary = train_end_to_end(&c, &e2e, &data, &device, &run)?;
        ensure!(
            summary.final_loss.is_finite(),
            "lam's end-to-end run diverged"
        );
        Ok(summary.step_seconds[args.warmup..]
            .iter()
            .map(|s| s * 1000.0)
            .collect())
    };
    let twin = TrainTwin {
        common: &args.common,
        dir: dir.path(),
        steps: args.steps,
        warmup: args.warmup,
        muon_f32: args.twin_muon_f32,
    };
    let mut step_ms: Vec<Vec<f64>> = Vec::new();
    let twin = (!args.common.rust_only).then_some((&twin, "e2e_twin.py"));
    let timed = Rounds::take(args.rounds as usize, twin, |r| {
        let ms = run(&format!("round-{r}"))?;
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        step_ms.push(ms);
        Ok(mean)
    })?;
    let rust_ms = timed.lam_median();

    println!(
        "end-to-end stage-1 training step (sim encoder {}x{} patch {} D {} depth {} + latent action \
         model), batch {b} x T={t}, {} + {} parameters",
        s,
        s,
        e2e.encoder.patch_size,
        e2e.encoder.dim,
        e2e.encoder.depth,
        params_encoder,
        params_model
    );
    let all: Vec<f64> = step_ms.concat();
    println!(
        "  lam (burn, {})      {rust_ms:>9.2} ms/step  (mean of {} timed steps after {} warmup; \
         steps {:.2}-{:.2} ms, median {:.2})",
        args.common.device,
        args.steps,
        args.warmup,
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        super::median(&all),
    );
    let mut result = json!({
        "bench": "e2e_train_step",
        "preset": args.common.preset,
        "overrides": args.common.overrides,
        "shapes": {"batch": b, "frames": t, "image": s, "patch": e2e.encoder.patch_size,
                    "encoder_dim": e2e.encoder.dim, "encoder_depth": e2e.encoder.depth,
                    "wm_dim": cfg.model.wm_dim, "wm_depth": cfg.model.wm_depth,
                    "latent_dim": cfg.model.latent_dim, "guard": "sigreg", "pooling": "mean"},
        "params_encoder": params_encoder,
        "params_model": params_model,
        "device": args.common.device,
        "rust_ms_per_step": rust_ms,
        "rust_step_ms": step_ms,
    });
    if !args.common.rust_only {
        let (torch_parity, worst) = timed.record(&parity, &mut result)?;
        println!(
            "  parity: same weights and batch, loss {:.6} + sigreg {:.6} (lam) vs {:.6} + {:.6} (PyTorch), worst relative term error {worst:.2e}",
            parity[0].1,
            guard,
            torch_parity["loss"].as_f64().unwrap_or(f64::NAN),
            torch_parity["sigreg"].as_f64().unwrap_or(f64::NAN),
        );
    }
    finish(result, &device, args.common.out.as_deref())
}
