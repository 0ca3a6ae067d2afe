//! # lam-serve: `lam serve`, a policy server for robot loops written in Python
//!
//! Robots, simulators and benchmarks are driven from Python; `lam serve` answers "here is
//! the observation, what do I do?" over a WebSocket on localhost (`--host` to bind
//! elsewhere), the way policy servers in robot learning do. The Python client is
//! `clients/python` (`lam_client.LamClient`).
//!
//! Two kinds of model, each loaded once and shared by every connection:
//!
//! * `--run RUN --encoder ENC [--controller CTRL] [--planner cem ...]`: MPC through a stage-1
//!   world model toward a goal image (lam-control's [`lam_control::closed_loop::MpcSession`],
//!   one per connection);
//! * `--lawm CKPT`: a finetuned LAWM policy conditioned on an instruction, acting in chunks.
//!
//! Calls (msgpack maps in binary WebSocket messages; arrays as numpy describes them, see
//! [`protocol`]): `info` (model, action space, image size and normalisation), `reset`
//! (episode start with a goal image or an instruction) and `act` (an observation image of
//! any size, resized and normalised here as the model expects, and an optional state, in;
//! the action, whether a new plan or chunk was made, the planner's confidence and the
//! timing out). Every call's latency is logged and returned.
//!
//! Bad input (malformed msgpack, oversized messages, wrong dtype or shape, unknown calls or
//! fields, `act` before `reset`) gets an error reply naming the problem; the connection and
//! the server keep going.
//!
//! Modules: [`ws`] (the WebSocket protocol), [`protocol`] (messages and arrays),
//! [`backend`] (the models and their sessions), [`server`] (connections); `lam serve` is the `lam` binary's.

pub mod backend;
pub mod protocol;
pub mod server;
pub mod ws;
