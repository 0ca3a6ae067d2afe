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

/// Part `index` of `of` of a source's items, for a job array (SLURM array, Kubernetes
/// indexed job): groups (a video, or all cameras of an episode) are dealt round-robin in the
/// source's listing order, so the parts are disjoint, together hold every item, and differ by
/// at most one group. Written `K/N` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub of: usize,
}

impl Part {
    /// The folder name of this part's output: `part-K-of-N`.
    pub fn name(&self) -> String {
        format!("part-{}-of-{}", self.index, self.of)
    }

    /// Parses a folder name written by [`Part::name`].
    pub fn from_name(name: &str) -> Option<Part> {
        let rest = name.strip_prefix("part-")?;
        let (k, n) = rest.split_once("-of-")?;
        format!("{k}/{n}").parse().ok()
    }

    /// The items of `items` (in listing order) that fall in this part.
    pub fn select<'a>(&self, items: &[&'a crate::Item]) -> Vec<&'a crate::Item> {
        let mut rank: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        items
            .iter()
            .filter(|it| {
                let next = rank.len();
                let r = *rank.entry(it.group.as_str()).or_insert(next);
                r % self.of == self.index - 1
            })
            .copied()
            .collect()
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.of)
    }
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("part `{s}` must look like K/N with 1 <= K <= N (e.g. 3/16)");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, of) = (
            k.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if index == 0 || index > of {
            return Err(bad());
        }
        Ok(Part { index, of })
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

    #[test]
    fn parts_are_disjoint_cover_every_item_and_keep_an_episode_together() {
        let item = |group: &str, camera: &str| crate::Item {
            id: format!("{group}/{camera}"),
            group: group.into(),
            path: "v.mp4".into(),
            window: crate::decode::Window {
                start: None,
                end: None,
            },
            episode: None,
            camera: Some(camera.into()),
        };
        let items: Vec<crate::Item> = (0..7)
            .flat_map(|e| {
                [
                    item(&format!("ep{e}"), "top"),
                    item(&format!("ep{e}"), "wrist"),
                ]
            })
            .collect();
        let refs: Vec<&crate::Item> = items.iter().collect();
        let mut seen = Vec::new();
        for k in 1..=3 {
            let part: Part = format!("{k}/3").parse().unwrap();
            assert_eq!(Part::from_name(&part.name()), Some(part));
            let got = part.select(&refs);
            // Both cameras of an episode land in the same part; sizes differ by one episode.
            assert!(got.len() == 4 || got.len() == 6, "{}", got.len());
            for it in &got {
                assert!(got_once(&mut seen, &it.id));
                assert_eq!(got.iter().filter(|o| o.group == it.group).count(), 2);
            }
        }
        assert_eq!(seen.len(), items.len());
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
    }

    fn got_once(seen: &mut Vec<String>, id: &str) -> bool {
        if seen.iter().any(|s| s == id) {
            return false;
        }
        seen.push(id.to_string());
        true
    }
}
