//! Loading errors, sim-encoder pretraining, and `embed` from lam-sim recordings and video
//! folders to shards (with actions, resumption, pooling).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use lam_data::{ShardIndex, ShardSet, Split};
use lam_encoder::context::{CONTEXT_FILE, ContextProjection};
use lam_encoder::embed::{EmbedOptions, embed, merge_parts};
use lam_encoder::pretrain::{
    Frames, PretrainConfig, PretrainRun, PretrainSummary, pretrain, synthetic_frames,
};
use lam_encoder::probe::ProbeConfig;
use lam_encoder::sim::SimEncoderConfig;
use lam_encoder::{Encoder, Pooling};
use lam_ingest::Normalization;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn load_err(path: &Path) -> String {
    format!("{:#}", Encoder::load(path, &Device::flex()).err().unwrap())
}

#[test]
fn load_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = load_err(&empty);
    assert!(err.contains("config.json"), "{err}");

    let model = dir.path().join("model");
    copy_dir(&fixture("dinov2"), &model);
    let config = model.join("config.json");
    let original = fs::read_to_string(&config).unwrap();

    fs::write(&config, original.replace("Dinov2Model", "FancyNetModel")).unwrap();
    let err = load_err(&model);
    assert!(
        err.contains("FancyNetModel") && err.contains("config.json"),
        "{err}"
    );

    fs::write(
        &config,
        original.replace("\"hidden_size\": 32", "\"hidden_size\": 48"),
    )
    .unwrap();
    let err = load_err(&model);
    assert!(
        err.contains("shape mismatch") && err.contains("embeddings.") && err.contains("48"),
        "{err}"
    );

    fs::write(
        &config,
        original.replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\""),
    )
    .unwrap();
    let err = load_err(&model);
    assert!(err.contains("hidden_act") && err.contains("mish"), "{err}");

    fs::write(&config, &original).unwrap();
    fs::remove_file(model.join("model.safetensors")).unwrap();
    let err = load_err(&model);
    assert!(err.contains("no *.safetensors"), "{err}");
}

fn small_sim_config() -> PretrainConfig {
    PretrainConfig {
        encoder: SimEncoderConfig {
            image_size: 32,
            patch_size: 8,
            dim: 32,
            depth: 1,
            heads: 4,
            mlp_ratio: 2.0,
            keypoints: 4,
            ..SimEncoderConfig::default()
        },
        steps: 60,
        batch: 16,
        lr: 2e-3,
        predictor_dim: 32,
        eval_frames: 128,
        log_every: 20,
        probe: Some(ProbeConfig {
            episodes: 8,
            frames_per_episode: 12,
            ..ProbeConfig::default()
        }),
        ..PretrainConfig::default()
    }
}

/// The pretraining tests' generated frames: 12 runs of 16 steps, 32 x 32 pixels.
fn test_frames() -> Frames {
    synthetic_frames(12, 16, 32, &Normalization::IMAGENET, 1)
}

/// Pretrains `cfg` on `frames` into the folder `run`, on the CPU, without a progress bar.
fn pretrain_into(cfg: &PretrainConfig, frames: &Frames, run: &Path) -> PretrainSummary {
    let run = PretrainRun {
        probe_frames: Some(lam_eval::probe::SIM_PROBE_FRAMES),
        ..PretrainRun::new(run)
    };
    pretrain_with(cfg, frames, &run).unwrap()
}

fn pretrain_with(
    cfg: &PretrainConfig,
    frames: &Frames,
    run: &PretrainRun,
) -> anyhow::Result<PretrainSummary> {
    pretrain(cfg, frames, Normalization::IMAGENET, &Device::flex(), run)
}

/// Digests of a run's encoder tensors by name (the file's layout may differ between equal
/// models; the tensors may not).
fn encoder_weights(run: &Path) -> std::collections::BTreeMap<String, u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let bytes = fs::read(run.join("encoder").join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut h = DefaultHasher::new();
            view.data().hash(&mut h);
            (name, h.finish())
        })
        .collect()
}

