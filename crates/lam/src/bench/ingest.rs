//! `lam bench ingest`: lam-ingest's decode + preprocess path against PyAV + NumPy
//! (tools/reference/ingest_twin.py) on the same video files, and lam-encoder's ViT forward
//! pass against transformers (tools/reference/encoder_twin.py) on the same weights.
//!
//! Each side is timed in this process tree, lam first and its twin (a child process) right
//! after, round by round, so both see the same machine load; the figures are ratios.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use lam_encoder::Encoder;
use lam_encoder::lam_ingest::{
    ClipSource, ClipSpec, DecodeOptions, FolderOptions, VideoFolder, Window, for_each_video_frame,
};
use lam_model::device::parse_device;
use serde_json::{Value, json};

use super::{IngestBenchArgs, run_twin};

/// The generated video set: (file stem, count, ffmpeg lavfi source, seconds, codec arguments).
/// Something-Something-v2-like VP9 webm (426x240, 12 fps), h264 mp4 (640x360, 30 fps) and
/// AV1 mp4 (320x240, 15 fps, LeRobot's default codec); testsrc2 with temporal noise so that
/// the bitstreams are not trivially small.
fn video_set(
    av1: &[&'static str],
) -> Vec<(&'static str, usize, &'static str, u32, Vec<&'static str>)> {
    vec![
        (
            "ssv2_like",
            6,
            "testsrc2=size=426x240:rate=12",
            4,
            vec![
                "-c:v",
                "libvpx-vp9",
                "-deadline",
                "realtime",
                "-cpu-used",
                "8",
                "-b:v",
                "400k",
            ],
        ),
        (
            "h264",
            3,
            "testsrc2=size=640x360:rate=30",
            6,
            vec!["-c:v", "libx264", "-preset", "veryfast"],
        ),
        ("av1", 3, "testsrc2=size=320x240:rate=15", 6, av1.to_vec()),
    ]
}

/// Writes the benchmark's video set into `dir` with the ffmpeg CLI.
fn make_videos(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let encoders = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output()
        .context("the ffmpeg CLI is needed to make the test videos (or pass --data DIR)")?;
    let av1: &[&str] = if String::from_utf8_lossy(&encoders.stdout).contains("libsvtav1") {
        &["-c:v", "libsvtav1", "-preset", "10"]
    } else {
        &["-c:v", "libaom-av1", "-cpu-used", "8"]
    };
    let ext = |stem: &str| if stem == "ssv2_like" { "webm" } else { "mp4" };
    for (stem, count, source, secs, codec) in video_set(av1) {
        for i in 0..count {
            let hue = i * 360 / count;
            let path = dir.join(format!("{stem}_{i}.{}", ext(stem)));
            let run = Command::new("ffmpeg")
                .args([
                    "-hide_banner",
                    "-loglevel",
                    "error",
                    "-y",
                    "-f",
                    "lavfi",
                    "-i",
                ])
                .arg(source)
                .args(["-t", &secs.to_string(), "-vf"])
                .arg(format!("noise=alls=12:allf=t,hue=h={hue}"))
                .args(&codec)
                .args(["-pix_fmt", "yuv420p"])
                .arg(&path)
                .output()
                .context("cannot run ffmpeg")?;
            ensure!(
                run.status.success(),
                "ffmpeg failed to write {}: {}",
                path.display(),
                String::from_utf8_lossy(&run.stderr)
            );
        }
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) this process used so far, from
/// `/proc/self/stat` (clock ticks of 1/100 s); NaN where that file does not exist.
fn cpu_seconds() -> f64 {
    let read = || -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the parenthesised command name; utime and stime are the 14th and
        // 15th fields of the line.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    };
    read().unwrap_or(f64::NAN)
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One pass of lam over the folder.
struct Pass {
    seconds: f64,
    cpu_seconds: f64,
    frames: usize,
    decoded: usize,
    skipped: usize,
}

/// Decodes and preprocesses every file of `paths` (`workers` at a time), the fastest of
/// `repeat` passes.
fn time_lam(paths: &[PathBuf], spec: &ClipSpec, workers: usize, repeat: usize) -> Pass {
    let opts = DecodeOptions::default();
    let mut best: Option<Pass> = None;
    for _ in 0..repeat.max(1) {
        let (frames, decoded, skipped, next) = (
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
            AtomicUsize::new(0),
        );
        let t0 = Instant::now();
        let c0 = cpu_seconds();
        std::thread::scope(|s| {
            for _ in 0..workers.max(1) {
                s.spawn(|| {
                    while let Some(path) = paths.get(next.fetch_add(1, Ordering::SeqCst)) {
                        let mut n = 0usize;
                        match for_each_video_frame(path, Window::ALL, spec, &opts, &mut |f| {
                            std::hint::black_box(&f.data);
                            n += 1;
                            Ok(())
                        }) {
                            Ok(st) => {
                                frames.fetch_add(n, Ordering::Relaxed);
                                decoded.fetch_add(st.decoded, Ordering::Relaxed);
                            }
                            Err(e) => {
                                eprintln!("skipped: {e}");
                                skipped.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        let pass = Pass {
            seconds: t0.elapsed().as_secs_f64(),
            cpu_seconds: cpu_seconds() - c0,
            frames: frames.into_inner(),
            decoded: decoded.into_inner(),
            skipped: skipped.into_inner(),
        };
        if best.as_ref().is_none_or(|b| pass.seconds < b.seconds) {
            best = Some(pass);
        }
    }
    best.expect("at least one pass")
}

/// Reads a float32 little-endian `.npy` file (versions 1-3): shape and values.
fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        bytes.len() > 10 && &bytes[..6] == b"\x93NUMPY",
        "{} is not a .npy file",
        path.display()
    );
    let (len, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + len])?;
    ensure!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{}: expected little-endian float32 in C order, header {header}",
        path.display()
    );
    let shape_text = header
        .split("'shape': (")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .with_context(|| format!("{}: no shape in header {header}", path.display()))?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let values: Vec<f32> = bytes[start + len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ensure!(
        values.len() == shape.iter().product::<usize>(),
        "{}: {} values for shape {shape:?}",
        path.display(),
        values.len()
    );
    Ok((shape, values))
}

/// lam's frames of `path` against the twin's `.npy` dump of the same file.
fn frame_parity(path: &Path, spec: &ClipSpec, dump: &Path) -> Result<Value> {
    let mut ours = Vec::new();
    let mut n = 0usize;
    for_each_video_frame(
        path,
        Window::ALL,
        spec,
        &DecodeOptions::default(),
        &mut |f| {
            ours.extend_from_slice(&f.data);
            n += 1;
            Ok(())
        },
    )?;
    let (shape, theirs) = read_npy(dump)?;
    let twin_frames = shape.first().copied().unwrap_or(0);
    if theirs.len() != ours.len() {
        return Ok(
            json!({"file": path, "lam_frames": n, "twin_frames": twin_frames,
                         "comparable": false}),
        );
    }
    let (mut max, mut sum) = (0.0f64, 0.0f64);
    for (a, b) in ours.iter().zip(&theirs) {
        let d = (*a as f64 - *b as f64).abs();
        max = max.max(d);
        sum += d;
    }
    Ok(
        json!({"file": path, "lam_frames": n, "twin_frames": twin_frames, "comparable": true,
              "max_abs": max, "mean_abs": sum / ours.len().max(1) as f64}),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

fn bench_decode(args: &IngestBenchArgs, dir: &Path, tmp: &Path) -> Result<Value> {
    let folder = VideoFolder::open(dir, &FolderOptions::default())
        .with_context(|| format!("cannot list videos under {}", dir.display()))?;
    let paths: Vec<PathBuf> = folder.items().iter().map(|i| i.path.clone()).collect();
    ensure!(!paths.is_empty(), "no videos under {}", dir.display());
    let spec = ClipSpec {
        fps: args.fps,
        size: args.size,
        ..ClipSpec::default()
    };
    spec.validate()?;
    println!(
        "decode + resample to {} fps + resize/crop to {} + normalise: {} files under {}",
        args.fps,
        args.size,
        paths.len(),
        dir.display()
    );
    let mut rounds = Vec::new();
    let mut parity = Value::Null;
    for round in 0..args.rounds.max(1) {
        let load = load_average();
        let lam = time_lam(&paths, &spec, args.workers, args.repeat);
        let mut r = json!({
            "round": round + 1,
            "load_average": load,
            "lam": {"files": paths.len() - lam.skipped, "skipped": lam.skipped, "frames": lam.frames,
                    "decoded": lam.decoded, "seconds": lam.seconds, "cpu_seconds": lam.cpu_seconds,
                    "frames_per_s": lam.frames as f64 / lam.seconds,
                    "frames_per_cpu_s": lam.frames as f64 / lam.cpu_seconds,
                    "workers": args.workers},
        });
        println!(
            "  round {}: lam    {:>8.1} frames/s wall, {:>8.1} frames/CPU-s ({} frames from {} decoded)",
            round + 1,
            lam.frames as f64 / lam.seconds,
            lam.frames as f64 / lam.cpu_seconds,
            lam.frames,
            lam.decoded
        );
        if !args.common.rust_only {
            let dump = tmp.join("twin_first.npy");
            let mut twin_args: Vec<String> = vec![
                dir.display().to_string(),
                "--fps".into(),
                args.fps.to_string(),
                "--size".into(),
                args.size.to_string(),
                "--repeat".into(),
                args.repeat.to_string(),
            ];
            if round == 0 {
                twin_args.extend(["--dump".into(), dump.display().to_string()]);
            }
            let twin = run_twin(&args.common.python, "ingest_twin.py", &twin_args)?;
            let fps = twin["frames_per_s"]
                .as_f64()
                .context("twin lacks frames_per_s")?;
            let cpu = twin["frames_per_cpu_s"].as_f64().unwrap_or(f64::NAN);
            let wall_ratio = (lam.frames as f64 / lam.seconds) / fps;
            let cpu_ratio = (lam.frames as f64 / lam.cpu_seconds) / cpu;
            println!(
                "  round {}: PyAV   {fps:>8.1} frames/s wall, {cpu:>8.1} frames/CPU-s ({} frames); lam/PyAV {wall_ratio:.2}x wall, {cpu_ratio:.2}x CPU",
                round + 1,
                twin["frames"]
            );
            ensure!(
                twin["frames"].as_u64() == Some(lam.frames as u64),
                "lam produced {} frames but the twin {}: not the same work",
                lam.frames,
                twin["frames"]
            );
            if round == 0 {
                if let Some(file) = twin["dump_file"].as_str() {
                    parity = frame_parity(Path::new(file), &spec, &dump)?;
                    println!(
                        "  frames of {}: lam vs PyAV max abs difference {:.3e} (mean {:.3e})",
                        file,
                        parity["max_abs"].as_f64().unwrap_or(f64::NAN),
                        parity["mean_abs"].as_f64().unwrap_or(f64::NAN)
                    );
                }
            }
            r["twin"] = twin;
            r["ratio_wall"] = json!(wall_ratio);
            r["ratio_cpu"] = json!(cpu_ratio);
        }
        rounds.push(r);
    }
    let col = |key: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| r[key].as_f64())
            .collect::<Vec<_>>()
    };
    let (wall, cpu) = (median(col("ratio_wall")), median(col("ratio_cpu")));
    if !args.common.rust_only {
        println!(
            "  lam vs PyAV + NumPy (median of rounds): {wall:.2}x wall, {cpu:.2}x CPU (>1: lam is faster)"
        );
    }
    Ok(json!({
        "fps": args.fps, "size": args.size, "files": paths.len(), "repeat": args.repeat,
        "rounds": rounds, "ratio_wall_median": wall, "ratio_cpu_median": cpu, "parity_first_file": parity,
    }))
}

/// lam-encoder frames/s on `folder`: `frames` frames of `size` x `size` per pass, encoded as
/// clips of 2 frames, `batch` frames per call, after one warm-up call; the fastest of `reps`.
fn time_encoder(
    folder: &Path,
    size: usize,
    frames: usize,
    batch: usize,
    reps: usize,
    device: &Device,
) -> Result<(String, f64)> {
    let encoder = Encoder::load(folder, device)?;
    encoder.check_size(size)?;
    let clips = (batch / 2).max(1);
    let per_call = clips * 2;
    let pixels: Vec<f32> = (0..per_call * 3 * size * size)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let run = || -> Result<usize> {
        let out = encoder.encode_host(pixels.clone(), [clips, 2, 3, size, size], device)?;
        Ok(out.len())
    };
    run()?;
    let calls = frames.div_ceil(per_call);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(run()?);
        }
        let _ = device.sync();
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((
        encoder.info.architecture.clone(),
        (calls * per_call) as f64 / best,
    ))
}

fn bench_encoders(args: &IngestBenchArgs, tmp: &Path) -> Result<Value> {
    let device = parse_device(&args.common.device)?;
    let (root, names, built) = match &args.encoders {
        Some(root) => {
            let mut names: Vec<String> = std::fs::read_dir(root)
                .with_context(|| format!("cannot list {}", root.display()))?
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("config.json").exists())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            names.sort();
            (root.clone(), names, Value::Null)
        }
        None => {
            if args.common.rust_only {
                println!(
                    "encoders: skipped (--rust-only without --encoders: the twin builds the folders)"
                );
                return Ok(Value::Null);
            }
            let root = tmp.join("encoders");
            let built = run_twin(
                &args.common.python,
                "encoder_twin.py",
                &["build".into(), "--out".into(), root.display().to_string()],
            )?;
            let names = built["models"]
                .as_array()
                .context("encoder twin listed no models")?
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            (root, names, built)
        }
    };
    ensure!(
        !names.is_empty(),
        "no encoder folders under {}",
        root.display()
    );
    println!(
        "encoders: {}x{} frames, {} frames per call, best of {} passes over {} frames",
        args.encoder_size,
        args.encoder_size,
        args.encoder_batch,
        args.encoder_reps,
        args.encoder_frames
    );
    let mut rows = Vec::new();
    for name in &names {
        let load = load_average();
        let (arch, lam_fps) = time_encoder(
            &root.join(name),
            args.encoder_size,
            args.encoder_frames,
            args.encoder_batch,
            args.encoder_reps,
            &device,
        )?;
        let mut row = json!({"model": name, "architecture": arch, "load_average": load,
                             "lam_frames_per_s": lam_fps});
        print!("  {name:<12} lam-encoder {lam_fps:>7.2} frames/s");
        if !args.common.rust_only {
            let twin = run_twin(
                &args.common.python,
                "encoder_twin.py",
                &[
                    "time".into(),
                    "--out".into(),
                    root.display().to_string(),
                    "--model".into(),
                    name.clone(),
                    "--size".into(),
                    args.encoder_size.to_string(),
                    "--frames".into(),
                    args.encoder_frames.to_string(),
                    "--batch".into(),
                    args.encoder_batch.to_string(),
                    "--reps".into(),
                    args.encoder_reps.to_string(),
                    "--threads".into(),
                    args.common.threads.to_string(),
                ],
            )?;
            let torch_fps = twin["frames_per_s"]
                .as_f64()
                .context("twin lacks frames_per_s")?;
            print!(
                ", transformers {torch_fps:>7.2} frames/s ({} threads): {:.2}x",
                twin["threads"],
                lam_fps / torch_fps
            );
            row["torch_frames_per_s"] = json!(torch_fps);
            row["ratio"] = json!(lam_fps / torch_fps);
            row["torch"] = twin["torch"].clone();
            row["transformers"] = twin["transformers"].clone();
            row["torch_threads"] = twin["threads"].clone();
        }
        println!();
        rows.push(row);
    }
    Ok(
        json!({"size": args.encoder_size, "frames": args.encoder_frames, "batch": args.encoder_batch,
              "reps": args.encoder_reps, "device": args.common.device, "built": built, "models": rows}),
    )
}

pub fn bench_ingest(args: IngestBenchArgs) -> Result<()> {
    if args.no_ingest && args.no_encoder {
        bail!("--no-ingest and --no-encoder leave nothing to time");
    }
    let tmp = tempfile::tempdir()?;
    let mut result = json!({
        "bench": "ingest",
        "threads_available": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_average_start": load_average(),
    });
    if !args.no_ingest {
        let dir = match (&args.data, &args.videos) {
            (Some(d), _) => d.clone(),
            (None, Some(v)) => {
                let has_videos = VideoFolder::open(v, &FolderOptions::default())
                    .map(|f| !f.items().is_empty())
                    .unwrap_or(false);
                if !has_videos {
                    println!("making the test videos in {} (ffmpeg)", v.display());
                    make_videos(v)?;
                }
                v.clone()
            }
            (None, None) => {
                let v = tmp.path().join("videos");
                println!("making the test videos in {} (ffmpeg)", v.display());
                make_videos(&v)?;
                v
            }
        };
        result["ingest"] = bench_decode(&args, &dir, tmp.path())?;
        result["ingest"]["data"] = json!(if args.data.is_some() {
            dir.display().to_string()
        } else {
            "generated".to_string()
        });
    }
    if !args.no_encoder {
        result["encoders"] = bench_encoders(&args, tmp.path())?;
    }
    result["load_average_end"] = json!(load_average());
    if let Some(out) = &args.common.out {
        lam_data::shards::write_atomic(out, serde_json::to_string_pretty(&result)?.as_bytes())?;
    }
    Ok(())
}
