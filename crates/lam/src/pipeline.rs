//! The simulated suite's pipeline as `lam` command lines, shared by `lam demo` and
//! `lam experiment`: each stage is an ordinary command run in this process and logged, so a
//! report can list what was run and each step can be rerun by hand.
//!
//! The data stage records unlabeled `human` video and a small labeled `robot` set, pretrains
//! the sim encoder on the robot's frames, or on both recordings' (`--encoder-frames`; the
//! robot's labels unused: its frames make the keypoints precise on the robot's embodiment;
//! unless the oracle state is the embedding) and embeds
//! both recordings into shards of `history + 1` frames, one frame per block of `frameskip`
//! simulator steps (with `--robot-video`, the default on the tasks with objects, it merges
//! both shard folders into the stage-1 shards, the robot's actions unused). The model stages
//! train a latent action model on the stage-1 shards, score it, fit the controller on the
//! robot shards and plan closed loop in the robot domain.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use lam_model::config::TokenScale;
use lam_sim::PolicyKind;
use serde_json::Value;
use tracing::info;

/// The commands run so far, with their wall times.
#[derive(Default)]
pub struct Steps {
    pub log: Vec<(String, f64)>,
}

impl Steps {
    /// Runs one `lam` command line in this process and records it.
    pub fn run(&mut self, title: &str, argv: &[String]) -> Result<()> {
        let shown = format!("lam {}", argv.join(" "));
        info!("{title}: {shown}");
        let t0 = Instant::now();
        let cli = crate::Cli::try_parse_from(
            std::iter::once("lam".to_string()).chain(argv.iter().cloned()),
        )
        .with_context(|| format!("step `{shown}`"))?;
        crate::run(cli).with_context(|| format!("step `{shown}` failed"))?;
        self.log.push((shown, t0.elapsed().as_secs_f64()));
        Ok(())
    }
}

pub fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// A command line from displayable pieces.
pub fn args(items: &[&dyn std::fmt::Display]) -> Vec<String> {
    items.iter().map(|x| x.to_string()).collect()
}

