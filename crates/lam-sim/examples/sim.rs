//! Runs the simulator commands without the `lam` binary:
//! `cargo run --release -p lam-sim --example sim -- record --task push --out /tmp/push`.

use clap::Parser;
use lam_sim::cli::{SimCommand, run};

#[derive(Parser)]
#[command(name = "sim", about = "lam simulated manipulation suite")]
struct Cli {
    #[command(subcommand)]
    cmd: SimCommand,
}

fn main() -> anyhow::Result<()> {
    run(Cli::parse().cmd)
}
