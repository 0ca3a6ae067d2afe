//! `lam serve`: arguments and start-up (load the model once, then serve).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result, bail, ensure};
use clap::{ArgGroup, Args};
use lam_control::closed_loop::{Agent, Mode};
use lam_control::planner::{PlannerConfig, PlannerKind};
use lam_encoder::Encoder;
use lam_model::device::parse_device;
use tracing::info;

use lam_serve::backend::{Backend, MpcBackend, load_lawm};
use lam_serve::server::{ServerOptions, serve};

/// Serve MPC through a stage-1 run (`--run` + `--encoder`) or a LAWM policy (`--lawm`) over
/// WebSocket with msgpack messages (protocol: the lam-serve crate docs; client:
/// clients/python).
#[derive(Args, Clone, Debug)]
#[command(group(ArgGroup::new("model").required(true).args(["run", "lawm"])))]
pub struct ServeArgs {
    /// Stage-1 run folder (its latest checkpoint) or checkpoint folder: plan toward goal images.
    #[arg(long, requires = "encoder")]
    pub run: Option<PathBuf>,
    /// Encoder whose tokens the run was trained on (sim-encoder checkpoint or Hugging Face
    /// folder); observations are encoded with it.
    #[arg(long)]
    pub encoder: Option<PathBuf>,
    /// Controller folder (lam control fit), needed by the latent and action search spaces.
    #[arg(long)]
    pub controller: Option<PathBuf>,
    /// Planner: cem, icem, mppi or random-shooting.
    #[arg(long, default_value = "cem")]
    pub planner: PlannerKind,
    /// Search space: latent (inverse controller to actions), action (through the controller)
    /// or action-conditioned (an action-conditioned world model).
    #[arg(long, default_value = "latent")]
    pub search_space: Mode,
    /// Planning horizon.
    #[arg(long, default_value_t = PlannerConfig::default().horizon)]
    pub horizon: usize,
    /// Candidate sequences per iteration.
    #[arg(long, default_value_t = PlannerConfig::default().samples)]
    pub samples: usize,
    /// Elites kept per iteration (CEM, iCEM).
    #[arg(long, default_value_t = PlannerConfig::default().elites)]
    pub elites: usize,
    /// Planner iterations.
    #[arg(long, default_value_t = PlannerConfig::default().iterations)]
    pub iterations: usize,
    /// Number format of the CPU rollout's matrix products: f32, or bf16 (Intel AMX tiles,
    /// float32 sums; float32 where the CPU has no AMX; rollouts through a frame-conditioned
    /// controller stay float32).
    #[arg(long, default_value = "f32")]
    pub precision: lam_control::planner::HostPrecision,
    /// World-model steps of a plan executed before planning again (actions, or action blocks
    /// for a model trained on blocks).
    #[arg(long, default_value_t = 5)]
    pub replan_every: usize,
    /// With action blocks: search one robot action per block, held for the block's steps.
    #[arg(long)]
    pub hold_actions: bool,
    /// With action blocks: robot actions sent per observation, a divisor of the block (default:
    /// the whole block). Fewer plan again at every observation, the history the world model
    /// sees still one block apart.
    #[arg(long)]
    pub act_steps: Option<usize>,
    /// A further latent-action world model and its controller, `RUN,CONTROLLER` (repeat for
    /// more): every candidate is scored by the mean cost under --run's model and these (as
    /// `lam plan eval --ensemble`; what `lam demo` plans with).
    #[arg(long)]
    pub ensemble: Vec<String>,
    #[command(flatten)]
    pub memory: crate::plan::MemoryArgs,
    /// Planning cost: mse, l1 or cosine, between the predicted and the goal frame embedding.
    #[arg(long, default_value = "mse")]
    pub cost: lam_control::planner::CostKind,
    /// Which predicted frames the cost looks at: final, sum (mean over the horizon) or min.
    #[arg(long, default_value = "sum")]
    pub objective: lam_control::planner::Objective,
    /// Planner seed (mixed with each reset's `seed`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of the square frames the encoder sees (default: the encoder's own size).
    #[arg(long)]
    pub size: Option<usize>,
    /// Use the action bounds of this simulated-suite domain (robot, robot-polar, human).
    #[arg(long, conflicts_with_all = ["action_low", "action_high"])]
    pub domain: Option<lam_sim::Domain>,
    /// Lower action bounds, comma separated (with --action-high).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        requires = "action_high"
    )]
    pub action_low: Option<Vec<f32>>,
    /// Upper action bounds, comma separated (with --action-low).
    #[arg(
        long,
        value_delimiter = ',',
        allow_negative_numbers = true,
        requires = "action_low"
    )]
    pub action_high: Option<Vec<f32>>,
    /// LAWM policy run folder or checkpoint folder (policy stage): act from instructions.
    #[arg(long, conflicts_with_all = ["run", "controller"])]
    pub lawm: Option<PathBuf>,
    /// LAWM: chunk actions played before the policy is queried again.
    #[arg(long, default_value_t = 1)]
    pub execute: usize,
    /// LAWM: instruction used when a reset names none.
    #[arg(long)]
    pub instruction: Option<String>,
    /// Address to bind (localhost unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port; the chosen one is printed).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Largest request accepted, in MiB.
    #[arg(long, default_value_t = 16.0)]
    pub max_message_mb: f64,
    /// Connections served at once.
    #[arg(long, default_value_t = 64)]
    pub max_connections: usize,
    /// Seconds a connection may stay silent (no message, or a message stalled mid-way) before
    /// the server closes it. When every slot is taken, the connection silent longest (for at
    /// least 2 s) is closed to make room for a new one, so idle sockets cannot lock clients out.
    #[arg(long, default_value_t = 300.0)]
    pub idle_timeout_s: f64,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

