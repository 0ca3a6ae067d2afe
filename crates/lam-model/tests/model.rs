//! Behaviour of the stage-1 model: AdaLN-zero, frame causality, learning, resumption, errors.

use std::path::Path;

use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use lam_data::synthetic::{SyntheticConfig, write_synthetic};
use lam_data::{ShardSet, Split};
use lam_model::config::{LamConfig, RegularizerKind, TokenScale};
use lam_model::eval::evaluate;
use lam_model::train::{TrainOptions, init_model, train};

/// Training tests run one at a time: rayon splits reductions adaptively, so float results
/// of a run depend (at the 1e-6 level) on what else competes for the two cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn tiny() -> LamConfig {
    LamConfig::preset("tiny").unwrap()
}

fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

#[test]
fn adaln_zero_prediction_ignores_z_at_init() {
    let _serial = serial();
    let _rng = lam_model::train::rng_lock();
    let dev = Device::flex();
    dev.seed(1);
    let cfg = tiny();
    let wm = cfg.model.world_model().init(&dev);
    let frames = Tensor::<4>::random([2, 5, 16, 32], Distribution::Normal(0.0, 1.0), &dev);
    let z1 = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &dev);
    let z2 = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 3.0), &dev);
    let p1 = wm.forward(frames.clone(), z1);
    let p2 = wm.forward(frames.clone(), z2);
    assert_eq!(
        max_abs_diff(p1.clone(), p2),
        0.0,
        "at initialisation z must have no effect"
    );
    // ...but the prediction does depend on the frames.
    let p3 = wm.forward(frames.clone() * 2.0, Tensor::zeros([2, 5, 16], &dev));
    assert!(max_abs_diff(p1, p3) > 1e-3);
}

#[test]
fn predictions_are_frame_causal() {
    let _serial = serial();
    let _rng = lam_model::train::rng_lock();
    let dev = Device::flex();
    dev.seed(2);
    let cfg = tiny();
    let mut wm = cfg.model.world_model().init(&dev);
    // Give the AdaLN heads non-zero weights so that z reaches every block.
    for block in wm.blocks.iter_mut() {
        block.ada = LinearConfig::new(64, 6 * 64).init(&dev);
    }
    wm.final_ada = LinearConfig::new(64, 2 * 64).init(&dev);
    let t = 6;
    let frames = Tensor::<4>::random([2, t, 16, 32], Distribution::Normal(0.0, 1.0), &dev);
    let z = Tensor::<3>::random([2, t, 16], Distribution::Normal(0.0, 1.0), &dev);
    let base = wm.forward(frames.clone(), z.clone());
    for k in 1..t {
        // Change frame k and latent k (and everything after): positions < k must not move.
        let noise = Tensor::<4>::random([2, t - k, 16, 32], Distribution::Normal(0.0, 1.0), &dev);
        let f2 = frames.clone().slice_assign(s![.., k..t, .., ..], noise);
        let z2 = z.clone().slice_assign(
            s![.., k..t, ..],
            Tensor::random([2, t - k, 16], Distribution::Normal(0.0, 1.0), &dev),
        );
        let out = wm.forward(f2, z2);
        let before = max_abs_diff(
            base.clone().slice(s![.., 0..k, .., ..]),
            out.clone().slice(s![.., 0..k, .., ..]),
        );
        assert!(
            before < 1e-5,
            "changing frame {k} moved an earlier prediction by {before}"
        );
        let at = max_abs_diff(
            base.clone().slice(s![.., k..k + 1, .., ..]),
            out.slice(s![.., k..k + 1, .., ..]),
        );
        assert!(
            at > 1e-3,
            "changing frame {k} did not change the prediction at {k}"
        );
    }
}

fn synthetic(dir: &Path, clips: usize) -> SyntheticConfig {
    let cfg = SyntheticConfig {
        clips,
        val_fraction: 0.25,
        ..Default::default()
    };
    write_synthetic(dir, &cfg).unwrap();
    cfg
}

fn quiet(run: &Path) -> TrainOptions {
    TrainOptions {
        run_dir: run.to_path_buf(),
        resume: false,
        force: false,
        progress: false,
        stop_after: None,
    }
}

