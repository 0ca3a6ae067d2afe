//! Diagnostic: CEM planning through the simulator itself on `reach`'s evaluation protocol.
//!
//! The learned world models are replaced by the true dynamics (each candidate is played from
//! the current state with `Env::set_state`), with the settings of the closed-loop rows in
//! docs/benchmarks.md: blocks of 5 steps, horizon 5 blocks, 300 candidates, 30 elites, cost =
//! squared distance of the agent to the goal at the best block end, one block executed per
//! plan, 50-step budget. An episode this fails is a search (or horizon) failure, not a model
//! failure.
//!
//! usage: cargo run --release -p lam-sim --example true_dynamics_cem -- ITERATIONS EPISODES
//! [HORIZON] (EPISODES: comma-separated protocol indices, e.g. 0,9,11; HORIZON in blocks, 5)

use anyhow::Context;
use lam_sim::{Domain, Task, eval_protocol, rng::Rng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: true_dynamics_cem ITERATIONS EPISODES [HORIZON] (e.g. 10 0,9,11)";
    let iterations: usize = args.get(1).context(usage)?.parse().context(usage)?;
    let picked: Vec<usize> = args
        .get(2)
        .context(usage)?
        .split(',')
        .map(|s| s.parse().context(usage))
        .collect::<anyhow::Result<_>>()?;
    let n = picked.iter().max().map_or(0, |m| m + 1);
    let episodes = eval_protocol(Task::Reach, Domain::Robot, n, 32)?;
    let horizon: usize = match args.get(3) {
        Some(h) => h.parse().context(usage)?,
        None => 5,
    };
    let (block, samples, elites) = (5usize, 300usize, 30usize);
    let width = horizon * block * 2;
    let mut rng = Rng::new(1);
    for &i in &picked {
        let ep = &episodes[i];
        let goal = ep.goal_state.agent.pos;
        let mut env = ep.env()?;
        let mut sim = ep.env()?;
        let mut success = false;
        for _ in 0..ep.budget as usize / block {
            let start = env.state().clone();
            let (mut mean, mut std) = (vec![0f32; width], vec![1f32; width]);
            let mut best = (f32::INFINITY, vec![0f32; width]);
            for _ in 0..iterations {
                let mut scored = Vec::with_capacity(samples);
                for _ in 0..samples {
                    let x: Vec<f32> = (0..width)
                        .map(|j| (mean[j] + std[j] * rng.normal()).clamp(-1.0, 1.0))
                        .collect();
                    sim.set_state(&start)?;
                    let mut cost = f32::INFINITY;
                    for a in x.chunks(2).collect::<Vec<_>>().chunks(block) {
                        for step in a {
                            sim.step(step)?;
                        }
                        let p = sim.state().agent.pos;
                        cost = cost.min((p[0] - goal[0]).powi(2) + (p[1] - goal[1]).powi(2));
                    }
                    scored.push((cost, x));
                }
                scored.sort_by(|a, b| a.0.total_cmp(&b.0));
                if scored[0].0 < best.0 {
                    best = scored[0].clone();
                }
                for j in 0..width {
                    let m = scored[..elites].iter().map(|c| c.1[j]).sum::<f32>() / elites as f32;
                    let v = scored[..elites]
                        .iter()
                        .map(|c| (c.1[j] - m).powi(2))
                        .sum::<f32>()
                        / elites as f32;
                    mean[j] = m;
                    std[j] = v.sqrt().max(0.05);
                }
            }
            for a in best.1.chunks(2).take(block) {
                success |= env.step(a)?.success;
            }
            if success {
                break;
            }
        }
        let p = env.state().agent.pos;
        let dist = ((p[0] - goal[0]).powi(2) + (p[1] - goal[1]).powi(2)).sqrt();
        println!("episode {i}: success {success}, final distance {dist:.2}");
    }
    Ok(())
}
