//! Integration tests, one binary: runners started in this process on port
//! 0 ([`harness::InProcess`], each with its own metrics registry, tokio
//! runtime and log), real HTTP, real guest components built from guest/.
//! The real binaries are the system tests' (`tests/` at the top).

mod admin;
mod cache;
mod components;
mod config;
mod harness;
mod ingress;
mod isolation;
mod kv;
mod layers;
mod limits;
mod logs;
mod metrics;
mod outbound;
mod p3;
mod reuse;
mod spin;
