//! `lam experiment`: the papers' experiments as commands on the simulated suite. Each runs
//! end to end at a documented CPU scale and writes `report.md`, `report.json` and PNG figures
//! into its report folder, listing every `lam` command it ran.
//!
//! `regularizers` reproduces Tables 1-3 of the latent-action world-model paper
//! (`latent-action-wm-robot-control`): six latent action models on the same unlabeled human
//! video (sparse l1 0.1 / 0.5, noisy beta 0.001 / 0.01, VQ k 64 / 16), each scored for leakage
//! (scene cut, partner frame from another episode), transfer (cycle consistency), the
//! controller's fit on labeled robot episodes (cosine, R^2, inverse MSE) and MPC (planning
//! confidence and error), and, beyond the paper, closed-loop success on the suite's protocol:
//! does "sparse is best for video, noisy for planning" hold for success?
//!
//! A report folder is resumable: the data stage and every (arm, seed) whose `result.json`
//! was written with the same settings are kept; anything else in an arm's folder is redone.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tracing::info;

use crate::pipeline::{DataLayout, DataSpec, PlanSpec, Steps, eval_argv, fit_argv, read_json};
use crate::plot::{BarPanel, bar_panels};

#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Tables 1-3 of the latent-action world-model paper (leakage, transfer, controller and
    /// MPC per regulariser) plus closed-loop success per regulariser.
    Regularizers(RegularizerArgs),
    /// Appendix A.1 / A.2 of the same paper: the leakage ratio over training, and the
    /// open-loop prediction error over training with action dropout 0.15 against 0.
    Training(TrainingArgs),
    /// The seed paper's encoder finetuning: the pretrained sim encoder frozen, or finetuned
    /// end to end with the world model under each guard (distillation to the initial
    /// weights, SIGReg, an EMA target, none): embedding std, effective rank, state probe,
    /// collapse warnings and closed-loop success.
    Encoders(EncoderArgs),
    /// The in-the-wild claim: per task, the latent-action world model trained on unlabeled
    /// human video and planned through a controller fitted on the labeled robot episodes,
    /// against an action-conditioned world model trained on those labeled episodes alone.
    Wild(WildArgs),
    /// LAWM Figure 4 with error bars: `lam lawm compare` (scratch, supervised pretraining,
    /// world-model pretraining on robot / on human video, then the same finetuning on a few
    /// labeled demos) repeated over training seeds, success pooled per arm and task, and the
    /// CCA of Table III.
    Lawm(LawmArgs),
}

/// The data every experiment starts from (the data stage of `lam demo`).
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Start over: clear what an earlier run of this experiment wrote into --out.
    #[arg(long)]
    pub fresh: bool,
    /// What is recorded and how it is embedded (the flags of `lam demo`).
    #[command(flatten)]
    pub spec: DataSpec,
    /// Use the finished data stage of another experiment's report folder (made with the same
    /// data settings) instead of recording and embedding again.
    #[arg(long, value_name = "REPORT_DIR")]
    pub data_from: Option<PathBuf>,
    /// cpu (each flag's default: the scale of docs/experiments.md) or paper (the papers'
    /// model sizes and lengths, for a GPU, wherever a flag is not typed: see [`Scale`]).
    #[arg(long, value_enum, default_value = "cpu")]
    pub scale: Scale,
}

/// How large an experiment runs. `paper` takes the source papers' settings for every flag the
/// command line does not type (a typed flag always wins):
///
/// - stage 1: `lam train --preset paper` (world model 768 wide, 12 blocks, 12 heads; IDM
///   hidden 1024; latent 128; batch 256; the embedding's width and grid are the data's) for
///   10,000 steps; an unfrozen encoder at batch 128 and learning rate 1e-5 (the seed paper's
///   runs);
/// - data: 4,000 unlabeled human episodes (the labeled robot set stays at 100 episodes);
/// - controller: up to 10,000 steps (early stopping as at CPU scale);
/// - planning: CEM 300 samples x 30 iterations / 30 elites, horizon 5 (the anchors' CEM), on
///   50 protocol episodes per model;
/// - LAWM: the `paper-baku` preset (latent 7, chunk 10, a 49.4M-parameter DreamerV3 world
///   model, an 8.1M-parameter policy); the paper gives no step counts, so `--steps` and
///   `--finetune-steps` keep their defaults unless typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    Cpu,
    Paper,
}

/// The settings `--scale paper` takes (see [`Scale`]).
mod paper {
    pub const LAM_PRESET: &str = "paper";
    pub const STEPS: usize = 10_000;
    pub const UNFROZEN_BATCH: usize = 128;
    pub const ENCODER_LR: f64 = 1e-5;
    pub const HUMAN_EPISODES: usize = 4_000;
    pub const CONTROLLER_STEPS: usize = 10_000;
    pub const SAMPLES: usize = 300;
    pub const ITERATIONS: usize = 30;
    pub const EPISODES: usize = 50;
    pub const LAWM_PRESET: &str = "paper-baku";
}

impl Scale {
    fn name(self) -> &'static str {
        match self {
            Scale::Cpu => "cpu",
            Scale::Paper => "paper",
        }
    }

    /// Sets `field` to the paper's `value` at paper scale unless the flag `id` was typed.
    fn pick<T>(self, id: &str, field: &mut T, value: T) {
        if self == Scale::Paper && !crate::settings_args::given(id) {
            *field = value;
        }
    }

    /// A `lam train` command line at this scale.
    fn train(self, mut argv: Vec<String>) -> Vec<String> {
        if self == Scale::Paper {
            argv.extend(["--preset".into(), paper::LAM_PRESET.into()]);
        }
        argv
    }

    /// An end-to-end `lam train --frames` command line at this scale (the seed paper's batch
    /// for an unfrozen encoder).
    fn train_unfrozen(self, argv: Vec<String>) -> Vec<String> {
        let mut argv = self.train(argv);
        if self == Scale::Paper {
            argv.extend([
                "--set".into(),
                format!("train.batch_size={}", paper::UNFROZEN_BATCH),
            ]);
        }
        argv
    }

    /// A `lam control fit` command line at this scale.
    fn fit(self, mut argv: Vec<String>) -> Vec<String> {
        if self == Scale::Paper {
            argv.extend(["--set".into(), format!("steps={}", paper::CONTROLLER_STEPS)]);
        }
        argv
    }

    /// CEM samples and iterations of the experiments whose planner has no flags (the demo's
    /// at CPU scale).
    fn cem(self) -> (usize, usize) {
        match self {
            Scale::Cpu => (100, 10),
            Scale::Paper => (paper::SAMPLES, paper::ITERATIONS),
        }
    }

    /// The data settings at this scale.
    fn data(self, d: &mut DataArgs) {
        self.pick(
            "human_episodes",
            &mut d.spec.human_episodes,
            paper::HUMAN_EPISODES,
        );
    }

    /// What a report says of its scale.
    fn describe(self) -> &'static str {
        match self {
            Scale::Cpu => "`--scale cpu` (the CPU scale: the tiny preset and each flag's default)",
            Scale::Paper => {
                "`--scale paper` (the papers' model sizes and lengths wherever no flag was typed; \
                 docs/experiments.md lists them)"
            }
        }
    }
}

#[derive(Args)]
pub struct RegularizerArgs {
    /// Report folder (resumable: finished arms with the same settings are kept).
    #[arg(long, default_value = "runs/experiments/regularizers")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps of each latent action model.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Training seeds per arm (the error bars are standard errors over seeds).
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Arms to run, comma separated (default all six): sparse-high, sparse-low, noisy-high,
    /// noisy-low, vq-high, vq-low.
    #[arg(long, value_delimiter = ',')]
    pub arms: Vec<String>,
    /// Closed-loop protocol episodes per model.
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
    /// CEM candidates, iterations and horizon (blocks) of the planner.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
}

#[derive(Args)]
pub struct TrainingArgs {
    /// Report folder (resumable: finished runs with the same settings are kept).
    #[arg(long, default_value = "runs/experiments/training")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps of each run.
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Checkpoints scored along each run.
    #[arg(long, default_value_t = 10)]
    pub points: usize,
    /// Regulariser settings of both runs (the paper: frozen-encoder sparse runs).
    #[arg(long, default_value = "sparse-high")]
    pub arm: String,
}

#[derive(Args)]
pub struct EncoderArgs {
    /// Report folder (resumable: finished arms with the same settings are kept).
    #[arg(long, default_value = "runs/experiments/encoders")]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps of each arm's stage 1 (end to end for the finetuned arms).
    #[arg(long, default_value_t = 600)]
    pub steps: usize,
    /// Peak learning rate of the finetuned encoder.
    #[arg(long, default_value_t = 3e-4)]
    pub encoder_lr: f64,
    /// Arms, comma separated (default all): frozen, distill, sigreg, ema, none.
    #[arg(long, value_delimiter = ',')]
    pub arms: Vec<String>,
    /// Closed-loop protocol episodes per arm (CEM 100 x 10, horizon 5, as `lam demo`).
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
}