fn read_metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn tiny_model_overfits_one_batch() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    // 16 training clips and batch 16: every step sees the same batch.
    synthetic(&data_dir, 22);
    let data = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
    assert_eq!(data.len(), 16);
    let mut cfg = tiny();
    cfg.train.batch_size = 16;
    cfg.train.steps = 200;
    cfg.train.log_every = 1;
    cfg.train.val_every = 0;
    cfg.train.checkpoint_every = 0;
    cfg.model.action_dropout = 0.0;
    let run = tmp.path().join("run");
    train(&cfg, &data, None, &Device::flex(), &quiet(&run)).unwrap();
    let m = read_metrics(&run);
    let pred: Vec<f64> = m
        .iter()
        .filter(|r| r["split"] == "train")
        .map(|r| r["pred"].as_f64().unwrap())
        .collect();
    let (first, last) = (pred[0], *pred.last().unwrap());
    assert!(
        last < first / 4.0,
        "prediction loss fell only from {first} to {last}"
    );
}

/// Every tensor of a run's latest weights, by name.
fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = lam_model::checkpoint::latest(run).unwrap().unwrap();
    let bytes = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                t.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn kill_and_resume_matches_uninterrupted_run() {
    let _serial = serial();
    for kind in [
        RegularizerKind::Sparse,
        RegularizerKind::Noisy,
        RegularizerKind::Vq,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        synthetic(&data_dir, 40);
        let data = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
        let mut cfg = tiny();
        cfg.regularizer.kind = kind;
        cfg.regularizer.dead_code_steps = 3;
        cfg.train.batch_size = 8;
        cfg.train.steps = 12;
        cfg.train.checkpoint_every = 3;
        cfg.train.val_every = 0;
        let dev = Device::flex();

        let full = tmp.path().join("full");
        train(&cfg, &data, None, &dev, &quiet(&full)).unwrap();

        let split = tmp.path().join("split");
        let mut first = quiet(&split);
        first.stop_after = Some(7); // killed after step 7: the last checkpoint is at step 6
        train(&cfg, &data, None, &dev, &first).unwrap();
        // Simulate the kill: drop the step-7 checkpoint written at the interruption.
        let ck = lam_model::checkpoint::checkpoints_dir(&split);
        std::fs::remove_dir_all(ck.join("step-0000007")).unwrap();
        lam_data::shards::write_atomic(&ck.join("latest"), b"step-0000006").unwrap();
        let resumed = TrainOptions {
            resume: true,
            ..quiet(&split)
        };
        let summary = train(&cfg, &data, None, &dev, &resumed).unwrap();
        assert_eq!(summary.steps_done, 12);

        let a = weights(&full);
        let b = weights(&split);
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-6,
                "{kind:?}: {name} differs by {worst} between the resumed and the uninterrupted run"
            );
        }
        // The metrics log has exactly one record per logged step.
        let steps: Vec<u64> = read_metrics(&split)
            .iter()
            .filter(|r| r["split"] == "train")
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![10, 12], "{kind:?}");
    }
}

#[test]
fn training_learns_actions_not_frames() {
    let _serial = serial();
    // On synthetic data with hidden actions, the trained model's scene-cut error must exceed
    // its error on real transitions (the latent carries an action, not the next frame).
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    synthetic(&data_dir, 200);
    let train_set = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
    let val_set = ShardSet::open(&data_dir, Some(Split::Val)).unwrap();
    let mut cfg = tiny();
    cfg.train.steps = 200;
    cfg.train.val_every = 100;
    let run = tmp.path().join("run");
    let dev = Device::flex();
    let summary = train(&cfg, &train_set, Some(&val_set), &dev, &quiet(&run)).unwrap();
    assert!(summary.final_val.is_some());
    let model = lam_model::checkpoint::load_weights(
        init_model(&cfg, &dev),
        &summary.last_checkpoint.unwrap().join("model.safetensors"),
    )
    .unwrap();
    let report = evaluate(&cfg, &model, &val_set, &dev, 50, 25).unwrap();
    assert!(
        report.leakage.ratio > 1.2,
        "leakage ratio {}",
        report.leakage.ratio
    );
    assert!(report.leakage.e_cut_no_action > report.leakage.e_normal);
    // Open loop over the clip's frames after the first: training lowers it below the
    // untrained model's.
    assert_eq!(report.open_loop.steps, cfg.model.frames - 1);
    let untrained = evaluate(&cfg, &init_model(&cfg, &dev), &val_set, &dev, 50, 25).unwrap();
    assert!(
        report.open_loop.error < 0.8 * untrained.open_loop.error,
        "open loop {} trained vs {} untrained",
        report.open_loop.error,
        untrained.open_loop.error
    );
}