#[test]
fn pretraining_resumes_exactly_and_stops_on_collapse() {
    let dir = tempfile::tempdir().unwrap();
    let frames = test_frames();
    let cfg = PretrainConfig {
        steps: 8,
        checkpoint_every: 4,
        probe: None,
        ..small_sim_config()
    };
    let whole = dir.path().join("whole");
    let a = pretrain_into(&cfg, &frames, &whole);
    assert_eq!((a.resumed_from, a.encoder_step), (0, 8));
    assert!(a.collapse.is_none(), "{:?}", a.collapse);
    // The checkpoint at step 4 stays; resuming from it (as after a kill) repeats steps 4-7
    // exactly.
    let cut = dir.path().join("cut");
    pretrain_into(&cfg, &frames, &cut);
    assert_eq!(
        encoder_weights(&whole),
        encoder_weights(&cut),
        "fresh runs differ"
    );
    assert!(cut.join("checkpoints").join("step-0000004").is_dir());
    fs::remove_dir_all(cut.join("encoder")).unwrap();
    let resumed = PretrainRun {
        resume: true,
        ..PretrainRun::new(&cut)
    };
    let b = pretrain_with(&cfg, &frames, &resumed).unwrap();
    assert_eq!(b.resumed_from, 4);
    assert_eq!(encoder_weights(&whole), encoder_weights(&cut));
    // Resuming with other settings is refused, naming the checkpoint.
    let other = PretrainConfig {
        lr: 1e-4,
        ..cfg.clone()
    };
    let err = format!(
        "{:#}",
        pretrain_with(&other, &frames, &resumed).unwrap_err()
    );
    assert!(
        err.contains("different settings") && err.contains("step-0000004"),
        "{err}"
    );

    // A collapse threshold no embedding meets: the first check fails, the run stops and
    // writes the encoder from before it (here the initial one: no checkpoint yet).
    let strict = PretrainConfig {
        collapse_min_rank: 1e9,
        ..cfg.clone()
    };
    let stopped = dir.path().join("stopped");
    let stop = PretrainRun {
        stop_on_collapse: true,
        ..PretrainRun::new(&stopped)
    };
    let c = pretrain_with(&strict, &frames, &stop).unwrap();
    let collapse = c.collapse.as_ref().expect("collapse seen");
    assert_eq!(collapse.step, 4);
    assert!(
        collapse.metric.contains("effective rank"),
        "{}",
        collapse.metric
    );
    assert_eq!((c.steps, c.encoder_step), (4, 0));
    assert_eq!(c.after, c.before);
    // Without --stop-on-collapse the same run warns and goes on to the end.
    let d = pretrain_into(&strict, &frames, &dir.path().join("warned"));
    assert_eq!(d.collapse.as_ref().map(|c| c.step), Some(4));
    assert_eq!(d.encoder_step, 8);
    assert_eq!(
        encoder_weights(&dir.path().join("warned")),
        encoder_weights(&whole)
    );
}