fn bounds(args: &ServeArgs) -> Result<Option<(Vec<f32>, Vec<f32>, Option<Vec<String>>)>> {
    if let Some(d) = args.domain {
        let s = d.action_space();
        return Ok(Some((s.low, s.high, Some(s.names))));
    }
    match (&args.action_low, &args.action_high) {
        (Some(lo), Some(hi)) => {
            ensure!(
                lo.len() == hi.len(),
                "--action-low has {} values, --action-high {}",
                lo.len(),
                hi.len()
            );
            for (i, (l, h)) in lo.iter().zip(hi).enumerate() {
                ensure!(
                    l.is_finite() && h.is_finite() && l < h,
                    "action bound {i}: low {l} must be below high {h}"
                );
            }
            Ok(Some((lo.clone(), hi.clone(), None)))
        }
        _ => Ok(None),
    }
}

/// Loads what `args` names and serves until the process is stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    ensure!(
        args.max_message_mb > 0.0 && args.max_message_mb.is_finite(),
        "--max-message-mb must be positive, got {}",
        args.max_message_mb
    );
    ensure!(
        args.max_connections >= 1,
        "--max-connections must be at least 1"
    );
    ensure!(
        args.idle_timeout_s > 0.0 && args.idle_timeout_s.is_finite(),
        "--idle-timeout-s must be positive, got {}",
        args.idle_timeout_s
    );
    let opts = ServerOptions {
        max_message: (args.max_message_mb * 1024.0 * 1024.0) as usize,
        max_connections: args.max_connections,
        idle_timeout: std::time::Duration::from_secs_f64(args.idle_timeout_s),
    };
    let addr = SocketAddr::new(args.host, args.port);
    if !args.host.is_loopback() {
        tracing::warn!(
            "binding {} : the server is reachable from other machines and has no authentication",
            args.host
        );
    }
    let bounds = bounds(&args)?;
    if let Some(path) = &args.lawm {
        let backend = Backend::Lawm(load_lawm(
            path,
            &device,
            args.execute,
            args.instruction.clone(),
            bounds.map(|(lo, hi, _)| (lo, hi)),
        )?);
        info!("LAWM policy loaded from {}", path.display());
        return serve(&backend, addr, &opts);
    }
    let run = args.run.as_ref().context("--run or --lawm is required")?;
    let enc_path = args
        .encoder
        .as_ref()
        .context("--run needs --encoder (the encoder the run's tokens came from)")?;
    let (cfg, lam, ckpt) = lam_model::checkpoint::load_run(run, &device)?;
    ensure!(
        !lam_suite::oracle::is_oracle(enc_path),
        "the oracle encoder reads the simulator's state, which a served client does not send; \
         serve a run trained on a learned encoder"
    );
    let encoder = Encoder::load(enc_path, &device)?;
    let size = args.size.unwrap_or(encoder.info.default_size);
    let encoder = encoder.for_run(cfg.model.grid, cfg.model.embed_dim, size, &ckpt)?;
    let controller = match &args.controller {
        Some(p) => Some(lam_control::controller::load(p, &device)?),
        None => None,
    };
    let member_models = crate::plan::load_ensemble(&args.ensemble, &device)?;
    let (low, high, names) = match bounds {
        Some(b) => b,
        None => bail!(
            "give the robot's action bounds: --domain robot|robot-polar|human (the simulated \
             suite's), or --action-low and --action-high"
        ),
    };
    let planner = PlannerConfig {
        kind: args.planner,
        horizon: args.horizon,
        samples: args.samples,
        elites: args.elites,
        iterations: args.iterations,
        seed: args.seed,
        cost: args.cost,
        objective: args.objective,
        precision: args.precision,
        ..PlannerConfig::default()
    };
    ensure!(args.replan_every >= 1, "--replan-every must be at least 1");
    // Action blocks: the model takes k robot actions per step.
    let frameskip = lam_control::closed_loop::frameskip_of(&cfg, controller.as_ref(), low.len())
        .with_context(|| ckpt.display().to_string())?;
    let agent = Agent {
        cfg: &cfg,
        lam: &lam,
        controller: controller.as_ref(),
        planner,
        mode: args.search_space,
        replan_every: args.replan_every,
        act_steps: args.act_steps.unwrap_or(0),
        ensemble: crate::plan::ensemble_members(&member_models),
        frameskip,
        hold_actions: args.hold_actions,
        waypoints: None,
        support: None,
        feasible: None,
        memory: args.memory.config(),
        low,
        high,
    };
    agent.check()?;
    info!(
        "MPC: {} with {}, planner {:?} ({} samples x {} iterations, horizon {})",
        ckpt.display(),
        enc_path.display(),
        args.planner,
        args.samples,
        args.iterations,
        args.horizon
    );
    let backend = Backend::Mpc(MpcBackend {
        agent,
        encoder: &encoder,
        size,
        device: device.clone(),
        checkpoint: ckpt,
        action_names: names,
    });
    serve(&backend, addr, &opts)
}
