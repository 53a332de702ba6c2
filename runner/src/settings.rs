//! One declaration per setting.
//!
//! [`settings!`] turns a list of settings (name, type, default, range, help)
//! into:
//! - a struct of the values, deriving `clap::Args`, so each setting is a
//!   `--flag` with its doc comment as help and its default shown;
//! - a file table of the same keys (kebab-case), every key optional and
//!   unknown keys refused by name;
//! - `overlay`, which lays a file table over the values, and `validate`,
//!   which checks every value against its range and names the key that is
//!   out of it.
//!
//! Every setting also reads an environment variable named by one rule,
//! [`env_var`], attached where the command line is built
//! (`config::command`). Adding a setting is adding one entry to a
//! `settings!` list.

use std::fmt;
use std::time::Duration;

use bytesize::ByteSize;

/// A value a setting can hold: parsed from a flag, read from a TOML value,
/// and shown in messages.
pub trait Setting: Sized + Clone + PartialOrd + Send + Sync + 'static {
    fn parse_flag(text: &str) -> Result<Self, String>;
    fn from_toml(value: &toml::Value) -> Result<Self, String>;
    fn show(&self) -> String;
    /// Whether this is the type's zero, for "must be greater than zero".
    fn is_zero(&self) -> bool;
    /// The value as JSON that [`Setting::from_toml`] reads back (the admin
    /// API shows limits this way and takes them back the same).
    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::String(self.show())
    }
}

/// `from_toml` for a setting a file writes as a string, spelled as on the
/// command line; `expected` says what else was wanted.
pub fn from_toml_string<T: Setting>(value: &toml::Value, expected: &str) -> Result<T, String> {
    match value {
        toml::Value::String(s) => T::parse_flag(s),
        other => Err(format!("expected {expected}, found {}", other.type_str())),
    }
}

/// An entry of a list setting: read from text, shown as text.
pub trait Item: Clone + fmt::Debug + fmt::Display + PartialOrd + Send + Sync + 'static {
    /// What a file's value should be, for its error.
    const EXPECTED: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
}

/// A list setting: comma-separated on the command line, a list (or one
/// comma-separated string) in files and the admin API.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
pub struct List<T>(pub Vec<T>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(Vec::new())
    }
}

impl<T: Item> Setting for List<T> {
    fn parse_flag(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(T::parse)
            .collect::<Result<_, _>>()
            .map(List)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        let found = |v: &toml::Value| format!("expected {}, found {}", T::EXPECTED, v.type_str());
        match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => T::parse(s),
                    other => Err(found(other)),
                })
                .collect::<Result<_, _>>()
                .map(List),
            toml::Value::String(s) => Self::parse_flag(s),
            other => Err(found(other)),
        }
    }

    fn show(&self) -> String {
        let all: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        all.join(",")
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn to_json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|item| serde_json::Value::from(item.to_string()))
            .collect()
    }
}

macro_rules! integer_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            fn parse_flag(text: &str) -> Result<Self, String> {
                let digits = text.replace('_', "");
                digits
                    .parse()
                    .map_err(|_| format!("{text:?} is not a whole number from 0 to {}", <$t>::MAX))
            }

            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                match value {
                    toml::Value::Integer(i) => <$t>::try_from(*i)
                        .map_err(|_| format!("{i} is not a whole number from 0 to {}", <$t>::MAX)),
                    other => Err(format!("expected a whole number, found {}", other.type_str())),
                }
            }

            fn show(&self) -> String {
                self.to_string()
            }

            fn is_zero(&self) -> bool {
                *self == 0
            }

            fn to_json(&self) -> serde_json::Value {
                serde_json::Value::from(*self)
            }
        }
    )*};
}
integer_setting!(u32, u64, usize);

impl Setting for Duration {
    fn parse_flag(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration: {e}"))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        from_toml_string(value, r#"a duration such as "500ms" or "2s""#)
    }

    fn show(&self) -> String {
        humantime::format_duration(*self).to_string()
    }

