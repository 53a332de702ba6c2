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
//! - `GET /linger?ms=N`: answers `lingering`, whole, at once, and leaves a
//!   task that waits N milliseconds after it
//! - `GET /unfinished`: answers at once with a body of `begun\n` that it
//!   never finishes
//! - `GET /write-later?ms=N&key=K`: answers at once, then, N milliseconds
//!   later, sets K to `late` in the default bucket
//! - `GET /kv/{key}`, `PUT /kv/{key}`: the key in the default bucket,
//!   through `wasi:keyvalue@0.2.0-draft`
//! - `/wc/...`: the same store through `wasmcloud:keyvalue@0.2.0` (async,
//!   typed errors; see [`wc`])
//! - `POST /log`: writes the body to stdout, which the runner logs with
//!   the tenant
//! - `GET /config/spin3?name=N`: the tenant's variable N through
//!   `spin:variables@3.0.0` (404 `undefined: ...`, 400 `invalid-name: ...`)
//! - `GET /fetch`: tries an outgoing request (`wasi:http/client@0.3.0`) and
//!   a TCP connection (`wasi:sockets@0.3.0`), and answers how each failed;
//!   `GET /fetch?url=URL`: fetches URL through `wasi:http/client@0.3.0`
//!   and answers its status and body (502 and the error code if it fails)
//!
//! Its `/wc` and `/config` routes import what `wasmtime serve` does not
//! link (wasmCloud's key-value, Spin's variables); the WASIp3 speed
//! comparisons run `guest/bench-p3`, which imports only WASI.

use std::sync::atomic::{AtomicU64, Ordering};

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response};
// The bindings below make their own `wit_future` and `wit_stream` for the
// types of Spin's key-value; these are `wasi:http`'s.
use wasip3::{wit_future as http_future, wit_stream as http_stream};

wasip3::wit_bindgen::generate!({
    path: "../../wit",
    world: "runner:tenant/p3-imports",
    generate_all,
    runtime_path: "wasip3::wit_bindgen::rt",
});

use wasi::keyvalue0_2_0_draft::store;

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
            (Method::Get, "/grow") => {
                // Keeps N KiB for the instance's life, as a leak would.
                let kib = param(query, "kib").unwrap_or(0) as usize;
                let kept = Vec::leak(vec![0xA5u8; kib * 1024]);
                Ok(text(200, &format!("kept {} KiB", kept.len() / 1024)))
            }
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
            (Method::Get, "/linger") => {
                let ms = param(query, "ms").unwrap_or(0);
                wasip3::spawn_local(async move {
                    wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                });
                Ok(text(200, "lingering"))
            }
            (Method::Get, "/write-later") => {
                let ms = param(query, "ms").unwrap_or(0);
                let key = query_text(query, "key").unwrap_or("late").to_string();
                wasip3::spawn_local(async move {
                    wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                    if let Ok(bucket) = store::open("") {
                        let _ = bucket.set(&key, b"late");
                    }
                });
                Ok(text(200, "will write"))
            }
            (Method::Get, "/unfinished") => Ok(respond(200, |mut writer| async move {
                writer.write_all(b"begun\n".to_vec()).await;
                wasip3::clocks::monotonic_clock::wait_for(86_400 * 1_000_000_000).await;
                drop(writer);
            })),
            (Method::Get, "/config/spin3") => {
                use spin::variables::variables::{Error, get};
                let name = query_text(query, "name").unwrap_or_default().to_string();
                Ok(match get(name).await {
                    Ok(value) => text(200, &value),
                    Err(Error::Undefined(why)) => text(404, &format!("undefined: {why}")),
                    Err(Error::InvalidName(why)) => text(400, &format!("invalid-name: {why}")),
                    Err(e) => text(500, &format!("{e:?}")),
                })
            }
            (Method::Get, "/fetch") => match query_text(query, "url") {
                Some(url) => Ok(fetch(url).await),
                None => Ok(text(200, &reach_out().await)),
            },
            (Method::Post, "/log") => {
                let body = read_body(request).await?;
                println!("{}", String::from_utf8_lossy(&body));
                Ok(text(204, ""))
            }
            (method, path) => {
                if let Some(key) = path.strip_prefix("/kv/") {
                    kv(method, key, request).await
                } else if let Some(rest) = path.strip_prefix("/wc/") {
                    wc::route(method, rest, query, request).await
                } else {
                    Ok(text(404, "no such route"))
                }
            }
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

