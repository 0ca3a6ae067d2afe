//! Times the parts of one stage-1 training step (forward, backward, optimiser) on random
//! clips of the tiny preset: `cargo run --release -p lam-model --example step_profile`.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use lam_model::LamConfig;
use lam_model::lam::StepNoise;
use lam_model::train::{init_model, step_noise};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = LamConfig::preset("tiny")
        .unwrap()
        .with_overrides(&args)
        .unwrap();
    let dev = Device::flex().autodiff();
    let m = &cfg.model;
    let b = cfg.train.batch_size;
    let mut model = init_model(&cfg, &dev);
    let clips = Tensor::<4>::random(
        [b, m.frames, m.tokens(), m.embed_dim],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let built = lam_model::optim::build(&model, &cfg.optim, 100).unwrap();
    let (mut opt, mut sched) = (built.optimizer, built.scheduler);
    let (mut tf, mut tb, mut to, mut tw) = (0.0, 0.0, 0.0, 0.0);
    let n = 10;
    for s in 0..n + 2 {
        let noise = step_noise(&cfg, s, b * (m.frames - 1));
        let t0 = Instant::now();
        let out = model.forward_loss(&cfg, clips.clone(), &noise);
        let _ = out.terms.total.clone().into_scalar::<f32>();
        let t1 = Instant::now();
        let grads = out.terms.total.backward();
        let t2 = Instant::now();
        let grads = GradientsParams::from_grads(grads, &model);
        model = opt.step(sched.step(), model, grads);
        let _ = model.idm.fc1.weight.val().into_data();
        let t3 = Instant::now();
        // Forward of the world model alone, no grad.
        let valid = model.valid();
        let c = clips.clone().inner();
        let tw0 = Instant::now();
        let _ = valid
            .forward_loss(&cfg, c, &StepNoise::default())
            .terms
            .total
            .into_scalar::<f32>();
        let tw1 = Instant::now();
        if s >= 2 {
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
            to += (t3 - t2).as_secs_f64();
            tw += (tw1 - tw0).as_secs_f64();
        }
    }
    let ms = |x: f64| 1000.0 * x / n as f64;
    println!(
        "forward {:.1} ms, backward {:.1} ms, optimiser {:.1} ms, inference forward {:.1} ms",
        ms(tf),
        ms(tb),
        ms(to),
        ms(tw)
    );
}
