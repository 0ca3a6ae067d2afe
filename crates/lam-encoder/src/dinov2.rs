//! DINOv2 image encoder, with or without register tokens, loaded from a Hugging Face folder
//! (`Dinov2Model` / `Dinov2WithRegistersModel`, weight names as in those checkpoints).
//!
//! Read top to bottom:
//!
//! 1. Patch embedding: the image `[B, 3, H, W]` is cut into `p x p` patches, each mapped to
//!    D channels (`embeddings.patch_embeddings.projection`, a strided convolution, applied here
//!    as a linear layer over flattened patches).
//! 2. A CLS token is put in front and the position embeddings added. They were learned for an
//!    `image_size / p` square grid; for another grid they are resized bicubically (plain
//!    bicubic for DINOv2, antialiased for DINOv2 with registers, as the checkpoints were
//!    trained), the CLS position kept as is. Register tokens (if any) are inserted after the
//!    CLS token, without position.
//! 3. `num_hidden_layers` pre-norm blocks: `x += ls1 * attn(norm1(x))`,
//!    `x += ls2 * mlp(norm2(x))`, with per-channel layer scales `ls`; the MLP is
//!    `fc2(act(fc1(x)))` or, with `use_swiglu_ffn`, `out(silu(gate(x)) * up(x))`.
//! 4. A final layer norm gives `last_hidden_state` `[B, 1 + R + N, D]`; the patch tokens are the
//!    last N, row-major over the patch grid.

use anyhow::{Result, bail, ensure};
use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::silu;

use lam_model::fused;
use lam_model::world_model::attention::self_attention;

use crate::hf::HfFolder;
use crate::resize::bicubic;
use crate::vit::{Activation, patchify};

/// The config.json keys this loader reads; defaults are those of transformers'
/// `Dinov2Config` (and `Dinov2WithRegistersConfig` where noted).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Dinov2Config {
    /// `hidden_size` (D). Default 768.
    pub hidden_size: usize,
    /// `num_hidden_layers`. Default 12.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`. Default 12.
    pub num_attention_heads: usize,
    /// `mlp_ratio`: MLP width over D. Default 4.
    pub mlp_ratio: f64,
    /// `image_size`: side the position embeddings were learned for. Default 224.
    pub image_size: usize,
    /// `patch_size` (p). Default 14 (16 with registers).
    pub patch_size: usize,
    /// `layer_norm_eps`. Default 1e-6.
    pub layer_norm_eps: f64,
    /// `qkv_bias`. Default true.
    pub qkv_bias: bool,
    /// `use_swiglu_ffn`. Default false.
    pub use_swiglu_ffn: bool,
    /// `hidden_act` of the plain MLP. Default gelu (exact).
    pub hidden_act: Activation,
    /// `num_register_tokens`. 0 for `Dinov2Model`; default 4 with registers.
    pub num_register_tokens: usize,
    /// Whether resized position embeddings are antialiased: false for `Dinov2Model`, true for
    /// `Dinov2WithRegistersModel` (not a config key: it follows the architecture).
    pub antialias_positions: bool,
}

impl Dinov2Config {
    /// Reads the config of `folder`; `registers` selects the with-registers defaults.
    pub fn from_folder(folder: &HfFolder, registers: bool) -> Result<Self> {
        let cfg = Dinov2Config {
            hidden_size: folder.usize_or("hidden_size", 768)?,
            num_hidden_layers: folder.usize_or("num_hidden_layers", 12)?,
            num_attention_heads: folder.usize_or("num_attention_heads", 12)?,
            mlp_ratio: folder.f64_or("mlp_ratio", 4.0)?,
            image_size: folder.square_or("image_size", 224)?,
            patch_size: folder.square_or("patch_size", if registers { 16 } else { 14 })?,
            layer_norm_eps: folder.f64_or("layer_norm_eps", 1e-6)?,
            qkv_bias: folder.bool_or("qkv_bias", true)?,
            use_swiglu_ffn: folder.bool_or("use_swiglu_ffn", false)?,
            hidden_act: folder.activation_or("hidden_act", Activation::Gelu)?,
            num_register_tokens: if registers {
                folder.usize_or("num_register_tokens", 4)?
            } else {
                0
            },
            antialias_positions: registers,
        };
        ensure!(
            cfg.hidden_size % cfg.num_attention_heads == 0,
            "{}: hidden_size {} is not a multiple of num_attention_heads {}",
            folder.config_path().display(),
            cfg.hidden_size,
            cfg.num_attention_heads
        );
        ensure!(
            cfg.patch_size > 0 && cfg.image_size >= cfg.patch_size,
            "{}: image_size {} and patch_size {} give no patch",
            folder.config_path().display(),
            cfg.image_size,
            cfg.patch_size
        );
        Ok(cfg)
    }

    /// Width of the MLP: `D * mlp_ratio`; for SwiGLU two thirds of that rounded up to a
    /// multiple of 8.
    pub fn mlp_hidden(&self) -> usize {
        let h = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (h * 2 / 3).div_ceil(8) * 8
        } else {
            h
        }
    }

    /// Side of the learned position grid.
    pub fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Module, Debug)]
