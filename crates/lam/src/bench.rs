//! `lam bench`: Rust against a PyTorch twin of the same computation, on this machine.

mod e2e;
mod ingest;

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
    /// Time one CEM plan (300 x 30, horizon 5) against the PyTorch twin
    /// (tools/reference/plan_twin.py), with and without the key/value cache.
    Plan(PlanBenchArgs),
    /// Time the end-to-end stage-1 training step (sim encoder + IDM + world model, `lam train
    /// --frames`) against its PyTorch twin (tools/reference/e2e_twin.py).
    E2e(e2e::E2eBenchArgs),
    /// Decode + preprocess throughput of lam-ingest against PyAV + NumPy
    /// (tools/reference/ingest_twin.py), and encoder throughput of lam-encoder against
    /// transformers on the same weights (tools/reference/encoder_twin.py).
    Ingest(IngestBenchArgs),
}

/// Options every benchmark takes.
#[derive(Args)]
pub struct CommonBenchArgs {
    /// Preset whose model sizes are timed (train and plan).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Overrides, as for `lam train` (e.g. --set model.wm_dim=256; train and plan).
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub overrides: Vec<String>,
    /// Threads for the Python twin (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Python interpreter with the twin's packages (torch, safetensors; av and numpy for
    /// ingest; transformers for the encoders).
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// lam's device: cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo
    /// feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The PyTorch twin's device for `train` and `plan`: cpu or cuda[:N] (ingest's twins run on
    /// the CPU).
    #[arg(long, default_value = "cpu")]
    pub twin_device: String,
    /// Skip the twin (Rust timing only).
    #[arg(long)]
    pub rust_only: bool,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PlanBenchArgs {
    #[command(flatten)]
    pub common: CommonBenchArgs,
    /// Candidates per CEM iteration.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Elites per iteration.
    #[arg(long, default_value_t = 30)]
    pub elites: usize,
    /// CEM iterations.
    #[arg(long, default_value_t = 30)]
    pub iterations: usize,
    /// Planning horizon.
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    /// Context frames before the current one.
    #[arg(long, default_value_t = 2)]
    pub history: usize,
    /// Timed plans per variant (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

#[derive(Args)]
pub struct TrainBenchArgs {
    #[command(flatten)]
    pub common: CommonBenchArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed warmup steps.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Let the twin run Muon's Newton-Schulz in float32 (lam's math) instead of
    /// torch.optim.Muon's bfloat16.
    #[arg(long)]
    pub twin_muon_f32: bool,
    /// Rounds of lam's timed steps and the twin's, taken in turn: the medians of each side and
    /// of the per-round ratios are reported, every round kept in the JSON.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
}

#[derive(Args)]
pub struct IngestBenchArgs {
    #[command(flatten)]
    pub common: CommonBenchArgs,
    /// Folder of videos (recursive). Default: a generated set (VP9 webm, h264 and AV1 mp4,
    /// made with the ffmpeg CLI in a temporary folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep the generated video set in this folder (reused if it already holds videos).
    #[arg(long, conflicts_with = "data")]
    pub videos: Option<PathBuf>,
    /// Output frame rate (resampling by timestamps).
    #[arg(long, default_value_t = 4.0)]
    pub fps: f64,
    /// Output side (short-side resize + centre crop).
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Files decoded at a time by lam (the twin decodes one at a time).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Passes over the folder per round and side (the fastest is reported).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Rounds, each lam then the twin.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Skip the decode + preprocess part.
    #[arg(long)]
    pub no_ingest: bool,
    /// Skip the encoder part.
    #[arg(long)]
    pub no_encoder: bool,
    /// Frames encoded per timed pass.
    #[arg(long, default_value_t = 16)]
    pub encoder_frames: usize,
    /// Frames per encoder call.
    #[arg(long, default_value_t = 8)]
    pub encoder_batch: usize,
    /// Timed passes per encoder and side (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    pub encoder_reps: usize,
    /// Encoder frame side.
    #[arg(long, default_value_t = 224)]
    pub encoder_size: usize,
    /// Hugging Face folders to time (every subfolder holding a config.json). Default: the
    /// twin builds random-weight DINOv2-S/14 and V-JEPA 2-S/16 folders; with --rust-only
    /// this option is needed for the encoder part.
    #[arg(long)]
    pub encoders: Option<PathBuf>,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => bench_train(args),
        BenchCommand::Plan(args) => bench_plan(args),
        BenchCommand::E2e(args) => e2e::bench_e2e(args),
        BenchCommand::Ingest(args) => ingest::bench_ingest(args),
    }
}

