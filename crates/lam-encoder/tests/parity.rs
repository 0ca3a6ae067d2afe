//! Parity with Hugging Face `transformers` on small random-weight models: the folders and
//! reference outputs under tests/fixtures/ come from tools/reference/make_encoder_fixtures.py.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use lam_encoder::dinov2::Dinov2;
use lam_encoder::hf::HfFolder;
use lam_encoder::vjepa2::{FrameMode, VJepa2};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reference tensors of one fixture: name -> (shape, values).
fn reference(name: &str) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixtures().join(format!("{name}.reference.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, (v.shape().to_vec(), vals))
        })
        .collect()
}

fn tensor<const D: usize>(r: &(Vec<usize>, Vec<f32>), device: &Device) -> Tensor<D> {
    let shape: [usize; D] = r.0.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(r.1.clone(), shape), device)
}

fn max_abs_err<const D: usize>(got: Tensor<D>, want: &(Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(got.dims().to_vec(), want.0, "shape");
    let got = got.into_data().try_into_vec::<f32>().unwrap();
    got.iter()
        .zip(&want.1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check_dinov2(name: &str, sizes: &[usize]) {
    let device = Device::flex();
    let mut folder = HfFolder::open(&fixtures().join(name)).unwrap();
    let (model, _) = Dinov2::load(&mut folder, &device).unwrap();
    let refs = reference(name);
    for size in sizes {
        let x = tensor::<4>(&refs[&format!("pixels_{size}")], &device);
        let err = max_abs_err(model.forward(x), &refs[&format!("hidden_{size}")]);
        println!("{name} {size}px: max abs error {err:.2e}");
        assert!(err <= 1e-4, "{name} at {size}px: max abs error {err}");
    }
}

#[test]
fn dinov2_matches_transformers() {
    // 32 px: the learned grid; 48 px: positions upsampled; 24 px: downsampled.
    check_dinov2("dinov2", &[32, 48, 24]);
}

#[test]
fn dinov2_with_registers_matches_transformers() {
    // SwiGLU MLP, 4 registers; antialiased position resizing up (64) and down (32).
    check_dinov2("dinov2_registers", &[48, 64, 32]);
}

#[test]
fn vjepa2_matches_transformers() {
    let device = Device::flex();
    let mut folder = HfFolder::open(&fixtures().join("vjepa2")).unwrap();
    let (model, _) = VJepa2::load(&mut folder, &device).unwrap();
    let refs = reference("vjepa2");
    let video = tensor::<5>(&refs["video"], &device);
    let err = max_abs_err(model.forward(video.clone()), &refs["hidden_video"]);
    println!("vjepa2 video: max abs error {err:.2e}");
    assert!(err <= 1e-4, "video: {err}");
    let frame = tensor::<5>(&refs["frame"], &device);
    let err = max_abs_err(model.forward(frame.clone()), &refs["hidden_frame"]);
    println!("vjepa2 single frame: max abs error {err:.2e}");
    assert!(err <= 1e-4, "frame: {err}");

    // Per-frame mode: frame t of a clip gets the tokens of that frame encoded alone.
    let per_frame = model.frame_tokens(frame.clone().repeat_dim(1, 3), FrameMode::PerFrame);
    assert_eq!(per_frame.dims(), [1, 3, 16, 40]);
    let last = per_frame.slice(s![.., 2..3, .., ..]).reshape([1, 16, 40]);
    let err = max_abs_err(last, &refs["hidden_frame"]);
    assert!(err <= 1e-4, "per-frame: {err}");
    // Tubelet mode: frames 0 and 1 share tubelet 0's tokens, 2 and 3 tubelet 1's.
    let tub = model.frame_tokens(video, FrameMode::Tubelet);
    assert_eq!(tub.dims(), [1, 4, 16, 40]);
    let want = &refs["hidden_video"];
    let second = (vec![1, 16, 40], want.1[16 * 40..].to_vec());
    let err = max_abs_err(
        tub.slice(s![.., 3..4, .., ..]).reshape([1, 16, 40]),
        &second,
    );
    assert!(err <= 1e-4, "tubelet: {err}");
}