/// What the data stage records and how it embeds it: the flags `lam demo` and every
/// `lam experiment` that records the suite share (their one owner).
#[derive(Clone, Debug, clap::Args)]
pub struct DataSpec {
    /// Task recorded and planned: reach, push, pusht or sort.
    #[arg(long, default_value = "reach")]
    pub task: String,
    /// Unlabeled human-domain episodes recorded (reach from pixels with the demo's other
    /// defaults: 80% with 1,000 episodes and 4,000 training steps against 68% with 400 and
    /// 2,000).
    #[arg(long, default_value_t = 1000)]
    pub human_episodes: usize,
    /// Policy of the unlabeled human-domain recordings: expert, random, mixed or seek.
    /// Default: `random` for `reach` (exploration play: its full-speed pushes into walls are
    /// what teaches the world model that walls stop the agent; reach: 55% against 10% with
    /// mixed-policy video), `mixed` for the tasks with objects (video that pushes the object
    /// toward its target; push with the demo's other defaults: 66% against 34% with random).
    #[arg(long)]
    pub human_policy: Option<PolicyKind>,
    /// Labeled robot episodes recorded (for the controller).
    #[arg(long, default_value_t = 100)]
    pub robot_episodes: usize,
    /// Policy of the labeled robot recordings: expert, random, mixed or seek. Default: `seek`
    /// for `reach` (goal-seeking play: full speed straight at random points, so the labels
    /// hold passes through the door and pushes against the wall beside it; reach from pixels,
    /// 100 episodes: 68% against 46% with `mixed`), `mixed` for the tasks with objects.
    #[arg(long)]
    pub robot_policy: Option<PolicyKind>,
    /// Seed of the first labeled robot episode (episode i uses seed + i). Another seed
    /// records another draw of labels: on `reach` two draws of 100 goal-seeking episodes
    /// planned 82% and 92% on the true state.
    #[arg(long, default_value_t = 5000)]
    pub robot_seed: u64,
    /// Sim-encoder pretraining steps. Default 400, 1,000 with keypoint transport.
    #[arg(long)]
    pub encoder_steps: Option<usize>,
    /// Weight of the sim encoder's keypoint-transport term (`lam encoder pretrain
    /// --keypoint-transport-weight`; with it the encoder reads frame pairs a block apart,
    /// drops the motion term and pretrains 1,000 steps unless --encoder-steps says otherwise).
    /// Transport gives the object a keypoint (`push` object probe R^2 0.98 against 0.10 with
    /// the motion term), so it comes with the recipe measured with it: the keypoints alone as
    /// the embedding, the world models' tokens standardised by one shared scale, and the
    /// robot episodes' frames in stage 1 (see those options). Default 10 on `push` and
    /// `pusht`, 0 (the motion term) on `reach`, where nothing but the agent moves:
    /// docs/benchmarks.md, "`push` and `pusht` from pixels" and "`push` through the chain"
    /// (`lam demo --task push`: chain 66-80% against 38% with the motion term).
    #[arg(long)]
    pub keypoint_transport_weight: Option<f64>,
    /// Frame embedding of the sim encoder: `keypoints-context` appends to the keypoint
    /// positions (what moves) the 4 context features fitted on the human video (`lam encoder
    /// context`: the scene layout, e.g. where `reach`'s door is); `keypoints` leaves them out.
    /// Default `keypoints` with keypoint transport (the objects' keypoints carry the scene;
    /// `push` reference 48% against 32% with the context), `keypoints-context` otherwise.
    #[arg(long, value_enum)]
    pub pooling: Option<SuitePooling>,
    /// Whether the latent action models also train on the labeled robot episodes' frames
    /// (their actions unused; the data stage merges both shard folders into `shards/stage1`
    /// with `lam data merge`), so the world model has seen the robot's body push. Default on
    /// with keypoint transport (`push` chain 66% against 24% on the human video alone), off
    /// otherwise (`reach` from pixels: 64% against 80%, "Five pixel-side attempts").
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub robot_video: Option<bool>,
    /// Which frames the sim encoder pretrains on (no actions read either way): `robot`, the
    /// labeled robot episodes' frames alone, or `human-and-robot`, the human video's as well.
    /// `robot` reads every recorded frame of those episodes (one frame grid per simulator
    /// step of a block). Default `robot` with keypoint transport (the keypoints fit the
    /// robot's body and the object as the robot pushes it: `push` chain 92% against 76% on
    /// both, docs/benchmarks.md, "The encoder's frames"), `human-and-robot` otherwise.
    #[arg(long, value_enum)]
    pub encoder_frames: Option<EncoderFrames>,
    /// Use the oracle encoder (the simulator's true state) instead of pretraining the sim
    /// encoder: tells whether dynamics and planning work when vision does.
    #[arg(long)]
    pub oracle: bool,
    /// Simulator steps per world-model step (action blocks; the recordings run at 10 steps
    /// per second, so 5 embeds 2 frames per second). Must divide 10.
    #[arg(long, default_value_t = 5)]
    pub frameskip: usize,
    /// Frames of history the world model conditions on.
    #[arg(long, default_value_t = 3)]
    pub history: usize,
    /// cpu, or cuda[:N] / vulkan[:N] / wgpu[:N] in a build with that cargo feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// The sim encoder's frame embeddings the data stage offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SuitePooling {
    Keypoints,
    KeypointsContext,
}

impl SuitePooling {
    /// `lam embed --pooling`'s name.
    pub fn name(self) -> &'static str {
        match self {
            SuitePooling::Keypoints => "keypoints",
            SuitePooling::KeypointsContext => "keypoints-context",
        }
    }
}

/// Frames the sim encoder loads at most when it pretrains on the labeled robot episodes
/// alone (every recorded frame of the demo's 100 `push` episodes: 7,416).
const ROBOT_ENCODER_FRAMES: usize = 10_000;

/// The recordings whose frames pretrain the sim encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EncoderFrames {
    Robot,
    HumanAndRobot,
}

impl EncoderFrames {
    /// The flag's value, as reports and experiment settings name it.
    pub fn name(self) -> &'static str {
        match self {
            EncoderFrames::Robot => "robot",
            EncoderFrames::HumanAndRobot => "human-and-robot",
        }
    }
}

/// Where the data stage puts things under a report folder.
#[derive(Clone, Debug)]
pub struct DataLayout {
    pub human: PathBuf,
    pub robot: PathBuf,
    /// The encoder `lam embed` and `lam plan eval` take: a folder, or `oracle`.
    pub encoder: String,
    pub human_shards: PathBuf,
    pub robot_shards: PathBuf,
    /// What the latent action models train on: the human shards, or with `--robot-video` the
    /// human and robot shards merged.
    pub stage1_shards: PathBuf,
}

impl DataSpec {
    /// The unlabeled recordings' policy: the one given, else the task's default.
    pub fn human_policy(&self) -> PolicyKind {
        self.human_policy.unwrap_or(if self.task == "reach" {
            PolicyKind::Random
        } else {
            PolicyKind::Mixed
        })
    }

