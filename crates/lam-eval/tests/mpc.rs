//! Closed-loop MPC episodes on the simulated suite's protocol, with tiny untrained models.

use burn::prelude::*;
use lam_control::feasible::{Feasible, FeasibleSet, Target};
use lam_control::planner::{PlannerConfig, PlannerKind};
use lam_eval::mpc::{encode_goal, run_episode};
use lam_model::config::LamConfig;

/// Frame tokens `[1, 16, 32]` of a 32x32 RGB frame: 8x8 average pooling to a 4x4 grid of
/// colours, then a fixed linear map to 32 channels.
fn pooled_colour_encoder(
    dev: &Device,
) -> impl Fn(&[u8], &lam_sim::SimState, &lam_sim::Layout) -> anyhow::Result<Tensor<3>> + '_ {
    let proj: Vec<f32> = (0..3 * 32)
        .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
        .collect();
    move |rgb: &[u8], _state: &lam_sim::SimState, _layout: &lam_sim::Layout| {
        anyhow::ensure!(rgb.len() == 32 * 32 * 3, "frame of {} bytes", rgb.len());
        let mut tokens = vec![0.0f32; 16 * 32];
        for cell in 0..16 {
            let (r0, c0) = ((cell / 4) * 8, (cell % 4) * 8);
            let mut mean = [0.0f32; 3];
            for y in r0..r0 + 8 {
                for x in c0..c0 + 8 {
                    for (c, m) in mean.iter_mut().enumerate() {
                        *m += f32::from(rgb[(y * 32 + x) * 3 + c]) / (64.0 * 255.0);
                    }
                }
            }
            for j in 0..32 {
                tokens[cell * 32 + j] = (0..3).map(|c| mean[c] * proj[c * 32 + j]).sum();
            }
        }
        Ok(Tensor::<3>::from_data(
            TensorData::new(tokens, [1, 16, 32]),
            dev,
        ))
    }
}

