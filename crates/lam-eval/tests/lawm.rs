//! A LAWM policy on the suite's protocol: a tiny policy pretrained on human video and finetuned
//! on two labeled robot episodes plays the protocol's episodes; a pretraining checkpoint (its
//! head emits latents) is refused.

use burn::prelude::*;
use lam_eval::lawm::{EvalOptions, evaluate, parse_tasks};
use lam_lawm::config::LawmConfig;
use lam_lawm::instruction::InstructionEmbedder;
use lam_lawm_train::data::{FrameData, Labels};
use lam_lawm_train::train::{PolicyInit, RunOptions, pretrain, train_policy};
use lam_model::settings::Settings;
use lam_sim::{Domain, PolicyKind, Task};
use lam_suite::{RecordConfig, record};

fn tiny() -> LawmConfig {
    let mut c = LawmConfig::preset("smoke").unwrap();
    c.train.steps = 3;
    c
}

#[test]
fn a_finetuned_policy_plays_the_protocol_and_a_latent_policy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |name: &str, domain: Domain, episodes: usize, seed: u64| {
        let mut cfg = RecordConfig {
            task: Task::Reach,
            domain,
            episodes,
            seed,
            policy: PolicyKind::Expert,
            ..Default::default()
        };
        cfg.env.size = 32;
        let out = dir.path().join(name);
        record(&cfg, &out, false).unwrap();
        out
    };
    let robot = rec("reach-robot", Domain::Robot, 2, 0);
    let human = rec("reach-human", Domain::Human, 2, 50);
    let cfg = tiny();
    let dev = Device::flex();
    let emb = InstructionEmbedder::new(cfg.policy.instruction_dim);
    let run = |dir: &std::path::Path| RunOptions {
        run_dir: dir.into(),
        progress: false,
        resume: false,
    };
    let frames = FrameData::load(&[human], 32, &emb, Labels::None, None).unwrap();
    // The recording's provenance names its task and domain.
    assert_eq!(frames.tasks(), vec!["reach".to_string()]);
    assert_eq!(frames.episodes[0].domain.as_deref(), Some("human"));
    let pre = tempfile::tempdir().unwrap();
    pretrain(&cfg, &frames, &dev, &run(pre.path())).unwrap();
    let demos = FrameData::load(&[robot], 32, &emb, Labels::Actions, None).unwrap();
    let ft = tempfile::tempdir().unwrap();
    train_policy(
        &cfg,
        &demos,
        &PolicyInit::From(pre.path().into()),
        &dev,
        &run(ft.path()),
    )
    .unwrap();

    let opts = EvalOptions {
        tasks: vec![Task::Reach],
        domain: Domain::Robot,
        episodes: 2,
        execute: 2,
    };
    let r = evaluate(ft.path(), &opts, &dev).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].task, "reach");
    assert_eq!(r[0].episodes, 2);
    assert_eq!(r[0].success_rate, r[0].successes as f64 / 2.0);
    assert!(
        r[0].mean_final_distance.is_finite() && r[0].mean_final_distance > 0.0,
        "final distance {}",
        r[0].mean_final_distance
    );
    let err = evaluate(pre.path(), &opts, &dev).unwrap_err().to_string();
    assert!(err.contains("latent"), "{err}");
    let err = parse_tasks("reach,fly").unwrap_err().to_string();
    assert!(err.contains("fly"), "{err}");
}