pub struct Dinov2 {
    pub patch_embed: Linear,
    /// `[1, D]`.
    pub cls_token: Param<Tensor<2>>,
    /// `[R, D]` (R = 0 without registers: then absent).
    pub register_tokens: Option<Param<Tensor<2>>>,
    /// `[1 + G*G, D]` for the learned G x G grid.
    pub position_embeddings: Param<Tensor<2>>,
    pub layers: Vec<Dinov2Layer>,
    pub layernorm: LayerNorm,
    pub heads: usize,
    pub patch_size: usize,
    pub position_grid: usize,
    pub antialias_positions: bool,
    #[module(skip)]
    pub hidden_act: Activation,
}

#[derive(Module, Debug)]
pub struct Dinov2Layer {
    pub norm1: LayerNorm,
    /// `attention.attention.{query,key,value}` side by side (`D -> 3D`).
    pub qkv: Linear,
    pub out: Linear,
    /// `[D]`.
    pub layer_scale1: Param<Tensor<1>>,
    pub norm2: LayerNorm,
    /// Plain MLP: fc1, fc2. SwiGLU: gate, up, down (fc1 is then the gate, fc2 the down
    /// projection, `up` is set).
    pub fc1: Linear,
    pub fc2: Linear,
    pub up: Option<Linear>,
    /// `[D]`.
    pub layer_scale2: Param<Tensor<1>>,
}

impl Dinov2 {
    /// Loads the model of `folder` (architecture `Dinov2Model` or `Dinov2WithRegistersModel`,
    /// possibly nested under `dinov2.` as in task checkpoints).
    pub fn load(folder: &mut HfFolder, device: &Device) -> Result<(Self, Dinov2Config)> {
        let arch = folder.architecture()?;
        let registers = arch.contains("WithRegisters") || arch == "dinov2_with_registers";
        folder.select_prefix(&["", "dinov2.", "model."], "embeddings.cls_token")?;
        let cfg = Dinov2Config::from_folder(folder, registers)?;
        let d = cfg.hidden_size;
        let p = cfg.patch_size;
        let g = cfg.position_grid();
        let register_tokens = if cfg.num_register_tokens > 0 {
            let t = folder.tensor(
                "embeddings.register_tokens",
                [1, cfg.num_register_tokens, d],
                device,
            )?;
            Some(Param::from_tensor(t.reshape([cfg.num_register_tokens, d])))
        } else {
            None
        };
        let pos_shape = folder.shape("embeddings.position_embeddings")?;
        if pos_shape != [1, 1 + g * g, d] {
            bail!(
                "{}: weight shape mismatch for `embeddings.position_embeddings`: file has {:?}, \
                 image_size {} / patch_size {} implies [1, {}, {d}]",
                folder.dir.display(),
                pos_shape,
                cfg.image_size,
                p,
                1 + g * g
            );
        }
        let pos = folder.tensor("embeddings.position_embeddings", [1, 1 + g * g, d], device)?;
        let h = cfg.mlp_hidden();
        let eps = cfg.layer_norm_eps;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("encoder.layer.{i}");
            let (fc1, fc2, up) = if cfg.use_swiglu_ffn {
                swiglu(folder, &l, d, h, device)?
            } else {
                (
                    folder.linear(&format!("{l}.mlp.fc1"), d, h, true, device)?,
                    folder.linear(&format!("{l}.mlp.fc2"), h, d, true, device)?,
                    None,
                )
            };
            let att = format!("{l}.attention.attention");
            layers.push(Dinov2Layer {
                norm1: folder.layer_norm(&format!("{l}.norm1"), d, eps, device)?,
                qkv: folder.packed_qkv(&att, d, cfg.qkv_bias, None, device)?,
                out: folder.linear(&format!("{l}.attention.output.dense"), d, d, true, device)?,
                layer_scale1: Param::from_tensor(folder.tensor(
                    &format!("{l}.layer_scale1.lambda1"),
                    [d],
                    device,
                )?),
                norm2: folder.layer_norm(&format!("{l}.norm2"), d, eps, device)?,
                fc1,
                fc2,
                up,
                layer_scale2: Param::from_tensor(folder.tensor(
                    &format!("{l}.layer_scale2.lambda1"),
                    [d],
                    device,
                )?),
            });
        }
        let model = Dinov2 {
            patch_embed: folder.patch_linear(
                "embeddings.patch_embeddings.projection",
                &[3, p, p],
                d,
                device,
            )?,
            cls_token: Param::from_tensor(
                folder
                    .tensor("embeddings.cls_token", [1, 1, d], device)?
                    .reshape([1, d]),
            ),
            register_tokens,
            position_embeddings: Param::from_tensor(pos.reshape([1 + g * g, d])),
            layers,
            layernorm: folder.layer_norm("layernorm", d, eps, device)?,
            heads: cfg.num_attention_heads,
            patch_size: p,
            position_grid: g,
            antialias_positions: cfg.antialias_positions,
            hidden_act: cfg.hidden_act,
        };
        Ok((model, cfg))
    }

    /// Number of leading non-patch tokens (CLS + registers).
    pub fn prefix_tokens(&self) -> usize {
        1 + self
            .register_tokens
            .as_ref()
            .map_or(0, |r| r.val().dims()[0])
    }

    /// Patch grid `[rows, cols]` for an input of `height x width` pixels.
    pub fn grid(&self, height: usize, width: usize) -> [usize; 2] {
        [height / self.patch_size, width / self.patch_size]
    }

    /// Position embeddings of the patches for a `rows x cols` grid, `[rows * cols, D]`.
    fn patch_positions(&self, rows: usize, cols: usize, pixels_square: bool) -> Tensor<2> {
        let g = self.position_grid;
        let pos = self.position_embeddings.val();
        let [n, d] = pos.dims();
        let patch = pos.slice(s![1..n, ..]);
        if rows * cols == g * g && pixels_square {
            return patch;
        }
        let device = patch.device();
        let host = patch
            .into_data()
            .try_into_vec::<f32>()
            .expect("f32 positions");
        let resized = bicubic(&host, g, g, d, rows, cols, self.antialias_positions);
        Tensor::from_data(TensorData::new(resized, [rows * cols, d]), &device)
    }

    /// `last_hidden_state` for images `[B, 3, H, W]`: `[B, 1 + R + N, D]`.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, _, h, w] = pixels.dims();
        let [rows, cols] = self.grid(h, w);
        let x = fused::linear(&self.patch_embed, patchify(pixels, self.patch_size));
        let d = x.dims()[2];
        let pos = self.position_embeddings.val();
        let cls = (self.cls_token.val() + pos.slice(s![0..1, ..]))
            .unsqueeze::<3>()
            .expand([b, 1, d]);
        let x = x + self.patch_positions(rows, cols, h == w).unsqueeze::<3>();
        let mut x = match &self.register_tokens {
            Some(r) => {
                let r = r.val();
                let nr = r.dims()[0];
                Tensor::cat(vec![cls, r.unsqueeze::<3>().expand([b, nr, d]), x], 1)
            }
            None => Tensor::cat(vec![cls, x], 1),
        };
        for layer in &self.layers {
            x = layer.forward(x, self.heads, self.hidden_act);
        }
        self.layernorm.forward(x)
    }

    /// Patch tokens `[B, N, D]` (CLS and registers dropped), row-major over the patch grid.
    pub fn patch_tokens(&self, pixels: Tensor<4>) -> Tensor<3> {
        let out = self.forward(pixels);
        let [_, l, _] = out.dims();
        out.slice(s![.., self.prefix_tokens()..l, ..])
    }
}

