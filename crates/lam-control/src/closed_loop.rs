//! Closed-loop MPC: a per-episode session that turns observations into actions (its use on
//! the simulated suite's protocol is lam-eval's `mpc`).
//!
//! [`MpcSession::act`] takes the encoded current frame. It labels the last transition (with
//! the IDM for a latent-action world model, with the action actually sent for an
//! action-conditioned one) so that the history the world model sees carries what happened,
//! caches that history's keys/values, and, when the previous plan's actions are used up,
//! plans toward the goal and queues the first `replan_every` actions of the plan (latent plans
//! go through the inverse controller).
//!
//! Action blocks: with `frameskip` k > 1 one world-model step spans k environment steps. The
//! session then sees a frame every k steps, labels the transition between two such frames,
//! plans over blocks of k robot actions (`k A` numbers per step) and returns a whole block per
//! call, which the caller executes before it encodes the next frame. With `act_steps` r below k
//! (a divisor of it) it returns the first r actions of the planned block and plans again from
//! the frame reached after them; the session keeps the frames of every call, so the history it
//! labels and feeds the world model stays k steps apart.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{Result, bail, ensure};
use burn::prelude::*;
use lam_model::LatentActionModel;
use lam_model::config::{Conditioning, LamConfig};
use serde::Serialize;

use crate::controller::Controller;
use crate::feasible::{Feasible, Target};
use crate::memory::{EpisodeMemory, MemoryConfig, Transition};
use crate::planner::{Plan, PlannerConfig, PlannerKind, Problem, SearchSpace, plan_ensemble};
use crate::support::Support;
use crate::waypoints::{GoalMap, WaypointGraph};

/// Which space the planner searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Latent actions; the inverse controller turns the first into a robot action.
    Latent,
    /// Robot actions mapped to latents through the controller.
    Action,
    /// Robot actions fed to an action-conditioned world model directly.
    ActionConditioned,
}

impl std::str::FromStr for Mode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "latent" => Self::Latent,
            "action" => Self::Action,
            "action-conditioned" => Self::ActionConditioned,
            _ => {
                bail!("unknown search space `{s}` (expected latent, action or action-conditioned)")
            }
        })
    }
}

/// Environment steps per world-model step k of a model: the width of the actions it takes
/// (the controller's input for a latent-action model, the latent width of an action-conditioned
/// one) over the robot's action width `action_dim`. Errors when it is not a whole number.
pub fn frameskip_of(
    cfg: &LamConfig,
    controller: Option<&Controller>,
    action_dim: usize,
) -> Result<usize> {
    let model_actions = match (controller, cfg.model.conditioning) {
        (_, Conditioning::Action) => cfg.model.latent_dim,
        (Some(c), _) => c.action_dim(),
        (None, _) => action_dim,
    };
    ensure!(
        action_dim > 0 && model_actions % action_dim == 0,
        "the model takes {model_actions}-D actions, not a whole number of {action_dim}-D robot \
         actions"
    );
    Ok(model_actions / action_dim)
}

/// A further world model of an ensemble (see [`Agent::ensemble`]): its config, model and, for
/// the latent search spaces, its own controller.
#[derive(Clone, Copy)]
pub struct Member<'a> {
    pub cfg: &'a LamConfig,
    pub lam: &'a LatentActionModel,
    pub controller: Option<&'a Controller>,
}

