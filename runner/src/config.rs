//! Configuration: the raw command line ([`Cli`]) and the optional tenants
//! file are parsed, merged and validated into one [`Config`] before any
//! socket is bound.
//!
//! Precedence, lowest first: built-in defaults, the file's `[server]` and
//! `[defaults]` tables, flags (and their `RUNNER_*` environment variables),
//! then each `[tenants.NAME]` table for that tenant's own limits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytesize::ByteSize;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use serde::Deserialize;

use crate::engine::EngineConfig;
use crate::limits::Limits;
use crate::metrics::{TenantLabelMode, TenantLabels};
use crate::store::{Quotas, Store};
use crate::tenant;

/// An async multi-tenant WebAssembly component runner.
///
/// Serves many tenants from one process: each tenant's component handles
/// requests to /t/{tenant}/..., runs under its own fuel, time and memory
/// limits, and keeps data in its own namespace of a sharded in-memory
/// key-value store (wasi:keyvalue). Metrics for Prometheus are served on a
/// separate listener.
///
/// With no --component or --config, tenants t0..t{N-1} run the embedded
/// default guest.
#[derive(Debug, Clone, Parser)]
#[command(version, max_term_width = 100)]
pub struct Cli {
    /// Address for tenant traffic.
    #[arg(long, env = "RUNNER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Address for /metrics, /healthz and /readyz; tenant traffic never
    /// reaches it.
    #[arg(long, env = "RUNNER_METRICS_LISTEN", default_value = "127.0.0.1:9095")]
    pub metrics_listen: SocketAddr,

    /// Provision tenants t0..t{N-1} (on top of any in --config).
    #[arg(long, env = "RUNNER_TENANTS")]
    pub tenants: Option<usize>,

    /// Component (.wasm) for the --tenants tenants instead of the embedded
    /// default guest.
    #[arg(long, env = "RUNNER_COMPONENT")]
    pub component: Option<PathBuf>,

    /// Tenants file (TOML): tenants with their components and limits.
    #[arg(long, env = "RUNNER_CONFIG")]
    pub config: Option<PathBuf>,

    /// Async worker threads; defaults to one per core.
    #[arg(long, env = "RUNNER_WORKERS")]
    pub workers: Option<usize>,

    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "RUNNER_LOG", default_value = "info")]
    pub log: String,

    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Runner-wide settings; config file table `[server]`, same names.
