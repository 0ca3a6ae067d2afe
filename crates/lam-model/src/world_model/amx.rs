//! Matrix products in bfloat16 on Intel AMX, for the planner's host rollout.
//!
//! Sapphire Rapids and later Xeons carry AMX: eight tile registers of 16 rows x 64 bytes and
//! an instruction (`TDPBF16PS`) that multiplies a 16 x 32 tile of bf16 numbers by a 32 x 16
//! one and adds the 16 x 16 products to float32 accumulators. One core does about 3 TFLOP/s
//! that way against about 80 GFLOP/s of float32 FMA. Inputs are rounded to bf16 (8 bits of
//! mantissa, relative error at most 2^-9), sums stay in float32.
//!
//! [`PackedBf16`] holds a weight matrix `W` `[k, n]` rounded once and laid out in tiles as
//! the instruction reads them (pairs of rows interleaved); [`PackedBf16::matmul`] rounds the
//! activations `[m, k]` into a zero-padded scratch buffer and runs blocks of 32 x 32 outputs
//! (four accumulator tiles, two activation tiles, two weight tiles) over `k` in steps of 32.
//! [`available`] says whether this CPU and operating system run the tile instructions for
//! this process; callers fall back to float32 where they do not.

use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows and columns of an accumulator tile; bf16 numbers per activation-tile row.
const TILE: usize = 16;
const TILE_K: usize = 32;
/// u16 numbers in one weight tile (16 rows of 64 bytes).
const TILE_WORDS: usize = TILE * TILE_K;

/// Whether AMX bf16 tiles run in this process: the CPU reports AMX-TILE and AMX-BF16, and
/// (on Linux, which hands the tile state out on request) the kernel granted it; the rounding
/// of the activations also takes AVX-512F and BW (every CPU with AMX has them). Asked once.
pub fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that can run this binary.
    let leaf = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    if leaf.edx & (1 << 22) == 0
        || leaf.edx & (1 << 24) == 0
        || !std::arch::is_x86_feature_detected!("avx512f")
        || !std::arch::is_x86_feature_detected!("avx512bw")
    {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with this request only asks the kernel for permission to use the
    // tile data state; it touches no memory of ours.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// `x` rounded to the nearest bfloat16 (ties to even), as its 16 bits.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The float32 value of bfloat16 bits.
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// A weight matrix `[k, n]` rounded to bf16 and laid out in AMX tiles.
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    k: usize,
    n: usize,
    /// Tiles along `k` (32 rows each).
    k_tiles: usize,
    /// Tiles along `n` (16 columns each), rounded up to an even count.
    n_tiles: usize,
    /// Tile `(j, t)` (columns `16 j..`, rows `32 t..`) at `(j * k_tiles + t) * 512`: its row
    /// `r` holds, for each of its 16 columns, the rows `2 r` and `2 r + 1` side by side.
    tiles: Vec<u16>,
}