/// An MPC agent: the world model, how its actions map to the robot, and the planner.
#[derive(Clone)]
pub struct Agent<'a> {
    pub cfg: &'a LamConfig,
    pub lam: &'a LatentActionModel,
    /// Needed by [`Mode::Latent`] and [`Mode::Action`].
    pub controller: Option<&'a Controller>,
    pub planner: PlannerConfig,
    pub mode: Mode,
    /// World-model steps (action blocks) executed per plan.
    pub replan_every: usize,
    /// Environment steps executed per [`MpcSession::act`] call: 0 or `frameskip` return whole
    /// blocks (`replan_every` of them per plan); a divisor of `frameskip` below it returns that
    /// many actions of the plan's first block and plans again at the next call (a receding
    /// horizon within the block; the history the world model sees stays `frameskip` apart).
    pub act_steps: usize,
    /// Further world models that score every candidate beside the agent's own (each with its
    /// own history labels and controller; the cost is the mean over all): runs of one recipe
    /// with other seeds, whose errors differ. Sampling planners, robot-action search spaces.
    pub ensemble: Vec<Member<'a>>,
    /// Environment steps per world-model step k (1: one action per step); the world model,
    /// controller and planner work on blocks of k robot actions.
    pub frameskip: usize,
    /// Bounds of one robot action (A numbers; a block repeats them k times).
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    /// Search one robot action per block, held for its `frameskip` steps, instead of
    /// `frameskip` free ones (robot-action search spaces only).
    pub hold_actions: bool,
    /// Aim each plan at a waypoint on the training data's path to the goal (see
    /// [`crate::waypoints`]) instead of at the goal itself.
    pub waypoints: Option<&'a WaypointGraph>,
    /// Penalise predicted transitions the unlabeled video never shows (sampling planners;
    /// see [`crate::support`]).
    pub support: Option<Support<'a>>,
    /// Replace each planned latent by the nearest one the unlabeled video shows from frames
    /// like the one it starts at (sampling planners; see [`crate::feasible`]).
    pub feasible: Option<Feasible<'a>>,
    /// Correct every rollout by the blocks this episode has executed and the frames they led
    /// to (robot-action search spaces, sampling planners; see [`crate::memory`]).
    pub memory: Option<MemoryConfig>,
}

/// One action block (or its first `act_steps` actions) from [`MpcSession::act`].
#[derive(Clone, Debug)]
pub struct ActStep {
    /// The robot actions to execute back to back: a block of `frameskip` (`k A` numbers), or
    /// its first `act_steps`.
    pub action: Vec<f32>,
    /// Whether a new plan was made for this call.
    pub planned: bool,
    /// Milliseconds spent planning in this call (0 when the plan was reused).
    pub plan_ms: f64,
    /// Confidence of the plan this action comes from.
    pub confidence: f32,
    /// Cost of that plan.
    pub cost: f32,
    /// The frame the world model predicts at the end of this block, `[1, N, D]` (`frameskip`
    /// steps after the frame acted on, also when fewer of its actions are returned).
    pub predicted: Tensor<3>,
}

impl ActStep {
    /// The block as `k` actions of `a` numbers each, in execution order.
    pub fn actions(&self, a: usize) -> Vec<Vec<f32>> {
        self.action.chunks(a.max(1)).map(|c| c.to_vec()).collect()
    }
}

