//! Tests of the LAWM branch on tiny shapes (32x32 frames, small widths).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::prelude::*;
use lam_lawm::checkpoint::{Stage, load_policy, load_state, resolve};
use lam_lawm::config::{HeadKind, LawmConfig};
use lam_lawm::instruction::InstructionEmbedder;
use lam_lawm::model::PretrainNoise;
use lam_lawm::rssm::kl_balanced;
use lam_lawm_train::cca::{first_canonical_correlation, latent_cca};
use lam_lawm_train::data::{FrameData, Labels};
use lam_lawm_train::train::{
    PolicyInit, RunOptions, gumbels, pretrain, read_metrics, step_rng, train_policy,
};
use lam_model::settings::Settings;
use lam_sim::{Domain, PolicyKind, Task};
use lam_suite::{RecordConfig, record};

fn tiny() -> LawmConfig {
    let mut c = LawmConfig::preset("smoke").unwrap();
    c.train.lr = 2e-3;
    c
}

struct Fixture {
    _dir: tempfile::TempDir,
    robot: PathBuf,
    human: PathBuf,
}

fn rec(dir: &Path, name: &str, task: Task, domain: Domain, episodes: usize, seed: u64) -> PathBuf {
    let mut cfg = RecordConfig {
        task,
        domain,
        episodes,
        seed,
        policy: PolicyKind::Expert,
        ..Default::default()
    };
    cfg.env.size = 32;
    let out = dir.join(name);
    record(&cfg, &out, false).unwrap();
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let robot = rec(dir.path(), "reach-robot", Task::Reach, Domain::Robot, 3, 0);
        let human = rec(dir.path(), "reach-human", Task::Reach, Domain::Human, 2, 50);
        Fixture {
            _dir: dir,
            robot,
            human,
        }
    })
}

/// The tests of this file run one at a time: they share the device's random generator (weight
/// initialisation) and rayon's splitting of reductions, so in parallel one test's run could
/// differ from run to run.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn dev() -> Device {
    Device::flex()
}

#[test]
fn policy_and_world_model_shapes() {
    let _serial = serial();
    let cfg = tiny();
    let d = dev();
    for head in [HeadKind::Mlp, HeadKind::Diffusion] {
        let mut pc = cfg.policy.clone();
        pc.head = head;
        let policy = pc.init(pc.latent_dim, &d);
        let frames = Tensor::<5>::zeros([2, pc.history, 3, 32, 32], &d);
        let instr = Tensor::<2>::ones([2, pc.instruction_dim], &d);
        let noise = vec![0.1f32; 2 * pc.chunk * pc.latent_dim];
        let z = policy.chunk(&pc, frames, instr, &noise);
        assert_eq!(z.dims(), [2, pc.chunk, pc.latent_dim]);
    }
    let wm = cfg.world_model.init(32, cfg.policy.latent_dim, &d);
    let (g, c) = (cfg.world_model.groups, cfg.world_model.classes);
    let t = cfg.policy.chunk + 1;
    let frames = Tensor::<5>::zeros([2, t, 3, 32, 32], &d);
    let actions = Tensor::<3>::zeros([2, t - 1, cfg.policy.latent_dim], &d);
    let g_noise = gumbels(&mut step_rng(0, 0, 0), 2 * t * g * c);
    let obs = wm.observe(frames, actions, &g_noise);
    assert_eq!(obs.recon.dims(), [2, t, 3, 32, 32]);
    assert_eq!(obs.post_logp.dims(), [2, t, g, c]);
    assert_eq!(obs.prior_logp.dims(), [2, t, g, c]);
}

