//! The `lam lawm` commands without the `lam` binary:
//! `cargo run --release -p lam-lawm --example lawm -- <pretrain|finetune|eval|cca|compare> ...`

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "lawm",
    about = "LAWM branch: world-model pretraining of an imitation policy"
)]
struct Cli {
    #[command(flatten)]
    lawm: lam_lawm::cli::LawmArgs,
}

fn main() -> anyhow::Result<()> {
    lam_lawm::cli::run(Cli::parse().lawm)
}
