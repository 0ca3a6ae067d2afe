//! `lam`: latent-action world models from unlabeled video, one binary.

mod bench;
mod control;
mod demo;
mod encoder;
mod experiment;
mod lawm;
mod pipeline;
mod plan;
mod plot;
mod serve;
mod settings_args;
mod sim;
mod train;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lam",
    version,
    about = "Latent-action world models: learn from unlabeled video, control robots"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline on built-in data and write a report folder.
    Demo(demo::DemoArgs),
    /// The papers' experiments, end to end on the simulated suite, into a report folder.
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
    /// Train the stage-1 latent action model (IDM + world model) on embedding shards.
    Train(train::TrainArgs),
    /// Leakage (scene-cut) and transfer evaluations of a trained model.
    Eval(train::EvalArgs),
    /// Controller between robot actions and latent actions (stage 2).
    #[command(subcommand)]
    Control(control::ControlCommand),
    /// Closed-loop MPC through the world model on the simulator's evaluation protocol.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
    /// Make or inspect embedding shards.
    #[command(subcommand)]
    Data(DataCommand),
    /// Benchmarks against PyTorch twins of the same computation.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Plot a run's metrics to PNG.
    Plot(PlotArgs),
    /// The simulated manipulation suite: record datasets, show episodes, benchmark.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Frame encoders: pretrain the sim encoder, describe an encoder folder.
    #[command(subcommand)]
    Encoder(encoder::EncoderCommand),
    /// Embed a video folder, LeRobot dataset or sim recording into shards through an encoder.
    Embed(encoder::EmbedArgs),
    /// LAWM: pretrain an imitation policy through a recurrent world model, finetune on actions.
    Lawm(lawm::LawmArgs),
    /// Serve an MPC planner or a LAWM policy over WebSocket (msgpack) to Python robot loops.
    Serve(serve::ServeArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Write synthetic shards with hidden 2-D actions (for tests and quick runs).
    Synthetic(SyntheticArgs),
    /// Print a shard folder's index summary.
    Info {
        /// Shard folder.
        dir: PathBuf,
    },
    /// Join the parts of a job array (`lam embed --part K/N --out DIR`, K = 1..N) into one
    /// shard folder DIR, after checking that every part is there, finished and made alike.
    MergeParts {
        /// The --out folder the parts were embedded into.
        dir: PathBuf,
    },
    /// Merge shard folders of the same shape into a new one (e.g. human video and the robot
    /// episodes' video for stage 1); actions are kept only when every folder has them.
    Merge {
        /// Shard folders to merge (two or more).
        #[arg(long = "data", num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// New shard folder.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
struct SyntheticArgs {
    /// Output shard folder.
    #[arg(long)]
    out: PathBuf,
    /// Number of clips.
    #[arg(long, default_value_t = 512)]
    clips: usize,
    /// Frames per clip.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Token grid side (N = side * side).
    #[arg(long, default_value_t = 4)]
    grid: usize,
    /// Channels per token.
    #[arg(long, default_value_t = 32)]
    dim: usize,
    /// Also write the hidden actions (a labeled set).
    #[arg(long)]
    labeled: bool,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct PlotArgs {
    /// Run folder (reads metrics.jsonl): its loss curves, and for an encoder pretraining run
    /// its collapse statistics and probe R^2 (collapse.png beside the output).
    #[arg(required_unless_present = "budget")]
    run: Option<PathBuf>,
    /// Instead: closed-loop success against the planning budget from these `lam plan eval`
    /// output folders (one per budget), e.g. `--budget plan-s30 plan-s100 plan-s300`.
    #[arg(long, num_args = 1.., conflicts_with = "run")]
    budget: Vec<PathBuf>,
    /// Output PNG (default RUN/loss.png, or budget.png beside the first folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// mimalloc instead of the system allocator: burn's CPU backend allocates a fresh buffer for
/// most tensor ops, and glibc's malloc hands large ones back to the OS at every free, so each
/// step paid page faults and zeroing again (about 10% of a training step in `perf`).
/// Measured with `lam bench train` / `e2e` / `plan` (docs/benchmarks.md, "The allocator, and
/// SIGReg on the host").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its place in mimalloc's `mi_option_t` (checked by a test
/// against the option's documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS after a minute unused instead of mimalloc's one second: a
/// training step frees and allocates the same buffers again, and on the medium model (1.5 s a
/// step) every step faulted them in anew (75,000-95,000 page faults in seven steps, 2,800 with
/// the longer delay; docs/benchmarks.md, "Buffers written where the work is, and held across
/// steps"). A `MIMALLOC_PURGE_DELAY` in the environment wins.
fn hold_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; any value is valid.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 60_000) }
    }
}

