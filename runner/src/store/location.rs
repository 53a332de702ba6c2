//! Where key-value data lives (`--store`): in this process, or in Redis.

use std::fmt;
use std::path::PathBuf;

use super::memory::journal::{DataDir, Fsync};

/// The store a runner opens, decided once from `--store`, `--data-dir` and
/// `--fsync`, when the configuration is validated: the runner opens what
/// this says and the start-up log names it.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In this process only: gone at exit.
    Memory,
    /// In this process, every write journaled to a data directory.
    Durable { dir: PathBuf, fsync: Fsync },
    /// In a Redis, or a Redis Cluster through these seeds, that several
    /// runners share.
    Redis { urls: Vec<String>, cluster: bool },
}

impl StoreConfig {
    /// The store the settings name, or why they name none.
    pub fn decide(location: &Location, data_dir: &DataDir, fsync: Fsync) -> Result<Self, String> {
        match (location, &data_dir.0) {
            (Location::Invalid(why), _) => Err(why.clone()),
            (Location::Memory, None) => Ok(StoreConfig::Memory),
            (Location::Memory, Some(dir)) => Ok(StoreConfig::Durable {
                dir: dir.clone(),
                fsync,
            }),
            (Location::Redis { .. }, Some(_)) => Err(format!(
                "data-dir keeps the in-memory store on this machine's disk, and store {} keeps \
                 data in Redis: give one or the other",
                location.redacted()
            )),
            (Location::Redis { urls, cluster }, None) => Ok(StoreConfig::Redis {
                urls: urls.clone(),
                cluster: *cluster,
            }),
        }
    }

    /// Whether a read may wait on something outside this process (a
    /// network): reads in memory never do, with or without a data
    /// directory, whose journal only writes wait on.
    pub fn reads_wait(&self) -> bool {
        matches!(self, StoreConfig::Redis { .. })
    }

    /// The store as the start-up log names it, any password hidden.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Memory => "memory".into(),
            StoreConfig::Durable { dir, fsync } => format!(
                "{} (fsync {})",
                dir.display(),
                crate::settings::Setting::show(fsync)
            ),
            StoreConfig::Redis { urls, cluster } => Location::Redis {
                urls: urls.clone(),
                cluster: *cluster,
            }
            .redacted(),
        }
    }
}

// Debug shows what `describe` does, so no password reaches a log.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Where key-value data lives (`--store`): in this process, or in Redis.
#[derive(Clone, PartialEq, Eq, PartialOrd)]
pub enum Location {
    Memory,
    /// One Redis, or with `cluster` a Redis Cluster reached through these
    /// seed nodes (their URLs as redis-rs reads them).
    Redis {
        urls: Vec<String>,
        cluster: bool,
    },
    /// A value that is neither, and why, its password already hidden: the
    /// configuration refuses it ([`StoreConfig::decide`]). Parsing never fails
    /// itself, since the command-line parser would echo the value whole.
    Invalid(String),
}

/// The scheme suffix that makes one URL a Cluster's seed.
const CLUSTER: &str = "+cluster://";

impl Location {
    /// As written on the command line, any password replaced by `***`, for
    /// logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            Location::Memory => "memory".into(),
            Location::Redis { urls, cluster } => {
                let shown: Vec<String> = urls.iter().map(|u| redact(u)).collect();
                match shown.as_slice() {
                    [one] if *cluster => one.replacen("://", CLUSTER, 1),
                    _ => shown.join(","),
                }
            }
            Location::Invalid(_) => "invalid".into(),
        }
    }
}

/// `url` with the password of its user part, if any, hidden.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The user part ends at the last `@` before any query or fragment: a
    // password may hold a `/`.
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => {
            let user = rest[..at]
                .split_once(':')
                .map_or(&rest[..at], |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_string(),
    }
}

// Debug shows what `redacted` does: a config printed in a log or a panic
// never carries the password.
impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl crate::settings::Setting for Location {
    fn parse_flag(text: &str) -> Result<Self, String> {
        Ok(Self::parse(text).unwrap_or_else(Location::Invalid))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        crate::settings::from_toml_string(value, "memory or a redis:// URL")
    }

    fn show(&self) -> String {
        self.redacted()
    }

    fn is_zero(&self) -> bool {
        false
    }
}

impl Location {
    fn parse(text: &str) -> Result<Self, String> {
        if text == "memory" {
            return Ok(Location::Memory);
        }
        let mut cluster = false;
        let mut urls: Vec<String> = Vec::new();
        for url in text.split(',').map(str::trim) {
            let url = match url.split_once(CLUSTER) {
                Some((scheme @ ("redis" | "rediss"), rest)) => {
                    cluster = true;
                    format!("{scheme}://{rest}")
                }
                _ => url.to_string(),
            };
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(format!(
                    "{:?} is neither memory nor a redis://, rediss:// or redis+cluster:// URL",
                    redact(&url)
                ));
            }
            ::redis::Client::open(url.as_str())
                .map_err(|e| format!("{:?} is not a Redis URL: {e}", redact(&url)))?;
            urls.push(url);
        }
        cluster |= urls.len() > 1;
        Ok(Location::Redis { urls, cluster })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_is_decided_once_and_shown_without_its_password() {
        let (none, dir) = (DataDir(None), DataDir(Some("/data".into())));
        assert_eq!(
            StoreConfig::decide(&Location::Memory, &none, Fsync::Always),
            Ok(StoreConfig::Memory)
        );
        let durable = StoreConfig::decide(&Location::Memory, &dir, Fsync::Always).unwrap();
        assert_eq!(
            durable,
            StoreConfig::Durable {
                dir: "/data".into(),
                fsync: Fsync::Always
            }
        );
        assert_eq!(durable.describe(), "/data (fsync always)");
        let redis = Location::parse("redis://:secret@cache:6379").unwrap();
        let shared = StoreConfig::decide(&redis, &none, Fsync::Always).unwrap();
        assert_eq!(shared.describe(), "redis://:***@cache:6379");
        assert_eq!(format!("{shared:?}"), "redis://:***@cache:6379");
        assert_eq!(
            StoreConfig::decide(&redis, &dir, Fsync::Always),
            Err(
                "data-dir keeps the in-memory store on this machine's disk, and store \
                 redis://:***@cache:6379 keeps data in Redis: give one or the other"
                    .into()
            )
        );
        let invalid = Location::Invalid("\"x\" is neither".into());
        assert_eq!(
            StoreConfig::decide(&invalid, &none, Fsync::Always),
            Err("\"x\" is neither".into())
        );
    }
}