    /// The labeled recordings' policy: the one given, else the task's default.
    pub fn robot_policy(&self) -> PolicyKind {
        self.robot_policy.unwrap_or(if self.task == "reach" {
            PolicyKind::Seek
        } else {
            PolicyKind::Mixed
        })
    }

    /// The keypoint-transport weight: the one given, else the task's default (10 on the
    /// tasks with objects, 0 on `reach`); 0 for the oracle, which pretrains no encoder.
    pub fn transport_weight(&self) -> f64 {
        if self.oracle {
            return 0.0;
        }
        self.keypoint_transport_weight.unwrap_or(
            if matches!(self.task.as_str(), "push" | "pusht") {
                10.0
            } else {
                0.0
            },
        )
    }

    /// The sim encoder's pretraining steps: the ones given, else the default of its objective.
    pub fn encoder_steps(&self) -> usize {
        self.encoder_steps
            .unwrap_or(if self.transport_weight() > 0.0 {
                1000
            } else {
                400
            })
    }

    /// The sim encoder's frame embedding: the one given, else keypoints alone with transport.
    pub fn pooling(&self) -> SuitePooling {
        self.pooling.unwrap_or(if self.transport_weight() > 0.0 {
            SuitePooling::Keypoints
        } else {
            SuitePooling::KeypointsContext
        })
    }

    /// Whether stage 1 reads the robot episodes' frames too: as given, else with transport.
    pub fn robot_video(&self) -> bool {
        self.robot_video.unwrap_or(self.transport_weight() > 0.0)
    }

    /// The sim encoder's pretraining frames: as given, else the robot's alone with transport.
    pub fn encoder_frames(&self) -> EncoderFrames {
        self.encoder_frames
            .unwrap_or(if self.transport_weight() > 0.0 {
                EncoderFrames::Robot
            } else {
                EncoderFrames::HumanAndRobot
            })
    }

