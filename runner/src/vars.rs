//! A tenant's configuration and secrets: named strings its guests read
//! through `wasi:config/store` (both published versions) and Spin's
//! variables (`fermyon:spin/variables@2.0.0`, `spin:variables@3.0.0`).
//!
//! Both kinds are read alike by a guest. A secret differs in where it
//! comes from (a file or an environment variable, never inline text) and
//! in never being shown: not by the admin API (names only), not in logs,
//! not in `Debug` output, not in errors, which name it and never quote it.
//! Names follow Spin's rule, the strictest of the interfaces': lowercase
//! ASCII letters, digits and single underscores, starting with a letter and
//! ending with a letter or a digit. They are checked when the tenant is
//! deployed, with the tenant's size limits.

use std::collections::BTreeMap;
use std::sync::Arc;

/// A secret's value: shown as `<secret>` by `Debug`, compared in constant
/// time with nothing, and kept only in memory once read.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The bounds a tenant's variables are checked against.
#[derive(Clone, Copy, Debug)]
pub struct VarLimits {
    pub max_entries: usize,
    pub max_name_bytes: usize,
    pub max_value_bytes: usize,
}

/// What a name is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Config,
    Secret,
}

/// A tenant's variables: config and secrets under one set of names.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Variables {
    config: BTreeMap<String, Arc<str>>,
    secrets: BTreeMap<String, Secret>,
}

impl std::fmt::Debug for Variables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Variables")
            .field("config", &self.config)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Variables {
    /// The variables `config` and `secrets`, unchecked: see
    /// [`Variables::check`].
    pub fn new(config: BTreeMap<String, String>, secrets: BTreeMap<String, Secret>) -> Self {
        Self {
            config: config.into_iter().map(|(k, v)| (k, v.into())).collect(),
            secrets,
        }
    }

    /// Checks the names against Spin's rule and everything against
    /// `limits`; an error names the field (`config.NAME`, `secrets.NAME`)
    /// and never quotes a secret.
    pub fn check(&self, limits: VarLimits) -> Result<(), String> {
        let (config, secrets) = (&self.config, &self.secrets);
        let entries = config.len() + secrets.len();
        if entries > limits.max_entries {
            return Err(format!(
                "{entries} config and secret entries, over max-config-entries of {}",
                limits.max_entries
            ));
        }
        for (kind, name, len) in config
            .iter()
            .map(|(n, v)| ("config", n, v.len()))
            .chain(secrets.iter().map(|(n, v)| ("secrets", n, v.0.len())))
        {
            check_name(name, limits.max_name_bytes)
                .map_err(|why| format!("{kind}.{name:?}: {why}"))?;
            if len > limits.max_value_bytes {
                return Err(format!(
                    "{kind}.{name}: its value is {len} bytes, over max-config-value-bytes of {}",
                    limits.max_value_bytes
                ));
            }
        }
        if let Some(both) = config.keys().find(|n| secrets.contains_key(*n)) {
            return Err(format!(
                "{both} is both in config and in secrets: a name is one or the other"
            ));
        }
        Ok(())
    }

    /// `config` and `secrets` over these defaults: a name given here
    /// replaces the default's, config or secret alike.
    pub fn under(
        &self,
        config: BTreeMap<String, String>,
        secrets: BTreeMap<String, Secret>,
    ) -> Self {
        let mut merged = self.clone();
        merged
            .config
            .retain(|k, _| !config.contains_key(k) && !secrets.contains_key(k));
        merged
            .secrets
            .retain(|k, _| !config.contains_key(k) && !secrets.contains_key(k));
        merged
            .config
            .extend(config.into_iter().map(|(k, v)| (k, v.into())));
        merged.secrets.extend(secrets);
        merged
    }

    /// The config alone, without the secrets.
    pub fn config_only(&self) -> Self {
        Self {
            config: self.config.clone(),
            secrets: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.config.is_empty() && self.secrets.is_empty()
    }

    /// The value of `name`, and which kind it is.
    pub fn get(&self, name: &str) -> Option<(&str, Kind)> {
        if let Some(value) = self.config.get(name) {
            return Some((value, Kind::Config));
        }
        self.secrets.get(name).map(|s| (s.expose(), Kind::Secret))
    }

    /// Every name and value, config and secrets alike, by name.
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .chain(
                self.secrets
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned())),
            )
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The plain settings, as the admin API shows and keeps them.
    pub fn config(&self) -> impl Iterator<Item = (&str, &str)> {
        self.config.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// The secrets' names, never their values.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// The secrets themselves, for storing them (encrypted) and nothing
    /// else.
    pub fn secrets(&self) -> &BTreeMap<String, Secret> {
        &self.secrets
    }
}