impl<'a> Agent<'a> {
    /// Model `m` of the ensemble: 0 the agent's own, then [`Agent::ensemble`]'s.
    fn member(&self, m: usize) -> Member<'a> {
        match m {
            0 => Member {
                cfg: self.cfg,
                lam: self.lam,
                controller: self.controller,
            },
            m => self.ensemble[m - 1],
        }
    }

    /// Environment steps per [`MpcSession::act`] call (see [`Agent::act_steps`]).
    pub fn steps_per_call(&self) -> usize {
        match self.act_steps {
            0 => self.frameskip.max(1),
            r => r,
        }
    }

    /// Bounds of what the planner searches per step: one robot action when actions are held
    /// through a block, else the robot action bounds repeated `frameskip` times.
    pub fn block_bounds(&self) -> (Vec<f32>, Vec<f32>) {
        let k = self.frameskip.max(1) / self.repeat();
        (self.low.repeat(k), self.high.repeat(k))
    }

    /// How many times a searched action is repeated to make a block.
    fn repeat(&self) -> usize {
        if self.hold_actions {
            self.frameskip.max(1)
        } else {
            1
        }
    }

    /// What the planner searches, from the agent's [`Mode`] (the one place that maps it).
    pub fn search_space(&self) -> SearchSpace<'a> {
        self.search_space_with(self.controller)
    }

    /// [`Agent::search_space`] through `controller` (an ensemble member's).
    fn search_space_with(&self, controller: Option<&'a Controller>) -> SearchSpace<'a> {
        let robot_actions = |controller| {
            let (low, high) = self.block_bounds();
            SearchSpace::Action {
                low,
                high,
                controller,
                repeat: self.repeat(),
            }
        };
        match self.mode {
            Mode::Latent => SearchSpace::Latent {
                dim: self.cfg.model.latent_dim,
            },
            Mode::Action => robot_actions(controller),
            Mode::ActionConditioned => robot_actions(None),
        }
    }

    /// The world model's action and the robot's block for one searched step `x` `[1, w]`
    /// (expanded): a latent is turned into robot actions by the inverse controller, robot
    /// actions into a latent by the controller, and an action-conditioned model takes the
    /// robot actions themselves. `pooled` gives the frame acted on, for frame-conditioned
    /// controllers.
    fn latent_and_action(
        &self,
        x: Tensor<2>,
        pooled: impl Fn() -> Option<Tensor<2>>,
    ) -> (Tensor<2>, Tensor<2>) {
        match (self.mode, self.controller) {
            (Mode::Latent, Some(c)) => (x.clone(), c.to_action(x, pooled())),
            (Mode::Action, Some(c)) => (c.to_latent(x.clone(), pooled()), x),
            _ => (x.clone(), x),
        }
    }

    /// Whether a sampling planner searches robot actions: what the ensemble and the episode
    /// memory need (both score or correct candidates of robot actions).
    fn samples_robot_actions(&self) -> bool {
        self.planner.kind != PlannerKind::Gradient && self.mode != Mode::Latent
    }

    /// Checks that the pieces fit together.
    pub fn check(&self) -> Result<()> {
        self.planner.validate()?;
        ensure!(self.frameskip >= 1, "frameskip must be at least 1");
        ensure!(
            self.act_steps <= self.frameskip && self.frameskip % self.steps_per_call() == 0,
            "act steps must divide the block of {} steps, got {}",
            self.frameskip,
            self.act_steps
        );
        let block = self.low.len() * self.frameskip;
        let conditioning = self.cfg.model.conditioning;
        match self.mode {
            Mode::ActionConditioned => ensure!(
                conditioning == Conditioning::Action,
                "the action-conditioned search space needs a world model trained with \
                 model.conditioning = \"action\"; this one is conditioned on {conditioning:?}"
            ),
            Mode::Latent | Mode::Action => {
                ensure!(
                    conditioning == Conditioning::Latent,
                    "search space {:?} needs a latent-action world model; this one is \
                     action-conditioned (use the action-conditioned space)",
                    self.mode
                );
                let Some(c) = self.controller else {
                    bail!(
                        "search space {:?} needs a controller (lam control fit)",
                        self.mode
                    )
                };
                ensure!(
                    c.latent_dim() == self.cfg.model.latent_dim,
                    "controller maps to {}-D latents but the world model takes {}-D",
                    c.latent_dim(),
                    self.cfg.model.latent_dim
                );
                ensure!(
                    c.frame_dim() == 0 || c.frame_dim() == self.cfg.model.embed_dim,
                    "controller reads {}-D frames but the world model's frames are {}-D",
                    c.frame_dim(),
                    self.cfg.model.embed_dim
                );
                ensure!(
                    c.action_dim() == block,
                    "controller takes {}-D actions but a block of {} actions of {} is {block}",
                    c.action_dim(),
                    self.frameskip,
                    self.low.len()
                );
            }
        }
        if let Some(sup) = self.support {
            ensure!(
                self.planner.kind != PlannerKind::Gradient,
                "the support critic's penalty is applied by the sampling planners (cem, icem, \
                 mppi, random), not by the gradient planner"
            );
            ensure!(
                sup.critic.frame_dim() == self.cfg.model.embed_dim,
                "the support critic reads {}-D frames; the world model's are {}-D",
                sup.critic.frame_dim(),
                self.cfg.model.embed_dim
            );
            ensure!(
                sup.weight.is_finite() && sup.weight >= 0.0,
                "support weight must be a finite number >= 0, got {}",
                sup.weight
            );
        }
        if let Some(f) = self.feasible {
            ensure!(
                self.planner.kind != PlannerKind::Gradient,
                "the feasibility projection is applied by the sampling planners (cem, icem, \
                 mppi, random), not by the gradient planner"
            );
            ensure!(
                self.mode != Mode::ActionConditioned,
                "the feasibility projection maps latent actions; an action-conditioned world \
                 model has none"
            );
            let (what, width) = match f.target {
                Target::Latent => ("latents", self.cfg.model.latent_dim),
                Target::Change => ("frame changes", self.cfg.model.embed_dim),
            };
            ensure!(
                f.set.frame_dim() == self.cfg.model.embed_dim && f.set.latent_dim() == width,
                "the feasible set holds {}-D frames and {}-D rows to project; the world model's \
                 frames are {}-D and its {what} {width}-D",
                f.set.frame_dim(),
                f.set.latent_dim(),
                self.cfg.model.embed_dim,
            );
            ensure!(
                f.neighbours >= 1,
                "feasible neighbours must be at least 1, got 0"
            );
        }
        if self.mode == Mode::ActionConditioned {
            ensure!(
                self.cfg.model.latent_dim == block,
                "the action-conditioned world model takes {}-D actions but a block of {} \
                 actions of {} is {block}",
                self.cfg.model.latent_dim,
                self.frameskip,
                self.low.len()
            );
        }
        if let Some(m) = self.memory {
            m.validate()?;
            ensure!(
                self.samples_robot_actions(),
                "the episode memory corrects rollouts of the sampling planners (cem, icem, mppi, \
                 random) in a robot-action search space"
            );
        }
        if !self.ensemble.is_empty() {
            ensure!(
                self.samples_robot_actions(),
                "an ensemble scores candidates of the sampling planners (cem, icem, mppi, \
                 random) in a robot-action search space"
            );
        }
        for (i, m) in self.ensemble.iter().enumerate() {
            ensure!(
                m.cfg.model.conditioning == self.cfg.model.conditioning
                    && m.cfg.model.embed_dim == self.cfg.model.embed_dim
                    && m.cfg.model.latent_dim == self.cfg.model.latent_dim,
                "ensemble member {}: conditioned on {:?} with {}-D frames and {}-D actions, \
                 the agent's model on {:?} with {}-D and {}-D",
                i + 1,
                m.cfg.model.conditioning,
                m.cfg.model.embed_dim,
                m.cfg.model.latent_dim,
                self.cfg.model.conditioning,
                self.cfg.model.embed_dim,
                self.cfg.model.latent_dim
            );
            if self.mode == Mode::Action {
                let Some(c) = m.controller else {
                    bail!("ensemble member {} needs its controller", i + 1)
                };
                ensure!(
                    c.action_dim() == block
                        && c.latent_dim() == m.cfg.model.latent_dim
                        && (c.frame_dim() == 0 || c.frame_dim() == m.cfg.model.embed_dim),
                    "ensemble member {}: its controller maps {}-D actions to {}-D latents; the \
                     block is {block}-D and the model's latents {}-D",
                    i + 1,
                    c.action_dim(),
                    c.latent_dim(),
                    m.cfg.model.latent_dim
                );
            }
        }
        ensure!(
            self.low.len() == self.high.len() && !self.low.is_empty(),
            "action bounds: {} lows, {} highs",
            self.low.len(),
            self.high.len()
        );
        Ok(())
    }

    /// A session toward `goal` (`[1, N, D]`); `seed` varies the planner's sampling.
    pub fn session(&'a self, goal: Tensor<3>, seed: u64) -> MpcSession<'a> {
        let members = 1 + self.ensemble.len();
        MpcSession {
            agent: self,
            goal: self.lam.normalize(goal.clone()),
            member_goals: self
                .ensemble
                .iter()
                .map(|m| m.lam.normalize(goal.clone()))
                .collect(),
            goal_map: None,
            seed,
            step: 0,
            seen: VecDeque::new(),
            labels: vec![VecDeque::new(); members],
            executed: VecDeque::new(),
            transitions: Vec::new(),
            remembered_to: 0,
            queue: VecDeque::new(),
            plans: 0,
        }
    }
}

/// One episode of MPC toward a fixed goal. Not `Send`-bound to a thread: one per connection
/// or episode.
pub struct MpcSession<'a> {
    agent: &'a Agent<'a>,
    goal: Tensor<3>,
    /// The goal as each further ensemble member standardises it.
    member_goals: Vec<Tensor<3>>,
    /// With waypoints: the data's paths to `goal` (made at the first plan).
    goal_map: Option<GoalMap>,
    seed: u64,
    /// Environment steps executed so far (the step of the frame the next call gets).
    step: usize,
    /// Frames seen (`[1, N, D]`, as encoded) by the step they were seen at, as far back as
    /// the world model's history reaches (`window` blocks).
    seen: VecDeque<(usize, Tensor<3>)>,
    /// Per model (the agent's, then the ensemble's): the latent or action block of the
    /// transition ending at a step (`[1, d]`), once made.
    labels: Vec<VecDeque<(usize, Tensor<2>)>>,
    /// The robot action executed at each step, as far back as the history reaches.
    executed: VecDeque<(usize, Vec<f32>)>,
    /// With [`Agent::memory`]: the last [`MemoryConfig::capacity`] blocks executed (a block of
    /// `frameskip` steps ending at each call's step), with the frames they started at and
    /// reached.
    transitions: Vec<Transition>,
    /// The step the last remembered block ended at (0: none yet; a block ends at step k or
    /// later).
    remembered_to: usize,
    /// Blocks of the current plan still to execute, with their predicted frames and the
    /// plan's confidence and cost.
    queue: VecDeque<(Vec<f32>, Tensor<3>, f32, f32)>,
    plans: usize,
}

