//! `lam plan eval`: closed-loop MPC on the simulated suite's fixed evaluation protocol, with
//! every planner, the action-conditioned baseline and the reference policies on the same
//! seeded episodes; a table, JSON and PNG strips.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use lam_control::closed_loop::{Agent, Mode};
use lam_control::controller;
use lam_control::memory::MemoryConfig;
use lam_control::planner::{CostKind, PlannerConfig, PlannerKind};
use lam_encoder::Encoder;
use lam_eval::mpc::{EpisodeResult, EvalSummary, Trace, run_episode, summarize};
use lam_model::config::{Conditioning, LamConfig};
use lam_model::device::parse_device;
use lam_sim::domain::Domain;
use lam_sim::protocol::{EvalEpisode, eval_protocol};
use lam_sim::tasks::Task;
use lam_sim::{Expert, ExpertConfig};
use serde::Serialize;
use tracing::info;

use lam_model::checkpoint::load_run;

use crate::settings_args::ConfigArgs;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Closed-loop success on the simulator's evaluation protocol.
    Eval(PlanEvalArgs),
}

#[derive(Args, Clone, Debug)]
pub struct PlanEvalArgs {
    /// Latent-action world model: run folder (latest checkpoint) or checkpoint folder.
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// Encoder the run's shards were embedded with (sim-encoder or Hugging Face folder), or
    /// `oracle` (the simulator's true state; runs trained on `lam embed --encoder oracle`).
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Controller folder (`lam control fit`), for the latent and action search spaces.
    #[arg(long)]
    pub controller: Option<PathBuf>,
    /// Action-conditioned world model run (`lam train --set model.conditioning=action`);
    /// adds a row planned with CEM in action space.
    #[arg(long)]
    pub action_run: Option<PathBuf>,
    /// Task: reach, push, pusht or sort.
    #[arg(long, default_value = "reach")]
    pub task: Task,
    /// Embodiment the episodes are played in.
    #[arg(long, default_value = "robot")]
    pub domain: Domain,
    /// Episodes (the protocol's first N seeds).
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Play only these of the protocol's episodes (0-based, comma-separated), e.g. to
    /// replay the failures of an earlier run; `--episodes` is then ignored.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<usize>,
    /// Planners for each world model (latent-action and action-conditioned), comma-separated:
    /// random-shooting, cem, icem, mppi, gradient.
    #[arg(long, default_value = "cem", value_delimiter = ',')]
    pub planner: Vec<PlannerKind>,
    /// Search space of the latent-action world model: latent (then the inverse controller)
    /// or action (through the controller).
    #[arg(long, default_value = "latent")]
    pub space: Mode,
    /// Also score the random policy and the scripted expert.
    #[arg(long)]
    pub baselines: bool,
    /// Candidates per iteration (random shooting: --samples too).
    #[arg(long, default_value_t = PlannerConfig::default().samples)]
    pub samples: usize,
    /// Refinement iterations (Adam steps for the gradient planner).
    #[arg(long, default_value_t = PlannerConfig::default().iterations)]
    pub iterations: usize,
    /// Elites (CEM, iCEM).
    #[arg(long, default_value_t = PlannerConfig::default().elites)]
    pub elites: usize,
    /// Planning horizon.
    #[arg(long, default_value_t = PlannerConfig::default().horizon)]
    pub horizon: usize,
    /// World-model steps executed per plan (default: 5 single actions, or 1 block when the
    /// model plans over action blocks).
    #[arg(long)]
    pub replan_every: Option<usize>,
    /// Cost: cosine, l1 or mse.
    #[arg(long, default_value = "cosine")]
    pub cost: CostKind,
    /// Which predicted frames the cost looks at: final (the anchors'), sum (mean over the
    /// horizon's steps) or min (best step).
    #[arg(long, default_value = "final")]
    pub objective: lam_control::planner::Objective,
    /// With action blocks: search one robot action per block, held for the block's steps,
    /// instead of every step's action (action-conditioned reach on the oracle state, 50
    /// episodes: 92% against 82%; the demo's latent-action pipeline: 50% against 55% on 20).
    #[arg(long)]
    pub hold_actions: bool,
    /// With action blocks: environment steps executed per plan, a divisor of the block (default:
    /// the whole block). Fewer plan again from the frame reached after them, the history the
    /// world model sees still one block apart.
    #[arg(long)]
    pub act_steps: Option<usize>,
    /// A further latent-action world model and its controller, `RUN,CONTROLLER` (repeat for
    /// more): every candidate is scored by the mean cost under --run's model and these (runs
    /// of the same recipe with other seeds; each keeps its own history labels).
    #[arg(long)]
    pub ensemble: Vec<String>,
    /// Compare token by token instead of mean-pooled frames.
    #[arg(long)]
    pub per_token: bool,
    /// Shard folder (embedded with the same encoder, e.g. the controller's robot episodes or
    /// the world model's own data) whose frames form the waypoint graph: each plan aims at
    /// the farthest frame within reach on the data's path to the goal (lam_control::waypoints).
    #[arg(long)]
    pub waypoints: Option<PathBuf>,
    /// Most frames in the waypoint graph.
    #[arg(long, default_value_t = lam_control::waypoints::WaypointConfig::default().nodes)]
    pub waypoint_nodes: usize,
    /// How far ahead on the path the waypoint is, in world-model steps.
    #[arg(long, default_value_t = lam_control::waypoints::WaypointConfig::default().reach)]
    pub waypoint_reach: usize,
    /// Line of sight to the waypoint, in median steps (0: off): the waypoint stops where the
    /// data's path bends away from the straight segment by more than this.
    #[arg(long, default_value_t = lam_control::waypoints::WaypointConfig::default().sight)]
    pub waypoint_sight: f32,
    /// Support critic folder (`lam control support`, fitted on the world model's video): the
    /// sampling planners add `--support-weight` times the mean over the horizon of its penalty
    /// for predicted changes that video never shows from the frame they start at (a motion
    /// through a wall).
    #[arg(long)]
    pub support: Option<PathBuf>,
    /// Weight of the support critic's penalty in the planning cost.
    #[arg(long, default_value_t = 1.0)]
    pub support_weight: f32,
    /// Nats of rarity the support penalty forgives (only changes rarer than e^-margin times
    /// their rate elsewhere cost anything).
    #[arg(long, default_value_t = 3.0)]
    pub support_margin: f32,
    /// Shard folder of the world model's own (unlabeled) video, embedded with the same
    /// encoder: every planned latent is replaced by the nearest one that video shows from the
    /// `--feasible-neighbours` frames most like the one it starts at (a push into a wall
    /// becomes the slide along it; lam_control::feasible). Sampling planners, latent-action
    /// world models.
    #[arg(long)]
    pub feasible: Option<PathBuf>,
    /// Nearest frames whose latents span each projection's hull (8: 74% on the oracle `reach`
    /// against 62% with 16 and 36% with 4; docs/benchmarks.md, "Contact from the video").
    #[arg(long, default_value_t = 8)]
    pub feasible_neighbours: usize,
    /// Shard folder of the domain the agent acts in (the controller's labeled shards, same
    /// encoder): channels whose mean or spread there is unlike the `--feasible` video's (a
    /// body drawn differently) are left out of the frame distance.
    #[arg(long, requires = "feasible")]
    pub feasible_domain: Option<PathBuf>,
    /// Project only the part of each latent in the span of what the controller makes of
    /// random action blocks (the leading principal directions holding this share of their
    /// variance); the rest of the latent passes unchanged. 0: the whole latent. A
    /// frame-conditioned controller reads the `--feasible-domain` frames.
    #[arg(long, default_value_t = 0.0, requires = "feasible")]
    pub feasible_subspace: f32,
    /// What the projection acts on: `latent` (each planned latent, onto the latents the video
    /// shows from like frames) or `change` (each predicted frame's change, onto the changes
    /// the video shows from like frames: holds when the agent's body and the video's differ
    /// in their latents).
    #[arg(long, value_enum, default_value = "latent")]
    pub feasible_target: FeasibleTargetArg,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Gradient planner step size (units of the prior's std).
    #[arg(long, default_value_t = PlannerConfig::default().learning_rate)]
    pub learning_rate: f64,
    /// Frame side rendered by the simulator (default: the encoder's input size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Output folder: plan_eval_<task>.json, plan_eval_<task>.md and strips/.
    #[arg(long)]
    pub out: PathBuf,
    /// Successes and failures per method drawn as PNG strips (the first of each, in episode
    /// order; file names say which).
    #[arg(long, default_value_t = 2)]
    pub strips: usize,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// `--config OUT/config.toml`, `--set min_std=0.1 --set icem_beta=1.5` (every field of
    /// the planner's settings but `kind`, which --planner gives per row; the flags above are
    /// shortcuts for the same keys).
    #[command(flatten)]
    pub settings: ConfigArgs,
}

/// Each planner flag of `lam plan eval` and the key of `PlannerConfig` it sets.
const PLANNER_FLAG_KEYS: &[(&str, &str)] = &[
    ("samples", "samples"),
    ("iterations", "iterations"),
    ("elites", "elites"),
    ("horizon", "horizon"),
    ("cost", "cost"),
    ("per_token", "pooled"),
    ("learning_rate", "learning_rate"),
    ("objective", "objective"),
];

/// Everything `lam plan eval` writes to JSON.
#[derive(Serialize)]
pub struct PlanEvalReport {
    pub task: String,
    pub domain: String,
    pub episodes: usize,
    pub planner_settings: PlannerConfig,
    /// `--replan-every` as given (None: the default per model).
    pub replan_every: Option<usize>,
    /// `--act-steps` as given (None: whole blocks).
    pub act_steps: Option<usize>,
    pub summaries: Vec<EvalSummary>,
    pub results: Vec<(String, Vec<EpisodeResult>)>,
    pub wall_seconds: f64,
}

impl PlanEvalReport {
    /// The comparison as a markdown table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| method | success | mean steps | ms per plan | confidence | planning error |\n\
             | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        for m in &self.summaries {
            let planned = m.mean_plan_ms > 0.0;
            let dash = |v: String| if planned { v } else { "-".into() };
            let _ = writeln!(
                s,
                "| {} | {:.0}% ({}/{}) | {:.1} | {} | {} | {} |",
                m.method,
                100.0 * m.success_rate,
                (m.success_rate * m.episodes as f64).round() as usize,
                m.episodes,
                m.mean_steps,
                dash(format!("{:.0}", m.mean_plan_ms)),
                dash(format!("{:.3}", m.mean_confidence)),
                dash(format!("{:.3}", m.mean_planning_error)),
            );
        }
        s
    }
}