impl Dinov2Layer {
    fn forward(&self, x: Tensor<3>, heads: usize, act: Activation) -> Tensor<3> {
        let qkv = fused::linear(&self.qkv, self.norm1.forward(x.clone()));
        let a = fused::linear(&self.out, self_attention(qkv, None, heads));
        let x = x + a * self.layer_scale1.val().unsqueeze::<3>();
        let h = self.norm2.forward(x.clone());
        let m = match &self.up {
            Some(up) => fused::linear(
                &self.fc2,
                silu(fused::linear(&self.fc1, h.clone())) * fused::linear(up, h),
            ),
            None => fused::linear(&self.fc2, act.apply(fused::linear(&self.fc1, h))),
        };
        x + m * self.layer_scale2.val().unsqueeze::<3>()
    }
}

/// SwiGLU weights of layer `l`: either `mlp.gate_proj` / `mlp.up_proj` / `mlp.down_proj`, or
/// the fused `mlp.weights_in` (gate rows first, then up rows) and `mlp.weights_out`.
fn swiglu(
    folder: &HfFolder,
    l: &str,
    d: usize,
    h: usize,
    device: &Device,
) -> Result<(Linear, Linear, Option<Linear>)> {
    if folder.has(&format!("{l}.mlp.gate_proj.weight")) {
        return Ok((
            folder.linear(&format!("{l}.mlp.gate_proj"), d, h, true, device)?,
            folder.linear(&format!("{l}.mlp.down_proj"), h, d, true, device)?,
            Some(folder.linear(&format!("{l}.mlp.up_proj"), d, h, true, device)?),
        ));
    }
    let fused = folder.linear(&format!("{l}.mlp.weights_in"), d, 2 * h, true, device)?;
    let w = fused.weight.val();
    let b = fused.bias.expect("bias loaded").val();
    let gate = Linear {
        weight: Param::from_tensor(w.clone().slice(s![.., 0..h])),
        bias: Some(Param::from_tensor(b.clone().slice(s![0..h]))),
    };
    let up = Linear {
        weight: Param::from_tensor(w.slice(s![.., h..2 * h])),
        bias: Some(Param::from_tensor(b.slice(s![h..2 * h]))),
    };
    let down = folder.linear(&format!("{l}.mlp.weights_out"), h, d, true, device)?;
    Ok((gate, down, Some(up)))
}