#[test]
fn rssm_step_prior_posterior_and_straight_through_sample() {
    let _serial = serial();
    let cfg = tiny();
    let d = dev();
    let wm = cfg.world_model.init(32, 3, &d);
    let (g, c, h) = (
        cfg.world_model.groups,
        cfg.world_model.classes,
        cfg.world_model.deter,
    );
    let h0 = Tensor::<2>::zeros([3, h], &d);
    let s0 = Tensor::<2>::zeros([3, g * c], &d);
    let a = Tensor::<2>::ones([3, 3], &d);
    let h1 = wm.step(h0, s0, a);
    assert_eq!(h1.dims(), [3, h]);
    let prior = wm.prior_logp(h1.clone());
    let e = Tensor::<2>::ones([3, cfg.world_model.embed], &d);
    let post = wm.posterior_logp(h1, e);
    for lp in [prior, post.clone()] {
        let p: Vec<f32> = lp.exp().sum_dim(2).into_data().try_into_vec().unwrap();
        assert!(p.iter().all(|v| (v - 1.0).abs() < 1e-5), "{p:?}");
        // unimix: every class keeps at least 1%/C probability.
    }
    let min_p: f32 = post.clone().exp().min().into_scalar();
    assert!(min_p >= 0.01 / c as f32 - 1e-6);
    let s = wm.sample_st(post, &gumbels(&mut step_rng(1, 0, 0), 3 * g * c));
    let v: Vec<f32> = s.reshape([3 * g, c]).into_data().try_into_vec().unwrap();
    for row in v.chunks(c) {
        let ones = row.iter().filter(|x| (**x - 1.0).abs() < 1e-5).count();
        let zeros = row.iter().filter(|x| x.abs() < 1e-5).count();
        assert_eq!(
            (ones, zeros),
            (1, c - 1),
            "forward value is one-hot: {row:?}"
        );
    }
}

/// KL with free bits and balancing against a hand computation.
#[test]
fn kl_balancing_and_free_bits_match_hand_computation() {
    let _serial = serial();
    let d = dev().autodiff();
    // B = 1, T = 2, G = 2, C = 3.
    let post: [[[f64; 3]; 2]; 2] = [
        [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]],
        [[0.34, 0.33, 0.33], [0.3, 0.4, 0.3]],
    ];
    let prior: [[[f64; 3]; 2]; 2] = [
        [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]],
        [[0.3, 0.35, 0.35], [0.3, 0.35, 0.35]],
    ];
    let kl: Vec<f64> = (0..2)
        .map(|t| {
            (0..2)
                .map(|g| {
                    (0..3)
                        .map(|k| post[t][g][k] * (post[t][g][k] / prior[t][g][k]).ln())
                        .sum::<f64>()
                })
                .sum()
        })
        .collect();
    let free = 0.5;
    assert!(
        kl[0] > free && kl[1] < free,
        "one step clipped, one not: {kl:?}"
    );
    let clipped: f64 = kl.iter().map(|k| k.max(free)).sum::<f64>() / 2.0;
    let to_tensor = |p: [[[f64; 3]; 2]; 2]| {
        let v: Vec<f32> = p
            .iter()
            .flatten()
            .flatten()
            .map(|x| x.ln() as f32)
            .collect();
        Tensor::<4>::from_data(TensorData::new(v, [1, 2, 2, 3]), &d).require_grad()
    };
    let (post_t, prior_t) = (to_tensor(post), to_tensor(prior));
    let terms = kl_balanced(post_t.clone(), prior_t.clone(), free, 0.5, 0.1);
    let loss: f32 = terms.loss.clone().into_scalar();
    assert!(
        (loss as f64 - 0.6 * clipped).abs() < 1e-5,
        "{loss} vs {}",
        0.6 * clipped
    );
    let raw: f32 = terms.raw_kl.into_scalar();
    assert!((raw as f64 - (kl[0] + kl[1]) / 2.0).abs() < 1e-5);
    // Balancing: the dynamics term trains only the prior, the representation term only the
    // posterior, so with rep_scale = 0 the posterior gets no gradient.
    let only_dyn = kl_balanced(post_t.clone(), prior_t.clone(), free, 0.5, 0.0);
    let grads = only_dyn.loss.backward();
    let gp: Vec<f32> = post_t
        .grad(&grads)
        .map_or(vec![0.0], |g| g.into_data().try_into_vec().unwrap());
    assert!(gp.iter().all(|v| v.abs() < 1e-9));
    let gq: Vec<f32> = prior_t
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_into_vec()
        .unwrap();
    // Clipped step (t = 1) gets no gradient at all; t = 0 does: d/dlogq = -0.5 * p / (B*T).
    assert!(gq[6..].iter().all(|v| v.abs() < 1e-9));
    let expect = -0.5 * post[0][0][0] / 2.0;
    assert!(
        (gq[0] as f64 - expect).abs() < 1e-5,
        "{} vs {expect}",
        gq[0]
    );
}

