//! The fixed evaluation protocol shared by every planner and policy.
//!
//! Episode `i` of a (task, domain) pair uses seed `EVAL_SEED_BASE + i`. From
//! the reset state the scripted expert (seeded by the same seed, noise
//! included) acts for [`GOAL_OFFSET`] steps; the state reached there and its
//! frame are the goal. The evaluated agent starts from the reset state and
//! has [`BUDGET`] steps to meet the goal, judged on the physical state by the
//! task's test applied to the goal state:
//!
//! * `reach`: agent centre within 0.45 of the goal agent position;
//! * `push`, `sort`: the task's object within the task's position tolerance
//!   of its goal position, and the agent within [`AGENT_TOL`];
//! * `pusht`: the T within 0.5 and 0.3 rad of its goal pose, and the agent
//!   within [`AGENT_TOL`].

use crate::domain::Domain;
use crate::env::Env;
use crate::expert::{Expert, ExpertConfig};
use crate::scene::{Goal, ObjectTarget, PointTarget, SimState};
use crate::tasks::{REACH_TOL, Task};
use serde::{Deserialize, Serialize};

/// First seed of the evaluation episodes (far from recording seeds).
pub const EVAL_SEED_BASE: u64 = 1_000_000_000;
/// Steps between the start state and the goal on the expert trajectory.
pub const GOAL_OFFSET: u32 = 25;
/// Steps the evaluated agent may take.
pub const BUDGET: u32 = 50;
/// Agent position tolerance of object tasks' evaluation goals.
pub const AGENT_TOL: f32 = 0.75;

/// One evaluation episode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalEpisode {
    /// Task.
    pub task: Task,
    /// Embodiment.
    pub domain: Domain,
    /// Episode seed (reset the environment with it to get the start state).
    pub seed: u64,
    /// Frame side.
    pub size: u32,
    /// Natural-language instruction of the underlying task episode.
    pub instruction: String,
    /// State at the start.
    pub start_state: SimState,
    /// Frame at the start (RGB).
    pub start_frame: Vec<u8>,
    /// State the expert reached after [`GOAL_OFFSET`] steps.
    pub goal_state: SimState,
    /// Frame of the goal state (RGB) — what the planner is given.
    pub goal_frame: Vec<u8>,
    /// The success test.
    pub goal: Goal,
    /// Step budget.
    pub budget: u32,
    /// The expert's actions from start to goal (for reference baselines).
    pub expert_actions: Vec<Vec<f32>>,
}

/// Outcome of one evaluation episode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOutcome {
    /// Whether the goal was met within the budget.
    pub success: bool,
    /// Steps taken (up to the first success, or the budget).
    pub steps: u32,
    /// Distance to the goal at the end (see [`Goal::distance`]).
    pub final_distance: f32,
}

/// The evaluation goal derived from the goal state, for `task`.
pub fn goal_from_state(env: &Env, goal_state: &SimState) -> Goal {
    let native = env.layout().goal.clone();
    match (env.task(), native.object) {
        (Task::Reach, _) | (_, None) => Goal {
            agent: Some(PointTarget {
                pos: goal_state.agent.pos,
                tol: REACH_TOL,
            }),
            object: None,
        },
        (_, Some(t)) => {
            let o = goal_state.objects[t.index];
            Goal {
                agent: Some(PointTarget {
                    pos: goal_state.agent.pos,
                    tol: AGENT_TOL,
                }),
                object: Some(ObjectTarget {
                    pos: o.pos,
                    angle: t.angle.map(|_| o.angle),
                    ..t
                }),
            }
        }
    }
}

/// The first `n_episodes` evaluation episodes of (`task`, `domain`) with
/// frames of `size` x `size`. The same arguments always give the same
/// episodes.
pub fn eval_protocol(
    task: Task,
    domain: Domain,
    n_episodes: usize,
    size: u32,
) -> anyhow::Result<Vec<EvalEpisode>> {
    let mut env = Env::new(task, domain, EVAL_SEED_BASE, size)?;
    let mut out = Vec::with_capacity(n_episodes);
    for i in 0..n_episodes {
        let seed = EVAL_SEED_BASE + i as u64;
        env.reset(seed);
        let start_state = env.state().clone();
        let start_frame = env.render();
        let mut expert = Expert::new(ExpertConfig::default(), seed);
        let mut expert_actions = Vec::with_capacity(GOAL_OFFSET as usize);
        for _ in 0..GOAL_OFFSET {
            let a = expert.act(&env);
            let info = env.step(&a)?;
            expert_actions.push(info.action);
        }
        let goal_state = env.state().clone();
        let goal_frame = env.render();
        let goal = goal_from_state(&env, &goal_state);
        out.push(EvalEpisode {
            task,
            domain,
            seed,
            size,
            instruction: env.instruction().to_string(),
            start_state,
            start_frame,
            goal_state,
            goal_frame,
            goal,
            budget: BUDGET,
            expert_actions,
        });
    }
    Ok(out)
}

impl EvalEpisode {
    /// An environment at the episode's start state, with its evaluation goal
    /// and budget set.
    pub fn env(&self) -> anyhow::Result<Env> {
        let mut env = Env::new(self.task, self.domain, self.seed, self.size)?;
        env.set_goal(self.goal.clone());
        env.set_max_steps(self.budget);
        Ok(env)
    }

    /// Runs `policy` (given the environment, from which it may render the
    /// current frame) for at most the budget and reports the outcome. The
    /// episode stops at the first success.
    pub fn run<F: FnMut(&mut Env) -> anyhow::Result<Vec<f32>>>(
        &self,
        mut policy: F,
    ) -> anyhow::Result<EvalOutcome> {
        let mut env = self.env()?;
        if env.success() {
            return Ok(EvalOutcome {
                success: true,
                steps: 0,
                final_distance: env.goal().distance(env.state()),
            });
        }
        for _ in 0..self.budget {
            let a = policy(&mut env)?;
            let info = env.step(&a)?;
            if info.success {
                return Ok(EvalOutcome {
                    success: true,
                    steps: info.step,
                    final_distance: info.goal_distance,
                });
            }
        }
        Ok(EvalOutcome {
            success: false,
            steps: self.budget,
            final_distance: env.goal().distance(env.state()),
        })
    }
}
