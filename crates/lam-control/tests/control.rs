//! Planners and controller on tiny models.

use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use lam_control::controller::{ControllerConfig, fit, fit_with, pseudo_label};
use lam_control::planner::{PlannerConfig, PlannerKind, Problem, SearchSpace, plan};
use lam_control::rollout::{HostRollout, cost, rollout};
use lam_data::synthetic::{SyntheticConfig, write_synthetic};
use lam_data::{ShardSet, Split};
use lam_model::config::LamConfig;
use lam_model::train::{TrainOptions, train};
use lam_model::world_model::WorldModel;

/// A tiny world model whose AdaLN heads are not zero, so actions matter.
fn acting_world_model(cfg: &LamConfig, dev: &Device) -> WorldModel {
    dev.seed(7);
    let mut wm = cfg.model.world_model().init(dev);
    let w = cfg.model.wm_dim;
    for block in wm.blocks.iter_mut() {
        block.ada = LinearConfig::new(w, 6 * w).init(dev);
    }
    wm.final_ada = LinearConfig::new(w, 2 * w).init(dev);
    wm
}

#[test]
fn cached_and_recomputed_rollouts_agree() {
    let _serial = serial();
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let wm = acting_world_model(&cfg, &dev);
    let normal = Distribution::Normal(0.0, 1.0);
    let history = Tensor::<4>::random([1, 2, 16, 32], normal, &dev);
    let history_z = Tensor::<3>::random([1, 2, 16], normal, &dev);
    let cache = wm.prefill(history.clone(), history_z.clone(), 7);
    let current = Tensor::<3>::random([1, 16, 32], normal, &dev);
    let problem = |use_cache| Problem {
        world_model: &wm,
        cache: Some(&cache),
        window: 7,
        history: Some((history.clone(), history_z.clone())),
        use_cache,
        host: HostRollout::default(),
        current: current.clone(),
        goal: current.clone(),
        support: None,
        feasible: None,
        memory: None,
    };
    let space = SearchSpace::Latent { dim: 16 };
    let seqs: Vec<f32> = Tensor::<3>::random([6, 5, 16], normal, &dev)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let a = rollout(&problem(true), &space, &seqs, 6, 5);
    let b = rollout(&problem(false), &space, &seqs, 6, 5);
    let diff = (a - b).abs().max().into_scalar::<f32>();
    assert!(
        diff < 1e-4,
        "cached and recomputed rollouts differ by {diff}"
    );
}

#[test]
fn planners_reach_a_reachable_goal() {
    let _serial = serial();
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let wm = acting_world_model(&cfg, &dev);
    let normal = Distribution::Normal(0.0, 1.0);
    let current = Tensor::<3>::random([1, 16, 32], normal, &dev);
    let space = SearchSpace::Latent { dim: 16 };
    // The goal is where a known latent sequence leads.
    let target: Vec<f32> = Tensor::<3>::random([1, 3, 16], normal, &dev)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let base = Problem {
        world_model: &wm,
        cache: None,
        window: 7,
        history: None,
        use_cache: true,
        host: HostRollout::default(),
        current: current.clone(),
        goal: current.clone(),
        support: None,
        feasible: None,
        memory: None,
    };
    let goal = rollout(&base, &space, &target, 1, 3);
    let problem = Problem {
        goal: goal.clone(),
        ..base
    };
    // What a random sequence achieves on average.
    let random: Vec<f32> = Tensor::<3>::random([64, 3, 16], normal, &dev)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let random_cost = cost(
        lam_control::planner::CostKind::Cosine,
        true,
        rollout(&problem, &space, &random, 64, 3),
        goal.clone(),
    )
    .mean()
    .into_scalar::<f32>();
    for kind in [
        PlannerKind::RandomShooting,
        PlannerKind::Cem,
        PlannerKind::Icem,
        PlannerKind::Mppi,
        PlannerKind::Gradient,
    ] {
        let gradient = kind == PlannerKind::Gradient;
        let cfg = PlannerConfig {
            kind,
            horizon: 3,
            samples: if gradient { 8 } else { 64 },
            elites: 8,
            iterations: if gradient { 30 } else { 6 },
            ..PlannerConfig::default()
        };
        let p = plan(&cfg, &problem, &space);
        assert_eq!(p.sequence.len(), 3 * 16);
        // The reported cost is what the returned sequence achieves (a planner that returned
        // one sequence and scored another would pass the comparisons below).
        let again = cost(
            lam_control::planner::CostKind::Cosine,
            true,
            rollout(&problem, &space, &p.sequence, 1, 3),
            goal.clone(),
        )
        .into_scalar::<f32>();
        assert!(
            (again - p.cost).abs() <= 1e-3 * (1.0 + again.abs()),
            "{kind:?}: reports cost {} but its sequence costs {again}",
            p.cost
        );
        assert!(
            p.cost < random_cost,
            "{kind:?}: plan cost {} not below the random mean {random_cost}",
            p.cost
        );
        assert!(p.confidence > 0.9, "{kind:?}: confidence {}", p.confidence);
        if kind != PlannerKind::RandomShooting {
            assert!(
                p.cost < 0.5 * random_cost,
                "{kind:?}: plan cost {} vs random {random_cost}",
                p.cost
            );
        }
    }
}

