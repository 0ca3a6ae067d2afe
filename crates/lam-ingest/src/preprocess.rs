//! Frame preprocessing: resize the short side (swscale, bilinear), centre
//! crop to a square, normalise to f32 CHW.

use crate::spec::Normalization;
use ffmpeg::format::Pixel;
use ffmpeg::frame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;

/// Where a `width x height` picture lands when its short side is resized to
/// `size` and the centre `size x size` square is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Size of the resized picture. The short side is `size`; the long side
    /// is `floor(long * size / short)` (at least `size`), the rule
    /// torchvision's `Resize(size)` follows.
    pub scaled_width: u32,
    pub scaled_height: u32,
    /// Top-left corner of the crop in the resized picture:
    /// `floor((scaled - size) / 2)` on each axis.
    pub crop_x: u32,
    pub crop_y: u32,
    pub size: u32,
}

impl Geometry {
    /// Geometry for a picture shown at `width x height` (display size, i.e.
    /// after the sample aspect ratio).
    pub fn new(width: u32, height: u32, size: u32) -> Geometry {
        let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
        let s = u64::from(size);
        let (sw, sh) = if w <= h {
            (s, (h * s / w).max(s))
        } else {
            ((w * s / h).max(s), s)
        };
        Geometry {
            scaled_width: sw as u32,
            scaled_height: sh as u32,
            crop_x: ((sw - s) / 2) as u32,
            crop_y: ((sh - s) / 2) as u32,
            size,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct ScalerKey {
    format: Pixel,
    width: u32,
    height: u32,
    color_space: i32,
    full_range: bool,
}

/// Turns decoded frames of any pixel format and size into normalised
/// `3 x size x size` f32 pictures (CHW, R G B). Keeps one swscale context
/// and rebuilds it when the input format or size changes mid-stream.
pub struct Preprocessor {
    size: u32,
    table: [[f32; 256]; 3],
    scaler: Option<(ScalerKey, Geometry, scaling::Context)>,
    rgb: frame::Video,
}

impl Preprocessor {
    pub fn new(size: u32, norm: &Normalization) -> Self {
        crate::decode::init();
        Preprocessor {
            size,
            table: norm.table(),
            scaler: None,
            rgb: frame::Video::empty(),
        }
    }

    /// Output side in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Floats appended per frame by [`Preprocessor::process`]: `3 * size * size`.
    pub fn frame_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Appends the preprocessed `frame` to `out` (`3 * size * size` floats,
    /// CHW). The error is a reason string (the caller knows the file).
    pub fn process(&mut self, frame: &frame::Video, out: &mut Vec<f32>) -> Result<(), String> {
        let key = ScalerKey {
            format: frame.format(),
            width: frame.width(),
            height: frame.height(),
            color_space: ffmpeg::ffi::AVColorSpace::from(frame.color_space()) as i32,
            full_range: frame.color_range() == ffmpeg::color::Range::JPEG
                || matches!(
                    frame.format(),
                    Pixel::YUVJ420P
                        | Pixel::YUVJ422P
                        | Pixel::YUVJ444P
                        | Pixel::YUVJ440P
                        | Pixel::YUVJ411P
                ),
        };
        if key.width == 0 || key.height == 0 || key.format == Pixel::None {
            return Err("decoded frame has no picture".into());
        }
        if self.scaler.as_ref().map(|(k, _, _)| *k) != Some(key) {
            self.scaler = Some(self.build(key, frame)?);
        }
        let (_, geo, ctx) = self.scaler.as_mut().expect("scaler built above");
        ctx.run(frame, &mut self.rgb)
            .map_err(|e| format!("resize failed: {e}"))?;
        let stride = self.rgb.stride(0);
        let data = self.rgb.data(0);
        let s = self.size as usize;
        let (cx, cy) = (geo.crop_x as usize, geo.crop_y as usize);
        let base = out.len();
        out.resize(base + 3 * s * s, 0.0);
        let (r_out, rest) = out[base..].split_at_mut(s * s);
        let (g_out, b_out) = rest.split_at_mut(s * s);
        let [tr, tg, tb] = &self.table;
        for y in 0..s {
            // Rows of the RGB picture may be padded: index by stride.
            let row = &data[(y + cy) * stride + 3 * cx..][..3 * s];
            let o = y * s;
            for (x, px) in row.chunks_exact(3).enumerate() {
                r_out[o + x] = tr[px[0] as usize];
                g_out[o + x] = tg[px[1] as usize];
                b_out[o + x] = tb[px[2] as usize];
            }
        }
        Ok(())
    }

    /// Appends a packed RGB picture (`width x height x 3` bytes, row-major) prepared exactly as
    /// [`Preprocessor::process`] prepares a decoded frame: the one frame preparation of lam,
    /// for frames that arrive as pixels (closed-loop planning, `lam serve`). The error names
    /// what is wrong with the picture.
    pub fn process_rgb(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        out: &mut Vec<f32>,
    ) -> Result<(), String> {
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(format!("empty frame ({width}x{height})"));
        }
        if rgb.len() != w * h * 3 {
            return Err(format!(
                "an RGB frame of {width}x{height} has {} bytes, got {}",
                w * h * 3,
                rgb.len()
            ));
        }
        let mut frame = frame::Video::new(Pixel::RGB24, width, height);
        let stride = frame.stride(0);
        let data = frame.data_mut(0);
        for y in 0..h {
            data[y * stride..y * stride + 3 * w].copy_from_slice(&rgb[y * 3 * w..(y + 1) * 3 * w]);
        }
        self.process(&frame, out)
    }

    fn build(
        &self,
        key: ScalerKey,
        frame: &frame::Video,
    ) -> Result<(ScalerKey, Geometry, scaling::Context), String> {
        let sar = frame.aspect_ratio();
        let display_w =
            if sar.numerator() > 0 && sar.denominator() > 0 && sar.numerator() != sar.denominator()
            {
                ((f64::from(key.width) * f64::from(sar)).round() as u32).max(1)
            } else {
                key.width
            };
        let geo = Geometry::new(display_w, key.height, self.size);
        let mut ctx = scaling::Context::get(
            key.format,
            key.width,
            key.height,
            Pixel::RGB24,
            geo.scaled_width,
            geo.scaled_height,
            scaling::Flags::BILINEAR,
        )
        .map_err(|e| {
            format!(
                "cannot convert {:?} {}x{} to RGB: {e}",
                key.format, key.width, key.height
            )
        })?;
        let is_yuv = matches!(
            key.format.descriptor().map(|d| d.name().to_string()),
            Some(n) if n.starts_with("yuv") || n.starts_with("nv")
        );
        if is_yuv {
            // Use the stream's YUV matrix (BT.709 for HD video) and range
            // instead of swscale's BT.601 default; RGB output is full range.
            // SAFETY: ctx is a valid SwsContext; the coefficient tables are
            // static tables owned by libswscale.
            unsafe {
                let src = ffmpeg::ffi::sws_getCoefficients(key.color_space);
                let dst = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
                ffmpeg::ffi::sws_setColorspaceDetails(
                    ctx.as_mut_ptr(),
                    src,
                    i32::from(key.full_range),
                    dst,
                    1,
                    0,
                    1 << 16,
                    1 << 16,
                );
            }
        }
        Ok((key, geo, ctx))
    }
}

/// A packed RGB picture (`width x height x 3` bytes) prepared as every frame lam sees is
/// ([`Preprocessor::process_rgb`]: short side resized, centre square of side `size`) and kept
/// as bytes, channel-first: `3 * size * size` values in [0, 255]. What a LAWM policy takes, in
/// training (its episodes are read through the same preparation) and when it acts.
pub fn rgb_bytes(rgb: &[u8], width: u32, height: u32, size: u32) -> Result<Vec<u8>, String> {
    let mut chw = Vec::with_capacity(3 * size as usize * size as usize);
    Preprocessor::new(size, &Normalization::UNIT).process_rgb(rgb, width, height, &mut chw)?;
    Ok(chw.into_iter().map(unit_to_byte).collect())
}

/// The byte of a value prepared with [`Normalization::UNIT`] (`v / 255` in [0, 1]): the
/// inverse of that preparation, for frames kept as bytes.
pub fn unit_to_byte(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RGB picture (`w x h x 3`) whose values vary across rows and columns.
    fn picture(w: usize, h: usize) -> Vec<u8> {
        (0..w * h * 3)
            .map(|i| ((i * 37 + (i / (3 * w)) * 11) % 251) as u8)
            .collect()
    }

    #[test]
    fn rgb_of_the_output_size_is_only_normalised() {
        let norm = Normalization::IMAGENET;
        let rgb = picture(16, 16);
        let mut out = Vec::new();
        Preprocessor::new(16, &norm)
            .process_rgb(&rgb, 16, 16, &mut out)
            .unwrap();
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                assert_eq!(out[c * 256 + i], norm.apply(c, px[c]));
            }
        }
        let err = Preprocessor::new(16, &norm)
            .process_rgb(&rgb[1..], 16, 16, &mut out)
            .unwrap_err();
        assert!(err.contains("768 bytes"), "{err}");
    }

    #[test]
    fn geometry_short_side_and_centre() {
        let g = Geometry::new(64, 48, 24);
        assert_eq!((g.scaled_width, g.scaled_height), (32, 24));
        assert_eq!((g.crop_x, g.crop_y), (4, 0));
        let g = Geometry::new(480, 640, 224);
        assert_eq!((g.scaled_width, g.scaled_height), (224, 298));
        assert_eq!((g.crop_x, g.crop_y), (0, 37));
        let g = Geometry::new(100, 100, 224);
        assert_eq!(
            (g.scaled_width, g.scaled_height, g.crop_x, g.crop_y),
            (224, 224, 0, 0)
        );
    }
}
