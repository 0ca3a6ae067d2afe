//! Policies that generate data: the scripted expert, a random exploration
//! policy, and a mix of the two.

use crate::domain::Domain;
use crate::env::Env;
use crate::expert::{Expert, ExpertConfig};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which policy drives a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyKind {
    /// The scripted expert with noise.
    Expert,
    /// Random exploration ([`RandomPolicy`]).
    Random,
    /// The expert, interrupted by random segments ([`MixedPolicy`]).
    Mixed,
    /// Goal-seeking play: full speed straight at random points ([`SeekPolicy`]).
    Seek,
}

impl PolicyKind {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Expert => "expert",
            PolicyKind::Random => "random",
            PolicyKind::Mixed => "mixed",
            PolicyKind::Seek => "seek",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "expert" => Ok(PolicyKind::Expert),
            "random" => Ok(PolicyKind::Random),
            "mixed" => Ok(PolicyKind::Mixed),
            "seek" => Ok(PolicyKind::Seek),
            _ => {
                anyhow::bail!("unknown policy {s:?}; expected one of: expert, random, mixed, seek")
            }
        }
    }
}

/// Random exploration: a uniform action from the action space, held for a
/// uniform number of steps in `1..=max_hold` [16], so that the agent travels
/// and bumps into things instead of jittering in place. With probability
/// `full_speed` [0.5] a velocity action is stretched to the boundary of the
/// box (full speed in its direction): long full-speed pushes press the agent
/// into walls and objects, which world models must see to learn that walls
/// stop it (a model trained without them predicts the agent through walls,
/// and planners exploit that).
pub struct RandomPolicy {
    rng: Rng,
    max_hold: u32,
    full_speed: f32,
    current: Vec<f32>,
    left: u32,
}

impl RandomPolicy {
    /// A random policy whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self::with_settings(seed, 16, 0.5)
    }

    /// A random policy holding each action up to `max_hold` steps and stretching it to full
    /// speed with probability `full_speed`.
    pub fn with_settings(seed: u64, max_hold: u32, full_speed: f32) -> Self {
        Self {
            rng: Rng::derive(seed, 4),
            max_hold: max_hold.max(1),
            full_speed,
            current: vec![],
            left: 0,
        }
    }

    /// A random action for `env`.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        if self.left == 0 || self.current.len() != env.action_space().dim {
            let space = env.action_space();
            self.current = space
                .low
                .iter()
                .zip(&space.high)
                .map(|(&l, &h)| self.rng.uniform(l, h))
                .collect();
            // Only Cartesian velocity actions stretch (a polar action's angle must not).
            let cartesian = matches!(env.domain(), Domain::Robot | Domain::Human);
            if cartesian && self.rng.chance(self.full_speed) {
                let reach = self
                    .current
                    .iter()
                    .zip(space.low.iter().zip(&space.high))
                    .map(|(&a, (&l, &h))| (a - 0.5 * (l + h)).abs() / (0.5 * (h - l)))
                    .fold(0.0f32, f32::max);
                if reach > 1e-3 {
                    for (a, (&l, &h)) in self
                        .current
                        .iter_mut()
                        .zip(space.low.iter().zip(&space.high))
                    {
                        let c = 0.5 * (l + h);
                        *a = (c + (*a - c) / reach).clamp(l, h);
                    }
                }
            }
            self.left = 1 + self.rng.below(self.max_hold as usize) as u32;
        }
        self.left -= 1;
        self.current.clone()
    }
}

/// The expert, except that at every step a random segment of 3 to 12 steps
/// starts with probability `switch_prob` [0.06].
pub struct MixedPolicy {
    expert: Expert,
    random: RandomPolicy,
    rng: Rng,
    switch_prob: f32,
    random_left: u32,
}

impl MixedPolicy {
    /// A mixed policy whose streams are fixed by `seed`.
    pub fn new(cfg: ExpertConfig, seed: u64) -> Self {
        Self {
            expert: Expert::new(cfg, seed),
            random: RandomPolicy::new(seed),
            rng: Rng::derive(seed, 5),
            switch_prob: 0.06,
            random_left: 0,
        }
    }

    /// The action for `env`.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        if self.random_left == 0 && self.rng.chance(self.switch_prob) {
            self.random_left = 3 + self.rng.below(10) as u32;
        }
        if self.random_left > 0 {
            self.random_left -= 1;
            self.random.act(env)
        } else {
            self.expert.act(env)
        }
    }
}

/// Most steps [`SeekPolicy`] heads for one point.
const SEEK_MAX_HOLD: u32 = 30;

/// Goal-seeking play: the agent heads at full speed in a straight line for a point drawn
/// uniformly on the arena's floor, for up to 30 steps (`SEEK_MAX_HOLD`) or until it is within
/// 0.3 units of it, then draws the next point. A point behind a wall presses the agent into
/// the wall and slides it along, as a naive controller heading for a goal would: the
/// contacts a planner meets on its way to a goal, which world models and controllers must
/// see in their labeled data. Needs a Cartesian velocity action (the robot and human
/// domains); elsewhere it acts as [`RandomPolicy`].
pub struct SeekPolicy {
    rng: Rng,
    target: [f32; 2],
    left: u32,
    fallback: RandomPolicy,
}

impl SeekPolicy {
    /// A seeking policy whose points are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::derive(seed, 6),
            target: [0.0, 0.0],
            left: 0,
            fallback: RandomPolicy::new(seed),
        }
    }

    /// The action for `env`.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        if !matches!(env.domain(), Domain::Robot | Domain::Human) {
            return self.fallback.act(env);
        }
        let pos = env.state().agent.pos;
        let gap = [self.target[0] - pos[0], self.target[1] - pos[1]];
        let dist = gap[0].hypot(gap[1]);
        if self.left == 0 || dist < 0.3 {
            self.target = crate::tasks::floor_point(&mut self.rng, 0.3);
            self.left = 1 + self.rng.below(SEEK_MAX_HOLD as usize) as u32;
            return self.act(env);
        }
        self.left -= 1;
        let max = env.domain().agent().max_speed;
        env.domain()
            .action_from_velocity([gap[0] / dist * max, gap[1] / dist * max])
    }
}

/// Any of the data-generating policies behind one interface.
pub enum Policy {
    /// See [`Expert`].
    Expert(Expert),
    /// See [`RandomPolicy`].
    Random(RandomPolicy),
    /// See [`MixedPolicy`].
    Mixed(MixedPolicy),
    /// See [`SeekPolicy`].
    Seek(SeekPolicy),
}

impl Policy {
    /// A policy of `kind` for the episode of `seed`.
    pub fn new(kind: PolicyKind, cfg: ExpertConfig, seed: u64) -> Self {
        match kind {
            PolicyKind::Expert => Policy::Expert(Expert::new(cfg, seed)),
            PolicyKind::Random => Policy::Random(RandomPolicy::new(seed)),
            PolicyKind::Mixed => Policy::Mixed(MixedPolicy::new(cfg, seed)),
            PolicyKind::Seek => Policy::Seek(SeekPolicy::new(seed)),
        }
    }

    /// The action for `env`.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        match self {
            Policy::Expert(p) => p.act(env),
            Policy::Random(p) => p.act(env),
            Policy::Mixed(p) => p.act(env),
            Policy::Seek(p) => p.act(env),
        }
    }
}
