//! Times the CEM plan of `lam bench plan` (tiny preset, 300 x 30, horizon 5, 3 context frames)
//! and its parts, for profiling the planner without the PyTorch twin:
//!
//!     cargo run --release -p lam-control --example plan_profile [-- PLANS [step] [bf16] [lewm] [twin=DIR]]
//!
//! `bf16` runs the rollout's matrix products in bfloat16 on AMX tiles (where the CPU has
//! them); `lewm` times the LeWM-sized predictor of `lam bench plan` instead of the tiny one
//! (one token per frame, D = 192, 6 blocks x 256 wide, 4 heads, 3 context frames).
//! `step` times the tensor path (`WorldModel::step` over the cache repeated per candidate)
//! instead of the batched CPU rollout. `twin=DIR` also writes the model and problem in the
//! layout of `lam bench plan` for `python3 tools/reference/plan_twin.py --dir DIR` (the
//! PyTorch twin: parity of 16 fixed candidates and its own CEM timings), so that both can
//! be timed back to back. Run under `perf record -g` for a profile.

use std::time::Instant;

use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::Distribution;
use lam_control::planner::{PlannerConfig, Problem, SearchSpace, plan};
use lam_control::rollout::{HostRollout, rollout};
use lam_model::checkpoint::save_weights;
use lam_model::config::LamConfig;
use lam_model::train::init_model;
use lam_model::world_model::KvCache;
use lam_model::world_model::WorldModel;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let plans: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let tensor_path = args.iter().any(|a| a == "step");
    let mut cfg = LamConfig::preset("tiny").unwrap();
    if args.iter().any(|a| a == "lewm") {
        cfg = cfg
            .with_overrides(&[
                "model.grid=[1,1]".into(),
                "model.wm_dim=256".into(),
                "model.wm_depth=6".into(),
                "model.wm_heads=4".into(),
                "model.embed_dim=192".into(),
            ])
            .unwrap();
    }
    let precision = if args.iter().any(|a| a == "bf16") {
        lam_control::planner::HostPrecision::Bf16
    } else {
        lam_control::planner::HostPrecision::F32
    };
    let dev = Device::flex();
    dev.seed(cfg.train.seed);
    let m = &cfg.model;
    let mut wm = m.world_model().init(&dev);
    for block in wm.blocks.iter_mut() {
        block.ada = LinearConfig::new(m.wm_dim, 6 * m.wm_dim).init(&dev);
    }
    wm.final_ada = LinearConfig::new(m.wm_dim, 2 * m.wm_dim).init(&dev);
    let (n, dd, d) = (m.tokens(), m.embed_dim, m.latent_dim);
    let window = m.frames - 1;
    let normal = Distribution::Normal(0.0, 1.0);
    let history = Tensor::<4>::random([1, 2, n, dd], normal, &dev);
    let history_z = Tensor::<3>::random([1, 2, d], normal, &dev);
    let current = Tensor::<3>::random([1, n, dd], normal, &dev);
    let goal = Tensor::<3>::random([1, n, dd], normal, &dev);
    let cache = wm.prefill(history.clone(), history_z.clone(), window);
    let pcfg = PlannerConfig::default();
    let space = SearchSpace::Latent { dim: d };
    let problem = Problem {
        world_model: &wm,
        cache: Some(&cache),
        window,
        history: Some((history, history_z)),
        use_cache: true,
        host: HostRollout::new(precision),
        current,
        goal,
        support: None,
        feasible: None,
        memory: None,
    };
    let (c, h) = (pcfg.samples, pcfg.horizon);
    let z = Tensor::<3>::random([c, h, d], normal, &dev);
    let seqs: Vec<f32> = z.clone().into_data().try_into_vec::<f32>().unwrap();
    // Wall time and CPU time of this process (user + system; on a machine shared with other
    // jobs the CPU time varies less than the wall time).
    let time = |label: &str, reps: usize, f: &dyn Fn()| {
        f();
        let (t0, c0) = (Instant::now(), cpu_seconds());
        for _ in 0..reps {
            f();
        }
        let ms = t0.elapsed().as_secs_f64() * 1000.0 / reps as f64;
        let cpu = (cpu_seconds() - c0) * 1000.0 / reps as f64;
        println!("{label:<44} {ms:>10.2} ms wall {cpu:>10.2} ms cpu");
    };
    if let Some(dir) = args.iter().find_map(|a| a.strip_prefix("twin=")) {
        write_twin_problem(
            std::path::Path::new(dir),
            &cfg,
            &wm,
            &problem,
            &cache,
            window,
        );
    }
    if tensor_path {
        time("rollout, step() over repeated cache", 3, &|| {
            let frame = wm.rollout_steps(Some(&cache), problem.current.clone(), z.clone(), window);
            let _ = frame.into_data();
        });
        return;
    }
    time("rollout (300 candidates x 5 steps)", 20, &|| {
        let _ = rollout(&problem, &space, &seqs, c, h).into_data();
    });
    time("CEM plan (300 x 30, horizon 5)", plans, &|| {
        let _ = plan(&pcfg, &problem, &space);
    });
}