#[test]
fn pretrain_then_embed_a_sim_recording_with_actions_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    // Pretrain a tiny encoder on generated frames.
    let frames = test_frames();
    let run = dir.path().join("pretrain");
    let cfg = small_sim_config();
    let s = pretrain_into(&cfg, &frames, &run);
    println!(
        "before {:?}\nafter {:?}\nloss {} in {:.1}s",
        s.before, s.after, s.final_loss, s.seconds
    );
    assert!(s.final_loss.is_finite());
    // With SIGReg the embeddings keep (here: gain) their spread.
    assert!(
        s.after.tokens.mean_std > s.before.tokens.mean_std
            && s.after.frames.mean_std > s.before.frames.mean_std
            && s.after.frames.effective_rank > 1.3,
        "collapse with SIGReg: {:?}",
        s.after
    );
    let probe = s.probe_after.as_ref().expect("probe configured");
    assert_eq!(probe.targets.len(), 4);
    assert!(probe.pooled.agent.is_finite() && probe.tokens.agent.is_finite());
    // Without SIGReg and reconstruction the same run collapses, and the statistics show it.
    // (No keypoint channels here: nothing but the regularisers and the reconstructions trains
    // them, so they would keep their initial spread.)
    let plain = PretrainConfig {
        encoder: SimEncoderConfig {
            keypoints: 0,
            ..cfg.encoder.clone()
        },
        sigreg_weight: 0.0,
        sigreg_frame_weight: 0.0,
        recon_weight: 0.0,
        frame_recon_weight: 0.0,
        probe: None,
        ..cfg.clone()
    };
    let c = pretrain_into(&plain, &frames, &dir.path().join("plain"));
    println!("without SIGReg {:?}", c.after);
    assert!(
        c.after.tokens.mean_std < 0.5 * c.before.tokens.mean_std
            && c.after.frames.mean_std < 0.5 * c.before.frames.mean_std,
        "no collapse without SIGReg? {:?}",
        c.after
    );
    let metrics = fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 4 && metrics.contains("effective_rank"));

    // Record a small labeled sim dataset (LeRobot v3) and embed it with the checkpoint.
    let rec = dir.path().join("rec");
    let rcfg = lam_suite::RecordConfig {
        episodes: 4,
        ..lam_suite::RecordConfig::default()
    };
    lam_suite::record(&rcfg, &rec, false).unwrap();
    let out = dir.path().join("shards");
    let mut opts = EmbedOptions::new(rec.clone(), s.checkpoint.clone(), out.clone());
    opts.fps = 5.0;
    opts.frames = 4;
    opts.batch = 3;
    opts.clips_per_shard = 2;
    opts.val_fraction = 0.3;
    let full = embed(&opts, &Device::flex()).unwrap();
    let index = &full.index;
    assert!(full.written >= 4, "{full:?}");
    assert_eq!(
        (index.frames, index.grid, index.dim),
        (4, [4, 4], 32),
        "{index:?}"
    );
    let a = index
        .action_dim
        .expect("a robot-domain recording is labeled");
    let set = ShardSet::open(&out, None).unwrap();
    assert_eq!(set.len(), full.written);
    let acts = set.actions(0).unwrap();
    assert_eq!(acts.len(), 3 * a);
    assert!(acts.iter().all(|v| v.is_finite()));
    assert!(out.join("report.json").exists() && out.join("ids.json").exists());
    let last = set.clip(set.len() - 1);

    // The same job as a job array of 3 parts, merged: the same clips under the same ids, on
    // the same side of the split; an unfinished or missing part stops the merge.
    let array = dir.path().join("array");
    let clips_of = |d: &Path| {
        let mut v = Vec::new();
        for split in [Split::Train, Split::Val] {
            let set = ShardSet::open(d, Some(split)).unwrap();
            for i in 0..set.len() {
                let bits: Vec<u32> = set.clip(i).iter().map(|x| x.to_bits()).collect();
                v.push((
                    split == Split::Val,
                    set.clip_id(i),
                    bits,
                    set.actions(i).is_some(),
                ));
            }
        }
        v.sort();
        v
    };
    for k in 1..=3 {
        let mut part = opts.clone();
        part.out = array.clone();
        part.part = Some(format!("{k}/3").parse().unwrap());
        let s = embed(&part, &Device::flex()).unwrap();
        assert!(s.written > 0, "part {k}/3 got no clips");
        if k == 2 {
            let e = format!("{:#}", merge_parts(&array).unwrap_err());
            assert!(e.contains("3/3 are missing"), "{e}");
        }
    }
    fs::rename(array.join("part-3-of-3/report.json"), dir.path().join("r")).unwrap();
    let e = format!("{:#}", merge_parts(&array).unwrap_err());
    assert!(e.contains("part 3/3") && e.contains("not finished"), "{e}");
    fs::rename(dir.path().join("r"), array.join("part-3-of-3/report.json")).unwrap();
    let merged = merge_parts(&array).unwrap();
    assert_eq!((merged.parts, merged.clips), (3, full.written));
    assert_eq!(clips_of(&array), clips_of(&out));

    // Interrupt: keep only the first shard in the index, leave a stale temporary file.
    let mut cut: ShardIndex = ShardIndex::load(&out).unwrap();
    let kept = cut.shards[0].clips;
    for e in &cut.shards[1..] {
        fs::remove_file(out.join(&e.file)).unwrap();
    }
    cut.shards.truncate(1);
    fs::write(
        out.join("index.json"),
        serde_json::to_string_pretty(&cut).unwrap(),
    )
    .unwrap();
    fs::write(out.join("shard-00001.safetensors.tmp-999"), b"half").unwrap();
    let again = embed(&opts, &Device::flex()).unwrap();
    assert_eq!(again.resumed, kept);
    assert_eq!(again.written + kept, full.written);
    assert!(!out.join("shard-00001.safetensors.tmp-999").exists());
    let set = ShardSet::open(&out, None).unwrap();
    assert_eq!(set.len(), full.written);
    let mut same_last = false;
    for i in 0..set.len() {
        if set.clip(i) == last {
            same_last = true;
        }
    }
    assert!(same_last, "the resumed run re-encodes the same clips");

    // Other settings refuse to append.
    opts.fps = 2.0;
    let err = format!("{:#}", embed(&opts, &Device::flex()).unwrap_err());
    // A new clip rate changes the rate and the action block (10 fps / 2 fps = 5 actions);
    // the error names the first differing setting.
    assert!(
        err.contains("cannot resume") && (err.contains("fps") || err.contains("action_block")),
        "{err}"
    );
    // More grids than recording frames per clip frame (10 fps / 2 fps = 5) would cut the same
    // clips twice.
    opts.phases = 6;
    let err = format!("{:#}", embed(&opts, &Device::flex()).unwrap_err());
    assert!(err.contains("--phases"), "{err}");
}