#[test]
fn tiny_pretrain_reconstruction_falls_and_no_actions_are_read() {
    let _serial = serial();
    let f = fixture();
    let mut cfg = tiny();
    cfg.train.steps = 40;
    let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
    let data =
        FrameData::load(std::slice::from_ref(&f.robot), 32, &emb, Labels::None, None).unwrap();
    assert!(data.episodes.iter().all(|e| e.actions.is_none()));
    assert_eq!(data.action_dim, None);
    assert_eq!(data.vocabulary, ["reach"], "the task's conditioning text");
    let run = tempfile::tempdir().unwrap();
    let s = pretrain(
        &cfg,
        &data,
        &dev(),
        &RunOptions {
            run_dir: run.path().into(),
            progress: false,
            resume: false,
        },
    )
    .unwrap();
    let m = read_metrics(run.path()).unwrap();
    assert_eq!(m.len(), 40);
    let recon = |r: &serde_json::Value| r["recon"].as_f64().unwrap();
    let first: f64 = m[..5].iter().map(recon).sum::<f64>() / 5.0;
    let last: f64 = m[35..].iter().map(recon).sum::<f64>() / 5.0;
    assert!(last < 0.7 * first, "reconstruction {first} -> {last}");
    assert!(s.samples_per_sec > 0.0);
    let ckpt = resolve(run.path()).unwrap();
    assert!(
        ckpt.join("policy.safetensors").exists() && ckpt.join("world_model.safetensors").exists()
    );
    let state = load_state(&ckpt).unwrap();
    assert_eq!(state.stage, Stage::Pretrain);
    // The words it was trained on travel with it; a policy acting from it names the others.
    assert_eq!(state.vocabulary, ["reach"]);
    assert_eq!(
        state.embedder().unknown_words("reach the drawer"),
        ["the", "drawer"]
    );
}

#[test]
fn joint_loss_reaches_the_policy() {
    let _serial = serial();
    let cfg = tiny();
    let d = dev().autodiff();
    let model = cfg.init(&d);
    let (n, g, c) = (
        cfg.policy.chunk,
        cfg.world_model.groups,
        cfg.world_model.classes,
    );
    let frames = Tensor::<5>::random(
        [2, 2, 3, 32, 32],
        burn::tensor::Distribution::Uniform(-0.5, 0.5),
        &d,
    );
    let future = Tensor::<5>::random(
        [2, n + 1, 3, 32, 32],
        burn::tensor::Distribution::Uniform(-0.5, 0.5),
        &d,
    );
    let instr = Tensor::<2>::ones([2, 8], &d);
    let noise = PretrainNoise {
        policy: vec![],
        gumbel: gumbels(&mut step_rng(0, 0, 0), 2 * (n + 1) * g * c),
    };
    let out = model.forward_loss(&cfg, frames, instr, future, &noise);
    let grads = out.loss.backward();
    let head = &model.policy.mlp_head.as_ref().unwrap().action_out.weight;
    let gsum: f32 = head.grad(&grads).unwrap().abs().sum().into_scalar();
    assert!(
        gsum > 0.0,
        "the world model's loss must train the policy end to end"
    );
}

#[test]
fn finetune_replaces_head_with_action_dim() {
    let _serial = serial();
    let f = fixture();
    let mut cfg = tiny();
    cfg.train.steps = 3;
    let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
    let frames =
        FrameData::load(std::slice::from_ref(&f.human), 32, &emb, Labels::None, None).unwrap();
    let pre = tempfile::tempdir().unwrap();
    let p = pretrain(
        &cfg,
        &frames,
        &dev(),
        &RunOptions {
            run_dir: pre.path().into(),
            progress: false,
            resume: false,
        },
    )
    .unwrap();
    let (latent_policy, _) = load_policy(&p.checkpoint, &dev()).unwrap();
    assert_eq!(latent_policy.action_dim, 3);

    let demos = FrameData::load(
        std::slice::from_ref(&f.robot),
        32,
        &emb,
        Labels::Actions,
        Some(2),
    )
    .unwrap();
    assert_eq!(demos.episodes.len(), 2);
    assert_eq!(demos.action_dim, Some(2));
    let ft = tempfile::tempdir().unwrap();
    let mut ft_cfg = cfg.clone();
    ft_cfg.policy.d_model = 999; // ignored: the checkpoint's architecture is used
    let s = train_policy(
        &ft_cfg,
        &demos,
        &PolicyInit::From(pre.path().into()),
        &dev(),
        &RunOptions {
            run_dir: ft.path().into(),
            progress: false,
            resume: false,
        },
    )
    .unwrap();
    let (policy, state) = load_policy(&s.checkpoint, &dev()).unwrap();
    assert_eq!(state.stage, Stage::Policy);
    assert_eq!(policy.action_dim, 2);
    let head = policy.mlp_head.as_ref().unwrap();
    assert_eq!(
        head.action_out.weight.dims(),
        [cfg.policy.head_hidden, cfg.policy.chunk * 2]
    );
    // Re-initialisation keeps everything below the action layer.
    let (pre_policy, _) = load_policy(&p.checkpoint, &dev()).unwrap();
    let swapped = pre_policy.reinit_action_layers(&cfg.policy, 2, &dev());
    let a: Vec<f32> = swapped
        .encoder
        .proj
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap();
    let b: Vec<f32> = latent_policy
        .encoder
        .proj
        .weight
        .val()
        .into_data()
        .try_into_vec()
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(
        swapped.mlp_head.as_ref().unwrap().action_out.weight.dims(),
        [cfg.policy.head_hidden, cfg.policy.chunk * 2]
    );
    assert!(
        !resolve(ft.path())
            .unwrap()
            .join("world_model.safetensors")
            .exists(),
        "world model dropped"
    );

    // CCA of the latent actions against the human domain's hidden true actions.
    let cca = latent_cca(pre.path(), std::slice::from_ref(&f.human), 200, &dev()).unwrap();
    assert_eq!(cca[0].task, "reach");
    assert_eq!(cca[0].domain, "human");
    // A real correlation: neither degenerate (0 or NaN, constant latents) nor a copy (1).
    let c = cca[0].correlation;
    eprintln!("first canonical correlation of latents and true actions: {c}");
    assert!(c > 0.3 && c < 0.9999, "first canonical correlation {c}");
}