    fn is_zero(&self) -> bool {
        Duration::is_zero(self)
    }
}

impl Setting for ByteSize {
    fn parse_flag(text: &str) -> Result<Self, String> {
        text.parse::<ByteSize>()
            .map_err(|e| format!("{text:?} is not a size such as 64KiB or 1MiB: {e}"))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) => Self::parse_flag(s),
            toml::Value::Integer(i) => u64::try_from(*i)
                .map(ByteSize)
                .map_err(|_| format!("{i} is not a size")),
            other => Err(format!(
                "expected a size such as \"64KiB\" or a number of bytes, found {}",
                other.type_str()
            )),
        }
    }

    fn show(&self) -> String {
        // In bytes, so that a message never mixes units.
        format!("{} bytes", self.as_u64())
    }

    fn is_zero(&self) -> bool {
        self.as_u64() == 0
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(self.as_u64())
    }
}

impl Setting for std::net::SocketAddr {
    fn parse_flag(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|_| format!("{text:?} is not an address such as 127.0.0.1:8080 or [::1]:8080"))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        from_toml_string(value, r#"an address such as "127.0.0.1:8080""#)
    }

    fn show(&self) -> String {
        self.to_string()
    }

    fn is_zero(&self) -> bool {
        false
    }
}

/// A path, or `none`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd)]
pub struct OptionalPath(pub Option<std::path::PathBuf>);

impl Setting for OptionalPath {
    fn parse_flag(text: &str) -> Result<Self, String> {
        match text {
            "none" => Ok(OptionalPath(None)),
            "" => Err("an empty path: give a path, or none".into()),
            path => Ok(OptionalPath(Some(path.into()))),
        }
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        from_toml_string(value, "a path")
    }

    fn show(&self) -> String {
        match &self.0 {
            None => "none".into(),
            Some(path) => path.display().to_string(),
        }
    }

    fn is_zero(&self) -> bool {
        false
    }
}

/// A feature turned `on` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, clap::ValueEnum)]
pub enum Switch {
    Off,
    On,
}

value_enum_setting!(Switch, "on, off");

impl Switch {
    pub fn is_on(self) -> bool {
        self == Switch::On
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, fields as `name=value`.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, then each
    /// field (`tenant`, `request_id`, the guest's `text`) by name.
    Json,
}

value_enum_setting!(LogFormat, "text, json");

/// A setting whose default is worked out at start-up (`auto`) unless given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd)]
pub enum Auto<T> {
    Auto,
    Value(T),
}

impl<T: Copy> Auto<T> {
    /// The value given, or `auto()` when none was.
    pub fn or_else(self, auto: impl FnOnce() -> T) -> T {
        match self {
            Auto::Auto => auto(),
            Auto::Value(v) => v,
        }
    }
}

impl<T: Setting> Setting for Auto<T> {
    fn parse_flag(text: &str) -> Result<Self, String> {
        if text == "auto" {
            return Ok(Auto::Auto);
        }
        T::parse_flag(text).map(Auto::Value)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(s) if s == "auto" => Ok(Auto::Auto),
            other => T::from_toml(other).map(Auto::Value),
        }
    }

    fn show(&self) -> String {
        match self {
            Auto::Auto => "auto".into(),
            Auto::Value(v) => v.show(),
        }
    }

    fn is_zero(&self) -> bool {
        matches!(self, Auto::Value(v) if v.is_zero())
    }
}

/// The values a setting may take.
#[derive(Clone, Debug)]
pub enum Range<T> {
    /// Any value of the type (choices, say).
    Any,
    /// Greater than zero, up to and including the bound.
    Positive(T),
    /// From the first to the second, both included.
    Between(T, T),
}

impl<T: Setting> Range<T> {
    /// The range in words, for `--help`; `None` when any value goes.
    pub fn describe(&self) -> Option<String> {
        match self {
            Range::Any => None,
            Range::Positive(max) => Some(format!("greater than zero, at most {}", max.show())),
            Range::Between(min, max) => Some(format!("{} to {}", min.show(), max.show())),
        }
    }

