//! Configuration: the raw command line ([`Cli`]) and the optional tenants
//! file are parsed, merged and validated into one [`Config`] before any
//! socket is bound.
//!
//! Every setting is declared once, with its flag, config key, default, range
//! and help: the runner-wide ones in [`ServerSettings`] below, the per-tenant
//! ones in [`crate::limits::Limits`].
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
use crate::engine::compile::CompileSettings;
use crate::engine::component::Digest;
pub use crate::fleet::{ComponentSource, TenantConfig};
use crate::ingress::HttpLimits;
pub use crate::ingress::api::{ADMIN_TOKEN_VAR, AdminApi};
use crate::ingress::server::ConnectionLimits;
use crate::limits::{self, Limits, LimitsFile};
use crate::metrics::{TenantLabelMode, TenantLabels};
use crate::outbound::policy::Networks;
use crate::request_id::Policy as RequestIdPolicy;
use crate::routes::HostNames;
use crate::settings::{Auto, LogFormat, OptionalPath, Range, Setting as _, Switch, settings};
use crate::store::location::{Location, StoreConfig};
use crate::store::memory::Store;
use crate::store::memory::journal::{DataDir, Fsync};
use crate::tenant;
use crate::vars::{Secret, Variables};

/// An async multi-tenant WebAssembly component runner.
///
/// Serves many tenants from one process: each tenant's component handles
/// requests to /t/{tenant}/..., runs under its own fuel, time and memory
/// limits, and keeps data in its own namespace of a sharded in-memory
/// key-value store (wasi:keyvalue). Metrics for Prometheus are served on a
/// separate listener.
///
/// With no --component or --config, tenants t0..t{N-1} run the embedded
/// default guest. With an admin token, tenants can also be deployed,
/// updated and removed while it runs (`runner tenant --help`), and
/// SIGHUP reloads the --config file.
#[derive(Debug, Clone, Parser)]
#[command(version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

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

    /// Log filter, in RUST_LOG syntax. The default keeps the storage
    /// engine's own notes (fjall, lsm_tree) to warnings.
    #[arg(
        long,
        env = "RUNNER_LOG",
        default_value = "info,fjall=warn,lsm_tree=warn"
    )]
    pub log: String,

    #[command(flatten)]
    pub server: ServerSettings,

    #[command(flatten)]
    pub limits: Limits,
}

/// Subcommands; with none, `runner` serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Deploy, list, show and remove tenants of a running runner through
    /// its admin API.
    Tenant(Box<crate::client::TenantCommand>),
    /// Print a completion script for SHELL to stdout, e.g.
    /// `runner completions bash > /etc/bash_completion.d/runner`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g.
    /// `runner man > /usr/local/share/man/man1/runner.1`.
    Man,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Serve, with this configuration.
    Serve(Box<Cli>, Box<Config>),
    /// `runner tenant ...`, with the subcommand's own matches (to tell
    /// flags given from defaults).
    Tenant(Box<crate::client::TenantCommand>, Box<ArgMatches>),
    /// `runner completions SHELL` or `runner man`: this text, for stdout.
    Print(Vec<u8>),
}

