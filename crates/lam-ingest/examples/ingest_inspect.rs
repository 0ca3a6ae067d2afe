//! Reads a video folder or a LeRobot dataset the way `lam embed` will and
//! prints what it found: items, clips per item, skipped files with reasons,
//! and for LeRobot the actions of the first episode.
//!
//! ```text
//! cargo run --release -p lam-ingest --example ingest_inspect -- PATH [--fps 4] [--frames 8] [--size 224]
//! ```
//! PATH is taken as a LeRobot dataset when it holds `meta/info.json`.

use lam_ingest::{
    ClipSource, ClipSpec, FolderOptions, LeRobotDataset, LeRobotOptions, RunOptions, VideoFolder,
    run,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| {
        eprintln!("usage: ingest_inspect PATH [--fps 4] [--frames 8] [--size 224]");
        std::process::exit(2);
    });
    let mut spec = ClipSpec::default();
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let bad = |e: &dyn std::fmt::Display| -> ! {
            eprintln!("{flag}: {e}");
            std::process::exit(2)
        };
        match flag.as_str() {
            "--fps" => spec.fps = value.parse().unwrap_or_else(|e| bad(&e)),
            "--frames" => {
                spec.frames = value.parse().unwrap_or_else(|e| bad(&e));
                spec.stride = spec.frames;
            }
            "--size" => spec.size = value.parse().unwrap_or_else(|e| bad(&e)),
            _ => bad(&"unknown flag"),
        }
    }
    let lerobot = std::path::Path::new(&path).join("meta/info.json").exists();
    let source: Box<dyn ClipSource> = if lerobot {
        match LeRobotDataset::open(&path, &LeRobotOptions::default()) {
            Ok(ds) => {
                if let Some(ep) = ds.episodes().first() {
                    match ds.episode_data(ep.index) {
                        Ok(d) => {
                            println!(
                                "episode {}: {} rows, tasks {:?}, actions {:?}, states {:?}",
                                ep.index,
                                d.len(),
                                ep.tasks,
                                d.actions.as_ref().map(|a| [a.rows, a.cols]),
                                d.states.as_ref().map(|s| [s.rows, s.cols])
                            );
                            if let Some(a) = &d.actions {
                                println!("  first action {:?}", a.row(0));
                            }
                        }
                        Err(e) => println!("episode {}: {e}", ep.index),
                    }
                }
                Box::new(ds)
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    } else {
        Box::new(
            VideoFolder::open(&path, &FolderOptions::default()).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1);
            }),
        )
    };
    println!("{}", source.describe());
    let report = run(
        source.as_ref(),
        &spec,
        &RunOptions::default(),
        &mut |item, clips| {
            let first = &clips[0];
            println!(
                "{}: {} clips of {:?}, first clip times {:?}",
                item.id,
                clips.len(),
                first.shape(),
                first.times
            );
            Ok(())
        },
    )
    .unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    println!("{report}");
}