    /// Checks `value`; `Auto::Auto` always passes.
    pub fn check<V: Checked<T>>(&self, prefix: &str, key: &str, value: &V) -> anyhow::Result<()> {
        let Some(value) = value.checked() else {
            return Ok(());
        };
        let fail = |what: String| Err(anyhow::anyhow!("{prefix}{key} must be {what}"));
        match self {
            Range::Any => Ok(()),
            Range::Positive(_) if value.is_zero() => fail("greater than zero".into()),
            Range::Positive(max) if value > max => {
                fail(format!("at most {}, not {}", max.show(), value.show()))
            }
            Range::Between(min, max) if value < min || value > max => fail(format!(
                "between {} and {}, not {}",
                min.show(),
                max.show(),
                value.show()
            )),
            _ => Ok(()),
        }
    }
}

/// What a range checks in a setting's value: the value itself, or the one
/// inside `Auto::Value`.
pub trait Checked<T> {
    fn checked(&self) -> Option<&T>;
}

impl<T: Setting> Checked<T> for T {
    fn checked(&self) -> Option<&T> {
        Some(self)
    }
}

impl<T: Setting> Checked<T> for Auto<T> {
    fn checked(&self) -> Option<&T> {
        match self {
            Auto::Auto => None,
            Auto::Value(v) => Some(v),
        }
    }
}

/// A field name as a flag and a config key spell it.
pub fn key(field: &str) -> String {
    field.replace('_', "-")
}

/// A setting's environment variable: `RUNNER_` and its flag in upper snake
/// case (`--max-tenant-in-flight`: `RUNNER_MAX_TENANT_IN_FLIGHT`), for every
/// setting alike.
pub fn env_var(field: &str) -> String {
    format!("RUNNER_{}", field.to_ascii_uppercase())
}

/// Declares a group of settings; see the module docs. Each entry is
///
/// ```text
/// /// Help text (the flag's --help).
/// name: Type = "default", Range;
/// ```
///
/// where the default is written as on the command line and the range is a
/// [`Range`] over the setting's type (or its `Auto` inner type).
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident, file $file:ident, heading $heading:literal {
            $(
                $(#[doc = $doc:literal])*
                $(#[arg($($arg:tt)*)])*
                $field:ident : $ty:ty = $default:literal, $range:expr ;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, clap::Args)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                #[arg(
                    long,
                    default_value = $default,
                    value_parser = <$ty as $crate::settings::Setting>::parse_flag,
                    help_heading = $heading,
                    // `--help` names the variable, never its value, which
                    // may be a secret (a Redis URL's password).
                    hide_env_values = true
                )]
                $(#[arg($($arg)*)])*
                pub $field: $ty,
            )*
        }

        /// The same settings as a config file's table spells them: every key
        /// optional, unknown keys refused by name.
        #[derive(Debug, Clone, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct $file {
            $(pub $field: Option<toml::Value>,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    $($field: <$ty as $crate::settings::Setting>::parse_flag($default)
                        .expect("declared defaults parse"),)*
                }
            }
        }

        impl $name {
            /// Every key, as flags and config files spell them.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Lays the keys `file` sets over these values, except those for
            /// which `keep(field)` holds (a flag the user gave wins over the
            /// file). `prefix` starts each error (say, `tenant "a": `).
            pub fn overlay(
                &mut self,
                file: &$file,
                prefix: &str,
                keep: &dyn Fn(&str) -> bool,
            ) -> anyhow::Result<()> {
                $(
                    if let Some(value) = &file.$field && !keep(stringify!($field)) {
                        self.$field = <$ty as $crate::settings::Setting>::from_toml(value)
                            .map_err(|e| anyhow::anyhow!(
                                "{prefix}{}: {e}",
                                $crate::settings::key(stringify!($field))
                            ))?;
                    }
                )*
                Ok(())
            }

            /// Sets the setting `field` from text as its flag takes it.
            pub fn set_flag(&mut self, field: &str, text: &str) -> Result<(), String> {
                match field {
                    $(stringify!($field) => {
                        self.$field = <$ty as $crate::settings::Setting>::parse_flag(text)?;
                    })*
                    _ => return Err(format!("no setting {field}")),
                }
                Ok(())
            }

            /// Every value by its key, as JSON a file table or the admin API
            /// takes back.
            pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
                let mut map = serde_json::Map::new();
                $(
                    map.insert(
                        $crate::settings::key(stringify!($field)),
                        $crate::settings::Setting::to_json(&self.$field),
                    );
                )*
                map
            }

            /// Each key's range in words, for `--help`.
            pub fn ranges() -> Vec<(&'static str, String)> {
                let mut ranges = Vec::new();
                $(
                    if let Some(range) = $crate::settings::Range::describe(&$range) {
                        ranges.push((stringify!($field), range));
                    }
                )*
                ranges
            }

            /// Checks every value against its declared range.
            pub fn validate(&self, prefix: &str) -> anyhow::Result<()> {
                $(
                    $crate::settings::Range::check(
                        &$range,
                        prefix,
                        &$crate::settings::key(stringify!($field)),
                        &self.$field,
                    )?;
                )*
                Ok(())
            }
        }
    };
}
pub(crate) use settings;

