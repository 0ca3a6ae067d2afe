//! The environment: one task played by one embodiment, stepped with actions
//! and rendered to RGB frames.

use crate::domain::{ActionSpace, Domain};
use crate::nuisances::{Look, NuisanceConfig, move_distractors};
use crate::render::{Renderer, check_size};
use crate::scene::{Goal, Layout, SimState};
use crate::tasks::Task;
use crate::world::{PhysicsConfig, World};
use serde::{Deserialize, Serialize};

/// Environment settings. Defaults in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvConfig {
    /// Frame side in pixels; even, 16 to 512 [64].
    pub size: u32,
    /// Physics settings [`PhysicsConfig::default`].
    pub physics: PhysicsConfig,
    /// Nuisances; `None` means the domain's default (on for `human`) [None].
    pub nuisances: Option<NuisanceConfig>,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            size: 64,
            physics: PhysicsConfig::default(),
            nuisances: None,
        }
    }
}

/// What a step reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    /// Control steps taken since reset, this one included.
    pub step: u32,
    /// Whether the current goal's success test holds after the step.
    pub success: bool,
    /// Whether the episode has used up its step budget.
    pub truncated: bool,
    /// Distance to the current goal (see [`Goal::distance`]).
    pub goal_distance: f32,
    /// The action after clipping to the action space.
    pub action: Vec<f32>,
}

/// A seeded episode of `task` played by `domain`.
pub struct Env {
    task: Task,
    domain: Domain,
    cfg: EnvConfig,
    nuisances: NuisanceConfig,
    seed: u64,
    layout: Layout,
    look: Look,
    goal: Goal,
    world: World,
    renderer: Renderer,
    state: SimState,
    max_steps: u32,
}

impl Env {
    /// An environment with default settings and frames of `size` x `size`.
    pub fn new(task: Task, domain: Domain, seed: u64, size: u32) -> anyhow::Result<Self> {
        Self::with_config(
            task,
            domain,
            seed,
            EnvConfig {
                size,
                ..Default::default()
            },
        )
    }

    /// An environment with explicit settings, reset to the episode of `seed`.
    pub fn with_config(
        task: Task,
        domain: Domain,
        seed: u64,
        cfg: EnvConfig,
    ) -> anyhow::Result<Self> {
        check_size(cfg.size)?;
        anyhow::ensure!(
            cfg.physics.substeps >= 1 && cfg.physics.control_hz > 0.0,
            "physics config needs substeps >= 1 and control_hz > 0 (got {} and {})",
            cfg.physics.substeps,
            cfg.physics.control_hz
        );
        let nuisances = cfg
            .nuisances
            .clone()
            .unwrap_or_else(|| NuisanceConfig::for_domain(domain));
        let (layout, look, state) = Self::episode(task, domain, &nuisances, seed);
        let world = World::new(&layout, &state, domain.agent(), &cfg.physics);
        let renderer = Renderer::new(cfg.size, &layout, &look, domain.agent().shape);
        Ok(Self {
            task,
            domain,
            nuisances,
            seed,
            goal: layout.goal.clone(),
            max_steps: layout.max_steps,
            layout,
            look,
            world,
            renderer,
            state,
            cfg,
        })
    }

    fn episode(
        task: Task,
        domain: Domain,
        nuisances: &NuisanceConfig,
        seed: u64,
    ) -> (Layout, Look, SimState) {
        let layout = task.layout(domain, seed);
        let (look, distractors) = Look::sample(domain, nuisances, seed);
        let mut state = layout.initial.clone();
        state.distractors = distractors;
        (layout, look, state)
    }

    /// Starts the episode of `seed`: new layout, look and initial state; the
    /// goal becomes the task's own goal again.
    pub fn reset(&mut self, seed: u64) {
        let (layout, look, state) = Self::episode(self.task, self.domain, &self.nuisances, seed);
        self.world = World::new(&layout, &state, self.domain.agent(), &self.cfg.physics);
        self.renderer = Renderer::new(self.cfg.size, &layout, &look, self.domain.agent().shape);
        self.goal = layout.goal.clone();
        self.max_steps = layout.max_steps;
        self.layout = layout;
        self.look = look;
        self.state = state;
        self.seed = seed;
    }