#[test]
fn action_space_plans_stay_in_bounds() {
    let _serial = serial();
    let cfg = LamConfig::preset("tiny").unwrap();
    let dev = Device::flex();
    let wm = acting_world_model(&cfg, &dev);
    let ctrl = lam_control::controller::ControllerNetConfig {
        action_dim: 2,
        latent_dim: 16,
        frame_dim: 0,
        hidden: 32,
    }
    .init(&dev);
    let current = Tensor::<3>::random([1, 16, 32], Distribution::Normal(0.0, 1.0), &dev);
    let problem = Problem {
        world_model: &wm,
        cache: None,
        window: 7,
        history: None,
        use_cache: true,
        host: HostRollout::default(),
        current: current.clone(),
        goal: current * 0.5,
        support: None,
        feasible: None,
        memory: None,
    };
    let space = SearchSpace::Action {
        low: vec![-1.0, -0.5],
        high: vec![1.0, 0.5],
        controller: Some(&ctrl),
        repeat: 1,
    };
    let cfg = PlannerConfig {
        horizon: 4,
        samples: 32,
        elites: 4,
        iterations: 3,
        ..PlannerConfig::default()
    };
    let p = plan(&cfg, &problem, &space);
    for k in 0..4 {
        let a = p.step(k);
        assert!(
            (-1.0..=1.0).contains(&a[0]) && (-0.5..=0.5).contains(&a[1]),
            "step {k}: {a:?}"
        );
    }
}

