//! Acting with a finetuned policy: the loaded checkpoint ([`PolicyRunner`]) and one episode's
//! state ([`PolicySession`]: its instruction, the last H frames, the chunk actions still to
//! play). The closed-loop evaluation (`lam_eval::lawm`) and `lam serve` both act through these,
//! so a policy behaves the same wherever it runs.
//!
//! One step of an episode: [`PolicySession::observe`] the current frame, then
//! [`PolicyRunner::step`] the sessions (one batch: the policy is queried for every session
//! whose queue of chunk actions is empty, and each session's next action is taken).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;

use crate::checkpoint::{CheckpointState, Stage, load_policy, resolve};
use crate::instruction::InstructionEmbedder;
use crate::policy::ActionNorm;
use crate::policy::Policy;

/// A policy-stage checkpoint ready to act.
pub struct PolicyRunner {
    pub policy: Policy,
    pub state: CheckpointState,
    pub norm: ActionNorm,
    pub embedder: InstructionEmbedder,
    /// The checkpoint folder loaded.
    pub checkpoint: PathBuf,
    /// Chunk actions played before the policy is queried again (1 ..= chunk).
    pub execute: usize,
    /// Bounds the de-normalised actions are clipped to, when known.
    pub bounds: Option<(Vec<f32>, Vec<f32>)>,
    pub device: Device,
}

/// One episode's state.
#[derive(Clone, Debug)]
pub struct PolicySession {
    instruction: Vec<f32>,
    history: VecDeque<Vec<u8>>,
    /// Frames the policy reads (H).
    history_len: usize,
    pending: VecDeque<Vec<f32>>,
    seed: u64,
    steps: u64,
}

/// What one step of a session gave.
#[derive(Clone, Debug)]
pub struct PolicyStep {
    /// The action to play now.
    pub action: Vec<f32>,
    /// The whole chunk `[chunk][d]` when the policy was queried on this step.
    pub chunk: Option<Vec<Vec<f32>>>,
}

impl PolicyRunner {
    /// Loads the policy of a run folder or checkpoint folder. Errors name the folder: a
    /// world-model pretraining checkpoint (its head emits latent actions), a checkpoint
    /// without action normalisation, or normalisation of the wrong width.
    pub fn load(path: &Path, execute: usize, device: &Device) -> Result<Self> {
        let checkpoint = resolve(path)?;
        let (policy, state) = load_policy(&checkpoint, device)?;
        ensure!(
            state.stage == Stage::Policy,
            "{} is a world-model pretraining checkpoint; its head emits latent actions. \
             Finetune it on labeled demonstrations first (lam lawm finetune)",
            checkpoint.display()
        );
        let norm = state
            .action_norm
            .clone()
            .with_context(|| format!("{} has no action normalisation", checkpoint.display()))?;
        ensure!(
            norm.mean.len() == policy.action_dim && norm.std.len() == policy.action_dim,
            "{}: action normalisation has {} values for {}-D actions",
            checkpoint.display(),
            norm.mean.len(),
            policy.action_dim
        );
        ensure!(execute >= 1, "--execute must be at least 1");
        let embedder = state.embedder();
        Ok(Self {
            policy,
            state,
            norm,
            embedder,
            checkpoint,
            execute,
            bounds: None,
            device: device.clone(),
        })
    }

    /// Clips every action to `[low, high]` from now on; the widths must be the policy's.
    pub fn with_bounds(mut self, bounds: Option<(Vec<f32>, Vec<f32>)>) -> Result<Self> {
        if let Some((lo, hi)) = &bounds {
            if lo.len() != self.action_dim() || hi.len() != self.action_dim() {
                bail!(
                    "action bounds have {} lows and {} highs but the policy emits {}-D actions",
                    lo.len(),
                    hi.len(),
                    self.action_dim()
                );
            }
        }
        self.bounds = bounds;
        Ok(self)
    }

    pub fn action_dim(&self) -> usize {
        self.policy.action_dim
    }

    /// Side of the square RGB frames the policy reads.
    pub fn image_size(&self) -> usize {
        self.state.config.policy.image_size
    }

    /// Actions per chunk.
    pub fn chunk(&self) -> usize {
        self.state.config.policy.chunk
    }

    /// A new episode conditioned on `instruction`; `seed` draws the diffusion head's noise.
    pub fn session(&self, instruction: &str, seed: u64) -> PolicySession {
        PolicySession {
            instruction: self.embedder.embed(instruction),
            history: VecDeque::new(),
            history_len: self.state.config.policy.history,
            pending: VecDeque::new(),
            seed,
            steps: 0,
        }
    }

    /// One step of each session (each has observed its current frame): the sessions whose
    /// queue is empty are queried in one batch (they must share seed and step count, as
    /// episodes run in lockstep do), then every session takes its next action.
    pub fn step(&self, sessions: &mut [&mut PolicySession]) -> Result<Vec<PolicyStep>> {
        let cfg = &self.state.config.policy;
        let asking: Vec<usize> = (0..sessions.len())
            .filter(|&i| sessions[i].pending.is_empty())
            .collect();
        let mut chunks: Vec<Option<Vec<Vec<f32>>>> = vec![None; sessions.len()];
        if let Some(&first) = asking.first() {
            let (seed, steps) = (sessions[first].seed, sessions[first].steps);
            ensure!(
                asking
                    .iter()
                    .all(|&i| sessions[i].seed == seed && sessions[i].steps == steps),
                "sessions queried in one batch must share their seed and step count"
            );
            ensure!(
                asking.iter().all(|&i| !sessions[i].history.is_empty()),
                "a session must observe a frame before its first step"
            );
            let histories: Vec<&VecDeque<Vec<u8>>> =
                asking.iter().map(|&i| &sessions[i].history).collect();
            let instructions: Vec<&[f32]> = asking
                .iter()
                .map(|&i| sessions[i].instruction.as_slice())
                .collect();
            let out = self.policy.act(
                cfg,
                &self.norm,
                &histories,
                &instructions,
                seed,
                steps as usize,
                &self.device,
            )?;
            for (mut chunk, &i) in out.into_iter().zip(&asking) {
                if let Some((lo, hi)) = &self.bounds {
                    for a in chunk.iter_mut() {
                        for (j, v) in a.iter_mut().enumerate() {
                            *v = v.clamp(lo[j], hi[j]);
                        }
                    }
                }
                sessions[i]
                    .pending
                    .extend(chunk.iter().take(self.execute.min(cfg.chunk)).cloned());
                chunks[i] = Some(chunk);
            }
        }
        let mut steps = Vec::with_capacity(sessions.len());
        for (s, chunk) in sessions.iter_mut().zip(chunks) {
            let action = s.pending.pop_front().context("a chunk filled the queue")?;
            s.steps += 1;
            steps.push(PolicyStep { action, chunk });
        }
        Ok(steps)
    }
}

impl PolicySession {
    /// The frame seen now (`3 x S x S` bytes, CHW, S the policy's image size); the first
    /// frame of an episode fills the whole history.
    pub fn observe(&mut self, frame: Vec<u8>) {
        if self.history.is_empty() {
            self.history
                .extend(std::iter::repeat_n(frame, self.history_len));
        } else {
            self.history.pop_front();
            self.history.push_back(frame);
        }
    }

    /// Actions taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}