    /// Applies `action` (clipped to the action space; non-finite components
    /// become 0) for one control step. A wrong number of components is an
    /// error.
    pub fn step(&mut self, action: &[f32]) -> anyhow::Result<StepInfo> {
        let action = self.domain.action_space().clip(action)?;
        let cmd = self.domain.velocity_from_action(&action);
        self.world.step(cmd);
        self.world.read(&mut self.state);
        move_distractors(
            &mut self.state.distractors,
            &self.look.distractors,
            1.0 / self.cfg.physics.control_hz,
        );
        self.state.step += 1;
        Ok(StepInfo {
            step: self.state.step,
            success: self.success(),
            truncated: self.state.step >= self.max_steps,
            goal_distance: self.goal.distance(&self.state),
            action,
        })
    }

    /// The current frame as RGB bytes, `size * size * 3`, row-major, top row
    /// first.
    pub fn render(&mut self) -> Vec<u8> {
        let n = self.cfg.size as usize;
        let mut out = vec![0u8; n * n * 3];
        self.renderer.render_into(&self.state, &mut out);
        out
    }

    /// Like [`Env::render`] into a caller's buffer of `size * size * 3` bytes.
    pub fn render_into(&mut self, out: &mut [u8]) {
        self.renderer.render_into(&self.state, out);
    }

    /// Whether the current goal's success test holds.
    pub fn success(&self) -> bool {
        self.goal.satisfied(&self.state)
    }

    /// The physical state (poses and velocities of every moving body).
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Puts every moving body at `state` (from [`Env::state`] of the same
    /// episode). The physics world is rebuilt, so stepping on from a restored
    /// state gives the same result every time.
    pub fn set_state(&mut self, state: &SimState) -> anyhow::Result<()> {
        anyhow::ensure!(
            state.objects.len() == self.layout.objects.len()
                && state.distractors.len() == self.look.distractors.len(),
            "state has {} objects and {} distractors, the episode has {} and {}",
            state.objects.len(),
            state.distractors.len(),
            self.layout.objects.len(),
            self.look.distractors.len()
        );
        self.world = World::new(&self.layout, state, self.domain.agent(), &self.cfg.physics);
        self.state = state.clone();
        Ok(())
    }

    /// The goal the success test checks.
    pub fn goal(&self) -> &Goal {
        &self.goal
    }

    /// Replaces the goal of the success test (used by the evaluation
    /// protocol, whose goals come from expert trajectories). The drawn
    /// markers stay those of the task.
    pub fn set_goal(&mut self, goal: Goal) {
        self.goal = goal;
    }

    /// Overrides the step budget of the episode.
    pub fn set_max_steps(&mut self, max_steps: u32) {
        self.max_steps = max_steps;
    }

    /// Step budget of the episode.
    pub fn max_steps(&self) -> u32 {
        self.max_steps
    }

    /// The natural-language instruction of the episode.
    pub fn instruction(&self) -> &str {
        &self.layout.instruction
    }

    /// Static description of the episode.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Appearance of the episode.
    pub fn look(&self) -> &Look {
        &self.look
    }

    /// The task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The embodiment.
    pub fn domain(&self) -> Domain {
        self.domain
    }

    /// The seed of the current episode.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The settings.
    pub fn config(&self) -> &EnvConfig {
        &self.cfg
    }

    /// Action space of the embodiment.
    pub fn action_space(&self) -> ActionSpace {
        self.domain.action_space()
    }

    /// Frame side in pixels.
    pub fn size(&self) -> u32 {
        self.cfg.size
    }

    /// Seconds per control step.
    pub fn dt(&self) -> f32 {
        1.0 / self.cfg.physics.control_hz
    }

    /// A world for look-ahead, built from the current state (used by the
    /// scripted experts).
    pub(crate) fn scratch_world(&self, state: &SimState) -> World {
        World::new(&self.layout, state, self.domain.agent(), &self.cfg.physics)
    }
}