fn twin_script(name: &str) -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("tools/reference").join(name),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tools/reference")
            .join(name),
    ];
    candidates
        .into_iter()
        .find(|p| p.exists())
        .with_context(|| format!("tools/reference/{name} not found (run from the repository root)"))
}

/// Writes named tensors of any rank to a safetensors file.
fn write_tensors(path: &Path, tensors: Vec<(&str, Vec<usize>, Vec<f32>)>) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, shape, values)| {
            (
                name.to_string(),
                shape,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, b)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::write(path, safetensors::serialize(views, None)?)?;
    Ok(())
}

fn host<const D: usize>(t: &Tensor<D>) -> (Vec<usize>, Vec<f32>) {
    (
        t.dims().to_vec(),
        t.clone()
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 tensor"),
    )
}

/// Adds lam's memory to a benchmark's result and writes it to `out`: the process's peak
/// resident memory (host memory only), and what the device's allocator holds at the end
/// (`bytes_reserved`: live allocations plus the pages its pools keep for reuse, so about its
/// high-water mark) on a backend that reports its pools (the GPU backends; printed too).
pub(crate) fn finish(mut result: Value, device: &Device, out: Option<&Path>) -> Result<()> {
    result["lam_peak_rss_bytes"] = json!(peak_rss_bytes());
    if let Some(usage) = device.memory_pool_usage() {
        println!(
            "  lam device memory: {:.1} MB reserved by the allocator, {:.1} MB in use",
            usage.bytes_reserved as f64 / 1e6,
            usage.bytes_in_use as f64 / 1e6
        );
        result["lam_device_bytes_reserved"] = json!(usage.bytes_reserved);
        result["lam_device_bytes_in_use"] = json!(usage.bytes_in_use);
    }
    if let Some(out) = out {
        lam_data::shards::write_atomic(out, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    Ok(())
}

/// This process's peak resident memory in bytes (Linux `VmHWM`), where the system says it.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs a twin script and parses the JSON it prints.
fn run_twin(python: &str, script: &str, args: &[String]) -> Result<Value> {
    let output = Command::new(python)
        .arg(twin_script(script)?)
        .args(args)
        .output()
        .with_context(|| format!("cannot start `{python}` for the PyTorch twin"))?;
    if !output.status.success() {
        bail!(
            "PyTorch twin {script} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| format!("{script} printed no JSON"))
}

/// A training-step twin's run on the inputs lam wrote to `dir`.
struct TrainTwin<'a> {
    common: &'a CommonBenchArgs,
    dir: &'a Path,
    steps: usize,
    warmup: usize,
    /// Newton-Schulz in float32 (lam's math) instead of torch.optim.Muon's bfloat16.
    muon_f32: bool,
}

/// Runs the training-step twin `script` once: its JSON (`ms_per_step`, `parity`, ...).
fn twin_round(run: &TrainTwin, script: &str) -> Result<Value> {
    let mut twin_args: Vec<String> = vec![
        "--dir".into(),
        run.dir.display().to_string(),
        "--steps".into(),
        run.steps.to_string(),
        "--warmup".into(),
        run.warmup.to_string(),
        "--threads".into(),
        run.common.threads.to_string(),
        "--device".into(),
        run.common.twin_device.clone(),
    ];
    if run.muon_f32 {
        twin_args.push("--muon-f32".into());
    }
    let twin = run_twin(&run.common.python, script, &twin_args)?;
    ensure!(
        twin["ms_per_step"].as_f64().is_some(),
        "twin {script}'s JSON lacks ms_per_step"
    );
    Ok(twin)
}

/// Timings of lam and its twin taken in turn: round r times lam's steps, then starts the twin
/// for its own warmup and steps. On a shared machine either side's time moves by tens of
/// percent from one minute to the next; a ratio from one round pairs times taken minutes
/// apart, so the result is the median over the rounds (of lam's time, the twin's time and
/// the per-round ratio), every round kept in the JSON.
#[derive(Default)]
struct Rounds {
    lam_ms: Vec<f64>,
    /// The twin's JSON per round (none with `--rust-only`).
    twins: Vec<Value>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Rounds {
    /// `rounds` rounds: `lam_ms(r)` times lam's steps of round `r` (milliseconds per step), then
    /// `twin` (none with `--rust-only`) runs its script once.
    fn take(
        rounds: usize,
        twin: Option<(&TrainTwin, &str)>,
        mut lam_ms: impl FnMut(usize) -> Result<f64>,
    ) -> Result<Self> {
        let mut timed = Self::default();
        for r in 0..rounds {
            timed.lam_ms.push(lam_ms(r)?);
            if let Some((run, script)) = twin {
                timed.twins.push(twin_round(run, script)?);
            }
        }
        Ok(timed)
    }

    fn torch_ms(&self) -> Vec<f64> {
        self.twins
            .iter()
            .map(|t| t["ms_per_step"].as_f64().unwrap_or(f64::NAN))
            .collect()
    }

    /// lam's median time per step.
    fn lam_median(&self) -> f64 {
        median(&self.lam_ms)
    }

    /// Prints the twin's median time and the ratio against lam, and records every round, the
    /// medians, the twin's memory and the loss terms beside lam's `parity` in `result`.
    /// Returns the twin's loss terms and their worst relative difference from lam's.
    fn record(&self, parity: &[(&str, f32)], result: &mut Value) -> Result<(Value, f64)> {
        let twin = self.twins.first().context("no twin round ran")?;
        let torch = self.torch_ms();
        let ratios: Vec<f64> = self.lam_ms.iter().zip(&torch).map(|(l, t)| t / l).collect();
        let (torch_ms, ratio) = (median(&torch), median(&ratios));
        println!(
            "  PyTorch twin ({}, {} threads) {torch_ms:>9.2} ms/step",
            twin["device"], twin["threads"]
        );
        if self.lam_ms.len() > 1 {
            for (r, ((l, t), q)) in self.lam_ms.iter().zip(&torch).zip(&ratios).enumerate() {
                println!(
                    "    round {}: lam {l:.2} ms, twin {t:.2} ms, {q:.2}x",
                    r + 1
                );
            }
            println!(
                "  speed vs PyTorch       {ratio:>9.2}x  (>1: lam is faster; median of {} rounds, {:.2}-{:.2}x)",
                ratios.len(),
                ratios.iter().copied().fold(f64::INFINITY, f64::min),
                ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            );
        } else {
            println!("  speed vs PyTorch       {ratio:>9.2}x  (>1: lam is faster)");
        }
        let mut worst: f64 = 0.0;
        for (name, v) in parity {
            if let Some(t) = twin["parity"][*name].as_f64() {
                let rel = ((*v as f64) - t).abs() / t.abs().max(1e-6);
                worst = worst.max(rel);
            }
        }
        result["torch_ms_per_step"] = json!(torch_ms);
        result["speed_ratio_vs_torch"] = json!(ratio);
        result["rounds"] = json!(
            self.lam_ms
                .iter()
                .zip(&torch)
                .zip(&ratios)
                .map(|((l, t), q)| json!({"lam_ms": l, "torch_ms": t, "ratio": q}))
                .collect::<Vec<_>>()
        );
        result["torch"] = twin["torch"].clone();
        result["torch_threads"] = twin["threads"].clone();
        result["torch_device"] = twin["device"].clone();
        result["torch_peak_bytes"] = self
            .twins
            .iter()
            .filter_map(|t| t["peak_bytes"].as_u64())
            .max()
            .map_or(Value::Null, |b| json!(b));
        result["torch_muon"] = twin["muon"].clone();
        result["parity_lam"] = json!(
            parity
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
        );
        result["parity_torch"] = twin["parity"].clone();
        result["parity_worst_relative_error"] = json!(worst);
        Ok((twin["parity"].clone(), worst))
    }
}

fn bench_train(args: TrainBenchArgs) -> Result<()> {
    let cfg = LamConfig::preset(&args.common.preset)?.with_overrides(&args.common.overrides)?;
    ensure!(
        cfg.regularizer.kind == RegularizerKind::Sparse,
        "the twin implements the sparse regulariser; benchmark with regularizer.kind=sparse"
    );
    let device = parse_device(&args.common.device)?;
    let ad = device.clone().autodiff();
    let m = &cfg.model;
    let b = cfg.train.batch_size;
    let rounds = args.rounds as usize;
    let total = args.warmup + rounds * args.steps;
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
    let (shape, values) = host(&clips);
    write_tensors(
        &dir.path().join("batch.safetensors"),
        vec![("clips", shape, values)],
    )?;
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
    let twin = TrainTwin {
        common: &args.common,
        dir: dir.path(),
        steps: args.steps,
        warmup: args.warmup,
        muon_f32: args.twin_muon_f32,
    };
    let params = model.num_params();
    // The model moves through the rounds' steps (each step takes it by value).
    let mut model = Some(model);
    let twin = (!args.common.rust_only).then_some((&twin, "lam_twin.py"));
    let timed = Rounds::take(rounds, twin, |r| {
        let mut m = model.take().expect("the model between rounds");
        let t0 = Instant::now();
        for s in 0..args.steps {
            m = step(m, args.warmup + r * args.steps + s);
        }
        model = Some(m);
        Ok(t0.elapsed().as_secs_f64() * 1000.0 / args.steps as f64)
    })?;
    let rust_ms = timed.lam_median();

    let mut result = json!({
        "bench": "train_step",
        "preset": args.common.preset,
        "overrides": args.common.overrides,
        "shapes": {"batch": b, "frames": m.frames, "tokens": m.tokens(), "embed_dim": m.embed_dim,
                    "wm_dim": m.wm_dim, "wm_depth": m.wm_depth, "latent_dim": m.latent_dim},
        "params": params,
        "device": args.common.device,
        "rust_ms_per_step": rust_ms,
    });
    println!(
        "stage-1 training step, batch {b} x T={} x N={} x D={}, {params} parameters",
        m.frames,
        m.tokens(),
        m.embed_dim
    );
    println!(
        "  lam (burn, {})      {rust_ms:>9.2} ms/step",
        args.common.device
    );
    if !args.common.rust_only {
        let (torch_parity, worst) = timed.record(&parity, &mut result)?;
        println!(
            "  parity: same weights and batch, loss {:.6} (lam) vs {:.6} (PyTorch), worst relative term error {worst:.2e}",
            parity[0].1,
            torch_parity["loss"].as_f64().unwrap_or(f64::NAN)
        );
    }
    finish(result, &device, args.common.out.as_deref())
}

fn bench_plan(args: PlanBenchArgs) -> Result<()> {
    use lam_control::planner::{HostPrecision, PlannerConfig, Problem, SearchSpace, plan};
    use lam_control::rollout::rollout;
    let cfg = LamConfig::preset(&args.common.preset)?.with_overrides(&args.common.overrides)?;
    let device = parse_device(&args.common.device)?;
    device.seed(cfg.train.seed);
    let m = &cfg.model;
    let mut wm = m.world_model().init(&device);
    // A trained model's AdaLN heads are not zero: give them ordinary weights so that the
    // latent actions change the rollout (and the parity check covers them).
    for block in wm.blocks.iter_mut() {
        block.ada = burn::nn::LinearConfig::new(m.wm_dim, 6 * m.wm_dim).init(&device);
    }
    wm.final_ada = burn::nn::LinearConfig::new(m.wm_dim, 2 * m.wm_dim).init(&device);
    let (n, dd, d) = (m.tokens(), m.embed_dim, m.latent_dim);
    let window = m.frames - 1;
    let normal = Distribution::Normal(0.0, 1.0);
    let history = Tensor::<4>::random([1, args.history, n, dd], normal, &device);
    let history_z = Tensor::<3>::random([1, args.history, d], normal, &device);
    let current = Tensor::<3>::random([1, n, dd], normal, &device);
    let goal = Tensor::<3>::random([1, n, dd], normal, &device);
    let cache = wm.prefill(history.clone(), history_z.clone(), window);
    let pcfg = PlannerConfig {
        samples: args.samples,
        elites: args.elites,
        iterations: args.iterations,
        horizon: args.horizon,
        ..PlannerConfig::default()
    };
    let space = SearchSpace::Latent { dim: d };
    let problem_in = |use_cache: bool, precision: HostPrecision| Problem {
        world_model: &wm,
        cache: Some(&cache),
        window,
        history: Some((history.clone(), history_z.clone())),
        use_cache,
        host: lam_control::rollout::HostRollout::new(precision),
        current: current.clone(),
        goal: goal.clone(),
        support: None,
        feasible: None,
        memory: None,
    };
    let problem = |use_cache: bool| problem_in(use_cache, HostPrecision::F32);
    // bf16 products on AMX tiles, where this CPU has them.
    let bf16 = HostPrecision::Bf16.effective() == HostPrecision::Bf16;
    // Fixed candidates for the rollout parity check.
    let seqs_t = Tensor::<3>::random([16, args.horizon, d], normal, &device);
    let (_, seqs) = host(&seqs_t);
    let finals = rollout(&problem(true), &space, &seqs, 16, args.horizon);
    let finals_re = rollout(&problem(false), &space, &seqs, 16, args.horizon);
    let self_diff = (finals.clone() - finals_re)
        .abs()
        .max()
        .into_scalar::<f32>();

    let bf16_diff = bf16.then(|| {
        let got = rollout(
            &problem_in(true, HostPrecision::Bf16),
            &space,
            &seqs,
            16,
            args.horizon,
        );
        let scale = finals.clone().abs().max().into_scalar::<f32>();
        let diff = (got - finals.clone()).abs().max().into_scalar::<f32>();
        (diff, scale)
    });

    // Each timed plan makes its own host copy of the weights, as every closed-loop step does.
    let time_plan_in = |use_cache: bool, precision: HostPrecision| -> f64 {
        let _ = plan(&pcfg, &problem_in(use_cache, precision), &space);
        (0..args.repeats.max(1))
            .map(|_| {
                let t0 = Instant::now();
                let p = problem_in(use_cache, precision);
                let _ = plan(&pcfg, &p, &space);
                let _ = device.sync();
                t0.elapsed().as_secs_f64() * 1000.0
            })
            .fold(f64::INFINITY, f64::min)
    };
    let time_plan = |use_cache: bool| time_plan_in(use_cache, HostPrecision::F32);
    let rust_cached = time_plan(true);
    let rust_recompute = time_plan(false);
    let rust_bf16 = bf16.then(|| time_plan_in(true, HostPrecision::Bf16));
    println!(
        "CEM {}x{} horizon {}, {} context frames, world model {} blocks x {} wide, N={} D={}",
        args.samples,
        args.iterations,
        args.horizon,
        args.history + 1,
        m.wm_depth,
        m.wm_dim,
        n,
        dd
    );
    println!("  lam, key/value cache        {rust_cached:>10.1} ms/plan");
    match (rust_bf16, bf16_diff) {
        (Some(ms), Some((diff, scale))) => println!(
            "  lam, key/value cache, bf16  {ms:>10.1} ms/plan   (AMX tiles; final frames of 16 \
             fixed candidates within {diff:.2e} of float32, frames up to {scale:.2})"
        ),
        _ => println!("  lam, bf16: this CPU has no AMX tiles (not timed)"),
    }
    println!(
        "  lam, recompute history      {rust_recompute:>10.1} ms/plan   (cache speed-up {:.2}x)",
        rust_recompute / rust_cached
    );
    // Both see the current frame and `window` frames before it. When the rollout's last step has
    // more (history + horizon > window + 1) they differ by design: the cached keys of the kept
    // frames were computed with the evicted frames in their context, recomputing drops it.
    let seen = args.history + args.horizon;
    println!(
        "  lam: cached vs recomputed rollout max abs difference {self_diff:.2e}{}",
        if seen > window + 1 {
            format!(
                " (history + horizon = {seen} frames > window + 1 = {}: they differ by design)",
                window + 1
            )
        } else {
            String::new()
        }
    );
    let mut result = json!({
        "bench": "plan_cem",
        "preset": args.common.preset,
        "overrides": args.common.overrides,
        "planner": {"samples": args.samples, "elites": args.elites, "iterations": args.iterations, "horizon": args.horizon, "history": args.history},
        "device": args.common.device,
        "rust_ms_per_plan_cached": rust_cached,
        "rust_ms_per_plan_recompute": rust_recompute,
        "rust_cache_speedup": rust_recompute / rust_cached,
        "rust_cache_vs_recompute_max_abs": self_diff,
        "rust_ms_per_plan_cached_bf16": rust_bf16,
        "rust_bf16_vs_f32_max_abs": bf16_diff.map(|(d, _)| d),
    });
    if !args.common.rust_only {
        let dir = tempfile::tempdir()?;
        checkpoint::save_weights(&wm, &dir.path().join("model.safetensors"))?;
        // The twin loads the world model under the same names as in a full stage-1 model.
        let lam = init_model(&cfg, &device);
        let mut lam = lam;
        lam.world_model = wm.clone();
        checkpoint::save_weights(&lam, &dir.path().join("model.safetensors"))?;
        let (s_h, v_h) = host(&history);
        let (s_hz, v_hz) = host(&history_z);
        let (s_c, v_c) = host(&current);
        let (s_g, v_g) = host(&goal);
        let (s_s, _) = host(&seqs_t);
        let (s_f, v_f) = host(&finals);
        write_tensors(
            &dir.path().join("problem.safetensors"),
            vec![
                ("history", s_h, v_h),
                ("history_z", s_hz, v_hz),
                ("current", s_c, v_c),
                ("goal", s_g, v_g),
                ("seqs", s_s, seqs.clone()),
                ("finals", s_f, v_f),
            ],
        )?;
        let mut twin_cfg = serde_json::to_value(&cfg)?;
        twin_cfg["window"] = json!(window);
        twin_cfg["planner"] = json!({"samples": args.samples, "elites": args.elites, "iterations": args.iterations,
                                     "horizon": args.horizon, "min_std": pcfg.min_std});
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_string(&twin_cfg)?,
        )?;
        let twin = run_twin(
            &args.common.python,
            "plan_twin.py",
            &[
                "--dir".into(),
                dir.path().display().to_string(),
                "--repeats".into(),
                args.repeats.to_string(),
                "--threads".into(),
                args.common.threads.to_string(),
                "--device".into(),
                args.common.twin_device.clone(),
            ],
        )?;
        let t_re = twin["ms_per_plan_recompute"]
            .as_f64()
            .context("twin JSON lacks ms_per_plan_recompute")?;
        let t_c = twin["ms_per_plan_cached"]
            .as_f64()
            .context("twin JSON lacks ms_per_plan_cached")?;
        println!(
            "  PyTorch, recompute history  {t_re:>10.1} ms/plan   ({}, {} threads)",
            twin["device"], twin["threads"]
        );
        println!("  PyTorch, key/value cache    {t_c:>10.1} ms/plan");
        println!(
            "  lam (cache) vs PyTorch (recompute)  {:>6.2}x faster",
            t_re / rust_cached
        );
        println!(
            "  lam (cache) vs PyTorch (cache)      {:>6.2}x faster",
            t_c / rust_cached
        );
        println!(
            "  parity: final frames of 16 fixed candidates, max abs difference {:.2e} (PyTorch cached) / {:.2e} (recomputed)",
            twin["parity_cached_max_abs"].as_f64().unwrap_or(f64::NAN),
            twin["parity_recompute_max_abs"]
                .as_f64()
                .unwrap_or(f64::NAN)
        );
        result["torch_ms_per_plan_recompute"] = json!(t_re);
        result["torch_ms_per_plan_cached"] = json!(t_c);
        result["speedup_vs_torch_recompute"] = json!(t_re / rust_cached);
        result["speedup_vs_torch_cached"] = json!(t_c / rust_cached);
        let t_bf16 = twin["ms_per_plan_cached_bf16"].as_f64();
        if let Some(t) = t_bf16 {
            println!(
                "  PyTorch, key/value cache, bf16 autocast {t:>10.1} ms/plan   (final frames within \
                 {:.2e} of lam's float32)",
                twin["bf16_cached_max_abs"].as_f64().unwrap_or(f64::NAN)
            );
            result["torch_ms_per_plan_cached_bf16"] = json!(t);
            result["torch_bf16_cached_max_abs"] = twin["bf16_cached_max_abs"].clone();
        }
        if let Some(ms) = rust_bf16 {
            println!(
                "  lam (cache, bf16) vs PyTorch (cache, float32)      {:>6.2}x faster",
                t_c / ms
            );
            result["speedup_bf16_vs_torch_cached"] = json!(t_c / ms);
            if let Some(t) = t_bf16 {
                println!(
                    "  lam (cache, bf16) vs PyTorch (cache, bf16 autocast) {:>6.2}x faster",
                    t / ms
                );
                result["speedup_bf16_vs_torch_cached_bf16"] = json!(t / ms);
            }
        }
        result["parity"] = json!({"cached": twin["parity_cached_max_abs"], "recompute": twin["parity_recompute_max_abs"]});
        result["torch"] = twin["torch"].clone();
        result["torch_threads"] = twin["threads"].clone();
        result["torch_device"] = twin["device"].clone();
        result["torch_peak_bytes"] = twin["peak_bytes"].clone();
    }
    finish(result, &device, args.common.out.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_written_with_the_memory_lam_used() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bench.json");
        // Some memory in use first, so that the peak is not the bare process's.
        let held = std::hint::black_box(vec![1u8; 32 << 20]);
        finish(json!({"bench": "test"}), &Device::flex(), Some(&out)).unwrap();
        drop(held);
        let written: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(written["bench"], "test");
        if cfg!(target_os = "linux") {
            let peak = written["lam_peak_rss_bytes"]
                .as_u64()
                .expect("peak RSS on Linux");
            assert!(peak >= 32 << 20, "peak {peak}");
        }
        // The CPU backend keeps no pools to report.
        assert!(written.get("lam_device_bytes_reserved").is_none());
    }

    /// Rounds: medians of each side and of the per-round ratios (not the ratio of the
    /// medians), every round kept, the twin's largest memory, parity against the first round.
    #[test]
    fn rounds_report_medians_and_keep_every_round() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let twin = |ms: f64, peak: u64| {
            json!({"ms_per_step": ms, "peak_bytes": peak, "parity": {"loss": 2.0, "pred": 1.0},
                   "device": "cpu", "threads": 2, "torch": "x", "muon": "f32"})
        };
        let timed = Rounds {
            lam_ms: vec![10.0, 40.0, 20.0],
            twins: vec![twin(30.0, 5), twin(20.0, 9), twin(10.0, 7)],
        };
        assert_eq!(timed.lam_median(), 20.0);
        let mut result = json!({});
        let (_, worst) = timed
            .record(&[("loss", 2.2), ("pred", 1.0)], &mut result)
            .unwrap();
        // Ratios 3.0, 0.5, 0.5: median 0.5 (the medians' ratio would be 1.0).
        assert_eq!(result["speed_ratio_vs_torch"], 0.5);
        assert_eq!(result["torch_ms_per_step"], 20.0);
        assert_eq!(result["rounds"].as_array().unwrap().len(), 3);
        assert_eq!(result["rounds"][1]["ratio"], 0.5);
        assert_eq!(result["torch_peak_bytes"], 9);
        assert!((worst - 0.1).abs() < 1e-6, "worst {worst}");
        assert!(Rounds::default().record(&[], &mut result).is_err());
        // Without a twin (`--rust-only`): lam's rounds alone, in order; a failing round stops.
        let lam_only = Rounds::take(3, None, |r| Ok(10.0 * (r + 1) as f64)).unwrap();
        assert_eq!(lam_only.lam_ms, vec![10.0, 20.0, 30.0]);
        assert!(lam_only.twins.is_empty());
        assert!(
            Rounds::take(2, None, |r| if r == 1 { bail!("round 2") } else { Ok(1.0) }).is_err()
        );
    }
}
