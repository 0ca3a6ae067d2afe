//! What the binary's tests share: the repository root, the interpreter of the repository's
//! virtual environment (`.venv`, made by `bash tools/setup.sh`), running `lam`, and the
//! arguments of tiny jobs.
#![allow(dead_code)] // each test file uses some of these

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `.venv/bin/python`, after checking that it imports `modules` (comma-separated).
pub fn python(modules: &str) -> PathBuf {
    let py = repo_root().join(".venv/bin/python");
    let out = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output();
    match out {
        Ok(o) if o.status.success() => py,
        Ok(o) => panic!(
            "{} cannot import {modules}: run `bash tools/setup.sh`\n{}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "cannot run {} ({e}): run `bash tools/setup.sh`, which makes the repository's \
             Python environment",
            py.display()
        ),
    }
}

/// Runs the `lam` binary of this build.
pub fn lam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lam"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `lam`, failing the test with its stderr unless it succeeds; returns its stdout.
pub fn lam_ok(args: &[&str]) -> String {
    let out = lam(args);
    assert!(
        out.status.success(),
        "lam {args:?} failed\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `lam encoder pretrain` of a tiny sim encoder on generated frames, in seconds (add `--out`).
pub const TINY_ENCODER_PRETRAIN: &[&str] = &[
    "encoder",
    "pretrain",
    "--synthetic",
    "2",
    "--size",
    "16",
    "--patch",
    "8",
    "--dim",
    "16",
    "--keypoints",
    "2",
    "--steps",
    "2",
    "--batch",
    "4",
    "--probe-episodes",
    "0",
    "--checkpoint-every",
    "0",
    "--quiet",
];

/// `lam data synthetic` arguments of a small labeled shard set (add `--out`).
pub const TINY_LABELED_SHARDS: &[&str] = &[
    "data",
    "synthetic",
    "--clips",
    "64",
    "--frames",
    "4",
    "--grid",
    "2",
    "--dim",
    "8",
    "--labeled",
];
