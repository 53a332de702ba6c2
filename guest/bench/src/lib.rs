//! The component of the speed comparisons (bench/reuse.sh): `GET /hello`,
//! `GET /setget/{key}` (sets the key to `world`, reads it back and answers
//! it), `GET`/`PUT /kv/{key}`, and `GET /getloop/{key}?n=N` (one `open`,
//! then N `get`s of the key, answering the bytes read in all; what one host
//! call costs, measured by `runner/benches/guest.rs`). Built with the toolchain's defaults (Rust's
//! 1 MiB stack, wit-bindgen), it imports only wasi:http, WASI 0.2 and
//! `wasi:keyvalue@0.2.0-draft`, so `wasmtime serve -S cli -S keyvalue` runs
//! it unchanged, and it logs nothing.

use guest_common::exports::wasi::http::incoming_handler::Guest;
use guest_common::http::{Request, Response, Result};
use guest_common::kv;
use guest_common::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        guest_common::http::serve(request, out, route);
    }
}

guest_common::export!(Component);

fn route(req: &Request) -> Result {
    let path = req.path();
    if path == "/hello" {
        return Ok(Response::text(200, "hello"));
    }
    if path == "/fetch" {
        return guest_common::fetch::route(req, &Default::default());
    }
    if let Some(raw) = path.strip_prefix("/setget/") {
        return match req.method() {
            Method::Get => kv::set_get(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("GET")),
        };
    }
    if let Some(raw) = path.strip_prefix("/getloop/") {
        let key = kv::key(raw)?;
        let n: u32 = req.required_param("n")?;
        let bucket = kv::open(req)?;
        let mut read = 0usize;
        for _ in 0..n {
            read += bucket.get(&key)?.map_or(0, |v| v.len());
        }
        return Ok(Response::text(200, read.to_string()));
    }
    if let Some(raw) = path.strip_prefix("/kv/") {
        return match req.method() {
            Method::Get => kv::get(req, &kv::key(raw)?),
            Method::Put => kv::put(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("GET, PUT")),
        };
    }
    Err(Response::text(404, "no such route"))
}