#[test]
fn mismatched_data_and_missing_checkpoint_are_clear_errors() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    let mut syn = SyntheticConfig {
        clips: 10,
        dim: 24,
        ..Default::default()
    };
    syn.val_fraction = 0.0;
    write_synthetic(&data_dir, &syn).unwrap();
    let data = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
    let cfg = tiny(); // expects D = 32
    let err = train(
        &cfg,
        &data,
        None,
        &Device::flex(),
        &quiet(&tmp.path().join("run")),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("D=32") && err.contains("D=24") && err.contains("data"),
        "{err}"
    );

    // --resume before the first checkpoint (killed early, restarted by a scheduler) starts
    // the run; training again into that folder without --resume is refused, --force starts
    // over.
    let mut cfg = tiny();
    cfg.model.embed_dim = 24;
    cfg.train.steps = 4;
    cfg.train.checkpoint_every = 2;
    cfg.train.val_every = 0;
    let run = tmp.path().join("fresh");
    let resume = TrainOptions {
        resume: true,
        ..quiet(&run)
    };
    let summary = train(&cfg, &data, None, &Device::flex(), &resume).unwrap();
    assert_eq!(summary.steps_done, 4);
    let err = train(&cfg, &data, None, &Device::flex(), &quiet(&run))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fresh")
            && err.contains("step 4")
            && err.contains("--resume")
            && err.contains("--force"),
        "{err}"
    );
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    cfg.train.steps = 2;
    let force = TrainOptions {
        force: true,
        ..quiet(&run)
    };
    let summary = train(&cfg, &data, None, &Device::flex(), &force).unwrap();
    assert_eq!(summary.steps_done, 2);
    // The new run's checkpoint is the one `latest` names and is kept; the user's file too.
    let latest = lam_model::checkpoint::latest(&run).unwrap().unwrap();
    assert!(latest.ends_with("step-0000002"), "{}", latest.display());
    assert!(run.join("notes.txt").exists());

    let err = lam_model::checkpoint::load_weights(
        init_model(&cfg, &Device::flex()),
        &tmp.path().join("nope.safetensors"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("nope.safetensors"), "{err}");
}

#[test]
fn cached_rollout_matches_full_forward() {
    let _serial = serial();
    let _rng = lam_model::train::rng_lock();
    let dev = Device::flex();
    dev.seed(3);
    let cfg = tiny();
    let mut wm = cfg.model.world_model().init(&dev);
    for block in wm.blocks.iter_mut() {
        block.ada = LinearConfig::new(64, 6 * 64).init(&dev);
    }
    let t = 6;
    let frames = Tensor::<4>::random([2, t, 16, 32], Distribution::Normal(0.0, 1.0), &dev);
    let z = Tensor::<3>::random([2, t, 16], Distribution::Normal(0.0, 1.0), &dev);
    let full = wm.forward(frames.clone(), z.clone());
    let frame = |k: usize| {
        frames
            .clone()
            .slice(s![.., k..k + 1, .., ..])
            .squeeze_dim::<3>(1)
    };
    let zk = |k: usize| z.clone().slice(s![.., k..k + 1, ..]).squeeze_dim::<2>(1);
    let mut cache = wm.prefill(
        frames.clone().slice(s![.., 0..3, .., ..]),
        z.clone().slice(s![.., 0..3, ..]),
        16,
    );
    for k in 3..t {
        let (pred, next) = wm.step(Some(&cache), frame(k), zk(k), 16);
        let want = full
            .clone()
            .slice(s![.., k..k + 1, .., ..])
            .squeeze_dim::<3>(1);
        let diff = (pred - want).abs().max().into_scalar::<f32>();
        assert!(
            diff < 1e-4,
            "cached step at frame {k} differs from the full forward by {diff}"
        );
        cache = next;
    }
    // With one block, a window of 2 frames equals a full forward over the last 3 frames:
    // RoPE makes attention depend on position differences only. (With more blocks the cached
    // frames also carry what they saw of older frames, as in any sliding-window transformer.)
    let mut one_block = cfg.model.clone();
    one_block.wm_depth = 1;
    let mut wm1 = one_block.world_model().init(&dev);
    wm1.blocks[0].ada = LinearConfig::new(64, 6 * 64).init(&dev);
    let mut cache = wm1.prefill(
        frames.clone().slice(s![.., 0..3, .., ..]),
        z.clone().slice(s![.., 0..3, ..]),
        2,
    );
    assert_eq!(cache.frames(), 2);
    let (_, next) = wm1.step(Some(&cache), frame(3), zk(3), 2);
    cache = next;
    assert_eq!(cache.frames(), 2);
    let (pred, _) = wm1.step(Some(&cache), frame(4), zk(4), 2);
    let short = wm1.forward(
        frames.clone().slice(s![.., 2..5, .., ..]),
        z.clone().slice(s![.., 2..5, ..]),
    );
    let want = short.slice(s![.., 2..3, .., ..]).squeeze_dim::<3>(1);
    let diff = (pred - want).abs().max().into_scalar::<f32>();
    assert!(
        diff < 1e-4,
        "windowed cache differs from the shortened forward by {diff}"
    );
    // Starting from no cache equals a one-frame forward.
    let (pred, cache) = wm.step(None, frame(0), zk(0), 4);
    assert_eq!(cache.frames(), 1);
    let one = wm.forward(
        frames.clone().slice(s![.., 0..1, .., ..]),
        z.clone().slice(s![.., 0..1, ..]),
    );
    let diff = (pred - one.squeeze_dim::<3>(1))
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(
        diff < 1e-5,
        "first step differs from a one-frame forward by {diff}"
    );
}

