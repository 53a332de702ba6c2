//! Where key-value data lives (`--store`): in this process, or in Redis.

use std::fmt;

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
    /// configuration refuses it ([`Location::check`]). Parsing never fails
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

    /// Refuses a value that names no store.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Location::Invalid(why) => Err(why.clone()),
            _ => Ok(()),
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
