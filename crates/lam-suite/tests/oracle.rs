//! The oracle encoder: shards of a recording's true states and action blocks.

use lam_data::{ShardIndex, ShardSet};
use lam_suite::oracle::{OracleOptions, embed_oracle};
use lam_suite::{Dataset, RecordConfig, layouts, record};

#[test]
fn oracle_shards_hold_the_true_state_and_action_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rcfg = RecordConfig {
        episodes: 3,
        ..RecordConfig::default()
    };
    record(&rcfg, &rec, false).unwrap();
    let out = dir.path().join("oracle");
    let mut opts = OracleOptions::new(rec.clone(), out.clone());
    opts.fps = 2.0; // blocks of 5 steps of the 10 fps recording
    opts.frames = 3;
    opts.stride = Some(1);
    opts.val_fraction = 0.0;
    let s = embed_oracle(&opts).unwrap();
    assert_eq!(s.frame_step, 5);
    // reach: agent (x, y) + the two wall segments around the door (centre, half length).
    assert_eq!(s.dim, 6);
    assert_eq!(s.action_dim, Some(10));
    let index = ShardIndex::load(&out).unwrap();
    assert_eq!((index.frames, index.grid, index.dim), (3, [1, 1], 6));
    let set = ShardSet::open(&out, None).unwrap();
    assert_eq!(set.len(), s.clips);
    // The first clip of episode 0: states 0, 5, 10 and the actions 0..10 in order.
    let data = Dataset::open(&rec).unwrap();
    let gt = data.read_ground_truth(0).unwrap();
    let layout = &layouts(&data).unwrap()[0];
    let first = (0..set.len()).find(|&i| set.clip_id(i) == 0).unwrap();
    let clip = set.clip(first);
    for (j, t) in [0usize, 5, 10].iter().enumerate() {
        let want = lam_sim::scene::oracle_from_vec(&gt.states[*t], layout);
        assert_eq!(&clip[j * 6..(j + 1) * 6], want.as_slice(), "frame {j}");
        // The agent's position in [-1, 1] matches the state's.
        assert!((clip[j * 6] - (gt.states[*t][0] / 5.0 - 1.0)).abs() < 1e-5);
    }
    let acts = set.actions(first).unwrap();
    let want: Vec<f32> = gt.actions[0..10].iter().flatten().copied().collect();
    assert_eq!(acts, want);
    // Five grids: a clip starts at every step. Episode 0's clips in order start at steps
    // 0, 5, 10, ... (phase 0), then 1, 6, ... (phase 1) and so on, and carry their own actions.
    opts.phases = 5;
    let phased = embed_oracle(&opts).unwrap();
    let set = ShardSet::open(&out, None).unwrap();
    let per_phase = (0..5)
        .map(|p| (gt.states.len() - p - 10 - 1) / 5 + 1)
        .collect::<Vec<_>>();
    let ep0: Vec<usize> = (0..set.len()).filter(|&i| set.clip_id(i) == 0).collect();
    assert_eq!(ep0.len(), per_phase.iter().sum::<usize>());
    assert!(
        phased.clips > 4 * s.clips,
        "{} vs {}",
        phased.clips,
        s.clips
    );
    let starts = (0..5).flat_map(|p| (0..per_phase[p]).map(move |c| p + 5 * c));
    for (&i, t0) in ep0.iter().zip(starts) {
        let clip = set.clip(i);
        let want = lam_sim::scene::oracle_from_vec(&gt.states[t0 + 5], layout);
        assert_eq!(&clip[6..12], want.as_slice(), "clip from step {t0}");
        let acts = set.actions(i).unwrap();
        let want: Vec<f32> = gt.actions[t0..t0 + 10].iter().flatten().copied().collect();
        assert_eq!(acts, want, "clip from step {t0}");
    }
    // Two grids: the second starts at frame 2 (5 / 2 steps, the frame on screen then), as the
    // video path's grid shifted by half a clip frame.
    opts.phases = 2;
    embed_oracle(&opts).unwrap();
    let set = ShardSet::open(&out, None).unwrap();
    let ep0: Vec<usize> = (0..set.len()).filter(|&i| set.clip_id(i) == 0).collect();
    let second = ep0[per_phase[0]];
    let want: Vec<f32> = gt.actions[2..12].iter().flatten().copied().collect();
    assert_eq!(set.actions(second).unwrap(), want);
    opts.phases = 6;
    let err = format!("{:#}", embed_oracle(&opts).unwrap_err());
    assert!(err.contains("--phases"), "{err}");
    opts.phases = 1;
    // A rate that does not divide the recording's is named.
    opts.fps = 3.0;
    let err = format!("{:#}", embed_oracle(&opts).unwrap_err());
    assert!(err.contains("does not divide"), "{err}");
}