#[test]
fn controller_aligns_with_pseudo_labels() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_synthetic(
        &data,
        &SyntheticConfig {
            clips: 160,
            labeled: true,
            val_fraction: 0.2,
            ..Default::default()
        },
    )
    .unwrap();
    let train_set = ShardSet::open(&data, Some(Split::Train)).unwrap();
    let val_set = ShardSet::open(&data, Some(Split::Val)).unwrap();
    let mut cfg = LamConfig::preset("tiny").unwrap();
    cfg.train.steps = 120;
    cfg.train.val_every = 0;
    let dev = Device::flex();
    let run = tmp.path().join("run");
    let summary = train(
        &cfg,
        &train_set,
        None,
        &dev,
        &TrainOptions {
            run_dir: run.clone(),
            resume: false,
            force: false,
            progress: false,
            stop_after: None,
        },
    )
    .unwrap();
    let lam = lam_model::checkpoint::load_weights(
        lam_model::train::init_model(&cfg, &dev),
        &summary.last_checkpoint.unwrap().join("model.safetensors"),
    )
    .unwrap();
    let tr = pseudo_label(&cfg, &lam, &train_set, &dev, 32, true).unwrap();
    let va = pseudo_label(&cfg, &lam, &val_set, &dev, 32, true).unwrap();
    assert_eq!(tr.len(), 128 * 7);
    let ccfg = ControllerConfig {
        steps: 400,
        hidden: 64,
        ..Default::default()
    };
    let fit_cfg =
        |c: &ControllerConfig| fit_with(c, &tr, &va, Some(&lam.world_model), &dev, None).unwrap();
    let (_, report, _) = fit_cfg(&ccfg);
    assert!(report.cosine > 0.5, "controller cosine {}", report.cosine);
    // Fitted through the world model as well, the controller's latents make the world model
    // predict the held-out clips better than latents regressed onto the IDM's alone.
    let short = ControllerConfig {
        prediction_weight: 10.0,
        steps: 150,
        batch_size: 64,
        ..ccfg.clone()
    };
    let (_, plain_short, _) = fit_cfg(&ControllerConfig {
        prediction_weight: 0.0,
        ..short.clone()
    });
    let (_, through, _) = fit_cfg(&short);
    let (plain, fitted) = (
        plain_short.prediction_error.unwrap(),
        through.prediction_error.unwrap(),
    );
    assert!(
        fitted < plain,
        "prediction error {fitted} through the world model vs {plain} by regression (IDM {})",
        report.prediction_error_idm.unwrap()
    );
    // Trained along, the world model comes back changed and predicts the held-out clips
    // from the controller's latents better still.
    let (_, along, tuned) = fit_cfg(&ControllerConfig {
        world_model_lr: 1e-3,
        ..short.clone()
    });
    assert!(tuned.is_some());
    let tuned_error = along.prediction_error.unwrap();
    assert!(
        tuned_error < fitted,
        "prediction error {tuned_error} with the world model trained along vs {fitted} frozen"
    );
    assert!(
        report.inverse_mse < report.action_variance,
        "inverse MSE {} vs action variance {}",
        report.inverse_mse,
        report.action_variance
    );
    // Unlabeled shards are refused with the folder's name.
    let unl = tmp.path().join("unlabeled");
    write_synthetic(
        &unl,
        &SyntheticConfig {
            clips: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let err = pseudo_label(
        &cfg,
        &lam,
        &ShardSet::open(&unl, None).unwrap(),
        &dev,
        8,
        false,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("unlabeled") && err.contains("no actions"),
        "{err}"
    );
}

#[test]
fn planning_objectives_score_final_mean_and_best_step() {
    let _serial = serial();
    use lam_control::planner::{CostKind, Objective};
    use lam_control::rollout::trajectory_cost;
    let dev = Device::flex();
    // Two candidates, three steps, one 1-channel token each; the goal is 0.
    let steps = Tensor::<4>::from_data(
        TensorData::new(vec![3.0f32, 0.0, 2.0, 1.0, 1.0, 1.0], [2, 3, 1, 1]),
        &dev,
    );
    let goal = Tensor::<3>::zeros([1, 1, 1], &dev);
    let cost = |o: Objective| -> Vec<f32> {
        trajectory_cost(CostKind::Mse, true, o, steps.clone(), goal.clone())
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    // The first candidate passes through the goal at step 2 and leaves it.
    assert_eq!(cost(Objective::Final), vec![4.0, 1.0]);
    assert_eq!(cost(Objective::Min), vec![0.0, 1.0]);
    let sum = cost(Objective::Sum);
    assert!(
        (sum[0] - 13.0 / 3.0).abs() < 1e-5 && (sum[1] - 1.0).abs() < 1e-6,
        "{sum:?}"
    );
    assert_eq!("min".parse::<Objective>().unwrap(), Objective::Min);
    assert!("best".parse::<Objective>().is_err());
}

/// `n` transitions of uniform 2-D actions in [-1, 1]; `make` gives each action's latent
/// (`latent_dim` values) and frame (`frame_dim` values), drawing any noise from the same
/// generator after the action.
fn transitions(
    n: usize,
    seed: u64,
    latent_dim: usize,
    frame_dim: usize,
    make: impl Fn([f32; 2], &mut rand::rngs::StdRng) -> (Vec<f32>, Vec<f32>),
) -> lam_control::controller::Transitions {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut actions, mut latents, mut frames) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let a = [
            rng.random_range(-1.0f32..1.0),
            rng.random_range(-1.0f32..1.0),
        ];
        let (z, f) = make(a, &mut rng);
        actions.extend(a);
        latents.extend(z);
        frames.extend(f);
    }
    lam_control::controller::Transitions {
        actions,
        latents,
        frames,
        action_dim: 2,
        latent_dim,
        frame_dim,
        clips: None,
    }
}