pub fn run(cmd: PlanCommand) -> Result<()> {
    match cmd {
        PlanCommand::Eval(args) => {
            let report = eval(&args)?;
            print!("{}", report.table());
            println!(
                "written to {}",
                args.out
                    .join(format!("plan_eval_{}.md", report.task))
                    .display()
            );
            Ok(())
        }
    }
}

/// How frames become tokens for a run: a learned encoder or the simulator's state.
enum FrameSource {
    /// A loaded encoder (pooled per run by [`Encoder::for_run`]).
    Learned(Encoder),
    Oracle,
}

/// Loads a world-model run and sets up the frame source for its tokens.
fn load_world_model(
    path: &Path,
    source: FrameSource,
    size: usize,
    device: &Device,
) -> Result<(LamConfig, lam_model::LatentActionModel, FrameSource)> {
    let (cfg, lam, ckpt) = load_run(path, device)?;
    let source = match source {
        FrameSource::Learned(e) => {
            FrameSource::Learned(e.for_run(cfg.model.grid, cfg.model.embed_dim, size, &ckpt)?)
        }
        FrameSource::Oracle => {
            ensure!(
                cfg.model.grid == [1, 1],
                "{} was trained on a {:?} token grid; oracle runs have one token per frame \
                 (lam embed --encoder oracle)",
                ckpt.display(),
                cfg.model.grid
            );
            FrameSource::Oracle
        }
    };
    Ok((cfg, lam, source))
}