    /// How the world models standardise the embedding (`model.standardize_scale`): every
    /// channel by its own std, or, on keypoints pretrained with transport, all by one shared
    /// deviation (keypoints that sit still would otherwise be scaled up to the moving ones'
    /// spread: the `push` action-conditioned model on 1,000 labeled episodes plans 98% with the
    /// shared scale, 66% per channel; `reach` keeps per-channel scaling, 82% against 74% for
    /// its chain).
    pub fn token_scale(&self) -> TokenScale {
        if self.transport_weight() > 0.0 {
            TokenScale::Shared
        } else {
            TokenScale::Channel
        }
    }

    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(
            self.frameskip >= 1 && 10 % self.frameskip == 0,
            "--frameskip must divide the recordings' 10 steps per second (1, 2, 5 or 10), got {}",
            self.frameskip
        );
        anyhow::ensure!(self.history >= 1, "--history must be at least 1");
        anyhow::ensure!(
            self.robot_seed.saturating_add(self.robot_episodes as u64) <= lam_sim::EVAL_SEED_BASE,
            "--robot-seed {} with {} episodes reaches the evaluation protocol's seeds (from {}): \
             the labeled episodes would be the test episodes",
            self.robot_seed,
            self.robot_episodes,
            lam_sim::EVAL_SEED_BASE
        );
        Ok(())
    }

    /// The frame embedding in words, for reports.
    pub fn embedding(&self) -> &'static str {
        match (self.oracle, self.pooling()) {
            (true, _) => "the simulator's true state (oracle)",
            (false, SuitePooling::Keypoints) => "the pretrained sim encoder's keypoints",
            (false, SuitePooling::KeypointsContext) => {
                "the pretrained sim encoder's keypoints and context features"
            }
        }
    }

    pub fn layout(&self, out: &Path) -> DataLayout {
        DataLayout {
            human: out.join("data/human"),
            robot: out.join("data/robot"),
            encoder: if self.oracle {
                lam_suite::oracle::ORACLE.to_string()
            } else {
                out.join("encoder/encoder").display().to_string()
            },
            human_shards: out.join("shards/human"),
            robot_shards: out.join("shards/robot"),
            stage1_shards: if self.robot_video() {
                out.join("shards/stage1")
            } else {
                out.join("shards/human")
            },
        }
    }

    /// `lam encoder pretrain`'s command line for the sim encoder (not for the oracle).
    pub fn encoder_argv(&self, out: &Path) -> Vec<String> {
        let frames = self.encoder_frames();
        let l = self.layout(out);
        let (human, robot) = (l.human.display(), l.robot.display());
        let (task, dev) = (&self.task, &self.device);
        let fps = 10 / self.frameskip;
        let mut pretrain = args(&[&"encoder", &"pretrain"]);
        if frames == EncoderFrames::HumanAndRobot {
            pretrain.extend(args(&[&"--data", &human]));
        }
        pretrain.extend(args(&[
            &"--data",
            &robot,
            &"--out",
            &out.join("encoder").display(),
            &"--patch",
            &16,
            &"--dim",
            &32,
            &"--steps",
            &self.encoder_steps(),
            &"--probe-task",
            task,
            &"--probe-domain",
            &"robot",
            &"--device",
            dev,
            &"--quiet",
        ]));
        if frames == EncoderFrames::Robot {
            // Every recorded frame of the labeled episodes, in pairs one block apart:
            // `frameskip` frame grids shifted by one step (`push`: chain 92% against 84%
            // on one grid's 1,528 frames).
            pretrain.extend(args(&[
                &"--phases",
                &self.frameskip,
                &"--max-frames",
                &ROBOT_ENCODER_FRAMES,
            ]));
        }
        let transport = self.transport_weight();
        if transport > 0.0 {
            pretrain.extend(args(&[
                &"--fps",
                &fps,
                &"--keypoint-motion-weight",
                &0,
                &"--keypoint-transport-weight",
                &transport,
            ]));
        }
        pretrain
    }

    /// Records, pretrains the encoder and embeds (`total` numbers the steps in the log:
    /// they are the first five of that many).
    pub fn run(&self, out: &Path, steps: &mut Steps, total: usize) -> Result<DataLayout> {
        self.check()?;
        let l = self.layout(out);
        let (task, dev) = (&self.task, &self.device);
        // Frames per second of the recordings' 10 that are one block apart.
        let fps = 10 / self.frameskip;
        let (human, robot) = (l.human.display(), l.robot.display());
        steps.run(
            &format!("1/{total} recording unlabeled human video"),
            &args(&[
                &"sim",
                &"record",
                &"--task",
                task,
                &"--domain",
                &"human",
                &"--policy",
                &self.human_policy(),
                &"--nuisances",
                &"off",
                &"--episodes",
                &self.human_episodes,
                &"--out",
                &human,
                &"--quiet",
            ]),
        )?;
        steps.run(
            &format!("2/{total} recording a small labeled robot set"),
            &args(&[
                &"sim",
                &"record",
                &"--task",
                task,
                &"--domain",
                &"robot",
                &"--policy",
                &self.robot_policy(),
                &"--episodes",
                &self.robot_episodes,
                &"--seed",
                &self.robot_seed,
                &"--out",
                &robot,
                &"--quiet",
            ]),
        )?;
        if !self.oracle {
            let frames = self.encoder_frames();
            let pretrain = self.encoder_argv(out);
            steps.run(
                &format!(
                    "3/{total} pretraining the sim encoder on the {} frames",
                    match frames {
                        EncoderFrames::Robot => "labeled robot episodes'",
                        EncoderFrames::HumanAndRobot => "human and robot",
                    }
                ),
                &pretrain,
            )?;
            if self.pooling() == SuitePooling::KeypointsContext {
                steps.run(
                    &format!("3/{total} fitting the encoder's context features on the human video"),
                    &args(&[
                        &"encoder",
                        &"context",
                        &l.encoder,
                        &"--data",
                        &human,
                        &"--device",
                        dev,
                    ]),
                )?;
            }
        }
        for (src, dst, val) in [
            (&l.human, &l.human_shards, 0.05),
            (&l.robot, &l.robot_shards, 0.2),
        ] {
            steps.run(
                &format!("4-5/{total} embedding"),
                &args(&[
                    &"embed",
                    &"--data",
                    &src.display(),
                    &"--encoder",
                    &l.encoder,
                    &"--out",
                    &dst.display(),
                    &"--fps",
                    &fps,
                    &"--frames",
                    &(self.history + 1),
                    &"--stride",
                    &1,
                    &"--val-fraction",
                    &val,
                    &"--pooling",
                    &if self.oracle {
                        "mean"
                    } else {
                        self.pooling().name()
                    },
                    &"--device",
                    dev,
                ]),
            )?;
        }
        if self.robot_video() {
            steps.run(
                &format!(
                    "4-5/{total} merging the human and robot shards for stage 1 (the robot's \
                     actions unused)"
                ),
                &args(&[
                    &"data",
                    &"merge",
                    &"--data",
                    &l.human_shards.display(),
                    &l.robot_shards.display(),
                    &"--out",
                    &l.stage1_shards.display(),
                ]),
            )?;
        }
        Ok(l)
    }

    /// `lam train` of a latent action model on `shards` (of this data stage), its tokens
    /// standardised per channel or by one shared scale ([`DataSpec::token_scale`]), with extra
    /// `section.field=value` settings (the regulariser among them), on the stage's device.
    pub fn train_argv(
        &self,
        shards: &Path,
        run: &Path,
        steps: usize,
        sets: &[String],
    ) -> Vec<String> {
        let mut v = args(&[
            &"train",
            &"--data",
            &shards.display(),
            &"--run",
            &run.display(),
            &"--steps",
            &steps,
            &"--set",
            &"model.standardize=true",
            &"--set",
            &format!("model.standardize_scale={}", self.token_scale().name()),
            &"--device",
            &self.device,
        ]);
        for kv in sets {
            v.extend(["--set".to_string(), kv.clone()]);
        }
        v
    }

    /// `lam train` of an action-conditioned world model on labeled `shards` (its latent is the
    /// shards' action block), as [`DataSpec::train_argv`].
    pub fn action_conditioned_argv(
        &self,
        shards: &Path,
        run: &Path,
        steps: usize,
    ) -> Result<Vec<String>> {
        let block = lam_data::ShardIndex::load(shards)?
            .action_dim
            .with_context(|| format!("{}: no actions in the robot shards", shards.display()))?;
        Ok(self.train_argv(
            shards,
            run,
            steps,
            &[
                "model.conditioning=action".to_string(),
                format!("model.latent_dim={block}"),
            ],
        ))
    }
}

