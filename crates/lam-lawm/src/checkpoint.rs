//! Checkpoints: one folder per saved step, written under a temporary name and renamed.
//!
//! ```text
//! RUN/checkpoints/step-0000500/policy.safetensors       the policy's weights
//! RUN/checkpoints/step-0000500/world_model.safetensors  the RSSM (pretraining stage only)
//! RUN/checkpoints/step-0000500/optimizer.bpk            AdamW state (burn's burnpack, the
//!                                                       only serialisation burn offers for
//!                                                       it), so that a run resumes exactly
//! RUN/checkpoints/step-0000500/state.json               stage, step, config, action dim,
//!                                                       action normalisation
//! RUN/checkpoints/latest                                name of the newest complete one
//! ```
//!
//! The layout and the weight files are lam-model's ([`lam_model::checkpoint`]); parameter ids
//! are hashes of module paths ([`lam_model::optim::stable_param_ids`]), so the optimiser
//! state saved by one process finds its parameters in the next. The learning rate is a
//! function of the step ([`crate::config::TrainConfig::lr_at`]), so no scheduler state is
//! needed; batches and noise are drawn from generators seeded with (seed, step).

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::optim::ModuleOptimizer;
use burn::prelude::*;
use lam_model::checkpoint::{load_weights, save_weights};
use serde::{Deserialize, Serialize};

use crate::config::LawmConfig;
use crate::policy::{ActionNorm, Policy};

/// What a checkpoint's policy head emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// World-model pretraining: latent chunks, no labels.
    Pretrain,
    /// Supervised policy training on labeled actions (the "supervised pretraining" baseline,
    /// finetuning, and training from scratch).
    Policy,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub stage: Stage,
    pub step: usize,
    pub config: LawmConfig,
    /// Output dimension of the policy head (latent dim after pretraining).
    pub action_dim: usize,
    /// Normalisation of the real actions (policy stage only).
    pub action_norm: Option<ActionNorm>,
    /// Dataset folders the stage trained on.
    pub data: Vec<PathBuf>,
    /// Training throughput of the run so far, samples per second.
    pub samples_per_sec: f64,
    /// The instruction words the policy was trained on (empty in checkpoints saved before
    /// vocabularies were: the simulated suite's words); others map to `<unk>`.
    #[serde(default)]
    pub vocabulary: Vec<String>,
}

impl CheckpointState {
    /// The instruction embedding a policy of this checkpoint acts with.
    pub fn embedder(&self) -> crate::instruction::InstructionEmbedder {
        crate::instruction::InstructionEmbedder::with_vocabulary(
            self.config.policy.instruction_dim,
            &self.vocabulary,
        )
    }
}

pub use lam_model::checkpoint::{OPTIMIZER_FILE, load_optimizer};

/// Saves a checkpoint folder (weights only) and points `latest` at it; returns the folder.
pub fn save(
    run: &Path,
    policy: &Policy,
    world_model: Option<&crate::rssm::Rssm>,
    state: &CheckpointState,
) -> Result<PathBuf> {
    save_with_optimizer(run, policy, world_model, None, state)
}

/// [`save`], with the optimiser's state when given (what training saves, to resume from).
pub fn save_with_optimizer(
    run: &Path,
    policy: &Policy,
    world_model: Option<&crate::rssm::Rssm>,
    optimizer: Option<&ModuleOptimizer>,
    state: &CheckpointState,
) -> Result<PathBuf> {
    lam_model::checkpoint::write_step(run, state.step, 0, |tmp| {
        save_weights(policy, &tmp.join("policy.safetensors"))?;
        if let Some(wm) = world_model {
            save_weights(wm, &tmp.join("world_model.safetensors"))?;
        }
        if let Some(o) = optimizer {
            lam_model::checkpoint::save_optimizer(tmp, o)?;
        }
        lam_model::checkpoint::write_state(tmp, state)
    })
}

/// A checkpoint folder from a checkpoint folder or a run folder (its latest checkpoint).
pub use lam_model::checkpoint::resolve;

pub fn load_state(ckpt: &Path) -> Result<CheckpointState> {
    lam_model::checkpoint::read_state(ckpt)
}

/// The policy of a checkpoint (a run folder or a checkpoint folder) on `device`.
pub fn load_policy(path: &Path, device: &Device) -> Result<(Policy, CheckpointState)> {
    let ckpt = resolve(path)?;
    let state = load_state(&ckpt)?;
    let policy = state.config.policy.init(state.action_dim, device);
    let own = ckpt.join("policy.safetensors");
    let weights = if own.exists() {
        own
    } else {
        // A model folder (`lam_model::model_folder`): the policy is its model.safetensors.
        ckpt.join(lam_model::model_folder::WEIGHTS_FILE)
    };
    let policy = load_weights(policy, &weights)?;
    Ok((policy, state))
}

/// Writes the policy of checkpoint `ckpt` as the run's model folder `RUN/model`
/// (`lam_model::model_folder`), with `figures` in its model card.
pub fn export_policy(run_dir: &Path, ckpt: &Path, figures: &[(String, String)]) -> Result<()> {
    use lam_model::model_folder::{self, Card, MODEL_DIR, kind};
    let state: serde_json::Value = lam_model::checkpoint::read_state(ckpt)?;
    let pretrained = state["stage"] == serde_json::json!(Stage::Pretrain);
    model_folder::write(
        &run_dir.join(MODEL_DIR),
        kind::LAWM_POLICY,
        &state,
        &ckpt.join("policy.safetensors"),
        &Card {
            summary: if pretrained {
                "A LAWM imitation policy after world-model pretraining on unlabeled video: \
                 its head emits chunks of latent actions; finetune it on labeled demos."
            } else {
                "A LAWM imitation policy trained on labeled demos: image history and \
                 instruction in, a chunk of robot actions out."
            },
            figures,
            usage: if pretrained {
                &["lam lawm finetune --data DEMOS --init MODEL --out RUN"]
            } else {
                &[
                    "lam lawm eval --checkpoint MODEL --task reach",
                    "lam serve --lawm MODEL",
                ]
            },
        },
    )
}