/// The further models of `--ensemble RUN,CONTROLLER` flags: each run's config and model and
/// its controller.
pub(crate) fn load_ensemble(
    specs: &[String],
    device: &Device,
) -> Result<
    Vec<(
        LamConfig,
        lam_model::LatentActionModel,
        controller::Controller,
    )>,
> {
    specs
        .iter()
        .map(|spec| {
            let (run, c) = spec
                .split_once(',')
                .with_context(|| format!("--ensemble `{spec}`: expected RUN,CONTROLLER"))?;
            let (cfg, lam, _) =
                load_run(Path::new(run), device).with_context(|| format!("--ensemble `{spec}`"))?;
            let c = controller::load(Path::new(c), device)
                .with_context(|| format!("--ensemble `{spec}`"))?;
            Ok((cfg, lam, c))
        })
        .collect()
}

/// [`load_ensemble`]'s models as the agent's ensemble members.
pub(crate) fn ensemble_members(
    models: &[(
        LamConfig,
        lam_model::LatentActionModel,
        controller::Controller,
    )],
) -> Vec<lam_control::closed_loop::Member<'_>> {
    models
        .iter()
        .map(|(cfg, lam, c)| lam_control::closed_loop::Member {
            cfg,
            lam,
            controller: Some(c),
        })
        .collect()
}