/// The routes on `wasmcloud:keyvalue@0.2.0`, all in the default bucket:
///
/// - `GET /wc/get/{key}`; `PUT /wc/set/{key}[?ttl-ms=N][&if-not-exists=1]`
///   with the value as the body; `DELETE /wc/delete/{key}`;
///   `GET /wc/exists/{key}` (`true` or `false`)
/// - `GET /wc/list[?prefix=P][&cursor=C]`: one page, as lines: the keys,
///   then `cursor: C` or `cursor: none`
/// - `POST /wc/incr/{key}?by=N` (N may be negative)
/// - `GET /wc/current/{key}`: `{version}\n{value}`
/// - `PUT /wc/swap/{key}[?version=V][&value=X]` with the new value as the
///   body: `swapped`, or 409 with the current entry (`{version}\n{value}`,
///   or `absent`)
/// - `POST /wc/cas-incr/{key}`: adds 1 to the decimal under the key by
///   versioned compare-and-swap, retrying until its swap lands; answers the
///   sum
/// - `POST /wc/get-many` with keys as body lines: a line per key,
///   `key=value` or `key absent`
///
/// Typed errors answer with their status: quota-exceeded 507,
/// invalid-argument 400, precondition-failed 412, store-unavailable 503,
/// timeout 504, anything else 500 with its text.
mod wc {
    use super::wasmcloud::keyvalue::{atomics, batch, cas, store, types};
    use super::{ErrorCode, Method, Request, Response, query_text, read_body, text};

    pub async fn route(
        method: Method,
        rest: &str,
        query: &str,
        request: Request,
    ) -> Result<Response, ErrorCode> {
        let bucket = match store::open("".to_string()).await {
            Ok(bucket) => bucket,
            Err(e) => return Ok(error(&e)),
        };
        let (op, key) = rest.split_once('/').unwrap_or((rest, ""));
        let key = key.to_string();
        Ok(match (method, op) {
            (Method::Get, "get") => match bucket.get(key).await {
                Ok(Some(value)) => super::bytes(200, value),
                Ok(None) => text(404, "key not found"),
                Err(e) => error(&e),
            },
            (Method::Put, "set") => {
                let value = read_body(request).await?;
                let options = types::SetOptions {
                    ttl_ms: query_text(query, "ttl-ms").and_then(|v| v.parse().ok()),
                    if_not_exists: query_text(query, "if-not-exists").is_some(),
                };
                match bucket.set(key, value, Some(options)).await {
                    Ok(()) => text(204, ""),
                    Err(e) => error(&e),
                }
            }
            (Method::Delete, "delete") => match bucket.delete(key).await {
                Ok(()) => text(204, ""),
                Err(e) => error(&e),
            },
            (Method::Get, "exists") => match bucket.exists(key).await {
                Ok(found) => text(200, &found.to_string()),
                Err(e) => error(&e),
            },
            (Method::Get, "list") => {
                let prefix = query_text(query, "prefix").map(str::to_string);
                let cursor = query_text(query, "cursor").map(str::to_string);
                match bucket.list_keys(prefix, cursor).await {
                    Ok(page) => {
                        let mut out = String::new();
                        for key in page.keys {
                            out.push_str(&key);
                            out.push('\n');
                        }
                        out.push_str(&format!(
                            "cursor: {}",
                            page.cursor.as_deref().unwrap_or("none")
                        ));
                        text(200, &out)
                    }
                    Err(e) => error(&e),
                }
            }
            (Method::Post, "incr") => {
                let by = query_text(query, "by").and_then(|v| v.parse().ok()).unwrap_or(1);
                match atomics::increment(&bucket, key, by).await {
                    Ok(sum) => text(200, &sum.to_string()),
                    Err(e) => error(&e),
                }
            }
            (Method::Get, "current") => match cas::current(&bucket, key).await {
                Ok(Some(entry)) => entry_response(200, &entry),
                Ok(None) => text(404, "absent"),
                Err(e) => error(&e),
            },
            (Method::Put, "swap") => {
                let value = read_body(request).await?;
                let options = cas::CasOptions {
                    require_version: query_text(query, "version").map(str::to_string),
                    require_value: query_text(query, "value").map(|v| v.as_bytes().to_vec()),
                };
                match cas::swap(&bucket, key, value, options).await {
                    Ok(cas::CasResult::Swapped) => text(200, "swapped"),
                    Ok(cas::CasResult::Stale(Some(entry))) => entry_response(409, &entry),
                    Ok(cas::CasResult::Stale(None)) => text(409, "absent"),
                    Err(e) => error(&e),
                }
            }
            (Method::Post, "cas-incr") => loop {
                let current = match cas::current(&bucket, key.clone()).await {
                    Ok(current) => current,
                    Err(e) => break error(&e),
                };
                let (sum, version) = match &current {
                    Some(entry) => {
                        let n: u64 = String::from_utf8_lossy(&entry.value).parse().unwrap_or(0);
                        (n + 1, Some(entry.version.clone()))
                    }
                    None => (1, None),
                };
                // An absent key has no version to require: it is created
                // with set-if-absent instead, which only one writer wins.
                let options = cas::CasOptions {
                    require_version: version,
                    require_value: None,
                };
                let value = sum.to_string().into_bytes();
                let landed = if options.require_version.is_none() {
                    let create = types::SetOptions {
                        ttl_ms: None,
                        if_not_exists: true,
                    };
                    match bucket.set(key.clone(), value, Some(create)).await {
                        Ok(()) => true,
                        Err(types::Error::PreconditionFailed) => false,
                        Err(e) => break error(&e),
                    }
                } else {
                    match cas::swap(&bucket, key.clone(), value, options).await {
                        Ok(cas::CasResult::Swapped) => true,
                        Ok(cas::CasResult::Stale(_)) => false,
                        Err(e) => break error(&e),
                    }
                };
                if landed {
                    break text(200, &sum.to_string());
                }
            },
            (Method::Post, "get-many") => {
                let body = read_body(request).await?;
                let keys: Vec<String> = String::from_utf8_lossy(&body)
                    .lines()
                    .map(str::to_string)
                    .collect();
                match batch::get_many(&bucket, keys.clone()).await {
                    Ok(values) => {
                        let lines: Vec<String> = keys
                            .iter()
                            .zip(values)
                            .map(|(key, value)| match value {
                                Some((_, v)) => format!("{key}={}", String::from_utf8_lossy(&v)),
                                None => format!("{key} absent"),
                            })
                            .collect();
                        text(200, &lines.join("\n"))
                    }
                    Err(e) => error(&e),
                }
            }
            _ => text(404, "no such route"),
        })
    }