impl MpcSession<'_> {
    /// Plans made so far.
    pub fn plans(&self) -> usize {
        self.plans
    }

    /// Blocks the episode memory holds now (0 without [`Agent::memory`]).
    pub fn remembered(&self) -> usize {
        self.transitions.len()
    }

    /// The frame seen at `step`, if kept.
    fn frame_at(&self, step: usize) -> Option<&Tensor<3>> {
        self.seen.iter().find(|(t, _)| *t == step).map(|(_, f)| f)
    }

    /// The label of the block from `end - k` to `end` (made once and kept): the IDM's latent
    /// between the two frames, or the `k` robot actions executed for an action-conditioned
    /// model.
    fn label_to(&mut self, m: usize, end: usize, from: &Tensor<3>, to: &Tensor<3>) -> Tensor<2> {
        if let Some((_, z)) = self.labels[m].iter().find(|(t, _)| *t == end) {
            return z.clone();
        }
        let agent = self.agent;
        let k = agent.frameskip.max(1);
        let z = match agent.mode {
            Mode::ActionConditioned => {
                let a: Vec<f32> = self
                    .executed
                    .iter()
                    .filter(|(t, _)| *t + k >= end && *t < end)
                    .flat_map(|(_, a)| a.iter().copied())
                    .collect();
                let dim = a.len();
                Tensor::<2>::from_data(TensorData::new(a, [1, dim]), &to.device())
            }
            Mode::Latent | Mode::Action => agent
                .member(m)
                .lam
                .infer(from.clone().mean_dim(1), to.clone().mean_dim(1), &[])
                .z
                .squeeze_dim::<2>(1),
        };
        self.labels[m].push_back((end, z.clone()));
        z
    }

    /// The history before the current frame as model `m` sees it (standardised by it),
    /// `frameskip` steps apart: up to `window` frames `[1, h, N, D]` and the label of the block
    /// leaving each `[1, h, d]` (the last one ends at the current frame `s`, standardised).
    /// None at the first step.
    fn history(
        &mut self,
        m: usize,
        s: &Tensor<3>,
        window: usize,
    ) -> Option<(Tensor<4>, Tensor<3>)> {
        let k = self.agent.frameskip.max(1);
        let lam = self.agent.member(m).lam;
        let mut frames = Vec::new();
        let mut labels = Vec::new();
        let mut later = s.clone();
        let mut end = self.step;
        while frames.len() < window && end >= k {
            let Some(f) = self.frame_at(end - k).cloned() else {
                break;
            };
            let f = lam.normalize(f);
            labels.push(self.label_to(m, end, &f, &later));
            frames.push(f.clone());
            later = f;
            end -= k;
        }
        if frames.is_empty() {
            return None;
        }
        frames.reverse();
        labels.reverse();
        Some((Tensor::stack::<4>(frames, 1), Tensor::stack::<3>(labels, 1)))
    }

    /// Remembers the block of `frameskip` steps that ends at the current step, reaching `now`
    /// (encoder tokens), when its first frame and all its actions were kept.
    fn remember(&mut self, now: &Tensor<3>) {
        let Some(cfg) = self.agent.memory else {
            return;
        };
        let k = self.agent.frameskip.max(1);
        let end = self.step;
        if end < k || self.remembered_to == end {
            return;
        }
        let Some(from) = self.frame_at(end - k).cloned() else {
            return;
        };
        let actions: Vec<f32> = (end - k..end)
            .filter_map(|t| self.executed.iter().find(|(s, _)| *s == t))
            .flat_map(|(_, a)| a.iter().copied())
            .collect();
        if actions.len() != k * self.agent.low.len() {
            return;
        }
        let to = now.clone();
        self.transitions.push(Transition { from, actions, to });
        let over = self.transitions.len().saturating_sub(cfg.capacity);
        self.transitions.drain(..over);
        self.remembered_to = end;
    }

    /// The episode memory of model `m` (None without [`Agent::memory`] or before a block).
    fn memory_of(&self, m: usize) -> Option<EpisodeMemory> {
        let cfg = self.agent.memory?;
        EpisodeMemory::new(self.agent.member(m).lam, &self.transitions, cfg)
    }

    /// The next actions given the current frame's encoder tokens `[1, N, D]`: a block, or its
    /// first [`Agent::steps_per_call`] actions; the caller executes them all before the next
    /// call.
    pub fn act(&mut self, s: Tensor<3>) -> Result<ActStep> {
        let agent = self.agent;
        let cfg = agent.cfg;
        let raw = s;
        self.remember(&raw);
        let s = agent.lam.normalize(raw.clone());
        let [one, n, d] = s.dims();
        let [_, gn, gd] = self.goal.dims();
        ensure!(
            one == 1 && n == gn && d == gd,
            "frame tokens {:?} do not match the goal's [1, {gn}, {gd}]",
            s.dims()
        );
        let window = cfg.model.frames - 1;
        let wm = &agent.lam.world_model;
        let device = s.device();
        let k = agent.frameskip.max(1);
        let per_call = agent.steps_per_call();
        let mut planned = false;
        let mut plan_ms = 0.0;
        if self.queue.is_empty() {
            planned = true;
            let cache = self
                .history(0, &s, window)
                .map(|(f, z)| wm.prefill(f, z, window));
            // The ensemble's further models, each from its own history.
            let mut member_caches = Vec::new();
            for m in 1..=agent.ensemble.len() {
                let member = agent.member(m);
                let w = member.cfg.model.frames - 1;
                let sm = member.lam.normalize(raw.clone());
                let c = self
                    .history(m, &sm, w)
                    .map(|(f, z)| member.lam.world_model.prefill(f, z, w));
                member_caches.push((member, w, sm, c, self.memory_of(m)));
            }
            let others: Vec<(Problem, SearchSpace)> = member_caches
                .iter()
                .zip(&self.member_goals)
                .map(|((member, w, sm, c, memory), goal)| {
                    (
                        Problem {
                            world_model: &member.lam.world_model,
                            cache: c.as_ref(),
                            window: *w,
                            history: None,
                            use_cache: true,
                            host: crate::rollout::HostRollout::new(agent.planner.precision),
                            current: sm.clone(),
                            goal: goal.clone(),
                            support: None,
                            feasible: None,
                            memory: memory.clone(),
                        },
                        agent.search_space_with(member.controller),
                    )
                })
                .collect();
            let target = match agent.waypoints {
                Some(graph) => {
                    if self.goal_map.is_none() {
                        self.goal_map = Some(graph.toward(&self.goal)?);
                    }
                    let map = self.goal_map.as_ref().expect("just made");
                    graph
                        .waypoint(map, &s)?
                        .unwrap_or_else(|| self.goal.clone())
                }
                None => self.goal.clone(),
            };
            let problem = Problem {
                world_model: wm,
                cache: cache.as_ref(),
                window,
                history: None,
                use_cache: true,
                host: crate::rollout::HostRollout::new(agent.planner.precision),
                current: s.clone(),
                goal: target,
                support: agent.support,
                feasible: agent.feasible,
                memory: self.memory_of(0),
            };
            let space = agent.search_space();
            let t0 = Instant::now();
            let mut pcfg = agent.planner.clone();
            pcfg.seed = agent.planner.seed ^ (self.seed.wrapping_mul(31) + self.plans as u64);
            let p: Plan = plan_ensemble(&pcfg, &problem, &space, &others);
            plan_ms = t0.elapsed().as_secs_f64() * 1000.0;
            self.plans += 1;
            let blocks = if per_call < k {
                1
            } else {
                agent.replan_every.clamp(1, pcfg.horizon)
            };
            // Predicted frames along the plan, for the planning error.
            let mut cache_p = cache;
            let mut frame_p = s.clone();
            for b in 0..blocks {
                let searched = space.expand(p.step(b));
                let width = searched.len();
                let x = Tensor::<2>::from_data(TensorData::new(searched, [1, width]), &device);
                // The frame this step acts on, pooled, for frame-conditioned controllers.
                let pooled = || Some(frame_p.clone().mean_dim(1).squeeze_dim::<2>(1));
                let (z, action) = agent.latent_and_action(x, pooled);
                let (pred, next) = wm.step(cache_p.as_ref(), frame_p, z, window);
                cache_p = Some(next);
                frame_p = pred.clone();
                let mut a: Vec<f32> = action
                    .into_data()
                    .try_into_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("reading the planned action: {e:?}"))?;
                let n = agent.low.len();
                for (i, v) in a.iter_mut().enumerate() {
                    *v = v.clamp(agent.low[i % n], agent.high[i % n]);
                }
                self.queue.push_back((a, pred, p.confidence, p.cost));
            }
        }
        let (mut action, predicted, confidence, cost) =
            self.queue.pop_front().expect("a plan filled the queue");
        if per_call < k {
            // The rest of the block is planned again from the next frame.
            action.truncate(per_call * agent.low.len());
            self.queue.clear();
        }
        // Keep what the longest history of the models can reach: its blocks back from the next
        // call's step.
        self.seen.push_back((self.step, raw));
        let steps = action.len() / agent.low.len().max(1);
        for (i, a) in action.chunks(agent.low.len().max(1)).enumerate() {
            self.executed.push_back((self.step + i, a.to_vec()));
        }
        self.step += steps;
        let reach = (0..=agent.ensemble.len())
            .map(|m| agent.member(m).cfg.model.frames - 1)
            .max()
            .unwrap_or(window);
        let oldest = self.step.saturating_sub(reach * k);
        self.seen.retain(|(t, _)| *t >= oldest);
        for labels in &mut self.labels {
            labels.retain(|(t, _)| *t > oldest);
        }
        self.executed.retain(|(t, _)| *t >= oldest);
        Ok(ActStep {
            action,
            planned,
            plan_ms,
            confidence,
            cost,
            predicted,
        })
    }
}
