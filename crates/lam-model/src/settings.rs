//! One configuration system for every stage: named presets, TOML files and
//! `section.field=value` overrides, the same for stage 1, end-to-end training, encoder
//! pretraining, the controller, the planners and LAWM.
//!
//! A stage's settings are a plain struct ([`Settings`]) that serde reads with
//! `deny_unknown_fields`, so a typo in a file or an override names the key instead of being
//! ignored. The order is always: preset (or the file's `preset = "..."` key), then the
//! file's keys, then overrides in the order given; [`save`] writes the resolved settings
//! beside the run so that `--config RUN/FILE` repeats it.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A stage's settings: serialisable, with named presets and range checks.
pub trait Settings: Serialize + DeserializeOwned + Clone {
    /// What these settings configure, for messages (e.g. "LAWM").
    const WHAT: &'static str;
    /// The names [`Settings::preset`] accepts; the first is the default.
    const PRESETS: &'static [&'static str];
    /// The preset of this name.
    fn preset(name: &str) -> Result<Self>;
    /// Checks that serde cannot make: ranges, divisibility.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// The error for a preset name that `T` does not have.
pub fn unknown_preset<T: Settings>(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "unknown {} preset `{name}` (expected one of: {})",
        T::WHAT,
        T::PRESETS.join(", ")
    )
}

/// The one preset, `default`, of settings whose only preset is their [`Default`].
pub const ONLY_DEFAULT: &[&str] = &["default"];

/// [`Settings::preset`] for settings whose only preset is their [`Default`]
/// ([`ONLY_DEFAULT`]).
pub fn only_default<T: Settings + Default>(name: &str) -> Result<T> {
    match name {
        "default" => Ok(T::default()),
        other => Err(unknown_preset::<T>(other)),
    }
}

/// Preset (default: the first), then `file`, then `overrides`; validated.
pub fn resolve<T: Settings>(
    preset: Option<&str>,
    file: Option<&Path>,
    overrides: &[String],
) -> Result<T> {
    ensure!(
        preset.is_none() || file.is_none(),
        "give either a preset or a config file (a file picks its base with `preset = \"...\"`)"
    );
    let base = match file {
        Some(path) => from_toml_file::<T>(path)?,
        None => T::preset(preset.unwrap_or(T::PRESETS[0]))?,
    };
    with_overrides(base, overrides)
}

/// Reads a TOML file of `T`'s settings. Missing keys come from the file's `preset` key (else
/// the default preset); unknown keys are named with the file.
pub fn from_toml_file<T: Settings>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    from_toml_str(&text).with_context(|| format!("in config {}", path.display()))
}

/// [`from_toml_file`] on a string.
pub fn from_toml_str<T: Settings>(text: &str) -> Result<T> {
    let mut table: toml::Table = toml::from_str(text).context("not valid TOML")?;
    let base = match table.remove("preset") {
        Some(toml::Value::String(s)) => T::preset(&s)?,
        Some(other) => bail!("`preset` must be a string, got {other}"),
        None => T::preset(T::PRESETS[0])?,
    };
    from_table(merge(to_table(&base)?, table))
}

/// Applies `key=value` overrides, where `key` is a dotted path (`train.steps`, or `steps`
/// for settings without sections) and `value` is read as TOML (a bare word is a string).
pub fn with_overrides<T: Settings>(cfg: T, overrides: &[String]) -> Result<T> {
    let mut table = to_table(&cfg)?;
    for item in overrides {
        let (key, value) = item
            .split_once('=')
            .with_context(|| format!("override `{item}` must look like section.field=value"))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", value.trim()))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_string()));
        let context = || format!("in override `{item}` ({} settings)", T::WHAT);
        let added = set(&mut table, key.trim(), parsed).with_context(context)?;
        if added {
            // A key the settings did not show (an unknown one, or an unset optional field):
            // name the override now if serde does not know it.
            toml::Value::Table(table.clone())
                .try_into::<T>()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(context)?;
        }
    }
    from_table(table).context("after applying the overrides")
}

