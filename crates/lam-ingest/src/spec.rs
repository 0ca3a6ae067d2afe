//! What a clip is: frame rate, length, size, stride and normalisation.

use crate::error::{IngestError, Result};
use serde::{Deserialize, Serialize};

/// Per-channel normalisation applied to RGB values scaled to [0, 1]:
/// `out = (v / 255 - mean[c]) / std[c]`, channels in R, G, B order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// ImageNet statistics, the convention of the encoders lam loads
    /// (V-JEPA 2, DINOv2): mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// No normalisation: values are `v / 255` in [0, 1].
    pub const UNIT: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// The normalised value of 8-bit channel value `v` in channel `c` (0 = R).
    pub fn apply(&self, c: usize, v: u8) -> f32 {
        (f32::from(v) / 255.0 - self.mean[c]) / self.std[c]
    }

    /// Look-up table of [`Normalization::apply`] for all 256 values of each channel.
    pub fn table(&self) -> [[f32; 256]; 3] {
        let mut t = [[0.0f32; 256]; 3];
        for (c, row) in t.iter_mut().enumerate() {
            for (v, out) in row.iter_mut().enumerate() {
                *out = self.apply(c, v as u8);
            }
        }
        t
    }
}

impl Default for Normalization {
    /// [`Normalization::IMAGENET`].
    fn default() -> Self {
        Normalization::IMAGENET
    }
}

/// How videos are cut into clips. Defaults follow the paper's
/// Something-Something-v2 setup: 4 fps, 8 frames, 224 x 224, ImageNet
/// normalisation, non-overlapping clips.
///
/// A video is first resampled onto the time grid `start + k / fps`
/// (k = 0, 1, ...), taking at each grid time the frame on screen then (the
/// last frame whose timestamp is <= that time). Clip `c` holds resampled
/// frames `c * stride .. c * stride + frames`; a trailing remainder shorter
/// than `frames` is dropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipSpec {
    /// Target frame rate in frames per second. Default 4.0.
    pub fps: f64,
    /// Frames per clip (T). Default 8.
    pub frames: usize,
    /// Output side in pixels: the short side is resized to `size` (bilinear,
    /// swscale), then the centre `size x size` square is cropped. Default 224.
    pub size: u32,
    /// Resampled frames between the starts of consecutive clips. Default 8
    /// (= `frames`: clips do not overlap). Smaller values overlap clips,
    /// larger ones leave gaps (frames in gaps are not even converted).
    pub stride: usize,
    /// Per-channel normalisation. Default ImageNet.
    pub norm: Normalization,
    /// At most this many clips per item (video or episode camera); `None`
    /// (default) takes them all.
    pub max_clips: Option<usize>,
    /// Time grids per item. Default 1. Phase `p` resamples the item again on
    /// the grid `start + (k + p / phases) / fps` and cuts its own clips there
    /// (`max_clips` per phase): with clips at 2 fps of a 10 fps recording,
    /// 5 phases start a clip at every recorded step.
    pub phases: usize,
}

impl Default for ClipSpec {
    fn default() -> Self {
        ClipSpec {
            fps: 4.0,
            frames: 8,
            size: 224,
            stride: 8,
            norm: Normalization::IMAGENET,
            max_clips: None,
            phases: 1,
        }
    }
}

impl ClipSpec {
    /// Checks that every field has a usable value; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(IngestError::Spec(format!(
                "fps must be a positive number, got {}",
                self.fps
            )));
        }
        if self.frames == 0 {
            return Err(IngestError::Spec("frames must be at least 1, got 0".into()));
        }
        if self.size == 0 {
            return Err(IngestError::Spec("size must be at least 1, got 0".into()));
        }
        if self.stride == 0 {
            return Err(IngestError::Spec("stride must be at least 1, got 0".into()));
        }
        if self.phases == 0 {
            return Err(IngestError::Spec("phases must be at least 1, got 0".into()));
        }
        if self.max_clips == Some(0) {
            return Err(IngestError::Spec(
                "max_clips must be at least 1 when set, got 0".into(),
            ));
        }
        for c in 0..3 {
            let s = self.norm.std[c];
            if !(s.is_finite() && s > 0.0 && self.norm.mean[c].is_finite()) {
                return Err(IngestError::Spec(format!(
                    "normalisation of channel {c} must have finite mean and positive std, got mean {} std {}",
                    self.norm.mean[c], s
                )));
            }
        }
        Ok(())
    }

    /// Number of floats in one frame: `3 * size * size`.
    pub fn frame_len(&self) -> usize {
        3 * self.size as usize * self.size as usize
    }

    /// Whether resampled frame `k` belongs to at least one clip that will be
    /// emitted (frames in stride gaps or past `max_clips` are not).
    pub fn frame_needed(&self, k: usize) -> bool {
        if let Some(m) = self.max_clips
            && k >= (m - 1) * self.stride + self.frames
        {
            return false;
        }
        self.stride <= self.frames || k % self.stride < self.frames
    }

    /// Number of clips cut from `n` resampled frames.
    pub fn clips_in(&self, n: usize) -> usize {
        if n < self.frames {
            return 0;
        }
        let c = (n - self.frames) / self.stride + 1;
        self.max_clips.map_or(c, |m| c.min(m))
    }
}

/// Frames between two clip frames: `source_fps / fps`, which must be a whole number.
pub fn frame_step(source_fps: f64, fps: f64) -> anyhow::Result<usize> {
    anyhow::ensure!(
        fps > 0.0 && fps <= source_fps,
        "clip fps {fps} must be in (0, {source_fps}] (the recording's rate)"
    );
    let k = (source_fps / fps).round();
    anyhow::ensure!(
        ((source_fps / fps) - k).abs() < 1e-6,
        "clip fps {fps} does not divide the recording's {source_fps} fps"
    );
    Ok(k as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_counts_and_needed_frames() {
        let s = ClipSpec {
            frames: 4,
            stride: 6,
            ..ClipSpec::default()
        };
        assert_eq!(s.clips_in(3), 0);
        assert_eq!(s.clips_in(4), 1);
        assert_eq!(s.clips_in(10), 2);
        let needed: Vec<usize> = (0..12).filter(|&k| s.frame_needed(k)).collect();
        assert_eq!(needed, vec![0, 1, 2, 3, 6, 7, 8, 9]);
        let capped = ClipSpec {
            frames: 2,
            stride: 1,
            max_clips: Some(3),
            ..ClipSpec::default()
        };
        assert_eq!(capped.clips_in(100), 3);
        assert!(capped.frame_needed(3) && !capped.frame_needed(4));
    }

    #[test]
    fn validation_names_the_field() {
        let bad = ClipSpec {
            fps: 0.0,
            ..ClipSpec::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("fps"));
        let no_grid = ClipSpec {
            phases: 0,
            ..ClipSpec::default()
        };
        assert!(
            no_grid
                .validate()
                .unwrap_err()
                .to_string()
                .contains("phases")
        );
        assert!(ClipSpec::default().validate().is_ok());
    }

    #[test]
    fn imagenet_values() {
        let n = Normalization::IMAGENET;
        assert!((n.apply(0, 255) - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((n.apply(2, 0) + 0.406 / 0.225).abs() < 1e-6);
        assert_eq!(n.table()[1][128], n.apply(1, 128));
    }

    #[test]
    fn frame_step_needs_a_divisor() {
        assert_eq!(frame_step(10.0, 2.0).unwrap(), 5);
        assert_eq!(frame_step(10.0, 10.0).unwrap(), 1);
        assert!(frame_step(10.0, 3.0).is_err());
        assert!(frame_step(10.0, 20.0).is_err());
    }
}
