//! Rigid-body physics of one episode on rapier2d: a top-down table with no
//! gravity, table friction modelled as velocity damping, contacts with
//! friction between the agent, the objects and the walls.

use crate::domain::{AgentParams, AgentShape};
use crate::scene::{BodyState, Layout, ObjectShape, SimState, T_BAR, T_STEM};
use rapier2d::prelude::*;
use serde::{Deserialize, Serialize};

/// Physics settings. Defaults in brackets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhysicsConfig {
    /// Control steps per second: each action is held for `1 / control_hz`
    /// seconds [10].
    pub control_hz: f32,
    /// Physics substeps per control step [5].
    pub substeps: u32,
    /// Linear damping of objects, standing in for friction with the table [6].
    pub object_linear_damping: f32,
    /// Angular damping of objects [6].
    pub object_angular_damping: f32,
    /// Object mass density [1].
    pub object_density: f32,
    /// Coulomb friction coefficient of every collider [0.4].
    pub friction: f32,
}

impl Default for PhysicsConfig {
    fn default() -> Self {
        Self {
            control_hz: 10.0,
            substeps: 5,
            object_linear_damping: 6.0,
            object_angular_damping: 6.0,
            object_density: 1.0,
            friction: 0.4,
        }
    }
}

/// The rapier world of an episode.
pub struct World {
    bodies: RigidBodySet,
    colliders: ColliderSet,
    pipeline: PhysicsPipeline,
    islands: IslandManager,
    broad_phase: BroadPhaseBvh,
    narrow_phase: NarrowPhase,
    impulse_joints: ImpulseJointSet,
    multibody_joints: MultibodyJointSet,
    soft_bodies: SoftBodySet,
    ccd: CCDSolver,
    params: IntegrationParameters,
    agent: RigidBodyHandle,
    objects: Vec<RigidBodyHandle>,
    agent_params: AgentParams,
    substeps: u32,
}

fn v(p: [f32; 2]) -> Vector {
    Vector::new(p[0], p[1])
}

impl World {
    /// Builds the world of `layout` with every moving body at `state`.
    /// Building from a state (rather than copying a live world) makes a
    /// restored state replay bit for bit.
    pub fn new(
        layout: &Layout,
        state: &SimState,
        agent_params: AgentParams,
        cfg: &PhysicsConfig,
    ) -> Self {
        let mut bodies = RigidBodySet::new();
        let mut colliders = ColliderSet::new();
        for w in &layout.walls {
            colliders.insert(
                ColliderBuilder::cuboid(w.half[0], w.half[1])
                    .translation(v(w.center))
                    .friction(cfg.friction)
                    .build(),
            );
        }
        let a = &state.agent;
        let agent = bodies.insert(
            RigidBodyBuilder::dynamic()
                .translation(v(a.pos))
                .linvel(v(a.vel))
                .lock_rotations()
                .ccd_enabled(true)
                .build(),
        );
        let agent_collider = match agent_params.shape {
            AgentShape::Disc { radius } => ColliderBuilder::ball(radius),
            AgentShape::RoundSquare { half, round } => {
                ColliderBuilder::round_cuboid(half, half, round)
            }
        };
        colliders.insert_with_parent(
            agent_collider
                .density(agent_params.density)
                .friction(cfg.friction)
                .build(),
            agent,
            &mut bodies,
        );
        let mut objects = Vec::with_capacity(layout.objects.len());
        for (spec, s) in layout.objects.iter().zip(&state.objects) {
            let h = bodies.insert(
                RigidBodyBuilder::dynamic()
                    .translation(v(s.pos))
                    .rotation(s.angle)
                    .linvel(v(s.vel))
                    .angvel(s.angvel)
                    .linear_damping(cfg.object_linear_damping)
                    .angular_damping(cfg.object_angular_damping)
                    .build(),
            );
            let parts: Vec<ColliderBuilder> = match spec.shape {
                ObjectShape::Box { hx, hy } => vec![ColliderBuilder::cuboid(hx, hy)],
                ObjectShape::Disc { r } => vec![ColliderBuilder::ball(r)],
                ObjectShape::TBlock => [T_BAR, T_STEM]
                    .iter()
                    .map(|p| {
                        ColliderBuilder::cuboid(p[2], p[3]).translation(Vector::new(p[0], p[1]))
                    })
                    .collect(),
            };
            for c in parts {
                colliders.insert_with_parent(
                    c.density(cfg.object_density).friction(cfg.friction).build(),
                    h,
                    &mut bodies,
                );
            }
            objects.push(h);
        }
        let params = IntegrationParameters {
            dt: 1.0 / (cfg.control_hz * cfg.substeps as f32),
            ..Default::default()
        };
        Self {
            bodies,
            colliders,
            pipeline: PhysicsPipeline::new(),
            islands: IslandManager::new(),
            broad_phase: BroadPhaseBvh::new(),
            narrow_phase: NarrowPhase::new(),
            impulse_joints: ImpulseJointSet::new(),
            multibody_joints: MultibodyJointSet::new(),
            soft_bodies: SoftBodySet::default(),
            ccd: CCDSolver::new(),
            params,
            agent,
            objects,
            agent_params,
            substeps: cfg.substeps,
        }
    }

    /// Advances one control step while the agent tracks the velocity command
    /// `cmd` (world units per second) with its embodiment's response time.
    pub fn step(&mut self, cmd: [f32; 2]) {
        let dt = self.params.dt;
        let alpha = if self.agent_params.response_time > 0.0 {
            1.0 - (-dt / self.agent_params.response_time).exp()
        } else {
            1.0
        };
        for _ in 0..self.substeps {
            let body = &mut self.bodies[self.agent];
            let cur = body.linvel();
            let next = Vector::new(
                cur.x + alpha * (cmd[0] - cur.x),
                cur.y + alpha * (cmd[1] - cur.y),
            );
            body.set_linvel(next, true);
            self.pipeline.step(
                Vector::ZERO,
                &self.params,
                &mut self.islands,
                &mut self.broad_phase,
                &mut self.narrow_phase,
                &mut self.bodies,
                &mut self.colliders,
                &mut self.impulse_joints,
                &mut self.multibody_joints,
                &mut self.soft_bodies,
                &mut self.ccd,
                &(),
                &(),
            );
        }
    }

    fn body_state(&self, h: RigidBodyHandle) -> BodyState {
        let b = &self.bodies[h];
        let t = b.translation();
        let lv = b.linvel();
        BodyState {
            pos: [t.x, t.y],
            angle: b.rotation().angle(),
            vel: [lv.x, lv.y],
            angvel: b.angvel(),
        }
    }

    /// Writes the agent's and the objects' poses and velocities into `state`.
    pub fn read(&self, state: &mut SimState) {
        state.agent = self.body_state(self.agent);
        state.objects.clear();
        for &h in &self.objects {
            let s = self.body_state(h);
            state.objects.push(s);
        }
    }
}
