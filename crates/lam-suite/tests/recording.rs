//! LeRobot recording round trip and input errors.

use lam_sim::{Domain, Env, PolicyKind, Task};
use lam_suite::{Dataset, RecordConfig};
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("lam-sim-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .sum::<f64>()
        / a.len() as f64
}

#[test]
fn robot_recording_round_trip() {
    let out = tmp("robot");
    let cfg = RecordConfig {
        task: Task::Push,
        domain: Domain::Robot,
        episodes: 3,
        seed: 40,
        policy: PolicyKind::Mixed,
        episodes_per_file: 2,
        ..Default::default()
    };
    let (root, _) = lam_suite::record(&cfg, &out, false).unwrap();
    for f in [
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "meta/episodes/chunk-000/file-000.parquet",
        "data/chunk-000/file-000.parquet",
        "data/chunk-000/file-001.parquet",
        "videos/observation.image/chunk-000/file-001.mp4",
        "ground_truth/frames.parquet",
    ] {
        assert!(root.join(f).is_file(), "missing {f}");
    }
    let ds = Dataset::open(&root).unwrap();
    assert_eq!(ds.len(), 3);
    let mut env = Env::new(Task::Push, Domain::Robot, 0, 64).unwrap();
    for k in 0..3 {
        let ep = ds.read_episode(k).unwrap();
        // Replay the recorded actions: same frames (within codec tolerance).
        env.reset(40 + k as u64);
        let actions = ep.actions.as_ref().expect("robot datasets have actions");
        assert_eq!(actions.len(), ep.frames.len());
        let gt = ds.read_ground_truth(k).unwrap();
        assert_eq!(
            &gt.actions, actions,
            "ground-truth and dataset actions differ"
        );
        let mut worst: f64 = 0.0;
        for (t, frame) in ep.frames.iter().enumerate() {
            let truth = env.render();
            worst = worst.max(mean_abs_diff(&truth, frame));
            assert_eq!(
                gt.states[t],
                env.state().to_vec(),
                "episode {k} frame {t}: state differs"
            );
            if t + 1 < ep.frames.len() {
                env.step(&actions[t]).unwrap();
            }
        }
        assert!(
            worst < 4.0,
            "episode {k}: mean absolute frame error {worst:.2} levels"
        );
        assert_eq!(ep.task, "push the orange box onto the target");
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn human_actions_stay_out_of_the_dataset() {
    let out = tmp("human");
    let cfg = RecordConfig {
        task: Task::Reach,
        domain: Domain::Human,
        episodes: 1,
        seed: 3,
        ..Default::default()
    };
    let (root, success) = lam_suite::record(&cfg, &out, false).unwrap();
    assert_eq!(success, 1.0);
    let ds = Dataset::open(&root).unwrap();
    let ep = ds.read_episode(0).unwrap();
    assert!(
        ep.actions.is_none() && ep.states.is_none(),
        "human dataset exposes actions or states"
    );
    assert!(ds.info()["features"].get("action").is_none());
    let gt = ds.read_ground_truth(0).unwrap();
    assert_eq!(gt.actions.len(), ep.frames.len());
    assert!(gt.success.last().copied().unwrap());
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn bad_inputs_name_the_culprit() {
    let missing = tmp("missing");
    let err = Dataset::open(&missing).err().unwrap().to_string();
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("does not exist"),
        "{err}"
    );
    let empty = tmp("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = format!("{:#}", Dataset::open(&empty).err().unwrap());
    assert!(err.contains("meta/info.json"), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
    let err = "pushy".parse::<Task>().unwrap_err().to_string();
    assert!(err.contains("pushy"), "{err}");
    let err = "robotic".parse::<Domain>().unwrap_err().to_string();
    assert!(err.contains("robotic"), "{err}");
    let err = Env::new(Task::Push, Domain::Robot, 0, 63)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("63"), "{err}");
    // Recording over an existing non-empty folder is refused.
    let taken = tmp("taken");
    std::fs::create_dir_all(&taken).unwrap();
    std::fs::write(taken.join("x"), b"x").unwrap();
    let cfg = RecordConfig {
        episodes: 1,
        ..Default::default()
    };
    let err = lam_suite::record(&cfg, &taken, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&taken.display().to_string()), "{err}");
    std::fs::remove_dir_all(&taken).unwrap();
}