#[test]
fn diffusion_head_finetunes() {
    let _serial = serial();
    let f = fixture();
    let mut cfg = tiny();
    cfg.policy.head = HeadKind::Diffusion;
    cfg.train.steps = 2;
    let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
    let demos = FrameData::load(
        std::slice::from_ref(&f.robot),
        32,
        &emb,
        Labels::Actions,
        Some(1),
    )
    .unwrap();
    let run = tempfile::tempdir().unwrap();
    let s = train_policy(
        &cfg,
        &demos,
        &PolicyInit::Scratch,
        &dev(),
        &RunOptions {
            run_dir: run.path().into(),
            progress: false,
            resume: false,
        },
    )
    .unwrap();
    assert!(s.final_loss.is_finite());
    let (p, _) = load_policy(run.path(), &dev()).unwrap();
    assert_eq!(
        p.diffusion_head.as_ref().unwrap().chunk_in.weight.dims(),
        [cfg.policy.chunk * 2, cfg.policy.head_hidden]
    );
}

#[test]
fn cca_matches_scikit_learn_fixture() {
    let _serial = serial();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/cca_sklearn.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows = |m: &serde_json::Value| -> Vec<Vec<f64>> {
        m.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect()
    };
    for case in v["cases"].as_array().unwrap() {
        let rho = first_canonical_correlation(&rows(&case["x"]), &rows(&case["y"])).unwrap();
        let want = case["rho"].as_f64().unwrap();
        assert!((rho - want).abs() < 1e-6, "{rho} vs sklearn {want}");
    }
}

#[test]
fn bad_inputs_name_the_value() {
    let _serial = serial();
    let f = fixture();
    let emb = InstructionEmbedder::new(8);
    let missing = PathBuf::from("/nonexistent/lawm-data");
    let err = format!(
        "{:#}",
        FrameData::load(std::slice::from_ref(&missing), 32, &emb, Labels::None, None)
            .err()
            .unwrap()
    );
    assert!(err.contains("/nonexistent/lawm-data"), "{err}");
    let err = lam_lawm_train::data::check_dirs(std::slice::from_ref(&missing))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/lawm-data"), "{err}");
    // The human domain hides its actions: finetuning on it must say so.
    let err = format!(
        "{:#}",
        FrameData::load(
            std::slice::from_ref(&f.human),
            32,
            &emb,
            Labels::Actions,
            None
        )
        .err()
        .unwrap()
    );
    assert!(
        err.contains(&f.human.display().to_string()) && err.contains("no action column"),
        "{err}"
    );
    // Any model side: frames go through the one frame preparation (32 -> 24 pixels here).
    let small =
        FrameData::load(std::slice::from_ref(&f.robot), 24, &emb, Labels::None, None).unwrap();
    assert_eq!(small.size, 24);
    assert_eq!(
        small.episodes[0].frames.len(),
        small.episodes[0].len * 3 * 24 * 24
    );
    let err = load_policy(Path::new("/nonexistent/run"), &dev())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/run"), "{err}");
}

