//! Diagnostic: the planning cost (MSE of standardised frame tokens to the goal's) of frames
//! with the agent placed on a grid of 0.25 units around the goal, per protocol episode of
//! `reach` in the robot domain: how steep the cost is where the planner makes its last move.
//! `cargo run --release -p lam-eval --example goal_landscape -- RUN ENCODER EPISODES [grid]`
//! (EPISODES comma-separated protocol indices; `grid` prints the 13 x 13 costs, north up).
use std::path::PathBuf;

use anyhow::Context;

use burn::prelude::*;
use lam_sim::{Domain, Task};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        a.len() >= 4,
        "usage: goal_landscape RUN ENCODER EPISODES [grid]"
    );
    let run = PathBuf::from(&a[1]);
    let enc = PathBuf::from(&a[2]);
    let eps: Vec<usize> = a[3]
        .split(',')
        .map(|s| s.parse().with_context(|| format!("episode index `{s}`")))
        .collect::<anyhow::Result<_>>()?;
    let device = Device::flex();
    let (cfg, lam, ckpt) = lam_model::checkpoint::load_run(&run, &device)?;
    let size = 64;
    let e = lam_encoder::Encoder::load(&enc, &device)?.for_run(
        cfg.model.grid,
        cfg.model.embed_dim,
        size,
        &ckpt,
    )?;
    let n = eps.iter().max().context("no episodes")? + 1;
    let protocol = lam_sim::protocol::eval_protocol(Task::Reach, Domain::Robot, n, size as u32)?;
    for &i in &eps {
        let ep = &protocol[i];
        let goal = lam.normalize(e.encode_rgb(&ep.goal_frame, size, size, size, &device)?);
        let mut env = ep.env()?;
        let g = ep.goal_state.agent.pos;
        let mut best = (f32::MAX, 0.0, 0.0);
        let mut at_goal = f32::NAN;
        let mut rows = Vec::new();
        let steps: Vec<f32> = (-6..=6).map(|k| k as f32 * 0.25).collect();
        for &dy in steps.iter().rev() {
            let mut row = String::new();
            for &dx in &steps {
                let mut st = ep.goal_state.clone();
                st.agent.pos = [g[0] + dx, g[1] + dy];
                st.agent.vel = [0.0, 0.0];
                env.set_state(&st)?;
                let rgb = env.render();
                let s = lam.normalize(e.encode_rgb(&rgb, size, size, size, &device)?);
                let c: f32 = (s - goal.clone()).square().mean().into_scalar();
                if c < best.0 {
                    best = (c, dx, dy);
                }
                if dx == 0.0 && dy == 0.0 {
                    at_goal = c;
                }
                row.push_str(&format!("{:6.3}", c));
            }
            rows.push(row);
        }
        println!(
            "episode {i}: goal ({:.2}, {:.2}); lowest cost {:.4} at offset ({:.2}, {:.2}); cost at the goal itself {:.3}",
            g[0], g[1], best.0, best.1, best.2, at_goal
        );
        if a.len() > 4 {
            for r in rows {
                println!("{r}");
            }
        }
    }
    Ok(())
}
