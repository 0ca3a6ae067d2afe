//! The four tasks of the suite: how an episode's layout is drawn from a seed,
//! what the goal is, and the instruction given in words.
//!
//! | task    | goal                                                     | steps |
//! |---------|----------------------------------------------------------|-------|
//! | `reach` | agent centre within 0.45 of a spot in the other room      | 100   |
//! | `push`  | box centre within 0.5 of the target centre                | 150   |
//! | `pusht` | T origin within 0.5 of the target, angle within 0.3 rad   | 300   |
//! | `sort`  | named object's centre within 0.6 of the named zone centre | 200   |

use crate::domain::Domain;
use crate::rng::Rng;
use crate::scene::{
    ARENA, BodyState, Goal, Layout, ObjectShape, ObjectSpec, ObjectTarget, PointTarget, SimState,
    WALL, Wall, Zone, border_walls,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A task of the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Task {
    /// Move the agent to a spot in the other of two rooms joined by a door.
    Reach,
    /// Push a box onto a target disc.
    Push,
    /// Push a T block to a target position and angle.
    PushT,
    /// Several coloured objects and zones; push the named object into the
    /// named zone.
    Sort,
}

/// Position tolerance of `reach` (world units).
pub const REACH_TOL: f32 = 0.45;
/// Position tolerance of `push`.
pub const PUSH_TOL: f32 = 0.5;
/// Position tolerance of `pusht`.
pub const PUSHT_POS_TOL: f32 = 0.5;
/// Angle tolerance of `pusht` (radians, about 17 degrees).
pub const PUSHT_ANGLE_TOL: f32 = 0.3;
/// Position tolerance of `sort` (the object's centre inside the zone's inner disc).
pub const SORT_TOL: f32 = 0.6;

const GREEN: [u8; 3] = [60, 190, 90];
const ORANGE: [u8; 3] = [235, 140, 40];
const SLATE: [u8; 3] = [90, 110, 160];
const GHOST: [u8; 3] = [150, 215, 160];

/// Named colours used by `sort` objects and zones.
const SORT_COLORS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 50, 50]),
    ("green", [50, 170, 70]),
    ("blue", [50, 90, 220]),
    ("yellow", [230, 200, 40]),
];
const ZONE_COLORS: [(&str, [u8; 3]); 3] = [
    ("blue", [130, 160, 240]),
    ("yellow", [240, 225, 130]),
    ("purple", [190, 140, 220]),
];

impl Task {
    /// All tasks, in a fixed order.
    pub const ALL: [Task; 4] = [Task::Reach, Task::Push, Task::PushT, Task::Sort];

    /// Stable lower-case name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Task::Reach => "reach",
            Task::Push => "push",
            Task::PushT => "pusht",
            Task::Sort => "sort",
        }
    }

    /// Control steps an episode of this task may last.
    pub fn max_steps(self) -> u32 {
        match self {
            Task::Reach => 100,
            Task::Push => 150,
            Task::PushT => 300,
            Task::Sort => 200,
        }
    }

    /// Draws the layout of the episode with this seed. Only the task's
    /// geometry depends on the domain (through the agent's size).
    pub fn layout(self, domain: Domain, seed: u64) -> Layout {
        let mut rng = Rng::derive(seed, 1);
        let agent_r = domain.agent().shape.bounding_radius();
        match self {
            Task::Reach => reach(&mut rng),
            Task::Push => push(&mut rng, agent_r),
            Task::PushT => pusht(&mut rng, agent_r),
            Task::Sort => sort(&mut rng, agent_r),
        }
    }
}

fn body(pos: [f32; 2], angle: f32) -> BodyState {
    BodyState {
        pos,
        angle,
        ..Default::default()
    }
}

fn far(p: [f32; 2], q: [f32; 2], d: f32) -> bool {
    (p[0] - q[0]).hypot(p[1] - q[1]) >= d
}

/// A point on the free floor at least `margin` from the border walls.
pub(crate) fn floor_point(rng: &mut Rng, margin: f32) -> [f32; 2] {
    let lo = WALL + margin;
    let hi = ARENA - WALL - margin;
    [rng.uniform(lo, hi), rng.uniform(lo, hi)]
}