#[derive(Debug, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServerArgs {
    /// Instance slots in the pooling allocator: the most guest instances
    /// alive at once. Each reserves address space, not memory.
    #[arg(
        long,
        env = "RUNNER_POOL_SIZE",
        default_value_t = 1000,
        help_heading = "Server"
    )]
    pub pool_size: u32,

    /// Requests in flight across all tenants; more get 503 with Retry-After.
    /// Defaults to --pool-size.
    #[arg(long, env = "RUNNER_MAX_IN_FLIGHT", help_heading = "Server")]
    pub max_in_flight: Option<usize>,

    /// Open connections on the tenant listener; more are closed at once.
    #[arg(
        long,
        env = "RUNNER_MAX_CONNECTIONS",
        default_value_t = 10_000,
        help_heading = "Server"
    )]
    pub max_connections: usize,

    /// Largest request body; larger gets 413, checked while streaming.
    #[arg(long, default_value = "4MiB", help_heading = "Server")]
    pub max_request_body: ByteSize,

    /// Largest request head (request line plus headers); larger gets 431.
    #[arg(long, default_value = "16KiB", help_heading = "Server")]
    pub max_header_bytes: ByteSize,

    /// Most request headers; more gets 431.
    #[arg(long, default_value_t = 100, help_heading = "Server")]
    pub max_headers: usize,

    /// Time a client has to send a request head, against slow clients.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Server")]
    #[serde(with = "serde_duration")]
    pub header_read_timeout: Duration,

    /// Time an idle keep-alive connection stays open.
    #[arg(long, default_value = "60s", value_parser = parse_duration, help_heading = "Server")]
    #[serde(with = "serde_duration")]
    pub idle_timeout: Duration,

    /// On SIGINT or SIGTERM, time in-flight requests get to finish.
    #[arg(long, default_value = "10s", value_parser = parse_duration, help_heading = "Server")]
    #[serde(with = "serde_duration")]
    pub shutdown_timeout: Duration,

    /// Shards per key-value bucket (a power of two). Defaults to four per
    /// core, rounded up.
    #[arg(long, env = "RUNNER_SHARDS", help_heading = "Server")]
    pub shards: Option<usize>,

    /// Native stack wasm may use before it traps with a stack overflow.
    #[arg(long, default_value = "512KiB", help_heading = "Server")]
    pub max_wasm_stack: ByteSize,

    /// How often running guests yield to other requests and their deadlines
    /// are checked.
    #[arg(long, default_value = "1ms", value_parser = parse_duration, help_heading = "Server")]
    #[serde(with = "serde_duration")]
    pub epoch_tick: Duration,

    /// Bytes of each instance's linear memory kept resident between
    /// requests: faster reuse, at the cost of up to pool-size times this
    /// much resident memory.
    #[arg(long, default_value = "2MiB", help_heading = "Server")]
    pub pool_keep_resident: ByteSize,

    /// How tenants appear in metric labels.
    #[arg(
        long,
        value_enum,
        default_value = "per-tenant",
        help_heading = "Server"
    )]
    pub metrics_tenant_label: TenantLabelMode,

    /// With per-tenant labels, tenants past this many share tenant="_other",
    /// so the series count stays bounded.
    #[arg(long, default_value_t = 1000, help_heading = "Server")]
    pub metrics_max_tenants: usize,
}

/// Per-tenant limits. Flags set the default for every tenant; config file
/// tables `[defaults]` and `[tenants.NAME]` take the same names.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Fuel one request may burn (about one unit per wasm instruction);
    /// past it the request fails with 503 and x-runner-limit: fuel.
    #[arg(
        long,
        env = "RUNNER_FUEL",
        default_value_t = 100_000_000,
        help_heading = "Tenant limits"
    )]
    pub fuel: u64,

    /// Wall-clock time one request may take; past it, 504 and
    /// x-runner-limit: deadline.
    #[arg(long, env = "RUNNER_TIMEOUT", default_value = "1s", value_parser = parse_duration, help_heading = "Tenant limits")]
    pub timeout: Duration,

    /// Size one linear memory may grow to; growth past it fails, and a
    /// guest that aborts on it gets 500 with x-runner-limit: memory.
    #[arg(
        long,
        env = "RUNNER_MAX_MEMORY",
        default_value = "64MiB",
        help_heading = "Tenant limits"
    )]
    pub max_memory: ByteSize,

    /// Elements one table may grow to.
    #[arg(long, default_value_t = 20_000, help_heading = "Tenant limits")]
    pub max_table_elements: usize,

    /// Core instances one request's store may create.
    #[arg(long, default_value_t = 32, help_heading = "Tenant limits")]
    pub max_instances: usize,

    /// Tables one request's store may create.
    #[arg(long, default_value_t = 32, help_heading = "Tenant limits")]
    pub max_tables: usize,

    /// Linear memories one request's store may create.
    #[arg(long, default_value_t = 2, help_heading = "Tenant limits")]
    pub max_memories: usize,

    /// Requests of one tenant in flight at once; more get 429.
    #[arg(
        long,
        env = "RUNNER_TENANT_MAX_IN_FLIGHT",
        default_value_t = 256,
        help_heading = "Tenant limits"
    )]
    pub max_tenant_in_flight: usize,

    /// Log output (wasi:logging, stdout, stderr) one request may write; the
    /// rest is dropped.
    #[arg(long, default_value = "64KiB", help_heading = "Tenant limits")]
    pub max_log_bytes: ByteSize,

    /// Longest key-value key.
    #[arg(long, default_value = "1KiB", help_heading = "Tenant limits")]
    pub max_key_bytes: ByteSize,

    /// Largest key-value value.
    #[arg(long, default_value = "1MiB", help_heading = "Tenant limits")]
    pub max_value_bytes: ByteSize,

    /// Most keys a tenant may hold across its buckets.
    #[arg(long, default_value_t = 100_000, help_heading = "Tenant limits")]
    pub max_keys: u64,

    /// Most bytes (keys plus values) a tenant may hold.
    #[arg(long, default_value = "64MiB", help_heading = "Tenant limits")]
    pub max_store_bytes: ByteSize,

    /// Most named buckets a tenant may open besides the default one.
    #[arg(long, default_value_t = 100, help_heading = "Tenant limits")]
    pub max_buckets: usize,

    /// Most keys in one list-keys page.
    #[arg(long, default_value_t = 1000, help_heading = "Tenant limits")]
    pub max_page_keys: usize,

    /// Most bytes one key-value call may copy into the guest: a list-keys
    /// page is cut short, a larger get-many is refused.
    #[arg(long, default_value = "8MiB", help_heading = "Tenant limits")]
    pub max_call_bytes: ByteSize,
}

