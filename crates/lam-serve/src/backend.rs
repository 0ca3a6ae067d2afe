//! What the server serves: MPC through a stage-1 world model (goal images), or a LAWM policy
//! (instructions). Each is loaded once and shared by every connection; each connection owns a
//! [`Session`] (one episode at a time).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::prelude::*;
use lam_control::closed_loop::{Agent, MpcSession};
use lam_encoder::Encoder;
use lam_lawm::session::{PolicyRunner, PolicySession};
use rmpv::Value;
use serde_json::json;

use crate::protocol::{self, Image};

/// Milliseconds since `t0`.
pub fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

/// Converts a JSON value into a msgpack value (for replies assembled with `json!`).
pub fn to_msgpack(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_msgpack).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.iter()
                .map(|(k, v)| (Value::from(k.as_str()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// MPC toward a goal image through a stage-1 world model.
pub struct MpcBackend<'a> {
    pub agent: Agent<'a>,
    pub encoder: &'a Encoder,
    /// Side of the square the encoder sees.
    pub size: usize,
    pub device: Device,
    /// The stage-1 checkpoint folder served.
    pub checkpoint: PathBuf,
    /// Names of the action components, when known.
    pub action_names: Option<Vec<String>>,
}

/// A LAWM policy checkpoint (policy stage).
pub struct LawmBackend {
    pub runner: PolicyRunner,
    /// Instruction used when `reset` names none.
    pub default_instruction: Option<String>,
}

pub enum Backend<'a> {
    Mpc(MpcBackend<'a>),
    Lawm(LawmBackend),
}

/// One connection's episode state.
pub enum Session<'a> {
    /// No `reset` yet (or the last call failed inside the model and cleared it).
    Idle,
    Mpc {
        session: MpcSession<'a>,
        steps: u64,
        /// Actions of the current block still to send (one per `act`; the frames sent with
        /// them are not needed by the model, which steps once per block).
        block: VecDeque<Vec<f32>>,
    },
    Lawm(PolicySession),
}

/// The reply fields of a successful call (the envelope is added by the server).
pub type Fields = Vec<(&'static str, Value)>;

/// Takes the named fields out of a request, rejecting any other.
fn take_fields(
    call: &str,
    fields: Vec<(String, Value)>,
    allowed: &[&str],
) -> Result<Vec<Option<Value>>, String> {
    let mut out: Vec<Option<Value>> = vec![None; allowed.len()];
    for (k, v) in fields {
        match allowed.iter().position(|a| *a == k) {
            Some(i) => out[i] = Some(v),
            None => {
                let expected = if allowed.is_empty() {
                    "it takes no fields".to_string()
                } else {
                    format!("expected {}", allowed.join(", "))
                };
                return Err(format!("`{call}` has an unknown field `{k}` ({expected})"));
            }
        }
    }
    Ok(out)
}

fn optional_seed(v: Option<Value>) -> Result<u64, String> {
    match v {
        None | Some(Value::Nil) => Ok(0),
        Some(v) => v.as_u64().ok_or_else(|| match &v {
            Value::Integer(i) => format!("`seed` must be a non-negative integer, got {i}"),
            other => format!(
                "`seed` must be a non-negative integer, got {}",
                protocol::kind(other)
            ),
        }),
    }
}

fn optional_string(field: &str, v: Option<Value>) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Nil) => Ok(None),
        Some(Value::String(s)) if s.as_str().is_some() => Ok(s.into_str()),
        Some(v) => Err(format!(
            "`{field}` must be a string, got {}",
            protocol::kind(&v)
        )),
    }
}

/// Bytes of an image as the LAWM policy takes them: `size x size` CHW, prepared as every frame
/// lam sees (`lam_ingest::preprocess::rgb_bytes`), as its training episodes were.
pub fn lawm_frame(img: &Image, size: usize) -> Result<Vec<u8>> {
    lam_ingest::preprocess::rgb_bytes(&img.rgb, img.width as u32, img.height as u32, size as u32)
        .map_err(|e| anyhow::anyhow!("{e}"))
}

