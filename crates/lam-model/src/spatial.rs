//! Spatial softmax: the keypoint read-out of a feature map shared by the image encoders (the
//! LAWM policy's and the sim encoder's pixel keypoints).

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// Spatial softmax: for every channel of `x` `[N, C, h, w]`, the softmax over its h*w
/// positions as a distribution, and the expected x and y coordinate (in [-1, 1]) under it.
/// Returns `[N, 2C]`: all x coordinates, then all y coordinates.
pub fn spatial_softmax(x: Tensor<4>) -> Tensor<2> {
    let [n, c, h, w] = x.dims();
    let device = x.device();
    let p = softmax(x.reshape([n, c, h * w]), 2);
    let lin = |k: usize, i: usize| {
        if k == 1 {
            0.0
        } else {
            -1.0 + 2.0 * i as f32 / (k - 1) as f32
        }
    };
    let xs: Vec<f32> = (0..h * w).map(|i| lin(w, i % w)).collect();
    let ys: Vec<f32> = (0..h * w).map(|i| lin(h, i / w)).collect();
    let grid = Tensor::<2>::from_data(TensorData::new([xs, ys].concat(), [2, h * w]), &device);
    // [N, C, hw] x [hw, 2] -> [N, C, 2]
    let coords = p.matmul(grid.transpose().unsqueeze_dim::<3>(0).repeat_dim(0, n));
    coords.swap_dims(1, 2).reshape([n, 2 * c])
}