#[derive(Args)]
pub struct WildArgs {
    /// Report folder (resumable: finished tasks with the same settings are kept).
    #[arg(long, default_value = "runs/experiments/wild")]
    pub out: PathBuf,
    /// Tasks, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "reach,push,pusht")]
    pub tasks: Vec<String>,
    /// Data settings of every task (--task is ignored: see --tasks).
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps of each world model (latent-action and action-conditioned).
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Closed-loop protocol episodes per task and model (CEM 100 x 10, horizon 5).
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
}

#[derive(Args)]
pub struct LawmArgs {
    /// Report folder (resumable: finished seeds with the same settings are kept).
    #[arg(long, default_value = "runs/experiments/lawm")]
    pub out: PathBuf,
    /// Start over: clear what an earlier run of this experiment wrote into --out.
    #[arg(long)]
    pub fresh: bool,
    /// Tasks, comma separated.
    #[arg(long, default_value = "reach,push")]
    pub tasks: String,
    /// Robot and human video episodes per task.
    #[arg(long, default_value_t = 60)]
    pub video_episodes: usize,
    /// Labeled demos per task for finetuning.
    #[arg(long, default_value_t = 20)]
    pub demos: usize,
    /// Pretraining and finetuning steps.
    #[arg(long, default_value_t = 600)]
    pub steps: usize,
    #[arg(long, default_value_t = 2000)]
    pub finetune_steps: usize,
    /// Protocol episodes per task, arm and seed (3 seeds x 60 keep the standard error of a
    /// pooled success rate at or under 4 points).
    #[arg(long, default_value_t = 60)]
    pub episodes: usize,
    /// Training seeds.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// cpu (the tiny LAWM preset) or paper (the `paper-baku` preset: see [`Scale`]).
    #[arg(long, value_enum, default_value = "cpu")]
    pub scale: Scale,
}

/// One regulariser setting of the paper's tables.
struct Arm {
    name: &'static str,
    latents: &'static str,
    capacity: &'static str,
    sets: &'static [&'static str],
    /// The paper's figures (SSv2 / DROID): Table 1 w/o change, w/ change, ratio; Table 2
    /// ratio; Table 3 cosine, planning confidence, planning error, inverse MSE (VQ: none).
    paper_leakage: [f64; 3],
    paper_transfer_ratio: f64,
    paper_control: Option<[f64; 4]>,
}

const ARMS: [Arm; 6] = [
    Arm {
        name: "sparse-high",
        latents: "sparse",
        capacity: "high (l1 0.1)",
        sets: &["regularizer.kind=sparse", "regularizer.l1=0.1"],
        paper_leakage: [0.266, 0.469, 1.76],
        paper_transfer_ratio: 1.00,
        paper_control: Some([0.95, 0.183, 0.077, 3.8]),
    },
    Arm {
        name: "sparse-low",
        latents: "sparse",
        capacity: "low (l1 0.5)",
        sets: &["regularizer.kind=sparse", "regularizer.l1=0.5"],
        paper_leakage: [0.268, 0.467, 1.74],
        paper_transfer_ratio: 1.00,
        paper_control: Some([0.95, 0.462, 0.086, 4.1]),
    },
    Arm {
        name: "noisy-high",
        latents: "noisy",
        capacity: "high (beta 0.001)",
        sets: &["regularizer.kind=noisy", "regularizer.beta=0.001"],
        paper_leakage: [0.271, 0.457, 1.69],
        paper_transfer_ratio: 1.00,
        paper_control: Some([0.42, 0.994, 0.094, 3.9]),
    },
    Arm {
        name: "noisy-low",
        latents: "noisy",
        capacity: "low (beta 0.01)",
        sets: &["regularizer.kind=noisy", "regularizer.beta=0.01"],
        paper_leakage: [0.272, 0.459, 1.69],
        paper_transfer_ratio: 1.00,
        paper_control: Some([0.42, 0.989, 0.098, 3.7]),
    },
    Arm {
        name: "vq-high",
        latents: "VQ",
        capacity: "high (k 64)",
        sets: &["regularizer.kind=vq", "regularizer.codebook_size=64"],
        paper_leakage: [0.270, 0.461, 1.71],
        paper_transfer_ratio: 1.03,
        paper_control: None,
    },
    Arm {
        name: "vq-low",
        latents: "VQ",
        capacity: "low (k 16)",
        sets: &["regularizer.kind=vq", "regularizer.codebook_size=16"],
        paper_leakage: [0.277, 0.469, 1.69],
        paper_transfer_ratio: 1.01,
        paper_control: None,
    },
];

/// Marks a folder as this experiment's report folder; holds the data settings it was made with.
const MARKER: &str = ".lam-experiment.json";
/// Written when the data stage has finished.
const DATA_DONE: &str = "data/.done";

fn arms_of(names: &[String]) -> Result<Vec<&'static Arm>> {
    if names.is_empty() {
        return Ok(ARMS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            ARMS.iter().find(|a| a.name == n).with_context(|| {
                let known: Vec<_> = ARMS.iter().map(|a| a.name).collect();
                format!("unknown arm `{n}` (expected one of {})", known.join(", "))
            })
        })
        .collect()
}

