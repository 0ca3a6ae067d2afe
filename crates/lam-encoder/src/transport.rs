//! Keypoint transport: a pretraining head that makes the pixel keypoints follow every body
//! that moves, not only the one that moves most.
//!
//! For a pair of frames (source x_t, target x_t+1) with keypoints `mu_s` and `mu_g` (the
//! encoder's pixel-keypoint stem on each frame), the head rebuilds the target from the
//! source's appearance:
//!
//! 1. `phi(x)`: a small convolutional feature map of a frame at half resolution
//!    (4x4 stride-2 convolution, SiLU, 3x3 convolution).
//! 2. A Gaussian heatmap `H(mu)` per keypoint on the same grid (standard deviation `sigma` in
//!    the [-1, 1] units of the keypoints).
//! 3. Transport, keypoint by keypoint: `phi <- (1 - H_k(mu_s)) (1 - H_k(mu_g)) phi +
//!    H_k(mu_g) phi(x_t+1)`, starting from `phi(x_t)`: the source's features are cut out
//!    where a keypoint was and where it is now, and the target's features pasted where it
//!    is now.
//! 4. A decoder (3x3 convolution, SiLU, 3x3 convolution to colours) paints the target frame at
//!    half resolution; the loss is the mean squared error against the target averaged over
//!    2 x 2 pixels.
//!
//! Whatever moved between the two frames and has no keypoint on it, at both of its places,
//! stays wrong in the rebuilt frame, so once keypoints sit on the agent the error left is a
//! pushed object's and the other keypoints are drawn to it. A term that pulls every keypoint
//! to the largest change (the motion term of [`crate::pretrain`]) puts them all on the agent,
//! which moves in nearly every pair.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

/// The transport head (feature map and decoder); the keypoints come from the encoder.
#[derive(Module, Debug)]
pub struct Transporter {
    pub feature1: Conv2d,
    pub feature2: Conv2d,
    pub decode1: Conv2d,
    pub decode2: Conv2d,
    /// Heatmap standard deviation in keypoint units ([-1, 1] across the frame).
    pub sigma: f32,
}

impl Transporter {
    pub fn new(channels: usize, sigma: f32, device: &Device) -> Self {
        let conv3 = |i: usize, o: usize| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Transporter {
            feature1: Conv2dConfig::new([3, channels], [4, 4])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            feature2: conv3(channels, channels),
            decode1: conv3(channels, channels),
            decode2: conv3(channels, 3),
            sigma,
        }
    }

    /// Features `[B, C, S/2, S/2]` of frames `[B, 3, S, S]`.
    pub fn features(&self, frames: Tensor<4>) -> Tensor<4> {
        self.feature2.forward(silu(self.feature1.forward(frames)))
    }

    /// Mean squared error of the target frames rebuilt from the source frames `[B, 3, S, S]`
    /// and the keypoints `[B, K, 2]` of each (x, y in [-1, 1], the spatial softmax's grid).
    pub fn loss(
        &self,
        source: Tensor<4>,
        target: Tensor<4>,
        kp_source: Tensor<3>,
        kp_target: Tensor<3>,
    ) -> Tensor<1> {
        let [b, _, s, _] = target.dims();
        let mut phi = self.features(source);
        let phi_target = self.features(target.clone());
        let [_, _, h, w] = phi.dims();
        let hs = heatmaps(kp_source, h, w, self.sigma);
        let hg = heatmaps(kp_target, h, w, self.sigma);
        let k = hs.dims()[1];
        for i in 0..k {
            let a = hs.clone().slice(s![.., i..i + 1, .., ..]);
            let g = hg.clone().slice(s![.., i..i + 1, .., ..]);
            let keep = (a.neg().add_scalar(1.0)) * (g.clone().neg().add_scalar(1.0));
            phi = phi * keep + g * phi_target.clone();
        }
        let painted = self.decode2.forward(silu(self.decode1.forward(phi)));
        let (fy, fx) = (s / h, s / w);
        let small = target
            .reshape([b, 3, h, fy, w, fx])
            .mean_dim(5)
            .mean_dim(3)
            .reshape([b, 3, h, w]);
        let err = painted - small;
        (err.clone() * err).mean()
    }
}

