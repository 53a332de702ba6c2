//! Every metric's name, in one place: the store's own counters take theirs
//! from here too, which is why these sit apart from the registry.

pub const BUILD_INFO: &str = "runner_build_info";
pub const TENANTS: &str = "runner_tenants";
pub const COMPONENTS: &str = "runner_components";
pub const COMPONENT_CODE_BYTES: &str = "runner_component_code_bytes";
pub const COMPONENT_LOADS: &str = "runner_component_loads_total";
pub const TENANT_CHANGES: &str = "runner_tenant_changes_total";
pub const ADMIN_REQUESTS: &str = "runner_admin_requests_total";
pub const REQUESTS: &str = "runner_requests_total";
pub const REQUEST_DURATION: &str = "runner_request_duration_seconds";
pub const REQUESTS_IN_FLIGHT: &str = "runner_requests_in_flight";
pub const INSTANTIATION_DURATION: &str = "runner_instantiation_duration_seconds";
pub const INSTANCES_CREATED: &str = "runner_instances_created_total";
pub const INSTANCES_REUSED: &str = "runner_instances_reused_total";
pub const INSTANCES_RECYCLED: &str = "runner_instances_recycled_total";
pub const INSTANCES_IDLE: &str = "runner_instances_idle";
pub const INSTANCE_REQUESTS: &str = "runner_instance_requests";
pub const FUEL_CONSUMED: &str = "runner_fuel_consumed_total";
pub const CPU: &str = "runner_cpu_seconds_total";
pub const TENANT_LIMIT: &str = "runner_tenant_limit";
pub const TRAPS: &str = "runner_traps_total";
pub const LIMIT_HITS: &str = "runner_limit_hits_total";
pub const EPOCH_YIELDS: &str = "runner_epoch_yields_total";
pub const POOL_INSTANCES_IN_USE: &str = "runner_pool_instances_in_use";
pub const POOL_INSTANCES_CAPACITY: &str = "runner_pool_instances_capacity";
pub const POOL_MEMORIES_IN_USE: &str = "runner_pool_memories_in_use";
pub const KV_OPERATIONS: &str = "runner_kv_operations_total";
pub const KV_OPERATION_DURATION: &str = "runner_kv_operation_duration_seconds";
pub const KV_KEYS: &str = "runner_kv_keys";
pub const KV_BYTES: &str = "runner_kv_bytes";
pub const KV_QUOTA_REJECTIONS: &str = "runner_kv_quota_rejections_total";
pub const STORE_UNAVAILABLE: &str = "runner_store_unavailable_total";
pub const LOG_LINES_DROPPED: &str = "runner_log_lines_dropped_total";
pub const STORE_COMMITS: &str = "runner_store_commits_total";
pub const STORE_WRITES: &str = "runner_store_writes_total";
pub const STORE_FSYNCS: &str = "runner_store_fsyncs_total";
pub const STORE_FSYNC_DURATION: &str = "runner_store_fsync_duration_seconds";
pub const CONNECTIONS_OPEN: &str = "runner_http_connections_open";
pub const CONNECTIONS_REJECTED: &str = "runner_http_connections_rejected_total";
pub const UNROUTED: &str = "runner_unrouted_requests_total";
pub const ROUTED: &str = "runner_routed_requests_total";
pub const TLS_HANDSHAKE_FAILURES: &str = "runner_tls_handshake_failures_total";
pub const CONFIG_READS: &str = "runner_config_reads_total";
pub const OUTBOUND_REQUESTS: &str = "runner_outbound_requests_total";
pub const OUTBOUND_DURATION: &str = "runner_outbound_request_duration_seconds";
pub const OUTBOUND_SENT: &str = "runner_outbound_sent_bytes_total";
pub const OUTBOUND_RECEIVED: &str = "runner_outbound_received_bytes_total";
pub const OUTBOUND_CONNECTIONS: &str = "runner_outbound_connections";
// The standard process metrics (process_cpu_seconds_total,
// process_resident_memory_bytes, process_open_fds, ...) come from
// metrics-process, under the names every Prometheus client library uses, so
// stock dashboards work.
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
