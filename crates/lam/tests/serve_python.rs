//! `lam serve` driven from Python: the test makes a tiny stage-1 checkpoint (tiny preset,
//! random init), a sim encoder and controller to match, and a LAWM policy checkpoint; renders
//! an episode of the simulated suite to .npy files; starts `lam serve` on a free port; and
//! runs clients/python/tests/drive_server.py, which checks the replies' shapes and the error
//! replies for every bad input it sends (its output lists them).
//!
//! Needs the repository's Python environment with the client (`bash tools/setup.sh` makes it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use burn::prelude::*;
use lam_control::controller::{self, ControllerConfig, ControllerNetConfig};
use lam_lawm::ActionNorm;
use lam_lawm::LawmConfig;
use lam_lawm::checkpoint::{CheckpointState, Stage};
use lam_model::LamConfig;
use lam_model::checkpoint::{TrainState, save_weights};
use lam_sim::{Domain, Env, Task};

const MAX_MESSAGE_MB: f64 = 1.0;

/// Writes a uint8 array as a .npy file (format 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[u8]) {
    assert_eq!(shape.iter().product::<usize>(), data.len());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(data).unwrap();
}

/// An episode of the reach task at 96 x 96 (the encoder takes 32: the server resizes).
fn write_frames(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let size = 96u32;
    let mut env = Env::new(Task::Reach, Domain::Robot, 11, size).unwrap();
    let mut frames = Vec::new();
    let t = 12;
    for k in 0..t {
        frames.extend(env.render());
        let a = [(k as f32 * 0.7).sin(), (k as f32 * 0.3).cos()];
        env.step(&a).unwrap();
    }
    let s = size as usize;
    write_npy(&dir.join("frames.npy"), &[t, s, s, 3], &frames);
    let mut goal_env = Env::new(Task::Reach, Domain::Robot, 12, size).unwrap();
    write_npy(&dir.join("goal.npy"), &[s, s, 3], &goal_env.render());
}

/// A tiny-preset stage-1 run (random init), a sim encoder giving its 4 x 4 x 32 tokens from
/// 32 x 32 frames, and a controller for 2-D actions.
fn write_mpc_fixture(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let device = Device::flex();
    let cfg = LamConfig::preset("tiny").unwrap();
    assert_eq!(cfg.model.grid, [4, 4]);
    let run = dir.join("run");
    let ckpt = run.join("checkpoints/step-0000000");
    std::fs::create_dir_all(&ckpt).unwrap();
    let lam = lam_model::train::init_model(&cfg, &device);
    save_weights(&lam, &ckpt.join("model.safetensors")).unwrap();
    let state = TrainState {
        step: 0,
        seed: 0,
        code_last_used: Vec::new(),
        config: cfg.clone(),
    };
    std::fs::write(
        ckpt.join("state.json"),
        serde_json::to_string_pretty(&state).unwrap(),
    )
    .unwrap();
    std::fs::write(run.join("checkpoints/latest"), "step-0000000").unwrap();

    let enc_cfg = lam_encoder::sim::SimEncoderConfig {
        image_size: 32,
        patch_size: 8,
        dim: cfg.model.embed_dim,
        depth: 1,
        heads: 2,
        ..Default::default()
    };
    let meta: lam_encoder::sim::SimCheckpointMeta = serde_json::from_value(serde_json::json!({
        "architecture": lam_encoder::sim::ARCHITECTURE,
        "config": enc_cfg,
        "norm": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "pretrain": null,
    }))
    .unwrap();
    let encoder = lam_encoder::sim::SimEncoder::new(&enc_cfg, &device);
    let enc_dir = dir.join("encoder");
    lam_encoder::sim::save_checkpoint(&enc_dir, &encoder, &meta).unwrap();

    let ctrl_dir = dir.join("controller");
    let ccfg = ControllerConfig {
        hidden: 32,
        ..Default::default()
    };
    let ctrl = ControllerNetConfig {
        action_dim: 2,
        latent_dim: cfg.model.latent_dim,
        frame_dim: 0,
        hidden: ccfg.hidden,
    }
    .init(&device);
    // What `lam control fit` writes: the weights and controller.json (dimensions, config).
    std::fs::create_dir_all(&ctrl_dir).unwrap();
    save_weights(&ctrl, &ctrl_dir.join("controller.safetensors")).unwrap();
    let meta = serde_json::json!({
        "action_dim": 2,
        "latent_dim": cfg.model.latent_dim,
        "config": ccfg,
    });
    std::fs::write(ctrl_dir.join("controller.json"), meta.to_string()).unwrap();
    controller::load(&ctrl_dir, &device).expect("the controller fixture loads");
    (run, enc_dir, ctrl_dir)
}

