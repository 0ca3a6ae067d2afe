//! Trained models as Hugging Face style folders, to share the way models are shared:
//! `config.json` (what the model is, `lam_model`, and everything needed to build it),
//! `model.safetensors` (the weights) and `README.md` (a model card: the command that made
//! the model, its measured figures, how to use it).
//!
//! Every training command writes one: `lam train` and `lam train --frames` to `RUN/model/`,
//! `lam control fit` to `OUT/model/`, `lam lawm pretrain|finetune` to `RUN/model/` (the
//! policy), and `lam encoder pretrain` / `lam train --frames` make the encoder folder itself
//! one. Every command that takes a model takes such a folder by path: the loaders read
//! [`read_config`] when the folder has no checkpoint files of its own.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Map, Value};

/// The file holding the model's kind and settings.
pub const CONFIG_FILE: &str = "config.json";
/// The weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The model card.
pub const README_FILE: &str = "README.md";
/// The key of `config.json` naming the kind of lam model.
pub const KIND_KEY: &str = "lam_model";
/// The folder a training command writes its model folder to, inside its run folder.
pub const MODEL_DIR: &str = "model";

/// Kinds of lam model, as `config.json`'s `lam_model` names them.
pub mod kind {
    /// Stage 1: inverse-dynamics model + world model (`lam train`).
    pub const LATENT_ACTION_MODEL: &str = "latent-action-model";
    /// The sim encoder (`lam encoder pretrain`, `lam train --frames`).
    pub const SIM_ENCODER: &str = "sim-encoder";
    /// Controller between robot actions and latent actions (`lam control fit`).
    pub const CONTROLLER: &str = "controller";
    /// LAWM imitation policy (`lam lawm pretrain|finetune`).
    pub const LAWM_POLICY: &str = "lawm-policy";
}

/// What the model card says besides the config.
pub struct Card<'a> {
    /// One line: what the model is.
    pub summary: &'a str,
    /// Measured figures, as (name, value) rows.
    pub figures: &'a [(String, String)],
    /// How to use it: lam commands taking the folder (`MODEL` stands for its path).
    pub usage: &'a [&'a str],
}

/// The `lam_model` kind of a folder's `config.json`, if it is a lam model folder.
pub fn kind_of(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get(KIND_KEY)?.as_str().map(str::to_string)
}

/// The `config.json` of a lam model folder of kind `kind`, without the `lam_*` keys (the
/// same object the kind's own checkpoint file holds).
pub fn read_config(dir: &Path, kind: &str) -> Result<Value> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut v: Map<String, Value> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON object", path.display()))?;
    let found = v.get(KIND_KEY).and_then(Value::as_str).unwrap_or("none");
    ensure!(
        found == kind,
        "{} holds a `{found}` model, not a `{kind}`",
        path.display()
    );
    v.retain(|k, _| !k.starts_with("lam_"));
    Ok(Value::Object(v))
}

/// Writes the model folder `dir` whole or not at all: `config` (a JSON object: what the
/// model's own loader reads) with the kind and lam's version added, the weights copied from
/// `weights`, and the model card. A folder already at `dir` is replaced only if it is a lam
/// model folder (lam never deletes what it did not write).
pub fn write(dir: &Path, kind: &str, config: &Value, weights: &Path, card: &Card) -> Result<()> {
    let cfg = config_json(kind, config)?;
    if dir.exists() {
        ensure!(
            kind_of(dir).is_some(),
            "{} exists and is not a lam model folder; not replacing it",
            dir.display()
        );
    }
    let tmp = sibling(dir, "tmp")?;
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    std::fs::write(tmp.join(CONFIG_FILE), cfg)?;
    std::fs::copy(weights, tmp.join(WEIGHTS_FILE))
        .with_context(|| format!("cannot copy {}", weights.display()))?;
    std::fs::write(tmp.join(README_FILE), model_card(kind, config, card))?;
    // Swap: the old folder leaves before the new one arrives; a crash between the two
    // renames leaves the complete new folder at `tmp`, never a half-written `dir`.
    let old = sibling(dir, "old")?;
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old)?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot write {}", dir.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The text of `config.json`: the kind and lam's version, then `config`'s fields.
fn config_json(kind: &str, config: &Value) -> Result<String> {
    let Value::Object(fields) = config else {
        bail!("a model folder's config must be a JSON object");
    };
    let mut cfg = Map::new();
    cfg.insert(KIND_KEY.into(), Value::String(kind.into()));
    cfg.insert("lam_version".into(), env!("CARGO_PKG_VERSION").into());
    cfg.extend(fields.clone());
    Ok(serde_json::to_string_pretty(&Value::Object(cfg))?)
}

