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
use crate::optim::{TwoGroupOptimizer, stable_param_ids};

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
    check_finite(path)?;
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

/// Refuses a weights file holding NaN or Inf in a float tensor, naming the tensor: such a
/// model would only ever produce NaN (and must never reach the planner's CPU kernels).
pub fn check_finite(path: &Path) -> Result<()> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file: {e}", path.display()))?;
    for (name, view) in file.tensors() {
        let bad = match view.dtype() {
            safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .position(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            safetensors::Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .position(|b| !f64::from_le_bytes(b.try_into().expect("8 bytes")).is_finite()),
            _ => None,
        };
        if let Some(i) = bad {
            anyhow::bail!(
                "weights {}: tensor `{name}` holds NaN or Inf (at flat index {i}); the file is \
                 corrupt or the run diverged",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes one checkpoint folder `run/checkpoints/step-NNNNNNN`: `write` fills a temporary
/// folder, which then takes its final name, `latest` is pointed at it, and all but the
/// newest `keep` step folders are removed (`keep` 0 keeps them all). Every stage that
/// checkpoints (stage 1, the encoder's pretraining, LAWM) saves through this, so a run
/// killed at any moment leaves only complete checkpoints behind.
pub fn write_step(
    run: &Path,
    step: usize,
    keep: usize,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = checkpoints_dir(run);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = format!("step-{step:07}");
    let final_dir = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    write(&tmp)?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir)?;
    }
    fs::rename(&tmp, &final_dir)?;
    lam_data::shards::write_atomic(&dir.join("latest"), name.as_bytes())?;
    if keep > 0 {
        prune(&dir, keep, &name)?;
    }
    Ok(final_dir)
}

/// Saves a complete checkpoint for `state.step`; returns its folder.
pub fn save<M: Module + ModuleSnapshot>(
    run: &Path,
    model: &M,
    optimizer: &TwoGroupOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    save_with(run, model, optimizer, scheduler, state, keep, |_| Ok(()))
}

/// [`save`], with `extra` writing a trainer's own files into the same checkpoint folder
/// (end-to-end training: the encoder, its optimiser, the EMA target).
pub fn save_with<M: Module + ModuleSnapshot>(
    run: &Path,
    model: &M,
    optimizer: &TwoGroupOptimizer,
    scheduler: &ModuleLrScheduler,
    state: &TrainState,
    keep: usize,
    extra: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    write_step(run, state.step, keep.max(1), |tmp| {
        extra(tmp)?;
        save_weights(model, &tmp.join("model.safetensors"))?;
        save_optimizer(tmp, optimizer.module_optimizer())?;
        scheduler
            .to_record()
            .save(tmp.join("scheduler.bpk"))
            .map_err(|e| anyhow::anyhow!("cannot write scheduler state: {e:?}"))?;
        write_state(tmp, state)
    })
}

/// Deletes the oldest `step-*` folders past `keep`; `current` (the one `latest` names) is
/// never deleted, even when folders with higher steps are present.
fn prune(dir: &Path, keep: usize, current: &str) -> Result<()> {
    let mut steps: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-") && n != current)
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep - 1);
    for old in &steps[..excess] {
        fs::remove_dir_all(old)?;
    }
    Ok(())
}

/// What of an earlier run `run` holds: its newest checkpoint's step, or `Some(0)` when it
/// has a metrics log or config but no checkpoint yet; `None` for a fresh folder.
pub fn earlier_run(run: &Path) -> Result<Option<usize>> {
    if let Some(ckpt) = latest(run)? {
        return Ok(Some(load_state(&ckpt)?.step));
    }
    let has = |f: &str| run.join(f).exists();
    Ok((has(lam_data::metrics::METRICS_FILE) || has("checkpoints")).then_some(0))
}

/// Removes what a run of lam wrote in `run` (checkpoints, metrics.jsonl, config.toml, run.json),
/// leaving anything else there alone.
/// Where a training run in `run` starts. With `resume`: its latest checkpoint, or `None`
/// before the first one (the run starts at step 0, so a scheduler can repeat the same command
/// after any preemption). Without: a folder holding an earlier run is refused unless `force`,
/// which clears it ([`clear_run`]).
pub fn prepare_run(run: &Path, resume: bool, force: bool) -> Result<Option<PathBuf>> {
    if resume {
        let from = latest(run)?;
        if from.is_none() {
            tracing::info!(
                "{}: no checkpoint yet, the run starts from step 0",
                run.display()
            );
        }
        return Ok(from);
    }
    if let Some(step) = earlier_run(run)? {
        ensure!(
            force,
            "{} already holds a run (trained to step {step}); continue it with --resume, or \
             start over with --force (deletes its checkpoints, metrics and model folder)",
            run.display()
        );
        clear_run(run)?;
    }
    Ok(None)
}

pub fn clear_run(run: &Path) -> Result<()> {
    let ck = checkpoints_dir(run);
    if ck.is_dir() {
        for e in fs::read_dir(&ck)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("step-") || name.starts_with(".step-") {
                fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            } else if name == "latest" {
                fs::remove_file(&p)?;
            }
        }
        let _ = fs::remove_dir(&ck); // only if nothing else was there
    }
    for f in [lam_data::metrics::METRICS_FILE, "config.toml", "run.json"] {
        let p = run.join(f);
        if p.exists() {
            fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    // The earlier run's model folder, if lam wrote it (never a folder of the user's).
    let model = run.join(crate::model_folder::MODEL_DIR);
    if crate::model_folder::kind_of(&model).is_some() {
        fs::remove_dir_all(&model).with_context(|| format!("cannot remove {}", model.display()))?;
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
    read_state(ckpt)
}

/// File of a checkpoint folder holding its non-tensor state (step, settings, counters).
pub const STATE_FILE: &str = "state.json";

/// File of a checkpoint folder holding the optimiser's state.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";

/// Reads the state file of a checkpoint folder, whatever the stage's state type.
pub fn read_state<T: serde::de::DeserializeOwned>(ckpt: &Path) -> Result<T> {
    let path = ckpt.join(STATE_FILE);
    if !path.exists()
        && let Some(kind) = crate::model_folder::kind_of(ckpt)
    {
        // A model folder (`crate::model_folder`): its config.json holds the same state.
        let cfg = crate::model_folder::read_config(ckpt, &kind)?;
        return serde_json::from_value(cfg).with_context(|| {
            format!(
                "{}: not a model this command takes (a `{kind}`)",
                ckpt.join(crate::model_folder::CONFIG_FILE).display()
            )
        });
    }
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// Writes a stage's state file into the (temporary) checkpoint folder `dir`.
pub fn write_state<T: Serialize>(dir: &Path, state: &T) -> Result<()> {
    let path = dir.join(STATE_FILE);
    fs::write(&path, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes the optimiser's state into the (temporary) checkpoint folder `dir`.
pub fn save_optimizer(dir: &Path, optimizer: &ModuleOptimizer) -> Result<()> {
    optimizer
        .save(dir.join(OPTIMIZER_FILE))
        .map_err(|e| anyhow::anyhow!("cannot write optimizer state: {e:?}"))
}

/// Restores an optimiser's state from a checkpoint folder.
pub fn load_optimizer(ckpt: &Path, optimizer: ModuleOptimizer) -> Result<ModuleOptimizer> {
    let path = ckpt.join(OPTIMIZER_FILE);
    ensure!(
        path.exists(),
        "{} has no optimizer state ({OPTIMIZER_FILE}); it cannot be resumed exactly",
        ckpt.display()
    );
    optimizer
        .load(&path)
        .map_err(|e| anyhow::anyhow!("cannot load optimizer state {}: {e:?}", path.display()))
}

/// Where a run that can resume starts: with `resume`, the newest checkpoint in `run` (or
/// none yet: step 0); without, none, and an earlier run's checkpoints in `run` are removed
/// so that they cannot be mistaken for this run's.
pub fn resume_or_clear(run: &Path, resume: bool) -> Result<Option<PathBuf>> {
    if resume {
        return latest(run);
    }
    let old = checkpoints_dir(run);
    if old.is_dir() {
        fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove an earlier run's {}", old.display()))?;
    }
    Ok(None)
}

/// Restores optimiser and scheduler state from a checkpoint folder.
pub fn load_optim(
    ckpt: &Path,
    optimizer: TwoGroupOptimizer,
    scheduler: ModuleLrScheduler,
) -> Result<(TwoGroupOptimizer, ModuleLrScheduler)> {
    let optimizer = optimizer.map_module_optimizer(|o| load_optimizer(ckpt, o))?;
    let sched_path = ckpt.join("scheduler.bpk");
    let record = LrSchedulerRecord::load(&sched_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot load scheduler state {}: {e:?}",
            sched_path.display()
        )
    })?;
    Ok((optimizer, scheduler.load_record(record)))
}

/// Opens a stage-1 run for use: `path` is a run folder (its latest checkpoint) or a
/// checkpoint folder; returns the run's configuration, the model with the checkpoint's
/// weights, and the checkpoint folder. What every command that reads a trained model
/// (`lam eval`, `lam control`, `lam plan`, `lam serve`) opens it with.
pub fn load_run(
    path: &Path,
    device: &burn::prelude::Device,
) -> Result<(LamConfig, crate::LatentActionModel, PathBuf)> {
    let ckpt = resolve(path)?;
    let state = load_state(&ckpt)?;
    let model = load_weights(
        crate::train::init_model(&state.config, device),
        &ckpt.join("model.safetensors"),
    )?;
    Ok((state.config, model, ckpt))
}

/// Resolves a user-given path to a checkpoint folder: a checkpoint folder itself, a model
/// folder (`crate::model_folder`, e.g. `RUN/model`), or a run folder (its latest checkpoint).
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).exists() || crate::model_folder::kind_of(path).is_some() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.with_context(|| {
        format!(
            "{} is neither a checkpoint folder nor a run folder with checkpoints",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_with_nan_are_refused_naming_the_tensor() {
        let tmp = tempfile::tempdir().unwrap();
        let write = |name: &str, values: &[f32]| {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![values.len()],
                &bytes,
            )
            .unwrap();
            let path = tmp.path().join(format!("{name}.safetensors"));
            safetensors::serialize_to_file(vec![(name, view)], None, &path).unwrap();
            path
        };
        check_finite(&write("ok.weight", &[1.0, -2.0])).unwrap();
        let e = check_finite(&write("wm.blocks.0.bias", &[1.0, f32::NAN, 3.0]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wm.blocks.0.bias") && e.contains("flat index 1"),
            "{e}"
        );
        let e = check_finite(&write("inf", &[f32::INFINITY]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NaN or Inf"), "{e}");
        std::fs::write(tmp.path().join("junk.safetensors"), b"not a file").unwrap();
        let e = check_finite(&tmp.path().join("junk.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("junk.safetensors"), "{e}");
    }

    #[test]
    fn prune_never_deletes_the_checkpoint_just_written() {
        let tmp = tempfile::tempdir().unwrap();
        for s in [2, 10, 20] {
            fs::create_dir_all(tmp.path().join(format!("step-{s:07}"))).unwrap();
        }
        // An older, longer run's folders have higher steps than the one just written.
        prune(tmp.path(), 2, "step-0000002").unwrap();
        assert!(tmp.path().join("step-0000002").is_dir());
        assert!(tmp.path().join("step-0000020").is_dir());
        assert!(!tmp.path().join("step-0000010").exists());
        prune(tmp.path(), 1, "step-0000002").unwrap();
        assert!(tmp.path().join("step-0000002").is_dir());
        assert!(!tmp.path().join("step-0000020").exists());
    }
}
