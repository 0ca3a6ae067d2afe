//! Instruction embedding: a deterministic built-in bag-of-words, open to any dataset's words.
//!
//! No sentence encoder ships with the project, so instructions are embedded by a fixed
//! bag-of-words: every word owns a unit-variance Gaussian vector drawn from a generator seeded
//! by the word itself (the simulated suite's words, [`SUITE_WORDS`], keep the seeds of their
//! index in that list, so earlier checkpoints read them as before). A sentence is the mean of
//! its word vectors, scaled to unit length. The embedding is not trained and is identical in
//! every process.
//!
//! Training embeds every word of its data ([`InstructionEmbedder::new`]) and saves the words
//! it saw in the checkpoint ([`vocabulary_of`]); a policy acting later maps words it never
//! saw to the `<unk>` vector ([`InstructionEmbedder::with_vocabulary`]) and can name them
//! ([`InstructionEmbedder::unknown_words`]). A real dataset's task strings are words like
//! any other: nothing ties the embedding to the simulator.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// The simulated suite's instruction words (lower case); `<unk>` first. A checkpoint saved
/// without a vocabulary (before vocabularies were saved) knows these.
pub const SUITE_WORDS: &[&str] = &[
    "<unk>", "reach", "push", "pusht", "sort", "go", "through", "the", "door", "to", "green",
    "spot", "in", "left", "right", "room", "orange", "box", "onto", "target", "t", "block",
    "shaped", "red", "blue", "yellow", "purple", "disc", "into", "zone",
];

/// Splits text into lower-case words ("T-shaped" gives "t", "shaped").
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The sorted distinct words of `texts` (what a checkpoint saves as its vocabulary).
pub fn vocabulary_of<'a>(texts: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    texts
        .into_iter()
        .flat_map(words)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Seed of a word's vector: its index among the suite's words, else a hash of its bytes
/// (64-bit FNV-1a, with the top bit set so no word takes a suite word's seed).
fn seed_of(word: &str) -> u64 {
    if let Some(i) = SUITE_WORDS.iter().position(|v| *v == word) {
        return 0x1a3e_0000 + i as u64;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | (1 << 63)
}

/// The fixed word vectors and sentence embedding.
#[derive(Clone, Debug)]
pub struct InstructionEmbedder {
    dim: usize,
    /// Words with their own vector; `None`: every word (training).
    known: Option<BTreeSet<String>>,
}

impl InstructionEmbedder {
    /// Every word its own vector (what training uses).
    pub fn new(dim: usize) -> Self {
        Self { dim, known: None }
    }

    /// Only the words of `vocabulary` (a checkpoint's; the suite's words when it is empty)
    /// have their own vector; others map to `<unk>`.
    pub fn with_vocabulary(dim: usize, vocabulary: &[String]) -> Self {
        let known = if vocabulary.is_empty() {
            SUITE_WORDS.iter().map(|w| w.to_string()).collect()
        } else {
            vocabulary.iter().cloned().collect()
        };
        Self {
            dim,
            known: Some(known),
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn is_known(&self, word: &str) -> bool {
        self.known.as_ref().is_none_or(|k| k.contains(word))
    }

    /// The words of `text` that map to `<unk>`.
    pub fn unknown_words(&self, text: &str) -> Vec<String> {
        words(text)
            .into_iter()
            .filter(|w| !self.is_known(w))
            .collect()
    }

    fn vector(&self, word: &str) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed_of(word));
        (0..self.dim)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }

    /// Unit-length mean of the word vectors of `text` (the `<unk>` vector for empty text).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let mut ws: Vec<String> = words(text)
            .into_iter()
            .map(|w| if self.is_known(&w) { w } else { "<unk>".into() })
            .collect();
        if ws.is_empty() {
            ws.push("<unk>".into());
        }
        let mut out = vec![0.0f32; self.dim];
        for w in &ws {
            for (o, v) in out.iter_mut().zip(self.vector(w)) {
                *o += v;
            }
        }
        let norm = out.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        out.iter_mut().for_each(|v| *v /= norm);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let e = InstructionEmbedder::new(16);
        let a = e.embed("push the red box into the blue zone");
        assert_eq!(
            a,
            InstructionEmbedder::new(16).embed("Push the red box into the blue zone.")
        );
        let b = e.embed("push the green disc into the purple zone");
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
        let n: f32 = a.iter().map(|v| v * v).sum();
        assert!((n - 1.0).abs() < 1e-5);
        assert_eq!(words("push the T block onto the T-shaped target").len(), 9);
    }

    #[test]
    fn any_dataset_words_are_distinct_and_unseen_words_are_unknown() {
        let open = InstructionEmbedder::new(16);
        // Words outside the suite (a real dataset's task strings) get vectors of their own.
        let a = open.embed("open the drawer");
        let b = open.embed("close the drawer");
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-2));
        // The suite's words keep the vectors of the index-seeded table they had.
        let mut rng = StdRng::seed_from_u64(0x1a3e_0000 + 2);
        let push: Vec<f32> = (0..16).map(|_| StandardNormal.sample(&mut rng)).collect();
        let n = push.iter().map(|v| v * v).sum::<f32>().sqrt();
        let e = open.embed("push");
        assert!(push.iter().zip(&e).all(|(p, q)| (p / n - q).abs() < 1e-6));
        // A checkpoint's vocabulary: what training saw; other words are <unk>.
        let vocab = vocabulary_of(["Open the drawer.", "close the drawer"]);
        assert_eq!(vocab, ["close", "drawer", "open", "the"]);
        let acting = InstructionEmbedder::with_vocabulary(16, &vocab);
        assert_eq!(acting.embed("open the drawer"), a);
        assert_eq!(acting.unknown_words("open the oven"), ["oven"]);
        assert_eq!(
            acting.embed("open the oven"),
            acting.embed("open the fridge"),
            "unseen words are both <unk>"
        );
        assert_ne!(acting.embed("open the oven"), open.embed("open the oven"));
        // No saved vocabulary (older checkpoints): the suite's words.
        let old = InstructionEmbedder::with_vocabulary(16, &[]);
        assert!(old.unknown_words("push the red box").is_empty());
        assert_eq!(old.unknown_words("open the drawer"), ["open", "drawer"]);
    }
}