/// A policy-stage LAWM checkpoint (default CPU-sized config, random init, 2-D actions).
fn write_lawm_fixture(dir: &Path) -> PathBuf {
    let device = Device::flex();
    let cfg = LawmConfig::default();
    let policy = cfg.policy.init(2, &device);
    let state = CheckpointState {
        stage: Stage::Policy,
        step: 0,
        config: cfg,
        action_dim: 2,
        action_norm: Some(ActionNorm {
            mean: vec![0.1, -0.1],
            std: vec![0.5, 0.5],
        }),
        data: Vec::new(),
        samples_per_sec: 0.0,
        vocabulary: vec!["reach".into()],
    };
    let run = dir.join("lawm");
    lam_lawm::checkpoint::save(&run, &policy, None, &state).unwrap();
    run
}

/// A running `lam serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &[&str], log: PathBuf) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lam"))
            .arg("serve")
            .args(args)
            .args([
                "--port",
                "0",
                "--max-message-mb",
                &MAX_MESSAGE_MB.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start lam serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let mut server = Server {
            child,
            url: String::new(),
            log,
        };
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = server.child.kill();
            panic!(
                "lam serve did not start (first line {line:?}); its log:\n{}",
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
        };
        server.url = url.to_string();
        server
    }

    fn drive(&mut self, frames: &Path, model: &str, max_connections: Option<usize>) {
        let root = common::repo_root();
        let py = common::python("numpy, msgpack, websockets.sync.client, lam_client");
        let t0 = Instant::now();
        let out = Command::new(py)
            .arg(root.join("clients/python/tests/drive_server.py"))
            .args(["--url", &self.url, "--model", model])
            .arg("--frames")
            .arg(frames)
            .args([
                "--max-message-bytes",
                &((MAX_MESSAGE_MB * 1024.0 * 1024.0) as usize).to_string(),
                "--max-connections",
                &max_connections.unwrap_or(0).to_string(),
            ])
            .env("PYTHONPATH", root.join("clients/python"))
            .output()
            .expect("cannot run the repository's Python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        assert!(
            out.status.success(),
            "drive_server.py ({model}) failed after {:.1} s:\n{stdout}\n{stderr}\nserver log:\n{}",
            t0.elapsed().as_secs_f64(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        assert!(stdout.contains("checks passed"), "{stdout}");
        // The server is still alive after every bad input.
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "lam serve exited during the test; its log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "the server panicked:\n{log}");
        assert!(
            log.contains("act ok in"),
            "per-call latency is logged:\n{log}"
        );
        if max_connections.is_some() {
            assert!(
                log.contains("to make room for conn"),
                "an idle connection gave its slot to a new client:\n{log}"
            );
        }
    }
}

#[test]
fn python_client_drives_mpc_server() {
    common::python("numpy, msgpack, websockets.sync.client, lam_client");
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    write_frames(&frames);
    let (run, enc, ctrl) = write_mpc_fixture(dir.path());
    let small_cem = [
        "--run",
        run.to_str().unwrap(),
        "--encoder",
        enc.to_str().unwrap(),
        "--controller",
        ctrl.to_str().unwrap(),
        "--domain",
        "robot",
        "--planner",
        "cem",
        "--samples",
        "32",
        "--elites",
        "4",
        "--iterations",
        "2",
        "--horizon",
        "3",
        "--replan-every",
        "3",
        "--max-connections",
        "6",
    ];
    let mut server = Server::start(&small_cem, dir.path().join("mpc.log"));
    server.drive(&frames, "mpc", Some(6));
    drop(server);
    // Robot actions through the controller, every session keeping the steps it executed and
    // correcting its rollouts by them.
    let memory = [&small_cem[..], &["--search-space", "action", "--memory"]].concat();
    let mut server = Server::start(&memory, dir.path().join("mpc-memory.log"));
    server.drive(&frames, "mpc", Some(6));
}

#[test]
fn python_client_drives_lawm_server() {
    common::python("numpy, msgpack, websockets.sync.client, lam_client");
    let dir = tempfile::tempdir().unwrap();
    let frames = dir.path().join("frames");
    write_frames(&frames);
    let lawm = write_lawm_fixture(dir.path());
    let mut server = Server::start(
        &[
            "--lawm",
            lawm.to_str().unwrap(),
            "--execute",
            "4",
            "--domain",
            "robot",
        ],
        dir.path().join("lawm.log"),
    );
    server.drive(&frames, "lawm", None);
}