fn reach(rng: &mut Rng) -> Layout {
    let door_y = rng.uniform(2.5, 7.5);
    let door_half = 1.0;
    let (wx, wh) = (ARENA / 2.0, 0.15);
    let mut walls = border_walls();
    let lower = door_y - door_half;
    let upper = door_y + door_half;
    walls.push(Wall {
        center: [wx, (WALL + lower) / 2.0],
        half: [wh, (lower - WALL) / 2.0],
    });
    walls.push(Wall {
        center: [wx, (upper + ARENA - WALL) / 2.0],
        half: [wh, (ARENA - WALL - upper) / 2.0],
    });
    let left_first = rng.chance(0.5);
    let side = |rng: &mut Rng, left: bool| {
        let x = if left {
            rng.uniform(1.0, 4.0)
        } else {
            rng.uniform(6.0, 9.0)
        };
        [x, rng.uniform(1.0, 9.0)]
    };
    let start = side(rng, left_first);
    let target = side(rng, !left_first);
    let room = if target[0] < wx { "left" } else { "right" };
    Layout {
        walls,
        objects: vec![],
        zones: vec![Zone {
            center: target,
            radius: 0.35,
            color: GREEN,
            name: "green spot".into(),
            ghost: None,
        }],
        initial: SimState {
            step: 0,
            agent: body(start, 0.0),
            objects: vec![],
            distractors: vec![],
        },
        goal: Goal {
            agent: Some(PointTarget {
                pos: target,
                tol: REACH_TOL,
            }),
            object: None,
        },
        instruction: format!("go through the door to the green spot in the {room} room"),
        max_steps: Task::Reach.max_steps(),
    }
}

fn push(rng: &mut Rng, agent_r: f32) -> Layout {
    let shape = ObjectShape::Box { hx: 0.5, hy: 0.5 };
    let box_pos = [rng.uniform(3.0, 7.0), rng.uniform(3.0, 7.0)];
    let box_angle = rng.uniform(-0.4, 0.4);
    let target = loop {
        let t = floor_point(rng, 1.7);
        if far(t, box_pos, 2.5) {
            break t;
        }
    };
    let agent = loop {
        let a = floor_point(rng, agent_r + 0.2);
        if far(a, box_pos, 0.75 + agent_r + 0.3) {
            break a;
        }
    };
    Layout {
        walls: border_walls(),
        objects: vec![ObjectSpec {
            shape,
            color: ORANGE,
            name: "orange box".into(),
        }],
        zones: vec![Zone {
            center: target,
            radius: 0.7,
            color: GHOST,
            name: "target".into(),
            ghost: None,
        }],
        initial: SimState {
            step: 0,
            agent: body(agent, 0.0),
            objects: vec![body(box_pos, box_angle)],
            distractors: vec![],
        },
        goal: Goal {
            agent: None,
            object: Some(ObjectTarget {
                index: 0,
                pos: target,
                pos_tol: PUSH_TOL,
                angle: None,
                angle_tol: 0.0,
            }),
        },
        instruction: "push the orange box onto the target".into(),
        max_steps: Task::Push.max_steps(),
    }
}

