//! Every per-tenant limit, its default, and the error a client sees when a
//! request runs into one.
//!
//! Each limit has a stable token (`Limit::as_str`): it is the `limit` label in
//! metrics and the value of the `x-runner-limit` response header, so clients
//! and dashboards can tell limits apart without parsing messages.

use std::time::Duration;

use http::StatusCode;

use crate::store::Quotas;

/// The limits one tenant runs under, after defaults and overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (roughly, wasm instructions) one request may burn.
    pub fuel: u64,
    /// Wall-clock time one request may take, host calls included.
    pub timeout: Duration,
    /// Bytes one linear memory may grow to.
    pub max_memory: usize,
    /// Elements one table may grow to.
    pub max_table_elements: usize,
    /// Core instances, tables and memories one request's store may create.
    pub max_instances: usize,
    pub max_tables: usize,
    pub max_memories: usize,
    /// Requests of this tenant running at once.
    pub max_in_flight: usize,
    /// Bytes of log output (wasi:logging, stdout, stderr) one request may
    /// write; the rest is dropped.
    pub max_log_bytes: usize,
    /// Key-value quotas.
    pub quotas: Quotas,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            fuel: 100_000_000,
            timeout: Duration::from_secs(1),
            max_memory: 64 << 20,
            max_table_elements: 20_000,
            max_instances: 32,
            max_tables: 32,
            max_memories: 2,
            max_in_flight: 256,
            max_log_bytes: 64 << 10,
            quotas: Quotas::default(),
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
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::Fuel,
        Limit::Deadline,
        Limit::Memory,
        Limit::TableElements,
        Limit::StackOverflow,
        Limit::TenantConcurrency,
        Limit::GlobalConcurrency,
        Limit::InstancePool,
        Limit::RequestBody,
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
            Limit::Memory | Limit::TableElements | Limit::StackOverflow => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Limit::TenantConcurrency => StatusCode::TOO_MANY_REQUESTS,
            Limit::GlobalConcurrency | Limit::InstancePool => StatusCode::SERVICE_UNAVAILABLE,
            Limit::RequestBody => StatusCode::PAYLOAD_TOO_LARGE,
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
