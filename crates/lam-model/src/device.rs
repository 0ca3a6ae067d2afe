//! Parsing `--device` into a burn device.
//!
//! | spec | backend | cargo feature |
//! | --- | --- | --- |
//! | `cpu` (or `flex`) | burn's flex CPU backend | always built |
//! | `cuda`, `cuda:N` | CUDA (cubecl-cuda) | `cuda` (its build script downloads LLVM) |
//! | `vulkan`, `vulkan:N` | Vulkan compute through wgpu (SPIR-V) | `vulkan` (builds offline) |
//! | `wgpu`, `wgpu:N` | wgpu on whichever graphics API the machine offers | `wgpu` (builds offline) |
//!
//! Without `:N` the wgpu backends take the adapter wgpu ranks best (a discrete GPU where there is
//! one, else whatever the driver offers, e.g. Mesa's CPU Vulkan driver); `:N` asks for the Nth
//! discrete GPU. A GPU device is started when it is parsed, so a missing driver or loader is an
//! error here, not a crash in the middle of training.

use anyhow::{Result, anyhow, bail};
use burn::prelude::Device;

/// The device a `--device` spec names, or an error that says which feature it needs.
pub fn parse_device(spec: &str) -> Result<Device> {
    let (kind, index) = match spec.split_once(':') {
        Some((kind, n)) => {
            let index = n.parse::<usize>().map_err(|_| {
                anyhow!("bad device index `{n}` in `{spec}` (expected e.g. {kind}:0)")
            })?;
            (kind, Some(index))
        }
        None => (spec, None),
    };
    match kind {
        "cpu" | "flex" if index.is_none() => Ok(Device::flex()),
        "cuda" => cuda(spec, index),
        "vulkan" => vulkan(spec, index),
        "wgpu" => wgpu(spec, index),
        _ => bail!(
            "unknown device `{spec}` (expected cpu, cuda[:N], vulkan[:N] or wgpu[:N]; {})",
            built_with()
        ),
    }
}

/// The GPU backends this binary was built with, in words (for errors and `lam --version`-like
/// reports).
pub fn built_with() -> String {
    let gpus: Vec<&str> = [
        cfg!(feature = "cuda").then_some("cuda"),
        cfg!(feature = "vulkan").then_some("vulkan"),
        cfg!(feature = "wgpu").then_some("wgpu"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if gpus.is_empty() {
        "this lam was built for the CPU only".into()
    } else {
        format!("this lam was built with {}", gpus.join(", "))
    }
}

/// `device` once it has run a first operation; a backend that cannot start (no driver, no
/// adapter, no loader) panics on its runner thread, which becomes an error naming `spec`.
#[cfg(any(feature = "cuda", feature = "vulkan", feature = "wgpu"))]
fn started(spec: &str, device: Device) -> Result<Device> {
    use burn::prelude::Tensor;
    let probe = std::panic::AssertUnwindSafe(&device);
    let ran = std::panic::catch_unwind(move || {
        let _ = Tensor::<1>::zeros([1], *probe).into_data();
    });
    match ran {
        Ok(()) => Ok(device),
        Err(_) => bail!(
            "device `{spec}` could not be started (the backend's own message is above): is the \
             GPU driver installed, and for vulkan / wgpu a Vulkan loader (libvulkan1) with the \
             driver's ICD file (VK_DRIVER_FILES)?"
        ),
    }
}

/// The error for a GPU backend this binary was built without.
#[cfg(not(all(feature = "cuda", feature = "vulkan", feature = "wgpu")))]
fn not_built(kind: &str) -> Result<Device> {
    bail!(
        "device `{kind}` needs a lam built with `--features {kind}` ({})",
        built_with()
    )
}

#[cfg(any(feature = "vulkan", feature = "wgpu"))]
fn wgpu_kind(index: Option<usize>) -> burn::tensor::DeviceKind {
    match index {
        Some(n) => burn::tensor::DeviceKind::DiscreteGpu(n),
        None => burn::tensor::DeviceKind::DefaultDevice,
    }
}

#[cfg(feature = "cuda")]
fn cuda(spec: &str, index: Option<usize>) -> Result<Device> {
    started(spec, Device::cuda(index.unwrap_or(0)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: &str, _: Option<usize>) -> Result<Device> {
    not_built("cuda")
}

#[cfg(feature = "vulkan")]
fn vulkan(spec: &str, index: Option<usize>) -> Result<Device> {
    started(spec, Device::vulkan(wgpu_kind(index)))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan(_: &str, _: Option<usize>) -> Result<Device> {
    not_built("vulkan")
}

#[cfg(feature = "wgpu")]
fn wgpu(spec: &str, index: Option<usize>) -> Result<Device> {
    started(spec, Device::wgpu(wgpu_kind(index)))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_: &str, _: Option<usize>) -> Result<Device> {
    not_built("wgpu")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_or_say_what_is_wrong() {
        assert!(parse_device("cpu").is_ok());
        assert!(parse_device("flex").is_ok());
        let bad = parse_device("cuda:x").unwrap_err().to_string();
        assert!(bad.contains("bad device index `x`"), "{bad}");
        let unknown = parse_device("tpu").unwrap_err().to_string();
        assert!(unknown.contains("unknown device `tpu`"), "{unknown}");
        assert!(parse_device("cpu:1").is_err());
        if !cfg!(feature = "vulkan") {
            let missing = parse_device("vulkan:0").unwrap_err().to_string();
            assert!(missing.contains("--features vulkan"), "{missing}");
        }
    }
}