/// Makes, checks or (with `fresh`) clears the report folder. A folder with content but no
/// marker is refused; one made with other data settings is refused unless `fresh`.
fn prepare_out(out: &Path, experiment: &str, data: &Value, fresh: bool) -> Result<()> {
    let marker = out.join(MARKER);
    let expected = json!({ "experiment": experiment, "data": data });
    if marker.is_file() {
        let found = read_json(&marker)?;
        if fresh {
            for sub in ["data", "encoder", "shards", "arms", "runs", "tasks"] {
                let p = out.join(sub);
                if p.exists() {
                    std::fs::remove_dir_all(&p)
                        .with_context(|| format!("cannot clear {}", p.display()))?;
                }
            }
        } else if found != expected {
            bail!(
                "{} was made by `lam experiment {}` with other data settings ({}); pass --fresh \
                 to start over there, or another --out",
                out.display(),
                found["experiment"].as_str().unwrap_or("?"),
                found["data"]
            );
        }
    } else if out.is_dir()
        && std::fs::read_dir(out)
            .with_context(|| format!("cannot read {}", out.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty and was not made by lam experiment (no {MARKER}): refusing to write \
             there; pass another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    lam_data::shards::write_atomic(&marker, serde_json::to_string_pretty(&expected)?.as_bytes())
}

/// Mean and standard error of the mean (0 for one value).
fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    if v.is_empty() {
        return (f64::NAN, 0.0);
    }
    let m = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (m, 0.0);
    }
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

/// `mean` or `mean ± se` with `digits` decimals.
fn fmt_ms((m, se): (f64, f64), digits: usize) -> String {
    if !m.is_finite() {
        "-".into()
    } else if se > 0.0 {
        format!("{m:.digits$} ± {se:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

fn is_baseline(summary: &Value) -> bool {
    matches!(
        summary["method"].as_str(),
        Some("scripted expert") | Some("random policy")
    )
}

/// The world-model method's summary of a `lam plan eval` report (not a baseline's).
fn model_summary(plan: &Value) -> Result<Value> {
    plan["summaries"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| !is_baseline(s))
        .cloned()
        .context("the plan report holds no world-model method")
}

/// The scripted expert's and the random policy's summaries of a `lam plan eval` report.
fn baseline_summaries(plan: &Value) -> Vec<Value> {
    plan["summaries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| is_baseline(s))
        .cloned()
        .collect()
}

pub fn run(cmd: ExperimentCommand) -> Result<()> {
    match cmd {
        ExperimentCommand::Regularizers(a) => regularizers(a),
        ExperimentCommand::Training(a) => training(a),
        ExperimentCommand::Encoders(a) => encoders(a),
        ExperimentCommand::Wild(a) => wild(a),
        ExperimentCommand::Lawm(a) => lawm(a),
    }
}

/// Makes or checks the report folder and runs the data stage unless an earlier run of the
/// same experiment finished it there.
fn prepare_data(
    d: &DataArgs,
    out: &Path,
    experiment: &str,
    steps: &mut Steps,
) -> Result<DataLayout> {
    let data = d.spec.clone();
    data.check()?;
    let data_settings = json!({
        "task": data.task,
        "human_episodes": data.human_episodes,
        "human_policy": data.human_policy().to_string(),
        "robot_episodes": data.robot_episodes,
        "robot_policy": data.robot_policy().to_string(),
        "robot_seed": data.robot_seed,
        "encoder_steps": data.encoder_steps(),
        "keypoint_transport_weight": data.transport_weight(),
        "encoder_frames": data.encoder_frames().name(),
        "pooling": data.pooling().name(),
        "robot_video": data.robot_video(),
        "oracle": data.oracle,
        "frameskip": data.frameskip,
        "history": data.history,
    });
    prepare_out(out, experiment, &data_settings, d.fresh)?;
    if let Some(from) = &d.data_from {
        let found = read_json(&from.join(MARKER)).with_context(|| {
            format!(
                "--data-from {}: not a lam experiment report folder",
                from.display()
            )
        })?;
        ensure!(
            found["data"] == data_settings,
            "--data-from {}: its data was made with other settings ({}) than this run's ({})",
            from.display(),
            found["data"],
            data_settings
        );
        ensure!(
            from.join(DATA_DONE).is_file(),
            "--data-from {}: its data stage has not finished",
            from.display()
        );
        return Ok(data.layout(from));
    }
    if out.join(DATA_DONE).is_file() {
        info!("data stage already done in {}", out.display());
        return Ok(data.layout(out));
    }
    let l = data.run(out, steps, 5)?;
    lam_data::shards::write_atomic(&out.join(DATA_DONE), b"")?;
    Ok(l)
}

/// The result of one unit of work in `dir`: kept from `dir/result.json` when an earlier run
/// wrote it with the same `settings`, else computed afresh (the folder cleared first) and
/// written there, settings included.
fn kept_or_run(dir: &Path, settings: &Value, run: impl FnOnce() -> Result<Value>) -> Result<Value> {
    let path = dir.join("result.json");
    if let Ok(done) = read_json(&path)
        && done["settings"] == *settings
    {
        info!("{}: kept from an earlier run", dir.display());
        return Ok(done);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let t0 = Instant::now();
    let mut result = run()?;
    result["settings"] = settings.clone();
    result["seconds"] = json!(t0.elapsed().as_secs_f64());
    lam_data::shards::write_atomic(&path, serde_json::to_string_pretty(&result)?.as_bytes())?;
    Ok(result)
}

impl RegularizerArgs {
    /// The settings at `--scale` (see [`Scale`]).
    fn scaled(mut self) -> Self {
        let scale = self.data.scale;
        scale.data(&mut self.data);
        scale.pick("steps", &mut self.steps, paper::STEPS);
        scale.pick("episodes", &mut self.episodes, paper::EPISODES);
        scale.pick("samples", &mut self.samples, paper::SAMPLES);
        scale.pick("iterations", &mut self.iterations, paper::ITERATIONS);
        self
    }
}

fn regularizers(a: RegularizerArgs) -> Result<()> {
    let started = Instant::now();
    let a = a.scaled();
    let scale = a.data.scale;
    let arms = arms_of(&a.arms)?;
    ensure!(a.seeds >= 1, "--seeds must be at least 1");
    ensure!(a.episodes >= 1, "--episodes must be at least 1");
    let out = &a.out;
    let d = &a.data;
    let mut steps = Steps::default();
    let layout = prepare_data(d, out, "regularizers", &mut steps)?;
    let plan = PlanSpec {
        task: d.spec.task.clone(),
        episodes: a.episodes,
        samples: a.samples,
        iterations: a.iterations,
        horizon: a.horizon,
        hold_actions: false,
        memory: false,
        feasible: None,
        baselines: false,
        device: d.spec.device.clone(),
    };
    let dev = &d.spec.device;

    let mut results: Vec<(&Arm, Vec<Value>)> = Vec::new();
    let mut baselines = Value::Null;
    for (i, arm) in arms.iter().enumerate() {
        let mut per_seed = Vec::new();
        for seed in 0..a.seeds {
            let dir = out.join("arms").join(arm.name).join(format!("seed-{seed}"));
            let settings = json!({
                "sets": arm.sets, "seed": seed, "steps": a.steps, "episodes": a.episodes,
                "samples": a.samples, "iterations": a.iterations, "horizon": a.horizon,
                "scale": scale.name(),
            });
            // The expert and random baselines once, with the first model planned.
            let with_baselines = baselines.is_null();
            let result = kept_or_run(&dir, &settings, || {
                let (run, ctrl, plan_dir) =
                    (dir.join("lam"), dir.join("controller"), dir.join("plan"));
                let mut sets: Vec<String> = arm.sets.iter().map(|s| s.to_string()).collect();
                sets.push(format!("train.seed={seed}"));
                let title = format!("{} seed {seed} ({}/{})", arm.name, i + 1, arms.len());
                steps.run(
                    &format!("{title}: training"),
                    &scale.train(
                        d.spec
                            .train_argv(&layout.stage1_shards, &run, a.steps, &sets),
                    ),
                )?;
                steps.run(
                    &format!("{title}: leakage, transfer, open loop"),
                    &eval_argv(&run, &layout.stage1_shards, &dir.join("eval.json"), dev),
                )?;
                steps.run(
                    &format!("{title}: controller"),
                    &scale.fit(fit_argv(&run, &layout.robot_shards, &ctrl, dev)),
                )?;
                let plan = PlanSpec {
                    baselines: with_baselines,
                    ..plan.clone()
                };
                steps.run(
                    &format!("{title}: closed loop"),
                    &plan.argv(&run, &layout.encoder, &ctrl, &plan_dir),
                )?;
                let plan_report =
                    read_json(&plan_dir.join(format!("plan_eval_{}.json", d.spec.task)))?;
                Ok(json!({
                    "arm": arm.name,
                    "seed": seed,
                    "eval": read_json(&dir.join("eval.json"))?,
                    "controller": read_json(&ctrl.join("controller.json"))?["report"],
                    "plan": model_summary(&plan_report)?,
                    "baselines": if with_baselines {
                        json!(baseline_summaries(&plan_report))
                    } else {
                        Value::Null
                    },
                }))
            })?;
            if baselines.is_null() && !result["baselines"].is_null() {
                baselines = result["baselines"].clone();
            }
            per_seed.push(result);
        }
        results.push((arm, per_seed));
    }
    let total = started.elapsed().as_secs_f64();
    let (md, report) = write_report(&a, out, &results, &baselines, total)?;
    finish(out, md, report, &steps.log, total, scale, &["figures.png"])
}

/// The paper's two runs of appendix A: action dropout 0.15 (the default) and 0.
const DROPOUTS: [(&str, f64); 2] = [("dropout-0.15", 0.15), ("dropout-0", 0.0)];

impl TrainingArgs {
    /// The settings at `--scale` (see [`Scale`]).
    fn scaled(mut self) -> Self {
        let scale = self.data.scale;
        scale.data(&mut self.data);
        scale.pick("steps", &mut self.steps, paper::STEPS);
        self
    }
}

fn training(a: TrainingArgs) -> Result<()> {
    let started = Instant::now();
    let a = a.scaled();
    let scale = a.data.scale;
    let arm = arms_of(std::slice::from_ref(&a.arm))?[0];
    ensure!(
        a.points >= 2 && a.steps >= a.points,
        "--points must be at least 2 and at most --steps ({}), got {}",
        a.steps,
        a.points
    );
    let every = a.steps / a.points;
    let (out, d) = (&a.out, &a.data);
    let mut steps = Steps::default();
    let layout = prepare_data(d, out, "training", &mut steps)?;
    let mut runs = Vec::new();
    for (name, dropout) in DROPOUTS {
        let dir = out.join("runs").join(name);
        let settings = json!({
            "sets": arm.sets, "action_dropout": dropout, "steps": a.steps, "every": every,
            "scale": scale.name(),
        });
        let result = kept_or_run(&dir, &settings, || {
            let run = dir.join("lam");
            let mut sets: Vec<String> = arm.sets.iter().map(|s| s.to_string()).collect();
            sets.extend([
                format!("model.action_dropout={dropout}"),
                format!("train.checkpoint_every={every}"),
                format!("train.keep_checkpoints={}", a.points + 1),
            ]);
            steps.run(
                &format!("{name}: training"),
                &scale.train(
                    d.spec
                        .train_argv(&layout.stage1_shards, &run, a.steps, &sets),
                ),
            )?;
            let ckpts = lam_model::checkpoint::checkpoints_dir(&run);
            let mut folders: Vec<PathBuf> = std::fs::read_dir(&ckpts)
                .with_context(|| format!("cannot read {}", ckpts.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("step-"))
                })
                .collect();
            folders.sort();
            let mut points = Vec::new();
            for f in &folders {
                let step: usize = f
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("step-"))
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("unexpected checkpoint folder {}", f.display()))?;
                let json_out = dir.join(format!("eval-step-{step}.json"));
                steps.run(
                    &format!("{name}: scoring step {step}"),
                    &eval_argv(f, &layout.stage1_shards, &json_out, &d.spec.device),
                )?;
                let mut e = read_json(&json_out)?;
                e["step"] = json!(step);
                points.push(e);
            }
            Ok(json!({ "run": name, "action_dropout": dropout, "points": points }))
        })?;
        runs.push(result);
    }
    let total = started.elapsed().as_secs_f64();

    let series = |p: &str| -> Vec<crate::plot::Series> {
        runs.iter()
            .map(|r| crate::plot::Series {
                name: format!("action dropout {}", r["action_dropout"]),
                points: r["points"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|q| Some((q["step"].as_f64()?, q.pointer(p)?.as_f64()?)))
                    .collect(),
            })
            .collect()
    };
    crate::plot::line_plot(
        &out.join("leakage.png"),
        "A.1: leakage ratio over training",
        "E_cut / E_normal",
        &series("/leakage/ratio"),
    )?;
    crate::plot::line_plot(
        &out.join("open_loop.png"),
        "A.2: open-loop prediction error over training",
        "L1, standardised embedding",
        &series("/open_loop/error"),
    )?;

    let mut md = String::new();
    writeln!(
        md,
        "# lam experiment training\n\nAppendix A.1 / A.2 of the latent-action world-model \
         paper on the simulated suite: two latent action models ({} {}) on {} unlabeled \
         human-domain `{}` episodes ({} policy; embedding: {}), {} steps each, scored every {} \
         steps on the held-out clips: the leakage ratio (scene cut) and the open-loop error \
         (from each clip's first frame, the world model fed back its own predictions under the \
         IDM's latents of the real transitions, {} frames). One run with action dropout 0.15, \
         one with 0. Wall time of this invocation {total:.0} s.\n",
        arm.latents,
        arm.capacity,
        d.spec.human_episodes,
        d.spec.task,
        d.spec.human_policy(),
        d.spec.embedding(),
        a.steps,
        every,
        3,
    )?;
    writeln!(
        md,
        "Paper (SSv2): A.1, the ratio of frozen sparse runs climbs from about 1.55 at step \
         1,000 to 1.76 at 10,000; A.2, without dropout the open-loop loss rises from 0.28 to \
         above 0.70 over 10,000 steps, with 0.15 it stays near 0.28.\n"
    )?;
    writeln!(
        md,
        "| step | leakage ratio, dropout 0.15 | leakage ratio, dropout 0 | open loop, dropout 0.15 | open loop, dropout 0 | teacher-forced E_normal, 0.15 / 0 |"
    )?;
    writeln!(md, "| ---: | ---: | ---: | ---: | ---: | --- |")?;
    let at = |r: &Value, step: u64, p: &str| {
        r["points"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|q| q["step"].as_u64() == Some(step))
            .and_then(|q| q.pointer(p).and_then(Value::as_f64))
    };
    let f = |v: Option<f64>, dg: usize| v.map_or("-".into(), |x| format!("{x:.dg$}"));
    let mut all_steps: Vec<u64> = runs
        .iter()
        .flat_map(|r| {
            r["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|q| q["step"].as_u64())
                .collect::<Vec<_>>()
        })
        .collect();
    all_steps.sort();
    all_steps.dedup();
    for st in all_steps {
        writeln!(
            md,
            "| {st} | {} | {} | {} | {} | {} / {} |",
            f(at(&runs[0], st, "/leakage/ratio"), 2),
            f(at(&runs[1], st, "/leakage/ratio"), 2),
            f(at(&runs[0], st, "/open_loop/error"), 4),
            f(at(&runs[1], st, "/open_loop/error"), 4),
            f(at(&runs[0], st, "/leakage/e_normal"), 4),
            f(at(&runs[1], st, "/leakage/e_normal"), 4),
        )?;
    }
    writeln!(
        md,
        "
![leakage over training](leakage.png)

![open loop over training](open_loop.png)
"
    )?;
    let report = json!({
        "experiment": "training",
        "settings": {
            "arm": arm.name, "steps": a.steps, "every": every, "task": d.spec.task,
            "human_episodes": d.spec.human_episodes, "oracle": d.spec.oracle,
        },
        "runs": runs,
    });
    finish(
        out,
        md,
        report,
        &steps.log,
        total,
        scale,
        &["leakage.png", "open_loop.png"],
    )
}

/// The encoder arms: frozen, then finetuned under each guard.
const GUARDS: [&str; 5] = ["frozen", "distill", "sigreg", "ema", "none"];

impl EncoderArgs {
    /// The settings at `--scale` (see [`Scale`]).
    fn scaled(mut self) -> Self {
        let scale = self.data.scale;
        scale.data(&mut self.data);
        scale.pick("steps", &mut self.steps, paper::STEPS);
        scale.pick("encoder_lr", &mut self.encoder_lr, paper::ENCODER_LR);
        scale.pick("episodes", &mut self.episodes, paper::EPISODES);
        self
    }
}

fn encoders(mut a: EncoderArgs) -> Result<()> {
    let started = Instant::now();
    ensure!(
        !a.data.spec.oracle,
        "the encoder experiment needs the pretrained sim encoder: drop --oracle"
    );
    // Every arm plans on the keypoints alone: end-to-end training embeds them, and context
    // features are fitted to an encoder after its training.
    a.data.spec.pooling = Some(crate::pipeline::SuitePooling::Keypoints);
    let a = a.scaled();
    let scale = a.data.scale;
    let (samples, iterations) = scale.cem();
    let arms: Vec<&str> = if a.arms.is_empty() {
        GUARDS.to_vec()
    } else {
        a.arms
            .iter()
            .map(|n| {
                GUARDS.iter().copied().find(|g| g == n).with_context(|| {
                    format!("unknown arm `{n}` (expected one of {})", GUARDS.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    let (out, d) = (&a.out, &a.data);
    let dev = &d.spec.device;
    let mut steps = Steps::default();
    let layout = prepare_data(d, out, "encoders", &mut steps)?;
    let plan = PlanSpec {
        task: d.spec.task.clone(),
        episodes: a.episodes,
        samples,
        iterations,
        horizon: 5,
        hold_actions: false,
        memory: false,
        feasible: None,
        baselines: false,
        device: dev.clone(),
    };
    // The pretrained encoder's own statistics and probe (what the frozen arm plans on).
    let pretrained = read_json(&out_or_from(d, out).join("encoder/summary.json"))?;
    let mut results = Vec::new();
    for (i, &guard) in arms.iter().enumerate() {
        let dir = out.join("arms").join(guard);
        let settings = json!({
            "guard": guard, "steps": a.steps, "encoder_lr": a.encoder_lr,
            "episodes": a.episodes, "scale": scale.name(),
        });
        let title = format!("{guard} ({}/{})", i + 1, arms.len());
        let result = kept_or_run(&dir, &settings, || {
            let (run, ctrl, plan_dir) = (dir.join("lam"), dir.join("controller"), dir.join("plan"));
            let (encoder, robot_shards, stats) = if guard == "frozen" {
                steps.run(
                    &format!("{title}: stage 1 on the frozen encoder's shards"),
                    &scale.train(d.spec.train_argv(
                        &layout.stage1_shards,
                        &run,
                        a.steps,
                        &["regularizer.kind=noisy".to_string()],
                    )),
                )?;
                (
                    layout.encoder.clone(),
                    layout.robot_shards.clone(),
                    json!({
                        "after": pretrained["after"],
                        "probe_after": pretrained["probe_after"],
                        "collapse": pretrained["collapse"],
                    }),
                )
            } else {
                steps.run(
                    &format!("{title}: end-to-end stage 1 from the pretrained encoder"),
                    &scale.train_unfrozen(crate::pipeline::args(&[
                        &"train",
                        &"--frames",
                        &layout.human.display(),
                        &"--run",
                        &run.display(),
                        &"--steps",
                        &a.steps,
                        &"--encoder-init",
                        &layout.encoder,
                        &"--pooling",
                        &"keypoints",
                        &"--encoder-lr",
                        &a.encoder_lr,
                        &"--guard",
                        &guard,
                        &"--regularizer",
                        &"noisy",
                        &"--probe-task",
                        &d.spec.task,
                        &"--device",
                        dev,
                        &"--quiet",
                    ])),
                )?;
                let encoder = run.join("encoder").display().to_string();
                let shards = dir.join("shards-robot");
                steps.run(
                    &format!("{title}: embedding the robot episodes with the finetuned encoder"),
                    &crate::pipeline::args(&[
                        &"embed",
                        &"--data",
                        &layout.robot.display(),
                        &"--encoder",
                        &encoder,
                        &"--out",
                        &shards.display(),
                        &"--fps",
                        &2,
                        &"--frames",
                        &4,
                        &"--stride",
                        &1,
                        &"--val-fraction",
                        &0.2,
                        &"--pooling",
                        &"keypoints",
                        &"--device",
                        dev,
                    ]),
                )?;
                (encoder, shards, read_json(&run.join("summary.json"))?)
            };
            steps.run(
                &format!("{title}: controller"),
                &scale.fit(fit_argv(&run, &robot_shards, &ctrl, dev)),
            )?;
            steps.run(
                &format!("{title}: closed loop"),
                &plan.argv(&run, &encoder, &ctrl, &plan_dir),
            )?;
            let plan_report = read_json(&plan_dir.join(format!("plan_eval_{}.json", d.spec.task)))?;
            Ok(json!({
                "arm": guard,
                "encoder": stats,
                "controller": read_json(&ctrl.join("controller.json"))?["report"],
                "plan": model_summary(&plan_report)?,
            }))
        })?;
        results.push(result);
    }
    let total = started.elapsed().as_secs_f64();

    let probe = |r: &Value, what: &str| {
        let p = &r["encoder"]["probe_after"];
        let fit = if p["keypoints"].is_object() {
            &p["keypoints"]
        } else {
            &p["pooled"]
        };
        fit[what].as_f64()
    };
    let f = |v: Option<f64>, dg: usize| v.map_or("-".into(), |x| format!("{x:.dg$}"));
    let mut md = String::new();
    writeln!(
        md,
        "# lam experiment encoders\n\nThe seed paper's encoder finetuning on the simulated \
         suite (`{}`): the sim encoder pretrained on {} unlabeled human-domain episodes ({} \
         policy; `lam encoder pretrain`, {} steps) is either kept frozen (the demo's chain) or \
         finetuned end to end with the IDM and world model from pixels ({} steps, encoder lr \
         {}) under one guard against collapse: distillation to the frozen initial weights \
         (alpha 0.1), SIGReg on the frame embeddings, an EMA target encoder, or none. Every \
         arm plans on the keypoint embedding with the noisy regulariser, a controller fitted \
         on {} labeled robot episodes and CEM 100 x 10 on {} protocol episodes. Statistics \
         on held-out frames; probe R^2 on 300 robot-domain frames from the keypoints. Wall \
         time of this invocation {total:.0} s.\n",
        d.spec.task,
        d.spec.human_episodes,
        d.spec.human_policy(),
        d.spec.encoder_steps(),
        a.steps,
        a.encoder_lr,
        d.spec.robot_episodes,
        a.episodes,
    )?;
    writeln!(
        md,
        "Paper: finetuning with distillation alone collapses (near-constant embeddings within \
         1,000 steps); SIGReg and an EMA target do not.\n"
    )?;
    writeln!(
        md,
        "| arm | frame std | frame eff. rank | token eff. rank | collapse check | probe agent | probe walls / objects | controller cos / R^2 | success | ms per plan |"
    )?;
    writeln!(
        md,
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: |"
    )?;
    for r in &results {
        let e = &r["encoder"];
        let collapse = match &e["collapse"] {
            Value::Null => "passes".to_string(),
            c => format!(
                "fires at step {} ({})",
                c["step"],
                c["metric"].as_str().unwrap_or("?")
            ),
        };
        let rate = r["plan"]["success_rate"].as_f64().unwrap_or(f64::NAN);
        let n = r["plan"]["episodes"].as_f64().unwrap_or(0.0);
        writeln!(
            md,
            "| {} | {} | {} | {} | {collapse} | {} | {} | {} / {} | {:.0}% ({:.0}/{n:.0}) | {} |",
            r["arm"].as_str().unwrap_or("?"),
            f(e["after"]["frames"]["mean_std"].as_f64(), 4),
            f(e["after"]["frames"]["effective_rank"].as_f64(), 2),
            f(e["after"]["tokens"]["effective_rank"].as_f64(), 2),
            f(probe(r, "agent"), 3),
            f(probe(r, "walls").or(probe(r, "objects")), 3),
            f(r["controller"]["cosine"].as_f64(), 3),
            f(r["controller"]["r2"].as_f64(), 3),
            100.0 * rate,
            rate * n,
            f(r["plan"]["mean_plan_ms"].as_f64(), 0),
        )?;
    }
    let report = json!({
        "experiment": "encoders",
        "settings": {
            "task": d.spec.task, "human_episodes": d.spec.human_episodes, "steps": a.steps,
            "encoder_lr": a.encoder_lr, "episodes": a.episodes,
        },
        "arms": results,
    });
    let bars = |p: &dyn Fn(&Value) -> Option<f64>| -> Vec<(String, f64, f64)> {
        results
            .iter()
            .map(|r| {
                (
                    r["arm"].as_str().unwrap_or("?").to_string(),
                    p(r).unwrap_or(f64::NAN),
                    0.0,
                )
            })
            .collect()
    };
    bar_panels(
        &out.join("figures.png"),
        &[
            BarPanel {
                title: "closed-loop success".into(),
                y_desc: "success".into(),
                bars: bars(&|r| r["plan"]["success_rate"].as_f64()),
                percent: true,
                range: Some((0.0, 1.0)),
            },
            BarPanel {
                title: "frame embedding effective rank".into(),
                y_desc: "effective rank".into(),
                bars: bars(&|r| r["encoder"]["after"]["frames"]["effective_rank"].as_f64()),
                percent: false,
                range: None,
            },
            BarPanel {
                title: "probe R^2 of the agent (cut at -1)".into(),
                y_desc: "R^2".into(),
                bars: bars(&|r| probe(r, "agent")),
                percent: false,
                range: Some((-1.0, 1.0)),
            },
        ],
    )?;
    finish(out, md, report, &steps.log, total, scale, &["figures.png"])
}

impl WildArgs {
    /// The settings at `--scale` (see [`Scale`]).
    fn scaled(mut self) -> Self {
        let scale = self.data.scale;
        scale.data(&mut self.data);
        scale.pick("steps", &mut self.steps, paper::STEPS);
        scale.pick("episodes", &mut self.episodes, paper::EPISODES);
        self
    }
}

fn wild(a: WildArgs) -> Result<()> {
    let started = Instant::now();
    let a = a.scaled();
    let scale = a.data.scale;
    let (samples, iterations) = scale.cem();
    ensure!(!a.tasks.is_empty(), "--tasks is empty");
    ensure!(
        a.data.data_from.is_none(),
        "--data-from is not taken by the wild experiment (one data stage per task)"
    );
    let out = &a.out;
    let settings_all = json!({ "tasks": a.tasks });
    prepare_out(out, "wild", &settings_all, a.data.fresh)?;
    let mut steps = Steps::default();
    let mut results = Vec::new();
    for task in &a.tasks {
        let mut d = a.data.clone();
        d.spec.task = task.clone();
        d.fresh = false;
        let tdir = out.join("tasks").join(task);
        let layout = prepare_data(&d, &tdir, "wild", &mut steps)?;
        let dir = tdir.join("arms");
        let settings = json!({
            "steps": a.steps, "episodes": a.episodes, "controllers": ["action", "frame"],
            "scale": scale.name(),
        });
        let dev = &d.spec.device;
        let result = kept_or_run(&dir, &settings, || {
            let (run, ac, ctrl, plan_dir) = (
                dir.join("lam"),
                dir.join("ac"),
                dir.join("controller"),
                dir.join("plan"),
            );
            let (ctrl_frame, plan_frame) = (dir.join("controller-frame"), dir.join("plan-frame"));
            steps.run(
                &format!("{task}: latent action model on the unlabeled human shards"),
                &scale.train(d.spec.train_argv(
                    &layout.stage1_shards,
                    &run,
                    a.steps,
                    &["regularizer.kind=noisy".to_string()],
                )),
            )?;
            steps.run(
                &format!("{task}: controller on the labeled robot shards"),
                &scale.fit(fit_argv(&run, &layout.robot_shards, &ctrl, dev)),
            )?;
            steps.run(
                &format!("{task}: action-conditioned world model on the labeled robot shards"),
                &scale.train(
                    d.spec
                        .action_conditioned_argv(&layout.robot_shards, &ac, a.steps)?,
                ),
            )?;
            let plan = PlanSpec {
                task: task.clone(),
                episodes: a.episodes,
                samples,
                iterations,
                horizon: 5,
                hold_actions: false,
                memory: false,
                feasible: None,
                baselines: true,
                device: dev.clone(),
            };
            let mut argv = plan.argv(&run, &layout.encoder, &ctrl, &plan_dir);
            argv.extend(["--action-run".to_string(), ac.display().to_string()]);
            steps.run(&format!("{task}: closed loop, both models"), &argv)?;
            let mut fit = scale.fit(fit_argv(&run, &layout.robot_shards, &ctrl_frame, dev));
            fit.push("--frame-conditioned".into());
            steps.run(
                &format!("{task}: frame-conditioned controller g(a, s)"),
                &fit,
            )?;
            let plan = PlanSpec {
                baselines: false,
                ..plan
            };
            steps.run(
                &format!("{task}: closed loop through the frame-conditioned controller"),
                &plan.argv(&run, &layout.encoder, &ctrl_frame, &plan_frame),
            )?;
            let report = read_json(&plan_dir.join(format!("plan_eval_{task}.json")))?;
            let report_frame = read_json(&plan_frame.join(format!("plan_eval_{task}.json")))?;
            Ok(json!({
                "task": task,
                "summaries": report["summaries"],
                "controller": read_json(&ctrl.join("controller.json"))?["report"],
                "frame_conditioned": model_summary(&report_frame)?,
                "controller_frame": read_json(&ctrl_frame.join("controller.json"))?["report"],
            }))
        })?;
        results.push(result);
    }
    let total = started.elapsed().as_secs_f64();
    let d = &a.data;
    let mut md = String::new();
    writeln!(
        md,
        "# lam experiment wild\n\nThe in-the-wild claim on the simulated suite: per task, a \
         latent-action world model trained on {} unlabeled human-domain episodes ({} policy, \
         noisy regulariser) and planned through a controller fitted on {} labeled robot \
         episodes (reading the action block alone, g(a), or also the frame it acts on, \
         g(a, s)), against an action-conditioned world model trained on those {} labeled \
         episodes alone; both {} steps, the same embedding ({}), planner (CEM 100 x 10 over \
         blocks of 5 robot actions, horizon 5) and {} protocol episodes. Wall time of this \
         invocation {total:.0} s.\n",
        d.spec.human_episodes,
        d.spec.human_policy(),
        d.spec.robot_episodes,
        d.spec.robot_episodes,
        a.steps,
        d.spec.embedding(),
        a.episodes,
    )?;
    writeln!(
        md,
        "| task | latent-action WM + controller g(a) | latent-action WM + frame-conditioned g(a, s) | action-conditioned WM | scripted expert | random policy | controller R^2: g(a) / g(a, s) | pred. error: g(a) / g(a, s) / IDM latents |"
    )?;
    writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")?;
    for r in &results {
        let rate = |pred: &dyn Fn(&str) -> bool| {
            r["summaries"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["method"].as_str().is_some_and(pred))
                .map_or("-".to_string(), |s| {
                    let p = s["success_rate"].as_f64().unwrap_or(f64::NAN);
                    let n = s["episodes"].as_f64().unwrap_or(0.0);
                    format!("{:.0}% ({:.0}/{n:.0})", 100.0 * p, p * n)
                })
        };
        let (c, cf) = (&r["controller"], &r["controller_frame"]);
        let num =
            |v: &Value, dg: usize| v.as_f64().map_or("-".to_string(), |x| format!("{x:.dg$}"));
        let frame = &r["frame_conditioned"];
        let frame_rate = frame["success_rate"].as_f64().map_or("-".to_string(), |p| {
            let n = frame["episodes"].as_f64().unwrap_or(0.0);
            format!("{:.0}% ({:.0}/{n:.0})", 100.0 * p, p * n)
        });
        writeln!(
            md,
            "| {} | {} | {frame_rate} | {} | {} | {} | {} / {} | {} / {} / {} |",
            r["task"].as_str().unwrap_or("?"),
            rate(&|m| m.starts_with("latent-action")),
            rate(&|m| m.contains("action-conditioned")),
            rate(&|m| m == "scripted expert"),
            rate(&|m| m == "random policy"),
            num(&c["r2"], 3),
            num(&cf["r2"], 3),
            num(&c["prediction_error"], 4),
            num(&cf["prediction_error"], 4),
            num(&c["prediction_error_idm"], 4),
        )?;
    }
    let report = json!({
        "experiment": "wild",
        "settings": {
            "tasks": a.tasks, "human_episodes": d.spec.human_episodes, "oracle": d.spec.oracle,
            "robot_episodes": d.spec.robot_episodes, "steps": a.steps, "episodes": a.episodes,
        },
        "tasks": results,
    });
    finish(out, md, report, &steps.log, total, scale, &[])
}

fn lawm(a: LawmArgs) -> Result<()> {
    let started = Instant::now();
    let scale = a.scale;
    ensure!(a.seeds >= 1, "--seeds must be at least 1");
    let out = &a.out;
    prepare_out(out, "lawm", &json!({ "tasks": a.tasks }), a.fresh)?;
    let mut steps = Steps::default();
    let mut per_seed = Vec::new();
    for seed in 0..a.seeds {
        let dir = out.join("runs").join(format!("seed-{seed}"));
        let settings = json!({
            "tasks": a.tasks, "video_episodes": a.video_episodes, "demos": a.demos,
            "steps": a.steps, "finetune_steps": a.finetune_steps, "episodes": a.episodes,
            "seed": seed, "scale": scale.name(),
        });
        let result = kept_or_run(&dir, &settings, || {
            let cmp = dir.join("compare");
            steps.run(
                &format!("seed {seed} ({}/{})", seed + 1, a.seeds),
                &crate::pipeline::args(&[
                    &"lawm",
                    &"--device",
                    &a.device,
                    &"compare",
                    &"--tasks",
                    &a.tasks,
                    &"--out",
                    &cmp.display(),
                    &"--video-episodes",
                    &a.video_episodes,
                    &"--demos",
                    &a.demos,
                    &"--steps",
                    &a.steps,
                    &"--finetune-steps",
                    &a.finetune_steps,
                    &"--eval-episodes",
                    &a.episodes,
                    &"--seed",
                    &seed,
                    &"--quiet",
                ])
                .into_iter()
                .chain(lawm_preset(scale, a.steps, seed))
                .collect::<Vec<_>>(),
            )?;
            Ok(json!({ "seed": seed, "compare": read_json(&cmp.join("compare.json"))? }))
        })?;
        per_seed.push(result);
    }
    let total = started.elapsed().as_secs_f64();

    // Pooled per (arm, task): successes / episodes over seeds, and the seeds' rates.
    let mut cells: std::collections::BTreeMap<(String, String), (f64, f64, Vec<f64>)> =
        Default::default();
    let mut arm_order: Vec<String> = Vec::new();
    let mut cca: std::collections::BTreeMap<(String, String), Vec<f64>> = Default::default();
    for r in &per_seed {
        for arm in r["compare"]["arms"].as_array().into_iter().flatten() {
            let name = arm["arm"].as_str().unwrap_or("?").to_string();
            if !arm_order.contains(&name) {
                arm_order.push(name.clone());
            }
            for t in arm["results"].as_array().into_iter().flatten() {
                let task = t["task"].as_str().unwrap_or("?").to_string();
                let c = cells.entry((name.clone(), task)).or_default();
                c.0 += t["successes"].as_f64().unwrap_or(0.0);
                c.1 += t["episodes"].as_f64().unwrap_or(0.0);
                c.2.push(t["success_rate"].as_f64().unwrap_or(f64::NAN));
            }
            for c in arm["cca"].as_array().into_iter().flatten() {
                let task = c["task"].as_str().unwrap_or("?").to_string();
                cca.entry((name.clone(), task))
                    .or_default()
                    .push(c["correlation"].as_f64().unwrap_or(f64::NAN));
            }
        }
    }
    let tasks: Vec<&str> = a.tasks.split(',').map(str::trim).collect();
    let mut md = String::new();
    writeln!(
        md,
        "# lam experiment lawm\n\nLAWM's Figure 4 on the simulated suite, {} training seed(s): \
         per task {} robot-video and {} human-video episodes (scripted expert) and {} labeled \
         demos; pretraining {} steps, finetuning {} steps; {} protocol episodes per task, arm \
         and seed. Success pooled over seeds (successes / episodes) with its binomial standard \
         error; with more than one seed, the spread of the seeds' rates (standard error of \
         their mean) beside it. The recordings are the same for every seed (fixed recording \
         seeds); the seeds change initialisation, batches and the evaluation's noise. Wall \
         time of this invocation {total:.0} s.\n",
        a.seeds, a.video_episodes, a.video_episodes, a.demos, a.steps, a.finetune_steps, a.episodes,
    )?;
    writeln!(
        md,
        "Paper (LAWM, Figure 4): world-model pretraining on video improves on training from \
         scratch with few demos, on robot and on human video alike.\n"
    )?;
    write!(md, "| arm |")?;
    for t in &tasks {
        write!(md, " {t} |")?;
    }
    writeln!(md)?;
    writeln!(md, "| --- |{}", " ---: |".repeat(tasks.len()))?;
    for arm in &arm_order {
        write!(md, "| {arm} |")?;
        for t in &tasks {
            match cells.get(&(arm.clone(), t.to_string())) {
                Some((k, n, rates)) if *n > 0.0 => {
                    let p = k / n;
                    let se = (p * (1.0 - p) / n).sqrt();
                    let spread = mean_se(rates).1;
                    write!(
                        md,
                        " {:.0}% ± {:.1} ({k:.0}/{n:.0}){} |",
                        100.0 * p,
                        100.0 * se,
                        if rates.len() > 1 {
                            format!(", seeds ± {:.1}", 100.0 * spread)
                        } else {
                            String::new()
                        }
                    )?;
                }
                _ => write!(md, " - |")?,
            }
        }
        writeln!(md)?;
    }
    if !cca.is_empty() {
        writeln!(
            md,
            "\n## Table III: first canonical correlation of the latent action and the true \
             action\n\n| arm | task | CCA (mean over seeds) |\n| --- | --- | ---: |"
        )?;
        for ((arm, task), v) in &cca {
            writeln!(md, "| {arm} | {task} | {} |", fmt_ms(mean_se(v), 3))?;
        }
    }
    let report = json!({
        "experiment": "lawm",
        "seeds": per_seed,
    });
    finish(out, md, report, &steps.log, total, scale, &[])
}

/// The LAWM settings `lam lawm compare` gets at `scale`: at paper scale the `paper-baku`
/// preset, with the pretraining steps and seed as `--set` items (over a preset, `lam lawm`
/// reads only the flags typed on the command line, and here the command line is the
/// experiment's).
fn lawm_preset(scale: Scale, steps: usize, seed: u64) -> Vec<String> {
    match scale {
        Scale::Cpu => Vec::new(),
        Scale::Paper => vec![
            "--preset".into(),
            paper::LAWM_PRESET.into(),
            "--set".into(),
            format!("train.steps={steps}"),
            "--set".into(),
            format!("train.seed={seed}"),
        ],
    }
}

/// The folder holding the data stage's outputs: `--data-from`'s, or the report folder.
fn out_or_from<'a>(d: &'a DataArgs, out: &'a Path) -> &'a Path {
    d.data_from.as_deref().unwrap_or(out)
}

/// Ends an experiment: appends the commands this invocation ran to the report's markdown and
/// JSON (with its wall time), writes `report.md` and `report.json` into `out`, and prints the
/// report and where it is (`figures`: the other files the experiment wrote there).
fn finish(
    out: &Path,
    mut md: String,
    mut report: Value,
    log: &[(String, f64)],
    total: f64,
    scale: Scale,
    figures: &[&str],
) -> Result<()> {
    md.truncate(md.trim_end().len());
    write!(md, "\n\nScale: {}.", scale.describe())?;
    md.push_str("\n\n## Commands run by this invocation\n\n");
    if log.is_empty() {
        md.push_str("(none: every stage was kept from an earlier run)\n");
    }
    for (c, s) in log {
        writeln!(md, "- `{c}` ({s:.0} s)")?;
    }
    report["commands"] = json!(
        log.iter()
            .map(|(c, s)| json!({"command": c, "seconds": s}))
            .collect::<Vec<_>>()
    );
    report["wall_seconds"] = json!(total);
    report["scale"] = json!(scale.name());
    lam_data::shards::write_atomic(&out.join("report.md"), md.as_bytes())?;
    lam_data::shards::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    println!("{md}");
    let files: Vec<&str> = ["report.md", "report.json"]
        .into_iter()
        .chain(figures.iter().copied())
        .collect();
    println!(
        "experiment finished in {total:.0} s; report: {} ({})",
        out.display(),
        files.join(", ")
    );
    Ok(())
}

/// Every seed's value of `path` (a JSON pointer) for one arm.
fn values(per_seed: &[Value], path: &str) -> Vec<f64> {
    per_seed
        .iter()
        .filter_map(|r| r.pointer(path).and_then(Value::as_f64))
        .collect()
}

fn write_report(
    a: &RegularizerArgs,
    out: &Path,
    results: &[(&Arm, Vec<Value>)],
    baselines: &Value,
    total: f64,
) -> Result<(String, Value)> {
    let stat = |per: &[Value], p: &str| mean_se(&values(per, p));
    let mut md = String::new();
    writeln!(
        md,
        "# lam experiment regularizers\n\nTables 1-3 of the latent-action world-model paper \
         (`latent-action-wm-robot-control`) on the simulated suite, with closed-loop success \
         added. Task `{}`; {} unlabeled human-domain episodes ({} policy) for every latent \
         action model; {} labeled robot episodes (mixed policy) for every controller; \
         embedding: {}; {} training steps per model; {} seed(s) per arm (± is the standard \
         error over seeds); {} protocol episodes per model, CEM {} x {} / {} elites, horizon \
         {} blocks of 5 steps. Wall time of this invocation {:.0} s; the arms took {:.0} s in \
         all when they ran (each arm's own wall time, in report.json).\n",
        a.data.spec.task,
        a.data.spec.human_episodes,
        a.data.spec.human_policy(),
        a.data.spec.robot_episodes,
        a.data.spec.embedding(),
        a.steps,
        a.seeds,
        a.episodes,
        a.samples,
        a.iterations,
        (a.samples / 10).max(2),
        a.horizon,
        total,
        results
            .iter()
            .flat_map(|(_, per)| values(per, "/seconds"))
            .sum::<f64>(),
    )?;

    writeln!(md, "## Closed-loop success per regulariser\n")?;
    writeln!(
        md,
        "| latents | capacity | success | mean steps | ms per plan |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: |")?;
    for (arm, per) in results {
        let succ = values(per, "/plan/success_rate");
        let eps: f64 = values(per, "/plan/episodes").iter().sum();
        let k: f64 = succ
            .iter()
            .zip(values(per, "/plan/episodes"))
            .map(|(r, n)| r * n)
            .sum();
        let (m, se) = mean_se(&succ);
        writeln!(
            md,
            "| {} | {} | {} ({k:.0}/{eps:.0}) | {} | {} |",
            arm.latents,
            arm.capacity,
            if se > 0.0 {
                format!("{:.0}% ± {:.0}", 100.0 * m, 100.0 * se)
            } else {
                format!("{:.0}%", 100.0 * m)
            },
            fmt_ms(stat(per, "/plan/mean_steps"), 1),
            fmt_ms(stat(per, "/plan/mean_plan_ms"), 0),
        )?;
    }
    for b in baselines.as_array().into_iter().flatten() {
        writeln!(
            md,
            "| {} | - | {:.0}% | {:.1} | - |",
            b["method"].as_str().unwrap_or("?"),
            100.0 * b["success_rate"].as_f64().unwrap_or(f64::NAN),
            b["mean_steps"].as_f64().unwrap_or(f64::NAN)
        )?;
    }

    writeln!(
        md,
        "\n## Table 1: scene change (leakage), L1 in the standardised embedding\n\nThe cut \
         pairs each clip's context with the next frame of a clip from another episode. \
         E_cut(z = 0) is the cut with the latent zeroed: the gap to E_cut shows the world model \
         uses z.\n"
    )?;
    writeln!(
        md,
        "| latents | capacity | w/o change | w/ change | ratio | E_cut(z = 0) | paper (SSv2): w/o / w/ / ratio |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | --- |")?;
    for (arm, per) in results {
        let p = arm.paper_leakage;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.3} / {:.3} / {:.2}x |",
            arm.latents,
            arm.capacity,
            fmt_ms(stat(per, "/eval/leakage/e_normal"), 4),
            fmt_ms(stat(per, "/eval/leakage/e_cut"), 4),
            fmt_ms(stat(per, "/eval/leakage/ratio"), 2),
            fmt_ms(stat(per, "/eval/leakage/e_cut_no_action"), 4),
            p[0],
            p[1],
            p[2]
        )?;
    }

    writeln!(
        md,
        "\n## Table 2: cycle consistency (transfer)\n\nA latent inferred on one clip drives \
         the world model from another clip's context; the IDM re-infers z' from that \
         prediction and z' drives the first clip again. Ratio = transfer error / original \
         error (1 = the action survives the round trip).\n"
    )?;
    writeln!(
        md,
        "| latents | capacity | original | transfer | ratio | cos(z, z') | paper ratio |"
    )?;
    writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for (arm, per) in results {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2}x |",
            arm.latents,
            arm.capacity,
            fmt_ms(stat(per, "/eval/transfer/original_error"), 4),
            fmt_ms(stat(per, "/eval/transfer/transfer_error"), 4),
            fmt_ms(stat(per, "/eval/transfer/ratio"), 3),
            fmt_ms(stat(per, "/eval/transfer/latent_cosine"), 3),
            arm.paper_transfer_ratio
        )?;
    }

    writeln!(
        md,
        "\n## Table 3: controller and MPC planning\n\nController: held-out cosine and R^2 of \
         g_ctrl(a) against the IDM's latents, inverse MSE of the robot actions (their variance \
         is what a constant would score), and the world model's held-out prediction error fed \
         the controller's latents against the IDM's. Planning confidence and error are the \
         closed loop's means.\n"
    )?;
    writeln!(
        md,
        "| latents | capacity | cos sim | R^2 | inv. MSE (action var.) | pred. error ctrl / IDM | plan. conf. | plan. err. | paper (DROID): cos / conf. / err. / inv. MSE |"
    )?;
    writeln!(
        md,
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- |"
    )?;
    for (arm, per) in results {
        let paper = arm
            .paper_control
            .map(|p| format!("{:.2} / {:.3} / {:.3} / {:.1}", p[0], p[1], p[2], p[3]))
            .unwrap_or_else(|| "-".into());
        writeln!(
            md,
            "| {} | {} | {} | {} | {} ({}) | {} / {} | {} | {} | {paper} |",
            arm.latents,
            arm.capacity,
            fmt_ms(stat(per, "/controller/cosine"), 3),
            fmt_ms(stat(per, "/controller/r2"), 3),
            fmt_ms(stat(per, "/controller/inverse_mse"), 3),
            fmt_ms(stat(per, "/controller/action_variance"), 3),
            fmt_ms(stat(per, "/controller/prediction_error"), 4),
            fmt_ms(stat(per, "/controller/prediction_error_idm"), 4),
            fmt_ms(stat(per, "/plan/mean_confidence"), 3),
            fmt_ms(stat(per, "/plan/mean_planning_error"), 4),
        )?;
    }

    // The paper's claim, read off these numbers: the arm(s) with the highest mean.
    let best = |p: &str| {
        let means: Vec<(&str, f64)> = results
            .iter()
            .map(|(arm, per)| (arm.name, mean_se(&values(per, p)).0))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let top = means.iter().map(|m| m.1).fold(f64::NEG_INFINITY, f64::max);
        let names: Vec<&str> = means
            .iter()
            .filter(|m| m.1 >= top - 1e-9)
            .map(|m| m.0)
            .collect();
        (!names.is_empty()).then(|| (names.join(", "), top))
    };
    writeln!(
        md,
        "\n## Does \"sparse is best for video, noisy for planning\" hold?\n"
    )?;
    for (what, path) in [
        ("highest leakage ratio (video)", "/eval/leakage/ratio"),
        ("highest controller cosine", "/controller/cosine"),
        ("highest controller R^2", "/controller/r2"),
        ("highest planning confidence", "/plan/mean_confidence"),
        ("highest closed-loop success", "/plan/success_rate"),
    ] {
        if let Some((name, v)) = best(path) {
            writeln!(md, "- {what}: **{name}** ({v:.3})")?;
        }
    }
    writeln!(
        md,
        "\nThe paper's claim holds here if a sparse arm leads the leakage ratio and a noisy arm \
         leads planning confidence and success; with {} seed(s) of {} episodes per arm, the \
         binomial standard error of an arm's pooled success is up to {:.0} points, so \
         differences of that size are noise.",
        a.seeds,
        a.episodes,
        100.0 * (0.25 / (a.episodes as f64 * a.seeds as f64)).sqrt()
    )?;

    writeln!(
        md,
        "\n## Figures\n\n![success and leakage per regulariser](figures.png)\n"
    )?;
    let json_report = json!({
        "experiment": "regularizers",
        "settings": {
            "task": a.data.spec.task, "human_episodes": a.data.spec.human_episodes,
            "human_policy": a.data.spec.human_policy().to_string(), "robot_episodes": a.data.spec.robot_episodes,
            "oracle": a.data.spec.oracle, "steps": a.steps, "seeds": a.seeds, "episodes": a.episodes,
            "samples": a.samples, "iterations": a.iterations, "horizon": a.horizon,
        },
        "arms": results.iter().map(|(arm, per)| json!({
            "arm": arm.name, "latents": arm.latents, "capacity": arm.capacity,
            "paper": {
                "leakage": arm.paper_leakage,
                "transfer_ratio": arm.paper_transfer_ratio,
                "control": arm.paper_control,
            },
            "seeds": per,
        })).collect::<Vec<_>>(),
        "baselines": baselines,
    });

    let panel = |title: &str, y: &str, p: &str, range: Option<(f64, f64)>| BarPanel {
        title: title.into(),
        y_desc: y.into(),
        bars: results
            .iter()
            .map(|(arm, per)| {
                let (m, se) = mean_se(&values(per, p));
                (arm.name.to_string(), m, se)
            })
            .collect(),
        percent: range == Some((0.0, 1.0)),
        range,
    };
    bar_panels(
        &out.join("figures.png"),
        &[
            panel(
                "closed-loop success",
                "success",
                "/plan/success_rate",
                Some((0.0, 1.0)),
            ),
            panel(
                "leakage ratio (scene cut)",
                "E_cut / E_normal",
                "/eval/leakage/ratio",
                None,
            ),
            panel(
                "controller R^2 (cut at -1)",
                "R^2",
                "/controller/r2",
                Some((-1.0, 1.0)),
            ),
        ],
    )?;
    Ok((md, json_report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn regularizer_args(line: &[&str]) -> RegularizerArgs {
        let argv = ["lam", "experiment", "regularizers"].iter().chain(line);
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Command::Experiment(ExperimentCommand::Regularizers(a)) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn paper_scale_takes_the_papers_sizes_and_cpu_scale_the_defaults() {
        // No command line was remembered in this test process, so no flag counts as typed.
        let cpu = regularizer_args(&[]).scaled();
        assert_eq!(
            (cpu.steps, cpu.episodes, cpu.samples, cpu.iterations),
            (2000, 20, 100, 10)
        );
        assert_eq!(cpu.data.spec.human_episodes, 1000);
        let argv = vec!["train".to_string()];
        assert_eq!(cpu.data.scale.train(argv.clone()), argv);
        assert_eq!(cpu.data.scale.fit(argv.clone()), argv);

        let p = regularizer_args(&["--scale", "paper"]).scaled();
        assert_eq!(
            (p.steps, p.episodes, p.samples, p.iterations),
            (10_000, 50, 300, 30)
        );
        assert_eq!(p.data.spec.human_episodes, 4_000);
        let train = p.data.scale.train_unfrozen(argv.clone());
        assert_eq!(
            train,
            [
                "train",
                "--preset",
                "paper",
                "--set",
                "train.batch_size=128"
            ]
        );
        assert_eq!(p.data.scale.fit(argv), ["train", "--set", "steps=10000"]);
        // The preset it names exists and has the paper's sizes.
        let cfg = lam_model::LamConfig::preset(paper::LAM_PRESET).unwrap();
        assert_eq!(
            (cfg.model.wm_dim, cfg.model.wm_depth, cfg.train.batch_size),
            (768, 12, 256)
        );
        use lam_model::settings::Settings;
        assert!(lam_lawm::LawmConfig::preset(paper::LAWM_PRESET).is_ok());
        assert_eq!(
            lawm_preset(Scale::Paper, 600, 2),
            [
                "--preset",
                "paper-baku",
                "--set",
                "train.steps=600",
                "--set",
                "train.seed=2"
            ]
        );
        assert!(lawm_preset(Scale::Cpu, 600, 2).is_empty());
    }

    #[test]
    fn report_folder_is_refused_when_foreign_or_made_with_other_data() {
        let tmp = tempfile::tempdir().unwrap();
        let data = json!({"task": "reach", "human_episodes": 400});
        // A folder someone else filled: refused, left as it was.
        let foreign = tmp.path().join("mine");
        std::fs::create_dir_all(foreign.join("arms")).unwrap();
        std::fs::write(foreign.join("arms/keep.txt"), b"precious").unwrap();
        let err = format!(
            "{:#}",
            prepare_out(&foreign, "regularizers", &data, true).unwrap_err()
        );
        assert!(err.contains("not made by lam experiment"), "{err}");
        assert!(foreign.join("arms/keep.txt").is_file());
        // A new folder is marked; the same settings are accepted again and keep what is there.
        let out = tmp.path().join("exp");
        prepare_out(&out, "regularizers", &data, false).unwrap();
        std::fs::create_dir_all(out.join("arms/noisy-high")).unwrap();
        prepare_out(&out, "regularizers", &data, false).unwrap();
        assert!(out.join("arms/noisy-high").is_dir());
        // Other data settings: refused without --fresh, cleared with it.
        let other = json!({"task": "push", "human_episodes": 400});
        let err = format!(
            "{:#}",
            prepare_out(&out, "regularizers", &other, false).unwrap_err()
        );
        assert!(
            err.contains("other data settings") && err.contains("--fresh"),
            "{err}"
        );
        assert!(out.join("arms/noisy-high").is_dir());
        prepare_out(&out, "regularizers", &other, true).unwrap();
        assert!(!out.join("arms").exists());
        assert_eq!(read_json(&out.join(MARKER)).unwrap()["data"], other);
    }

    #[test]
    fn finished_units_are_kept_only_for_the_same_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("arm");
        let first = kept_or_run(&dir, &json!({"steps": 10}), || {
            std::fs::create_dir_all(dir.join("lam")).unwrap();
            Ok(json!({"success": 0.5}))
        })
        .unwrap();
        assert_eq!(first["success"], 0.5);
        assert_eq!(first["settings"], json!({"steps": 10}));
        // Same settings: read back, the work is not redone.
        let again = kept_or_run(&dir, &json!({"steps": 10}), || panic!("redone")).unwrap();
        assert_eq!(again["success"], 0.5);
        // Other settings: the folder is cleared and the work redone.
        let other =
            kept_or_run(&dir, &json!({"steps": 20}), || Ok(json!({"success": 0.7}))).unwrap();
        assert_eq!(other["success"], 0.7);
        assert!(!dir.join("lam").exists());
        // A failed unit leaves no result behind.
        let err = kept_or_run(&dir, &json!({"steps": 30}), || anyhow::bail!("diverged"));
        assert!(err.is_err());
        assert!(!dir.join("result.json").exists());
    }

    #[test]
    fn arms_are_named_and_summarised_with_standard_errors() {
        assert_eq!(arms_of(&[]).unwrap().len(), 6);
        let two = arms_of(&["noisy-high".into(), "vq-low".into()]).unwrap();
        assert_eq!(
            two[1].sets,
            &["regularizer.kind=vq", "regularizer.codebook_size=16"]
        );
        let err = format!("{:#}", arms_of(&["lasso".into()]).err().unwrap());
        assert!(
            err.contains("lasso") && err.contains("sparse-high"),
            "{err}"
        );
        let (m, se) = mean_se(&[0.5, 0.7]);
        assert!((m - 0.6).abs() < 1e-12 && (se - 0.1).abs() < 1e-12);
        assert_eq!(mean_se(&[0.4]), (0.4, 0.0));
        assert_eq!(fmt_ms((0.61234, 0.0), 2), "0.61");
        assert_eq!(fmt_ms((0.6, 0.1), 1), "0.6 ± 0.1");
    }
}