/// Spin's rule for a variable name (`spin_expressions::Key`), and a length.
pub fn check_name(name: &str, max_bytes: usize) -> Result<(), String> {
    let why = if name.is_empty() {
        "a name must not be empty"
    } else if name.len() > max_bytes {
        return Err(format!(
            "a name is at most max-config-name-bytes ({max_bytes}) long"
        ));
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        "a name may hold only lowercase letters, digits and underscores"
    } else if !name.as_bytes()[0].is_ascii_lowercase() {
        "a name must start with a lowercase letter"
    } else if !name.as_bytes()[name.len() - 1].is_ascii_alphanumeric() {
        "a name must end with a lowercase letter or a digit"
    } else if name.contains("__") {
        "a name must not hold two underscores in a row"
    } else {
        return Ok(());
    };
    Err(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: VarLimits = VarLimits {
        max_entries: 3,
        max_name_bytes: 16,
        max_value_bytes: 8,
    };

    fn config(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn secrets(pairs: &[(&str, &str)]) -> BTreeMap<String, Secret> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Secret::new(*v)))
            .collect()
    }

    #[test]
    fn a_tenants_own_names_replace_its_defaults_of_either_kind() {
        let defaults = Variables::new(
            config(&[("mode", "slow"), ("region", "eu")]),
            secrets(&[("shared", "s"), ("token", "old")]),
        );
        let own = defaults.under(config(&[("token", "plain")]), secrets(&[("region", "r")]));
        assert_eq!(own.get("mode"), Some(("slow", Kind::Config)));
        assert_eq!(own.get("region"), Some(("r", Kind::Secret)));
        assert_eq!(own.get("token"), Some(("plain", Kind::Config)));
        assert_eq!(own.get("shared"), Some(("s", Kind::Secret)));
        assert_eq!(own.config_only().secret_names().count(), 0);
        own.check(VarLimits {
            max_entries: 4,
            max_name_bytes: 16,
            max_value_bytes: 8,
        })
        .expect("no name is both");
    }

    #[test]
    fn names_follow_spins_rule() {
        for good in ["a", "api_key", "v2", "a1_b2"] {
            assert_eq!(check_name(good, 16), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("Api", "only lowercase"),
            ("api-key", "only lowercase"),
            ("1a", "start with a lowercase letter"),
            ("_a", "start with a lowercase letter"),
            ("a_", "end with"),
            ("a__b", "two underscores"),
            ("abcdefghijklmnopq", "at most max-config-name-bytes (16)"),
        ] {
            let e = check_name(bad, 16).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_and_clashes_are_refused_naming_the_field_not_the_secret() {
        let ok = Variables::new(config(&[("b", "1")]), secrets(&[("a", "hunter2")]));
        ok.check(LIMITS).expect("within limits");
        assert_eq!(ok.get("a"), Some(("hunter2", Kind::Secret)));
        assert_eq!(ok.get("b"), Some(("1", Kind::Config)));
        assert_eq!(ok.get("c"), None);
        assert_eq!(
            ok.all(),
            vec![("a".into(), "hunter2".into()), ("b".into(), "1".into())]
        );
        assert_eq!(
            format!("{ok:?}"),
            r#"Variables { config: {"b": "1"}, secrets: ["a"] }"#
        );
        let refused = |c, s| Variables::new(c, s).check(LIMITS).unwrap_err();
        let e = refused(config(&[]), secrets(&[("k", "too long!")]));
        assert_eq!(
            e,
            "secrets.k: its value is 9 bytes, over max-config-value-bytes of 8"
        );
        assert!(!e.contains("too long"));
        let e = refused(config(&[("Bad", "")]), secrets(&[]));
        assert_eq!(
            e,
            "config.\"Bad\": a name may hold only lowercase letters, digits and underscores"
        );
        let e = refused(
            config(&[("a", ""), ("b", ""), ("c", "")]),
            secrets(&[("d", "")]),
        );
        assert_eq!(
            e,
            "4 config and secret entries, over max-config-entries of 3"
        );
        let e = refused(config(&[("a", "")]), secrets(&[("a", "x")]));
        assert_eq!(
            e,
            "a is both in config and in secrets: a name is one or the other"
        );
    }
}
