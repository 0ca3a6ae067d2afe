//! Frame strips: a row of frames saved as one PNG for people to look at.

use anyhow::Context as _;
use std::path::Path;

/// Writes `frames` (RGB, `width * height * 3` bytes each) side by side with
/// a 2-pixel white gap, upscaled by the integer `zoom`, to the PNG `path` (written whole
/// or not at all: encoded in memory, then a temporary file renamed).
pub fn write_strip(
    path: &Path,
    frames: &[&[u8]],
    width: u32,
    height: u32,
    zoom: u32,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !frames.is_empty(),
        "no frames to write to {}",
        path.display()
    );
    let zoom = zoom.max(1) as usize;
    let (w, h) = (width as usize, height as usize);
    let gap = 2usize;
    let out_w = frames.len() * (w * zoom + gap) - gap;
    let out_h = h * zoom;
    let mut img = vec![255u8; out_w * out_h * 3];
    for (i, f) in frames.iter().enumerate() {
        anyhow::ensure!(
            f.len() == w * h * 3,
            "frame {i} has {} bytes, expected {}",
            f.len(),
            w * h * 3
        );
        let x0 = i * (w * zoom + gap);
        for y in 0..out_h {
            for x in 0..w * zoom {
                let src = ((y / zoom) * w + x / zoom) * 3;
                let dst = (y * out_w + x0 + x) * 3;
                img[dst..dst + 3].copy_from_slice(&f[src..src + 3]);
            }
        }
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut png_bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut png_bytes, out_w as u32, out_h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.write_image_data(&img)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.finish()
        .with_context(|| format!("cannot finish {}", path.display()))?;
    lam_data::shards::write_atomic(path, &png_bytes)
}

/// Picks `n` indices spread evenly over `0..len` (first and last included).
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if len == 0 {
        return vec![];
    }
    let n = n.clamp(1, len);
    if n == 1 {
        return vec![0];
    }
    (0..n).map(|i| i * (len - 1) / (n - 1)).collect()
}
