//! Every trained model is written as a Hugging Face style folder (`config.json`,
//! `model.safetensors`, `README.md` with the command that made it) and taken by path where a
//! model is taken: here each folder is shared as its two files alone and used from there.

mod common;

use std::path::{Path, PathBuf};

use common::{TINY_ENCODER_PRETRAIN, TINY_LABELED_SHARDS, lam_ok as lam};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Checks the model folder `dir` and copies its config and weights alone to `to`.
fn share(dir: &Path, kind: &str, command: &str, to: PathBuf) -> PathBuf {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["lam_model"], kind, "{}", dir.display());
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(card.contains(command), "{card}");
    std::fs::create_dir_all(&to).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir.join(f), to.join(f)).unwrap();
    }
    to
}

#[test]
fn every_trained_model_is_a_shareable_folder_taken_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name);

    // Stage 1, then a controller fitted on the shared stage-1 folder.
    let shards = p("shards");
    let mut args = TINY_LABELED_SHARDS.to_vec();
    args.extend(["--out", s(&shards)]);
    lam(&args);
    let run = p("run");
    lam(&[
        "train",
        "--data",
        s(&shards),
        "--run",
        s(&run),
        "--steps",
        "10",
        "--quiet",
    ]);
    let lam_model = share(
        &run.join("model"),
        "latent-action-model",
        "lam train --data",
        p("shared-lam"),
    );
    let report = lam(&[
        "eval",
        "--run",
        s(&lam_model),
        "--data",
        s(&shards),
        "--out",
        s(&p("eval.json")),
    ]);
    assert!(report.contains("ratio"), "{report}");
    let ctrl = p("ctrl");
    lam(&[
        "control",
        "fit",
        "--run",
        s(&lam_model),
        "--data",
        s(&shards),
        "--out",
        s(&ctrl),
        "--steps",
        "10",
    ]);
    share(
        &ctrl.join("model"),
        "controller",
        "lam control fit",
        p("shared-ctrl"),
    );

    // LAWM: the pretrained policy shared, finetuned from, and the finetuned one evaluated.
    let rec = p("rec");
    lam(&[
        "sim",
        "record",
        "--task",
        "reach",
        "--episodes",
        "2",
        "--size",
        "32",
        "--out",
        s(&rec),
    ]);
    let pre = p("pre");
    lam(&[
        "lawm",
        "pretrain",
        "--data",
        s(&rec),
        "--out",
        s(&pre),
        "--steps",
        "2",
        "--quiet",
    ]);
    let shared_pre = share(
        &pre.join("model"),
        "lawm-policy",
        "lam lawm pretrain",
        p("shared-pre"),
    );
    let ft = p("ft");
    lam(&[
        "lawm",
        "finetune",
        "--data",
        s(&rec),
        "--init",
        s(&shared_pre),
        "--out",
        s(&ft),
        "--steps",
        "2",
        "--quiet",
    ]);
    let shared_ft = share(
        &ft.join("model"),
        "lawm-policy",
        "lam lawm finetune",
        p("shared-ft"),
    );
    let eval = lam(&[
        "lawm",
        "eval",
        "--checkpoint",
        s(&shared_ft),
        "--episodes",
        "1",
    ]);
    assert!(eval.contains("success"), "{eval}");

    // The sim encoder's own folder is a model folder.
    let enc = p("enc");
    let mut args = TINY_ENCODER_PRETRAIN.to_vec();
    args.extend(["--out", s(&enc)]);
    lam(&args);
    let shared_enc = share(
        &enc.join("encoder"),
        "sim-encoder",
        "lam encoder pretrain",
        p("shared-enc"),
    );
    let info = lam(&["encoder", "info", s(&shared_enc)]);
    assert!(info.contains("lam-sim-encoder"), "{info}");
}