/// Transitions in which the same action moves the agent one way in free space and the other
/// way against a "wall" (the frame's first channel says which): the latent depends on the
/// frame, as it does when walls stop the agent.
fn state_dependent_transitions(n: usize, seed: u64) -> lam_control::controller::Transitions {
    use rand::RngExt;
    transitions(n, seed, 3, 2, |a, rng| {
        let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
        (
            vec![sign * a[0], sign * a[1], 0.5 * a[0] + 0.2],
            vec![sign, rng.random_range(-1.0f32..1.0)],
        )
    })
}

#[test]
fn frame_conditioned_controller_learns_what_the_state_does_to_an_action() {
    let _serial = serial();
    let dev = Device::flex();
    let (tr, va) = (
        state_dependent_transitions(800, 1),
        state_dependent_transitions(200, 2),
    );
    let cfg = ControllerConfig {
        steps: 600,
        hidden: 64,
        ..Default::default()
    };
    let (_, blind) = fit(&cfg, &tr, &va, &dev).unwrap();
    let (ctrl, seeing) = fit(
        &ControllerConfig {
            frame_conditioned: true,
            ..cfg.clone()
        },
        &tr,
        &va,
        &dev,
    )
    .unwrap();
    assert!(
        seeing.cosine > 0.9 && seeing.cosine > blind.cosine + 0.2,
        "held-out cosine {} with the frame, {} without",
        seeing.cosine,
        blind.cosine
    );
    assert_eq!(ctrl.frame_dim(), 2);
    // Saved and loaded, it still reads frames and maps the same way.
    let tmp = tempfile::tempdir().unwrap();
    lam_control::controller::save(&ctrl, tmp.path(), &seeing, &cfg, 2, 3).unwrap();
    let back = lam_control::controller::load(tmp.path(), &dev).unwrap();
    assert_eq!(back.frame_dim(), 2);
    let cos = lam_control::controller::evaluate(&back, &va, &dev).cosine;
    assert!(
        (cos - seeing.cosine).abs() < 1e-5,
        "{cos} vs {}",
        seeing.cosine
    );
    // Its model folder alone (config.json + model.safetensors, as shared) loads the same.
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tmp.path().join("model").join(f), shared.join(f)).unwrap();
    }
    let card = std::fs::read_to_string(tmp.path().join("model/README.md")).unwrap();
    assert!(card.contains("| report.cosine |"), "{card}");
    let back = lam_control::controller::load(&shared, &dev).unwrap();
    let cos = lam_control::controller::evaluate(&back, &va, &dev).cosine;
    assert!((cos - seeing.cosine).abs() < 1e-5);
}

#[test]
fn planner_settings_no_planner_can_run_are_named() {
    let _serial = serial();
    PlannerConfig::default().validate().unwrap();
    let bad = |cfg: PlannerConfig, what: &str| {
        let err = format!("{:#}", cfg.validate().unwrap_err());
        assert!(err.contains(what), "{err}");
    };
    bad(
        PlannerConfig {
            horizon: 0,
            ..Default::default()
        },
        "horizon",
    );
    bad(
        PlannerConfig {
            elites: 301,
            ..Default::default()
        },
        "elites",
    );
    bad(
        PlannerConfig {
            temperature: f64::NAN,
            ..Default::default()
        },
        "temperature",
    );
}

