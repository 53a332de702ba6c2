//! A native baseline for the runner's end-to-end figures: the same routes'
//! work with no wasm, so `bench/e2e.sh` can show what the sandbox costs.
//!
//! ```text
//! cargo run --release -p runner --example native [ADDR]
//! ```
//!
//! The address comes from the first argument, else `NATIVE_LISTEN`, else
//! `127.0.0.1:18090`; port 0 picks a free one. Prints
//! `listening on http://ADDR` on stdout once bound. `NATIVE_WORKERS` sets the
//! tokio worker count (default: one per core, like the runner).
//!
//! Routes, as the default guest serves them under `/t/{tenant}`:
//! - `GET /t/{tenant}/hello`: `hello`.
//! - `GET /t/{tenant}/kv/{key}`: 200 and the value, or 404 `key not found`.
//! - `PUT /t/{tenant}/kv/{key}`: stores the body (at most 1 MiB); 204.
//! - `GET /t/{tenant}/setget/{key}`: sets the key to `world`, reads it back
//!   and answers it: the per-request work of the native figure in
//!   CONTEXT.md (the guest's `/demo` does the same through wasi:keyvalue).
//! - `GET /t/{tenant}/fetch?url=URL`: fetches `http` URL through a pooled
//!   client (hyper-util's, keep-alive) and answers its status and body: the
//!   native baseline of `bench/outbound.sh`.
//!
//! The store is 16 shards, each a `parking_lot::RwLock` over a map from
//! tenant to that tenant's keys; the shard is picked by a randomly seeded
//! hash of (tenant, key), and lookups borrow the path, allocating nothing.
//! Keys are not percent-decoded: the load generators send plain ones.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:18090";
const SHARDS: usize = 16;
/// Largest `PUT` body, like a bound the runner would set.
const MAX_BODY: usize = 1 << 20;

type Hasher = foldhash::fast::RandomState;
/// One tenant's keys.
type Keys = HashMap<Box<str>, Bytes, Hasher>;
/// One shard: tenant name to that tenant's keys.
type Shard = RwLock<HashMap<Box<str>, Keys, Hasher>>;

/// Every tenant's keys, sharded by (tenant, key).
struct Kv {
    hasher: Hasher,
    shards: Box<[Shard]>,
}

impl Kv {
    fn new() -> Self {
        let hasher = Hasher::default();
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
        }
    }

    fn shard(&self, tenant: &str, key: &str) -> &Shard {
        let hash = self.hasher.hash_one((tenant, key));
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    fn get(&self, tenant: &str, key: &str) -> Option<Bytes> {
        let shard = self.shard(tenant, key).read();
        shard.get(tenant)?.get(key).cloned()
    }

    fn set(&self, tenant: &str, key: &str, value: Bytes) {
        let mut shard = self.shard(tenant, key).write();
        let keys = match shard.get_mut(tenant) {
            Some(keys) => keys,
            None => shard
                .entry(tenant.into())
                .or_insert_with(|| HashMap::with_hasher(self.hasher.clone())),
        };
        match keys.get_mut(key) {
            Some(slot) => *slot = value,
            None => {
                keys.insert(key.into(), value);
            }
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// The pooled client `/fetch` sends through.
type Pool = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<Bytes>,
>;

/// `GET url`: its status and body, or 502.
async fn fetch(pool: &Pool, query: Option<&str>) -> Response<Full<Bytes>> {
    let Some(url) = query.and_then(|q| q.strip_prefix("url=")) else {
        return text(StatusCode::BAD_REQUEST, "missing query parameter: url");
    };
    let Ok(uri) = url.parse::<http::Uri>() else {
        return text(StatusCode::BAD_REQUEST, "invalid url");
    };
    let Ok(response) = pool.get(uri).await else {
        return text(StatusCode::BAD_GATEWAY, "outgoing request failed");
    };
    let (parts, body) = response.into_parts();
    match body.collect().await {
        Ok(body) => Response::from_parts(parts, Full::new(body.to_bytes())),
        Err(_) => text(StatusCode::BAD_GATEWAY, "outgoing response failed"),
    }
}

async fn handle(
    kv: Arc<Kv>,
    pool: Pool,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let Some((tenant, rest)) = path
        .strip_prefix("/t/")
        .and_then(|p| p.split_once('/'))
        .filter(|(tenant, _)| !tenant.is_empty())
    else {
        return Ok(text(StatusCode::NOT_FOUND, "not found"));
    };
    let response = match (req.method(), rest) {
        (&Method::GET, "hello") => text(StatusCode::OK, "hello"),
        (&Method::GET, "fetch") => fetch(&pool, req.uri().query()).await,
        (method, rest) => {
            if let Some(key) = rest.strip_prefix("kv/").filter(|k| !k.is_empty()) {
                match *method {
                    Method::GET => match kv.get(tenant, key) {
                        Some(value) => Response::new(Full::new(value)),
                        None => text(StatusCode::NOT_FOUND, "key not found"),
                    },
                    Method::PUT => {
                        let (tenant, key) = (tenant.to_owned(), key.to_owned());
                        match Limited::new(req.into_body(), MAX_BODY).collect().await {
                            Ok(body) => {
                                kv.set(&tenant, &key, body.to_bytes());
                                text(StatusCode::NO_CONTENT, "")
                            }
                            Err(_) => text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                        }
                    }
                    _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
                }
            } else if let Some(key) = rest.strip_prefix("setget/").filter(|k| !k.is_empty()) {
                kv.set(tenant, key, Bytes::from_static(b"world"));
                match kv.get(tenant, key) {
                    Some(value) => Response::new(Full::new(value)),
                    None => text(StatusCode::NOT_FOUND, "key not found"),
                }
            } else {
                text(StatusCode::NOT_FOUND, "no such route")
            }
        }
    };
    Ok(response)
}

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NATIVE_LISTEN").ok())
        .unwrap_or_else(|| DEFAULT_ADDR.to_owned())
        .parse()
        .context("the listen address (first argument or NATIVE_LISTEN)")?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Ok(workers) = std::env::var("NATIVE_WORKERS") {
        builder.worker_threads(workers.parse().context("NATIVE_WORKERS")?);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    println!("listening on http://{}", listener.local_addr()?);
    let kv = Arc::new(Kv::new());
    let pool: Pool =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (kv, pool) = (kv.clone(), pool.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(kv.clone(), pool.clone(), req));
            // A client that hangs up mid-request is not this server's error.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
