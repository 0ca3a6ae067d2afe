//! Recording episodes of the suite into LeRobot v3 datasets.

use lam_ingest::lerobot::recording::{DatasetSpec, DatasetWriter, EpisodeRecord};
use lam_sim::domain::Domain;
use lam_sim::env::{Env, EnvConfig};
use lam_sim::expert::ExpertConfig;
use lam_sim::policy::{Policy, PolicyKind};
use lam_sim::scene::SimState;
use lam_sim::tasks::Task;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Recording settings. Defaults in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordConfig {
    /// Task [reach].
    pub task: Task,
    /// Embodiment [robot].
    pub domain: Domain,
    /// Number of episodes [10].
    pub episodes: usize,
    /// Seed of the first episode; episode `i` uses `seed + i` [0].
    pub seed: u64,
    /// Policy [expert].
    pub policy: PolicyKind,
    /// Environment settings (frame size 64 by default).
    pub env: EnvConfig,
    /// Expert settings.
    pub expert: ExpertConfig,
    /// Steps kept after the goal is first met, so the end state is seen [5].
    pub steps_after_success: u32,
    /// Steps of a random-policy episode; 0 means the task's budget [0].
    pub random_steps: u32,
    /// Episodes per data and video file [50].
    pub episodes_per_file: usize,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            task: Task::Reach,
            domain: Domain::Robot,
            episodes: 10,
            seed: 0,
            policy: PolicyKind::Expert,
            env: EnvConfig::default(),
            expert: ExpertConfig::default(),
            steps_after_success: 5,
            random_steps: 0,
            episodes_per_file: 50,
        }
    }
}

/// Plays one episode and returns its record: frames `o_0..o_T` and, at each
/// frame, the action the policy chose there (the last one is chosen but not
/// executed).
pub fn record_episode(
    env: &mut Env,
    policy: &mut Policy,
    cfg: &RecordConfig,
    seed: u64,
) -> anyhow::Result<EpisodeRecord> {
    env.reset(seed);
    let budget = match cfg.policy {
        PolicyKind::Random if cfg.random_steps > 0 => cfg.random_steps,
        _ => env.max_steps(),
    };
    let stop_on_success = cfg.policy != PolicyKind::Random;
    let mut ep = EpisodeRecord {
        task: env.instruction().to_string(),
        ..Default::default()
    };
    let mut succeeded_at: Option<u32> = None;
    let mut step = 0u32;
    loop {
        let state: &SimState = env.state();
        ep.states.push(state.to_vec());
        ep.agent_pos.push(state.agent.pos);
        ep.success.push(env.success());
        ep.frames.push(env.render());
        let action = env.action_space().clip(&policy.act(env))?;
        ep.actions.push(action.clone());
        if succeeded_at.is_none() && env.success() {
            succeeded_at = Some(step);
        }
        let done_after_success =
            stop_on_success && succeeded_at.is_some_and(|s| step >= s + cfg.steps_after_success);
        if step >= budget || done_after_success {
            break;
        }
        env.step(&action)?;
        step += 1;
    }
    ep.info = json!({"seed": seed, "goal": env.goal(), "instruction": env.instruction(),
                     "succeeded_at": succeeded_at, "layout": env.layout(), "look": env.look()});
    Ok(ep)
}

/// Records `cfg.episodes` episodes into a new LeRobot v3 dataset at `out`,
/// with a progress bar. Returns the dataset root and the fraction of episodes
/// that met their goal.
pub fn record(cfg: &RecordConfig, out: &Path, progress: bool) -> anyhow::Result<(PathBuf, f32)> {
    anyhow::ensure!(cfg.episodes > 0, "--episodes must be at least 1");
    let mut env = Env::with_config(cfg.task, cfg.domain, cfg.seed, cfg.env.clone())?;
    let n_objects = env.layout().objects.len();
    let space = env.action_space();
    let spec = DatasetSpec {
        fps: cfg.env.physics.control_hz.round() as u32,
        size: cfg.env.size,
        action_names: space.names.clone(),
        export_actions: cfg.domain.actions_are_observable(),
        state_names: SimState::vec_names(n_objects),
        robot_type: format!("lam-sim-{}", cfg.domain),
        episodes_per_file: cfg.episodes_per_file,
        provenance: json!({"task": cfg.task, "domain": cfg.domain,
                           "task_name": cfg.task.name(), "domain_name": cfg.domain.name(), "record": cfg, "action_space": space,
                           "video_codec": lam_ingest::video_writer::output_codec()}),
    };
    anyhow::ensure!(
        (cfg.env.physics.control_hz - spec.fps as f32).abs() < 1e-6,
        "control_hz {} must be a whole number of frames per second",
        cfg.env.physics.control_hz
    );
    let mut writer = DatasetWriter::create(out, spec)?;
    let bar = if progress {
        let b = indicatif::ProgressBar::new(cfg.episodes as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} episodes, {elapsed} elapsed, eta {eta}",
            )
            .expect("static progress template")
            .progress_chars("=> "),
        );
        b.set_message(format!("sim {} {}", cfg.task, cfg.domain));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut successes = 0usize;
    for i in 0..cfg.episodes {
        let seed = cfg.seed + i as u64;
        let mut policy = Policy::new(cfg.policy, cfg.expert.clone(), seed);
        let ep = record_episode(&mut env, &mut policy, cfg, seed)?;
        if ep.success.iter().any(|&s| s) {
            successes += 1;
        }
        writer.add_episode(&ep)?;
        bar.inc(1);
    }
    bar.finish();
    let root = writer.finish()?;
    Ok((root, successes as f32 / cfg.episodes as f32))
}
