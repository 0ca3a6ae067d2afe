//! Every training run writes TensorBoard event files beside metrics.jsonl: a short `lam train`
//! on synthetic shards, read back by the `tensorboard` Python package
//! (tools/read_tensorboard.py), which checks that every number of every metrics.jsonl record
//! is there at its step.

mod common;

use std::process::Command;

#[test]
fn tensorboard_reads_every_logged_number() {
    let py = common::python("tensorboard");
    let tmp = tempfile::tempdir().unwrap();
    let (shards, run) = (tmp.path().join("shards"), tmp.path().join("run"));
    let lam = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lam"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lam {args:?} failed\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (shards_s, run_s) = (shards.to_str().unwrap(), run.to_str().unwrap());
    lam(&[
        "data",
        "synthetic",
        "--out",
        shards_s,
        "--clips",
        "64",
        "--frames",
        "4",
        "--grid",
        "2",
        "--dim",
        "8",
    ]);
    lam(&[
        "train", "--data", shards_s, "--run", run_s, "--preset", "tiny", "--steps", "20", "--quiet",
    ]);
    let out = Command::new(&py)
        .arg(common::repo_root().join("tools/read_tensorboard.py"))
        .arg(&run)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("missing 0, different 0"), "{text}");
}
