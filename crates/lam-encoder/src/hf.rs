//! Hugging Face model folders: `config.json` plus one or more `*.safetensors` files, and
//! linear and layer-norm layers filled from their named tensors (the layers themselves are in
//! [`crate::vit`]).
//!
//! Weights are memory-mapped; F32, F16 and BF16 tensors are read (converted to f32). Every
//! error names the folder or file and the tensor or config key concerned.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::vit::Activation;

/// An opened Hugging Face folder.
pub struct HfFolder {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: Value,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name -> index into `files`.
    names: BTreeMap<String, usize>,
    /// Prefix added to every name asked for (e.g. `dinov2.` for a classification checkpoint).
    prefix: String,
}

impl HfFolder {
    /// Opens `dir`: reads `config.json` and indexes the tensors of every `*.safetensors` file.
    pub fn open(dir: &Path) -> Result<Self> {
        ensure!(
            dir.is_dir(),
            "encoder folder {} does not exist or is not a folder",
            dir.display()
        );
        let config_path = dir.join("config.json");
        let text = fs::read_to_string(&config_path).with_context(|| {
            format!(
                "missing {}: a Hugging Face model folder needs config.json next to its *.safetensors",
                config_path.display()
            )
        })?;
        let config: Value = serde_json::from_str(&text)
            .with_context(|| format!("malformed JSON in {}", config_path.display()))?;
        let mut paths: Vec<PathBuf> = fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        ensure!(
            !paths.is_empty(),
            "no *.safetensors weights in {} (PyTorch .bin checkpoints are not read; convert them \
             with `safetensors` first)",
            dir.display()
        );
        let mut files = Vec::new();
        let mut names = BTreeMap::new();
        for path in paths {
            let file =
                fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: the weights are read-only inputs; nothing in lam writes to them.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display())
            })?;
            for name in st.names() {
                names.insert(name.to_string(), files.len());
            }
            files.push((path, map));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            files,
            names,
            prefix: String::new(),
        })
    }

    /// The architecture named by `config.json`: `architectures[0]`, else `model_type`.
    pub fn architecture(&self) -> Result<String> {
        if let Some(a) = self.config["architectures"].get(0).and_then(Value::as_str) {
            return Ok(a.to_string());
        }
        if let Some(m) = self.config["model_type"].as_str() {
            return Ok(m.to_string());
        }
        bail!(
            "{}: config.json names no architecture (neither `architectures` nor `model_type`)",
            self.config_path().display()
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Picks the first of `prefixes` under which `probe` exists (checkpoints of task models nest
    /// the backbone, e.g. `dinov2.embeddings...`). Errors list what was tried.
    pub fn select_prefix(&mut self, prefixes: &[&str], probe: &str) -> Result<()> {
        for p in prefixes {
            if self.names.contains_key(&format!("{p}{probe}")) {
                self.prefix = p.to_string();
                return Ok(());
            }
        }
        bail!(
            "{}: no tensor `{probe}` (tried prefixes {:?}); is this the right architecture? \
             First tensors in the folder: {:?}",
            self.dir.display(),
            prefixes,
            self.names.keys().take(5).collect::<Vec<_>>()
        )
    }

    /// Whether tensor `name` (under the selected prefix) exists.
    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(&format!("{}{name}", self.prefix))
    }

    /// Shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let (file, st) = self.lookup(name)?;
        let full = format!("{}{name}", self.prefix);
        let view = st
            .tensor(&full)
            .map_err(|e| anyhow::anyhow!("{}: tensor `{full}`: {e}", file.display()))?;
        Ok(view.shape().to_vec())
    }

    fn lookup(&self, name: &str) -> Result<(&Path, SafeTensors<'_>)> {
        let full = format!("{}{name}", self.prefix);
        let &i = self.names.get(&full).with_context(|| {
            format!(
                "{}: missing tensor `{full}` in the *.safetensors files",
                self.dir.display()
            )
        })?;
        let (path, map) = &self.files[i];
        let st = SafeTensors::deserialize(map)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok((path, st))
    }

    /// Values of tensor `name` as f32, after checking its shape is `want`.
    pub fn values(&self, name: &str, want: &[usize]) -> Result<Vec<f32>> {
        let (file, st) = self.lookup(name)?;
        let full = format!("{}{name}", self.prefix);
        let view = st
            .tensor(&full)
            .map_err(|e| anyhow::anyhow!("{}: tensor `{full}`: {e}", file.display()))?;
        ensure!(
            view.shape() == want,
            "{}: weight shape mismatch for `{full}`: file has {:?}, the config implies {:?}",
            file.display(),
            view.shape(),
            want
        );
        let bytes = view.data();
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            other => bail!(
                "{}: tensor `{full}` has dtype {other:?}; only F32, F16 and BF16 weights are read",
                file.display()
            ),
        };
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: tensor `{full}` holds NaN or Inf (at flat index {i}); the file is corrupt",
                file.display()
            );
        }
        Ok(out)
    }

    /// Tensor `name` with shape `want` on `device`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        want: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let v = self.values(name, &want)?;
        Ok(Tensor::from_data(TensorData::new(v, want), device))
    }

    /// A linear layer from `{name}.weight` (PyTorch layout `[out, in]`, transposed here to
    /// burn's `[in, out]`) and, when `bias`, `{name}.bias`.
    pub fn linear(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
        device: &Device,
    ) -> Result<Linear> {
        let w = self.values(&format!("{name}.weight"), &[d_out, d_in])?;
        let b = if bias {
            Some(self.values(&format!("{name}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(linear_layer(w, d_in, b, device))
    }

    /// The attention's three projections `{prefix}.query`, `{prefix}.key` and `{prefix}.value`
    /// (each `[d, d]`, PyTorch layout) as one linear layer `d -> 3d`: queries, keys and values
    /// side by side, heads inside each (what [`self_attention`] reads). With `qk_order`, output
    /// channel `j` of the queries and of the keys is the file's channel `qk_order[j]` (the same
    /// permutation of both leaves every query-key product unchanged).
    ///
    /// [`self_attention`]: lam_model::world_model::attention::self_attention
    pub fn packed_qkv(
        &self,
        prefix: &str,
        d: usize,
        bias: bool,
        qk_order: Option<&[usize]>,
        device: &Device,
    ) -> Result<Linear> {
        if let Some(o) = qk_order {
            ensure!(
                o.len() == d,
                "packed_qkv: an order of {} channels for {d}",
                o.len()
            );
        }
        let mut weight = Vec::with_capacity(3 * d * d);
        let mut biases = Vec::with_capacity(3 * d);
        for part in ["query", "key", "value"] {
            let w = self.values(&format!("{prefix}.{part}.weight"), &[d, d])?;
            let b = if bias {
                self.values(&format!("{prefix}.{part}.bias"), &[d])?
            } else {
                vec![0.0; d]
            };
            let order: Vec<usize> = match qk_order {
                Some(o) if part != "value" => o.to_vec(),
                _ => (0..d).collect(),
            };
            for &row in &order {
                weight.extend_from_slice(&w[row * d..(row + 1) * d]);
                biases.push(b[row]);
            }
        }
        Ok(linear_layer(weight, d, bias.then_some(biases), device))
    }

    /// A layer norm from `{name}.weight` and `{name}.bias`.
    pub fn layer_norm(&self, name: &str, d: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
        let mut ln = LayerNormConfig::new(d).with_epsilon(eps).init(device);
        ln.gamma = Param::from_tensor(self.tensor(&format!("{name}.weight"), [d], device)?);
        ln.beta = Some(Param::from_tensor(self.tensor(
            &format!("{name}.bias"),
            [d],
            device,
        )?));
        Ok(ln)
    }

    /// A patch-embedding convolution with kernel = stride, as a linear layer over flattened
    /// patches: the weight `[out, c, k...]` becomes `[c * prod(k), out]`, so a patch flattened
    /// channel-major (then the kernel axes in order) maps exactly as the convolution does.
    pub fn patch_linear(
        &self,
        name: &str,
        kernel_shape: &[usize],
        d_out: usize,
        device: &Device,
    ) -> Result<Linear> {
        let mut want = vec![d_out];
        want.extend_from_slice(kernel_shape);
        let w = self.values(&format!("{name}.weight"), &want)?;
        let d_in: usize = kernel_shape.iter().product();
        let b = self.values(&format!("{name}.bias"), &[d_out])?;
        Ok(linear_layer(w, d_in, Some(b), device))
    }

    /// Integer config value `key`, or `default` when absent.
    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match &self.config[key] {
            Value::Null => Ok(default),
            v => v.as_u64().map(|x| x as usize).with_context(|| {
                format!(
                    "{}: `{key}` must be a non-negative integer, got {v}",
                    self.config_path().display()
                )
            }),
        }
    }

    /// An integer or a `[h, w]` pair with h == w (image and patch sizes); `default` when absent.
    pub fn square_or(&self, key: &str, default: usize) -> Result<usize> {
        match &self.config[key] {
            Value::Array(a) if a.len() == 2 && a[0] == a[1] => a[0].as_u64().map(|x| x as usize),
            Value::Null => Some(default),
            v => v.as_u64().map(|x| x as usize),
        }
        .with_context(|| {
            format!(
                "{}: `{key}` must be an integer or a square [n, n] pair, got {}",
                self.config_path().display(),
                self.config[key]
            )
        })
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match &self.config[key] {
            Value::Null => Ok(default),
            v => v.as_f64().with_context(|| {
                format!(
                    "{}: `{key}` must be a number, got {v}",
                    self.config_path().display()
                )
            }),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match &self.config[key] {
            Value::Null => Ok(default),
            v => v.as_bool().with_context(|| {
                format!(
                    "{}: `{key}` must be true or false, got {v}",
                    self.config_path().display()
                )
            }),
        }
    }

    pub fn activation_or(&self, key: &str, default: Activation) -> Result<Activation> {
        match &self.config[key] {
            Value::Null => Ok(default),
            Value::String(s) => Activation::parse(s).with_context(|| {
                format!(
                    "{}: unsupported activation `{key}` = \"{s}\" (supported: gelu, \
                     gelu_pytorch_tanh, gelu_new, silu, swish, relu)",
                    self.config_path().display()
                )
            }),
            v => bail!(
                "{}: `{key}` must be a string, got {v}",
                self.config_path().display()
            ),
        }
    }
}

/// IEEE half precision to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f * 2^-24.
            let v = f as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

/// A linear layer from a PyTorch weight `[out, in]` (row-major, `d_in` columns) and bias:
/// the weight is transposed on the host into burn's `[in, out]`, stored contiguous (a
/// transposed view would be copied again by every product that reads it).
fn linear_layer(weight: Vec<f32>, d_in: usize, bias: Option<Vec<f32>>, device: &Device) -> Linear {
    let d_out = weight.len() / d_in;
    let mut t = vec![0.0f32; weight.len()];
    for (o, row) in weight.chunks_exact(d_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            t[i * d_out + o] = v;
        }
    }
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device)),
        bias: bias
            .map(|b| Param::from_tensor(Tensor::from_data(TensorData::new(b, [d_out]), device))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn weights_with_nan_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let bytes: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &bytes).unwrap();
        safetensors::serialize_to_file(
            vec![("blocks.0.w", view)],
            None,
            &dir.path().join("model.safetensors"),
        )
        .unwrap();
        let folder = HfFolder::open(dir.path()).unwrap();
        let e = folder.values("blocks.0.w", &[2]).unwrap_err().to_string();
        assert!(
            e.contains("blocks.0.w") && e.contains("NaN") && e.contains("index 1"),
            "{e}"
        );
    }
}
