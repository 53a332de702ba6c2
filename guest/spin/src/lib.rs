//! A Spin HTTP component built with Spin's Rust SDK 7 (`spin-sdk` from
//! crates.io, WASIp3), written as a Spin user writes one. It imports
//! `spin:key-value/key-value@3.0.0`, `spin:variables/variables@3.0.0` and
//! `wasi:http/client@0.3.0`: nothing in it is this runner's own, so it is
//! the component a Spin user would hand over.
//!
//! Routes, matched on `spin-path-info` under a wildcard route (as Spin
//! components do), else on the path (the store is the `store` query
//! parameter, `default` when absent, as a Spin label):
//! - `GET /hello`: `hello from spin`
//! - `GET /headers`: the `spin-*` headers it got, one `name: value` a
//!   line, sorted
//! - `GET|PUT|DELETE /kv/{key}`: the value (404 when absent), set it from
//!   the body, delete it
//! - `GET /exists/{key}`: `true` or `false`
//! - `GET /keys`: every key of the store, one per line, read through the
//!   `get-keys` stream; `GET /keys?count`: `N keys, D distinct` instead
//! - `GET /var/{name}`: the variable's value (404 when undefined)
//! - `GET /fetch?url=URL`: answers with the upstream's status and body
//!   (502 and the error if the request fails)
//!
//! A store error answers `store error: <variant>`: 403 for access-denied,
//! 507 for a quota, 500 otherwise.

use std::collections::HashSet;

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{EmptyBody, FullBody, IntoResponse, Method, Request, StatusCode};
use spin_sdk::http_service;
use spin_sdk::key_value::{Error, Store};
use spin_sdk::variables;

type Reply = (StatusCode, FullBody<Bytes>);

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, FullBody::new(body.into()))
}

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    route(request).await.unwrap_or_else(|e| e)
}

async fn route(request: Request) -> Result<Reply, Reply> {
    // Under a route such as `/app/...`, the path below it, as Spin
    // components read it.
    let path = match request.headers().get("spin-path-info") {
        Some(info) if request.headers().contains_key("spin-component-route") => {
            info.to_str().unwrap_or_default().to_owned()
        }
        _ => request.uri().path().to_owned(),
    };
    let query = request.uri().query().unwrap_or_default().to_owned();
    let method = request.method().clone();
    if path == "/hello" {
        return Ok(reply(200, "hello from spin"));
    }
    if path == "/headers" {
        let mut lines: Vec<String> = request
            .headers()
            .iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name.starts_with("spin-") || name.starts_with("x-forwarded-") || name == "forwarded"
            })
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        lines.sort();
        return Ok(reply(200, lines.join("\n")));
    }
    if let Some(name) = path.strip_prefix("/var/") {
        return Ok(match variables::get(name).await {
            Ok(value) => reply(200, value),
            Err(variables::Error::Undefined(why)) => reply(404, format!("undefined: {why}")),
            Err(e) => reply(500, format!("{e:?}")),
        });
    }
    if path == "/fetch" {
        let url = param(&query, "url").ok_or_else(|| reply(400, "url is required"))?;
        return Ok(fetch(&url).await);
    }
    let label = param(&query, "store").unwrap_or_else(|| "default".to_owned());
    let store = Store::open(&label).await.map_err(error)?;
    if let Some(key) = path.strip_prefix("/kv/") {
        return match method {
            Method::GET => Ok(match store.get(key).await.map_err(error)? {
                Some(value) => reply(200, value),
                None => reply(404, "key not found"),
            }),
            Method::PUT => {
                let body = request
                    .into_body()
                    .bytes()
                    .await
                    .map_err(|e| reply(400, format!("{e:?}")))?;
                store.set(key, &body).await.map_err(error)?;
                Ok(reply(204, ""))
            }
            Method::DELETE => {
                store.delete(key).await.map_err(error)?;
                Ok(reply(204, ""))
            }
            _ => Err(reply(405, "GET, PUT or DELETE")),
        };
    }
    if let Some(key) = path.strip_prefix("/exists/") {
        let found = store.exists(key).await.map_err(error)?;
        return Ok(reply(200, found.to_string()));
    }
    if path == "/keys" {
        let mut keys = store.get_keys().await;
        let mut count = 0usize;
        let mut seen = HashSet::new();
        let mut lines = String::new();
        while let Some(key) = keys.next().await {
            count += 1;
            if !query.split('&').any(|p| p == "count") {
                lines.push_str(&key);
                lines.push('\n');
            }
            seen.insert(key);
        }
        keys.result().await.map_err(error)?;
        if query.split('&').any(|p| p == "count") {
            return Ok(reply(200, format!("{count} keys, {} distinct", seen.len())));
        }
        return Ok(reply(200, lines));
    }
    Err(reply(404, "no route"))
}

/// The query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| decode(value))
    })
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(e: Error) -> Reply {
    match e {
        Error::AccessDenied => reply(403, "store error: access-denied"),
        Error::NoSuchStore => reply(404, "store error: no-such-store"),
        Error::StoreTableFull => reply(500, "store error: store-table-full"),
        Error::Other(text) if text.starts_with("quota-exceeded") => {
            reply(507, format!("store error: {text}"))
        }
        Error::Other(text) => reply(500, format!("store error: {text}")),
    }
}

async fn fetch(url: &str) -> Reply {
    let request = match spin_sdk::http::Request::get(url).body(EmptyBody::new()) {
        Ok(request) => request,
        Err(e) => return reply(400, format!("bad url: {e}")),
    };
    match spin_sdk::http::send(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            match response.into_body().bytes().await {
                Ok(body) => reply(status, body),
                Err(e) => reply(502, format!("body: {e:?}")),
            }
        }
        Err(e) => reply(502, format!("{e:?}")),
    }
}