#[test]
fn video_folder_to_pooled_dinov2_shards() {
    let dir = tempfile::tempdir().unwrap();
    let videos = dir.path().join("videos");
    fs::create_dir_all(&videos).unwrap();
    for (name, pattern) in [("a", "testsrc"), ("b", "testsrc2")] {
        let status = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
            .args(["-i", &format!("{pattern}=size=64x48:rate=10"), "-t", "2"])
            .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(videos.join(format!("{name}.mp4")))
            .status()
            .expect("the ffmpeg command-line tool is needed by this test");
        assert!(status.success());
    }
    fs::write(videos.join("broken.mp4"), b"not a video").unwrap();
    let out = dir.path().join("shards");
    let mut opts = EmbedOptions::new(videos, fixture("dinov2"), out.clone());
    opts.size = Some(32);
    opts.frames = 2;
    opts.pooling = Pooling::Mean;
    let s = embed(&opts, &Device::flex()).unwrap();
    // 2 s at 4 fps = 8 frames = 4 clips of 2 frames per video.
    assert_eq!(s.written, 8, "{s:?}");
    assert_eq!(
        (s.index.grid, s.index.dim, s.index.action_dim),
        ([1, 1], 32, None)
    );
    assert_eq!(s.report.skipped.len(), 1, "{}", s.report);
    let report = fs::read_to_string(out.join("report.json")).unwrap();
    assert!(report.contains("broken.mp4"), "{report}");
}

/// Pretrains the small config with pixel keypoints (60 steps, logged every 10, no probe) and
/// the keypoint terms weighted `motion` / `transport`, into `run`; returns the train rows'
/// values of the metric `key`.
fn pixel_keypoint_term(
    frames: &Frames,
    run: &Path,
    motion: f64,
    transport: f64,
    key: &str,
) -> Vec<f64> {
    let mut cfg = small_sim_config();
    cfg.encoder.pixel_keypoints = true;
    cfg.probe = None;
    cfg.steps = 60;
    cfg.log_every = 10;
    cfg.keypoint_motion_weight = motion;
    cfg.keypoint_transport_weight = transport;
    pretrain_into(&cfg, frames, run);
    fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["split"] == "train")
        .map(|v| v[key].as_f64().unwrap())
        .collect()
}

/// Pretraining by keypoint transport alone (no motion term) runs the stem once per frame and
/// feeds the transport head the keypoints the encoder's tokens carry: the rebuilding error
/// falls as the stem and the head learn.
#[test]
fn keypoint_transport_pretraining_lowers_its_rebuilding_error() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let transport = pixel_keypoint_term(&test_frames(), &run, 0.0, 1.0, "keypoint_transport");
    assert!(transport.len() >= 5, "{transport:?}");
    let (first, last) = (transport[0], *transport.last().unwrap());
    assert!(
        first.is_finite() && last < 0.8 * first,
        "keypoint transport term {transport:?}"
    );
}