#[test]
fn closed_loop_episode_runs_the_protocol_and_keeps_actions_in_bounds() {
    use lam_control::closed_loop::{Agent, Mode};
    use lam_sim::{domain::Domain, protocol::eval_protocol, tasks::Task};
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let lam = lam_model::train::init_model(&cfg, &dev);
    let ctrl = tiny_controller(2, &dev);
    assert_eq!((ctrl.action_dim(), ctrl.latent_dim()), (2, 16));
    let episodes = eval_protocol(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let space = episodes[0].env().unwrap().action_space();
    let encoder = pooled_colour_encoder(&dev);
    let planner = PlannerConfig {
        kind: PlannerKind::Cem,
        horizon: 3,
        samples: 16,
        elites: 4,
        iterations: 2,
        ..PlannerConfig::default()
    };
    let agent = Agent {
        cfg: &cfg,
        lam: &lam,
        controller: Some(&ctrl),
        planner: planner.clone(),
        mode: Mode::Latent,
        replan_every: 3,
        act_steps: 0,
        ensemble: Vec::new(),
        frameskip: 1,
        low: space.low.clone(),
        high: space.high.clone(),
        hold_actions: false,
        waypoints: None,
        support: None,
        feasible: None,
        memory: None,
    };
    let r = run_episode(&agent, &episodes[0], &encoder, true).unwrap();
    assert!(r.steps >= 1 && r.steps <= 50);
    assert_eq!(r.plans, (r.steps as usize).div_ceil(3));
    assert!(r.mean_plan_ms > 0.0 && r.mean_confidence.abs() <= 1.0 + 1e-5);
    let trace = r.trace.as_ref().unwrap();
    assert_eq!(trace.frames.len(), r.steps as usize);
    assert!(
        trace
            .nearest_to_prediction
            .iter()
            .all(|&i| i <= trace.frames.len())
    );

    // Step by step: a new plan every 3 calls, actions inside the box.
    let goal = encode_goal(&episodes[0], &encoder).unwrap();
    let mut session = agent.session(goal, 1);
    let mut env = episodes[0].env().unwrap();
    for k in 0..7 {
        let step = session
            .act(encoder(&env.render(), env.state(), env.layout()).unwrap())
            .unwrap();
        assert_eq!(step.planned, k % 3 == 0, "call {k}");
        assert_eq!(step.action.len(), 2);
        for (i, a) in step.action.iter().enumerate() {
            assert!(
                *a >= space.low[i] && *a <= space.high[i],
                "{a} outside the box"
            );
        }
        assert_eq!(step.predicted.dims(), [1, 16, 32]);
        env.step(&step.action).unwrap();
    }
    assert_eq!(session.plans(), 3);
    // Wrong token shapes and mismatched pieces are errors, not panics.
    let bad = Tensor::<3>::zeros([1, 9, 32], &dev);
    assert!(session.act(bad).is_err());
    let mismatched = Agent {
        mode: Mode::ActionConditioned,
        ..agent
    };
    let err = format!("{:#}", mismatched.check().unwrap_err());
    assert!(err.contains("action"), "{err}");
}

#[test]
fn closed_loop_executes_action_blocks() {
    use lam_control::closed_loop::{Agent, Mode};
    use lam_sim::{domain::Domain, protocol::eval_protocol, tasks::Task};
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let lam = lam_model::train::init_model(&cfg, &dev);
    // Blocks of 2 two-dimensional robot actions: the controller takes 4 numbers.
    let ctrl = tiny_controller(4, &dev);
    let episodes = eval_protocol(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let space = episodes[0].env().unwrap().action_space();
    let encoder = pooled_colour_encoder(&dev);
    let agent = block_agent(&cfg, &lam, Some(&ctrl), Mode::Action, &space);
    agent.check().unwrap();
    // One plan per block of two environment steps.
    let r = run_episode(&agent, &episodes[0], &encoder, false).unwrap();
    assert_eq!(r.plans, (r.steps as usize).div_ceil(2));
    let goal = encode_goal(&episodes[0], &encoder).unwrap();
    let mut session = agent.session(goal, 3);
    let mut env = episodes[0].env().unwrap();
    let step = session
        .act(encoder(&env.render(), env.state(), env.layout()).unwrap())
        .unwrap();
    assert!(step.planned);
    assert_eq!(step.action.len(), 4);
    let actions = step.actions(2);
    assert_eq!(actions.len(), 2);
    for a in &actions {
        for (i, v) in a.iter().enumerate() {
            assert!(
                *v >= space.low[i] && *v <= space.high[i],
                "{v} outside the box"
            );
        }
    }
    // Planned latents projected onto a feasible set: the same blocks, and the planners and
    // sets it cannot serve are named.
    let d = cfg.model.embed_dim;
    let frames: Vec<f32> = (0..64 * d).map(|i| (i * 37 % 101) as f32 / 101.0).collect();
    let latents: Vec<f32> = (0..64 * 16)
        .map(|i| (i * 53 % 97) as f32 / 97.0 - 0.5)
        .collect();
    let set = FeasibleSet::new(&frames, &latents, d, 16, &dev).unwrap();
    let projected = with_feasible(&agent, &set, Target::Latent);
    projected.check().unwrap();
    let r = run_episode(&projected, &episodes[0], &encoder, false).unwrap();
    assert_eq!(r.plans, (r.steps as usize).div_ceil(2));
    let gradient = Agent {
        planner: PlannerConfig {
            kind: PlannerKind::Gradient,
            ..projected.planner.clone()
        },
        low: agent.low.clone(),
        high: agent.high.clone(),
        ..projected
    };
    let err = format!("{:#}", gradient.check().unwrap_err());
    assert!(err.contains("gradient planner"), "{err}");
    let narrow = FeasibleSet::new(&frames, &latents[..64 * 8], d, 8, &dev).unwrap();
    let mismatched = with_feasible(&agent, &narrow, Target::Latent);
    let err = format!("{:#}", mismatched.check().unwrap_err());
    assert!(
        err.contains("8-D rows") && err.contains("latents 16-D"),
        "{err}"
    );
    // Projecting the predicted frames' changes instead: a set of changes as wide as the
    // frames plans an episode, and a set of latents is refused for it.
    let changes: Vec<f32> = (0..64 * d)
        .map(|i| (i * 29 % 89) as f32 / 89.0 - 0.5)
        .collect();
    let change_set = FeasibleSet::new(&frames, &changes, d, d, &dev).unwrap();
    let corrected = with_feasible(&agent, &change_set, Target::Change);
    corrected.check().unwrap();
    let r = run_episode(&corrected, &episodes[0], &encoder, false).unwrap();
    assert_eq!(r.plans, (r.steps as usize).div_ceil(2));
    let latents_for_changes = with_feasible(&agent, &set, Target::Change);
    let err = format!("{:#}", latents_for_changes.check().unwrap_err());
    assert!(err.contains("frame changes"), "{err}");
    // A block size that does not match the controller is named.
    let wrong = Agent {
        frameskip: 3,
        ..agent
    };
    let err = format!("{:#}", wrong.check().unwrap_err());
    assert!(err.contains("block"), "{err}");
}

/// `agent` planning with feasible set `set` (8 neighbours) projecting `target`.
fn with_feasible<'a>(
    agent: &lam_control::closed_loop::Agent<'a>,
    set: &'a FeasibleSet,
    target: Target,
) -> lam_control::closed_loop::Agent<'a> {
    lam_control::closed_loop::Agent {
        feasible: Some(Feasible {
            set,
            neighbours: 8,
            target,
        }),
        ..agent.clone()
    }
}

