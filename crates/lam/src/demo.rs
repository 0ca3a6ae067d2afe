//! `lam demo`: the README's main command. Runs the whole pipeline on the simulated suite on
//! the CPU and writes a report folder:
//!
//! 1. record unlabeled `human` video (1,000 episodes of random exploration: play in which the
//!    agent also pushes into walls) and a small labeled `robot` set (100 episodes of
//!    goal-seeking play on `reach`, through the door and against the wall beside it;
//!    mixed-policy episodes on the tasks with objects) (`lam sim record`);
//! 2. pretrain the sim encoder, no labels read: on `reach` on the frames of both recordings
//!    toward what moves (the motion term; `lam encoder pretrain --data HUMAN --data ROBOT`),
//!    on `push` and `pusht` on the labeled robot episodes' frames alone by keypoint transport
//!    (`--data ROBOT --keypoint-transport-weight 10`, so that a keypoint follows the pushed
//!    object as the robot pushes it; `--encoder-frames`);
//! 3. on `reach`, fit the encoder's context features on the human video (`lam encoder
//!    context`: the scene layout the keypoints drop, its door) and embed both recordings into
//!    shards, one token per frame (the encoder's keypoint positions, with the context features
//!    on `reach`: `--pooling keypoints-context` / `keypoints`; the oracle's state with
//!    `--oracle`), one shard frame per block of `frameskip` (5) simulator steps, clips of
//!    `history` (3) frames + the next (`lam embed --fps 2 --frames 4`); the labeled robot
//!    shards carry blocks of 5 actions; on `push` and `pusht` the robot shards are merged
//!    into the human ones for stage 1 (`--robot-video`; `lam data merge`, actions unused);
//! 4. train the latent action model on those shards with standardised tokens (every channel
//!    by its own std on `reach`, by one shared deviation with transport) and the noisy
//!    regulariser (`lam train --set model.standardize=true --set regularizer.kind=noisy`;
//!    4,000 steps) and score leakage and transfer (`lam eval`);
//! 5. fit the controller on the labeled robot shards (`lam control fit --frame-conditioned`:
//!    g_ctrl(a, s); `--controller action` for g_ctrl(a));
//! 6. train the reference: an action-conditioned world model on the same labeled robot shards
//!    alone (`lam train --set model.conditioning=action`; what the labels give without the
//!    video; `--action-steps 0` skips it);
//! 7. plan closed loop in the robot domain with the fixed evaluation protocol, CEM over blocks
//!    of robot actions (one action held per block) through the controller (cost: MSE to the
//!    goal embedding at the best step of the horizon), next to the action-conditioned
//!    reference on the same episodes, the random policy and the scripted expert (`lam plan
//!    eval`);
//! 8. plot the training curves and write `summary.md` + `metrics.json`.
//!
//! Every step is an ordinary `lam` command run in this process; the summary lists them so
//! each can be rerun or changed by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{Value, json};

use lam_model::config::TokenScale;

use crate::pipeline::{
    DataSpec, EncoderFrames, FeasibleSpec, PlanSpec, Steps, args, eval_argv, fit_argv, read_json,
};

