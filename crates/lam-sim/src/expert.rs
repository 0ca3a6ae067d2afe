//! Scripted experts. They read the privileged physical state (never pixels).
//!
//! * `reach`: waypoints through the door, then a proportional approach.
//! * `push`, `pusht`, `sort`: a pushing planner. It lists contact points on
//!   the object's outline, tries pushing at each (for a short and a long
//!   push) in a throw-away copy of the physics world, and commits to the push
//!   that brings the object closest to its goal. The agent then walks around
//!   the object to the chosen contact point and pushes.
//!
//! Gaussian noise is added to every velocity command.

use crate::domain::Domain;
use crate::env::Env;
use crate::rng::Rng;
use crate::scene::{ARENA, Goal, ObjectShape, ObjectTarget, SimState, WALL};
use crate::tasks::Task;
use serde::{Deserialize, Serialize};

/// Expert settings. Defaults in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertConfig {
    /// Standard deviation of the Gaussian noise added to the commanded
    /// velocity, as a fraction of the top speed [0.1].
    pub noise: f32,
    /// Pushing speed as a fraction of the top speed [0.6].
    pub push_speed: f32,
    /// Lengths (control steps) of the pushes the planner tries [2 and 5].
    pub push_steps: Vec<u32>,
    /// Steps allowed to reach a contact point before re-planning [40].
    pub approach_timeout: u32,
}

impl Default for ExpertConfig {
    fn default() -> Self {
        Self {
            noise: 0.1,
            push_speed: 0.6,
            push_steps: vec![2, 5],
            approach_timeout: 40,
        }
    }
}

/// A committed push: contact point and outward normal in the object's
/// frame, and how many pushing steps remain once the contact is reached.
#[derive(Clone, Debug)]
struct Push {
    object: usize,
    contact: [f32; 2],
    normal: [f32; 2],
    steps: u32,
    pushing: bool,
    approach_steps: u32,
}

/// A scripted expert for any task and domain.
pub struct Expert {
    cfg: ExpertConfig,
    rng: Rng,
    plan: Option<Push>,
}

type V = [f32; 2];

/// Distance behind a contact point (along its normal) where the agent lines
/// up before moving in.
const STAGE: f32 = 0.6;

/// Steps without command simulated after a trial push, so that the planner
/// judges where the object comes to rest rather than where it is mid-slide.
const COAST: u32 = 3;

fn sub(a: V, b: V) -> V {
    [a[0] - b[0], a[1] - b[1]]
}
fn add(a: V, b: V) -> V {
    [a[0] + b[0], a[1] + b[1]]
}
fn scale(a: V, s: f32) -> V {
    [a[0] * s, a[1] * s]
}
fn norm(a: V) -> f32 {
    a[0].hypot(a[1])
}
fn rot(a: V, angle: f32) -> V {
    let (s, c) = angle.sin_cos();
    [c * a[0] - s * a[1], s * a[0] + c * a[1]]
}
fn clamp_len(a: V, max: f32) -> V {
    let n = norm(a);
    if n > max { scale(a, max / n) } else { a }
}
fn wrap(a: f32) -> f32 {
    let pi = std::f32::consts::PI;
    (a + pi).rem_euclid(2.0 * pi) - pi
}

/// Candidate contacts (point, outward normal) in the object's frame.
fn contacts(shape: ObjectShape) -> Vec<(V, V)> {
    match shape {
        ObjectShape::Box { hx, hy } => {
            let mut c = Vec::new();
            for t in [-0.6f32, 0.0, 0.6] {
                c.push(([hx, t * hy], [1.0, 0.0]));
                c.push(([-hx, t * hy], [-1.0, 0.0]));
                c.push(([t * hx, hy], [0.0, 1.0]));
                c.push(([t * hx, -hy], [0.0, -1.0]));
            }
            c
        }
        ObjectShape::Disc { r } => (0..8)
            .map(|k| {
                let a = k as f32 * std::f32::consts::FRAC_PI_4;
                let n = [a.cos(), a.sin()];
                (scale(n, r), n)
            })
            .collect(),
        ObjectShape::TBlock => vec![
            ([-0.7, 0.75], [0.0, 1.0]),
            ([0.0, 0.75], [0.0, 1.0]),
            ([0.7, 0.75], [0.0, 1.0]),
            ([-0.65, 0.25], [0.0, -1.0]),
            ([0.65, 0.25], [0.0, -1.0]),
            ([1.0, 0.5], [1.0, 0.0]),
            ([-1.0, 0.5], [-1.0, 0.0]),
            ([0.25, -0.2], [1.0, 0.0]),
            ([0.25, -0.9], [1.0, 0.0]),
            ([-0.25, -0.2], [-1.0, 0.0]),
            ([-0.25, -0.9], [-1.0, 0.0]),
            ([0.0, -1.25], [0.0, -1.0]),
        ],
    }
}