/// The value at a dotted `key` of `cfg`, as TOML (None when the key is absent, e.g. an
/// unset optional field).
pub fn get<T: Settings>(cfg: &T, key: &str) -> Result<Option<toml::Value>> {
    let table = to_table(cfg)?;
    let mut parts = key.split('.').peekable();
    let mut here = &table;
    while let Some(part) = parts.next() {
        match here.get(part) {
            Some(toml::Value::Table(t)) if parts.peek().is_some() => here = t,
            Some(v) if parts.peek().is_none() => return Ok(Some(v.clone())),
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Copies the values at `keys` from `from` into `into` (keys absent in `from` are removed
/// from `into`, so an unset optional field stays unset).
pub fn copy_keys<T: Settings>(into: T, from: &T, keys: &[&str]) -> Result<T> {
    let mut table = to_table(&into)?;
    for key in keys {
        match get(from, key)? {
            Some(v) => {
                set(&mut table, key, v)?;
            }
            None => remove(&mut table, key),
        }
    }
    from_table(table)
}

/// The settings as TOML text.
pub fn to_toml<T: Settings>(cfg: &T) -> Result<String> {
    Ok(toml::to_string_pretty(cfg)?)
}

/// Writes the settings as TOML, whole or not at all.
pub fn save<T: Settings>(cfg: &T, path: &Path) -> Result<()> {
    lam_data::shards::write_atomic(path, to_toml(cfg)?.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Sets the value at a dotted key; true when the key was not there before.
fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<bool> {
    let parts: Vec<&str> = key.split('.').collect();
    ensure!(
        parts.iter().all(|p| !p.is_empty()),
        "key `{key}` has an empty part"
    );
    let (last, sections) = parts.split_last().expect("split gives one part at least");
    let mut here = table;
    for (i, part) in sections.iter().enumerate() {
        here = match here.get_mut(*part) {
            Some(toml::Value::Table(t)) => t,
            Some(_) => bail!("`{}` is a value, not a section", parts[..=i].join(".")),
            None => bail!("unknown section `{}`", parts[..=i].join(".")),
        };
    }
    // A key the settings do not have is inserted anyway: deserialisation names it.
    Ok(here.insert(last.to_string(), value).is_none())
}

fn remove(table: &mut toml::Table, key: &str) {
    let parts: Vec<&str> = key.split('.').collect();
    let (last, sections) = parts.split_last().expect("split gives one part at least");
    let mut here = table;
    for part in sections {
        match here.get_mut(*part) {
            Some(toml::Value::Table(t)) => here = t,
            _ => return,
        }
    }
    here.remove(*last);
}

fn to_table<T: Serialize>(cfg: &T) -> Result<toml::Table> {
    Ok(toml::Table::try_from(cfg)?)
}

fn from_table<T: Settings>(table: toml::Table) -> Result<T> {
    let cfg: T = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{e}"))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Overlays `top` on `base` at every depth; keys absent from `base` are kept so that
/// deserialisation names them as unknown.
fn merge(mut base: toml::Table, top: toml::Table) -> toml::Table {
    for (k, v) in top {
        match (base.remove(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => {
                base.insert(k, toml::Value::Table(merge(b, t)));
            }
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        width: usize,
        name: String,
        seed: Option<u64>,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        steps: usize,
        inner: Inner,
    }

    impl Settings for Outer {
        const WHAT: &'static str = "test";
        const PRESETS: &'static [&'static str] = &["small", "big"];
        fn preset(name: &str) -> Result<Self> {
            let width = match name {
                "small" => 4,
                "big" => 64,
                _ => return Err(unknown_preset::<Self>(name)),
            };
            Ok(Self {
                steps: 10,
                inner: Inner {
                    width,
                    name: "a".into(),
                    seed: None,
                },
            })
        }
        fn validate(&self) -> Result<()> {
            ensure!(
                self.inner.width > 0,
                "inner.width must be > 0, got {}",
                self.inner.width
            );
            Ok(())
        }
    }

    #[test]
    fn preset_then_file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "preset = \"big\"\nsteps = 3\n[inner]\nname = \"b\"\n",
        )
        .unwrap();
        let c: Outer = resolve(None, Some(&path), &["inner.name=c".into()]).unwrap();
        assert_eq!(
            (c.steps, c.inner.width, c.inner.name.as_str()),
            (3, 64, "c")
        );
        let c: Outer = resolve(Some("big"), None, &["inner.seed=5".into()]).unwrap();
        assert_eq!((c.inner.width, c.inner.seed), (64, Some(5)));
        let c: Outer = resolve(None, None, &[]).unwrap();
        assert_eq!(c.inner.width, 4, "the first preset is the default");
        // What `save` writes reads back to the same settings.
        save(&c, &path).unwrap();
        assert_eq!(from_toml_file::<Outer>(&path).unwrap(), c);
    }

    #[test]
    fn unknown_keys_presets_and_bad_values_are_named() {
        let e = |r: Result<Outer>| format!("{:#}", r.unwrap_err());
        assert!(e(resolve(None, None, &["inner.widht=3".into()])).contains("widht"));
        assert!(
            e(resolve(None, None, &["nest.width=3".into()])).contains("unknown section `nest`")
        );
        assert!(
            e(resolve(None, None, &["inner.width=0".into()])).contains("inner.width must be > 0")
        );
        assert!(e(resolve(None, None, &["steps".into()])).contains("section.field=value"));
        let msg = e(resolve(Some("huge"), None, &[]));
        assert!(msg.contains("huge") && msg.contains("small, big"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[inner]\ncolour = 1\n").unwrap();
        let msg = e(from_toml_file(&path));
        assert!(msg.contains("colour") && msg.contains("bad.toml"), "{msg}");
    }

    #[test]
    fn copy_keys_takes_set_and_unset_values() {
        let mut from = Outer::preset("big").unwrap();
        from.inner.name = "x".into();
        let mut into = Outer::preset("small").unwrap();
        into.inner.seed = Some(9);
        let c = copy_keys(into, &from, &["inner.name", "inner.seed"]).unwrap();
        assert_eq!(
            (c.inner.name.as_str(), c.inner.seed, c.inner.width),
            ("x", None, 4)
        );
    }
}