#[derive(Args)]
pub struct DemoArgs {
    /// Report folder (everything the demo makes goes here; what an earlier demo wrote there is
    /// replaced; a folder holding the demo's subfolders that lam demo did not make is refused).
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// What is recorded and how it is embedded.
    #[command(flatten)]
    pub data: DataSpec,
    /// Training steps of the latent action model.
    #[arg(long, default_value_t = 4000)]
    pub steps: usize,
    /// Closed-loop evaluation episodes.
    #[arg(long, default_value_t = 20)]
    pub episodes: usize,
    /// CEM candidates and iterations of the closed-loop planner.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    #[arg(long, default_value_t = 10)]
    pub iterations: usize,
    /// Planning horizon in world-model steps (blocks).
    #[arg(long, default_value_t = 5)]
    pub horizon: usize,
    /// Search one robot action per block, held for the block's steps (`lam plan eval
    /// --hold-actions`; reach from pixels with seek-policy labels: 68% against 46% searching
    /// every step's action); `--hold-actions false` searches every step's action.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub hold_actions: bool,
    /// Correct every rollout by the blocks the episode has executed and the frames they led to
    /// (`lam plan eval --memory`). Default: on for `reach` from pixels (the demo's models, 50
    /// episodes: the chain 90% against 74%, the action-conditioned reference 78% against 72%),
    /// off for the tasks with objects (`push`, the demo's models: 68% against 76% with the
    /// default kernels, 76% with kernels ten times narrower) and with `--oracle` (`reach`: the
    /// chain 86% against 94%). `--memory false` / `--memory true` decide.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub memory: Option<bool>,
    /// Neighbours of the feasibility projection (`lam plan eval --feasible` on the human
    /// shards: each planned latent becomes the nearest one the unlabeled video shows from the
    /// K frames most like the one it starts at, frames compared on the channels that look
    /// alike in the robot's shards); 0 plans without it.
    #[arg(long, default_value_t = 0)]
    pub feasible_neighbours: usize,
    /// Controller between robot action blocks and latent actions: `frame` reads the block and
    /// the frame it acts on (`lam control fit --frame-conditioned`: the same push moves the
    /// agent or not depending on the walls and objects around it; reach from pixels with
    /// seek-policy labels: 68% against 38%, push on the oracle state: 58% against 5%),
    /// `action` the block alone.
    #[arg(long, value_enum, default_value = "frame")]
    pub controller: ControllerKind,
    /// Training steps of the action-conditioned reference world model (trained on the labeled
    /// robot shards alone and planned on the same episodes); 0 skips it.
    #[arg(long, default_value_t = 6000)]
    pub action_steps: usize,
    /// Latent action models that plan together (`lam plan eval --ensemble`): the demo's, and
    /// this many minus one more trained the same way with `train.seed` 1, 2, ..., each with
    /// its own controller; every candidate is scored by the mean cost under all of them.
    /// Reach from pixels, 50 episodes: seeds alone 80 / 80 / 66 / 62 / 76%, ensembles of
    /// seeds 0-2 80% and 2-4 84%. 1 plans with the demo's model alone.
    #[arg(long, default_value_t = 3)]
    pub ensemble: usize,
    /// Extra `section.field=value` settings for the latent action model's training, after the
    /// demo's own (repeatable; see `lam train --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub train_set: Vec<String>,
}