/// `lam eval` (leakage and transfer) of a run on `shards`, into `out`.
pub fn eval_argv(run: &Path, shards: &Path, out: &Path, device: &str) -> Vec<String> {
    args(&[
        &"eval",
        &"--run",
        &run.display(),
        &"--data",
        &shards.display(),
        &"--out",
        &out.display(),
        &"--device",
        &device,
    ])
}

/// `lam control fit` of a controller on labeled `shards`.
pub fn fit_argv(run: &Path, shards: &Path, out: &Path, device: &str) -> Vec<String> {
    args(&[
        &"control",
        &"fit",
        &"--run",
        &run.display(),
        &"--data",
        &shards.display(),
        &"--out",
        &out.display(),
        &"--device",
        &device,
    ])
}

/// The closed-loop planner: CEM over blocks of robot actions through the controller, MSE to
/// the goal embedding at the best step of the horizon.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    pub task: String,
    pub episodes: usize,
    pub samples: usize,
    pub iterations: usize,
    pub horizon: usize,
    pub hold_actions: bool,
    /// Correct rollouts by the blocks each episode has executed (`lam plan eval --memory`).
    pub memory: bool,
    /// Project planned latents onto what the world model's video shows from like frames
    /// (`lam plan eval --feasible`).
    pub feasible: Option<FeasibleSpec>,
    /// Also evaluate the scripted expert and the random policy.
    pub baselines: bool,
    pub device: String,
}

/// The feasibility projection of a [`PlanSpec`].
#[derive(Clone, Debug)]
pub struct FeasibleSpec {
    /// Shard folder of the world model's video.
    pub shards: PathBuf,
    /// Neighbours whose latents span each hull.
    pub neighbours: usize,
    /// Shards of the domain the agent acts in (`--feasible-domain`: channels unlike the
    /// video's there are left out of the frame distance).
    pub domain: Option<PathBuf>,
}

impl PlanSpec {
    pub fn argv(&self, run: &Path, encoder: &str, controller: &Path, out: &Path) -> Vec<String> {
        let mut v = args(&[
            &"plan",
            &"eval",
            &"--run",
            &run.display(),
            &"--encoder",
            &encoder,
            &"--controller",
            &controller.display(),
            &"--task",
            &self.task,
            &"--domain",
            &"robot",
            &"--episodes",
            &self.episodes,
            &"--planner",
            &"cem",
            &"--space",
            &"action",
            &"--cost",
            &"mse",
            &"--objective",
            &"min",
            &"--samples",
            &self.samples,
            &"--iterations",
            &self.iterations,
            &"--elites",
            &(self.samples / 10).max(2),
            &"--horizon",
            &self.horizon,
            &"--out",
            &out.display(),
            &"--device",
            &self.device,
        ]);
        if self.baselines {
            v.push("--baselines".into());
        }
        if self.hold_actions {
            v.push("--hold-actions".into());
        }
        if self.memory {
            v.push("--memory".into());
        }
        if let Some(f) = &self.feasible {
            v.extend(args(&[
                &"--feasible",
                &f.shards.display(),
                &"--feasible-neighbours",
                &f.neighbours,
            ]));
            if let Some(domain) = &f.domain {
                v.extend(args(&[&"--feasible-domain", &domain.display()]));
            }
        }
        v
    }
}