/// Transitions whose latent is a smooth function of the first action value only, in frames
/// of noise: the controller (a, s) -> z can learn it, the inverse (z, s) -> a cannot recover
/// the second value and, reading the frames' noise, soon fits only that.
fn half_invertible_transitions(n: usize, seed: u64) -> lam_control::controller::Transitions {
    use rand::RngExt;
    transitions(n, seed, 2, 4, |a, rng| {
        (
            vec![(3.0 * a[0]).sin(), (2.0 * a[0]).cos()],
            (0..4).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        )
    })
}

#[test]
fn early_stopping_keeps_each_direction_at_its_own_best() {
    let _serial = serial();
    let dev = Device::flex();
    let (tr, va) = (
        half_invertible_transitions(100, 5),
        half_invertible_transitions(200, 6),
    );
    let cfg = ControllerConfig {
        steps: 3000,
        hidden: 128,
        batch_size: 32,
        frame_conditioned: true,
        check_every: 50,
        patience: 4,
        ..Default::default()
    };
    let (_, report) = fit(&cfg, &tr, &va, &dev).unwrap();
    // The inverse stops improving early; the controller goes on learning past it, and the
    // fit ends only once both have stalled.
    assert!(
        report.best_step > report.inverse_best_step,
        "controller kept at step {}, inverse at {}",
        report.best_step,
        report.inverse_best_step
    );
    assert!(report.steps_run >= report.best_step + cfg.patience * cfg.check_every);
    let r2 = report.r2.expect("latents vary");
    eprintln!(
        "steps run {}, controller kept at {}, inverse at {}, R^2 {r2}",
        report.steps_run, report.best_step, report.inverse_best_step
    );
    assert!(r2 > 0.9, "controller R^2 {r2}");
}

#[test]
fn controller_fit_resumes_exactly_from_its_checkpoints() {
    let _serial = serial();
    use lam_control::controller::FitCheckpoints;
    let dev = Device::flex();
    let (tr, va) = (
        state_dependent_transitions(400, 3),
        state_dependent_transitions(100, 4),
    );
    let cfg = ControllerConfig {
        steps: 500,
        hidden: 32,
        batch_size: 64,
        frame_conditioned: true,
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let at = |name: &str, resume: bool| FitCheckpoints {
        dir: dir.path().join(name),
        resume,
    };
    let (a, ra, _) = fit_with(&cfg, &tr, &va, None, &dev, Some(&at("whole", false))).unwrap();
    // The same fit, then resumed from its newest checkpoint (step 400, as after a kill in the
    // last stretch): the same weights and report.
    fit_with(&cfg, &tr, &va, None, &dev, Some(&at("cut", false))).unwrap();
    let ckpts = dir.path().join("cut").join("checkpoints");
    assert_eq!(
        std::fs::read_to_string(ckpts.join("latest")).unwrap(),
        "step-0000400"
    );
    let (b, rb, _) = fit_with(&cfg, &tr, &va, None, &dev, Some(&at("cut", true))).unwrap();
    assert_eq!(
        (ra.cosine, ra.inverse_mse, ra.best_step, ra.steps_run),
        (rb.cosine, rb.inverse_mse, rb.best_step, rb.steps_run)
    );
    // Each fit logged its checks; the resumed one kept the lines up to its checkpoint and
    // wrote the rest once.
    let log =
        |name: &str| std::fs::read_to_string(dir.path().join(name).join("metrics.jsonl")).unwrap();
    assert!(log("whole").lines().any(|l| l.contains("\"val\"")));
    assert_eq!(log("whole"), log("cut"));
    let probe = |c: &lam_control::controller::Controller| -> Vec<f32> {
        let x = Tensor::<2>::from_data(TensorData::new(vec![0.3f32, -0.7], [1, 2]), &dev);
        let f = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32, 0.4], [1, 2]), &dev);
        c.to_latent(x, Some(f))
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    assert_eq!(probe(&a), probe(&b));
    // Without the optimizer state the resumed fit would differ: the checkpoint carries it.
    std::fs::remove_file(ckpts.join("step-0000400").join("optimizer.bpk")).unwrap();
    let err = fit_with(&cfg, &tr, &va, None, &dev, Some(&at("cut", true)))
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(err.contains("optimizer"), "{err}");
    // Other settings are refused by name.
    let other = ControllerConfig {
        lr: 1e-4,
        ..cfg.clone()
    };
    let err = format!(
        "{:#}",
        fit_with(&other, &tr, &va, None, &dev, Some(&at("whole", true))).unwrap_err()
    );
    assert!(err.contains("other settings"), "{err}");
    // A state written before each direction kept its own best (one best for both) is named,
    // with what to do.
    let state = dir
        .path()
        .join("whole")
        .join("checkpoints")
        .join("step-0000400")
        .join("state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["best"] = serde_json::json!({"loss": 0.1, "step": 300});
    std::fs::write(&state, v.to_string()).unwrap();
    let err = format!(
        "{:#}",
        fit_with(&cfg, &tr, &va, None, &dev, Some(&at("whole", true))).unwrap_err()
    );
    assert!(
        err.contains("state.json") && err.contains("fit again without --resume"),
        "{err}"
    );
}

