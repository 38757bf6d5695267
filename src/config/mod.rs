//! Configuration: raw TOML + environment overrides (`CUBEGATE__SECTION__KEY`)
//! -> [`RawConfig`] (serde, unknown keys refused, `raw.rs`) -> checked
//! settings that belong to no stage (`validate.rs`: addresses, ids, the
//! upstream target, secret references). Each stage compiles its own section
//! into the immutable [`crate::snapshot::Snapshot`]; config itself knows
//! nothing about requests and imports no stage. Every failure is a
//! [`ConfigError`] naming the source, the key and the reason, never a secret
//! value.

mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use raw::*;
pub use validate::{
    UpstreamTarget, normalise_san, resolve_tenant_key, validate_caller_id, validate_settings,
    validate_tenant_id,
};

use crate::secret::{self, EnvSource, Secret};

/// A configuration problem: where (file), which key, why. One line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub source: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.source, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.source, self.key, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Where a configuration comes from.
pub enum ConfigSource<'a> {
    File(&'a Path),
    /// Embedded TOML text, named for error messages.
    Text {
        name: &'a str,
        toml: &'a str,
    },
}

impl ConfigSource<'_> {
    /// The name errors carry: the file's path, or the text's name.
    pub fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Text { name, .. } => (*name).to_string(),
        }
    }
    /// What relative paths and `file:` references are relative to.
    pub fn base_dir(&self) -> PathBuf {
        match self {
            ConfigSource::File(p) => p
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            ConfigSource::Text { .. } => PathBuf::from("."),
        }
    }
}

/// Read TOML plus `CUBEGATE__…` overrides from `env` into a [`RawConfig`].
pub fn load_raw(
    src: &ConfigSource<'_>,
    env: &HashMap<String, String>,
) -> Result<RawConfig, ConfigError> {
    use config::{Config, Environment as Env, File, FileFormat};
    let name = src.name();
    let file = match src {
        ConfigSource::File(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| ConfigError {
                source: name.clone(),
                key: String::new(),
                reason: format!("cannot read: {}", e.kind()),
            })?;
            File::from_str(&text, FileFormat::Toml)
        }
        ConfigSource::Text { toml, .. } => File::from_str(toml, FileFormat::Toml),
    };
    let overrides: HashMap<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("CUBEGATE__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let built = Config::builder()
        .add_source(file)
        .add_source(
            Env::with_prefix("CUBEGATE")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| config_crate_error(&name, e))?;
    built
        .try_deserialize::<RawConfig>()
        .map_err(|e| config_crate_error(&name, e))
}

fn config_crate_error(source: &str, e: config::ConfigError) -> ConfigError {
    // The config crate formats as "<reason> for key `a.b`" / "... in <origin>";
    // split the key out so our one line reads file: key: reason.
    let text = e.to_string();
    let (reason, key) = match text.find(" for key `") {
        Some(i) => {
            let rest = &text[i + 10..];
            let key = rest.split('`').next().unwrap_or("").to_string();
            (text[..i].to_string(), key)
        }
        None => (text.clone(), String::new()),
    };
    ConfigError {
        source: source.to_string(),
        key,
        reason,
    }
}

/// Where a config being compiled comes from: the name its errors carry, the
/// environment `env:` references resolve in, and the directory relative
/// paths and `file:` references are anchored at. Each stage's `compile`
/// takes one.
pub struct Origin<'a> {
    pub source: &'a str,
    pub env: &'a dyn EnvSource,
    pub base_dir: &'a Path,
}

impl Origin<'_> {
    /// A [`ConfigError`] at `key` of this source.
    pub fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            source: self.source.to_string(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Resolve the secret reference `r` found at `key`.
    pub fn resolve(&self, key: impl Into<String>, r: &str) -> Result<Secret, ConfigError> {
        secret::resolve(r, self.env, self.base_dir).map_err(|e| self.err(key, e.to_string()))
    }

    /// `p` relative to the config's directory (absolute paths stay).
    pub fn path(&self, p: &Path) -> PathBuf {
        self.base_dir.join(p)
    }
}

/// The process environment as a map (for `CUBEGATE__` overrides).
pub fn process_env() -> HashMap<String, String> {
    std::env::vars().collect()
}