fn pusht(rng: &mut Rng, agent_r: f32) -> Layout {
    let pi = std::f32::consts::PI;
    let t_pos = [rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5)];
    let t_angle = rng.uniform(-pi, pi);
    let (goal_pos, goal_angle) = loop {
        let p = [rng.uniform(3.5, 6.5), rng.uniform(3.5, 6.5)];
        let a = rng.uniform(-pi, pi);
        if far(p, t_pos, 1.0) || crate::scene::angle_diff(a, t_angle) > 0.8 {
            break (p, a);
        }
    };
    let agent = loop {
        let a = floor_point(rng, agent_r + 0.2);
        if far(
            a,
            t_pos,
            ObjectShape::TBlock.bounding_radius() + agent_r + 0.2,
        ) {
            break a;
        }
    };
    Layout {
        walls: border_walls(),
        objects: vec![ObjectSpec {
            shape: ObjectShape::TBlock,
            color: SLATE,
            name: "T block".into(),
        }],
        zones: vec![Zone {
            center: goal_pos,
            radius: 0.0,
            color: GHOST,
            name: "T-shaped target".into(),
            ghost: Some((ObjectShape::TBlock, goal_angle)),
        }],
        initial: SimState {
            step: 0,
            agent: body(agent, 0.0),
            objects: vec![body(t_pos, t_angle)],
            distractors: vec![],
        },
        goal: Goal {
            agent: None,
            object: Some(ObjectTarget {
                index: 0,
                pos: goal_pos,
                pos_tol: PUSHT_POS_TOL,
                angle: Some(goal_angle),
                angle_tol: PUSHT_ANGLE_TOL,
            }),
        },
        instruction: "push the T block onto the T-shaped target".into(),
        max_steps: Task::PushT.max_steps(),
    }
}

fn sort(rng: &mut Rng, agent_r: f32) -> Layout {
    // Two zones in different quadrants, far enough from the walls that an
    // overshooting object does not get stuck in a corner.
    let corners = [[2.5, 2.5], [7.5, 2.5], [7.5, 7.5], [2.5, 7.5]];
    let first = rng.below(4);
    let second = (first + 1 + rng.below(3)) % 4;
    let zone_colors = {
        let a = rng.below(3);
        let b = (a + 1 + rng.below(2)) % 3;
        [ZONE_COLORS[a], ZONE_COLORS[b]]
    };
    let zones: Vec<Zone> = [first, second]
        .iter()
        .zip(zone_colors)
        .map(|(&c, (name, color))| {
            let j = [rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3)];
            Zone {
                center: [corners[c][0] + j[0], corners[c][1] + j[1]],
                radius: 0.9,
                color,
                name: format!("{name} zone"),
                ghost: None,
            }
        })
        .collect();
    // Three objects of distinct colours in the middle of the arena.
    let mut color_ids = vec![0usize, 1, 2, 3];
    let mut objects = Vec::new();
    let mut states = Vec::new();
    for _ in 0..3 {
        let (cname, color) = SORT_COLORS[color_ids.remove(rng.below(color_ids.len()))];
        let (shape, sname) = if rng.chance(0.5) {
            (ObjectShape::Box { hx: 0.4, hy: 0.4 }, "box")
        } else {
            (ObjectShape::Disc { r: 0.42 }, "disc")
        };
        let pos = loop {
            let p = [rng.uniform(3.2, 6.8), rng.uniform(3.2, 6.8)];
            if states.iter().all(|s: &BodyState| far(p, s.pos, 1.5))
                && zones.iter().all(|z| far(p, z.center, 1.8))
            {
                break p;
            }
        };
        objects.push(ObjectSpec {
            shape,
            color,
            name: format!("{cname} {sname}"),
        });
        states.push(body(pos, rng.uniform(-0.5, 0.5)));
    }
    let agent = loop {
        let a = floor_point(rng, agent_r + 0.2);
        if states.iter().all(|s| far(a, s.pos, 0.6 + agent_r + 0.3)) {
            break a;
        }
    };
    let target_obj = rng.below(3);
    let target_zone = rng.below(2);
    let instruction = format!(
        "push the {} into the {}",
        objects[target_obj].name, zones[target_zone].name
    );
    let goal = Goal {
        agent: None,
        object: Some(ObjectTarget {
            index: target_obj,
            pos: zones[target_zone].center,
            pos_tol: SORT_TOL,
            angle: None,
            angle_tol: 0.0,
        }),
    };
    Layout {
        walls: border_walls(),
        objects,
        zones,
        initial: SimState {
            step: 0,
            agent: body(agent, 0.0),
            objects: states,
            distractors: vec![],
        },
        goal,
        instruction,
        max_steps: Task::Sort.max_steps(),
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown task {s:?}; expected one of: reach, push, pusht, sort")
            })
    }
}