/// Runs every requested method on the same episodes.
pub fn eval(args: &PlanEvalArgs) -> Result<PlanEvalReport> {
    let started = Instant::now();
    let device = parse_device(&args.device)?;
    ensure!(args.episodes > 0, "--episodes must be at least 1");
    ensure!(
        args.run.is_some() || args.action_run.is_some() || args.baselines,
        "nothing to evaluate: give --run (with --controller), --action-run, or --baselines"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut source = match &args.encoder {
        Some(p) if lam_suite::oracle::is_oracle(p) => Some(FrameSource::Oracle),
        Some(p) => Some(FrameSource::Learned(Encoder::load(p, &device)?)),
        None => None,
    };
    let size = match (args.size, &source) {
        (Some(s), _) => s,
        (None, Some(FrameSource::Learned(e))) => e.info.default_size,
        _ => 64,
    };
    let episodes = match args.only.iter().max() {
        None => eval_protocol(args.task, args.domain, args.episodes, size as u32)?,
        Some(&last) => {
            let all = eval_protocol(args.task, args.domain, last + 1, size as u32)?;
            args.only.iter().map(|&i| all[i].clone()).collect()
        }
    };
    let space = episodes[0].env()?.action_space();
    let planner = args.settings.resolve(
        PlannerConfig {
            samples: args.samples,
            iterations: args.iterations,
            elites: args.elites,
            horizon: args.horizon,
            cost: args.cost,
            pooled: !args.per_token,
            learning_rate: args.learning_rate,
            objective: args.objective,
            ..PlannerConfig::default()
        },
        PLANNER_FLAG_KEYS,
    )?;
    // The settings as `lam plan eval --config OUT/config.toml` reads them.
    lam_model::settings::save(&planner, &args.out.join("config.toml"))?;
    let mut results: Vec<(String, Vec<EpisodeResult>)> = Vec::new();

    if args.baselines {
        results.push((
            "scripted expert".into(),
            run_policy(&episodes, "expert", |ep| {
                let mut expert = Expert::new(ExpertConfig::default(), ep.seed);
                Box::new(move |env| Ok(expert.act(env)))
            })?,
        ));
        results.push((
            "random policy".into(),
            run_policy(&episodes, "random", |ep| {
                let mut policy = lam_sim::policy::RandomPolicy::new(ep.seed);
                Box::new(move |env| Ok(policy.act(env)))
            })?,
        ));
    }

    let world_models = [
        (args.run.as_ref(), Conditioning::Latent),
        (args.action_run.as_ref(), Conditioning::Action),
    ];
    for (path, conditioning) in world_models {
        let Some(path) = path else { continue };
        let taken = source
            .take()
            .context("planning with a world model needs --encoder (a folder, or oracle)")?;
        let (cfg, lam, taken) = load_world_model(path, taken, size, &device)?;
        let source = &*source.insert(taken);
        ensure!(
            cfg.model.conditioning == conditioning,
            "{} is conditioned on {:?}; pass it as {}",
            path.display(),
            cfg.model.conditioning,
            if cfg.model.conditioning == Conditioning::Action {
                "--action-run"
            } else {
                "--run"
            }
        );
        let ctrl = match (&args.controller, conditioning) {
            (Some(p), Conditioning::Latent) => Some(controller::load(p, &device)?),
            (None, Conditioning::Latent) => {
                anyhow::bail!("--run needs --controller (fit one with lam control fit)")
            }
            _ => None,
        };
        let member_models = match conditioning {
            Conditioning::Latent => load_ensemble(&args.ensemble, &device)?,
            Conditioning::Action => Vec::new(),
        };
        let members = ensemble_members(&member_models);
        let critic = match &args.support {
            Some(p) => Some(lam_control::support::load(p, &device)?),
            None => None,
        };
        let feasible = match (&args.feasible, conditioning) {
            (Some(dir), Conditioning::Latent) => {
                let t0 = std::time::Instant::now();
                let set = lam_data::ShardSet::open(dir, Some(lam_data::Split::Train))?;
                let target = lam_control::feasible::Target::from(args.feasible_target);
                let mut f =
                    lam_control::feasible::FeasibleSet::of_shards(&lam, &set, target, &device, 64)
                        .with_context(|| format!("feasible set from {}", dir.display()))?;
                // The agent's own shards, read once: labeled transitions for the latent
                // target (their actions feed the check), frame changes for the change target.
                let (mut labeled, mut changes) = (None, None);
                if let Some(dir) = &args.feasible_domain {
                    let agent = lam_data::ShardSet::open(dir, None)?;
                    let context = || format!("feasible domain {}", dir.display());
                    let dropped = match target {
                        lam_control::feasible::Target::Latent => {
                            let t = lam_control::controller::pseudo_label(
                                &cfg, &lam, &agent, &device, 64, false,
                            )
                            .with_context(context)?;
                            let dropped = f.match_domain(&t.frames).with_context(context)?;
                            labeled = Some(t);
                            dropped
                        }
                        lam_control::feasible::Target::Change => {
                            let t = lam_control::feasible::transitions(&lam, &agent, &device, 64)
                                .with_context(context)?;
                            let dropped = f.match_domain(&t.frames).with_context(context)?;
                            changes = Some(t.changes);
                            dropped
                        }
                    };
                    tracing::info!(
                        "feasible set: channels {dropped:?} of {} unlike {}'s, left out of the \
                         frame distance",
                        f.frame_dim(),
                        dir.display()
                    );
                }
                if target == lam_control::feasible::Target::Change {
                    ensure!(
                        args.feasible_subspace == 0.0,
                        "--feasible-subspace restricts latents; --feasible-target change \
                         projects frame changes"
                    );
                    let live = f.change_only_matched_channels(changes.as_deref())?;
                    tracing::info!(
                        "feasible set: projecting the predicted change of channels {live:?} of {}",
                        f.frame_dim()
                    );
                }
                if args.feasible_subspace > 0.0 {
                    let ctrl = ctrl
                        .as_ref()
                        .context("--feasible-subspace needs --controller")?;
                    let latents = lam_control::controller::latents_of_random_blocks(
                        ctrl,
                        &space.low,
                        &space.high,
                        labeled.as_ref().map(|t| t.frames.as_slice()),
                        4096,
                        &device,
                    )
                    .context("--feasible-subspace")?;
                    let r = f.restrict(&latents, args.feasible_subspace)?;
                    tracing::info!(
                        "feasible set: projecting in the {r} of {} latent directions that hold \
                         {:.0}% of the controller's random blocks' variance",
                        f.latent_dim(),
                        100.0 * args.feasible_subspace
                    );
                }
                if let (Some(t), Some(ctrl), Some(domain)) =
                    (&labeled, ctrl.as_ref(), &args.feasible_domain)
                {
                    let c = f.check_controller(ctrl, t, args.feasible_neighbours, &device)?;
                    tracing::info!(
                        "feasible set on the {} transitions of {}: what happened moved by a \
                         median {:.3} of its norm; the controller's latents {:.3} from what \
                         happened, {:.3} once projected (its worst tenth: {:.3} -> {:.3})",
                        c.transitions,
                        domain.display(),
                        c.moved_median,
                        c.controller_error,
                        c.projected_error,
                        c.worst_controller_error,
                        c.worst_projected_error
                    );
                }
                tracing::info!(
                    "feasible set from {}: {} transitions in {:.1} s",
                    dir.display(),
                    f.len(),
                    t0.elapsed().as_secs_f64()
                );
                Some(f)
            }
            _ => None,
        };
        let (mode, kinds) = match conditioning {
            Conditioning::Latent => (args.space, args.planner.clone()),
            Conditioning::Action => (Mode::ActionConditioned, args.planner.clone()),
        };
        let frame_encoder = |rgb: &[u8],
                             state: &lam_sim::SimState,
                             layout: &lam_sim::Layout|
         -> Result<Tensor<3>> {
            match source {
                FrameSource::Learned(e) => e.encode_rgb(rgb, size, size, size, &device),
                FrameSource::Oracle => {
                    let v = state.oracle_embedding(layout);
                    let d = v.len();
                    Ok(Tensor::<3>::from_data(
                        TensorData::new(v, [1, 1, d]),
                        &device,
                    ))
                }
            }
        };
        // Action blocks: the model takes k robot actions per step.
        let frameskip = lam_control::closed_loop::frameskip_of(&cfg, ctrl.as_ref(), space.dim)
            .with_context(|| path.display().to_string())?;
        let replan_every = args
            .replan_every
            .unwrap_or(if frameskip > 1 { 1 } else { 5 });
        let graph = match &args.waypoints {
            Some(dir) => {
                let t0 = std::time::Instant::now();
                let set = lam_data::ShardSet::open(dir, Some(lam_data::Split::Train))?;
                let wcfg = lam_control::waypoints::WaypointConfig {
                    nodes: args.waypoint_nodes,
                    reach: args.waypoint_reach,
                    sight: args.waypoint_sight,
                    ..Default::default()
                };
                let g = lam_control::waypoints::WaypointGraph::build(&set, &lam, &wcfg)?;
                tracing::info!(
                    "waypoint graph from {}: {} frames, {} edges, step {:.3}, built in {:.1} s",
                    dir.display(),
                    g.len(),
                    g.edges(),
                    g.step_length(),
                    t0.elapsed().as_secs_f64()
                );
                Some(g)
            }
            None => None,
        };
        for kind in kinds {
            let agent = Agent {
                cfg: &cfg,
                lam: &lam,
                controller: ctrl.as_ref(),
                planner: PlannerConfig {
                    kind,
                    ..planner.clone()
                },
                mode,
                replan_every,
                act_steps: args.act_steps.unwrap_or(0),
                ensemble: members.clone(),
                frameskip,
                hold_actions: args.hold_actions,
                waypoints: graph.as_ref(),
                support: critic.as_ref().map(|critic| lam_control::support::Support {
                    critic,
                    weight: args.support_weight,
                    margin: args.support_margin,
                }),
                feasible: feasible
                    .as_ref()
                    .map(|set| lam_control::feasible::Feasible {
                        set,
                        neighbours: args.feasible_neighbours,
                        target: args.feasible_target.into(),
                    }),
                memory: args.memory.config(),
                low: space.low.clone(),
                high: space.high.clone(),
            };
            agent.check()?;
            let name = match conditioning {
                Conditioning::Latent => {
                    format!("latent-action WM + {} ({mode:?} space)", kind_name(kind))
                }
                Conditioning::Action => format!("action-conditioned WM + {}", kind_name(kind)),
            };
            let name = if frameskip > 1 {
                format!("{name}, blocks of {frameskip}")
            } else {
                name
            };
            let name = if agent.ensemble.is_empty() {
                name
            } else {
                format!("{name}, ensemble of {}", agent.ensemble.len() + 1)
            };
            let name = if graph.is_some() {
                format!("{name}, waypoints")
            } else {
                name
            };
            let name = if agent.support.is_some() {
                format!(
                    "{name}, support {} (margin {})",
                    args.support_weight, args.support_margin
                )
            } else {
                name
            };
            let name = if agent.feasible.is_some() {
                format!("{name}, feasible k={}", args.feasible_neighbours)
            } else {
                name
            };
            let name = if agent.memory.is_some() {
                format!("{name}, episode memory")
            } else {
                name
            };
            let bar = progress(&name, episodes.len());
            let mut rs: Vec<EpisodeResult> = Vec::new();
            // Strips of the first `strips` successes and the first `strips` failures: every
            // episode is traced until both are found, and a trace is kept only if its outcome
            // still lacks strips.
            let (mut wins, mut losses) = (0, 0);
            for ep in &episodes {
                let trace = wins < args.strips || losses < args.strips;
                let mut r = run_episode(&agent, ep, &frame_encoder, trace)?;
                let drawn = if r.success { &mut wins } else { &mut losses };
                if r.trace.is_some() {
                    if *drawn < args.strips {
                        *drawn += 1;
                    } else {
                        r.trace = None;
                    }
                }
                bar.inc(1);
                rs.push(r);
            }
            bar.finish_and_clear();
            let s = summarize(&name, &rs);
            info!(
                "{name}: success {:.0}%, {:.0} ms per plan",
                100.0 * s.success_rate,
                s.mean_plan_ms
            );
            write_strips(&args.out, args.task, &name, &rs, size)?;
            results.push((name, rs));
        }
    }
    let summaries = results.iter().map(|(n, r)| summarize(n, r)).collect();
    let report = PlanEvalReport {
        task: args.task.to_string(),
        domain: args.domain.to_string(),
        episodes: episodes.len(),
        planner_settings: planner,
        replan_every: args.replan_every,
        act_steps: args.act_steps,
        summaries,
        results,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    let stem = format!("plan_eval_{}", report.task);
    lam_data::shards::write_atomic(
        &args.out.join(format!("{stem}.json")),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let md = format!(
        "# Closed-loop planning: {} ({}), {} episodes\n\nPlanner: {} samples x {} iterations, \
         horizon {}, world-model steps per plan {}{}, cost {:?}{}, objective {:?}.\n\n{}",
        report.task,
        report.domain,
        report.episodes,
        report.planner_settings.samples,
        report.planner_settings.iterations,
        report.planner_settings.horizon,
        report
            .replan_every
            .map_or("5, or 1 block".to_string(), |r| r.to_string()),
        report.act_steps.map_or(String::new(), |r| format!(
            " ({r} of each block's steps executed)"
        )),
        report.planner_settings.cost,
        if report.planner_settings.pooled {
            " (pooled)"
        } else {
            " (per token)"
        },
        report.planner_settings.objective,
        report.table()
    );
    lam_data::shards::write_atomic(&args.out.join(format!("{stem}.md")), md.as_bytes())?;
    Ok(report)
}

fn kind_name(kind: PlannerKind) -> &'static str {
    match kind {
        PlannerKind::RandomShooting => "random shooting",
        PlannerKind::Cem => "CEM",
        PlannerKind::Icem => "iCEM",
        PlannerKind::Mppi => "MPPI",
        PlannerKind::Gradient => "gradient",
    }
}

fn progress(name: &str, n: usize) -> ProgressBar {
    let bar = lam_model::train::progress_bar(n, 0, true);
    bar.set_message(name.to_string());
    bar
}

type Policy<'a> = Box<dyn FnMut(&mut lam_sim::Env) -> Result<Vec<f32>> + 'a>;

/// Scores a policy that needs no model.
fn run_policy(
    episodes: &[EvalEpisode],
    name: &str,
    make: impl Fn(&EvalEpisode) -> Policy<'static>,
) -> Result<Vec<EpisodeResult>> {
    let mut out = Vec::new();
    for ep in episodes {
        let mut policy = make(ep);
        let o = ep
            .run(|env| policy(env))
            .with_context(|| format!("{name} policy, episode seed {}", ep.seed))?;
        out.push(EpisodeResult {
            seed: ep.seed,
            success: o.success,
            steps: o.steps,
            final_distance: o.final_distance,
            plans: 0,
            mean_plan_ms: 0.0,
            mean_confidence: 0.0,
            mean_planning_error: 0.0,
            trace: None,
        });
    }
    Ok(out)
}

/// One PNG per traced episode: a column per plan step, the observation on top and, below, the
/// observed frame (or goal) closest to what the world model predicted for that step; the goal
/// last.
fn write_strips(
    out: &Path,
    task: Task,
    method: &str,
    results: &[EpisodeResult],
    size: usize,
) -> Result<()> {
    let slug: String = method
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    for r in results {
        let Some(Trace {
            frames,
            nearest_to_prediction,
            goal,
        }) = &r.trace
        else {
            continue;
        };
        let steps = lam_sim::strip::spread(frames.len(), 10);
        let column = |top: &[u8], bottom: &[u8]| [top, bottom].concat();
        let mut cols: Vec<Vec<u8>> = steps
            .iter()
            .map(|&k| {
                let predicted = if k == 0 {
                    &frames[0]
                } else {
                    let j = nearest_to_prediction[k - 1];
                    if j < frames.len() { &frames[j] } else { goal }
                };
                column(&frames[k], predicted)
            })
            .collect();
        cols.push(column(goal, goal));
        let refs: Vec<&[u8]> = cols.iter().map(|c| c.as_slice()).collect();
        let path = out.join("strips").join(format!(
            "{task}_{slug}_{}_seed{}.png",
            if r.success { "success" } else { "failure" },
            r.seed
        ));
        lam_sim::strip::write_strip(&path, &refs, size as u32, 2 * size as u32, 2)?;
    }
    Ok(())
}

/// `--feasible-target`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum FeasibleTargetArg {
    Latent,
    Change,
}

/// The episode memory's flags (`lam plan eval`, `lam serve`).
#[derive(Args, Clone, Debug)]
pub struct MemoryArgs {
    /// Correct every rollout by the blocks the episode has executed and the frames they led to
    /// (a push the robot made from a like frame without moving is predicted not to move;
    /// lam_control::memory). Sampling planners, robot-action search spaces.
    #[arg(long)]
    pub memory: bool,
    /// Frame kernel width of the episode memory (mean squared difference per standardised
    /// channel of two pooled frames).
    #[arg(long, default_value_t = MemoryConfig::default().frame_scale, requires = "memory")]
    pub memory_frame_scale: f32,
    /// Action kernel width of the episode memory (mean squared difference per number of two
    /// blocks of robot actions).
    #[arg(long, default_value_t = MemoryConfig::default().action_scale, requires = "memory")]
    pub memory_action_scale: f32,
    /// Blocks the episode memory keeps (the oldest is forgotten past this many), so a served
    /// session that never resets plans in bounded time.
    #[arg(long, default_value_t = MemoryConfig::default().capacity, requires = "memory")]
    pub memory_capacity: usize,
}

impl MemoryArgs {
    /// The memory asked for, if any.
    pub fn config(&self) -> Option<MemoryConfig> {
        self.memory.then_some(MemoryConfig {
            frame_scale: self.memory_frame_scale,
            action_scale: self.memory_action_scale,
            capacity: self.memory_capacity,
        })
    }
}

impl From<FeasibleTargetArg> for lam_control::feasible::Target {
    fn from(a: FeasibleTargetArg) -> Self {
        match a {
            FeasibleTargetArg::Latent => Self::Latent,
            FeasibleTargetArg::Change => Self::Change,
        }
    }
}