#[test]
fn action_conditioned_world_model_trains_on_true_actions() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let unlabeled = tmp.path().join("unlabeled");
    synthetic(&unlabeled, 22);
    let labeled = tmp.path().join("labeled");
    write_synthetic(
        &labeled,
        &SyntheticConfig {
            clips: 22,
            val_fraction: 0.25,
            labeled: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut cfg = tiny();
    cfg.model.conditioning = lam_model::config::Conditioning::Action;
    cfg.train.batch_size = 16;
    cfg.train.steps = 120;
    cfg.train.log_every = 1;
    cfg.train.val_every = 0;
    cfg.train.checkpoint_every = 0;
    cfg.model.action_dropout = 0.0;
    let dev = Device::flex();
    // Unlabeled shards and a latent size other than the action size are named errors.
    let u = ShardSet::open(&unlabeled, Some(Split::Train)).unwrap();
    let err = format!(
        "{:#}",
        train(&cfg, &u, None, &dev, &quiet(&tmp.path().join("r0"))).unwrap_err()
    );
    assert!(err.contains("labeled"), "{err}");
    let data = ShardSet::open(&labeled, Some(Split::Train)).unwrap();
    let a = data.index.action_dim.unwrap();
    let err = format!(
        "{:#}",
        train(&cfg, &data, None, &dev, &quiet(&tmp.path().join("r1"))).unwrap_err()
    );
    assert!(err.contains("model.latent_dim"), "{err}");
    cfg.model.latent_dim = a;
    let run = tmp.path().join("run");
    train(&cfg, &data, None, &dev, &quiet(&run)).unwrap();
    let m: Vec<serde_json::Value> = read_metrics(&run)
        .into_iter()
        .filter(|r| r["split"] == "train")
        .collect();
    let (first, last) = (&m[0], m.last().unwrap());
    let pred = |r: &serde_json::Value| r["pred"].as_f64().unwrap();
    assert!(
        pred(last) < pred(first) / 2.0,
        "prediction loss fell only from {} to {}",
        pred(first),
        pred(last)
    );
    // No regulariser: the loss is the prediction loss alone.
    assert!((last["loss"].as_f64().unwrap() - pred(last)).abs() < 1e-6);
    assert_eq!(last["energy"].as_f64().unwrap(), 0.0);
}

#[test]
fn residual_world_model_starts_as_copy_and_its_cpu_rollout_matches_steps() {
    let _serial = serial();
    let _rng = lam_model::train::rng_lock();
    let dev = Device::flex();
    dev.seed(3);
    let mut cfg = tiny().model;
    cfg.residual = true;
    let mut wm = cfg.world_model().init(&dev);
    let normal = Distribution::Normal(0.0, 1.0);
    let frames = Tensor::<4>::random([2, 4, 16, 32], normal, &dev);
    let z = Tensor::<3>::random([2, 4, 16], normal, &dev);
    // Untrained: the prediction of frame t + 1 is frame t.
    assert!(max_abs_diff(wm.forward(frames.clone(), z.clone()), frames.clone()) == 0.0);
    // With every head non-zero, the batched CPU rollout equals step-by-step rollouts.
    let w = cfg.wm_dim;
    for block in wm.blocks.iter_mut() {
        block.ada = LinearConfig::new(w, 6 * w).init(&dev);
    }
    wm.final_ada = LinearConfig::new(w, 2 * w).init(&dev);
    wm.out_proj = LinearConfig::new(w, 32).init(&dev);
    let cache = wm.prefill(
        frames.clone().slice(s![0..1, .., .., ..]),
        z.clone().slice(s![0..1, .., ..]),
        7,
    );
    let current = Tensor::<3>::random([1, 16, 32], normal, &dev);
    let zs = Tensor::<3>::random([5, 3, 16], normal, &dev);
    let got = wm
        .rollout_shared(
            Some(&cache),
            current.clone(),
            zs.clone(),
            7,
            lam_model::world_model::HostPrecision::F32,
        )
        .expect("CPU path");
    let want = wm.rollout_steps(Some(&cache), current, zs, 7);
    let diff = (got - want).abs().max().into_scalar::<f32>();
    assert!(diff < 2e-5, "CPU rollout differs from step() by {diff}");
}

#[test]
fn standardized_model_keeps_the_training_statistics_in_its_checkpoint() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    synthetic(&data_dir, 40);
    let data = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
    let mut cfg = tiny();
    cfg.model.standardize = true;
    cfg.train.steps = 3;
    cfg.train.val_every = 0;
    let run = tmp.path().join("run");
    let dev = Device::flex();
    let summary = train(&cfg, &data, None, &dev, &quiet(&run)).unwrap();
    let (mean, std) = lam_model::train::token_stats(&data, TokenScale::Channel);
    let model = lam_model::checkpoint::load_weights(
        init_model(&cfg, &dev),
        &summary.last_checkpoint.unwrap().join("model.safetensors"),
    )
    .unwrap();
    let host = |p: &Option<burn::module::Param<Tensor<1>>>| -> Vec<f32> {
        p.as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    assert_eq!(host(&model.token_mean), mean);
    assert_eq!(host(&model.token_std), std);
    // Standardised clips have zero mean and unit std per channel over the training set.
    let all: Vec<usize> = (0..data.len()).collect();
    let clips = lam_model::train::clips_tensor(&data, &all, &dev);
    let z = model.normalize(clips).reshape([-1, 32]);
    let m = z.clone().mean_dim(0).abs().max().into_scalar::<f32>();
    let s = z
        .var(0)
        .sqrt()
        .sub_scalar(1.0)
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(m < 1e-4 && s < 1e-3, "mean {m}, std error {s}");
    // A shared scale: every channel divided by the root of the channels' mean variance, so
    // the channels keep their sizes relative to each other and the whole has unit variance.
    cfg.model.standardize_scale = TokenScale::Shared;
    let run = tmp.path().join("shared");
    let summary = train(&cfg, &data, None, &dev, &quiet(&run)).unwrap();
    let shared = lam_model::checkpoint::load_weights(
        init_model(&cfg, &dev),
        &summary.last_checkpoint.unwrap().join("model.safetensors"),
    )
    .unwrap();
    let pooled = (std.iter().map(|s| s * s).sum::<f32>() / std.len() as f32).sqrt();
    let spread =
        std.iter().cloned().fold(0f32, f32::max) / std.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 1.01,
        "the synthetic channels differ in size ({spread})"
    );
    for s in host(&shared.token_std) {
        assert!((s - pooled).abs() < 1e-4 * pooled, "{s} against {pooled}");
    }
    assert_eq!(host(&shared.token_mean), mean);
    let z = shared
        .normalize(lam_model::train::clips_tensor(&data, &all, &dev))
        .reshape([-1, 32]);
    let var = z.var(0).into_data().try_into_vec::<f32>().unwrap();
    let total = var.iter().sum::<f32>() / var.len() as f32;
    assert!((total - 1.0).abs() < 1e-3, "mean variance {total}");
    for (v, s) in var.iter().zip(&std) {
        assert!(
            (v.sqrt() - s / pooled).abs() < 1e-3,
            "channel std {} against {}",
            v.sqrt(),
            s / pooled
        );
    }
    // Without the option the model has no statistics and passes tokens through.
    let plain = init_model(&tiny(), &dev);
    assert!(plain.token_mean.is_none());
}

