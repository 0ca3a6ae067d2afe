//! Parsing `--device cpu|cuda[:N]` into a burn device.

use anyhow::{Result, bail};
use burn::prelude::Device;

/// `cpu` (burn's flex backend) or `cuda` / `cuda:N` (when built with the `cuda` feature).
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" | "flex" => Ok(Device::flex()),
        s if s == "cuda" || s.starts_with("cuda:") => cuda(s),
        other => bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
    }
}

#[cfg(feature = "cuda")]
fn cuda(spec: &str) -> Result<Device> {
    let index = match spec.strip_prefix("cuda:") {
        Some(n) => n
            .parse::<usize>()
            .map_err(|_| anyhow::anyhow!("bad CUDA device index in `{spec}`"))?,
        None => 0,
    };
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(spec: &str) -> Result<Device> {
    bail!("device `{spec}` needs a lam built with `--features cuda`")
}
