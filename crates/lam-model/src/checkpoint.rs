//! Checkpoints: a folder per saved step, written under a temporary name and renamed.
//!
//! ```text
//! RUN/checkpoints/step-0000400/model.safetensors   weights (safetensors, module paths as names)
//! RUN/checkpoints/step-0000400/optimizer.bpk       Muon + AdamW state (burn's burnpack: the
//!                                                  only serialisation burn offers for it)
//! RUN/checkpoints/step-0000400/scheduler.bpk       learning-rate scheduler state (burnpack)
//! RUN/checkpoints/step-0000400/state.json          step, seed, VQ code usage, config
//! RUN/checkpoints/latest                           name of the newest complete checkpoint
//! ```
//!
//! A folder only gets its final name once every file in it is written, and `latest` is
//! replaced atomically after that, so a run killed at any moment resumes from a complete
//! checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use burn::lr_scheduler::LrSchedulerRecord;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::config::LamConfig;
use crate::optim::stable_param_ids;

/// Non-tensor training state saved with each checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Optimiser steps completed.
    pub step: usize,
    /// Seed of the run; with `step` it determines every random draw that follows.
    pub seed: u64,
    /// vq: step at which each code was last chosen (for dead-code reset).
    #[serde(default)]
    pub code_last_used: Vec<usize>,
    /// The run's configuration.
    pub config: LamConfig,
}

pub fn checkpoints_dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Writes the model weights alone to a safetensors file (atomically).
pub fn save_weights<M: Module + ModuleSnapshot>(model: &M, path: &Path) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
    model
        .save_into(&mut store)
        .with_context(|| format!("cannot write weights {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Loads safetensors weights into `model`; every tensor of the model must be in the file.
pub fn load_weights<M: Module + ModuleSnapshot>(mut model: M, path: &Path) -> Result<M> {
    ensure!(
        path.exists(),
        "weights file {} does not exist",
        path.display()
    );
    let mut store = SafetensorsStore::from_file(path);
    let result = model
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("cannot load weights {}: {e}", path.display()))?;
    ensure!(
        result.errors.is_empty() && result.missing.is_empty(),
        "weights {} do not fit the model: missing {:?}, errors {:?}",
        path.display(),
        result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
        result.errors
    );
    Ok(stable_param_ids(model))
}

/// Saves a complete checkpoint for `state.step`; returns its folder.
pub fn save<M: Module + ModuleSnapshot>(
    run: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!("step-{:07}", state.step);
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    save_weights(model, &tmp.join("model.safetensors"))?;
    optimizer
        .save(tmp.join("optimizer.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write optimizer state: {e:?}"))?;
    scheduler
        .to_record()
        .save(tmp.join("scheduler.bpk"))
        .map_err(|e| anyhow::anyhow!("cannot write scheduler state: {e:?}"))?;
    fs::write(tmp.join("state.json"), serde_json::to_string_pretty(state)?)?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir)?;
    lam_data::shards::write_atomic(&dir.join("latest"), name.as_bytes())?;
    prune(&dir, keep.max(1))?;
    Ok(final_dir)
}

fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for old in &steps[..excess] {
        fs::remove_dir_all(old)?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run).join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&pointer)
        .with_context(|| format!("cannot read {}", pointer.display()))?;
    let dir = checkpoints_dir(run).join(name.trim());
    ensure!(
        dir.is_dir(),
        "{} names {}, which does not exist",
        pointer.display(),
        dir.display()
    );
    Ok(Some(dir))
}

/// Reads a checkpoint's state file.
pub fn load_state(ckpt: &Path) -> Result<TrainState> {
    let path = ckpt.join("state.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// Restores optimiser and scheduler state from a checkpoint folder.
pub fn load_optim(
    ckpt: &Path,
    optimizer: ModuleOptimizer,
    scheduler: ModuleLrScheduler,
) -> Result<(ModuleOptimizer, ModuleLrScheduler)> {
    let opt_path = ckpt.join("optimizer.bpk");
    let optimizer = optimizer.load(&opt_path).map_err(|e| {
        anyhow::anyhow!("cannot load optimizer state {}: {e:?}", opt_path.display())
    })?;
    let sched_path = ckpt.join("scheduler.bpk");
    let record = LrSchedulerRecord::load(&sched_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot load scheduler state {}: {e:?}",
            sched_path.display()
        )
    })?;
    Ok((optimizer, scheduler.load_record(record)))
}

/// Resolves a user-given path to a checkpoint folder: a checkpoint folder itself, or a run
/// folder (its latest checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").exists() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.with_context(|| {
        format!(
            "{} is neither a checkpoint folder nor a run folder with checkpoints",
            path.display()
        )
    })
}