impl Invocation {
    /// Parses the process's own arguments.
    pub fn from_args() -> anyhow::Result<Self> {
        let matches = command().try_get_matches()?;
        match matches.subcommand() {
            Some(("tenant", sub)) => {
                let tenant = crate::client::TenantCommand::from_arg_matches(sub)?;
                return Ok(Invocation::Tenant(Box::new(tenant), Box::new(sub.clone())));
            }
            Some(("completions", sub)) => {
                let shell = *sub
                    .get_one::<clap_complete::Shell>("shell")
                    .context("a shell")?;
                let mut text = Vec::new();
                clap_complete::generate(shell, &mut command(), "runner", &mut text);
                return Ok(Invocation::Print(text));
            }
            Some(("man", _)) => {
                let mut text = Vec::new();
                clap_mangen::Man::new(command()).render(&mut text)?;
                return Ok(Invocation::Print(text));
            }
            _ => {}
        }
        let (cli, config) = Config::from_arg_matches(matches)?;
        Ok(Invocation::Serve(Box::new(cli), Box::new(config)))
    }
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

settings! {
    /// Runner-wide settings; config file table `[server]`, same names.
    pub struct ServerSettings, file ServerFile, heading "Server" {
        /// Address for tenant traffic.
        listen: SocketAddr = "127.0.0.1:8080", Range::<SocketAddr>::Any;
        /// Address for /metrics, /healthz, /readyz and the admin API (/v1,
        /// with an admin token); tenant traffic never reaches it.
        metrics_listen: SocketAddr = "127.0.0.1:9095", Range::<SocketAddr>::Any;
        /// File holding the admin API's bearer token (surrounding whitespace
        /// ignored). With it, or the token itself in RUNNER_ADMIN_TOKEN, the
        /// admin listener serves /v1 (deploy, update, list and remove
        /// tenants at runtime); without either, /v1 is off (404).
        admin_token_file: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// Keep compiled components in this directory (created if missing),
        /// keyed by the engine's settings and each component's digest, so a
        /// restart compiles nothing it compiled before; `none` compiles every
        /// component at every start. Its entries are loaded as native code:
        /// only the runner's user should be able to write to it.
        cache_dir: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// Largest component the admin API accepts (PUT /v1/components);
        /// larger gets 413.
        max_component_bytes: ByteSize = "128MiB", Range::Between(ByteSize::kib(1), ByteSize::gib(1));
        /// Components compiled at once while serving, each in a process of
        /// its own on one core, never on the threads that serve requests;
        /// more wait their turn (the same bytes twice are compiled once).
        /// Start-up, before serving, compiles one per core.
        compile_workers: usize = "1", Range::Positive(256usize);
        /// Longest one component's compile may take; past it the compile
        /// is stopped and the component refused.
        compile_timeout: Duration = "120s", Range::Between(Duration::from_millis(100), HOUR);
        /// Most memory (address space) one component's compile may use;
        /// past it the compile is stopped and the component refused.
        compile_max_memory: ByteSize = "4GiB", Range::Between(ByteSize::mib(64), ByteSize::gib(1024));
        /// How long a component no tenant runs (uploaded and not deployed,
        /// or left by its tenants) is held before it is released: its
        /// compiled code, its copy in the data directory and its compiled
        /// cache entries. A deploy naming it after that gets 404.
        component_grace: Duration = "10m", Range::Between(Duration::from_secs(1), 30 * DAY);
        /// Largest linear memory any tenant may be given, fixed at start-up
        /// (it sizes the instance pool's slots): a tenant deployed later may
        /// not set max-memory above it. `auto` is the largest max-memory
        /// among the tenants at start-up and the default limit.
        pool_max_memory: Auto<ByteSize> = "auto", Range::Between(ByteSize::kib(64), ByteSize::gib(4));
        /// Instance slots in the pooling allocator: the most guest instances
        /// alive at once, for WASIp2 and for WASIp3 components each (they
        /// run on engines of their own). Each reserves address space, not
        /// memory.
        pool_size: u32 = "1000", Range::Positive(100_000u32);
        /// Requests in flight across all tenants; more get 503 with
        /// Retry-After. `auto` is --pool-size.
        max_in_flight: Auto<usize> = "auto", Range::Positive(1_000_000usize);
        /// Open connections on each listener; more are closed at once.
        max_connections: usize = "10000", Range::Positive(1_000_000usize);
        /// Largest request body; larger gets 413, checked while streaming.
        max_request_body: ByteSize = "4MiB", Range::Between(ByteSize(0), ByteSize::gib(4));
        /// Request bodies declared (Content-Length) this small or smaller are
        /// read whole before the request takes a slot of its tenant's, so a
        /// client that never sends its body cannot hold one.
        max_buffered_body: ByteSize = "64KiB", Range::Between(ByteSize(0), ByteSize::mib(16));
        /// Time a client has to send such a body; past it, 408 and
        /// x-runner-limit: body_read_timeout.
        body_read_timeout: Duration = "10s", Range::Between(Duration::from_millis(1), HOUR);
        /// Largest request head (request line plus headers); larger gets 431.
        /// At least 8KiB, hyper's smallest read buffer.
        max_header_bytes: ByteSize = "16KiB", Range::Between(ByteSize::kib(8), ByteSize::mib(1));
        /// Most request headers; more gets 431.
        max_headers: usize = "100", Range::Positive(10_000usize);
        /// Time a client has to send a request head, against slow clients.
        header_read_timeout: Duration = "10s", Range::Between(Duration::from_millis(1), HOUR);
        /// Time an idle keep-alive connection stays open.
        idle_timeout: Duration = "60s", Range::Between(Duration::from_millis(1), 24 * HOUR);
        /// On SIGINT or SIGTERM, time in-flight requests get to finish.
        shutdown_timeout: Duration = "10s", Range::Between(Duration::ZERO, HOUR);
        /// Keep key-value data in this directory (created if missing), so it
        /// survives restarts and crashes; `none` keeps it in memory only,
        /// lost when the runner stops. Reads are served from memory either
        /// way. A relative path in the tenants file is relative to the file.
        data_dir: DataDir = "none", Range::<DataDir>::Any;
        /// With --data-dir, when a write is acknowledged: `always`, once it
        /// is fsynced (concurrent writes share fsyncs); `every=<duration>`,
        /// once the OS has it, with an fsync every <duration>: a crash of the
        /// runner loses nothing, a crash of the machine or a power loss loses
        /// up to <duration> of acknowledged writes.
        fsync: Fsync = "always", Range::<Fsync>::Any;
        /// Where key-value data lives: `memory`, in this process (on its
        /// disk too with --data-dir); or `redis://[:PASSWORD@]HOST:PORT[/DB]`
        /// (`rediss://` for TLS), a Redis that several runners share, which
        /// also keeps the tenants deployed through the admin API and tells
        /// every runner on it of each change. Several comma-separated URLs
        /// are seed nodes of one Redis Cluster, as is one
        /// `redis+cluster://` (or `rediss+cluster://`) URL.
        store: Location = "memory", Range::<Location>::Any;
        /// With --store redis://..., the longest one key-value call waits
        /// for Redis, reconnecting included; past it the guest's call fails
        /// with store-unavailable. Keep it well under the tenants' timeout,
        /// so a guest still has time to answer.
        store_timeout: Duration = "250ms", Range::Between(Duration::from_millis(1), Duration::from_secs(60));
        /// Shards per key-value bucket (a power of two). `auto` is four per
        /// core, rounded up.
        shards: Auto<usize> = "auto", Range::Positive(65_536usize);
        /// Native stack wasm may use before it traps with a stack overflow.
        max_wasm_stack: ByteSize = "512KiB", Range::Between(ByteSize::kib(64), ByteSize::mib(64));
        /// How often running guests yield to other requests and their
        /// deadlines are checked.
        epoch_tick: Duration = "1ms", Range::Between(Duration::from_micros(100), Duration::from_secs(1));
        /// Bytes of each instance's linear memory kept resident between
        /// requests: faster reuse, at the cost of up to pool-size times this
        /// much resident memory.
        pool_keep_resident: ByteSize = "2MiB", Range::Between(ByteSize(0), ByteSize::gib(1));
        /// File holding the key (64 hex digits: `openssl rand -hex 32`)
        /// that seals secrets deployed through the admin API where they are
        /// kept (data directory, Redis); without it the API refuses
        /// secrets.
        secrets_key_file: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// The key secrets were sealed with before --secrets-key-file, for
        /// a rotation: what it sealed still opens, and the data directory's
        /// secrets are sealed anew with the current key at start-up.
        secrets_previous_key_file: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// Networks (CIDRs, comma-separated) tenants' outgoing requests may
        /// reach although the address policy refuses them: loopback,
        /// private (RFC 1918, RFC 4193, 100.64.0.0/10), link-local
        /// (169.254.0.0/16, cloud metadata included), unspecified,
        /// multicast and reserved addresses are refused unless listed here.
        /// The runner's own listening addresses are refused always.
        allowed_outbound_networks: Networks = "", Range::<Networks>::Any;
        /// Domains whose subdomains name tenants (comma-separated): with
        /// apps.example.com, a request to alice.apps.example.com reaches
        /// tenant alice with its path unchanged; an unknown one gets 404.
        host_suffix: HostNames = "", Range::<HostNames>::Any;
        /// Whether /t/{tenant}/ reaches tenants; off, only their hosts and
        /// --host-suffix do, and a request to any other host gets 404.
        path_routing: Switch = "on", Range::<Switch>::Any;
        /// Proxies (CIDRs, comma-separated) whose Forwarded and
        /// X-Forwarded-* headers guests see, and whose
        /// X-Forwarded-Proto: https (or Forwarded proto=https) makes the
        /// guest's URL https; from any other address those headers are
        /// dropped before a guest sees the request.
        trusted_proxies: Networks = "", Range::<Networks>::Any;
        /// PEM certificate chain (leaf first) the tenant listener serves
        /// HTTPS with, HTTP/2 and HTTP/1.1 offered by ALPN; with --tls-key.
        /// `none`: plain HTTP. Read again on SIGHUP: new handshakes get the
        /// new certificate, open connections keep theirs.
        tls_cert: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); readable
        /// by the runner's user alone.
        tls_key: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// Time a client has to finish its TLS handshake, holding a
        /// connection slot meanwhile; past it the connection is closed
        /// (runner_tls_handshake_failures_total{reason="timeout"}).
        tls_handshake_timeout: Duration = "10s", Range::Between(Duration::from_millis(1), HOUR);
        /// PEM certificate chain the admin listener (--metrics-listen)
        /// serves HTTPS with, on the same port as plain HTTP; with
        /// --admin-tls-key. Read again on SIGHUP.
        admin_tls_cert: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// PEM private key of --admin-tls-cert.
        admin_tls_key: OptionalPath = "none", Range::<OptionalPath>::Any;
        /// With --admin-tls-cert, whether the admin API (/v1, which carries
        /// the bearer token) refuses plain HTTP (403, tls-required);
        /// /metrics and the health checks answer over both.
        admin_require_tls: Switch = "on", Range::<Switch>::Any;
        /// How tenants appear in metric labels: per-tenant, or aggregate
        /// (every tenant shares tenant="_all").
        metrics_tenant_label: TenantLabelMode = "per-tenant", Range::<TenantLabelMode>::Any;
        /// With per-tenant labels, tenants past this many share
        /// tenant="_other", so the series count stays bounded.
        metrics_max_tenants: usize = "1000", Range::Between(0usize, 1_000_000);
        /// Log line format on stderr: `text`, or `json` (one object per
        /// line, every field by name).
        log_format: LogFormat = "text", Range::<LogFormat>::Any;
        /// One log line per tenant request (target `access`, level info):
        /// tenant, method, path without the query, status, outcome,
        /// duration, response body bytes and request id.
        access_log: Switch = "off", Range::<Switch>::Any;
        /// Where each request's id (the x-request-id response header, and
        /// request_id on its log lines) comes from: `generate`, made by the
        /// runner; `trust`, the client's traceparent trace id or
        /// x-request-id when well formed (for a trusted proxy in front).
        request_id: RequestIdPolicy = "generate", Range::<RequestIdPolicy>::Any;
    }
}

