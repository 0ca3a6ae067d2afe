//! Embodiments ("domains"): who acts in the scene, with which action space and
//! which dynamics.
//!
//! The same tasks are played by three embodiments so that the project can
//! compare "robot data with labels" against "human video without labels", and
//! test latent actions as an interface shared by different action spaces.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which embodiment acts in the scene.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Domain {
    /// Round pusher; action = 2-D velocity command `[vx, vy]` in `[-1, 1]^2`
    /// (scaled by the maximum speed), tracked almost instantly.
    Robot,
    /// The same round pusher driven in polar form: action = `[speed, heading]`
    /// with speed in `[0, 1]` (fraction of the maximum speed) and heading in
    /// `[-pi, pi]` radians (0 = +x, counter-clockwise).
    RobotPolar,
    /// A rounded-square "hand" with its own colour, a higher top speed and
    /// inertia (it reaches a commanded velocity with a time constant). Its
    /// actions are never exported with the video; they go to a separate
    /// ground-truth file. In-the-wild nuisances are on by default.
    Human,
}

/// Shape of the acting body.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum AgentShape {
    /// A disc of the given radius (world units).
    Disc { radius: f32 },
    /// A square with half-extent `half` and rounded corners of radius `round`;
    /// its total half-width is `half + round`.
    RoundSquare { half: f32, round: f32 },
}

impl AgentShape {
    /// Radius of the smallest disc around the body's centre that contains it.
    pub fn bounding_radius(&self) -> f32 {
        match *self {
            AgentShape::Disc { radius } => radius,
            AgentShape::RoundSquare { half, round } => half * std::f32::consts::SQRT_2 + round,
        }
    }

    /// Half-width of the body along the x or y axis.
    pub fn half_width(&self) -> f32 {
        match *self {
            AgentShape::Disc { radius } => radius,
            AgentShape::RoundSquare { half, round } => half + round,
        }
    }
}

/// Physical parameters of an embodiment.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentParams {
    /// Collision shape.
    pub shape: AgentShape,
    /// Top speed in world units per second (the arena is 10 units wide).
    pub max_speed: f32,
    /// Time constant (seconds) with which the body's velocity follows the
    /// command; 0 means the command is applied at every physics substep.
    pub response_time: f32,
    /// Mass density; high so that objects yield to the agent.
    pub density: f32,
}

/// Description of an action space: a box `[low, high]` in `dim` dimensions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionSpace {
    /// Number of action components.
    pub dim: usize,
    /// Lower bound per component.
    pub low: Vec<f32>,
    /// Upper bound per component.
    pub high: Vec<f32>,
    /// Name per component (used as LeRobot feature names).
    pub names: Vec<String>,
}

impl ActionSpace {
    /// Clips `action` into the box; a shorter or longer slice is an error
    /// naming both lengths.
    pub fn clip(&self, action: &[f32]) -> anyhow::Result<Vec<f32>> {
        anyhow::ensure!(
            action.len() == self.dim,
            "action has {} components, the action space has {}",
            action.len(),
            self.dim
        );
        Ok(action
            .iter()
            .zip(self.low.iter().zip(&self.high))
            .map(|(&a, (&lo, &hi))| if a.is_finite() { a.clamp(lo, hi) } else { 0.0 })
            .collect())
    }

    /// Centre of the box (the "do nothing" action for velocity spaces).
    pub fn zero(&self) -> Vec<f32> {
        self.low
            .iter()
            .zip(&self.high)
            .map(|(l, h)| {
                if *l <= 0.0 && *h >= 0.0 {
                    0.0
                } else {
                    0.5 * (l + h)
                }
            })
            .collect()
    }
}

impl Domain {
    /// All domains, in a fixed order.
    pub const ALL: [Domain; 3] = [Domain::Robot, Domain::RobotPolar, Domain::Human];

    /// Stable lower-case name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Domain::Robot => "robot",
            Domain::RobotPolar => "robot-polar",
            Domain::Human => "human",
        }
    }

    /// Physical parameters of this embodiment.
    pub fn agent(self) -> AgentParams {
        match self {
            Domain::Robot | Domain::RobotPolar => AgentParams {
                shape: AgentShape::Disc { radius: 0.4 },
                max_speed: 3.0,
                response_time: 0.0,
                density: 50.0,
            },
            Domain::Human => AgentParams {
                shape: AgentShape::RoundSquare {
                    half: 0.27,
                    round: 0.12,
                },
                max_speed: 3.6,
                response_time: 0.12,
                density: 50.0,
            },
        }
    }

    /// Action space of this embodiment.
    pub fn action_space(self) -> ActionSpace {
        match self {
            Domain::Robot | Domain::Human => ActionSpace {
                dim: 2,
                low: vec![-1.0, -1.0],
                high: vec![1.0, 1.0],
                names: vec!["vx".into(), "vy".into()],
            },
            Domain::RobotPolar => ActionSpace {
                dim: 2,
                low: vec![0.0, -std::f32::consts::PI],
                high: vec![1.0, std::f32::consts::PI],
                names: vec!["speed".into(), "heading".into()],
            },
        }
    }

    /// Whether the recorder may export this domain's actions in the dataset's
    /// `action` column (false for `human`: its actions are ground truth only).
    pub fn actions_are_observable(self) -> bool {
        !matches!(self, Domain::Human)
    }

    /// Whether the in-the-wild nuisances are on by default.
    pub fn nuisances_by_default(self) -> bool {
        matches!(self, Domain::Human)
    }

    /// Velocity command (world units per second) for an action already
    /// clipped to the action space.
    pub fn velocity_from_action(self, action: &[f32]) -> [f32; 2] {
        let max = self.agent().max_speed;
        match self {
            Domain::Robot | Domain::Human => [action[0] * max, action[1] * max],
            Domain::RobotPolar => {
                let s = action[0] * max;
                [s * action[1].cos(), s * action[1].sin()]
            }
        }
    }

    /// Action (clipped to the action space) that asks for the velocity `v`
    /// (world units per second). Inverse of [`Domain::velocity_from_action`]
    /// inside the bounds.
    pub fn action_from_velocity(self, v: [f32; 2]) -> Vec<f32> {
        let max = self.agent().max_speed;
        match self {
            Domain::Robot | Domain::Human => {
                vec![(v[0] / max).clamp(-1.0, 1.0), (v[1] / max).clamp(-1.0, 1.0)]
            }
            Domain::RobotPolar => {
                let speed = (v[0].hypot(v[1]) / max).clamp(0.0, 1.0);
                let heading = if speed > 0.0 { v[1].atan2(v[0]) } else { 0.0 };
                vec![speed, heading]
            }
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Domain::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown domain {s:?}; expected one of: robot, robot-polar, human")
            })
    }
}