impl<'a> Backend<'a> {
    /// Which calls take what, for the `info` reply.
    pub fn info(&self, max_message: usize) -> serde_json::Value {
        match self {
            Backend::Mpc(m) => {
                let cfg = m.agent.cfg;
                let info = &m.encoder.info;
                let p = &m.agent.planner;
                json!({
                    "model": "mpc",
                    "checkpoint": m.checkpoint.display().to_string(),
                    "world_model": {
                        "frames": cfg.model.frames,
                        "grid": cfg.model.grid,
                        "embed_dim": cfg.model.embed_dim,
                        "latent_dim": cfg.model.latent_dim,
                        "conditioning": format!("{:?}", cfg.model.conditioning).to_lowercase(),
                    },
                    "planner": {
                        "kind": p.kind,
                        "search_space": m.agent.mode,
                        "horizon": p.horizon,
                        "samples": p.samples,
                        "elites": p.elites,
                        "iterations": p.iterations,
                        "cost": p.cost,
                        "replan_every": m.agent.replan_every,
                        "frameskip": m.agent.frameskip,
                        "act_steps": m.agent.steps_per_call(),
                        "world_models": 1 + m.agent.ensemble.len(),
                    },
                    "encoder": {
                        "path": info.path.display().to_string(),
                        "architecture": info.architecture,
                        "dim": info.dim,
                        "patch_size": info.patch_size,
                    },
                    "image": {
                        "size": m.size,
                        "layout": "RGB [height, width, 3], uint8 0..255 or float 0..1, any size",
                        "preprocessing": format!(
                            "short side resized to {s} (antialiased bicubic), centre {s}x{s} crop, then (x / 255 - mean) / std per channel", s = m.size),
                        "mean": info.norm.mean,
                        "std": info.norm.std,
                    },
                    "action": {
                        "dim": m.agent.low.len(),
                        "low": m.agent.low,
                        "high": m.agent.high,
                        "names": m.action_names,
                        "chunk": 1,
                    },
                    "reset": {"goal": "required", "instruction": "not used", "seed": "optional"},
                    "act": {"image": "required", "state": "optional, not used by this model"},
                    "max_message_bytes": max_message,
                    "protocol": protocol::PROTOCOL_VERSION,
                })
            }
            Backend::Lawm(l) => {
                let pc = &l.runner.state.config.policy;
                json!({
                    "model": "lawm",
                    "checkpoint": l.runner.checkpoint.display().to_string(),
                    "policy": {
                        "head": pc.head,
                        "history": pc.history,
                        "chunk": pc.chunk,
                        "execute": l.runner.execute,
                        "step": l.runner.state.step,
                        "instruction_dim": pc.instruction_dim,
                    },
                    "image": {
                        "size": pc.image_size,
                        "layout": "RGB [height, width, 3], uint8 0..255 or float 0..1, any size",
                        "preprocessing": format!(
                            "a square frame whose side is a multiple of {s}: box-filtered to {s}x{s}; otherwise short side resized to {s} (antialiased bicubic) and centre {s}x{s} crop; then x / 255 - 0.5", s = pc.image_size),
                        "mean": [0.5, 0.5, 0.5],
                        "std": [1.0, 1.0, 1.0],
                        "scale": 255.0,
                    },
                    "action": {
                        "dim": l.runner.policy.action_dim,
                        "low": l.runner.bounds.as_ref().map(|b| b.0.clone()),
                        "high": l.runner.bounds.as_ref().map(|b| b.1.clone()),
                        "chunk": pc.chunk,
                        "normalisation": {"mean": l.runner.norm.mean, "std": l.runner.norm.std},
                    },
                    "reset": {
                        "goal": "not used",
                        "instruction": if l.default_instruction.is_some() { "optional" } else { "required" },
                        "default_instruction": l.default_instruction,
                        "seed": "optional",
                    },
                    "act": {"image": "required", "state": "optional, not used by this model"},
                    "max_message_bytes": max_message,
                    "protocol": protocol::PROTOCOL_VERSION,
                })
            }
        }
    }

    /// Starts an episode. Errors are messages for the client.
    pub fn reset(
        &'a self,
        session: &mut Session<'a>,
        fields: Vec<(String, Value)>,
    ) -> Result<Fields, String> {
        let t0 = Instant::now();
        let mut f = take_fields("reset", fields, &["goal", "instruction", "seed"])?.into_iter();
        let (goal, instruction, seed) =
            (f.next().flatten(), f.next().flatten(), f.next().flatten());
        let seed = optional_seed(seed)?;
        let instruction = optional_string("instruction", instruction)?;
        match self {
            Backend::Mpc(m) => {
                if instruction.is_some() {
                    return Err("this server plans toward a goal image (MPC): `reset` takes `goal`, not `instruction`".into());
                }
                let goal = match goal {
                    None | Some(Value::Nil) => {
                        return Err(
                            "`reset` needs a `goal` image: the MPC planner plans toward it".into(),
                        );
                    }
                    Some(v) => protocol::image("goal", v)?,
                };
                let te = Instant::now();
                let tokens = m
                    .encoder
                    .encode_rgb(&goal.rgb, goal.width, goal.height, m.size, &m.device)
                    .map_err(|e| format!("encoding `goal`: {e:#}"))?;
                let encode_ms = ms(te);
                *session = Session::Mpc {
                    session: m.agent.session(tokens, seed),
                    steps: 0,
                    block: VecDeque::new(),
                };
                Ok(vec![(
                    "timing",
                    to_msgpack(&json!({"encode_ms": encode_ms, "total_ms": ms(t0)})),
                )])
            }
            Backend::Lawm(l) => {
                if !matches!(goal, None | Some(Value::Nil)) {
                    return Err("this server runs a LAWM policy conditioned on an instruction: `reset` takes `instruction`, not `goal`".into());
                }
                let text = match (instruction, &l.default_instruction) {
                    (Some(t), _) => t,
                    (None, Some(d)) => d.clone(),
                    (None, None) => {
                        return Err("`reset` needs an `instruction` for the LAWM policy (e.g. \"reach\", or the episode's sentence for sort); the server has no --instruction default".into());
                    }
                };
                let unknown = l.runner.embedder.unknown_words(&text);
                if !unknown.is_empty() {
                    tracing::warn!(
                        "instruction {text:?}: words outside the policy's vocabulary {unknown:?} map to <unk>"
                    );
                }
                *session = Session::Lawm(l.runner.session(&text, seed));
                Ok(vec![(
                    "timing",
                    to_msgpack(&json!({"encode_ms": 0.0, "total_ms": ms(t0)})),
                )])
            }
        }
    }