#[test]
fn rollout_weight_adds_a_self_fed_prediction_pass() {
    let _serial = serial();
    let dev = Device::flex();
    let mut cfg = tiny();
    cfg.model.conditioning = lam_model::config::Conditioning::Action;
    cfg.model.latent_dim = 3;
    let (t, n, d) = (cfg.model.frames, cfg.model.tokens(), cfg.model.embed_dim);
    let model = init_model(&cfg, &dev); // takes the RNG lock itself
    let _rng = lam_model::train::rng_lock();
    dev.seed(9);
    let clips = Tensor::<4>::random([2, t, n, d], Distribution::Normal(0.0, 1.0), &dev);
    let actions = Tensor::<3>::random([2, t - 1, 3], Distribution::Normal(0.0, 1.0), &dev);
    let noise = lam_model::lam::StepNoise {
        keep: vec![],
        eps: vec![],
    };
    let total = |cfg: &LamConfig| {
        model
            .forward_loss_with(cfg, clips.clone(), Some(actions.clone()), &noise)
            .terms
            .total
            .into_scalar::<f32>()
    };
    let plain = total(&cfg);
    cfg.model.rollout_weight = 0.5;
    let with_rollout = total(&cfg);
    // The self-fed pass by hand: frames 1..T-2 of the context replaced by their predictions.
    let wm = &model.world_model;
    let context = clips.clone().slice(s![.., 0..t - 1, .., ..]);
    let first = wm.forward(context.clone(), actions.clone());
    let fed = Tensor::cat(
        vec![
            context.slice(s![.., 0..1, .., ..]),
            first.slice(s![.., 0..t - 2, .., ..]),
        ],
        1,
    );
    let again = wm.forward(fed, actions.clone());
    let self_fed = (again.slice(s![.., 1..t - 1, .., ..]) - clips.slice(s![.., 2..t, .., ..]))
        .abs()
        .mean()
        .into_scalar::<f32>();
    assert!(self_fed > 0.0);
    assert!(
        (with_rollout - plain - 0.5 * self_fed).abs() < 1e-4,
        "loss {with_rollout} with the rollout term, {plain} without, self-fed L1 {self_fed}"
    );
    cfg.model.rollout_weight = f64::NAN;
    let err = format!("{:#}", cfg.validate().unwrap_err());
    assert!(err.contains("model.rollout_weight"), "{err}");
}

