//! The WASIp3 example guest: a `wasi:http/handler@0.3.0` service (an
//! `async` handler, built with the `wasip3` crate and the toolchain's
//! default settings) that reaches the tenant's store and log through the
//! same interfaces as the WASIp2 guests. Routes:
//!
//! - `GET /hello`: `hello from p3`
//! - `GET /count`: how many requests this instance has served, this one
//!   included (its own state, kept while the instance is reused)
//! - `GET /sleep?ms=N`: waits N milliseconds on `wasi:clocks` without
//!   computing, so other requests may run in the same instance meanwhile,
//!   then answers `slept N ms`
//! - `GET /spin`: computes forever (fuel and deadline tests)
//! - `GET /trap`: panics
//! - `GET /stream?chunks=N`: answers at once, then writes N lines of the
//!   body after the handler has returned
//! - `GET /kv/{key}`, `PUT /kv/{key}`: the key in the default bucket
//! - `POST /log`: logs the body at info level through `wasi:logging`

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
use wasip3::{wit_future, wit_stream};

wasip3::wit_bindgen::generate!({
    path: "../../wit",
    world: "runner:tenant/p3-imports",
    generate_all,
    runtime_path: "wasip3::wit_bindgen::rt",
});

use wasi::keyvalue0_2_0_draft::store;
use wasi::logging::logging;

struct Service;

wasip3::http::service::export!(Service);

/// Requests this instance has served.
static SERVED: AtomicU64 = AtomicU64::new(0);

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let method = request.get_method();
        match (method, path) {
            (Method::Get, "/hello") => Ok(text(200, "hello from p3")),
            (Method::Get, "/count") => Ok(text(200, &served.to_string())),
            (Method::Get, "/sleep") => {
                let ms = param(query, "ms").unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                Ok(text(200, &format!("slept {ms} ms")))
            }
            (Method::Get, "/spin") => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            (Method::Get, "/trap") => panic!("the p3 guest panicked on purpose"),
            (Method::Get, "/stream") => Ok(stream(param(query, "chunks").unwrap_or(3))),
            (Method::Post, "/log") => {
                let body = read_body(request).await?;
                logging::log(
                    logging::Level::Info,
                    "p3",
                    &String::from_utf8_lossy(&body),
                );
                Ok(text(204, ""))
            }
            (method, path) => match path.strip_prefix("/kv/") {
                Some(key) => kv(method, key, request).await,
                None => Ok(text(404, "no such route")),
            },
        }
    }
}

async fn kv(method: Method, key: &str, request: Request) -> Result<Response, ErrorCode> {
    let bucket = match store::open("") {
        Ok(bucket) => bucket,
        Err(e) => return Ok(store_error(&e)),
    };
    match method {
        Method::Get => Ok(match bucket.get(key) {
            Ok(Some(value)) => bytes(200, value),
            Ok(None) => text(404, "key not found"),
            Err(e) => store_error(&e),
        }),
        Method::Put => {
            let value = read_body(request).await?;
            Ok(match bucket.set(key, &value) {
                Ok(()) => text(204, ""),
                Err(e) => store_error(&e),
            })
        }
        _ => Ok(text(405, "method not allowed")),
    }
}

/// The runner's store errors start with a stable token; the status follows
/// it as it does for the WASIp2 guests.
fn store_error(error: &store::Error) -> Response {
    match error {
        store::Error::NoSuchStore => text(404, "no-such-store"),
        store::Error::AccessDenied => text(403, "access-denied"),
        store::Error::Other(message) => {
            let status = match message.split_once(": ").map(|(token, _)| token) {
                Some("quota-exceeded") => 507,
                Some("invalid-argument") => 400,
                Some("store-unavailable") => 503,
                _ => 500,
            };
            text(status, message)
        }
    }
}

/// The whole request body.
async fn read_body(request: Request) -> Result<Vec<u8>, ErrorCode> {
    let (_done, result) = wit_future::new(|| Ok(()));
    let (contents, trailers) = Request::consume_body(request, result);
    let body = contents.collect().await;
    trailers.await?;
    Ok(body)
}

fn text(status: u16, body: &str) -> Response {
    bytes(status, body.as_bytes().to_vec())
}

/// A response whose body `write` writes, in a task of its own that goes on
/// after the handler has returned the response.
fn respond<F>(status: u16, write: impl FnOnce(BodyWriter) -> F) -> Response
where
    F: Future<Output = ()> + 'static,
{
    let (writer, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .expect("a valid header");
    let (response, _sent) = Response::new(headers, Some(contents), trailers);
    response
        .set_status_code(status)
        .expect("statuses used here are valid");
    drop(trailers_tx);
    wasip3::spawn_local(write(writer));
    response
}

type BodyWriter = wasip3::wit_bindgen::StreamWriter<u8>;

fn bytes(status: u16, body: Vec<u8>) -> Response {
    respond(status, |mut writer| async move {
        writer.write_all(body).await;
    })
}

fn stream(chunks: u64) -> Response {
    respond(200, |mut writer| async move {
        for i in 0..chunks {
            writer.write_all(format!("chunk {i}\n").into_bytes()).await;
        }
    })
}

fn param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}
