//! Every per-tenant limit, its default, and the error a client sees when a
//! request runs into one.
//!
//! Each limit has a stable token (`Limit::as_str`): it is the `limit` label in
//! metrics and the value of the `x-runner-limit` response header, so clients
//! and dashboards can tell limits apart without parsing messages.

use std::time::Duration;

use bytesize::ByteSize;
use http::StatusCode;

use crate::outbound::policy::AllowedHosts;
use crate::routes::{HostNames, Route};
use crate::settings::{Item, List, Range, settings};
use crate::store::Quotas;

/// Most fuel a request may be given: wasmtime keeps fuel in an i64.
const MAX_FUEL: u64 = 1 << 62;
const DAY: Duration = Duration::from_secs(24 * 3600);

settings! {
    /// The limits one tenant runs under. Flags set the default for every
    /// tenant; config file tables `[defaults]` and `[tenants.NAME]` take the
    /// same names.
    pub struct Limits, file LimitsFile, heading "Tenant limits" {
        /// Fuel one request may burn (about one unit per wasm instruction);
        /// past it the request fails with 503 and x-runner-limit: fuel.
        fuel: u64 = "100000000", Range::Positive(MAX_FUEL);
        /// Wall-clock time one request may take, host calls included; past
        /// it, 504 and x-runner-limit: deadline.
        timeout: Duration = "1s", Range::Between(Duration::from_millis(1), DAY);
        /// Size one linear memory may grow to; growth past it fails, and a
        /// guest that aborts on it gets 500 with x-runner-limit: memory.
        max_memory: ByteSize = "64MiB", Range::Between(ByteSize::kib(64), ByteSize::gib(4));
        /// Requests one instance of the tenant's component may serve before
        /// it is dropped. 1 (the default) gives every request a fresh
        /// instance; above 1, an instance whose request ended cleanly is
        /// kept for the tenant's next request, with its heap and globals as
        /// that request left them (fuel and the deadline are still per
        /// request).
        max_instance_reuse: u64 = "1", Range::Positive(1_000_000u64);
        /// Requests one instance of a WASIp3 component may serve at once.
        /// 1 (the default) runs one request at a time per instance; above
        /// 1, requests of the tenant share instances (and their fuel tank,
        /// memory and failures: the README says how), up to this many
        /// waiting for their response in each. No effect on WASIp2
        /// components, which cannot be called concurrently.
        max_instance_concurrency: usize = "1", Range::Positive(1000usize);
        /// How long a kept instance waits for its tenant's next request
        /// before it is dropped (with max-instance-reuse above 1).
        instance_idle_timeout: Duration = "1s", Range::Between(Duration::from_millis(1), Duration::from_secs(3600));
        /// Linear memory a kept instance may have grown to and still serve
        /// another request (with max-instance-reuse above 1): one whose
        /// memories together are larger when a request ends is dropped
        /// then, and the next request gets a fresh instance, as Fastly's
        /// reusable sandboxes recycle one past `maxMemoryMiB`. Counted in
        /// runner_instances_recycled_total. A WASIp3 instance shared by
        /// several requests takes no new ones past it.
        max_reused_memory: ByteSize = "32MiB", Range::Between(ByteSize::kib(64), ByteSize::gib(4));
        /// Elements one table may grow to.
        max_table_elements: usize = "20000", Range::Positive(10_000_000usize);
        /// Core instances one request's store may create.
        max_instances: usize = "32", Range::Positive(10_000usize);
        /// Tables one request's store may create.
        max_tables: usize = "32", Range::Between(0usize, 10_000);
        /// Linear memories one request's store may create.
        max_memories: usize = "2", Range::Positive(10_000usize);
        /// Requests of one tenant in flight at once; more get 429. The default
        /// is a tenth of the default pool, so a few busy tenants cannot take
        /// every slot.
        max_tenant_in_flight: usize = "100", Range::Positive(1_000_000usize);
        /// Host resources (headers, bodies, streams, buckets: entries of the
        /// request's resource table) a request may hold at once; past it the
        /// request fails with 500 and x-runner-limit: host_resources.
        max_host_resources: usize = "1000", Range::Between(16usize, 1_000_000);
        /// In-memory size of one set of header fields a guest builds; past it
        /// the request fails with 500 and x-runner-limit: header_fields.
        /// With max-host-resources it bounds the host memory one request can
        /// make the runner hold.
        max_header_field_bytes: ByteSize = "32KiB", Range::Between(ByteSize::kib(1), ByteSize::mib(16));
        /// Log output (wasi:logging, stdout, stderr) one request may write;
        /// the rest is dropped.
        max_log_bytes: ByteSize = "64KiB", Range::Between(ByteSize(0), ByteSize::gib(1));
        /// Log output all of a tenant's requests together may write per
        /// second (a burst of up to one second's worth); the rest is
        /// dropped, with one warning per request.
        max_log_bytes_per_second: ByteSize = "1MiB", Range::Between(ByteSize(0), ByteSize::gib(1));
        /// Longest key-value key.
        max_key_bytes: ByteSize = "1KiB", Range::Positive(ByteSize::mib(1));
        /// Largest key-value value.
        max_value_bytes: ByteSize = "1MiB", Range::Between(ByteSize(0), ByteSize::gib(1));
        /// Most keys a tenant may hold across its buckets.
        max_keys: u64 = "100000", Range::Between(0u64, 1 << 40);
        /// Most bytes (keys plus values) a tenant may hold.
        max_store_bytes: ByteSize = "64MiB", Range::Between(ByteSize(0), ByteSize::tib(1));
        /// Most named buckets a tenant may open besides the default one.
        max_buckets: usize = "100", Range::Between(0usize, 1_000_000);
        /// Most keys in one list-keys page.
        max_page_keys: usize = "1000", Range::Positive(1_000_000usize);
        /// Most bytes one key-value call may copy into the guest: a list-keys
        /// page is cut short, a larger get-many is refused.
        max_call_bytes: ByteSize = "8MiB", Range::Positive(ByteSize::gib(1));
        /// Most keys one batch call (get-many, set-many, delete-many) may
        /// name; more is refused before any work, so one host call's cost is
        /// bounded.
        max_batch_keys: usize = "1000", Range::Positive(100_000usize);
        /// The buckets (Spin's store labels) the tenant's guests may open,
        /// through every key-value interface, as a Spin manifest's
        /// `key_value_stores` (comma-separated here, a list in files and
        /// the admin API): `*`, the default, allows any; `default` is the
        /// default bucket; empty allows none. Any other is refused with
        /// access-denied.
        key_value_stores: StoreLabels = "*", Range::<StoreLabels>::Any;
        /// The paths the tenant serves, as a Spin route: `/...` every path,
        /// `/api/...` `/api` and below, `/hello` that path alone,
        /// `/users/:id` a named segment. A request to another path gets 404
        /// without reaching the component; with a route set, the component
        /// also gets Spin's spin-* headers. Empty, the default: every path,
        /// no spin-* headers.
        route: Route = "", Range::<Route>::Any;
        /// Host names the tenant is served at (comma-separated here, a list
        /// in files and the admin API): a request whose Host is one of them
        /// reaches the tenant with its path unchanged, beside /t/NAME/.
        /// Compared without case, port or trailing dot; a name another
        /// tenant claims is refused at deploy. `--host` is the same flag.
        #[arg(alias = "host")]
        hosts: HostNames = "", Range::<HostNames>::Any;
        /// Where the tenant's guests may send HTTP requests, in Spin's
        /// syntax: `https://api.example.com`, `https://*.example.com`,
        /// `http://svc.internal:8080`, `https://api.example.com:*`
        /// (comma-separated here, a list in files and the admin API). Empty,
        /// the default, refuses every outgoing request
        /// (HTTP-request-denied).
        allowed_outbound_hosts: AllowedHosts = "", Range::<AllowedHosts>::Any;
        /// Outgoing requests one incoming request may make; past it,
        /// HTTP-request-denied.
        max_outbound_requests: usize = "32", Range::Between(0usize, 100_000);
        /// Outgoing requests of the tenant in flight at once (each holds one
        /// connection until its response body ends); more wait up to the
        /// connect timeout, then get connection-limit-reached.
        max_outbound_connections: usize = "16", Range::Positive(10_000usize);
        /// Time to resolve and connect (TLS included) to an upstream; past
        /// it, connection-timeout. A guest may ask for less.
        outbound_connect_timeout: Duration = "5s", Range::Between(Duration::from_millis(1), Duration::from_secs(3600));
        /// Time from sending a request to its response head; past it,
        /// connection-read-timeout. A guest may ask for less.
        outbound_first_byte_timeout: Duration = "30s", Range::Between(Duration::from_millis(1), DAY);
        /// Time between two pieces of a response body; past it,
        /// connection-read-timeout. A guest may ask for less.
        outbound_between_bytes_timeout: Duration = "30s", Range::Between(Duration::from_millis(1), DAY);
        /// Largest response body an outgoing request may receive; past it,
        /// HTTP-response-body-size.
        max_outbound_response_bytes: ByteSize = "16MiB", Range::Between(ByteSize(0), ByteSize::gib(4));
        /// Idle connections the tenant's pool keeps per upstream host, for
        /// its next requests; 0 closes each after its request.
        outbound_idle_connections: usize = "8", Range::Between(0usize, 1000);
        /// How long an idle pooled connection is kept.
        outbound_idle_timeout: Duration = "30s", Range::Between(Duration::from_millis(1), Duration::from_secs(3600));
        /// Config and secret entries a tenant may have, together.
        max_config_entries: usize = "128", Range::Between(0usize, 100_000);
        /// Longest config or secret name.
        max_config_name_bytes: usize = "255", Range::Positive(4096usize);
        /// Largest config or secret value (Fastly's secrets go to 64 KB).
        max_config_value_bytes: ByteSize = "64KiB", Range::Between(ByteSize(0), ByteSize::mib(16));
    }
}