/// Limit overrides, as `[defaults]` and `[tenants.NAME]` tables spell them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitOverrides {
    pub fuel: Option<u64>,
    #[serde(default, with = "serde_duration::option")]
    pub timeout: Option<Duration>,
    pub max_memory: Option<ByteSize>,
    pub max_table_elements: Option<usize>,
    pub max_instances: Option<usize>,
    pub max_tables: Option<usize>,
    pub max_memories: Option<usize>,
    pub max_tenant_in_flight: Option<usize>,
    pub max_log_bytes: Option<ByteSize>,
    pub max_key_bytes: Option<ByteSize>,
    pub max_value_bytes: Option<ByteSize>,
    pub max_keys: Option<u64>,
    pub max_store_bytes: Option<ByteSize>,
    pub max_buckets: Option<usize>,
    pub max_page_keys: Option<usize>,
    pub max_call_bytes: Option<ByteSize>,
}

/// The tenants file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Runner-wide settings; any key not given keeps the flag's value.
    #[serde(default)]
    server: Option<toml::Table>,
    #[serde(default)]
    defaults: LimitOverrides,
    #[serde(default)]
    tenants: BTreeMap<String, TenantEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TenantEntry {
    /// The tenant's component; relative paths are relative to the file.
    component: Option<PathBuf>,
    #[serde(flatten)]
    limits: LimitOverrides,
}

/// Where a tenant's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// The default guest built into the runner binary.
    Embedded,
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub name: String,
    pub component: ComponentSource,
    pub limits: Limits,
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub engine: EngineConfig,
    pub shards: usize,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub max_request_body: u64,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub tenant_labels: TenantLabels,
    pub tenants: Vec<TenantConfig>,
}

impl Config {
    /// Parses the process's own arguments.
    pub fn from_args() -> anyhow::Result<(Cli, Self)> {
        Self::from_arg_matches(Cli::command().get_matches())
    }

    /// Parses an argument list (the first item is the program name).
    pub fn try_from_args<I, T>(args: I) -> anyhow::Result<(Cli, Self)>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_arg_matches(Cli::command().try_get_matches_from(args)?)
    }

    fn from_arg_matches(matches: ArgMatches) -> anyhow::Result<(Cli, Self)> {
        let mut cli = Cli::from_arg_matches(&matches)?;
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => File::default(),
        };
        let base_dir = cli
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let explicit = |id: &str| {
            matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        if let Some(server) = &file.server {
            merge_server(&mut cli.server, server, &explicit)?;
        }
        let defaults = apply(&cli.limits, &file.defaults, &explicit);
        let config = build(&cli, file, &base_dir, &defaults)?;
        Ok((cli, config))
    }
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tenants file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing tenants file {}", path.display()))
}