/// An untrained action-only controller from `action_dim` robot numbers (a block of actions)
/// to the tiny preset's 16-D latents.
fn tiny_controller(action_dim: usize, dev: &Device) -> lam_control::controller::Controller {
    lam_control::controller::ControllerNetConfig {
        action_dim,
        latent_dim: 16,
        frame_dim: 0,
        hidden: 32,
    }
    .init(dev)
}

/// An agent planning blocks of 2 actions of the robot's `space` with a small CEM (16
/// candidates, 4 elites, 2 iterations, horizon 2), a whole block per call.
fn block_agent<'a>(
    cfg: &'a LamConfig,
    lam: &'a lam_model::LatentActionModel,
    controller: Option<&'a lam_control::controller::Controller>,
    mode: lam_control::closed_loop::Mode,
    space: &lam_sim::ActionSpace,
) -> lam_control::closed_loop::Agent<'a> {
    lam_control::closed_loop::Agent {
        cfg,
        lam,
        controller,
        planner: PlannerConfig {
            kind: PlannerKind::Cem,
            horizon: 2,
            samples: 16,
            elites: 4,
            iterations: 2,
            ..PlannerConfig::default()
        },
        mode,
        replan_every: 1,
        act_steps: 0,
        ensemble: Vec::new(),
        frameskip: 2,
        low: space.low.clone(),
        high: space.high.clone(),
        hold_actions: false,
        waypoints: None,
        support: None,
        feasible: None,
        memory: None,
    }
}

/// An untrained tiny action-conditioned model taking blocks of 2 two-dimensional actions (4
/// numbers per step), for [`block_agent`].
fn action_conditioned_on_blocks(dev: &Device) -> (LamConfig, lam_model::LatentActionModel) {
    let mut cfg = LamConfig::preset("tiny").unwrap();
    cfg.model.conditioning = lam_model::config::Conditioning::Action;
    cfg.model.latent_dim = 4;
    let lam = lam_model::train::init_model(&cfg, dev);
    (cfg, lam)
}