#[test]
fn dead_vq_codes_are_reset_to_encoder_outputs() {
    let _serial = serial();
    let dev = Device::flex();
    let mut cfg = tiny();
    cfg.regularizer.kind = RegularizerKind::Vq;
    cfg.regularizer.codebook_size = 6;
    cfg.regularizer.dead_code_steps = 5;
    let d = cfg.model.latent_dim;
    let model = init_model(&cfg, &dev);
    // Codes 0 and 3 were chosen at step 4; the others not since step 0: dead at step 5.
    let mut last_used = vec![4, 0, 0, 4, 0, 0];
    let codebook = |m: &lam_model::LatentActionModel| -> Vec<f32> {
        let book = m.codebook.as_ref().expect("a VQ model has a codebook");
        book.val().into_data().try_into_vec::<f32>().unwrap()
    };
    let before = codebook(&model);
    let outputs: Vec<f32> = (0..3 * d).map(|i| 10.0 + i as f32).collect();
    let (model, resets) =
        lam_model::train::reset_dead_codes(model, &cfg, 5, &mut last_used, &outputs);
    assert_eq!(resets, 4);
    assert_eq!(last_used, vec![4, 5, 5, 4, 5, 5]);
    let after = codebook(&model);
    for c in 0..6 {
        let row = &after[c * d..(c + 1) * d];
        if c == 0 || c == 3 {
            assert_eq!(row, &before[c * d..(c + 1) * d], "live code {c} kept");
        } else {
            assert!(
                outputs.chunks(d).any(|o| o == row),
                "dead code {c} is one of the encoder outputs: {row:?}"
            );
        }
    }

    // In training, resets fire and are logged.
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");
    synthetic(&data_dir, 40);
    let data = ShardSet::open(&data_dir, Some(Split::Train)).unwrap();
    let mut cfg = tiny();
    cfg.regularizer.kind = RegularizerKind::Vq;
    cfg.regularizer.codebook_size = 64;
    cfg.regularizer.dead_code_steps = 2;
    cfg.train.batch_size = 4;
    cfg.train.steps = 6;
    cfg.train.log_every = 1;
    cfg.train.val_every = 0;
    let run = tmp.path().join("run");
    train(&cfg, &data, None, &dev, &quiet(&run)).unwrap();
    let resets: u64 = read_metrics(&run)
        .iter()
        .filter_map(|r| r["codes_reset"].as_u64())
        .sum();
    assert!(
        resets > 0,
        "no dead code was reset in 6 steps with 64 codes"
    );
}
