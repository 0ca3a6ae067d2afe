//! Success of trivial policies on the simulator's evaluation protocol, the floor the LAWM
//! comparison is read against: `zero` (the agent stays put), `random` (uniform actions, seeded
//! per episode) and `expert` (the scripted expert with the protocol's own seed, which defines
//! the goals, so it must score 100%).
//!
//! `cargo run --release -p lam-eval --example protocol_baselines -- reach,push 20`

use lam_sim::{Domain, Expert, ExpertConfig, eval_protocol};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let tasks = lam_eval::lawm::parse_tasks(args.get(1).map_or("reach,push", String::as_str))?;
    let n: usize = args.get(2).map_or(Ok(20), |s| s.parse())?;
    for task in tasks {
        let episodes = eval_protocol(task, Domain::Robot, n, 32)?;
        for kind in ["zero", "random", "expert"] {
            let mut ok = 0;
            for ep in &episodes {
                let mut rng = StdRng::seed_from_u64(ep.seed);
                let mut expert = Expert::new(ExpertConfig::default(), ep.seed);
                let out = ep.run(|env| {
                    let space = env.action_space();
                    Ok(match kind {
                        "zero" => space.zero(),
                        "random" => (0..space.dim)
                            .map(|i| rng.random_range(space.low[i]..=space.high[i]))
                            .collect(),
                        _ => expert.act(env),
                    })
                })?;
                ok += out.success as usize;
            }
            println!(
                "{:6} {kind:6} {:5.1}% ({ok}/{n})",
                task.name(),
                100.0 * ok as f64 / n as f64
            );
        }
    }
    Ok(())
}