/// A run folder holding only checkpoint `step` of `full` (and its metrics), as if the run had
/// been killed right after saving it.
fn killed_copy(full: &Path, step: usize) -> tempfile::TempDir {
    let part = tempfile::tempdir().unwrap();
    let name = format!("step-{step:07}");
    let src = full.join("checkpoints").join(&name);
    let dst = part.path().join("checkpoints").join(&name);
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    std::fs::write(part.path().join("checkpoints").join("latest"), &name).unwrap();
    std::fs::copy(
        full.join("metrics.jsonl"),
        part.path().join("metrics.jsonl"),
    )
    .unwrap();
    part
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    read_metrics(run)
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_u64().unwrap(), m["loss"].as_f64().unwrap()))
        .collect()
}

fn chunk_of(ckpt: &Path, data: &FrameData) -> Vec<f32> {
    let (policy, state) = load_policy(ckpt, &dev()).unwrap();
    let samples = [(0, 1), (1, 2)];
    let p = &state.config.policy;
    policy
        .chunk(
            p,
            data.history(&samples, p.history, &dev()),
            data.instructions(&samples, &dev()),
            &[],
        )
        .into_data()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn resume_restores_optimizer_state_and_continues_exactly() {
    let _serial = serial();
    let f = fixture();
    let emb = InstructionEmbedder::new(tiny().policy.instruction_dim);
    let opts = |dir: &Path, resume: bool| RunOptions {
        run_dir: dir.into(),
        progress: false,
        resume,
    };

    // Policy stage: 6 steps straight vs killed after step 3 and resumed.
    let mut cfg = tiny();
    cfg.train.steps = 6;
    cfg.train.checkpoint_every = 3;
    let demos = FrameData::load(
        std::slice::from_ref(&f.robot),
        32,
        &emb,
        Labels::Actions,
        Some(2),
    )
    .unwrap();
    let full = tempfile::tempdir().unwrap();
    let a = train_policy(
        &cfg,
        &demos,
        &PolicyInit::Scratch,
        &dev(),
        &opts(full.path(), false),
    )
    .unwrap();
    assert!(
        a.checkpoint
            .join(lam_lawm::checkpoint::OPTIMIZER_FILE)
            .exists()
    );
    let part = killed_copy(full.path(), 3);
    let b = train_policy(
        &cfg,
        &demos,
        &PolicyInit::Scratch,
        &dev(),
        &opts(part.path(), true),
    )
    .unwrap();
    assert_eq!(
        b.steps, 3,
        "the resumed run trains the remaining steps only"
    );
    assert_eq!(losses(full.path()), losses(part.path()));
    let (x, y) = (
        chunk_of(&a.checkpoint, &demos),
        chunk_of(&b.checkpoint, &demos),
    );
    for (u, v) in x.iter().zip(&y) {
        assert!((u - v).abs() < 1e-6, "resumed policy differs: {u} vs {v}");
    }

    // Without the optimizer state the run cannot resume exactly, and says so.
    let bare = killed_copy(full.path(), 3);
    std::fs::remove_file(
        bare.path()
            .join("checkpoints/step-0000003")
            .join(lam_lawm::checkpoint::OPTIMIZER_FILE),
    )
    .unwrap();
    let e = train_policy(
        &cfg,
        &demos,
        &PolicyInit::Scratch,
        &dev(),
        &opts(bare.path(), true),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("optimizer"), "{e:#}");
    // A different configuration is refused.
    let mut other = cfg.clone();
    other.train.lr *= 2.0;
    let e = train_policy(
        &other,
        &demos,
        &PolicyInit::Scratch,
        &dev(),
        &opts(part.path(), true),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("different configuration"),
        "{e:#}"
    );

    // Pretraining stage (policy + RSSM): 4 steps straight vs killed after step 2.
    let mut cfg = tiny();
    cfg.train.steps = 4;
    cfg.train.checkpoint_every = 2;
    let frames =
        FrameData::load(std::slice::from_ref(&f.human), 32, &emb, Labels::None, None).unwrap();
    let full = tempfile::tempdir().unwrap();
    let a = pretrain(&cfg, &frames, &dev(), &opts(full.path(), false)).unwrap();
    let part = killed_copy(full.path(), 2);
    let b = pretrain(&cfg, &frames, &dev(), &opts(part.path(), true)).unwrap();
    assert_eq!(losses(full.path()), losses(part.path()));
    let (x, y) = (
        chunk_of(&a.checkpoint, &frames),
        chunk_of(&b.checkpoint, &frames),
    );
    for (u, v) in x.iter().zip(&y) {
        assert!(
            (u - v).abs() < 1e-6,
            "resumed latent policy differs: {u} vs {v}"
        );
    }
}

#[test]
fn spatial_softmax_finds_the_peak_and_shift_moves_the_frame() {
    let _serial = serial();
    use lam_lawm::policy::spatial_softmax;
    use lam_lawm_train::data::shift_frame;
    // One channel, 4x4, a strong peak at (x=3, y=1): coordinates (1, -1/3).
    let mut v = vec![0f32; 16];
    v[4 + 3] = 50.0;
    let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 4, 4]), &dev());
    let c = spatial_softmax(x)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert!(
        (c[0] - 1.0).abs() < 1e-4 && (c[1] + 1.0 / 3.0).abs() < 1e-4,
        "{c:?}"
    );
    // A uniform map has its keypoint in the centre.
    let u = Tensor::<4>::zeros([1, 2, 4, 4], &dev());
    let c = spatial_softmax(u)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert!(c.iter().all(|v| v.abs() < 1e-6), "{c:?}");
    // Shifting a 4x4 frame by (1, 0) moves the pixel right and repeats the left edge.
    let mut f = vec![0u8; 3 * 16];
    f[5] = 200; // channel 0, y=1, x=1
    f[4] = 7; // channel 0, y=1, x=0
    let g: Vec<u8> = shift_frame(&f, 4, (1, 0)).collect();
    assert_eq!(g[6], 200);
    assert_eq!((g[4], g[5]), (7, 7));
    assert_eq!(shift_frame(&f, 4, (0, 0)).collect::<Vec<_>>(), f);
}