#[test]
fn pixel_keypoints_learn_to_sit_on_what_moves() {
    let dir = tempfile::tempdir().unwrap();
    let frames = test_frames();
    let run = dir.path().join("run");
    let default_motion = small_sim_config().keypoint_motion_weight;
    let motion = pixel_keypoint_term(&frames, &run, default_motion, 0.0, "keypoint_motion");
    assert!(motion.len() >= 5, "{motion:?}");
    // The keypoints' mass moves onto the pixels that change: the term falls clearly.
    let (first, last) = (motion[0], *motion.last().unwrap());
    assert!(
        first > 0.5 && last < 0.8 * first,
        "keypoint motion term {motion:?}"
    );
    // The checkpoint keeps the stem and loads back.
    let (enc, meta) =
        lam_encoder::sim::load_checkpoint(&run.join("encoder"), &Device::flex()).unwrap();
    assert!(meta.config.pixel_keypoints && enc.keypoint_stem.is_some());

    // Keypoint pooling: the mean token's keypoint channels times sqrt(N), nothing else; a run
    // trained on such tokens gets them from `for_run`.
    let dev = Device::flex();
    let encoder = Encoder::load(&run.join("encoder"), &dev).unwrap();
    assert_eq!(encoder.keypoints(), 4);
    let clip = frames.tensor(&[0, 1], &dev).reshape([1, 2, 3, 32, 32]);
    let mean = encoder
        .encode(clip.clone())
        .mean_dim(2)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let encoder = encoder.for_run([1, 1], 8, 32, Path::new("run")).unwrap();
    assert_eq!(
        (encoder.pooling, encoder.out_dim()),
        (Pooling::Keypoints, 8)
    );
    let kp = encoder
        .encode(clip)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(kp.len(), 2 * 8);
    for f in 0..2 {
        for c in 0..8 {
            let want = mean[f * 32 + 24 + c] * 4.0; // sqrt(16 tokens)
            assert!((kp[f * 8 + c] - want).abs() < 1e-5 && want.abs() <= 1.0 + 1e-5);
        }
    }
    // Context features: fitted on the unpooled tokens of frames grouped into videos of 5,
    // saved into the encoder folder, and appended after the keypoints by `for_run` when the
    // run's width is 2K + C; the tensor path agrees with the host projection.
    let enc = Encoder::load(&run.join("encoder"), &dev).unwrap();
    assert!(enc.context.is_none());
    let count = 40.min(frames.len());
    let idx: Vec<usize> = (0..count).collect();
    let tokens = enc
        .encode(frames.tensor(&idx, &dev).reshape([count, 1, 3, 32, 32]))
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let videos: Vec<usize> = idx.iter().map(|i| i / 5).collect();
    let ctx = ContextProjection::fit(&tokens, 16 * 32, &videos, 2, 1e-3).unwrap();
    ctx.save_beside(&run.join("encoder")).unwrap();
    let enc = Encoder::load(&run.join("encoder"), &dev)
        .unwrap()
        .for_run([1, 1], 10, 32, Path::new("run"))
        .unwrap();
    assert_eq!(
        (enc.pooling, enc.out_dim()),
        (Pooling::KeypointsContext, 10)
    );
    let clip = frames.tensor(&[0, 1], &dev).reshape([1, 2, 3, 32, 32]);
    let both = enc.encode(clip).into_data().try_into_vec::<f32>().unwrap();
    let want = ctx.apply(&tokens[..2 * 16 * 32]);
    for f in 0..2 {
        for c in 0..8 {
            assert!((both[f * 10 + c] - kp[f * 8 + c]).abs() < 1e-5);
        }
        for c in 0..2 {
            let (got, want) = (both[f * 10 + 8 + c], want[f * 2 + c]);
            assert!(
                (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                "{got} vs {want}"
            );
        }
    }
    // A corrupt context file is named, not silently ignored.
    fs::write(run.join("encoder").join(CONTEXT_FILE), "{\"inputs\": 3}").unwrap();
    let err = load_err(&run.join("encoder"));
    assert!(err.contains(CONTEXT_FILE), "{err}");
    fs::remove_file(run.join("encoder").join(CONTEXT_FILE)).unwrap();

    // A width that is neither the keypoints' nor the tokens' is named.
    let enc = Encoder::load(&run.join("encoder"), &dev).unwrap();
    let err = match enc.for_run([1, 1], 7, 32, Path::new("run")) {
        Ok(_) => panic!("a 7-channel run accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("7 channels"), "{err}");
}