/// Takes each `[server]` key the command line did not set explicitly.
fn merge_server(
    server: &mut ServerArgs,
    table: &toml::Table,
    explicit: &dyn Fn(&str) -> bool,
) -> anyhow::Result<()> {
    // Re-serialize the flag values, lay the file's keys over them, and
    // deserialize: unknown keys are rejected by `deny_unknown_fields`.
    let mut merged = toml::Table::try_from(&*server).context("encoding server settings")?;
    for (key, value) in table {
        if !explicit(&key.replace('-', "_")) {
            merged.insert(key.clone(), value.clone());
        }
    }
    *server = merged
        .try_into()
        .context("in the tenants file's [server] table")?;
    Ok(())
}

impl serde::Serialize for ServerArgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("pool-size", &self.pool_size)?;
        if let Some(v) = self.max_in_flight {
            m.serialize_entry("max-in-flight", &v)?;
        }
        m.serialize_entry("max-connections", &self.max_connections)?;
        m.serialize_entry("max-request-body", &self.max_request_body.as_u64())?;
        m.serialize_entry("max-header-bytes", &self.max_header_bytes.as_u64())?;
        m.serialize_entry("max-headers", &self.max_headers)?;
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        m.serialize_entry("header-read-timeout", &d(&self.header_read_timeout))?;
        m.serialize_entry("idle-timeout", &d(&self.idle_timeout))?;
        m.serialize_entry("shutdown-timeout", &d(&self.shutdown_timeout))?;
        if let Some(v) = self.shards {
            m.serialize_entry("shards", &v)?;
        }
        m.serialize_entry("max-wasm-stack", &self.max_wasm_stack.as_u64())?;
        m.serialize_entry("epoch-tick", &d(&self.epoch_tick))?;
        m.serialize_entry("pool-keep-resident", &self.pool_keep_resident.as_u64())?;
        let mode = match self.metrics_tenant_label {
            TenantLabelMode::PerTenant => "per-tenant",
            TenantLabelMode::Aggregate => "aggregate",
        };
        m.serialize_entry("metrics-tenant-label", mode)?;
        m.serialize_entry("metrics-max-tenants", &self.metrics_max_tenants)?;
        m.end()
    }
}

/// Lays `over` on top of `base`; with `explicit`, a flag the user set wins
/// over the file's `[defaults]`.
fn apply(base: &LimitArgs, over: &LimitOverrides, explicit: &dyn Fn(&str) -> bool) -> LimitArgs {
    macro_rules! pick {
        ($($field:ident),*) => {
            LimitArgs {
                $($field: match &over.$field {
                    Some(v) if !explicit(stringify!($field)) => v.clone(),
                    _ => base.$field.clone(),
                },)*
            }
        };
    }
    pick!(
        fuel,
        timeout,
        max_memory,
        max_table_elements,
        max_instances,
        max_tables,
        max_memories,
        max_tenant_in_flight,
        max_log_bytes,
        max_key_bytes,
        max_value_bytes,
        max_keys,
        max_store_bytes,
        max_buckets,
        max_page_keys,
        max_call_bytes
    )
}

fn to_usize(size: ByteSize, what: &str) -> anyhow::Result<usize> {
    usize::try_from(size.as_u64()).with_context(|| format!("{what} {size} is too large"))
}

