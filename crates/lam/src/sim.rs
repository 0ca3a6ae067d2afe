//! Command-line interface of the suite: `lam sim record`, `lam sim show`,
//! `lam sim bench`, `lam sim protocol`. The `lam` binary nests [`SimCommand`] under `sim` and
//! calls [`run`].

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use lam_sim::domain::Domain;
use lam_sim::env::{Env, EnvConfig};
use lam_sim::expert::{ExpertConfig, expert_rollout};
use lam_sim::nuisances::NuisanceConfig;
use lam_sim::policy::{PolicyKind, RandomPolicy};
use lam_sim::protocol::eval_protocol;
use lam_sim::strip::{spread, write_strip};
use lam_sim::tasks::Task;
use lam_suite::Dataset;
use lam_suite::{RecordConfig, record};
use std::path::PathBuf;
use std::time::Instant;

/// Commands of the simulated suite.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Record episodes into a LeRobot v3 dataset (parquet + mp4).
    Record(RecordArgs),
    /// Write a strip of frames of one recorded episode as a PNG.
    Show(ShowArgs),
    /// Measure simulator speed (steps/s with rendering, one core) and expert success.
    Bench(BenchArgs),
    /// Write the fixed evaluation episodes (start | goal pictures and a JSON
    /// list) and score the reference policies on them.
    Protocol(ProtocolArgs),
}

/// Whether the in-the-wild nuisances are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Nuisances {
    /// The domain's default: on for `human`, off for the robots.
    Default,
    /// All on.
    On,
    /// All off.
    Off,
}

impl Nuisances {
    fn config(self) -> Option<NuisanceConfig> {
        match self {
            Nuisances::Default => None,
            Nuisances::On => Some(NuisanceConfig::on()),
            Nuisances::Off => Some(NuisanceConfig::off()),
        }
    }
}

/// Arguments of `lam sim record`.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Task: reach, push, pusht or sort.
    #[arg(long)]
    pub task: Task,
    /// Embodiment: robot, robot-polar or human.
    #[arg(long, default_value = "robot")]
    pub domain: Domain,
    /// Number of episodes.
    #[arg(long, default_value_t = 10)]
    pub episodes: usize,
    /// Output dataset folder (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// Frame side in pixels (even, 16 to 512).
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Seed of the first episode; episode i uses seed + i.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Policy: expert, random, mixed or seek (goal-seeking play: full speed straight at
    /// random points, pressing into the walls on the way).
    #[arg(long, default_value = "expert")]
    pub policy: PolicyKind,
    /// In-the-wild nuisances (colours, texture, distractors, camera).
    #[arg(long, value_enum, default_value_t = Nuisances::Default)]
    pub nuisances: Nuisances,
    /// Standard deviation of the expert's action noise (fraction of top speed).
    #[arg(long, default_value_t = 0.1)]
    pub expert_noise: f32,
    /// Episodes per data/video file.
    #[arg(long, default_value_t = 50)]
    pub episodes_per_file: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `lam sim show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Dataset folder.
    pub dir: PathBuf,
    /// Episode index.
    #[arg(long, default_value_t = 0)]
    pub episode: usize,
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of frames in the strip (spread evenly over the episode).
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Integer upscaling; 0 picks one that makes frames at least 128 pixels.
    #[arg(long, default_value_t = 0)]
    pub zoom: u32,
}

/// Arguments of `lam sim bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Task to measure; all tasks when left out.
    #[arg(long)]
    pub task: Option<Task>,
    /// Embodiment.
    #[arg(long, default_value = "robot")]
    pub domain: Domain,
    /// Frame side.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Steps timed per task (random policy, rendering every step).
    #[arg(long, default_value_t = 20000)]
    pub steps: u32,
    /// Expert episodes per task for the success rate (0 skips it).
    #[arg(long, default_value_t = 0)]
    pub expert_episodes: u64,
}

