//! The state probe's frames on the simulated suite: episodes of a mixed policy (the scripted
//! expert interrupted by random segments) rendered straight from lam-sim with the physical
//! state of each kept frame. lam-encoder fits and scores the probe
//! ([`lam_encoder::probe::probe_encoder`]); this is its [`ProbeFrames`] for the suite.

use anyhow::{Result, ensure};
use lam_encoder::probe::{ProbeConfig, ProbeFrames, ProbeSet};
use lam_ingest::Normalization;
use lam_sim::{Domain, Env, ExpertConfig, Policy, PolicyKind, Task};

/// [`sim_probe_set`] as the probe's frame source.
pub const SIM_PROBE_FRAMES: ProbeFrames = sim_probe_set;

/// Renders `cfg.episodes` episodes of a mixed policy (the expert interrupted by random
/// segments) and keeps frames with the agent's and objects' positions.
pub fn sim_probe_set(cfg: &ProbeConfig, size: usize, norm: &Normalization) -> Result<ProbeSet> {
    ensure!(
        cfg.episodes >= 4 && cfg.frames_per_episode > 0 && cfg.stride > 0,
        "probe: needs at least 4 episodes, frames_per_episode > 0 and stride > 0"
    );
    let task: Task = cfg.task.parse()?;
    let domain: Domain = cfg.domain.parse()?;
    let mut set = ProbeSet {
        size,
        frames: Vec::new(),
        targets: Vec::new(),
        names: Vec::new(),
        object_targets: 0,
        episode: Vec::new(),
    };
    let plane = size * size;
    for e in 0..cfg.episodes {
        let seed = cfg.seed + e as u64;
        let mut env = Env::new(task, domain, seed, size as u32)?;
        let mut policy = Policy::new(PolicyKind::Mixed, ExpertConfig::default(), seed);
        if set.names.is_empty() {
            set.names = vec!["agent.x".into(), "agent.y".into()];
            for i in 0..env.state().objects.len() {
                set.names.push(format!("object{i}.x"));
                set.names.push(format!("object{i}.y"));
            }
            set.object_targets = set.names.len() - 2;
            for i in 0..env.layout().interior_walls().len() {
                set.names.push(format!("wall{i}.pos"));
            }
        }
        let mut kept = 0;
        let mut step = 0usize;
        while kept < cfg.frames_per_episode {
            if step % cfg.stride == 0 {
                let rgb = env.render();
                for c in 0..3 {
                    set.frames
                        .extend((0..plane).map(|i| norm.apply(c, rgb[i * 3 + c])));
                }
                let s = env.state();
                set.targets.extend_from_slice(&s.agent.pos);
                for o in &s.objects {
                    set.targets.extend_from_slice(&o.pos);
                }
                // A wall's position along its length (reach: moves with the door).
                for w in env.layout().interior_walls() {
                    let axis = usize::from(w.half[1] > w.half[0]);
                    set.targets.push(w.center[axis]);
                }
                set.episode.push(e);
                kept += 1;
            }
            let action = policy.act(&env);
            let info = env.step(&action)?;
            step += 1;
            if info.truncated {
                break;
            }
        }
    }
    ensure!(
        set.targets.len() == set.len() * set.names.len(),
        "probe: episodes disagree on the number of objects"
    );
    Ok(set)
}