/// The tenants file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Runner-wide settings; any key not given keeps the flag's value.
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    defaults: DefaultsEntry,
    #[serde(default)]
    tenants: BTreeMap<String, TenantEntry>,
}

/// `[defaults]`: limits, and config and secrets every tenant starts from
/// (its own table's names win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DefaultsEntry {
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    secrets: BTreeMap<String, toml::Value>,
    #[serde(flatten)]
    limits: LimitsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct TenantEntry {
    /// The tenant's component; relative paths are relative to the file.
    component: Option<PathBuf>,
    /// `[tenants.NAME.config]`: plain settings its guests read.
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// `[tenants.NAME.secrets]`: each `{ file = "..." }` (relative to the
    /// file) or `{ env = "VAR" }`, read when the file is; never inline.
    #[serde(default)]
    secrets: BTreeMap<String, toml::Value>,
    /// `[tenants.NAME.tls]`: its own certificate for the hosts it claims.
    #[serde(default)]
    tls: Option<TlsEntry>,
    #[serde(flatten)]
    limits: LimitsFile,
}

/// `[tenants.NAME.tls]`: `cert`, a PEM file (relative to the file), and
/// `key`, by reference as a secret is (`{ file = "..." }` or `{ env =
/// "VAR" }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsEntry {
    cert: PathBuf,
    key: toml::Value,
}

impl TlsEntry {
    /// Reads the certificate and its key, the key as a secret is read.
    fn read(&self, base_dir: &Path) -> anyhow::Result<crate::tls::TenantCert> {
        let path = base_dir.join(&self.cert);
        let cert = std::fs::read_to_string(&path)
            .with_context(|| format!("tls.cert: reading {}", path.display()))?;
        let entries = [("key".to_string(), self.key.clone())].into();
        let mut key = read_secrets(&entries, base_dir).context("tls")?;
        Ok(crate::tls::TenantCert {
            cert,
            key: key.remove("key").context("tls.key")?,
        })
    }
}

/// Reads each secret from where its entry points; an error names the
/// secret and the place, never a value.
fn read_secrets(
    entries: &BTreeMap<String, toml::Value>,
    base_dir: &Path,
) -> anyhow::Result<BTreeMap<String, Secret>> {
    let mut secrets = BTreeMap::new();
    for (name, entry) in entries {
        let how = |why: &str| anyhow::anyhow!("secrets.{name}: {why}");
        let table = match entry {
            toml::Value::Table(table) if table.len() == 1 => table,
            _ => {
                return Err(how(
                    "give a secret by reference, { file = \"PATH\" } or { env = \"VARIABLE\" }; \
                     a secret is never written in the tenants file",
                ));
            }
        };
        let value = match table.iter().next() {
            Some((key, toml::Value::String(path))) if key == "file" => {
                let path = base_dir.join(path);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| how(&format!("reading {}: {e}", path.display())))?;
                // The newline an editor or `echo` leaves is not the secret's.
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_owned()
            }
            Some((key, toml::Value::String(var))) if key == "env" => std::env::var(var)
                .map_err(|_| how(&format!("the environment variable {var} is not set")))?,
            _ => {
                return Err(how(
                    "expected { file = \"PATH\" } or { env = \"VARIABLE\" }",
                ));
            }
        };
        secrets.insert(name.clone(), Secret::new(value));
    }
    Ok(secrets)
}

