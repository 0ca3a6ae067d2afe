//! Scene description: what is in the arena (walls, objects, zones), the
//! physical state of every moving body, and goals with their success test.
//!
//! World units: the arena is the square `[0, ARENA]^2` with +y up; angles are
//! radians, counter-clockwise.

use serde::{Deserialize, Serialize};

/// Side length of the square arena, in world units.
pub const ARENA: f32 = 10.0;
/// Thickness of the border walls; the free floor is `[WALL, ARENA - WALL]^2`.
pub const WALL: f32 = 0.3;

/// An axis-aligned static wall.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Wall {
    /// Centre (world units).
    pub center: [f32; 2],
    /// Half extents along x and y.
    pub half: [f32; 2],
}

/// Shape of a movable object.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ObjectShape {
    /// Rectangle with half extents `hx`, `hy`.
    Box { hx: f32, hy: f32 },
    /// Disc of radius `r`.
    Disc { r: f32 },
    /// The T block: a 2.0 x 0.5 bar on top of a 0.5 x 1.5 stem (see
    /// [`T_BAR`] and [`T_STEM`]); the body origin sits where the stem meets
    /// the bar, 0.25 below the bar's centre line.
    TBlock,
}

/// T block bar as (centre x, centre y, half x, half y) in the body frame.
pub const T_BAR: [f32; 4] = [0.0, 0.5, 1.0, 0.25];
/// T block stem as (centre x, centre y, half x, half y) in the body frame.
pub const T_STEM: [f32; 4] = [0.0, -0.5, 0.25, 0.75];

impl ObjectShape {
    /// Radius of the smallest disc around the body origin containing the shape.
    pub fn bounding_radius(&self) -> f32 {
        match *self {
            ObjectShape::Box { hx, hy } => hx.hypot(hy),
            ObjectShape::Disc { r } => r,
            ObjectShape::TBlock => 1.25f32.hypot(0.25).max(1.0f32.hypot(0.75)),
        }
    }

    /// Outline as a closed polygon in the body frame (discs: 24-gon).
    pub fn outline(&self) -> Vec<[f32; 2]> {
        match *self {
            ObjectShape::Box { hx, hy } => vec![[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]],
            ObjectShape::Disc { r } => (0..24)
                .map(|i| {
                    let a = i as f32 * std::f32::consts::TAU / 24.0;
                    [r * a.cos(), r * a.sin()]
                })
                .collect(),
            ObjectShape::TBlock => {
                let (bx, by, bhx, bhy) = (T_BAR[0], T_BAR[1], T_BAR[2], T_BAR[3]);
                let (sx, sy, shx, shy) = (T_STEM[0], T_STEM[1], T_STEM[2], T_STEM[3]);
                vec![
                    [bx - bhx, by - bhy],
                    [sx - shx, by - bhy],
                    [sx - shx, sy - shy],
                    [sx + shx, sy - shy],
                    [sx + shx, by - bhy],
                    [bx + bhx, by - bhy],
                    [bx + bhx, by + bhy],
                    [bx - bhx, by + bhy],
                ]
            }
        }
    }
}

/// A movable object of the scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectSpec {
    /// Collision and drawing shape.
    pub shape: ObjectShape,
    /// Fill colour (RGB).
    pub color: [u8; 3],
    /// Words used in instructions, e.g. "red box".
    pub name: String,
}

/// A coloured disc drawn on the floor (targets and sorting zones). Zones have
/// no physical effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// Centre (world units).
    pub center: [f32; 2],
    /// Radius (world units).
    pub radius: f32,
    /// Fill colour (RGB).
    pub color: [u8; 3],
    /// Words used in instructions, e.g. "blue zone".
    pub name: String,
    /// Optional ghost outline of an object at a pose `(shape, x, y, angle)`,
    /// drawn instead of the disc (the T-shaped target of `pusht`).
    pub ghost: Option<(ObjectShape, f32)>,
}

/// Pose and velocity of one rigid body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BodyState {
    /// Position of the body origin.
    pub pos: [f32; 2],
    /// Orientation (radians).
    pub angle: f32,
    /// Linear velocity (units per second).
    pub vel: [f32; 2],
    /// Angular velocity (radians per second).
    pub angvel: f32,
}

/// Full physical state of an episode: agent, objects (in layout order) and
/// the self-moving distractors (which do not collide with anything).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Control steps taken since reset.
    pub step: u32,
    /// The acting body.
    pub agent: BodyState,
    /// Movable objects, in the order of [`Layout::objects`].
    pub objects: Vec<BodyState>,
    /// Distractors (position and velocity; angle unused).
    pub distractors: Vec<BodyState>,
}

impl SimState {
    /// Flattened physical state: agent `(x, y, angle, vx, vy, w)` then the
    /// same six numbers per object. Distractors are left out: they carry no
    /// information about the task.
    pub fn to_vec(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(6 * (1 + self.objects.len()));
        for b in std::iter::once(&self.agent).chain(&self.objects) {
            v.extend_from_slice(&[b.pos[0], b.pos[1], b.angle, b.vel[0], b.vel[1], b.angvel]);
        }
        v
    }

    /// The oracle encoder's frame embedding: what a perfect vision system would read off the
    /// frame (see [`oracle_from_vec`]). Velocities are left out (one frame does not show them).
    pub fn oracle_embedding(&self, layout: &Layout) -> Vec<f32> {
        oracle_from_vec(&self.to_vec(), layout)
    }