fn main() {
    hold_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let matches = Cli::command().get_matches();
    settings_args::remember(matches.clone());
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Experiment(cmd) => experiment::run(cmd),
        Command::Train(args) => train::train(args),
        Command::Eval(args) => train::eval(args),
        Command::Data(DataCommand::Synthetic(a)) => {
            let cfg = lam_data::synthetic::SyntheticConfig {
                clips: a.clips,
                frames: a.frames,
                grid: [a.grid, a.grid],
                dim: a.dim,
                labeled: a.labeled,
                seed: a.seed,
                ..Default::default()
            };
            let index = lam_data::synthetic::write_synthetic(&a.out, &cfg)?;
            println!(
                "wrote {} clips ({} shards) of [T={}, N={}, D={}] to {}",
                a.clips,
                index.shards.len(),
                index.frames,
                index.tokens,
                index.dim,
                a.out.display()
            );
            Ok(())
        }
        Command::Data(DataCommand::Merge { data, out }) => {
            let (clips, kept) = lam_data::shards::merge(&data, &out)?;
            println!(
                "merged {clips} clips into {}{}",
                out.display(),
                if kept {
                    ""
                } else {
                    " (without actions: not every folder has them)"
                }
            );
            Ok(())
        }
        Command::Data(DataCommand::MergeParts { dir }) => {
            let m = lam_encoder::embed::merge_parts(&dir)?;
            println!(
                "merged {} parts: {} clips ({} shard files) in {}",
                m.parts,
                m.clips,
                m.index.shards.len(),
                dir.display()
            );
            Ok(())
        }
        Command::Data(DataCommand::Info { dir }) => {
            let index = lam_data::ShardIndex::load(&dir)?;
            let train = lam_data::ShardSet::open(&dir, Some(lam_data::Split::Train))?.len();
            let val = lam_data::ShardSet::open(&dir, Some(lam_data::Split::Val))?.len();
            println!(
                "{}: T={} N={} (grid {:?}) D={} action_dim={:?}\n  train clips {train}, val clips {val}, {} shards\n  source {:?}",
                dir.display(),
                index.frames,
                index.tokens,
                index.grid,
                index.dim,
                index.action_dim,
                index.shards.len(),
                index.source
            );
            Ok(())
        }
        Command::Bench(cmd) => bench::run(cmd),
        Command::Control(cmd) => control::run(cmd),
        Command::Plan(cmd) => plan::run(cmd),
        Command::Sim(cmd) => sim::run(cmd),
        Command::Encoder(cmd) => encoder::run_encoder(cmd),
        Command::Embed(args) => encoder::run_embed(args),
        Command::Lawm(cmd) => lawm::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Plot(a) => {
            if let Some(run) = &a.run {
                let out = a.out.unwrap_or_else(|| run.join("loss.png"));
                for f in plot::plot_run(run, &out)? {
                    println!("{}", f.display());
                }
            } else {
                let out = a.out.unwrap_or_else(|| {
                    a.budget[0]
                        .parent()
                        .unwrap_or(std::path::Path::new("."))
                        .join("budget.png")
                });
                plot::plot_budget(&a.budget, &out)?;
                println!("{}", out.display());
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's purge delay: it holds that option's default (1,000 ms)
    /// until `hold_freed_memory` raises it.
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads and sets integer options of the allocator.
        unsafe {
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1_000);
            hold_freed_memory();
            assert_eq!(
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                60_000
            );
        }
    }
}