fn limits(args: &LimitArgs, who: &str) -> anyhow::Result<Limits> {
    let ctx = |field: &str| format!("{who}: {field}");
    let limits = Limits {
        fuel: args.fuel,
        timeout: args.timeout,
        max_memory: to_usize(args.max_memory, &ctx("max-memory"))?,
        max_table_elements: args.max_table_elements,
        max_instances: args.max_instances,
        max_tables: args.max_tables,
        max_memories: args.max_memories,
        max_in_flight: args.max_tenant_in_flight,
        max_log_bytes: to_usize(args.max_log_bytes, &ctx("max-log-bytes"))?,
        quotas: Quotas {
            max_key_bytes: to_usize(args.max_key_bytes, &ctx("max-key-bytes"))?,
            max_value_bytes: to_usize(args.max_value_bytes, &ctx("max-value-bytes"))?,
            max_keys: args.max_keys,
            max_bytes: args.max_store_bytes.as_u64(),
            max_buckets: args.max_buckets,
            max_page_keys: args.max_page_keys,
            max_call_bytes: to_usize(args.max_call_bytes, &ctx("max-call-bytes"))?,
        },
    };
    let positive = [
        ("fuel", limits.fuel == 0),
        ("timeout", limits.timeout.is_zero()),
        ("max-tenant-in-flight", limits.max_in_flight == 0),
        ("max-page-keys", limits.quotas.max_page_keys == 0),
        ("max-instances", limits.max_instances == 0),
        ("max-memories", limits.max_memories == 0),
    ];
    for (field, zero) in positive {
        if zero {
            bail!("{who}: {field} must be greater than zero");
        }
    }
    if limits.max_memory < 64 << 10 {
        bail!("{who}: max-memory must be at least one 64 KiB page");
    }
    Ok(limits)
}

