//! Deterministic train/validation split by video or episode id.

use serde::{Deserialize, Serialize};

/// Which side of the split an item is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    Train,
    Val,
}

/// Hash-based split: an id goes to validation when its hash, mapped to
/// [0, 1), is below `val_fraction`. The hash (FNV-1a 64 over the seed's
/// little-endian bytes then the id's UTF-8 bytes, finished with the
/// SplitMix64 mixer) is fixed by this crate, so the split is the same on
/// every run, machine and platform, and adding items never moves others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Split {
    /// Fraction of ids in validation. Default 0.02 (the paper's 98/2).
    pub val_fraction: f64,
    /// Changes which ids land in validation. Default 0.
    pub seed: u64,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            val_fraction: 0.02,
            seed: 0,
        }
    }
}

impl Split {
    /// The id's position in [0, 1).
    pub fn unit(&self, id: &str) -> f64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.seed.to_le_bytes().iter().chain(id.as_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // SplitMix64 finaliser: spreads FNV's weak low bits.
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        (h >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Train or validation for `id` (a video's relative path, a LeRobot
    /// episode's group id...).
    pub fn subset(&self, id: &str) -> Subset {
        if self.unit(id) < self.val_fraction {
            Subset::Val
        } else {
            Subset::Train
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_close_to_fraction() {
        let s = Split::default();
        let ids: Vec<String> = (0..20_000).map(|i| format!("video_{i}.webm")).collect();
        let first: Vec<Subset> = ids.iter().map(|i| s.subset(i)).collect();
        let again: Vec<Subset> = ids.iter().map(|i| s.subset(i)).collect();
        assert_eq!(first, again);
        let val = first.iter().filter(|&&x| x == Subset::Val).count() as f64 / ids.len() as f64;
        assert!((val - 0.02).abs() < 0.005, "val fraction {val}");
        // Pinned values (also computed independently in Python): a change of
        // the hash would silently reshuffle every dataset's split.
        assert_eq!(s.unit("video_0.webm"), 0.8543774704228511);
        assert_eq!(s.unit("episode_000000"), 0.41675343510244534);
        assert_eq!(s.unit("episode_000001"), 0.9529203665618473);
        let other = Split { seed: 7, ..s };
        let moved = ids
            .iter()
            .filter(|i| other.subset(i) != s.subset(i))
            .count();
        assert!(moved > 0);
    }
}