/// `Setting` for a `clap::ValueEnum`, spelled as on the command line in
/// files and messages too; `$choices` lists the spellings for errors.
macro_rules! value_enum_setting {
    ($t:ty, $choices:literal) => {
        impl $crate::settings::Setting for $t {
            fn parse_flag(text: &str) -> Result<Self, String> {
                <Self as clap::ValueEnum>::from_str(text, false)
                    .map_err(|_| format!("{text:?} is not one of {}", $choices))
            }

            fn from_toml(value: &toml::Value) -> Result<Self, String> {
                $crate::settings::from_toml_string(value, "a string")
            }

            fn show(&self) -> String {
                clap::ValueEnum::to_possible_value(self)
                    .map(|v| v.get_name().to_owned())
                    .unwrap_or_default()
            }

            fn is_zero(&self) -> bool {
                false
            }
        }
    };
}
pub(crate) use value_enum_setting;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_from_flags_and_files() {
        assert_eq!(u64::parse_flag("100_000"), Ok(100_000));
        assert!(u32::parse_flag("18446744073709551615").is_err());
        assert_eq!(
            Duration::parse_flag("250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(ByteSize::parse_flag("2MiB"), Ok(ByteSize::mib(2)));
        assert_eq!(
            ByteSize::from_toml(&toml::Value::Integer(10)),
            Ok(ByteSize(10))
        );
        assert_eq!(Auto::<usize>::parse_flag("auto"), Ok(Auto::Auto));
        assert_eq!(Auto::<usize>::parse_flag("8"), Ok(Auto::Value(8)));
        assert_eq!(
            usize::from_toml(&toml::Value::String("3".into())),
            Err("expected a whole number, found string".into())
        );
    }

    #[test]
    fn ranges_name_the_key_and_the_bounds() {
        let r = Range::Positive(10u64);
        assert_eq!(
            r.check("tenant \"a\": ", "fuel", &0)
                .unwrap_err()
                .to_string(),
            "tenant \"a\": fuel must be greater than zero"
        );
        assert_eq!(
            r.check("", "fuel", &11).unwrap_err().to_string(),
            "fuel must be at most 10, not 11"
        );
        r.check("", "fuel", &10).unwrap();
        let r = Range::Between(ByteSize::kib(64), ByteSize::gib(4));
        assert_eq!(
            r.check("", "max-memory", &ByteSize::tib(1000))
                .unwrap_err()
                .to_string(),
            "max-memory must be between 65536 bytes and 4294967296 bytes, not 1099511627776000 bytes"
        );
        Range::Positive(4usize)
            .check("", "shards", &Auto::Auto)
            .unwrap();
    }
}