    fn entry_response(status: u16, entry: &cas::Entry) -> Response {
        let mut body = entry.version.clone().into_bytes();
        body.push(b'\n');
        body.extend_from_slice(&entry.value);
        super::bytes(status, body)
    }

    fn error(error: &types::Error) -> Response {
        match error {
            types::Error::NoSuchStore => text(404, "no-such-store"),
            types::Error::AccessDenied => text(403, "access-denied"),
            types::Error::InvalidArgument => text(400, "invalid-argument"),
            types::Error::PreconditionFailed => text(412, "precondition-failed"),
            types::Error::Timeout => text(504, "timeout"),
            types::Error::StoreUnavailable => text(503, "store-unavailable"),
            types::Error::QuotaExceeded => text(507, "quota-exceeded"),
            types::Error::Other(message) => text(500, message),
        }
    }
}

/// What the network says to this guest: the error of an outgoing HTTP
/// request to example.com and of a TCP connection to 127.0.0.1:80.
async fn reach_out() -> String {
    use wasip3::sockets::types::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress, TcpSocket};

    let (_done, trailers) = http_future::new(|| Ok(None));
    let (outgoing, _sent) = Request::new(Fields::new(), None, trailers, None);
    let _ = outgoing.set_scheme(Some(&wasip3::http::types::Scheme::Http));
    let _ = outgoing.set_authority(Some("example.com"));
    let _ = outgoing.set_path_with_query(Some("/"));
    let http = match wasip3::http::client::send(outgoing).await {
        Ok(_) => "sent".to_string(),
        Err(code) => format!("{code:?}"),
    };
    let tcp = match TcpSocket::create(IpAddressFamily::Ipv4) {
        Err(code) => format!("{code:?}"),
        Ok(socket) => {
            let address = IpSocketAddress::Ipv4(Ipv4SocketAddress {
                port: 80,
                address: (127, 0, 0, 1),
            });
            match socket.connect(address).await {
                Ok(()) => "connected".to_string(),
                Err(code) => format!("{code:?}"),
            }
        }
    };
    format!("http: {http}\ntcp: {tcp}")
}

/// `GET url` through `wasi:http/client@0.3.0`: its status and body, or
/// 502 and the host's error code.
async fn fetch(url: &str) -> Response {
    use wasip3::http::types::Scheme;
    let Some((scheme, rest)) = url.split_once("://") else {
        return text(400, "the url has no scheme");
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let (_done, trailers) = http_future::new(|| Ok(None));
    let (outgoing, _sent) = Request::new(Fields::new(), None, trailers, None);
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    let _ = outgoing.set_scheme(Some(&scheme));
    let _ = outgoing.set_authority(Some(authority));
    let _ = outgoing.set_path_with_query(Some(path));
    let response = match wasip3::http::client::send(outgoing).await {
        Ok(response) => response,
        Err(code) => return text(502, &format!("outgoing request failed: {code:?}")),
    };
    let status = response.get_status_code();
    let (_done, result) = http_future::new(|| Ok(()));
    let (contents, trailers) = Response::consume_body(response, result);
    let body = contents.collect().await;
    if let Err(code) = trailers.await {
        return text(502, &format!("outgoing response failed: {code:?}"));
    }
    bytes(status, body)
}

/// The whole request body.
async fn read_body(request: Request) -> Result<Vec<u8>, ErrorCode> {
    let (_done, result) = http_future::new(|| Ok(()));
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
    let (writer, contents) = http_stream::new();
    let (trailers_tx, trailers) = http_future::new(|| Ok(None));
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
    query_text(query, name).and_then(|v| v.parse().ok())
}

/// A query parameter's text as sent (`name` alone gives `""`).
fn query_text<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