/// Everything `run` needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    /// Whether `max-connections` was given (flag, variable or file), not
    /// left at its default; see [`Config::fit_descriptors`].
    pub max_connections_given: bool,
    pub engine: EngineConfig,
    pub http: HttpLimits,
    pub shards: usize,
    pub tenant_labels: TenantLabels,
    /// The limits a tenant gets for every key its table (or its
    /// deployment) leaves out: flags over the file's `[defaults]`.
    pub defaults: Limits,
    pub admin: AdminApi,
    /// The config and secrets of `[defaults]`, which tenants deployed
    /// through the admin API start from too.
    pub default_vars: Variables,
    /// Seals secrets deployed through the admin API (`--secrets-key-file`).
    pub sealer: Option<std::sync::Arc<crate::seal::Sealer>>,
    /// The store the runner opens, decided from the server settings.
    pub store: StoreConfig,
    /// Deprecated environment variables it read, each as a warning.
    pub deprecated: Vec<String>,
    pub tenants: Vec<TenantConfig>,
    /// The tenant listener's certificate and key, with TLS on.
    pub tls: Option<crate::tls::KeyPair>,
    /// The admin listener's, with TLS on there.
    pub admin_tls: Option<crate::tls::KeyPair>,
}

/// The engine's settings: the server's, with the pool's memory size
/// decided.
fn engine_config(
    server: &ServerSettings,
    max_memory: ByteSize,
    store: &StoreConfig,
) -> EngineConfig {
    EngineConfig {
        pool_size: server.pool_size,
        max_memory: limits::bytes(max_memory),
        max_wasm_stack: limits::bytes(server.max_wasm_stack),
        epoch_tick: server.epoch_tick,
        keep_resident: limits::bytes(server.pool_keep_resident),
        cache_dir: server.cache_dir.0.clone(),
        compile: CompileSettings {
            // The binary sets itself as the compiler (see `main`); the
            // library compiles in-process unless told a program.
            program: None,
            workers: server.compile_workers,
            timeout: server.compile_timeout,
            max_memory: server.compile_max_memory.as_u64(),
        },
        ready_reads: !store.reads_wait(),
    }
}

/// The declared defaults: a pool sized for the default tenant limits.
impl Default for EngineConfig {
    fn default() -> Self {
        engine_config(
            &ServerSettings::default(),
            Limits::default().max_memory,
            &StoreConfig::Memory,
        )
    }
}

/// Reads the admin token: from the file if one is given, else from
/// [`ADMIN_TOKEN_VAR`]; an empty one is refused rather than taken as "any".
fn admin_token(file: &OptionalPath) -> anyhow::Result<Option<Digest>> {
    let token = match &file.0 {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading admin-token-file {}", path.display()))?,
        None => match std::env::var(ADMIN_TOKEN_VAR) {
            Ok(token) => token,
            Err(_) => return Ok(None),
        },
    };
    let token = token.trim();
    if token.is_empty() {
        bail!("the admin token is empty: put a secret in admin-token-file or {ADMIN_TOKEN_VAR}");
    }
    Ok(Some(Digest::of(token.as_bytes())))
}

impl Config {
    /// Parses the process's own arguments.
    pub fn from_args() -> anyhow::Result<(Cli, Self)> {
        Self::from_arg_matches(command().get_matches())
    }

    /// Parses an argument list (the first item is the program name).
    pub fn try_from_args<I, T>(args: I) -> anyhow::Result<(Cli, Self)>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::from_arg_matches(command().try_get_matches_from(args)?)
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
        let max_connections_given =
            explicit("max_connections") || file.server.max_connections.is_some();
        // Variables named before the one rule, still read, with a warning.
        let mut deprecated = Vec::new();
        let mut from_old_name = Vec::new();
        for (old, id) in DEPRECATED_VARS {
            if explicit(id) {
                continue;
            }
            if let Ok(text) = std::env::var(old) {
                let new = crate::settings::env_var(id);
                cli.limits
                    .set_flag(id, &text)
                    .map_err(|why| anyhow::anyhow!("{old}: {why}"))?;
                deprecated.push(format!("{old} is deprecated: set {new} instead"));
                from_old_name.push(id);
            }
        }
        let explicit = |id: &str| explicit(id) || from_old_name.contains(&id);
        // Paths the file gives are relative to the file; those from flags,
        // to the working directory.
        let from_file = [
            ("data_dir", file.server.data_dir.is_some()),
            ("admin_token_file", file.server.admin_token_file.is_some()),
            ("cache_dir", file.server.cache_dir.is_some()),
            ("tls_cert", file.server.tls_cert.is_some()),
            ("tls_key", file.server.tls_key.is_some()),
            ("admin_tls_cert", file.server.admin_tls_cert.is_some()),
            ("admin_tls_key", file.server.admin_tls_key.is_some()),
        ]
        .map(|(id, in_file)| in_file && !explicit(id));
        cli.server
            .overlay(&file.server, "[server] ", &explicit)
            .context("in the tenants file")?;
        let server = &mut cli.server;
        let paths = [
            &mut server.data_dir,
            &mut server.admin_token_file,
            &mut server.cache_dir,
            &mut server.tls_cert,
            &mut server.tls_key,
            &mut server.admin_tls_cert,
            &mut server.admin_tls_key,
        ];
        for (path, from_file) in paths.into_iter().zip(from_file) {
            if from_file && let Some(path) = &mut path.0 {
                *path = base_dir.join(&*path);
            }
        }
        cli.limits
            .overlay(&file.defaults.limits, "[defaults] ", &explicit)
            .context("in the tenants file")?;
        let mut config = build(&cli, file, &base_dir)?;
        config.max_connections_given = max_connections_given;
        config.deprecated = deprecated;
        Ok((cli, config))
    }
}

/// Environment variables named before every setting's was `RUNNER_` and its
/// flag, and the setting each still sets.
const DEPRECATED_VARS: [(&str, &str); 1] =
    [("RUNNER_TENANT_MAX_IN_FLIGHT", "max_tenant_in_flight")];

/// The command line, with each setting's range added to its help and its
/// environment variable attached.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for (id, range) in ServerSettings::ranges().into_iter().chain(Limits::ranges()) {
        command = command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [range: {range}]"))
        });
    }
    for id in ServerSettings::KEYS.iter().chain(Limits::KEYS) {
        command = command.mut_arg(*id, |arg| arg.env(crate::settings::env_var(id)));
    }
    // `runner tenant deploy` sends only the limits given on its command
    // line: neither the serving defaults nor RUNNER_* variables apply there.
    command.mut_subcommand("tenant", |tenant| {
        tenant.mut_subcommand("deploy", |mut deploy| {
            for id in Limits::KEYS {
                deploy = deploy.mut_arg(*id, |arg| arg.env(None).hide_default_value(true));
            }
            deploy
        })
    })
}