/// Adds `config.json` and `README.md` to a folder that already holds the model's weights as
/// `model.safetensors` (the sim encoder's checkpoint folder), making it a model folder.
pub fn describe_in_place(dir: &Path, kind: &str, config: &Value, card: &Card) -> Result<()> {
    let cfg = config_json(kind, config)?;
    ensure!(
        dir.join(WEIGHTS_FILE).exists(),
        "{} has no {WEIGHTS_FILE}",
        dir.display()
    );
    lam_data::shards::write_atomic(&dir.join(CONFIG_FILE), cfg.as_bytes())?;
    lam_data::shards::write_atomic(
        &dir.join(README_FILE),
        model_card(kind, config, card).as_bytes(),
    )
}

/// The numbers in `value` (objects and arrays flattened to dotted names, at most `depth`
/// levels down), as model-card figures named `prefix.key...`.
pub fn numeric_figures(prefix: &str, value: &Value, depth: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let shown = if n.is_f64() {
                format!("{x:.4}")
            } else {
                n.to_string()
            };
            out.push((prefix.to_string(), shown));
        }
        Value::Object(m) if depth > 0 => {
            for (k, v) in m {
                out.extend(numeric_figures(&format!("{prefix}.{k}"), v, depth - 1));
            }
        }
        _ => {}
    }
    out
}

fn sibling(dir: &Path, tag: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no folder name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{}.{tag}", name.to_string_lossy())))
}

/// The command line of this process, quoted where a shell would need it.
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "lam".to_string() } else { a };
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn model_card(kind: &str, config: &Value, card: &Card) -> String {
    let mut s = format!(
        "---\nlibrary_name: lam\ntags:\n- lam\n- {kind}\n- world-model\n- robotics\n---\n\n# {kind}\n\n{}\n\n",
        card.summary
    );
    s += &format!(
        "## How it was made\n\n```sh\n{}\n```\n\nlam {}.\n\n",
        command_line(),
        env!("CARGO_PKG_VERSION")
    );
    if !card.figures.is_empty() {
        s += "## Measured\n\n| figure | value |\n| --- | ---: |\n";
        for (k, v) in card.figures {
            s += &format!("| {k} | {v} |\n");
        }
        s += "\n";
    }
    if !card.usage.is_empty() {
        s += "## Use\n\n```sh\n";
        for u in card.usage {
            s += u;
            s += "\n";
        }
        s += "```\n\n";
    }
    s += &format!(
        "## Files\n\n- `{CONFIG_FILE}`: `{KIND_KEY}` = `{kind}` and the settings to build it\n\
         - `{WEIGHTS_FILE}`: the weights\n\n## Settings\n\n```json\n{}\n```\n",
        serde_json::to_string_pretty(config).unwrap_or_default()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_folder_is_written_whole_and_reads_back_its_config() {
        let tmp = tempfile::tempdir().unwrap();
        let weights = tmp.path().join("w.safetensors");
        std::fs::write(&weights, b"weights").unwrap();
        let dir = tmp.path().join("model");
        let cfg = serde_json::json!({"step": 3, "config": {"a": 1}});
        let figures = [("val loss".to_string(), "0.125".to_string())];
        let card = Card {
            summary: "A test model.",
            figures: &figures,
            usage: &["lam eval --run MODEL"],
        };
        write(&dir, kind::CONTROLLER, &cfg, &weights, &card).unwrap();
        assert_eq!(kind_of(&dir).as_deref(), Some(kind::CONTROLLER));
        assert_eq!(read_config(&dir, kind::CONTROLLER).unwrap(), cfg);
        let e = read_config(&dir, kind::LAWM_POLICY)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`controller` model"), "{e}");
        assert_eq!(std::fs::read(dir.join(WEIGHTS_FILE)).unwrap(), b"weights");
        let readme = std::fs::read_to_string(dir.join(README_FILE)).unwrap();
        assert!(readme.starts_with("---\nlibrary_name: lam"), "{readme}");
        assert!(readme.contains("| val loss | 0.125 |") && readme.contains("## How it was made"));
        // Written again: replaced whole, no temporary folders left.
        write(&dir, kind::CONTROLLER, &cfg, &weights, &card).unwrap();
        let names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A folder lam did not write is never replaced.
        let other = tmp.path().join("mine");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"keep").unwrap();
        assert!(write(&other, kind::CONTROLLER, &cfg, &weights, &card).is_err());
        assert!(other.join("notes.txt").exists());
    }
}
