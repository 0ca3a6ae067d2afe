//! Which of `reach`'s protocol episodes need a detour: the straight line from the agent's
//! start to its goal crosses the middle wall outside the door (with the agent's radius as
//! margin), so a planner that heads straight for the goal presses into the wall.
//!
//! `cargo run --release -p lam-sim --example reach_detours -- 50`

use lam_sim::{Domain, Task, protocol};

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let episodes = protocol::eval_protocol(Task::Reach, Domain::Robot, n, 64)?;
    let mut blocked = Vec::new();
    for (i, ep) in episodes.iter().enumerate() {
        let env = ep.env()?;
        // The middle wall is the two thin walls at x = ARENA / 2 (border walls are wide there).
        let middle: Vec<_> = env
            .layout()
            .walls
            .iter()
            .filter(|w| (w.center[0] - 5.0).abs() < 0.01 && w.half[0] < 0.5)
            .collect();
        let lower = middle
            .iter()
            .map(|w| w.center[1] + w.half[1])
            .fold(f32::INFINITY, f32::min);
        let upper = middle
            .iter()
            .map(|w| w.center[1] - w.half[1])
            .fold(f32::NEG_INFINITY, f32::max);
        let (s, g) = (ep.start_state.agent.pos, ep.goal_state.agent.pos);
        let y = s[1] + (5.0 - s[0]) / (g[0] - s[0]) * (g[1] - s[1]);
        let margin = 0.3;
        let clear = y > lower + margin && y < upper - margin;
        if !clear {
            blocked.push(i);
        }
        println!(
            "{i:3} door y [{lower:.2}, {upper:.2}]  start ({:.2}, {:.2})  goal ({:.2}, {:.2})  \
             crosses at y {y:.2}  {}",
            s[0],
            s[1],
            g[0],
            g[1],
            if clear { "straight" } else { "detour" }
        );
    }
    println!(
        "{} of {} episodes need a detour: {blocked:?}",
        blocked.len(),
        episodes.len()
    );
    Ok(())
}
