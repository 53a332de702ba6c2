//! The default tenant component: `/hello`, the original `/demo`, and routes
//! over every `wasi:keyvalue` call (store, atomics, batch). See
//! `guest/README.md` for the routes and statuses.

use std::collections::BTreeMap;
use std::io::Write as _;

use guest_common::exports::wasi::http::incoming_handler::Guest;
use guest_common::http::{Request, Response, Result};
use guest_common::kv;
use guest_common::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use guest_common::wasi::keyvalue0_2_0_draft::{atomics, batch};
use guest_common::wasi::logging::logging::{Level, log};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        guest_common::http::serve(request, out, route);
    }
}

guest_common::export!(Component);

fn route(req: &Request) -> Result {
    let path = req.path();
    let method = req.method();
    match path {
        "/hello" => match method {
            Method::Get => Ok(Response::text(200, "hello")),
            _ => Err(Response::method_not_allowed("GET")),
        },
        "/fetch" => match method {
            Method::Get => guest_common::fetch::route(req, &Default::default()),
            _ => Err(Response::method_not_allowed("GET")),
        },
        "/demo" => match method {
            Method::Get => demo(req),
            _ => Err(Response::method_not_allowed("GET")),
        },
        "/keys" => match method {
            Method::Get => keys(req),
            _ => Err(Response::method_not_allowed("GET")),
        },
        "/batch/get" | "/batch/set" | "/batch/delete" => match method {
            Method::Post => match path {
                "/batch/get" => batch_get(req),
                "/batch/set" => batch_set(req),
                _ => batch_delete(req),
            },
            _ => Err(Response::method_not_allowed("POST")),
        },
        _ => {
            if let Some(raw) = path.strip_prefix("/kv/") {
                match method {
                    Method::Get => kv::get(req, &kv::key(raw)?),
                    Method::Put => kv::put(req, &kv::key(raw)?),
                    Method::Delete => kv::delete(req, &kv::key(raw)?),
                    _ => Err(Response::method_not_allowed("GET, PUT, DELETE")),
                }
            } else if let Some(raw) = path.strip_prefix("/exists/") {
                match method {
                    Method::Get => exists(req, &kv::key(raw)?),
                    _ => Err(Response::method_not_allowed("GET")),
                }
            } else if let Some(raw) = path.strip_prefix("/incr/") {
                match method {
                    Method::Post => incr(req, &kv::key(raw)?),
                    _ => Err(Response::method_not_allowed("POST")),
                }
            } else {
                Err(Response::no_route())
            }
        }
    }
}

/// The original demo: set `hello` to `world`, read it back, log it, answer it.
fn demo(req: &Request) -> Result {
    let bucket = kv::open(req)?;
    bucket.set("hello", b"world")?;
    let Some(value) = bucket.get("hello")? else {
        return Ok(Response::text(404, "key not found"));
    };
    let message = format!("res from guest: {}", String::from_utf8_lossy(&value));
    log(Level::Info, "I/O", &message);
    Ok(Response::text(200, value))
}

fn exists(req: &Request, key: &str) -> Result {
    let bucket = kv::open(req)?;
    let found = bucket.exists(key)?;
    Ok(Response::text(200, if found { "true" } else { "false" }))
}

/// `POST /incr/{key}?by=N`: `atomics.increment` by N (default 1).
fn incr(req: &Request, key: &str) -> Result {
    let by = req.parse_param::<u64>("by")?.unwrap_or(1);
    let bucket = kv::open(req)?;
    let value = atomics::increment(&bucket, key, by)?;
    Ok(Response::text(200, value.to_string()))
}

/// `GET /keys?cursor=C`: one `list-keys` page as
/// `{"keys":[...],"cursor":"C"|null}`. The cursor is a string so that clients
/// whose JSON numbers are doubles keep all 64 bits.
fn keys(req: &Request) -> Result {
    let cursor = req.parse_param::<u64>("cursor")?;
    let bucket = kv::open(req)?;
    let page = bucket.list_keys(cursor)?;
    let mut out = Vec::with_capacity(32 + page.keys.iter().map(|k| k.len() + 3).sum::<usize>());
    out.extend_from_slice(b"{\"keys\":");
    serde_json::to_writer(&mut out, &page.keys).map_err(json_write_error)?;
    match page.cursor {
        Some(cursor) => write!(out, ",\"cursor\":\"{cursor}\"}}").map_err(json_write_error)?,
        None => out.extend_from_slice(b",\"cursor\":null}"),
    }
    Ok(Response::json(200, out))
}

/// `POST /batch/get` with a JSON array of keys: a JSON object mapping each key,
/// in request order, to its value (lossy UTF-8) or `null`.
fn batch_get(req: &Request) -> Result {
    let keys: Vec<String> = parse_json(&req.read_body()?)?;
    let keys = non_empty_keys(&keys)?;
    let bucket = kv::open(req)?;
    // `get-many` answers in the order of the keys it was given.
    let values = batch::get_many(&bucket, &keys)?;
    let mut out = Vec::with_capacity(2 + keys.iter().map(|k| k.len() + 8).sum::<usize>());
    out.push(b'{');
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, key).map_err(json_write_error)?;
        out.push(b':');
        match values.get(i) {
            Some(Some((_, value))) => {
                serde_json::to_writer(&mut out, &String::from_utf8_lossy(value))
                    .map_err(json_write_error)?;
            }
            _ => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
    Ok(Response::json(200, out))
}

/// `POST /batch/set` with a JSON object of string values: `set-many`; 204.
fn batch_set(req: &Request) -> Result {
    // A map, so a key repeated in the object is written once (last wins).
    let entries: BTreeMap<String, String> = parse_json(&req.read_body()?)?;
    if entries.contains_key("") {
        return Err(Response::bad_request("empty key"));
    }
    let pairs: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let bucket = kv::open(req)?;
    batch::set_many(&bucket, &pairs)?;
    Ok(Response::no_content())
}

/// `POST /batch/delete` with a JSON array of keys: `delete-many`; 204.
fn batch_delete(req: &Request) -> Result {
    let keys: Vec<String> = parse_json(&req.read_body()?)?;
    let keys = non_empty_keys(&keys)?;
    let bucket = kv::open(req)?;
    batch::delete_many(&bucket, &keys)?;
    Ok(Response::no_content())
}

fn non_empty_keys(keys: &[String]) -> Result<Vec<&str>> {
    keys.iter()
        .map(|k| match k.as_str() {
            "" => Err(Response::bad_request("empty key")),
            k => Ok(k),
        })
        .collect()
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Response::bad_request(format!("invalid JSON: {e}")))
}

/// Writing JSON into a `Vec` only fails on a bug.
fn json_write_error(e: impl std::fmt::Display) -> Response {
    Response::text(500, format!("failed to write JSON: {e}"))
}
