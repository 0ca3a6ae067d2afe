//! Loss terms, optimisers and schedule against PyTorch reference values
//! (fixtures made by tools/reference/make_fixtures.py).

use burn::lr_scheduler::module_lr_scheduler::ModuleLrSchedulerConfig;
use burn::optim::{AdamWConfig, Optimizer};
use burn::prelude::*;
use lam_model::config::LamConfig;
use lam_model::optim::{muon, warmup_cosine, warmup_cosine_at};
use lam_model::regularizer::{energy, kl_standard_normal, vcm, vector_quantize};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn tensor<const D: usize>(v: &Value, device: &Device) -> Tensor<D> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn values(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn flat(v: &Value) -> Vec<f32> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: max abs error {worst} > {tol}\nactual   {actual:?}\nexpected {expected:?}"
    );
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

fn num(v: &Value, key: &str) -> f32 {
    v[key].as_f64().unwrap() as f32
}

#[test]
fn sparse_vcm_and_energy_match_pytorch() {
    let f = fixture("sparse");
    let dev = device();
    let z = tensor::<2>(&f["z"], &dev).require_grad();
    let v = vcm(z.clone());
    let e = energy(
        z.clone(),
        f["l1"].as_f64().unwrap(),
        f["l2"].as_f64().unwrap(),
    );
    assert_close(
        &[scalar(v.variance.clone())],
        &[num(&f, "variance")],
        1e-5,
        "variance",
    );
    assert_close(
        &[scalar(v.covariance.clone())],
        &[num(&f, "covariance")],
        1e-5,
        "covariance",
    );
    assert_close(&[scalar(v.mean.clone())], &[num(&f, "mean")], 1e-6, "mean");
    assert_close(&[scalar(e.clone())], &[num(&f, "energy")], 1e-5, "energy");
    let total = v.variance + v.covariance + v.mean + e;
    let grads = total.backward();
    let g = z.grad(&grads).unwrap();
    assert_close(
        &values(g),
        &flat(&f["grad_total"]),
        1e-5,
        "gradient of the sparse loss",
    );
}

#[test]
fn kl_matches_pytorch() {
    let f = fixture("kl");
    let dev = device();
    let kl = kl_standard_normal(tensor(&f["mu"], &dev), tensor(&f["logvar"], &dev));
    assert_close(&[scalar(kl)], &[num(&f, "kl")], 1e-5, "kl");
}

#[test]
fn vq_losses_and_straight_through_gradient_match_pytorch() {
    let f = fixture("vq");
    let dev = device();
    let z_e = tensor::<2>(&f["z_e"], &dev).require_grad();
    let book = tensor::<2>(&f["codebook"], &dev).require_grad();
    let w = tensor::<2>(&f["w"], &dev);
    let q = vector_quantize(z_e.clone(), book.clone());
    let expected_idx: Vec<usize> = f["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(q.indices, expected_idx);
    assert_close(&values(q.z.clone()), &flat(&f["z_q"]), 1e-6, "quantised z");
    assert_close(
        &[scalar(q.codebook_loss.clone())],
        &[num(&f, "codebook_loss")],
        1e-6,
        "codebook loss",
    );
    assert_close(
        &[scalar(q.commitment_loss.clone())],
        &[num(&f, "commitment_loss")],
        1e-6,
        "commitment loss",
    );
    let beta = f["commitment"].as_f64().unwrap();
    let loss = (q.z * w).sum() + q.codebook_loss + q.commitment_loss.mul_scalar(beta);
    let grads = loss.backward();
    assert_close(
        &values(z_e.grad(&grads).unwrap()),
        &flat(&f["grad_z_e"]),
        1e-5,
        "grad z_e (straight-through)",
    );
    assert_close(
        &values(book.grad(&grads).unwrap()),
        &flat(&f["grad_codebook"]),
        1e-5,
        "grad codebook",
    );
}

#[test]
fn muon_update_matches_torch_optim_muon() {
    let f = fixture("muon");
    let dev = Device::flex();
    for case in f["cases"].as_array().unwrap() {
        let mut cfg = LamConfig::preset("tiny").unwrap().optim;
        cfg.muon_momentum = case["momentum"].as_f64().unwrap();
        cfg.muon_weight_decay = case["weight_decay"].as_f64().unwrap();
        let opt = muon(&cfg);
        let lr = case["lr"].as_f64().unwrap();
        // burn's layout is the transpose of PyTorch's.
        let mut w = tensor::<2>(&case["w0"], &dev).transpose();
        let mut state = None;
        for (k, g) in case["grads"].as_array().unwrap().iter().enumerate() {
            let (next, s) = opt.step(lr, w, tensor::<2>(g, &dev).transpose(), state);
            w = next;
            state = s;
            let got = values(w.clone().transpose());
            assert_close(
                &got,
                &flat(&case["reference_f32"][k]),
                2e-6,
                &format!("Muon step {k} vs f32 reference"),
            );
            // torch.optim.Muon runs Newton-Schulz in bfloat16: same update to bf16 precision.
            assert_close(
                &got,
                &flat(&case["torch_bf16"][k]),
                2e-3,
                &format!("Muon step {k} vs torch.optim.Muon"),
            );
        }
    }
}

#[test]
fn adamw_update_matches_torch() {
    let f = fixture("adamw");
    let dev = Device::flex();
    let opt = AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(f["eps"].as_f64().unwrap() as f32)
        .with_weight_decay(f["weight_decay"].as_f64().unwrap() as f32)
        .build();
    let lr = f["lr"].as_f64().unwrap();
    let mut w = tensor::<2>(&f["w0"], &dev);
    let mut state = None;
    for (k, g) in f["grads"].as_array().unwrap().iter().enumerate() {
        let (next, s) = opt.step(lr, w, tensor::<2>(g, &dev), state);
        w = next;
        state = s;
        assert_close(
            &values(w.clone()),
            &flat(&f["steps"][k]),
            1e-6,
            &format!("AdamW step {k}"),
        );
    }
}

#[test]
fn warmup_cosine_matches_torch_sequential_lr() {
    let f = fixture("schedule");
    for case in f["cases"].as_array().unwrap() {
        let mut cfg = LamConfig::preset("tiny").unwrap().optim;
        cfg.warmup_fraction = case["warmup_fraction"].as_f64().unwrap();
        cfg.min_lr_fraction = case["min_lr_fraction"].as_f64().unwrap();
        let total = case["total"].as_u64().unwrap() as usize;
        let peak = case["peak"].as_f64().unwrap();
        let mut sched = ModuleLrSchedulerConfig::new(warmup_cosine(peak, &cfg, total).unwrap())
            .init()
            .unwrap();
        for (s, want) in case["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = sched.step().base();
            assert!(
                (got - want).abs() < 1e-12,
                "step {s}: burn schedule {got} vs torch {want}"
            );
            let closed = warmup_cosine_at(peak, &cfg, total, s);
            assert!(
                (closed - want).abs() < 1e-12,
                "step {s}: closed form {closed} vs torch {want}"
            );
        }
    }
}