impl DemoArgs {
    /// Whether the planner keeps an episode memory: the flag given, else the default of the
    /// task and frame source (on for `reach` from pixels, where it measured best; see
    /// [`DemoArgs::memory`]).
    pub fn memory(&self) -> bool {
        self.memory
            .unwrap_or(self.data.task == "reach" && !self.data.oracle)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ControllerKind {
    Frame,
    Action,
}

/// File that marks a folder as a demo report folder (written by the demo itself).
const MARKER: &str = ".lam-demo";
/// Subfolders a demo writes, replaced by the next run into the same folder.
const SUBFOLDERS: [&str; 8] = [
    "data",
    "encoder",
    "shards",
    "lam",
    "controller",
    "ensemble",
    "action_conditioned",
    "plan",
];

/// Creates the report folder, or clears what an earlier demo wrote there. A folder that holds
/// any of the demo's subfolders but no marker was not made by `lam demo`: it is refused, never
/// deleted.
fn prepare_out(out: &Path) -> Result<()> {
    // Report folders of demos from before the marker carry their summary.
    let marked = out.join(MARKER).is_file()
        || std::fs::read_to_string(out.join("summary.md"))
            .is_ok_and(|t| t.starts_with("# lam demo report"));
    if !marked {
        if let Some(sub) = SUBFOLDERS.iter().find(|s| out.join(s).exists()) {
            anyhow::bail!(
                "{} holds `{sub}` but was not made by lam demo (no {MARKER} file): refusing to \
                 replace it; pass another --out",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for sub in SUBFOLDERS {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot clear {}", p.display()))?;
        }
    }
    std::fs::write(out.join(MARKER), b"report folder of lam demo\n")
        .with_context(|| format!("cannot write {}", out.join(MARKER).display()))
}

pub fn run(a: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let out = &a.out;
    let data = &a.data;
    data.check()?;
    anyhow::ensure!(
        a.ensemble >= 1,
        "--ensemble must be at least 1 (the demo's own model)"
    );
    prepare_out(out)?;
    let (lam_run, ctrl, plan_dir) = (out.join("lam"), out.join("controller"), out.join("plan"));
    let dev = &data.device;
    let task = &data.task;
    let mut steps = Steps::default();
    let l = data.run(out, &mut steps, 10)?;
    let mut sets = vec!["regularizer.kind=noisy".to_string()];
    sets.extend(a.train_set.iter().cloned());
    steps.run(
        "6/10 training the latent action model on the stage-1 shards",
        &data.train_argv(&l.stage1_shards, &lam_run, a.steps, &sets),
    )?;
    steps.run(
        "7/10 leakage and transfer",
        &eval_argv(&lam_run, &l.stage1_shards, &out.join("eval.json"), dev),
    )?;
    // `lam control fit` of a model's controller, frame-conditioned unless asked otherwise.
    let fit = |run: &Path, controller: &Path| {
        let mut v = fit_argv(run, &l.robot_shards, controller, dev);
        if a.controller == ControllerKind::Frame {
            v.push("--frame-conditioned".into());
        }
        v
    };
    steps.run(
        "8/10 fitting the controller on the labeled robot shards",
        &fit(&lam_run, &ctrl),
    )?;
    // Further members of the ensemble: the same recipe with other seeds.
    let mut members = Vec::new();
    for seed in 1..a.ensemble {
        let dir = out.join("ensemble").join(format!("seed-{seed}"));
        let (run, controller) = (dir.join("lam"), dir.join("controller"));
        let mut sets = sets.clone();
        sets.push(format!("train.seed={seed}"));
        steps.run(
            &format!(
                "8/10 ensemble member {} of {}: the latent action model with seed {seed}, and \
                 its controller",
                seed + 1,
                a.ensemble
            ),
            &data.train_argv(&l.stage1_shards, &run, a.steps, &sets),
        )?;
        steps.run(
            &format!("8/10 ensemble member {}: controller", seed + 1),
            &fit(&run, &controller),
        )?;
        members.push(format!("{},{}", run.display(), controller.display()));
    }
    let ac_run = out.join("action_conditioned");
    if a.action_steps > 0 {
        steps.run(
            "9/10 training the action-conditioned reference on the labeled robot shards alone",
            &data.action_conditioned_argv(&l.robot_shards, &ac_run, a.action_steps)?,
        )?;
    }
    let plan = PlanSpec {
        task: task.clone(),
        episodes: a.episodes,
        samples: a.samples,
        iterations: a.iterations,
        horizon: a.horizon,
        hold_actions: a.hold_actions,
        memory: a.memory(),
        feasible: (a.feasible_neighbours > 0).then(|| FeasibleSpec {
            shards: l.human_shards.clone(),
            neighbours: a.feasible_neighbours,
            domain: Some(l.robot_shards.clone()),
        }),
        baselines: true,
        device: dev.clone(),
    };
    let mut plan_argv = plan.argv(&lam_run, &l.encoder, &ctrl, &plan_dir);
    if a.action_steps > 0 {
        plan_argv.extend(["--action-run".to_string(), ac_run.display().to_string()]);
    }
    for m in &members {
        plan_argv.extend(["--ensemble".to_string(), m.clone()]);
    }
    steps.run("10/10 planning closed loop in the robot domain", &plan_argv)?;
    // The figures are the report's last step: a machine without the plot font (a bare GPU
    // node, say) still gets the summary and the metrics, and the summary says why no plot.
    let plotted = steps.run(
        "plotting",
        &args(&[
            &"plot",
            &lam_run.display(),
            &"--out",
            &out.join("loss.png").display(),
        ]),
    );
    if let Err(e) = &plotted {
        tracing::warn!("no loss.png: {e:#}");
    }
    let log = steps.log;

    let total = started.elapsed().as_secs_f64();
    let encoder_summary = read_json(&out.join("encoder/summary.json")).unwrap_or(Value::Null);
    let eval = read_json(&out.join("eval.json"))?;
    let controller = read_json(&out.join("controller/controller.json"))?;
    let plan = read_json(&out.join(format!("plan/plan_eval_{task}.json")))?;
    let metrics = json!({
        "encoder": encoder_summary,
        "eval": eval,
        "controller": controller["report"],
        "plan": plan["summaries"],
        "steps": log.iter().map(|(c, s)| json!({"command": c, "seconds": s})).collect::<Vec<_>>(),
        "wall_seconds": total,
    });
    lam_data::shards::write_atomic(
        &out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;

    // The result first: closed-loop success of every method.
    let headline: Vec<String> = plan["summaries"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|m| {
                    let rate = m["success_rate"].as_f64().unwrap_or(f64::NAN);
                    let n = m["episodes"].as_u64().unwrap_or(0);
                    format!(
                        "{} {:.0}% ({}/{n})",
                        m["method"].as_str().unwrap_or("?"),
                        100.0 * rate,
                        (rate * n as f64).round() as u64
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let headline = format!(
        "Closed-loop success on `{task}` ({} protocol episodes, {total:.0} s wall): {}.",
        a.episodes,
        headline.join("; ")
    );
    let mut md = String::new();
    writeln!(md, "# lam demo report\n")?;
    writeln!(md, "{headline}\n")?;
    writeln!(
        md,
        "Task `{task}` of the simulated suite: {} unlabeled human-domain episodes ({} policy, \
         no actions read) and {} labeled robot episodes ({} policy); frame embedding: {}{}; \
         closed-loop evaluation in the robot domain on the fixed protocol ({} episodes).\n",
        a.data.human_episodes,
        a.data.human_policy(),
        a.data.robot_episodes,
        a.data.robot_policy(),
        a.data.embedding(),
        match (a.data.oracle, a.data.encoder_frames()) {
            (true, _) => "",
            (false, EncoderFrames::Robot) => {
                " (the encoder pretrained on the labeled robot episodes' frames alone)"
            }
            (false, EncoderFrames::HumanAndRobot) => {
                " (the encoder pretrained on the human and robot frames)"
            }
        },
        a.episodes
    )?;
    writeln!(
        md,
        "The latent action model{} trained on {} (tokens standardised {}).\n",
        if a.ensemble > 1 { "s are" } else { " is" },
        if a.data.robot_video() {
            "the human video and the labeled robot episodes' frames, their actions unused \
             (`shards/stage1`)"
        } else {
            "the human video alone"
        },
        match a.data.token_scale() {
            TokenScale::Channel => "per channel",
            TokenScale::Shared => "by one deviation shared by all channels",
        }
    )?;
    if a.action_steps > 0 {
        writeln!(
            md,
            "The action-conditioned WM is the reference: a world model trained on the {} \
             labeled robot episodes alone ({} steps, `action_conditioned/`), planned on the \
             same episodes: what the labels give without the video.\n",
            a.data.robot_episodes, a.action_steps
        )?;
    }
    if a.ensemble > 1 {
        writeln!(
            md,
            "The latent-action WM plans as an ensemble of {} runs of the same recipe (`lam/` \
             and `ensemble/seed-*`: `train.seed` 0 to {}, each with its own controller): every \
             candidate is scored by the mean cost under all of them.\n",
            a.ensemble,
            a.ensemble - 1
        )?;
    }
    writeln!(md, "## Closed-loop planning\n")?;
    let plan_md =
        std::fs::read_to_string(out.join(format!("plan/plan_eval_{task}.md"))).unwrap_or_default();
    writeln!(
        md,
        "{}\n",
        plan_md.lines().skip(2).collect::<Vec<_>>().join("\n")
    )?;
    writeln!(
        md,
        "Strips in `plan/strips/`: top row what the robot saw, bottom row the observed frame \
         closest to what the world model predicted for that step, the goal last.\n"
    )?;
    writeln!(md, "## Latent action model\n")?;
    let l = &eval["leakage"];
    writeln!(
        md,
        "- leakage: E_normal {:.4}, E_cut {:.4}, E_cut(z = 0) {:.4}, ratio {:.2} (well above 1: \
         z does not copy the next frame; E_cut(z = 0) - E_cut > 0: the world model uses z)",
        l["e_normal"].as_f64().unwrap_or(f64::NAN),
        l["e_cut"].as_f64().unwrap_or(f64::NAN),
        l["e_cut_no_action"].as_f64().unwrap_or(f64::NAN),
        l["ratio"].as_f64().unwrap_or(f64::NAN),
    )?;
    match &plotted {
        Ok(()) => writeln!(
            md,
            "- training curves: `loss.png`; full evaluation: `eval.json`"
        )?,
        Err(e) => writeln!(
            md,
            "- training curves: not plotted ({e:#}); full evaluation: `eval.json`"
        )?,
    }
    let r = &controller["report"];
    writeln!(
        md,
        "- controller: cosine(g_ctrl(a), z) {:.3}, R^2 {:.3} on {} held-out transitions; inverse \
         MSE {:.4} (action variance {:.4})",
        r["cosine"].as_f64().unwrap_or(f64::NAN),
        r["r2"].as_f64().unwrap_or(f64::NAN),
        r["val_transitions"],
        r["inverse_mse"].as_f64().unwrap_or(f64::NAN),
        r["action_variance"].as_f64().unwrap_or(f64::NAN),
    )?;
    if let (Some(c), Some(i)) = (
        r["prediction_error"].as_f64(),
        r["prediction_error_idm"].as_f64(),
    ) {
        writeln!(
            md,
            "- which link is weaker on the robot's held-out clips: the world model's prediction \
             error (L1) is {c:.4} fed the controller's latents and {i:.4} fed the IDM's own (the \
             second is the world model alone, the gap is the controller's)"
        )?;
    }
    writeln!(md)?;
    writeln!(md, "## Commands run\n")?;
    for (c, s) in &log {
        writeln!(md, "- `{c}` ({s:.0} s)")?;
    }
    writeln!(md, "\nWall time: {total:.0} s.")?;
    lam_data::shards::write_atomic(&out.join("summary.md"), md.as_bytes())?;
    println!("{headline}");
    println!("{plan_md}");
    println!(
        "demo finished in {total:.0} s; report: {} (summary.md, metrics.json, {}plan/)",
        out.display(),
        if plotted.is_ok() { "loss.png, " } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::SuitePooling::{Keypoints, KeypointsContext};
    use clap::Parser;
    use lam_sim::PolicyKind;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    fn parse(argv: &[&str]) -> DemoArgs {
        Cli::try_parse_from(std::iter::once("demo").chain(argv.iter().copied()))
            .unwrap()
            .demo
    }

    /// The defaults are the measured best on `reach` (goal-seeking labels, one action held per
    /// block, g(a, s)); the tasks with objects keep mixed-policy labels; every default can be
    /// turned back.
    #[test]
    fn the_demo_defaults_to_what_planned_best_and_each_can_be_turned_back() {
        let d = parse(&[]);
        assert!(d.hold_actions);
        assert!(d.memory());
        assert!(!parse(&["--oracle"]).memory());
        assert_eq!(d.ensemble, 3);
        assert_eq!(d.controller, ControllerKind::Frame);
        assert_eq!(d.data.robot_policy(), PolicyKind::Seek);
        assert_eq!((d.data.human_episodes, d.steps), (1000, 4000));
        // reach: the motion term, 400 encoder steps, keypoints with context, every channel
        // standardised, stage 1 on the human video alone.
        let recipe = |d: &DataSpec| {
            (
                d.transport_weight(),
                d.encoder_steps(),
                d.pooling(),
                d.token_scale(),
                d.robot_video(),
                d.encoder_frames(),
            )
        };
        let reach = (
            0.0,
            400,
            KeypointsContext,
            TokenScale::Channel,
            false,
            EncoderFrames::HumanAndRobot,
        );
        assert_eq!(recipe(&d.data), reach);
        assert_eq!(d.data.human_policy(), PolicyKind::Random);
        for task in ["push", "pusht"] {
            assert!(!parse(&["--task", task]).memory());
            assert!(parse(&["--task", task, "--memory"]).memory());
            let objects = parse(&["--task", task]).data;
            assert_eq!(objects.robot_policy(), PolicyKind::Mixed);
            assert_eq!(objects.human_policy(), PolicyKind::Mixed);
        }
        assert_eq!(
            parse(&["--task", "push", "--human-policy", "random"])
                .data
                .human_policy(),
            PolicyKind::Random
        );
        // The tasks with objects: keypoint transport, 1,000 encoder steps, the keypoints alone
        // on one shared scale, the robot's frames in stage 1; each can be turned back.
        let objects = (
            10.0,
            1000,
            Keypoints,
            TokenScale::Shared,
            true,
            EncoderFrames::Robot,
        );
        for task in ["push", "pusht"] {
            assert_eq!(recipe(&parse(&["--task", task]).data), objects);
        }
        // The training command lines say so and parse as `lam train`.
        for (d, scale) in [
            (&d.data, "channel"),
            (&parse(&["--task", "push"]).data, "shared"),
        ] {
            let train = d.train_argv(Path::new("s"), Path::new("r"), 10, &[]);
            let want = format!("model.standardize_scale={scale}");
            assert!(
                train.windows(2).any(|w| w[0] == "--set" && w[1] == want),
                "{train:?}"
            );
            let line = std::iter::once("lam".to_string()).chain(train.clone());
            assert!(crate::Cli::try_parse_from(line).is_ok(), "{train:?}");
        }
        let motion = parse(&["--task", "push", "--keypoint-transport-weight", "0"]).data;
        assert_eq!(recipe(&motion), reach);
        let oracle = parse(&["--task", "push", "--oracle"]).data;
        assert_eq!(recipe(&oracle), reach);
        let human_only = parse(&["--task", "push", "--robot-video", "false"]).data;
        assert!(!human_only.robot_video());
        assert!(parse(&["--robot-video"]).data.robot_video());
        // On the tasks with objects the encoder reads every recorded frame of the labeled
        // episodes alone; on `reach`, and when asked, the human video's too; the lines parse.
        let out = Path::new("o");
        let data_of = |argv: &[String]| -> Vec<String> {
            argv.windows(2)
                .filter(|w| w[0] == "--data")
                .map(|w| w[1].clone())
                .collect()
        };
        let both = vec!["o/data/human".to_string(), "o/data/robot".to_string()];
        let push_argv = parse(&["--task", "push"]).data.encoder_argv(out);
        assert_eq!(data_of(&push_argv), vec!["o/data/robot".to_string()]);
        assert!(
            push_argv
                .windows(2)
                .any(|w| w[0] == "--phases" && w[1] == "5"),
            "{push_argv:?}"
        );
        let back = parse(&["--task", "push", "--encoder-frames", "human-and-robot"]).data;
        assert_eq!(back.encoder_frames(), EncoderFrames::HumanAndRobot);
        for argv in [d.data.encoder_argv(out), back.encoder_argv(out)] {
            assert_eq!(data_of(&argv), both, "{argv:?}");
            assert!(!argv.contains(&"--phases".to_string()), "{argv:?}");
        }
        for argv in [push_argv, back.encoder_argv(out)] {
            let line = std::iter::once("lam".to_string()).chain(argv.clone());
            assert!(crate::Cli::try_parse_from(line).is_ok(), "{argv:?}");
        }
        assert_eq!(
            parse(&["--task", "push", "--pooling", "keypoints-context"])
                .data
                .pooling(),
            KeypointsContext
        );
        let d = parse(&[
            "--hold-actions",
            "false",
            "--controller",
            "action",
            "--robot-policy",
            "mixed",
            "--memory",
            "false",
        ]);
        assert!(!d.hold_actions);
        assert!(!d.memory());
        assert_eq!(d.controller, ControllerKind::Action);
        assert_eq!(d.data.robot_policy(), PolicyKind::Mixed);
        // The bare flag, as earlier command lines wrote it, still means true.
        assert!(parse(&["--hold-actions", "--episodes", "3"]).hold_actions);
        assert!(Cli::try_parse_from(["demo", "--controller", "auto"]).is_err());
        // Labels drawn from the evaluation protocol's seeds are refused, naming the flag.
        let leak = parse(&["--robot-seed", "999999950"]);
        let err = format!("{:#}", leak.data.check().unwrap_err());
        assert!(err.contains("--robot-seed 999999950"), "{err}");
        assert!(parse(&["--robot-seed", "6000"]).data.check().is_ok());
    }

    #[test]
    fn report_folder_is_cleared_only_when_the_demo_made_it() {
        let tmp = tempfile::tempdir().unwrap();
        // A folder someone else filled: refused, and left as it was.
        let foreign = tmp.path().join("mine");
        std::fs::create_dir_all(foreign.join("data")).unwrap();
        std::fs::write(foreign.join("data/keep.txt"), b"precious").unwrap();
        let err = format!("{:#}", prepare_out(&foreign).unwrap_err());
        assert!(
            err.contains("not made by lam demo") && err.contains("mine"),
            "{err}"
        );
        assert!(foreign.join("data/keep.txt").is_file());
        // A new folder is made and marked; a second run clears the demo's subfolders only.
        let out = tmp.path().join("demo");
        prepare_out(&out).unwrap();
        assert!(out.join(MARKER).is_file());
        std::fs::create_dir_all(out.join("plan")).unwrap();
        std::fs::write(out.join("plan/old.md"), b"old").unwrap();
        std::fs::write(out.join("notes.txt"), b"mine").unwrap();
        prepare_out(&out).unwrap();
        assert!(!out.join("plan").exists());
        assert!(out.join("notes.txt").is_file());
    }
}
