//! The command-line side of lam's one configuration system (`lam_model::settings`): every
//! training and planning command takes `--preset NAME`, `--config FILE` and `--set
//! KEY=VALUE`, and its own flags are shortcuts for keys of the same settings.
//!
//! Order: with neither `--preset` nor `--config`, the flags (their defaults are the default
//! preset's) then `--set`; with one of them, the preset or file, then only the flags typed on
//! this command line, then `--set`. The resolved settings are saved with the run.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use lam_model::settings::{self, Settings};

/// `--preset`, `--config`, `--set` of one command.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Named preset of this command's settings (the default preset otherwise).
    #[arg(long = "preset")]
    pub preset: Option<String>,
    /// TOML file of this command's settings (missing keys from its `preset = "..."` key, else
    /// the default preset); e.g. the `config.toml` a run folder holds.
    #[arg(long = "config", conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// Override any setting: `--set train.steps=1000` (repeatable; wins over flags and file).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

static MATCHES: OnceLock<ArgMatches> = OnceLock::new();

/// Keeps the parsed command line, so that commands can tell typed flags from defaults.
pub fn remember(matches: ArgMatches) {
    let _ = MATCHES.set(matches);
}

/// Whether the flag `id` (its field name) was typed on the command line of the command run.
pub fn given(id: &str) -> bool {
    let Some(mut m) = MATCHES.get() else {
        return false;
    };
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.try_get_raw(id).is_ok() && matches!(m.value_source(id), Some(ValueSource::CommandLine))
}

impl ConfigArgs {
    /// The command's settings. `from_flags` holds every flag's value; `flag_keys` maps each
    /// flag (its field name) to the key of the settings it sets.
    pub fn resolve<T: Settings>(&self, from_flags: T, flag_keys: &[(&str, &str)]) -> Result<T> {
        let base = if self.preset.is_none() && self.config.is_none() {
            from_flags
        } else {
            let base: T = settings::resolve(self.preset.as_deref(), self.config.as_deref(), &[])?;
            let typed: Vec<&str> = flag_keys
                .iter()
                .filter(|(id, _)| given(id))
                .map(|(_, key)| *key)
                .collect();
            settings::copy_keys(base, &from_flags, &typed)?
        };
        settings::with_overrides(base, &self.overrides)
    }
}