/// Gaussian heatmaps `[B, K, h, w]` of keypoints `[B, K, 2]` on the grid whose cell centres
/// run from -1 to 1 (the coordinates of [`lam_model::spatial::spatial_softmax`]).
pub fn heatmaps(kp: Tensor<3>, h: usize, w: usize, sigma: f32) -> Tensor<4> {
    let [b, k, _] = kp.dims();
    let device = kp.device();
    let lin = |n: usize, i: usize| {
        if n == 1 {
            0.0
        } else {
            -1.0 + 2.0 * i as f32 / (n - 1) as f32
        }
    };
    let xs: Vec<f32> = (0..w).map(|i| lin(w, i)).collect();
    let ys: Vec<f32> = (0..h).map(|i| lin(h, i)).collect();
    let xs = Tensor::<4>::from_data(TensorData::new(xs, [1, 1, 1, w]), &device);
    let ys = Tensor::<4>::from_data(TensorData::new(ys, [1, 1, h, 1]), &device);
    let kx = kp.clone().slice(s![.., .., 0..1]).reshape([b, k, 1, 1]);
    let ky = kp.slice(s![.., .., 1..2]).reshape([b, k, 1, 1]);
    let dx = xs - kx; // [B, K, 1, w]
    let dy = ys - ky; // [B, K, h, 1]
    let d2 = (dx.clone() * dx).repeat_dim(2, h) + (dy.clone() * dy).repeat_dim(3, w);
    d2.div_scalar(-2.0 * sigma * sigma).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::default()
    }

    #[test]
    fn a_heatmap_peaks_at_its_keypoint_with_the_given_width() {
        let dev = device();
        // A keypoint on the centre of cell (x 3, y 1) of a 5 x 5 grid: x = -1 + 2 * 3 / 4.
        let kp = Tensor::<3>::from_data(TensorData::new(vec![0.5f32, -0.5], [1, 1, 2]), &dev);
        let m: Vec<f32> = heatmaps(kp, 5, 5, 0.5)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!((m[5 + 3] - 1.0).abs() < 1e-6, "peak {}", m[5 + 3]);
        // One cell (0.5 units) away: exp(-0.25 / (2 * 0.25)) = exp(-0.5).
        assert!((m[5 + 2] - (-0.5f32).exp()).abs() < 1e-6);
        assert!((m[2 * 5 + 3] - (-0.5f32).exp()).abs() < 1e-6);
        // Diagonal neighbour: exp(-1).
        assert!((m[2 * 5 + 4] - (-1.0f32).exp()).abs() < 1e-6);
    }

    /// Frames `[B, 3, s, s]` with a 4 x 4 white square at each of `pos` (top-left corners),
    /// and the square's centre in keypoint units.
    fn squares(pos: &[(usize, usize)], s: usize, dev: &Device) -> (Tensor<4>, Tensor<3>) {
        let mut px = vec![0f32; pos.len() * 3 * s * s];
        let mut kp = Vec::new();
        for (b, &(x0, y0)) in pos.iter().enumerate() {
            for c in 0..3 {
                for y in y0..y0 + 4 {
                    for x in x0..x0 + 4 {
                        px[((b * 3 + c) * s + y) * s + x] = 1.0;
                    }
                }
            }
            // Centre at pixel x0 + 1.5; at half resolution cell (x0 + 1.5) / 2 - 0.25 of
            // s / 2 cells whose centres run from -1 to 1.
            let unit = |p: usize| -1.0 + 2.0 * ((p as f32 + 1.5) / 2.0 - 0.25) / (s / 2 - 1) as f32;
            kp.extend([unit(x0), unit(y0)]);
        }
        let n = pos.len();
        (
            Tensor::from_data(TensorData::new(px, [n, 3, s, s]), dev),
            Tensor::from_data(TensorData::new(kp, [n, 1, 2]), dev),
        )
    }

    #[test]
    fn keypoints_on_the_moving_body_let_the_head_rebuild_the_target() {
        // Pairs where a square jumps between random places. Trained for the same steps, the
        // head rebuilds the target frames far better when the keypoints sit on the square
        // than when they are held in a corner: what it learns to use are the keypoints.
        use burn::optim::{AdamWConfig, GradientsParams};
        let s = 16;
        let train = |on_body: bool| -> f32 {
            let dev = device().autodiff();
            dev.seed(7);
            let mut head = lam_model::optim::stable_param_ids(Transporter::new(8, 0.15, &dev));
            let mut opt = AdamWConfig::new().init();
            let mut rng = 12345u64;
            let mut next = |n: usize| {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((rng >> 33) as usize) % n
            };
            let mut last = 0.0;
            for _ in 0..150 {
                let a: Vec<(usize, usize)> = (0..8).map(|_| (next(s - 4), next(s - 4))).collect();
                let g: Vec<(usize, usize)> = (0..8).map(|_| (next(s - 4), next(s - 4))).collect();
                let (src, kp_s) = squares(&a, s, &dev);
                let (tgt, kp_g) = squares(&g, s, &dev);
                let (kp_s, kp_g) = if on_body {
                    (kp_s, kp_g)
                } else {
                    (
                        kp_s.zeros_like().add_scalar(-1.0),
                        kp_g.zeros_like().add_scalar(-1.0),
                    )
                };
                let loss = head.loss(src, tgt, kp_s, kp_g);
                last = loss.clone().into_data().try_into_vec::<f32>().unwrap()[0];
                let grads = GradientsParams::from_grads(loss.backward(), &head);
                head = opt.step(3e-3, head, grads);
            }
            last
        };
        let (on, off) = (train(true), train(false));
        assert!(on.is_finite() && off.is_finite());
        assert!(on < 0.5 * off, "on the body {on}, in a corner {off}");
    }

    #[test]
    fn transport_pulls_a_keypoint_towards_what_moved_and_is_left_unrebuilt() {
        // A frame pair where a bright square moves from the left to the right; a keypoint
        // left at the frame's centre gets a gradient towards the square's places.
        let dev = device().autodiff();
        dev.seed(3);
        let s = 16;
        let mut a = vec![0f32; 3 * s * s];
        let mut g = vec![0f32; 3 * s * s];
        for c in 0..3 {
            for y in 6..10 {
                for x in 2..6 {
                    a[c * s * s + y * s + x] = 1.0;
                }
                for x in 10..14 {
                    g[c * s * s + y * s + x] = 1.0;
                }
            }
        }
        let src = Tensor::<4>::from_data(TensorData::new(a, [1, 3, s, s]), &dev);
        let tgt = Tensor::<4>::from_data(TensorData::new(g, [1, 3, s, s]), &dev);
        let head = Transporter::new(8, 0.3, &dev);
        // The target keypoint sits left of the square's new place (x about 0.53 in [-1, 1]).
        let kp_s = Tensor::<3>::from_data(TensorData::new(vec![-0.47f32, 0.0], [1, 1, 2]), &dev);
        let kp_g = Tensor::<3>::from_data(TensorData::new(vec![0.1f32, 0.0], [1, 1, 2]), &dev)
            .require_grad();
        let loss = head.loss(src, tgt, kp_s, kp_g.clone());
        let v = loss.clone().into_data().try_into_vec::<f32>().unwrap()[0];
        assert!(v.is_finite() && v > 0.0, "loss {v}");
        let grads = loss.backward();
        let gk = kp_g
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(gk.iter().all(|x| x.is_finite()));
        assert!(
            gk[0].abs() > 0.0,
            "no gradient reaches the keypoint: {gk:?}"
        );
    }
}
