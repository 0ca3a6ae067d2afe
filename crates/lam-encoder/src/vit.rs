//! The building blocks the ViT encoders share (DINOv2, V-JEPA 2 and the sim encoder):
//! activations named in Hugging Face configs and patch cutting (their attention is
//! [`lam_model::world_model::attention::self_attention`]).

use burn::prelude::*;
use burn::tensor::activation::{gelu_approximate, relu, silu};

/// Activation functions named in Hugging Face configs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// Exact GELU (erf), `gelu`.
    Gelu,
    /// Tanh-approximated GELU, `gelu_pytorch_tanh` / `gelu_new`.
    GeluTanh,
    Silu,
    Relu,
}

impl Activation {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "gelu" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "silu" | "swish" => Activation::Silu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Gelu => lam_model::fused::gelu(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Silu => silu(x),
            Activation::Relu => relu(x),
        }
    }
}

/// Cuts `[B, C, H, W]` images into non-overlapping `p x p` patches, `[B, (H/p) * (W/p), C*p*p]`,
/// patches row-major over the grid and each patch flattened channel, row, column (the order
/// of a convolution weight `[out, C, p, p]`). Rows and columns past a multiple of `p` are
/// dropped, as a strided convolution does.
pub fn patchify(x: Tensor<4>, p: usize) -> Tensor<3> {
    let [b, c, h, w] = x.dims();
    let (gh, gw) = (h / p, w / p);
    let x = if gh * p != h || gw * p != w {
        x.slice(s![.., .., 0..gh * p, 0..gw * p])
    } else {
        x
    };
    x.reshape([b, c, gh, p, gw, p])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([b, gh * gw, c * p * p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_order_matches_convolution_layout() {
        let device = Device::flex();
        // One image, 2 channels, 4x4, patch 2: value = c * 100 + y * 10 + x.
        let data: Vec<f32> = (0..2 * 16)
            .map(|i| ((i / 16) * 100 + (i % 16) / 4 * 10 + i % 4) as f32)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(data, [1, 2, 4, 4]), &device);
        let p = patchify(x, 2).into_data().try_into_vec::<f32>().unwrap();
        // Patch 1 (grid row 0, col 1): channel 0 rows 0-1 cols 2-3, then channel 1.
        assert_eq!(&p[8..16], &[2., 3., 12., 13., 102., 103., 112., 113.]);
    }
}