#[test]
fn acting_part_of_a_block_plans_at_every_call_from_block_spaced_history() {
    use lam_control::closed_loop::{Agent, Mode};
    use lam_sim::{domain::Domain, protocol::eval_protocol, tasks::Task};
    // An action-conditioned model on blocks of 2 two-dimensional actions: its history labels
    // are the 4 numbers executed between two frames one block apart, whatever the call rate.
    let dev = Device::flex();
    let (cfg, lam) = action_conditioned_on_blocks(&dev);
    let episodes = eval_protocol(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let space = episodes[0].env().unwrap().action_space();
    let encoder = pooled_colour_encoder(&dev);
    let whole = block_agent(&cfg, &lam, None, Mode::ActionConditioned, &space);
    let stepwise = Agent {
        act_steps: 1,
        ..whole.clone()
    };
    stepwise.check().unwrap();
    // The first call plans the same block from the same frame; one of its actions comes back.
    let goal = encode_goal(&episodes[0], &encoder).unwrap();
    let mut env = episodes[0].env().unwrap();
    let first = encoder(&env.render(), env.state(), env.layout()).unwrap();
    let block = whole.session(goal.clone(), 3).act(first.clone()).unwrap();
    let mut session = stepwise.session(goal, 3);
    let one = session.act(first).unwrap();
    assert_eq!(block.action.len(), 4);
    assert_eq!(one.action, block.action[..2].to_vec());
    // A whole episode: a plan per step, history past the first block included (an episode of
    // the untrained model runs the protocol's 50 steps).
    let r = run_episode(&stepwise, &episodes[0], &encoder, false).unwrap();
    assert!(r.steps > 4, "{} steps", r.steps);
    assert_eq!(r.plans, r.steps as usize);
    assert!(r.mean_planning_error.is_finite() && r.mean_planning_error > 0.0);
    // A call rate that does not divide the block is named.
    let odd = Agent {
        act_steps: 3,
        ..whole
    };
    let err = format!("{:#}", odd.check().unwrap_err());
    assert!(err.contains("act steps must divide"), "{err}");
}

#[test]
fn an_ensemble_of_copies_plans_what_its_model_plans_and_mismatched_members_are_named() {
    use lam_control::closed_loop::{Agent, Member, Mode};
    use lam_sim::{domain::Domain, protocol::eval_protocol, tasks::Task};
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let lam = lam_model::train::init_model(&cfg, &dev);
    let ctrl = tiny_controller(4, &dev);
    let episodes = eval_protocol(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let space = episodes[0].env().unwrap().action_space();
    let encoder = pooled_colour_encoder(&dev);
    let single = block_agent(&cfg, &lam, Some(&ctrl), Mode::Action, &space);
    let copy = Member {
        cfg: &cfg,
        lam: &lam,
        controller: Some(&ctrl),
    };
    let pair = Agent {
        ensemble: vec![copy],
        ..single.clone()
    };
    pair.check().unwrap();
    // The mean of two equal costs is that cost: the same plans, step for step, and each
    // member's history (its own labels and cache) follows the episode as the model's does.
    let goal = encode_goal(&episodes[0], &encoder).unwrap();
    let (mut a, mut b) = (single.session(goal.clone(), 5), pair.session(goal, 5));
    let mut env = episodes[0].env().unwrap();
    for _ in 0..4 {
        let s = encoder(&env.render(), env.state(), env.layout()).unwrap();
        let (x, y) = (a.act(s.clone()).unwrap(), b.act(s).unwrap());
        assert_eq!(x.action, y.action);
        assert_eq!(x.cost, y.cost);
        for step in x.actions(2) {
            env.step(&step).unwrap();
        }
    }
    // A member whose controller takes other blocks, and an ensemble in latent space, are named.
    let narrow = tiny_controller(2, &dev);
    let wrong = Agent {
        ensemble: vec![Member {
            controller: Some(&narrow),
            ..copy
        }],
        ..single.clone()
    };
    let err = format!("{:#}", wrong.check().unwrap_err());
    assert!(err.contains("ensemble member 1"), "{err}");
    let latent = Agent {
        mode: Mode::Latent,
        ensemble: vec![copy],
        ..single
    };
    let err = format!("{:#}", latent.check().unwrap_err());
    assert!(err.contains("robot-action search space"), "{err}");
}

#[test]
fn an_episode_memory_runs_whole_blocks_and_parts_of_them_and_is_refused_in_latent_space() {
    use lam_control::closed_loop::{Agent, Mode};
    use lam_control::memory::MemoryConfig;
    use lam_sim::{domain::Domain, protocol::eval_protocol, tasks::Task};
    let dev = Device::flex();
    let (cfg, lam) = action_conditioned_on_blocks(&dev);
    let episodes = eval_protocol(Task::Reach, Domain::Robot, 1, 32).unwrap();
    let space = episodes[0].env().unwrap().action_space();
    let encoder = pooled_colour_encoder(&dev);
    let whole = Agent {
        memory: Some(MemoryConfig::default()),
        ..block_agent(&cfg, &lam, None, Mode::ActionConditioned, &space)
    };
    // Whole blocks (a memory entry per block) and one action per call (an entry per call,
    // each the block of the last two steps): both run the protocol's episode to its end.
    for agent in [
        whole.clone(),
        Agent {
            act_steps: 1,
            ..whole.clone()
        },
    ] {
        let r = run_episode(&agent, &episodes[0], &encoder, false).unwrap();
        let per_plan = agent.steps_per_call();
        assert!(r.steps > 4, "{} steps", r.steps);
        assert_eq!(r.plans, (r.steps as usize).div_ceil(per_plan));
        assert!(r.mean_planning_error.is_finite());
    }
    // A session keeps no more blocks than the memory's capacity: the newest ones.
    let capped = Agent {
        memory: Some(MemoryConfig {
            capacity: 2,
            ..MemoryConfig::default()
        }),
        ..whole.clone()
    };
    let goal = encode_goal(&episodes[0], &encoder).unwrap();
    let mut session = capped.session(goal, 3);
    let mut env = episodes[0].env().unwrap();
    for call in 0..5 {
        let s = encoder(&env.render(), env.state(), env.layout()).unwrap();
        let step = session.act(s).unwrap();
        assert_eq!(session.remembered(), call.min(2), "call {call}");
        for a in step.actions(space.dim) {
            env.step(&a).unwrap();
        }
    }
    // Widths that are not positive, and a latent search space, are named.
    let bad = Agent {
        memory: Some(MemoryConfig {
            action_scale: -1.0,
            ..MemoryConfig::default()
        }),
        ..whole
    };
    let err = format!("{:#}", bad.check().unwrap_err());
    assert!(err.contains("memory action scale"), "{err}");
    let latent_cfg = LamConfig::preset("tiny").unwrap();
    let latent_lam = lam_model::train::init_model(&latent_cfg, &dev);
    let ctrl = tiny_controller(4, &dev);
    let latent = Agent {
        memory: Some(MemoryConfig::default()),
        ..block_agent(&latent_cfg, &latent_lam, Some(&ctrl), Mode::Latent, &space)
    };
    let err = format!("{:#}", latent.check().unwrap_err());
    assert!(err.contains("episode memory"), "{err}");
}
