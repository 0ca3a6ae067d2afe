//! Instruction embedding: a deterministic built-in embedding of the suite's vocabulary.
//!
//! No sentence encoder ships with the project, so instructions are embedded by a fixed
//! bag-of-words: every word of [`VOCAB`] (the words the simulator's instructions use, plus
//! the task names used as constant instructions) owns a unit-variance Gaussian vector drawn
//! from a generator seeded by the word's index; a word outside the vocabulary maps to the
//! `<unk>` vector. A sentence is the mean of its word vectors, scaled to unit length. The
//! embedding is not trained and is identical in every process, so checkpoints stay valid.
//!
//! Conditioning rule ([`conditioning_text`]): the language task `sort` is conditioned on
//! its episode instruction ("push the red box into the blue zone"); the other tasks, whose
//! instruction carries no choice, are conditioned on a constant per-task instruction (the
//! task's name).

use lam_sim::Task;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

/// The suite's instruction vocabulary (lower case).
pub const VOCAB: &[&str] = &[
    "<unk>", "reach", "push", "pusht", "sort", "go", "through", "the", "door", "to", "green",
    "spot", "in", "left", "right", "room", "orange", "box", "onto", "target", "t", "block",
    "shaped", "red", "blue", "yellow", "purple", "disc", "into", "zone",
];

/// The text a policy is conditioned on for an episode of `task` whose instruction is
/// `instruction`; `None` (a dataset of unknown origin) keeps the instruction.
pub fn conditioning_text(task: Option<Task>, instruction: &str) -> String {
    match task {
        Some(Task::Sort) | None => instruction.to_string(),
        Some(t) => t.name().to_string(),
    }
}

/// Splits text into lower-case vocabulary words ("T-shaped" gives "t", "shaped").
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The fixed word table and sentence embedding.
#[derive(Clone, Debug)]
pub struct InstructionEmbedder {
    dim: usize,
    table: Vec<Vec<f32>>,
}

impl InstructionEmbedder {
    pub fn new(dim: usize) -> Self {
        let table = (0..VOCAB.len())
            .map(|i| {
                let mut rng = StdRng::seed_from_u64(0x1a3e_0000 + i as u64);
                (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect()
            })
            .collect();
        Self { dim, table }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    fn index(word: &str) -> usize {
        VOCAB.iter().position(|v| *v == word).unwrap_or(0)
    }

    /// Unit-length mean of the word vectors of `text` (the `<unk>` vector for empty text).
    pub fn embed(&self, text: &str) -> Vec<f32> {
        let ws = words(text);
        let mut out = vec![0.0f32; self.dim];
        let ids: Vec<usize> = if ws.is_empty() {
            vec![0]
        } else {
            ws.iter().map(|w| Self::index(w)).collect()
        };
        for &i in &ids {
            for (o, v) in out.iter_mut().zip(&self.table[i]) {
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
    fn conditioning_rule() {
        assert_eq!(
            conditioning_text(Some(Task::Push), "push the orange box onto the target"),
            "push"
        );
        assert_eq!(
            conditioning_text(Some(Task::Sort), "push the red box into the blue zone"),
            "push the red box into the blue zone"
        );
    }
}