/// A size within a declared range, as the `usize` the runtime counts in.
pub fn bytes(size: ByteSize) -> usize {
    usize::try_from(size.as_u64()).unwrap_or(usize::MAX)
}

/// One entry of `key-value-stores`: a bucket's name, or `*` for any.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd)]
pub enum StoreLabel {
    Any,
    Named(String),
}

impl std::fmt::Display for StoreLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreLabel::Any => f.write_str("*"),
            StoreLabel::Named(name) => f.write_str(name),
        }
    }
}

impl Item for StoreLabel {
    const EXPECTED: &'static str = "a list of store labels such as [\"default\", \"cache\"]";

    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "*" => Ok(StoreLabel::Any),
            name if name.len() > crate::store::MAX_BUCKET_NAME_BYTES => Err(format!(
                "store label of {} bytes is over the {}-byte limit",
                name.len(),
                crate::store::MAX_BUCKET_NAME_BYTES
            )),
            name => Ok(StoreLabel::Named(name.to_owned())),
        }
    }
}

/// A tenant's `key-value-stores`.
pub type StoreLabels = List<StoreLabel>;

impl StoreLabels {
    /// The buckets allowed by name; `None` when `*` allows any.
    fn named(&self) -> Option<std::sync::Arc<[String]>> {
        self.0
            .iter()
            .map(|label| match label {
                StoreLabel::Any => None,
                StoreLabel::Named(name) => Some(name.clone()),
            })
            .collect()
    }
}

