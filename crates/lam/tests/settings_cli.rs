//! One configuration system for every stage, through the binary: each training command takes
//! `--preset`, `--config FILE` and `--set KEY=VALUE`, names unknown keys, saves the resolved
//! settings with its run as `config.toml`, and that file repeats the run's settings.

mod common;

use std::path::Path;

use common::{TINY_ENCODER_PRETRAIN, TINY_LABELED_SHARDS, lam, lam_ok as ok};

fn fails_naming(args: &[&str], what: &str) {
    let out = lam(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lam {args:?} should fail");
    assert!(err.contains(what), "lam {args:?}: {err}");
}

fn saved(run: &Path) -> toml::Table {
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    toml::from_str(&text).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn lawm_takes_presets_files_and_overrides_and_saves_what_it_ran() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    ok(&[
        "sim",
        "record",
        "--task",
        "reach",
        "--episodes",
        "2",
        "--size",
        "32",
        "--out",
        s(&rec),
    ]);
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let pretrain = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "lawm",
            "pretrain",
            "--data",
            s(&rec),
            "--out",
            s(out),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    run(pretrain(
        &a,
        &[
            "--steps",
            "2",
            "--set",
            "world_model.deter=32",
            "--set",
            "train.batch_size=2",
        ],
    ));
    let sa = saved(&a);
    assert_eq!(sa["train"]["steps"].as_integer(), Some(2));
    assert_eq!(sa["world_model"]["deter"].as_integer(), Some(32));
    // The saved file repeats the run; a flag typed beside it wins over the file, --set over both.
    run(pretrain(
        &b,
        &[
            "--config",
            s(&a.join("config.toml")),
            "--steps",
            "1",
            "--set",
            "train.seed=7",
        ],
    ));
    let sb = saved(&b);
    assert_eq!(sb["train"]["steps"].as_integer(), Some(1));
    assert_eq!(sb["train"]["seed"].as_integer(), Some(7));
    assert_eq!(sb["world_model"]["deter"], sa["world_model"]["deter"]);
    assert_eq!(sb["policy"], sa["policy"]);
    // A preset is the base; flags left at their defaults do not undo it.
    let preset = pretrain(&c, &["--preset", "paper-baku", "--set", "train.steps=0"]);
    let out = lam(&preset.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("steps must be at least 1"));
    let v = pretrain(&c, &["--set", "policy.widht=3"]);
    fails_naming(&v.iter().map(String::as_str).collect::<Vec<_>>(), "widht");
    let v = pretrain(&c, &["--preset", "huge"]);
    fails_naming(
        &v.iter().map(String::as_str).collect::<Vec<_>>(),
        "tiny, paper-baku, paper-diffusion",
    );
}

#[test]
fn encoder_pretraining_and_controller_fit_take_the_same_settings_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = tmp.path().join("enc");
    let common = TINY_ENCODER_PRETRAIN;
    let mut args = common.to_vec();
    args.extend(["--out", s(&enc), "--set", "weight_decay=0.05"]);
    ok(&args);
    let se = saved(&enc);
    assert_eq!(se["weight_decay"].as_float(), Some(0.05));
    assert_eq!(se["encoder"]["dim"].as_integer(), Some(16));
    assert!(
        se.get("probe").is_none(),
        "--probe-episodes 0 leaves no probe"
    );
    let e2 = tmp.path().join("e2");
    let mut args = common.to_vec();
    args.extend(["--out", s(&e2), "--set", "encoder.dimm=8"]);
    fails_naming(&args, "dimm");

    // Controller: a labeled synthetic set and a few steps of stage 1 to fit it on.
    let (shards, run, ctrl) = (
        tmp.path().join("shards"),
        tmp.path().join("run"),
        tmp.path().join("ctrl"),
    );
    let mut args = TINY_LABELED_SHARDS.to_vec();
    args.extend(["--out", s(&shards)]);
    ok(&args);
    ok(&[
        "train",
        "--data",
        s(&shards),
        "--run",
        s(&run),
        "--steps",
        "5",
        "--quiet",
    ]);
    let fit = |out: &Path, extra: &[&str]| {
        let mut v = vec![
            "control",
            "fit",
            "--run",
            s(&run),
            "--data",
            s(&shards),
            "--out",
            s(out),
            "--steps",
            "20",
        ];
        v.extend_from_slice(extra);
        v.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run_fit = |v: Vec<String>| lam(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run_fit(fit(&ctrl, &["--set", "lr=0.005", "--set", "batch_size=16"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sc = saved(&ctrl);
    assert_eq!(sc["lr"].as_float(), Some(0.005));
    assert_eq!(sc["steps"].as_integer(), Some(20));
    let again = tmp.path().join("ctrl2");
    let out = run_fit(fit(&again, &["--config", s(&ctrl.join("config.toml"))]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(saved(&again), sc);
    let out = run_fit(fit(&tmp.path().join("ctrl3"), &["--set", "patiense=2"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("patiense"));
}