/// Copies `from` to `to` recursively.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn any_lerobot_dataset_or_video_folder_loads_as_lam_sim_recordings_do() {
    let f = fixture();
    let emb = InstructionEmbedder::new(tiny().policy.instruction_dim);
    let sim = FrameData::load(&[f.robot.clone()], 32, &emb, Labels::Actions, None).unwrap();
    // The same recording as a foreign LeRobot v3 dataset: no lam-sim provenance, so read by
    // lam-ingest (its decoder, frame preparation and Parquet reader).
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    copy_tree(&f.robot, &foreign);
    let info_path = foreign.join("meta/info.json");
    let mut info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    info.as_object_mut().unwrap().remove("lam_sim");
    std::fs::write(&info_path, info.to_string()).unwrap();
    std::fs::remove_dir_all(foreign.join("ground_truth")).unwrap();
    let other = FrameData::load(&[foreign.clone()], 32, &emb, Labels::Actions, None).unwrap();
    assert_eq!(other.episodes.len(), sim.episodes.len());
    assert_eq!(other.action_dim, sim.action_dim);
    for (a, b) in sim.episodes.iter().zip(&other.episodes) {
        assert_eq!(a.len, b.len);
        assert_eq!(a.actions, b.actions);
        let diff = (a.frames.iter().zip(&b.frames))
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.frames.len() as f64;
        assert!(diff < 1.0, "mean pixel difference {diff}");
        assert!(b.task.is_none());
    }
    // The dataset's task strings are the vocabulary.
    assert!(!other.vocabulary.is_empty());
    let e = FrameData::load(&[foreign], 32, &emb, Labels::GroundTruth, None)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("ground_truth"), "{e:#}");

    // Its video files as a plain folder of videos: frames only, at 10 fps.
    let videos = tmp.path().join("videos");
    std::fs::create_dir_all(&videos).unwrap();
    let mut n = 0;
    let mut stack = vec![f.robot.join("videos")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                n += 1;
                std::fs::copy(&p, videos.join(format!("v{n}.mp4"))).unwrap();
            }
        }
    }
    let plain = FrameData::load(&[videos.clone()], 32, &emb, Labels::None, None).unwrap();
    assert_eq!(plain.episodes.len(), n);
    let frames: usize = plain.episodes.iter().map(|e| e.len).sum();
    let sim_frames: usize = sim.episodes.iter().map(|e| e.len).sum();
    assert_eq!(
        frames, sim_frames,
        "every frame of the recording, one video per file"
    );
    let e = FrameData::load(&[videos], 32, &emb, Labels::Actions, None)
        .err()
        .unwrap();
    assert!(format!("{e:#}").contains("no 1-D action feature"), "{e:#}");
}