/// A component must be a regular file: a directory, a FIFO or a device
/// (`/dev/zero`, which would be read without end) is refused, saying which.
fn check_component_file(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("component {shown} does not exist")
        }
        Err(e) => bail!("component {shown} cannot be read: {e}"),
    };
    if meta.is_dir() {
        bail!("component {shown} is a directory, not a .wasm file");
    }
    if !meta.is_file() {
        bail!("component {shown} is not a regular file (a FIFO or a device?)");
    }
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tenants file {}", path.display()))?;
    let parsed = toml::from_str(&text);
    if parsed.is_err()
        && let Some(unknown) = unknown_tenant_key(&text)
    {
        bail!("parsing tenants file {}: {unknown}", path.display());
    }
    parsed.with_context(|| format!("parsing tenants file {}", path.display()))
}

/// The first key of a `[tenants.NAME]` table that is no setting, named at
/// its line. A tenant's table is read through a flattened struct, so serde
/// can only point at the table's header.
fn unknown_tenant_key(text: &str) -> Option<String> {
    let file = toml::de::DeTable::parse(text).ok()?;
    let Some(toml::de::DeValue::Table(tenants)) =
        file.get_ref().get("tenants").map(|v| v.get_ref())
    else {
        return None;
    };
    let known = || {
        ["component", "config", "secrets", "tls"]
            .into_iter()
            .map(str::to_string)
            .chain(Limits::KEYS.iter().map(|k| crate::settings::key(k)))
    };
    for (name, table) in tenants {
        let toml::de::DeValue::Table(table) = table.get_ref() else {
            continue;
        };
        for key in table.keys() {
            if known().any(|k| k == **key.get_ref()) {
                continue;
            }
            let start = key.span().start;
            let line = text[..start].matches('\n').count() + 1;
            let column = text[..start]
                .rsplit('\n')
                .next()
                .map_or(0, |l| l.chars().count())
                + 1;
            return Some(format!(
                "line {line}, column {column}: unknown key `{}` in [tenants.{}]; a tenant's \
                 keys are: {}",
                key.get_ref(),
                name.get_ref(),
                known().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    None
}

fn build(cli: &Cli, file: File, base_dir: &Path) -> anyhow::Result<Config> {
    let server = &cli.server;
    server.validate("")?;
    let store = StoreConfig::decide(&server.store, &server.data_dir, server.fsync)
        .map_err(|why| anyhow::anyhow!("store: {why}"))?;
    let defaults = &cli.limits;
    let default_secrets = read_secrets(&file.defaults.secrets, base_dir).context("[defaults]")?;
    let default_vars = Variables::new(file.defaults.config, default_secrets);
    let mut tenants = Vec::new();
    let default_component = match &cli.component {
        Some(path) => ComponentSource::File(path.clone()),
        None => ComponentSource::Embedded,
    };
    for (name, entry) in file.tenants {
        let who = format!("tenant {name:?}: ");
        tenant::validate_name(&name).map_err(anyhow::Error::msg)?;
        let mut limits = defaults.clone();
        limits.overlay(&entry.limits, &who, &|_| false)?;
        limits.validate(&who)?;
        let component = match entry.component {
            Some(path) => {
                let path = base_dir.join(path);
                check_component_file(&path)
                    .with_context(|| who.trim_end_matches(": ").to_string())?;
                ComponentSource::File(path)
            }
            None => default_component.clone(),
        };
        let secrets = read_secrets(&entry.secrets, base_dir)
            .with_context(|| who.trim_end_matches(": ").to_string())?;
        let tls = match &entry.tls {
            Some(tls) => Some(
                tls.read(base_dir)
                    .with_context(|| who.trim_end_matches(": ").to_string())?,
            ),
            None => None,
        };
        tenants.push(TenantConfig {
            limits,
            name,
            component,
            vars: default_vars.under(entry.config, secrets),
            tls,
        });
    }
    let generated = match (cli.tenants, cli.config.is_some()) {
        (Some(n), _) => n,
        (None, true) => 0,
        (None, false) => 1,
    };
    if let ComponentSource::File(path) = &default_component {
        check_component_file(path).context("--component")?;
    }
    defaults.validate("default limits: ")?;
    // A set, not a scan per name: 100,000 generated tenants must not cost
    // 100,000 squared comparisons.
    let listed: std::collections::HashSet<String> =
        tenants.iter().map(|t| t.name.clone()).collect();
    for i in 0..generated {
        let name = format!("t{i}");
        if listed.contains(&name) {
            continue;
        }
        tenants.push(TenantConfig {
            name,
            component: default_component.clone(),
            limits: defaults.clone(),
            vars: default_vars.clone(),
            tls: None,
        });
    }
    let token = admin_token(&server.admin_token_file)?;
    if tenants.is_empty() && token.is_none() {
        bail!(
            "no tenants: pass --tenants N or list tenants in --config, or give an admin token \
             (admin-token-file) to deploy them at runtime"
        );
    }

    let shards = server.shards.or_else(Store::default_shards);
    if !shards.is_power_of_two() {
        bail!("shards must be a power of two up to 65536, not {shards}");
    }
    let largest = tenants
        .iter()
        .map(|t| t.limits.max_memory)
        .chain([defaults.max_memory])
        .max()
        .unwrap_or(defaults.max_memory);
    let max_memory = server.pool_max_memory.or_else(|| largest);
    if let Some(t) = tenants.iter().find(|t| t.limits.max_memory > max_memory) {
        bail!(
            "tenant {:?}: max-memory {} is above pool-max-memory {}",
            t.name,
            t.limits.max_memory.show(),
            max_memory.show()
        );
    }
    Ok(Config {
        engine: engine_config(server, max_memory, &store),
        store,
        deprecated: Vec::new(),
        http: HttpLimits {
            max_in_flight: server.max_in_flight.or_else(|| server.pool_size as usize),
            max_request_body: server.max_request_body.as_u64(),
            max_buffered_body: server.max_buffered_body.as_u64(),
            body_read_timeout: server.body_read_timeout,
            request_ids: server.request_id,
            access_log: server.access_log.is_on(),
            host_suffixes: server.host_suffix.clone(),
            path_routing: server.path_routing.is_on(),
            tls_handshake_timeout: server.tls_handshake_timeout,
            trusted_proxies: server.trusted_proxies.clone(),
            connections: ConnectionLimits {
                max_connections: server.max_connections,
                max_header_bytes: limits::bytes(server.max_header_bytes),
                max_headers: server.max_headers,
                header_read_timeout: server.header_read_timeout,
                idle_timeout: server.idle_timeout,
            },
        },
        shards,
        tenant_labels: TenantLabels {
            mode: server.metrics_tenant_label,
            max_tenants: server.metrics_max_tenants,
        },
        defaults: defaults.clone(),
        default_vars,
        admin: AdminApi {
            token,
            max_component_bytes: server.max_component_bytes.as_u64(),
            grace: server.shutdown_timeout,
            body_read_timeout: server.body_read_timeout,
            require_tls: server.admin_tls_cert.0.is_some() && server.admin_require_tls.is_on(),
        },
        sealer: match (
            &server.secrets_key_file.0,
            &server.secrets_previous_key_file.0,
        ) {
            (Some(current), previous) => Some(std::sync::Arc::new(
                crate::seal::Sealer::open_files(current, previous.as_deref())?,
            )),
            (None, Some(_)) => bail!(
                "secrets-previous-key-file is set without secrets-key-file: give the current \
                 key too"
            ),
            (None, None) => None,
        },
        tls: crate::tls::pair(
            "--tls",
            server.tls_cert.0.as_deref(),
            server.tls_key.0.as_deref(),
        )?,
        admin_tls: crate::tls::pair(
            "--admin-tls",
            server.admin_tls_cert.0.as_deref(),
            server.admin_tls_key.0.as_deref(),
        )?,
        server: server.clone(),
        max_connections_given: false,
        tenants,
    })
}

impl Config {
    /// Settings that are valid but probably not what the operator wants,
    /// to be logged at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let global = self.http.max_in_flight.min(self.engine.pool_size as usize);
        let deprecated = self.deprecated.iter().cloned();
        let fsync_alone = (self.server.data_dir.0.is_none() && self.server.fsync != Fsync::Always)
            .then(|| {
                "fsync has no effect without data-dir: key-value data is in memory only".to_string()
            });
        // One line for every tenant alike, however many there are.
        let greedy: Vec<&str> = self
            .tenants
            .iter()
            .filter(|t| t.limits.max_tenant_in_flight >= global)
            .map(|t| t.name.as_str())
            .collect();
        let greedy = (!greedy.is_empty()).then(|| {
            let who = if greedy.len() == 1 {
                "this tenant"
            } else {
                "each of them"
            };
            format!(
                "{}: max-tenant-in-flight reaches the runner's {global} request slots \
                 (max-in-flight, pool-size): {who} alone can take all of them",
                few(&greedy, "tenant", "tenants")
            )
        });
        deprecated.chain(fsync_alone).chain(greedy).collect()
    }
}

/// `tenant "a"`, or `3 tenants ("a", "b", "c")`, with at most five names
/// and a count of the rest.
fn few(names: &[&str], one: &str, many: &str) -> String {
    const SHOWN: usize = 5;
    if let [name] = names {
        return format!("{one} {name:?}");
    }
    let mut shown: Vec<String> = names.iter().take(SHOWN).map(|n| format!("{n:?}")).collect();
    if names.len() > SHOWN {
        shown.push(format!("and {} more", names.len() - SHOWN));
    }
    format!("{} {many} ({})", names.len(), shown.join(", "))
}

/// File descriptors kept for everything but client connections: the
/// listeners, the epoch thread, log output, components read at start-up.
const RESERVED_DESCRIPTORS: u64 = 256;

impl Config {
    /// Checks the connection caps of both listeners against `limit`, the
    /// process's file-descriptor limit: a cap that was given and cannot fit
    /// is an error naming it; the default is lowered to fit, and the
    /// returned message says so.
    pub fn fit_descriptors(&mut self, limit: u64) -> anyhow::Result<Option<String>> {
        let per_listener = limit.saturating_sub(RESERVED_DESCRIPTORS) / 2;
        let caps = &mut self.http.connections.max_connections;
        if *caps as u64 <= per_listener {
            return Ok(None);
        }
        if self.max_connections_given || per_listener == 0 {
            bail!(
                "max-connections {caps} needs {} file descriptors (two listeners plus \
                 {RESERVED_DESCRIPTORS} kept), but the limit is {limit}: raise `ulimit -n` \
                 or lower max-connections to at most {per_listener}",
                2 * *caps as u64 + RESERVED_DESCRIPTORS
            );
        }
        let lowered = format!(
            "max-connections lowered from its default {caps} to {per_listener} per listener \
             to fit the file-descriptor limit of {limit}"
        );
        *caps = per_listener as usize;
        Ok(Some(lowered))
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
        assert_eq!(c.http.max_in_flight, 1000);
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
            (l.fuel, l.timeout, l.max_memory.as_u64()),
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
        assert_eq!(alpha.limits.max_keys, 42);
        assert_eq!(alpha.limits.max_value_bytes.as_u64(), 10 << 10);
        assert_eq!(alpha.limits.timeout, Duration::from_secs(2));
        let beta = c.tenants.iter().find(|t| t.name == "beta").unwrap();
        assert_eq!(beta.limits.fuel, 11);
        assert_eq!(c.tenants.len(), 2, "a file without --tenants adds no t0..");
        let c = parse(&["--config", path, "--pool-size", "60"]).unwrap();
        assert_eq!(c.engine.pool_size, 60);
    }

    #[test]
    fn the_store_is_memory_or_redis_urls_from_a_flag_or_the_file() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.server.store, Location::Memory);
        assert_eq!(c.server.store_timeout, Duration::from_millis(250));
        let c = parse(&["--store", "rediss://:pw@cache.internal:6380/2"]).unwrap();
        assert_eq!(
            c.server.store,
            Location::Redis {
                urls: vec!["rediss://:pw@cache.internal:6380/2".into()],
                cluster: false
            }
        );
        // Logs and debug prints never show the password.
        assert_eq!(
            c.server.store.redacted(),
            "rediss://:***@cache.internal:6380/2"
        );
        assert!(!format!("{c:?}").contains(":pw@"));
        let f = file(
            "[server]\nstore = \"redis://10.0.0.1:7000, redis://10.0.0.2:7000\"\nstore-timeout = \"1s\"\n",
        );
        let c = parse(&["--config", f.path.to_str().unwrap(), "--tenants", "1"]).unwrap();
        assert_eq!(
            c.server.store,
            Location::Redis {
                urls: vec![
                    "redis://10.0.0.1:7000".into(),
                    "redis://10.0.0.2:7000".into()
                ],
                cluster: true
            }
        );
        assert_eq!(c.server.store_timeout, Duration::from_secs(1));
        // One seed of a Cluster, by its scheme.
        let c = parse(&["--store", "rediss+cluster://:pw@seed:7000"]).unwrap();
        assert_eq!(
            c.server.store,
            Location::Redis {
                urls: vec!["rediss://:pw@seed:7000".into()],
                cluster: true
            }
        );
        assert_eq!(c.server.store.redacted(), "rediss+cluster://:***@seed:7000");
        let err = format!("{:#}", parse(&["--store", "postgres://db"]).unwrap_err());
        assert_eq!(
            err,
            r#"store: "postgres://db" is neither memory nor a redis://, rediss:// or redis+cluster:// URL"#
        );
        // A refused URL never shows its password, a `/` in it included.
        let err = format!(
            "{:#}",
            parse(&["--store", "redis://u:s3/cr3t@h:bad"]).unwrap_err()
        );
        assert!(
            err.starts_with(r#"store: "redis://u:***@h:bad" is not a Redis URL"#),
            "{err}"
        );
        assert!(!err.contains("s3/cr3t"), "{err}");
        let err = format!("{:#}", parse(&["--store-timeout", "0s"]).unwrap_err());
        assert!(
            err.contains("store-timeout must be between 1ms and 1m, not 0s"),
            "{err}"
        );
    }

    /// Key-value reads are linked as synchronous imports only where the
    /// store answers them without waiting.
    #[test]
    fn reads_are_linked_synchronously_only_off_redis() {
        let ready = |args: &[&str]| parse(args).unwrap().engine.ready_reads;
        assert!(ready(&[]));
        assert!(ready(&["--data-dir", "kv"]));
        assert!(!ready(&["--store", "redis://127.0.0.1:6379"]));
        assert!(!ready(&["--store", "redis+cluster://127.0.0.1:7000"]));
        assert!(EngineConfig::default().ready_reads);
    }

    #[test]
    fn the_data_dir_comes_from_a_flag_or_the_file_relative_to_it() {
        let c = parse(&[]).unwrap();
        assert_eq!(
            (&c.server.data_dir, c.server.fsync),
            (&DataDir(None), Fsync::Always)
        );
        let c = parse(&["--data-dir", "rel/data", "--fsync", "every=250ms"]).unwrap();
        assert_eq!(c.server.data_dir, DataDir(Some("rel/data".into())));
        assert_eq!(c.server.fsync, Fsync::Every(Duration::from_millis(250)));
        let f = file("[server]\ndata-dir = \"kv\"\nfsync = \"every=1s\"\n");
        let path = f.path.to_str().unwrap();
        let c = parse(&["--config", path, "--tenants", "1"]).unwrap();
        let beside = f.path.parent().unwrap().join("kv");
        assert_eq!(c.server.data_dir, DataDir(Some(beside)));
        assert_eq!(c.server.fsync, Fsync::Every(Duration::from_secs(1)));
        // A flag wins, as given.
        let c = parse(&["--config", path, "--tenants", "1", "--data-dir", "mine"]).unwrap();
        assert_eq!(c.server.data_dir, DataDir(Some("mine".into())));
        let err = parse(&["--fsync", "sometimes"]).unwrap_err().to_string();
        assert!(
            err.contains(
                r#""sometimes" is neither "always" nor "every=<duration>" (say every=100ms)"#
            ),
            "{err}"
        );
        let f = file("[server]\nfsync = 5\n");
        let err = format!(
            "{:#}",
            parse(&["--config", f.path.to_str().unwrap()]).unwrap_err()
        );
        assert!(
            err.contains(
                r#"[server] fsync: expected "always" or "every=<duration>", found integer"#
            ),
            "{err}"
        );
    }

    #[test]
    fn listen_addresses_come_from_flags_or_the_file() {
        let f = file("[server]\nlisten = \"127.0.0.1:9999\"\nmetrics-listen = \"[::1]:9998\"\n");
        let path = f.path.to_str().unwrap();
        let c = parse(&["--config", path, "--tenants", "1"]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999".parse().unwrap());
        assert_eq!(c.server.metrics_listen, "[::1]:9998".parse().unwrap());
        let c = parse(&[
            "--config",
            path,
            "--tenants",
            "1",
            "--listen",
            "127.0.0.1:7000",
        ])
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:7000".parse().unwrap());
        let f = file("[server]\nlisten = \"localhost\"\n");
        let err = format!(
            "{:#}",
            parse(&["--config", f.path.to_str().unwrap()]).unwrap_err()
        );
        assert!(
            err.contains(r#"[server] listen: "localhost" is not an address such as 127.0.0.1:8080 or [::1]:8080"#),
            "{err}"
        );
    }

    #[test]
    fn fsync_without_a_data_dir_is_a_warning() {
        let c = parse(&["--fsync", "every=1s"]).unwrap();
        assert_eq!(
            c.warnings(),
            vec![
                "fsync has no effect without data-dir: key-value data is in memory only"
                    .to_string()
            ]
        );
        assert!(
            parse(&["--data-dir", "d", "--fsync", "every=1s"])
                .unwrap()
                .warnings()
                .is_empty()
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        // At the key's own line, not its table's header.
        let f = file("[defaults]\ntimeout = \"2s\"\n\n[tenants.a]\ntimeout = \"1s\"\n  fule = 3\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        let shown = format!("{err:#}");
        let expected = format!(
            "parsing tenants file {}: line 6, column 3: unknown key `fule` in [tenants.a]; a \
             tenant's keys are: component, config, secrets, tls, fuel, timeout, max-memory,",
            f.path.display()
        );
        assert!(shown.starts_with(&expected), "{shown}");

        let f = file("[server]\npool-sise = 3\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("line 2, column 1"), "{shown}");
        assert!(shown.contains("unknown field `pool-sise`"), "{shown}");

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

    #[test]
    fn every_numeric_setting_is_range_checked_and_named() {
        for (args, message) in [
            (
                vec!["--max-in-flight", "18446744073709551615"],
                "max-in-flight must be at most 1000000, not 18446744073709551615",
            ),
            (
                vec!["--max-tenant-in-flight", "18446744073709551615"],
                "default limits: max-tenant-in-flight must be at most 1000000, not 18446744073709551615",
            ),
            (
                vec!["--max-connections", "18446744073709551615"],
                "max-connections must be at most 1000000, not 18446744073709551615",
            ),
            (
                vec!["--timeout", "18446744073709551615s"],
                "default limits: timeout must be between 1ms and 1day, not 584542046090years 7months 15days 17h 5m 3s",
            ),
            (
                vec!["--epoch-tick", "100years"],
                "epoch-tick must be between 100us and 1s, not 100years",
            ),
            (
                vec!["--max-header-bytes", "1000EiB"],
                "max-header-bytes must be between 8192 bytes and 1048576 bytes, not 18446744073709551615 bytes",
            ),
            (
                vec!["--max-memory", "1000TiB"],
                "default limits: max-memory must be between 65536 bytes and 4294967296 bytes, not 1099511627776000 bytes",
            ),
            (
                vec!["--pool-size", "0"],
                "pool-size must be greater than zero",
            ),
        ] {
            let err = parse(&args).unwrap_err();
            assert_eq!(format!("{err:#}"), message, "{args:?}");
        }
    }

    #[test]
    fn file_values_are_range_checked_and_named_too() {
        let f = file("[server]\nmax-connections = 0\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "max-connections must be greater than zero"
        );
        let f = file("[tenants.a]\nmax-memory = \"1000TiB\"\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "tenant \"a\": max-memory must be between 65536 bytes and 4294967296 bytes, not 1099511627776000 bytes"
        );
        let f = file("[defaults]\nfuel = \"lots\"\n");
        let err = parse(&["--config", f.path.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "in the tenants file: [defaults] fuel: expected a whole number, found string"
        );
    }

    #[test]
    fn every_setting_reads_runner_and_its_flag_in_upper_snake_case() {
        let command = command();
        let mut checked = 0;
        for id in ServerSettings::KEYS.iter().chain(Limits::KEYS) {
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == *id)
                .expect("every setting is a flag");
            let flag = arg.get_long().expect("a long flag");
            let expected = format!("RUNNER_{}", flag.to_uppercase().replace('-', "_"));
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(expected.as_str()),
                "--{flag}"
            );
            checked += 1;
        }
        assert_eq!(checked, ServerSettings::KEYS.len() + Limits::KEYS.len());
        assert!(checked >= 50, "{checked}");
        // The ones the README spells out, as it spells them.
        for (flag, var) in [
            ("store", "RUNNER_STORE"),
            ("store-timeout", "RUNNER_STORE_TIMEOUT"),
            ("pool-max-memory", "RUNNER_POOL_MAX_MEMORY"),
            ("max-tenant-in-flight", "RUNNER_MAX_TENANT_IN_FLIGHT"),
            ("listen", "RUNNER_LISTEN"),
            ("metrics-listen", "RUNNER_METRICS_LISTEN"),
            ("data-dir", "RUNNER_DATA_DIR"),
            ("cache-dir", "RUNNER_CACHE_DIR"),
            ("request-id", "RUNNER_REQUEST_ID"),
            ("access-log", "RUNNER_ACCESS_LOG"),
            ("log-format", "RUNNER_LOG_FORMAT"),
        ] {
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(flag))
                .expect("the README's flag");
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(var),
                "--{flag}"
            );
        }
    }

    #[test]
    fn declared_defaults_match_the_runtime_defaults() {
        assert_eq!(Limits::default().quotas(), crate::store::Quotas::default());
        let c = parse(&[]).unwrap();
        assert_eq!(c.server, ServerSettings::default());
        assert_eq!(c.engine.pool_size, EngineConfig::default().pool_size);
        assert_eq!(
            c.engine.keep_resident,
            EngineConfig::default().keep_resident
        );
        assert_eq!(
            c.engine.max_wasm_stack,
            EngineConfig::default().max_wasm_stack
        );
    }

    #[test]
    fn connection_caps_fit_the_descriptor_limit() {
        let mut c = parse(&[]).unwrap();
        assert_eq!(c.fit_descriptors(1 << 20).unwrap(), None);
        assert_eq!(c.http.connections.max_connections, 10_000);
        assert_eq!(
            c.fit_descriptors(1024).unwrap().as_deref(),
            Some(
                "max-connections lowered from its default 10000 to 384 per listener \
                 to fit the file-descriptor limit of 1024"
            )
        );
        assert_eq!(c.http.connections.max_connections, 384);
        let mut c = parse(&["--max-connections", "5000"]).unwrap();
        let err = c.fit_descriptors(1024).unwrap_err();
        assert_eq!(
            err.to_string(),
            "max-connections 5000 needs 10256 file descriptors (two listeners plus 256 kept), \
             but the limit is 1024: raise `ulimit -n` or lower max-connections to at most 384"
        );
    }

    #[test]
    fn components_must_be_regular_files() {
        let dir = std::env::temp_dir();
        let err = parse(&["--component", dir.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "--component: component {} is a directory, not a .wasm file",
                dir.display()
            )
        );
        let err = parse(&["--component", "/dev/zero"]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--component: component /dev/zero is not a regular file (a FIFO or a device?)"
        );
        let err = parse(&["--component", "/nonexistent/app.wasm"]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--component: component /nonexistent/app.wasm does not exist"
        );
    }

    #[test]
    fn a_tenant_cap_that_reaches_the_pool_is_warned_about_once() {
        assert!(parse(&["--tenants", "2"]).unwrap().warnings().is_empty());
        let c = parse(&["--pool-size", "8"]).unwrap();
        assert_eq!(
            c.warnings(),
            vec![
                "tenant \"t0\": max-tenant-in-flight reaches the runner's 8 request slots \
                 (max-in-flight, pool-size): this tenant alone can take all of them"
                    .to_string()
            ]
        );
        // Five thousand tenants alike give one line, not five thousand.
        let c = parse(&["--pool-size", "8", "--tenants", "5000"]).unwrap();
        assert_eq!(
            c.warnings(),
            vec![
                "5000 tenants (\"t0\", \"t1\", \"t2\", \"t3\", \"t4\", and 4995 more): \
                 max-tenant-in-flight reaches the runner's 8 request slots (max-in-flight, \
                 pool-size): each of them alone can take all of them"
                    .to_string()
            ]
        );
    }
}