impl Expert {
    /// An expert whose noise stream is fixed by `seed`.
    pub fn new(cfg: ExpertConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: Rng::derive(seed, 3),
            plan: None,
        }
    }

    /// Forgets the current plan (call at every reset).
    pub fn reset(&mut self, seed: u64) {
        self.rng = Rng::derive(seed, 3);
        self.plan = None;
    }

    /// The expert's action for the current state of `env`, noise included.
    pub fn act(&mut self, env: &Env) -> Vec<f32> {
        let max = env.domain().agent().max_speed;
        let mut v = self.velocity(env);
        if self.cfg.noise > 0.0 {
            let s = self.cfg.noise * max;
            v = add(v, [s * self.rng.normal(), s * self.rng.normal()]);
        }
        env.domain().action_from_velocity(clamp_len(v, max))
    }

    /// Noise-free velocity command (world units per second).
    pub fn velocity(&mut self, env: &Env) -> V {
        let state = env.state();
        let goal = env.goal().clone();
        if goal.satisfied(state) {
            self.plan = None;
            return [0.0, 0.0];
        }
        match (env.task(), goal.object) {
            (Task::Reach, _) | (_, None) => self.reach(env, &goal),
            (_, Some(target)) => self.push(env, &target),
        }
    }

    fn go_to(env: &Env, target: V, full_speed: bool) -> V {
        let agent = env.domain().agent();
        let d = sub(target, env.state().agent.pos);
        let v = if full_speed {
            scale(d, 1e3)
        } else {
            scale(d, 0.7 / env.dt())
        };
        // A slower embodiment with inertia brakes earlier.
        let brake = if agent.response_time > 0.0 { 0.7 } else { 1.0 };
        clamp_len(v, agent.max_speed * if full_speed { 1.0 } else { brake })
    }

    fn reach(&mut self, env: &Env, goal: &Goal) -> V {
        let Some(t) = goal.agent else {
            return [0.0, 0.0];
        };
        let pos = env.state().agent.pos;
        let walls = &env.layout().walls;
        // The two inner walls of `reach` leave a door between them.
        if env.task() == Task::Reach && walls.len() >= 6 {
            let wx = walls[4].center[0];
            let lower = walls[4].center[1] + walls[4].half[1];
            let upper = walls[5].center[1] - walls[5].half[1];
            let door_y = 0.5 * (lower + upper);
            let agent_left = pos[0] < wx;
            let target_left = t.pos[0] < wx;
            if agent_left != target_left {
                let side = if agent_left { -1.0 } else { 1.0 };
                let aligned = (pos[1] - door_y).abs() < 0.3 && (pos[0] - wx).abs() < 1.4;
                let waypoint = if aligned {
                    [wx - side * 1.2, door_y]
                } else {
                    [wx + side * 1.1, door_y]
                };
                return Self::go_to(env, waypoint, true);
            }
        }
        Self::go_to(env, t.pos, false)
    }

    fn push(&mut self, env: &Env, target: &ObjectTarget) -> V {
        let state = env.state();
        let obj = state.objects[target.index];
        let agent = env.domain().agent();
        let max = agent.max_speed;
        let need_plan = match &self.plan {
            None => true,
            Some(p) => {
                p.object != target.index
                    || (p.pushing && p.steps == 0)
                    || p.approach_steps > self.cfg.approach_timeout
            }
        };
        if need_plan {
            self.plan = self.choose_push(env, target);
        }
        let Some(plan) = self.plan.as_mut() else {
            return [0.0, 0.0];
        };
        let reach = agent.shape.half_width() + 0.08;
        let n_world = rot(plan.normal, obj.angle);
        let contact = add(obj.pos, rot(plan.contact, obj.angle));
        let pre = add(contact, scale(n_world, reach));
        let to_pre = sub(pre, state.agent.pos);
        if !plan.pushing && norm(to_pre) < 0.2 {
            plan.pushing = true;
        }
        if plan.pushing {
            plan.steps = plan.steps.saturating_sub(1);
            // Push along -n, steering back onto the line through the contact.
            let lateral = sub(
                to_pre,
                scale(n_world, to_pre[0] * n_world[0] + to_pre[1] * n_world[1]),
            );
            let v = add(
                scale(n_world, -self.cfg.push_speed * max),
                scale(lateral, 3.0),
            );
            return clamp_len(v, max);
        }
        plan.approach_steps += 1;
        // Line up behind the contact (at `stage`, out along the normal), then
        // move in along the normal, so the agent never sweeps across the object.
        let stage = add(pre, scale(n_world, STAGE));
        let along = to_pre[0] * n_world[0] + to_pre[1] * n_world[1];
        let lateral = norm(sub(to_pre, scale(n_world, along)));
        if (-(STAGE + 0.1)..=0.0).contains(&along) && lateral < 0.15 {
            return Self::go_to(env, pre, false);
        }
        // Walk around the object on a circle until the stage point is in front.
        let shape = env.layout().objects[target.index].shape;
        let orbit = shape.bounding_radius() + agent.shape.bounding_radius() + 0.15;
        let from_obj = sub(state.agent.pos, obj.pos);
        let stage_from_obj = sub(stage, obj.pos);
        let delta =
            wrap(stage_from_obj[1].atan2(stage_from_obj[0]) - from_obj[1].atan2(from_obj[0]));
        let lo = WALL + agent.shape.bounding_radius() + 0.05;
        let hi = ARENA - lo;
        let inside = |w: V| [w[0].clamp(lo, hi), w[1].clamp(lo, hi)];
        if delta.abs() > 0.45 {
            let r = norm(from_obj);
            if r < orbit - 0.1 {
                // Too close to walk around: step straight out first.
                return Self::go_to(
                    env,
                    inside(add(obj.pos, scale(from_obj, orbit / r.max(1e-3)))),
                    true,
                );
            }
            let a = from_obj[1].atan2(from_obj[0]) + delta.signum() * delta.abs().min(0.9);
            return Self::go_to(env, inside(add(obj.pos, [r * a.cos(), r * a.sin()])), true);
        }
        Self::go_to(env, inside(stage), norm(sub(stage, state.agent.pos)) > 1.0)
    }

    /// Tries every contact and push length in a scratch world and returns the
    /// best push, or `None` when no contact point is free.
    fn choose_push(&mut self, env: &Env, target: &ObjectTarget) -> Option<Push> {
        let state = env.state();
        let layout = env.layout();
        let agent = env.domain().agent();
        let obj = state.objects[target.index];
        let shape = layout.objects[target.index].shape;
        let reach = agent.shape.half_width() + 0.08;
        let goal = Goal {
            agent: None,
            object: Some(*target),
        };
        let lo = WALL + agent.shape.bounding_radius() + 0.02;
        let hi = ARENA - lo;
        let mut best: Option<(f32, Push)> = None;
        for (contact, normal) in contacts(shape) {
            let n_world = rot(normal, obj.angle);
            let pre = add(add(obj.pos, rot(contact, obj.angle)), scale(n_world, reach));
            let stage = add(pre, scale(n_world, STAGE));
            let outside = |p: V| p[0] < lo || p[0] > hi || p[1] < lo || p[1] > hi;
            if outside(pre) || outside(stage) {
                continue;
            }
            let blocked = state.objects.iter().enumerate().any(|(i, o)| {
                i != target.index
                    && norm(sub(o.pos, pre))
                        < layout.objects[i].shape.bounding_radius() + agent.shape.bounding_radius()
            });
            if blocked {
                continue;
            }
            let travel = norm(sub(pre, state.agent.pos));
            for &steps in &self.cfg.push_steps {
                let mut s: SimState = state.clone();
                s.agent.pos = pre;
                s.agent.vel = [0.0, 0.0];
                let mut world = env.scratch_world(&s);
                for _ in 0..steps {
                    world.read(&mut s);
                    let o = s.objects[target.index];
                    let nw = rot(normal, o.angle);
                    let v = scale(nw, -self.cfg.push_speed * agent.max_speed);
                    world.step(v);
                }
                // Let the object coast to rest before judging the push.
                for _ in 0..COAST {
                    world.step([0.0, 0.0]);
                }
                world.read(&mut s);
                let score = goal.distance(&s) + 0.03 * travel + 0.01 * steps as f32;
                if best.as_ref().is_none_or(|(b, _)| score < *b) {
                    best = Some((
                        score,
                        Push {
                            object: target.index,
                            contact,
                            normal,
                            steps,
                            pushing: false,
                            approach_steps: 0,
                        },
                    ));
                }
            }
        }
        best.map(|(_, p)| p)
    }
}

/// Runs the noise-free-seeded expert on a fresh episode and reports whether
/// it met the task's goal within the task's budget, and in how many steps.
pub fn expert_rollout(
    task: Task,
    domain: Domain,
    seed: u64,
    cfg: &ExpertConfig,
) -> anyhow::Result<(bool, u32)> {
    let mut env = Env::new(task, domain, seed, 64)?;
    let mut expert = Expert::new(cfg.clone(), seed);
    for _ in 0..env.max_steps() {
        let a = expert.act(&env);
        let info = env.step(&a)?;
        if info.success {
            return Ok((true, info.step));
        }
    }
    Ok((false, env.max_steps()))
}