    /// Names of the numbers of [`SimState::to_vec`].
    pub fn vec_names(n_objects: usize) -> Vec<String> {
        let mut names = Vec::new();
        for body in
            std::iter::once("agent".to_string()).chain((0..n_objects).map(|i| format!("object{i}")))
        {
            for f in ["x", "y", "angle", "vx", "vy", "angvel"] {
                names.push(format!("{body}.{f}"));
            }
        }
        names
    }
}

/// A point target for the agent: reached when the agent's centre is within
/// `tol` of `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointTarget {
    /// Target position.
    pub pos: [f32; 2],
    /// Distance tolerance (world units).
    pub tol: f32,
}

/// A pose target for one object.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectTarget {
    /// Index into [`Layout::objects`].
    pub index: usize,
    /// Target position of the object origin.
    pub pos: [f32; 2],
    /// Position tolerance (world units).
    pub pos_tol: f32,
    /// Target angle, if orientation matters.
    pub angle: Option<f32>,
    /// Angle tolerance (radians), used when `angle` is set.
    pub angle_tol: f32,
}

/// What counts as success: every part that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Goal {
    /// Where the agent must be.
    pub agent: Option<PointTarget>,
    /// Where one object must be.
    pub object: Option<ObjectTarget>,
}

/// Smallest absolute difference between two angles (radians), in `[0, pi]`.
pub fn angle_diff(a: f32, b: f32) -> f32 {
    let d = (a - b).rem_euclid(std::f32::consts::TAU);
    d.min(std::f32::consts::TAU - d)
}

fn dist(a: [f32; 2], b: [f32; 2]) -> f32 {
    (a[0] - b[0]).hypot(a[1] - b[1])
}

impl Goal {
    /// The success test on a physical state.
    pub fn satisfied(&self, s: &SimState) -> bool {
        if let Some(t) = &self.agent
            && dist(s.agent.pos, t.pos) > t.tol
        {
            return false;
        }
        if let Some(t) = &self.object {
            let o = &s.objects[t.index];
            if dist(o.pos, t.pos) > t.pos_tol {
                return false;
            }
            if let Some(a) = t.angle
                && angle_diff(o.angle, a) > t.angle_tol
            {
                return false;
            }
        }
        true
    }

    /// A scalar distance to the goal (0 when exactly met): position errors in
    /// world units plus angle error in radians scaled by 1.5 units per radian.
    pub fn distance(&self, s: &SimState) -> f32 {
        let mut d = 0.0;
        if let Some(t) = &self.agent {
            d += dist(s.agent.pos, t.pos);
        }
        if let Some(t) = &self.object {
            let o = &s.objects[t.index];
            d += dist(o.pos, t.pos);
            if let Some(a) = t.angle {
                d += 1.5 * angle_diff(o.angle, a);
            }
        }
        d
    }
}

/// Everything fixed for an episode: static geometry, objects, markers, the
/// initial state, the task's goal and its instruction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Static walls (border walls included).
    pub walls: Vec<Wall>,
    /// Movable objects.
    pub objects: Vec<ObjectSpec>,
    /// Floor markers.
    pub zones: Vec<Zone>,
    /// State at reset.
    pub initial: SimState,
    /// The task's own goal.
    pub goal: Goal,
    /// Natural-language instruction of the episode.
    pub instruction: String,
    /// Control steps the episode may last.
    pub max_steps: u32,
}

/// The four border walls of the arena.
impl Layout {
    /// The walls inside the arena (after the four [`border_walls`]), such as `reach`'s
    /// middle wall with its door.
    pub fn interior_walls(&self) -> &[Wall] {
        self.walls.get(4..).unwrap_or(&[])
    }
}

pub fn border_walls() -> Vec<Wall> {
    let h = WALL / 2.0;
    let m = ARENA / 2.0;
    vec![
        Wall {
            center: [h, m],
            half: [h, m],
        },
        Wall {
            center: [ARENA - h, m],
            half: [h, m],
        },
        Wall {
            center: [m, h],
            half: [m, h],
        },
        Wall {
            center: [m, ARENA - h],
            half: [m, h],
        },
    ]
}

/// The oracle encoder's frame embedding from the flat [`SimState::to_vec`] layout (six
/// numbers per body, agent first, as stored in a recording's ground truth) and the episode's
/// layout: agent `(x, y)`; per object `(x, y, cos angle, sin angle)`; per interior wall (the
/// walls after the four border walls, e.g. `reach`'s wall with its door) its centre and half
/// length along its long side, which place the door. Positions are mapped from `[0, ARENA]`
/// to `[-1, 1]`, lengths by `2 / ARENA`.
pub fn oracle_from_vec(v: &[f32], layout: &Layout) -> Vec<f32> {
    let scale = |p: f32| 2.0 * p / ARENA - 1.0;
    let mut out = Vec::new();
    for (i, b) in v.chunks_exact(6).enumerate() {
        out.push(scale(b[0]));
        out.push(scale(b[1]));
        if i > 0 {
            out.push(b[2].cos());
            out.push(b[2].sin());
        }
    }
    for w in layout.interior_walls() {
        let axis = usize::from(w.half[1] > w.half[0]);
        out.push(scale(w.center[axis]));
        out.push(2.0 * w.half[axis] / ARENA);
    }
    out
}
