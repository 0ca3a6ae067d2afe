//! `lam demo`: the README's main command. Runs the pipeline end to end on built-in data on the
//! CPU and writes a report folder.
//!
//! Current pipeline: synthetic frame-embedding shards with hidden actions -> stage-1 training
//! (tiny preset, sparse regulariser) -> leakage and transfer evaluation -> plots and a
//! markdown summary.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use lam_data::synthetic::{SyntheticConfig, write_synthetic};
use serde_json::json;
use tracing::info;

use crate::plot;
use crate::stage1::{EvalArgs, TrainArgs, eval_run, train_run};

#[derive(Args)]
pub struct DemoArgs {
    /// Report folder (everything the demo makes goes here).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Training steps of the latent action model.
    #[arg(long, default_value_t = 400)]
    pub steps: usize,
    /// Clips of built-in data.
    #[arg(long, default_value_t = 1024)]
    pub clips: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)?;
    let data = args.out.join("data");
    info!(
        "1/4 writing {} clips of built-in data to {}",
        args.clips,
        data.display()
    );
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    let syn = SyntheticConfig {
        clips: args.clips,
        ..Default::default()
    };
    write_synthetic(&data, &syn)?;

    let run = args.out.join("lam");
    info!(
        "2/4 training the latent action model ({} steps) in {}",
        args.steps,
        run.display()
    );
    let train_args = TrainArgs {
        data: data.clone(),
        run: run.clone(),
        preset: "tiny".into(),
        config: None,
        overrides: vec![],
        regularizer: None,
        steps: Some(args.steps),
        resume: false,
        device: args.device.clone(),
        quiet: false,
    };
    let t_train = Instant::now();
    let summary = train_run(&train_args)?;
    let train_secs = t_train.elapsed().as_secs_f64();

    info!("3/4 evaluating leakage and transfer");
    let (report, eval_json) = eval_run(&EvalArgs {
        run: run.clone(),
        data: data.clone(),
        clips: 256,
        batch: 32,
        out: Some(args.out.join("eval.json")),
        device: args.device.clone(),
    })?;

    info!("4/4 writing plots and summary");
    let loss_png = args.out.join("loss.png");
    plot::plot_run(&run, &loss_png)?;
    let total_secs = started.elapsed().as_secs_f64();
    let metrics = json!({
        "train": {"steps": summary.steps_done, "steps_per_sec": summary.steps_per_sec, "seconds": train_secs,
                  "final_train_loss": summary.final_train_loss, "final_val": summary.final_val},
        "eval": report,
        "wall_seconds": total_secs,
    });
    lam_data::shards::write_atomic(
        &args.out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;
    let mut md = String::new();
    writeln!(md, "# lam demo report\n")?;
    writeln!(
        md,
        "Built-in data: {} synthetic clips (T={}, {}x{} tokens, D={}) whose frames move by hidden 2-D actions.\n",
        syn.clips, syn.frames, syn.grid[0], syn.grid[1], syn.dim
    )?;
    writeln!(md, "## Stage 1: latent action model\n")?;
    writeln!(
        md,
        "- {} steps in {:.1} s ({:.2} steps/s), final train loss {:.4}",
        summary.steps_done, train_secs, summary.steps_per_sec, summary.final_train_loss
    )?;
    writeln!(
        md,
        "- checkpoint: `{}`",
        summary
            .last_checkpoint
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    )?;
    writeln!(md, "- loss curves: `loss.png`\n")?;
    writeln!(md, "## Evaluations\n\n```\n{}```\n", report.table())?;
    writeln!(
        md,
        "A leakage ratio well above 1 means the latent encodes the action rather than copying the next frame.\n"
    )?;
    writeln!(md, "Wall time: {total_secs:.1} s.")?;
    lam_data::shards::write_atomic(&args.out.join("summary.md"), md.as_bytes())?;
    print!("{}", report.table());
    println!(
        "demo finished in {total_secs:.1} s; report: {} (summary.md, metrics.json, loss.png, eval: {})",
        args.out.display(),
        eval_json.display()
    );
    Ok(())
}
