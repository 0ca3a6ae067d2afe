//! The state probe on the suite's frames (`lam_eval::probe::sim_probe_set`): frames and
//! states line up, the door's walls are probed on `reach`, and encoders with keypoints get a
//! keypoints-only row.

use burn::prelude::*;
use lam_encoder::probe::{ProbeConfig, fit_features, held_out_split, probe_encoder};
use lam_encoder::sim::SimEncoder;
use lam_eval::probe::sim_probe_set;
use lam_ingest::Normalization;

#[test]
fn sim_probe_frames_follow_the_state() {
    // Raw pixels as features: the agent's position is a (nearly) linear function of the
    // frame's pixels when the scene is static but for the agent and the object, so the
    // probe must find it; this checks that frames and states line up.
    let cfg = ProbeConfig {
        episodes: 8,
        frames_per_episode: 20,
        ..ProbeConfig::default()
    };
    let set = sim_probe_set(&cfg, 32, &Normalization::IMAGENET).unwrap();
    assert_eq!(set.len(), 8 * 20);
    assert_eq!(set.names, ["agent.x", "agent.y", "object0.x", "object0.y"]);
    let p = 3 * 32 * 32;
    let (train, test) = held_out_split(&set);
    assert_eq!((train.len(), test.len()), (6 * 20, 2 * 20));
    let f = fit_features(&set.frames, p, &set, &train, &test).unwrap();
    assert!(f.agent > 0.5, "{f:?}");
}

#[test]
fn reach_probes_where_the_door_is() {
    // Reach has no objects but a middle wall in two pieces whose positions move with the
    // door: raw pixels show it, so the walls' probe must find it.
    let cfg = ProbeConfig {
        task: "reach".into(),
        episodes: 16,
        frames_per_episode: 6,
        ..ProbeConfig::default()
    };
    let set = sim_probe_set(&cfg, 32, &Normalization::IMAGENET).unwrap();
    assert_eq!(set.names, ["agent.x", "agent.y", "wall0.pos", "wall1.pos"]);
    assert_eq!(set.object_targets, 0);
    let p = 3 * 32 * 32;
    let (train, test) = held_out_split(&set);
    let f = fit_features(&set.frames, p, &set, &train, &test).unwrap();
    assert!(f.objects.is_none(), "{f:?}");
    assert!(f.walls.is_some_and(|w| w > 0.5), "{f:?}");
}

#[test]
fn keypoints_alone_are_probed_for_encoders_with_keypoints() {
    let device = Device::flex();
    let enc = lam_encoder::sim::SimEncoderConfig {
        image_size: 32,
        dim: 16,
        depth: 1,
        keypoints: 4,
        pixel_keypoints: true,
        ..Default::default()
    };
    let encoder = SimEncoder::new(&enc, &device);
    let cfg = ProbeConfig {
        task: "reach".into(),
        episodes: 8,
        frames_per_episode: 6,
        ..ProbeConfig::default()
    };
    let set = sim_probe_set(&cfg, 32, &Normalization::IMAGENET).unwrap();
    let report = probe_encoder(&encoder, &set, &cfg, 4, None, &device).unwrap();
    let kp = report.keypoints.expect("a keypoints-only fit");
    assert_eq!(kp.features, 8);
    assert!(kp.walls.is_some() && kp.objects.is_none(), "{kp:?}");
    assert_eq!(report.pooled.features, 16);
    let none = probe_encoder(&encoder, &set, &cfg, 0, None, &device).unwrap();
    assert!(none.keypoints.is_none());
    assert!(probe_encoder(&encoder, &set, &cfg, 9, None, &device).is_err());
}