/// The declared defaults of the key-value limits.
impl Default for Quotas {
    fn default() -> Self {
        Limits::default().quotas()
    }
}

impl Limits {
    /// The key-value quotas among these limits.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_key_bytes: bytes(self.max_key_bytes),
            max_value_bytes: bytes(self.max_value_bytes),
            max_keys: self.max_keys,
            max_bytes: self.max_store_bytes.as_u64(),
            max_buckets: self.max_buckets,
            max_page_keys: self.max_page_keys,
            max_call_bytes: bytes(self.max_call_bytes),
            max_batch_keys: self.max_batch_keys,
            buckets: self.key_value_stores.named(),
        }
    }
}

/// A limit a request ran into. A bounded set: it labels metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    Fuel,
    Deadline,
    Memory,
    TableElements,
    StackOverflow,
    TenantConcurrency,
    GlobalConcurrency,
    InstancePool,
    RequestBody,
    BodyReadTimeout,
    HostResources,
    HeaderFields,
}

impl Limit {
    pub const ALL: [Limit; 12] = [
        Limit::Fuel,
        Limit::Deadline,
        Limit::Memory,
        Limit::TableElements,
        Limit::StackOverflow,
        Limit::TenantConcurrency,
        Limit::GlobalConcurrency,
        Limit::InstancePool,
        Limit::RequestBody,
        Limit::BodyReadTimeout,
        Limit::HostResources,
        Limit::HeaderFields,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Fuel => "fuel",
            Limit::Deadline => "deadline",
            Limit::Memory => "memory",
            Limit::TableElements => "table_elements",
            Limit::StackOverflow => "stack",
            Limit::TenantConcurrency => "tenant_concurrency",
            Limit::GlobalConcurrency => "global_concurrency",
            Limit::InstancePool => "instance_pool",
            Limit::RequestBody => "request_body",
            Limit::BodyReadTimeout => "body_read_timeout",
            Limit::HostResources => "host_resources",
            Limit::HeaderFields => "header_fields",
        }
    }

    /// The status a client gets. Overload that may pass (a full pool, the
    /// global cap) is 503 with `Retry-After`; a tenant over its own share is
    /// 429; a guest that ran past its budget is 503 (fuel), 504 (deadline)
    /// or 500 (it trapped on memory, tables or stack).
    pub fn status(self) -> StatusCode {
        match self {
            Limit::Fuel => StatusCode::SERVICE_UNAVAILABLE,
            Limit::Deadline => StatusCode::GATEWAY_TIMEOUT,
            Limit::Memory
            | Limit::TableElements
            | Limit::StackOverflow
            | Limit::HostResources
            | Limit::HeaderFields => StatusCode::INTERNAL_SERVER_ERROR,
            Limit::TenantConcurrency => StatusCode::TOO_MANY_REQUESTS,
            Limit::GlobalConcurrency | Limit::InstancePool => StatusCode::SERVICE_UNAVAILABLE,
            Limit::RequestBody => StatusCode::PAYLOAD_TOO_LARGE,
            Limit::BodyReadTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whether a client should retry later (sent as `Retry-After: 1`).
    pub fn retry_later(self) -> bool {
        matches!(
            self,
            Limit::TenantConcurrency | Limit::GlobalConcurrency | Limit::InstancePool
        )
    }
}

impl Limits {
    /// The bounds on the tenant's config and secrets.
    pub fn var_limits(&self) -> crate::vars::VarLimits {
        crate::vars::VarLimits {
            max_entries: self.max_config_entries,
            max_name_bytes: self.max_config_name_bytes,
            max_value_bytes: bytes(self.max_config_value_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Setting;

    #[test]
    fn key_value_stores_name_buckets_or_allow_any() {
        let named = |text: &str| StoreLabels::parse_flag(text).map(|labels| labels.named());
        assert_eq!(named("*"), Ok(None));
        assert_eq!(named("default,*"), Ok(None));
        assert_eq!(
            named("default, cache"),
            Ok(Some(["default".to_string(), "cache".to_string()].into()))
        );
        assert_eq!(named(""), Ok(Some([].into())));
        let list: toml::Value =
            toml::from_str::<toml::Table>("v = [\"default\", \"cache\"]").unwrap()["v"].clone();
        assert_eq!(
            StoreLabels::from_toml(&list).unwrap().show(),
            "default,cache"
        );
        assert_eq!(
            named(&"b".repeat(256)),
            Err("store label of 256 bytes is over the 255-byte limit".to_string())
        );
        assert_eq!(Limits::default().quotas().buckets, None);
    }
}