/// Arguments of `lam sim protocol`.
#[derive(Debug, Args)]
pub struct ProtocolArgs {
    /// Task: reach, push, pusht or sort.
    #[arg(long)]
    pub task: Task,
    /// Embodiment.
    #[arg(long, default_value = "robot")]
    pub domain: Domain,
    /// Number of evaluation episodes.
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
    /// Frame side.
    #[arg(long, default_value_t = 64)]
    pub size: u32,
    /// Output folder for `episodes.json` and `episode_KKK.png` (start | goal).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs a command.
pub fn run(cmd: SimCommand) -> anyhow::Result<()> {
    match cmd {
        SimCommand::Record(a) => run_record(a),
        SimCommand::Show(a) => run_show(a),
        SimCommand::Bench(a) => run_bench(a),
        SimCommand::Protocol(a) => run_protocol(a),
    }
}

fn run_protocol(a: ProtocolArgs) -> anyhow::Result<()> {
    let episodes = eval_protocol(a.task, a.domain, a.episodes, a.size)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let (mut replay_ok, mut idle_ok, mut random_ok) = (0, 0, 0);
    let mut listing = Vec::new();
    for (k, ep) in episodes.iter().enumerate() {
        let png = a.out.join(format!("episode_{k:03}.png"));
        write_strip(
            &png,
            &[&ep.start_frame, &ep.goal_frame],
            a.size,
            a.size,
            128u32.div_ceil(a.size).max(1),
        )?;
        let mut t = 0;
        let replay = ep.run(|env| {
            let act = ep
                .expert_actions
                .get(t)
                .cloned()
                .unwrap_or_else(|| env.action_space().zero());
            t += 1;
            Ok(act)
        })?;
        let idle = ep.run(|env| Ok(env.action_space().zero()))?;
        let mut random = RandomPolicy::new(ep.seed);
        let rand = ep.run(|env| Ok(random.act(env)))?;
        replay_ok += replay.success as usize;
        idle_ok += idle.success as usize;
        random_ok += rand.success as usize;
        listing.push(serde_json::json!({"seed": ep.seed, "instruction": ep.instruction, "goal": ep.goal,
            "start_state": ep.start_state, "goal_state": ep.goal_state, "picture": png.file_name().map(|f| f.to_string_lossy().to_string()),
            "expert_replay": replay, "idle": idle, "random": rand}));
    }
    let json_path = a.out.join("episodes.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&listing)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let n = episodes.len().max(1) as f64;
    println!(
        "{} evaluation episodes of {} / {} (goal {} steps ahead, budget {} steps) -> {}",
        episodes.len(),
        a.task,
        a.domain,
        lam_sim::protocol::GOAL_OFFSET,
        lam_sim::protocol::BUDGET,
        a.out.display()
    );
    println!(
        "success: expert replay {:.0}%, random {:.0}%, idle {:.0}%",
        100.0 * replay_ok as f64 / n,
        100.0 * random_ok as f64 / n,
        100.0 * idle_ok as f64 / n
    );
    Ok(())
}

fn run_record(a: RecordArgs) -> anyhow::Result<()> {
    let cfg = RecordConfig {
        task: a.task,
        domain: a.domain,
        episodes: a.episodes,
        seed: a.seed,
        policy: a.policy,
        env: EnvConfig {
            size: a.size,
            nuisances: a.nuisances.config(),
            ..Default::default()
        },
        expert: ExpertConfig {
            noise: a.expert_noise,
            ..Default::default()
        },
        episodes_per_file: a.episodes_per_file,
        ..Default::default()
    };
    let (root, success) = record(&cfg, &a.out, !a.quiet)?;
    println!(
        "wrote {} episodes of {} / {} ({} policy, video {}) to {}; goal met in {:.0}% of episodes",
        a.episodes,
        a.task,
        a.domain,
        a.policy,
        lam_ingest::video_writer::output_codec(),
        root.display(),
        100.0 * success
    );
    Ok(())
}

fn run_show(a: ShowArgs) -> anyhow::Result<()> {
    let ds = Dataset::open(&a.dir)?;
    let ep = ds.read_episode(a.episode)?;
    let idx = spread(ep.frames.len(), a.frames);
    let frames: Vec<&[u8]> = idx.iter().map(|&i| ep.frames[i].as_slice()).collect();
    let zoom = if a.zoom > 0 {
        a.zoom
    } else {
        128u32.div_ceil(ep.width).max(1)
    };
    write_strip(&a.out, &frames, ep.width, ep.height, zoom)?;
    println!(
        "episode {} ({} frames, \"{}\"): frames {:?} -> {}",
        a.episode,
        ep.frames.len(),
        ep.task,
        idx,
        a.out.display()
    );
    Ok(())
}

fn run_bench(a: BenchArgs) -> anyhow::Result<()> {
    let tasks: Vec<Task> = a
        .task
        .map(|t| vec![t])
        .unwrap_or_else(|| Task::ALL.to_vec());
    for task in tasks {
        let mut env = Env::new(task, a.domain, 0, a.size)?;
        let mut policy = RandomPolicy::new(0);
        let mut frame = vec![0u8; (a.size * a.size * 3) as usize];
        let mut episode = 0u64;
        let t0 = Instant::now();
        for _ in 0..a.steps {
            let action = policy.act(&env);
            let info = env.step(&action)?;
            env.render_into(&mut frame);
            if info.truncated {
                episode += 1;
                env.reset(episode);
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        print!(
            "{task:6} {}: {:.0} steps/s with {}x{} rendering ({} steps, {:.2} s)",
            a.domain,
            a.steps as f64 / secs,
            a.size,
            a.size,
            a.steps,
            secs
        );
        if a.expert_episodes > 0 {
            let mut ok = 0;
            let mut steps = 0;
            for seed in 0..a.expert_episodes {
                let (s, k) = expert_rollout(task, a.domain, seed, &ExpertConfig::default())?;
                if s {
                    ok += 1;
                    steps += k;
                }
            }
            print!(
                "; expert success {ok}/{} ({:.0}%), mean {:.1} steps",
                a.expert_episodes,
                100.0 * ok as f64 / a.expert_episodes as f64,
                steps as f64 / ok.max(1) as f64
            );
        }
        println!();
    }
    Ok(())
}