fn build(cli: &Cli, file: File, base_dir: &Path, defaults: &LimitArgs) -> anyhow::Result<Config> {
    let server = &cli.server;
    let mut tenants = Vec::new();
    let default_component = match &cli.component {
        Some(path) => ComponentSource::File(path.clone()),
        None => ComponentSource::Embedded,
    };
    for (name, entry) in file.tenants {
        let who = format!("tenant {name:?}");
        tenant::validate_name(&name).map_err(anyhow::Error::msg)?;
        let args = apply(defaults, &entry.limits, &|_| false);
        let component = match entry.component {
            Some(path) => {
                let path = base_dir.join(path);
                if !path.is_file() {
                    bail!("{who}: component {} does not exist", path.display());
                }
                ComponentSource::File(path)
            }
            None => default_component.clone(),
        };
        tenants.push(TenantConfig {
            limits: limits(&args, &who)?,
            name,
            component,
        });
    }
    let generated = match (cli.tenants, cli.config.is_some()) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => 1,
    };
    if let ComponentSource::File(path) = &default_component
        && !path.is_file()
    {
        bail!("--component {} does not exist", path.display());
    }
    let generated_limits = limits(defaults, "default limits")?;
    for i in 0..generated {
        let name = format!("t{i}");
        if tenants.iter().any(|t| t.name == name) {
            continue;
        }
        tenants.push(TenantConfig {
            name,
            component: default_component.clone(),
            limits: generated_limits.clone(),
        });
    }
    if tenants.is_empty() {
        bail!("no tenants: pass --tenants N or list tenants in --config");
    }

    let shards = server.shards.unwrap_or_else(Store::default_shards);
    if !shards.is_power_of_two() || shards > 1 << 16 {
        bail!("shards must be a power of two up to 65536, not {shards}");
    }
    if server.pool_size == 0 {
        bail!("pool-size must be greater than zero");
    }
    let max_memory = tenants
        .iter()
        .map(|t| t.limits.max_memory)
        .max()
        .unwrap_or(generated_limits.max_memory);
    let max_header_bytes = to_usize(server.max_header_bytes, "max-header-bytes")?;
    if max_header_bytes < 8192 {
        bail!("max-header-bytes must be at least 8KiB (hyper's smallest read buffer)");
    }
    let max_wasm_stack = to_usize(server.max_wasm_stack, "max-wasm-stack")?;
    if server.epoch_tick.is_zero() {
        bail!("epoch-tick must be greater than zero");
    }
    Ok(Config {
        engine: EngineConfig {
            pool_size: server.pool_size,
            max_memory,
            max_wasm_stack,
            epoch_tick: server.epoch_tick,
            keep_resident: to_usize(server.pool_keep_resident, "pool-keep-resident")?,
        },
        shards,
        max_in_flight: server.max_in_flight.unwrap_or(server.pool_size as usize),
        max_connections: server.max_connections,
        max_request_body: server.max_request_body.as_u64(),
        max_header_bytes,
        max_headers: server.max_headers,
        header_read_timeout: server.header_read_timeout,
        idle_timeout: server.idle_timeout,
        shutdown_timeout: server.shutdown_timeout,
        tenant_labels: TenantLabels {
            mode: server.metrics_tenant_label,
            max_tenants: server.metrics_max_tenants,
        },
        tenants,
    })
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Durations in the file are strings such as "500ms" or "2s".
mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(args: &[&str]) -> anyhow::Result<Config> {
        let mut all = vec!["runner"];
        all.extend_from_slice(args);
        Config::try_from_args(all).map(|(_, c)| c)
    }

    fn file(text: &str) -> tempfile_lite::Temp {
        let t = tempfile_lite::Temp::new("toml");
        std::fs::File::create(&t.path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        t
    }

    /// A tiny temp-file helper, to avoid a dependency for three tests.
    mod tempfile_lite {
        pub struct Temp {
            pub path: std::path::PathBuf,
        }
        impl Temp {
            pub fn new(ext: &str) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("runner-test-{}-{n}.{ext}", std::process::id()));
                Self { path }
            }
        }
        impl Drop for Temp {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    #[test]
    fn defaults_give_one_tenant_on_the_embedded_guest() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.tenants.len(), 1);
        assert_eq!(c.tenants[0].name, "t0");
        assert_eq!(c.tenants[0].component, ComponentSource::Embedded);
        assert_eq!(c.tenants[0].limits, Limits::default());
        assert_eq!(c.max_in_flight, 1000);
    }

    #[test]
    fn flags_set_every_tenants_limits() {
        let c = parse(&[
            "--tenants",
            "3",
            "--fuel",
            "5000",
            "--timeout",
            "250ms",
            "--max-memory",
            "2MiB",
        ])
        .unwrap();
        assert_eq!(c.tenants.len(), 3);
        let l = &c.tenants[2].limits;
        assert_eq!(
            (l.fuel, l.timeout, l.max_memory),
            (5000, Duration::from_millis(250), 2 << 20)
        );
    }

    #[test]
    fn file_tenants_override_defaults_and_flags_override_file_defaults() {
        let f = file(
            r#"
            [server]
            pool-size = 50
            [defaults]
            fuel = 7
            max-keys = 9
            [tenants.alpha]
            max-value-bytes = "10KiB"
            timeout = "2s"
            [tenants.beta]
            fuel = 11
            "#,
        );
        let path = f.path.to_str().unwrap();
        let c = parse(&["--config", path, "--max-keys", "42"]).unwrap();
        assert_eq!(c.engine.pool_size, 50);
        let alpha = c.tenants.iter().find(|t| t.name == "alpha").unwrap();
        assert_eq!(alpha.limits.fuel, 7);
        assert_eq!(alpha.limits.quotas.max_keys, 42);
        assert_eq!(alpha.limits.quotas.max_value_bytes, 10 << 10);
        assert_eq!(alpha.limits.timeout, Duration::from_secs(2));
        let beta = c.tenants.iter().find(|t| t.name == "beta").unwrap();
        assert_eq!(beta.limits.fuel, 11);
        assert_eq!(c.tenants.len(), 2, "a file without --tenants adds no t0..");
        let c = parse(&["--config", path, "--pool-size", "60"]).unwrap();
        assert_eq!(c.engine.pool_size, 60);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let f = file("[tenants.a]\nfule = 3\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `fule`"),
            "{err:#}"
        );

        let f = file("[server]\npool-sise = 3\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `pool-sise`"),
            "{err:#}"
        );

        let f = file("[tenants.\"a/b\"]\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("tenant name \"a/b\""),
            "{err:#}"
        );

        let f = file("[tenants.a]\ncomponent = \"missing.wasm\"\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert!(
            format!("{err:#}").contains("tenant \"a\": component"),
            "{err:#}"
        );

        let f = file("[tenants.a]\nfuel = 0\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "tenant \"a\": fuel must be greater than zero"
        );

        let err = parse(&["--shards", "3"]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "shards must be a power of two up to 65536, not 3"
        );
    }
}
