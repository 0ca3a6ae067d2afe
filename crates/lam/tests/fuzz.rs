//! Fuzzing of every parser of outside input, on stable Rust through bolero (its random engine
//! under `cargo test`): shard folders (index.json + safetensors), LeRobot metadata (info.json,
//! episode and data Parquet), TOML configs and `--set` values of every stage, a model
//! folder's config.json, `lam serve` requests (msgpack)
//! and WebSocket framing, and video files.
//!
//! Each target starts from valid inputs (the committed seeds in `tests/fuzz_corpus/TARGET/`
//! plus files lam writes itself at the start: a shard set, a one-episode recording) and reads
//! each bolero input as a mutation program (bit flips, byte overwrites, insertions, deletions,
//! truncation, splices from another seed). The parser must answer Ok or an error: a panic fails
//! the test, and every input is run under a per-input time limit, so a hang fails it too.
//! Each target runs for `LAM_FUZZ_SECONDS` (default 60) and prints the inputs it tried
//! (`cargo test --release -p lam --test fuzz -- --nocapture`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Longest any one input may take before the target counts it as a hang.
const PER_INPUT: Duration = Duration::from_secs(10);

fn budget() -> Duration {
    let s = std::env::var("LAM_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(s)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Applies the mutation program `program` to `seed`; `other` is spliced from.
fn mutate(seed: &[u8], other: &[u8], program: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for op in program.chunks_exact(5) {
        let pos = u32::from_le_bytes([op[1], op[2], op[3], 0]) as usize;
        let v = op[4];
        let at = pos % (out.len() + 1);
        match op[0] % 8 {
            0 | 1 if at < out.len() => out[at] ^= 1 << (v % 8),
            2 if at < out.len() => out[at] = v,
            3 => out.insert(at, v),
            4 => {
                let end = (at + v as usize % 64).min(out.len());
                out.drain(at..end);
            }
            5 if v < 16 => out.truncate(at),
            6 if !other.is_empty() => {
                let from = pos % other.len();
                let end = (from + v as usize).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            7 if at < out.len() => {
                // Interesting values: 0, 0xff and the bytes of large lengths.
                out[at] = [0x00, 0xff, 0x7f, 0x80][v as usize % 4];
            }
            _ => {}
        }
    }
    out
}

/// Runs `check` on mutated seeds for the time budget; returns the inputs tried.
fn fuzz(
    name: &str,
    seeds: &[Vec<u8>],
    check: impl Fn(usize, &[u8]) + Send + Sync + std::panic::RefUnwindSafe + 'static,
) {
    assert!(!seeds.is_empty());
    let n_seeds = seeds.len();
    let seeds = std::sync::Arc::new(seeds.to_vec());
    let check = std::sync::Arc::new(check);
    let tried = std::sync::Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // One input: a seed picked by the first byte, mutated by the rest, checked under a time
    // limit (a hang fails the target like a panic).
    let run_one = move |input: &[u8]| {
        let which = input.first().copied().unwrap_or(0) as usize % seeds.len();
        let other = &seeds[(which + 1) % seeds.len()];
        let data = mutate(&seeds[which], other, input.get(1..).unwrap_or(&[]));
        let (tx, rx) = mpsc::channel();
        let check = check.clone();
        let handle = std::thread::spawn(move || {
            check(which, &data);
            let _ = tx.send(());
        });
        match rx.recv_timeout(PER_INPUT) {
            Ok(()) => handle.join().unwrap(),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The check panicked: re-raise it here so bolero reports the input.
                if let Err(p) = handle.join() {
                    std::panic::resume_unwind(p);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("input took longer than {PER_INPUT:?} (a hang)")
            }
        }
    };
    // Inputs that once crashed this target (tests/fuzz_corpus/TARGET-crashes/) run first.
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(format!("{name}-crashes"));
    let mut replayed = 0;
    if let Ok(entries) = std::fs::read_dir(&crashes) {
        for e in entries {
            run_one(&std::fs::read(e.unwrap().path()).unwrap());
            replayed += 1;
        }
    }
    {
        let tried = tried.clone();
        bolero::check!()
            .with_test_time(budget())
            .with_max_len(256)
            .for_each(move |input: &[u8]| {
                run_one(input);
                tried.fetch_add(1, Ordering::Relaxed);
            });
    }
    let n = tried.load(Ordering::Relaxed);
    println!(
        "fuzz {name}: {n} inputs in {:.0} s from {n_seeds} seeds (and {replayed} earlier \
         crashes replayed), 0 crashes, 0 hangs",
        started.elapsed().as_secs_f64(),
    );
    assert!(n > 0, "fuzz {name}: no input was tried");
}

/// Writes `files` (name, bytes) into a fresh folder under `root`.
fn fresh_dir(root: &Path, files: &[(String, Vec<u8>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir_in(root).unwrap();
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    dir
}

/// Every file under `dir`, as (relative path, bytes).
fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Fuzzes the files of a folder one at a time: each seed is one file of `tree` (by index), the
/// mutated file replaces it in a fresh copy of the folder and `open` reads the folder.
fn fuzz_folder(
    name: &str,
    tree: Vec<(String, Vec<u8>)>,
    wanted: impl Fn(&str) -> bool,
    open: impl Fn(&Path) + Send + Sync + std::panic::RefUnwindSafe + 'static,
) {
    let root = tempfile::tempdir().unwrap();
    let picked: Vec<usize> = (0..tree.len()).filter(|&i| wanted(&tree[i].0)).collect();
    assert!(!picked.is_empty(), "{name}: nothing to mutate in {tree:?}");
    let seeds: Vec<Vec<u8>> = picked.iter().map(|&i| tree[i].1.clone()).collect();
    let root_path = root.path().to_path_buf();
    fuzz(name, &seeds, move |which, data| {
        let mut files = tree.clone();
        files[picked[which]].1 = data.to_vec();
        let dir = fresh_dir(&root_path, &files);
        open(dir.path());
    });
}

#[test]
fn fuzz_shard_folders() {
    use lam_data::{Clip, ShardSet, ShardWriter, Split};
    let src = tempfile::tempdir().unwrap();
    let mut w = ShardWriter::create(src.path(), 3, [1, 2], 4, Some(2), 4).unwrap();
    for id in 0..10i64 {
        let split = if id < 8 { Split::Train } else { Split::Val };
        w.push(
            split,
            Clip {
                embeddings: (0..3 * 2 * 4)
                    .map(|k| (k as f32 + id as f32).sin())
                    .collect(),
                actions: Some(vec![0.5; 2 * 2]),
                id,
            },
        )
        .unwrap();
    }
    w.finish().unwrap();
    fuzz_folder(
        "shards",
        read_tree(src.path()),
        |_| true,
        |dir| {
            if let Ok(set) = ShardSet::open(dir, None) {
                let all: Vec<usize> = (0..set.len()).collect();
                let _ = set.batch(&all);
                for i in 0..set.len() {
                    let _ = set.actions(i);
                }
            }
        },
    );
}

/// The files of a fresh `episodes`-episode lam-sim recording (LeRobot layout with video).
fn recording(episodes: usize) -> Vec<(String, Vec<u8>)> {
    let src = tempfile::tempdir().unwrap();
    let cfg = lam_suite::RecordConfig {
        episodes,
        ..Default::default()
    };
    let (root, _) = lam_suite::record(&cfg, src.path(), false).unwrap();
    read_tree(&root)
}

#[test]
fn fuzz_lerobot_metadata() {
    fuzz_folder(
        "lerobot",
        recording(2),
        |name| name.ends_with(".json") || name.ends_with(".jsonl") || name.ends_with(".parquet"),
        |dir| {
            let opts = lam_ingest::LeRobotOptions::default();
            if let Ok(ds) = lam_ingest::LeRobotDataset::open(dir, &opts) {
                let indices: Vec<u64> = ds.episodes().iter().map(|e| e.index).collect();
                for i in indices {
                    let _ = ds.episode_data(i);
                }
            }
        },
    );
}

#[test]
fn fuzz_video_files() {
    let videos: Vec<Vec<u8>> = recording(1)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".mp4"))
        .map(|(_, b)| b)
        .collect();
    lam_ingest::decode::init();
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    fuzz("video", &videos, move |_, data| {
        let dir = fresh_dir(&root_path, &[("clip.mp4".into(), data.to_vec())]);
        let path = dir.path().join("clip.mp4");
        let opts = lam_ingest::DecodeOptions {
            threads: 1,
            ..Default::default()
        };
        if let Ok(mut r) = lam_ingest::VideoReader::open(&path, &opts) {
            let _ = r.sample(
                lam_ingest::Window::ALL,
                10.0,
                Some(64),
                &|_| true,
                &mut |_| Ok(std::ops::ControlFlow::Continue(())),
            );
        }
    });
}

#[test]
fn fuzz_configs_and_overrides() {
    let seeds = corpus("config");
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().to_path_buf();
    fuzz("config", &seeds, move |_, data| {
        let dir = fresh_dir(&root_path, &[("config.toml".into(), data.to_vec())]);
        let path = dir.path().join("config.toml");
        if let Ok(cfg) = lam_model::LamConfig::from_toml_file(&path) {
            let _ = cfg.validate();
        }
        // The same bytes as `--set` values, one per line.
        let text = String::from_utf8_lossy(data);
        let sets: Vec<String> = text.lines().map(str::to_string).collect();
        if let Ok(cfg) = lam_model::LamConfig::preset("tiny")
            .unwrap()
            .with_overrides(&sets)
        {
            let _ = cfg.validate();
        }
        // Every other stage's settings read the same way (`lam_model::settings`).
        let text = String::from_utf8_lossy(data);
        every_stage_settings::<lam_lawm::LawmConfig>(&text, &sets);
        every_stage_settings::<lam_encoder::pretrain::PretrainConfig>(&text, &sets);
        every_stage_settings::<lam_encoder::end_to_end::EndToEndConfig>(&text, &sets);
        every_stage_settings::<lam_control::controller::ControllerConfig>(&text, &sets);
        every_stage_settings::<lam_control::planner::PlannerConfig>(&text, &sets);
        // And as the config.json of a shared model folder.
        let model = fresh_dir(&root_path, &[("config.json".into(), data.to_vec())]);
        for kind in [
            "latent-action-model",
            "sim-encoder",
            "controller",
            "lawm-policy",
        ] {
            let _ = lam_model::model_folder::read_config(model.path(), kind);
        }
        let _ = lam_encoder::sim::read_meta(model.path());
        let _ =
            lam_model::checkpoint::read_state::<lam_model::checkpoint::TrainState>(model.path());
    });
}

/// A stage's settings from fuzzed TOML text and fuzzed `--set` lines.
fn every_stage_settings<T: lam_model::settings::Settings>(text: &str, sets: &[String]) {
    let _ = lam_model::settings::from_toml_str::<T>(text);
    let _ = lam_model::settings::resolve::<T>(None, None, sets);
}

#[test]
fn fuzz_serve_requests() {
    use lam_serve::protocol::{encode, f32_array, map, parse_request};
    use rmpv::Value;
    let image = Value::Map(vec![
        ("dtype".into(), "uint8".into()),
        (
            "shape".into(),
            Value::Array(vec![8.into(), 8.into(), 3.into()]),
        ),
        ("data".into(), Value::Binary(vec![7; 8 * 8 * 3])),
    ]);
    let mut seeds = corpus("serve");
    seeds.push(encode(&map(vec![
        ("type", "reset".into()),
        ("goal", image.clone()),
    ])));
    seeds.push(encode(&map(vec![("type", "act".into()), ("image", image)])));
    seeds.push(encode(&map(vec![
        ("type", "act".into()),
        ("state", f32_array(&[3], &[0.1, 0.2, 0.3])),
    ])));
    fuzz("serve", &seeds, |_, data| {
        let _ = parse_request(data);
    });
}

#[test]
fn fuzz_websocket_framing() {
    // A handshake, then a masked binary frame, a text frame, a ping and a close.
    let mut valid = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let frame = |opcode: u8, payload: &[u8]| {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    };
    valid.extend(frame(2, b"\x81\xa4type\xa4info"));
    valid.extend(frame(1, b"hello"));
    valid.extend(frame(9, b""));
    valid.extend(frame(8, b"\x03\xe8"));
    let mut seeds = corpus("websocket");
    seeds.push(valid);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = std::sync::Mutex::new(listener);
    fuzz("websocket", &seeds, move |_, data| {
        let mut client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.lock().unwrap().accept().unwrap();
        client.write_all(data).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        // Keep reading what the server answers so it never blocks on a full buffer.
        let drain = std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink);
        });
        if let Ok(mut ws) =
            lam_serve::ws::WebSocket::accept_within(server, 1 << 16, Duration::from_secs(2))
        {
            for _ in 0..64 {
                match ws.read_message() {
                    Ok(lam_serve::ws::Incoming::Closed) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        drain.join().unwrap();
    });
}