/// The files `plan_twin.py` reads: config.json, model.safetensors (a full stage-1 model
/// around this world model) and problem.safetensors (history, current, goal, 16 fixed
/// candidates and lam's final frames for them).
fn write_twin_problem(
    dir: &std::path::Path,
    cfg: &LamConfig,
    wm: &WorldModel,
    problem: &Problem,
    _cache: &KvCache,
    window: usize,
) {
    std::fs::create_dir_all(dir).unwrap();
    let dev = problem.current.device();
    let mut lam = init_model(cfg, &dev);
    lam.world_model = wm.clone();
    save_weights(&lam, &dir.join("model.safetensors")).unwrap();
    let pcfg = PlannerConfig::default();
    let mut twin_cfg = serde_json::to_value(cfg).unwrap();
    twin_cfg["window"] = serde_json::json!(window);
    twin_cfg["planner"] = serde_json::json!({"samples": pcfg.samples, "elites": pcfg.elites,
        "iterations": pcfg.iterations, "horizon": pcfg.horizon, "min_std": pcfg.min_std});
    std::fs::write(dir.join("config.json"), twin_cfg.to_string()).unwrap();
    let d = cfg.model.latent_dim;
    let seqs_t = Tensor::<3>::random([16, pcfg.horizon, d], Distribution::Normal(0.0, 1.0), &dev);
    let seqs: Vec<f32> = seqs_t.clone().into_data().try_into_vec::<f32>().unwrap();
    let space = SearchSpace::Latent { dim: d };
    let finals = rollout(problem, &space, &seqs, 16, pcfg.horizon);
    let (history, history_z) = problem.history.clone().unwrap();
    let entries: Vec<(&str, Vec<usize>, Vec<f32>)> = vec![
        host("history", history),
        host("history_z", history_z),
        host("current", problem.current.clone()),
        host("goal", problem.goal.clone()),
        host("seqs", seqs_t),
        host("finals", finals),
    ];
    std::fs::write(dir.join("problem.safetensors"), safetensors_bytes(&entries)).unwrap();
}

fn host<'a, const D: usize>(name: &'a str, t: Tensor<D>) -> (&'a str, Vec<usize>, Vec<f32>) {
    (
        name,
        t.dims().to_vec(),
        t.into_data().try_into_vec::<f32>().unwrap(),
    )
}

/// A safetensors file of f32 tensors: header length (u64 LE), JSON header, data.
fn safetensors_bytes(entries: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, values) in entries {
        let end = offset + 4 * values.len();
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::Value::Object(header).to_string();
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    for (_, _, values) in entries {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// User + system CPU seconds of this process, from /proc/self/stat (0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}