thread_local! {
    /// Per-thread scratch: activations in bf16 `[m32, k32]` and outputs `[m32, n32]`.
    static SCRATCH: RefCell<(Vec<u16>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

impl PackedBf16 {
    /// Packs `w` `[k, n]` (row-major).
    pub fn pack(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "weights of {k} x {n}");
        let k_tiles = k.div_ceil(TILE_K);
        let n_tiles = n.div_ceil(2 * TILE) * 2;
        let mut tiles = vec![0u16; n_tiles * k_tiles * TILE_WORDS];
        for kk in 0..k {
            let (t, r, e) = (kk / TILE_K, (kk % TILE_K) / 2, kk % 2);
            for col in 0..n {
                let (j, c) = (col / TILE, col % TILE);
                tiles[(j * k_tiles + t) * TILE_WORDS + r * TILE_K + c * 2 + e] =
                    to_bf16(w[kk * n + col]);
            }
        }
        Self {
            k,
            n,
            k_tiles,
            n_tiles,
            tiles,
        }
    }

    /// `out[m, n] = x[m, k] W` with `x` and `W` rounded to bf16 and float32 sums. Needs
    /// [`available`].
    pub fn matmul(&self, m: usize, x: &[f32], out: &mut [f32]) {
        assert!(
            available(),
            "AMX bf16 tiles are not available in this process"
        );
        let (k, n) = (self.k, self.n);
        assert!(x.len() >= m * k && out.len() >= m * n);
        let (kp, np) = (self.k_tiles * TILE_K, self.n_tiles * TILE);
        let mp = m.div_ceil(2 * TILE) * 2 * TILE;
        SCRATCH.with(|s| {
            let (a, c) = &mut *s.borrow_mut();
            a.clear();
            a.resize(mp * kp, 0);
            // SAFETY: `available` implies AVX-512F and BW (checked in `detect`).
            unsafe { round_rows(&x[..m * k], k, a, kp) };
            // Whole blocks of 32 rows go straight to `out` when its rows are as wide as the
            // tiles'; the rest through the scratch.
            let direct = if n == np {
                m / (2 * TILE) * 2 * TILE
            } else {
                0
            };
            // SAFETY: `a` holds `mp x kp` numbers, the weight tiles `n_tiles x k_tiles` tiles;
            // `out` holds rows `0..direct` of `n == np` numbers, `c` rows `direct..mp`.
            unsafe { self.kernel(a, 0..direct, out.as_mut_ptr(), n) };
            if direct < m {
                c.resize((mp - direct) * np, 0.0);
                unsafe { self.kernel(a, direct..mp, c.as_mut_ptr(), np) };
                for (dst, src) in out[direct * n..m * n]
                    .chunks_exact_mut(n)
                    .zip(c.chunks_exact(np))
                {
                    dst.copy_from_slice(&src[..n]);
                }
            }
        });
    }

    /// Output rows `rows` (a range of whole 32-row blocks of `a`) into `c`, whose row
    /// `i - rows.start` starts at `c + (i - rows.start) * c_stride`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn kernel(&self, a: &[u16], rows: std::ops::Range<usize>, c: *mut f32, c_stride: usize) {
        use std::arch::asm;
        let (kt, kp) = (self.k_tiles, self.k_tiles * TILE_K);
        // Palette 1, eight tiles of 16 rows x 64 bytes.
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = TILE as u8;
        }
        let (sa, sb, sc) = (kp * 2, TILE_K * 2, c_stride * 4);
        let (a, b) = (a.as_ptr(), self.tiles.as_ptr());
        // SAFETY (whole block): every tile load reads 16 rows of 64 bytes inside `a` (rows
        // `mb..mb + 32`, columns `32 t..32 t + 32` of `kp`) or inside one weight tile; every
        // store writes 16 rows of 64 bytes of `c`'s rows `mb - rows.start..` + 32, columns
        // `16 j..16 j + 32` (within `c_stride`, the caller's promise). The compiler never
        // uses tile registers.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack));
            for mb in rows.clone().step_by(2 * TILE) {
                for j in (0..self.n_tiles).step_by(2) {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    for t in 0..kt {
                        let a0 = a.add(mb * kp + t * TILE_K);
                        let a1 = a0.add(TILE * kp);
                        let b0 = b.add((j * kt + t) * TILE_WORDS);
                        let b1 = b.add(((j + 1) * kt + t) * TILE_WORDS);
                        asm!(
                            "tileloadd tmm4, [{a0} + {sa}*1]",
                            "tileloadd tmm5, [{a1} + {sa}*1]",
                            "tileloadd tmm6, [{b0} + {sb}*1]",
                            "tileloadd tmm7, [{b1} + {sb}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            a0 = in(reg) a0,
                            a1 = in(reg) a1,
                            b0 = in(reg) b0,
                            b1 = in(reg) b1,
                            sa = in(reg) sa,
                            sb = in(reg) sb,
                            options(nostack, readonly)
                        );
                    }
                    let c00 = c.add((mb - rows.start) * c_stride + j * TILE);
                    let c01 = c00.add(TILE);
                    let c10 = c00.add(TILE * c_stride);
                    let c11 = c10.add(TILE);
                    asm!(
                        "tilestored [{c00} + {sc}*1], tmm0",
                        "tilestored [{c01} + {sc}*1], tmm1",
                        "tilestored [{c10} + {sc}*1], tmm2",
                        "tilestored [{c11} + {sc}*1], tmm3",
                        c00 = in(reg) c00,
                        c01 = in(reg) c01,
                        c10 = in(reg) c10,
                        c11 = in(reg) c11,
                        sc = in(reg) sc,
                        options(nostack)
                    );
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn kernel(&self, _: &[u16], _: std::ops::Range<usize>, _: *mut f32, _: usize) {
        unreachable!("AMX exists on x86-64 only; `available` is false elsewhere")
    }
}

/// Rows `x` `[m, k]` rounded to bf16 into the first `k` numbers of each `kp`-wide row of `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn round_rows(x: &[f32], k: usize, a: &mut [u16], kp: usize) {
    for (row, dst) in x.chunks_exact(k).zip(a.chunks_exact_mut(kp)) {
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = to_bf16(v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn round_rows(_: &[f32], _: usize, _: &mut [u16], _: usize) {
    unreachable!("AMX exists on x86-64 only; `available` is false elsewhere")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product of bf16-rounded inputs in float64: what the tiles must give up to the
    /// order of float32 sums.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for l in 0..k {
                    s += from_bf16(to_bf16(x[i * k + l])) as f64
                        * from_bf16(to_bf16(w[l * n + j])) as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn rounding_to_bf16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: to the even one.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    /// Shapes that fill no tile exactly (rows, inner and output sizes all ragged) and ones
    /// that do: the tiles give the product of the rounded inputs to float32 rounding.
    #[test]
    fn tiles_give_the_product_of_the_rounded_inputs() {
        if !available() {
            eprintln!("AMX bf16 is not available on this CPU: the tile kernel is not run");
            return;
        }
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 36, 20),
            (32, 32, 32),
            (48, 64, 192),
            (130, 200, 70),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021)
                .collect();
            let packed = PackedBf16::pack(&w, k, n);
            let mut out = vec![f32::NAN; m * n + 3];
            packed.matmul(m, &x, &mut out);
            let want = reference(&x, &w, m, k, n);
            for (i, (&g, &r)) in out.iter().zip(&want).enumerate() {
                assert!(
                    (g - r).abs() <= 1e-5 * (1.0 + r.abs()),
                    "{m}x{k}x{n}: element {i}: {g} against {r}"
                );
            }
            // Nothing written past the product.
            assert!(out[m * n..].iter().all(|v| v.is_nan()));
        }
    }
}
