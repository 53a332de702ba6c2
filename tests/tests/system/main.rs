//! System tests: the real binaries, together and with the real services
//! they meet in production. Each service is started by its helper in
//! `system_tests` on free loopback ports and stopped when the test ends.
//!
//! - `process`: the runner binary's start-up errors, SIGTERM, memory.
//! - `loadgen`: the load generator against the runner, checked both ways.
//! - `prometheus`: dashboards and alerts against a real Prometheus.

mod loadgen;
mod process;
mod prometheus;
