//! What the tests that run Python share: the repository root and the interpreter of the
//! repository's virtual environment (`.venv`, made by `bash tools/setup.sh`).

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