    /// One observation in, one action out. Errors are messages for the client.
    pub fn act(
        &'a self,
        session: &mut Session<'a>,
        fields: Vec<(String, Value)>,
    ) -> Result<Fields, String> {
        let t0 = Instant::now();
        let mut f = take_fields("act", fields, &["image", "state"])?.into_iter();
        let (image, state) = (f.next().flatten(), f.next().flatten());
        let image = match image {
            None | Some(Value::Nil) => {
                return Err("`act` needs an `image` (the current observation)".into());
            }
            Some(v) => protocol::image("image", v)?,
        };
        if let Some(s) = state.filter(|v| !v.is_nil()) {
            protocol::vector("state", s)?;
        }
        match (self, session) {
            (_, Session::Idle) => {
                Err("`act` before `reset`: start an episode with reset first".into())
            }
            (
                Backend::Mpc(m),
                Session::Mpc {
                    session,
                    steps,
                    block,
                },
            ) => {
                if let Some(action) = block.pop_front() {
                    *steps += 1;
                    return Ok(vec![
                        ("action", protocol::f32_array(&[action.len()], &action)),
                        ("planned", Value::Boolean(false)),
                        ("step", Value::from(*steps)),
                        (
                            "timing",
                            to_msgpack(&json!({
                                "encode_ms": 0.0,
                                "plan_ms": 0.0,
                                "model_ms": 0.0,
                                "total_ms": ms(t0),
                            })),
                        ),
                    ]);
                }
                let te = Instant::now();
                let tokens = m
                    .encoder
                    .encode_rgb(&image.rgb, image.width, image.height, m.size, &m.device)
                    .map_err(|e| format!("encoding `image`: {e:#}"))?;
                let encode_ms = ms(te);
                let tm = Instant::now();
                let step = session
                    .act(tokens)
                    .map_err(|e| format!("planning: {e:#}"))?;
                let model_ms = ms(tm);
                *steps += 1;
                block.extend(step.actions(m.agent.low.len()));
                let action = block.pop_front().unwrap_or_default();
                Ok(vec![
                    ("action", protocol::f32_array(&[action.len()], &action)),
                    ("planned", Value::Boolean(step.planned)),
                    ("confidence", Value::F64(step.confidence as f64)),
                    ("cost", Value::F64(step.cost as f64)),
                    ("step", Value::from(*steps)),
                    (
                        "timing",
                        to_msgpack(&json!({
                            "encode_ms": encode_ms,
                            "plan_ms": step.plan_ms,
                            "model_ms": model_ms,
                            "total_ms": ms(t0),
                        })),
                    ),
                ])
            }
            (Backend::Lawm(l), Session::Lawm(session)) => {
                let r = &l.runner;
                let te = Instant::now();
                let frame =
                    lawm_frame(&image, r.image_size()).map_err(|e| format!("image: {e:#}"))?;
                session.observe(frame);
                let encode_ms = ms(te);
                let tm = Instant::now();
                let step = r
                    .step(&mut [&mut *session])
                    .map_err(|e| format!("{e:#}"))?
                    .pop()
                    .expect("one session, one step");
                let model_ms = ms(tm);
                let d = r.action_dim();
                let mut out = vec![
                    ("action", protocol::f32_array(&[d], &step.action)),
                    ("planned", Value::Boolean(step.chunk.is_some())),
                    ("confidence", Value::Nil),
                    ("step", Value::from(session.steps())),
                ];
                if let Some(c) = step.chunk {
                    let flat: Vec<f32> = c.concat();
                    out.push(("chunk", protocol::f32_array(&[c.len(), d], &flat)));
                }
                out.push((
                    "timing",
                    to_msgpack(&json!({
                        "encode_ms": encode_ms,
                        "model_ms": model_ms,
                        "total_ms": ms(t0),
                    })),
                ));
                Ok(out)
            }
            _ => Err("the session does not belong to this server's model".into()),
        }
    }
}

/// Loads a LAWM policy checkpoint for serving.
pub fn load_lawm(
    path: &std::path::Path,
    device: &Device,
    execute: usize,
    default_instruction: Option<String>,
    bounds: Option<(Vec<f32>, Vec<f32>)>,
) -> Result<LawmBackend> {
    Ok(LawmBackend {
        runner: PolicyRunner::load(path, execute, device)?.with_bounds(bounds)?,
        default_instruction,
    })
}
