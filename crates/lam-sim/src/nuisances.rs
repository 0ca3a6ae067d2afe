//! Per-episode appearance and the "in the wild" nuisances: random colours,
//! floor texture, self-moving distractors and a small camera offset/zoom.
//! Task-relevant colours (the objects and zones named by instructions) keep
//! their meaning; only their shade is jittered.

use crate::domain::Domain;
use crate::rng::Rng;
use crate::scene::{ARENA, BodyState, WALL};
use serde::{Deserialize, Serialize};

/// Which nuisances are on. Defaults: all on for `human`, all off otherwise
/// (see [`NuisanceConfig::for_domain`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NuisanceConfig {
    /// Random floor, wall and agent colours and jittered object shades.
    pub colors: bool,
    /// A random checker or stripe texture on the floor.
    pub texture: bool,
    /// Number of distractors moving by themselves (no collisions) [2 when on].
    pub distractors: u32,
    /// Random camera offset (up to 0.3 units) and zoom (1.0 to 1.12).
    pub camera: bool,
}

impl NuisanceConfig {
    /// Every nuisance off.
    pub fn off() -> Self {
        Self {
            colors: false,
            texture: false,
            distractors: 0,
            camera: false,
        }
    }

    /// Every nuisance on, with two distractors.
    pub fn on() -> Self {
        Self {
            colors: true,
            texture: true,
            distractors: 2,
            camera: true,
        }
    }

    /// The default of a domain: on for `human`, off for the robots.
    pub fn for_domain(domain: Domain) -> Self {
        if domain.nuisances_by_default() {
            Self::on()
        } else {
            Self::off()
        }
    }
}

/// Floor texture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Texture {
    /// Checkerboard with square cells of side `cell` world units.
    Checker { cell: f32, color: [u8; 3] },
    /// Diagonal-free stripes along x (vertical bands) of width `width`.
    Stripes { width: f32, color: [u8; 3] },
}

/// A distractor: a disc or square in a muted colour that drifts and bounces
/// off the borders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistractorSpec {
    /// Radius (disc) or half side (square), world units.
    pub size: f32,
    /// Square instead of disc.
    pub square: bool,
    /// Colour.
    pub color: [u8; 3],
}

/// Camera placement: the view is the arena scaled by `zoom` about its centre,
/// then shifted by `offset` world units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Camera {
    /// Zoom factor (1 = the whole arena fills the frame).
    pub zoom: f32,
    /// Shift of the view centre (world units).
    pub offset: [f32; 2],
}

/// Everything about how an episode looks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Look {
    /// Floor colour.
    pub floor: [u8; 3],
    /// Wall colour.
    pub wall: [u8; 3],
    /// Optional floor texture.
    pub texture: Option<Texture>,
    /// Agent fill colour.
    pub agent: [u8; 3],
    /// Agent rim colour.
    pub agent_rim: [u8; 3],
    /// Additive shade jitter applied to object colours.
    pub object_shade: [i16; 3],
    /// Camera.
    pub camera: Camera,
    /// Distractors.
    pub distractors: Vec<DistractorSpec>,
}

fn jitter(rng: &mut Rng, c: [u8; 3], amount: f32) -> [u8; 3] {
    c.map(|x| (x as f32 + rng.uniform(-amount, amount)).clamp(0.0, 255.0) as u8)
}

impl Look {
    /// The look of an episode of `domain` with this seed, plus the initial
    /// distractor states.
    pub fn sample(domain: Domain, cfg: &NuisanceConfig, seed: u64) -> (Look, Vec<BodyState>) {
        let mut rng = Rng::derive(seed, 2);
        let (agent, agent_rim) = match domain {
            Domain::Robot | Domain::RobotPolar => ([70, 70, 80], [20, 20, 25]),
            Domain::Human => ([225, 175, 140], [150, 100, 75]),
        };
        let mut look = Look {
            floor: [236, 236, 228],
            wall: [60, 60, 70],
            texture: None,
            agent,
            agent_rim,
            object_shade: [0; 3],
            camera: Camera {
                zoom: 1.0,
                offset: [0.0, 0.0],
            },
            distractors: vec![],
        };
        if cfg.colors {
            let base = rng.uniform(170.0, 245.0);
            look.floor = jitter(&mut rng, [base as u8; 3], 25.0);
            look.wall = jitter(&mut rng, [70, 60, 55], 40.0);
            look.agent = jitter(&mut rng, agent, 30.0);
            look.agent_rim = jitter(&mut rng, agent_rim, 20.0);
            look.object_shade = [0; 3].map(|_: i16| rng.uniform(-20.0, 20.0) as i16);
        }
        if cfg.texture {
            let f = look.floor;
            let color = f.map(|x| {
                if x > 128 {
                    x - rng.uniform(10.0, 30.0) as u8
                } else {
                    x + 20
                }
            });
            look.texture = Some(if rng.chance(0.5) {
                Texture::Checker {
                    cell: rng.uniform(0.6, 1.6),
                    color,
                }
            } else {
                Texture::Stripes {
                    width: rng.uniform(0.4, 1.2),
                    color,
                }
            });
        }
        if cfg.camera {
            look.camera = Camera {
                zoom: rng.uniform(1.0, 1.12),
                offset: [rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)],
            };
        }
        let mut states = Vec::new();
        for _ in 0..cfg.distractors {
            let spec = DistractorSpec {
                size: rng.uniform(0.2, 0.4),
                square: rng.chance(0.5),
                // Muted colours, so a distractor is never mistaken for a
                // named (red, green, blue, yellow) object.
                color: {
                    let g = rng.uniform(90.0, 200.0);
                    jitter(&mut rng, [g as u8; 3], 35.0)
                },
            };
            let speed = rng.uniform(0.5, 1.5);
            let dir = rng.uniform(0.0, std::f32::consts::TAU);
            let pos = [rng.uniform(1.0, ARENA - 1.0), rng.uniform(1.0, ARENA - 1.0)];
            states.push(BodyState {
                pos,
                angle: 0.0,
                vel: [speed * dir.cos(), speed * dir.sin()],
                angvel: 0.0,
            });
            look.distractors.push(spec);
        }
        (look, states)
    }
}

/// Moves distractors for `dt` seconds, bouncing off the border walls.
pub fn move_distractors(states: &mut [BodyState], specs: &[DistractorSpec], dt: f32) {
    for (s, spec) in states.iter_mut().zip(specs) {
        for k in 0..2 {
            s.pos[k] += s.vel[k] * dt;
            let lo = WALL + spec.size;
            let hi = ARENA - WALL - spec.size;
            if s.pos[k] < lo {
                s.pos[k] = 2.0 * lo - s.pos[k];
                s.vel[k] = s.vel[k].abs();
            } else if s.pos[k] > hi {
                s.pos[k] = 2.0 * hi - s.pos[k];
                s.vel[k] = -s.vel[k].abs();
            }
        }
    }
}
