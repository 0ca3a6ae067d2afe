//! Policies that generate data: the scripted expert, a random exploration
//! policy, and a mix of the two.

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
}

impl PolicyKind {
    /// Stable lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Expert => "expert",
            PolicyKind::Random => "random",
            PolicyKind::Mixed => "mixed",
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
            _ => anyhow::bail!("unknown policy {s:?}; expected one of: expert, random, mixed"),
        }
    }
}

/// Random exploration: a uniform action from the action space, held for a
/// uniform number of steps in `1..=max_hold` [8], so that the agent travels
/// and bumps into things instead of jittering in place.
pub struct RandomPolicy {
    rng: Rng,
    max_hold: u32,
    current: Vec<f32>,
    left: u32,
}

impl RandomPolicy {
    /// A random policy whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::derive(seed, 4),
            max_hold: 8,
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

/// Any of the data-generating policies behind one interface.
pub enum Policy {
    /// See [`Expert`].
    Expert(Expert),
    /// See [`RandomPolicy`].
    Random(RandomPolicy),
    /// See [`MixedPolicy`].
    Mixed(MixedPolicy),
}

impl Policy {
    /// A policy of `kind` for the episode of `seed`.
    pub fn new(kind: PolicyKind, cfg: ExpertConfig, seed: u64) -> Self {
        match kind {
            PolicyKind::Expert => Policy::Expert(Expert::new(cfg, seed)),
            PolicyKind::Random => Policy::Random(RandomPolicy::new(seed)),
            PolicyKind::Mixed => Policy::Mixed(MixedPolicy::new(cfg, seed)),
        }
    }

    /// The action for `env`.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        match self {
            Policy::Expert(p) => p.act(env),
            Policy::Random(p) => p.act(env),
            Policy::Mixed(p) => p.act(env),
        }
    }
}