/// The tests of this file run one at a time: they share the device's random generator (weight
/// initialisation after `seed`), so in parallel one test's draws could land in another's fit
/// (the resume test compares two fits that must start from the same weights).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn an_episode_memory_holds_a_remembered_push_at_every_step_it_recurs() {
    let _serial = serial();
    let mut cfg = LamConfig::preset("tiny").unwrap();
    cfg.model.conditioning = lam_model::config::Conditioning::Action;
    let dev = Device::flex();
    let mut lam = lam_model::train::init_model(&cfg, &dev);
    lam.world_model = acting_world_model(&cfg, &dev);
    let normal = Distribution::Normal(0.0, 1.0);
    let current = Tensor::<3>::random([1, 16, 32], normal, &dev);
    // Robot actions of 2 numbers held for blocks of 8 (the model's 16-D action).
    let space = SearchSpace::Action {
        low: vec![-1.0, -1.0],
        high: vec![1.0, 1.0],
        controller: None,
        repeat: 8,
    };
    let push = [0.8f32, -0.5];
    // The episode pushed from the current frame and did not move.
    let stuck = lam_control::memory::Transition {
        from: current.clone(),
        actions: push.repeat(8),
        to: current.clone(),
    };
    let memory = lam_control::memory::EpisodeMemory::new(
        &lam,
        &[stuck],
        lam_control::memory::MemoryConfig::default(),
    );
    let problem = |memory| Problem {
        world_model: &lam.world_model,
        cache: None,
        window: 7,
        history: None,
        use_cache: true,
        host: HostRollout::default(),
        current: current.clone(),
        goal: current.clone(),
        support: None,
        feasible: None,
        memory,
    };
    // Two candidates over 3 steps: the remembered push held, and the opposite push held.
    let seqs: Vec<f32> = [push, push, push, [-0.8, 0.5], [-0.8, 0.5], [-0.8, 0.5]].concat();
    let model = lam_control::rollout::rollout_all(&problem(None), &space, &seqs, 2, 3);
    let kept = lam_control::rollout::rollout_all(&problem(memory), &space, &seqs, 2, 3);
    let at = |t: &Tensor<4>, c: usize, k: usize| {
        t.clone()
            .slice(s![c..c + 1, k..k + 1, .., ..])
            .reshape([1, 16, 32])
    };
    let gap = |a: Tensor<3>, b: Tensor<3>| (a - b).abs().max().into_scalar::<f32>();
    // The model moves the frame under the push; the memory holds it at every step (each
    // step starts from the remembered frame again).
    assert!(gap(at(&model, 0, 0), current.clone()) > 0.1);
    for k in 0..3 {
        let g = gap(at(&kept, 0, k), current.clone());
        assert!(
            g < 1e-4,
            "step {k}: the remembered push moved the frame by {g}"
        );
    }
    // The opposite push is the model's own.
    let g = gap(at(&kept, 1, 0), at(&model, 1, 0));
    let moved = gap(at(&model, 1, 0), current.clone());
    assert!(g < 1e-2 * moved, "{g} against {moved}");
}
