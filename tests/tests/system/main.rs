//! System tests: the real binaries, together and with the real services
//! they meet in production. Each service is started by its helper in
//! `system_tests` on free loopback ports and stopped when the test ends.
//!
//! - `admin`: tenants deployed, updated and removed at runtime, through the
//!   `runner tenant` client, under load, and by SIGHUP.
//! - `compile`: uploads refused before any compile, compiles beside the
//!   requests, bounded in time and memory.
//! - `process`: the runner binary's start-up errors, SIGTERM, memory.
//! - `durable`: the data directory under SIGKILL, a full disk, a second
//!   runner.
//! - `expiry`: keys with expiry and versioned swaps through a SIGKILL of the
//!   runner (data directory) and a crash of Redis.
//! - `loadgen`: the load generator against the runner, checked both ways.
//! - `outbound`: guests calling out over HTTPS, trusted through
//!   `SSL_CERT_FILE`.
//! - `packaging`: the container image and the systemd unit, as shipped.
//! - `polyglot`: the Python and JavaScript example guests, built by their
//!   own toolchains, run unchanged.
//! - `prometheus`: dashboards and alerts against a real Prometheus.
//! - `readme`: every README example that runs on loopback, as written.
//! - `redis`: several runners on one real `redis-server`.
//! - `tls`: HTTPS on the tenant listener: ALPN, certificates renewed by
//!   SIGHUP, handshakes bounded in time, hosts over TLS.

mod admin;
mod compile;
mod durable;
mod expiry;
mod loadgen;
mod outbound;
mod packaging;
mod polyglot;
mod process;
mod prometheus;
mod readme;
mod redis;
mod tls;
