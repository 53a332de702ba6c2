//! A test component that misbehaves on purpose, one misbehaviour per route:
//! spinning, burning fuel, exhausting memory and stack, panicking, filling the
//! store, streaming huge bodies and stdout, and blocking in a host call. The
//! runner's tests use it to check that each limit holds and that one tenant's
//! misbehaviour leaves the others alone. See `guest/README.md`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::io::Write as _;

use guest_common::exports::wasi::http::incoming_handler::Guest;
use guest_common::http::{Body, Request, Response, Result};
use guest_common::kv::{self, StoreError};
use guest_common::wasi::clocks::monotonic_clock;
use guest_common::wasi::http::types::{Fields, IncomingRequest, Method, ResponseOutparam};

struct Component;

impl Guest for Component {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // `/answer-once` answers its instance's first call only, then
        // returns without a response, as components of some toolchains do
        // when an instance is called twice.
        if request.path_with_query().as_deref() == Some("/answer-once") {
            use std::sync::atomic::{AtomicBool, Ordering};
            static ANSWERED: AtomicBool = AtomicBool::new(false);
            if ANSWERED.swap(true, Ordering::Relaxed) {
                drop(out);
                return;
            }
        }
        guest_common::http::serve(request, out, route);
    }
}

guest_common::export!(Component);

fn route(req: &Request) -> Result {
    let path = req.path();
    if let Some(raw) = path.strip_prefix("/cas/") {
        return match req.method() {
            Method::Post => spin_kv::cas_increment(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("POST")),
        };
    }
    if let Some(raw) = path.strip_prefix("/incr2/") {
        return match req.method() {
            Method::Post => spin_kv::increment(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("POST")),
        };
    }
    if let Some(rest) = path.strip_prefix("/spin2/") {
        return spin2::route(req, rest);
    }
    if let Some(raw) = path.strip_prefix("/get2/") {
        return match req.method() {
            Method::Get => spin_kv::get(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("GET")),
        };
    }
    if path == "/keys2" {
        return match req.method() {
            Method::Get => spin_kv::keys(req),
            _ => Err(Response::method_not_allowed("GET")),
        };
    }
    if let Some(raw) = path.strip_prefix("/kv/") {
        return match req.method() {
            Method::Get => kv::get(req, &kv::key(raw)?),
            Method::Put => kv::put(req, &kv::key(raw)?),
            _ => Err(Response::method_not_allowed("GET, PUT")),
        };
    }
    let handler: fn(&Request) -> Result = match path {
        "/hello" => |_| Ok(Response::text(200, "hello")),
        "/answer-once" => |_| Ok(Response::text(200, "answered")),
        "/config/rc1" => config_rc1,
        "/config/draft" => config_draft,
        "/config/spin2" => config_spin2,
        // Outgoing requests the host should refuse: `host` sets a Host
        // header naming another host, `target` sends a request target
        // (an absolute URL, say) in place of the URL's path.
        "/fetch" => |req| {
            let host = req.param("host")?;
            let target = req.param("target")?;
            let options = guest_common::fetch::Options {
                host: host.as_deref(),
                target: target.as_deref(),
            };
            guest_common::fetch::route(req, &options)
        },
        "/loop" => spin,
        "/burn" => burn,
        "/grow" => grow,
        "/grow-raw" => grow_raw,
        "/recurse" => |_| {
            let depth = recurse(0);
            // Not reached: the recursion has no end.
            Ok(Response::text(200, depth.to_string()))
        },
        "/panic" => |_| panic!("hostile guest panicked on purpose"),
        "/big-value" => big_value,
        "/fill-keys" => fill_keys,
        "/huge-body" => huge_body,
        "/stdout" => stdout,
        "/print" => print,
        "/stderr" => stderr,
        "/lines" => lines,
        "/fields" => fields,
        "/sleep" => sleep,
        "/residue" => residue,
        _ => return Err(Response::no_route()),
    };
    match req.method() {
        Method::Get => handler(req),
        _ => Err(Response::method_not_allowed("GET")),
    }
}

/// Routes over `wasi:keyvalue@0.2.0-draft2`, the version components built
/// for Spin import, on the same data as the draft routes.
mod spin_kv {
    use std::fmt::Write as _;

    use guest_common::http::{Request, Response, Result};
    use guest_common::wasi::keyvalue0_2_0_draft2::atomics::{self, Cas, CasError};
    use guest_common::wasi::keyvalue0_2_0_draft2::store::{self, Bucket, Error};

    fn open(req: &Request) -> Result<Bucket> {
        store::open(&req.bucket()?).map_err(error)
    }

    fn error(e: Error) -> Response {
        let (status, text) = match e {
            Error::NoSuchStore => (404, "no-such-store".to_owned()),
            Error::AccessDenied => (403, "access-denied".to_owned()),
            Error::Other(text) => match guest_common::kv::token(&text) {
                Some("quota-exceeded") => (507, text),
                Some("invalid-argument") => (400, text),
                Some("store-unavailable") => (503, text),
                _ => (500, text),
            },
        };
        Response::text(status, format!("store error: {text}"))
    }

    /// `POST /cas/{key}[?interfere]`: adds one to the decimal under `key`
    /// by compare-and-swap, retrying on `cas-failed` with the handle it
    /// gives back; 200 with `<new value> <retries>`. With `interfere`, the
    /// guest itself increments the key between taking the handle and the
    /// first swap, so that swap must fail.
    pub fn cas_increment(req: &Request, key: &str) -> Result {
        let bucket = open(req)?;
        let mut cas = Cas::new(&bucket, key).map_err(error)?;
        if req.param("interfere")?.is_some() {
            atomics::increment(&bucket, key, 1).map_err(error)?;
        }
        let mut retries = 0u64;
        loop {
            let current = cas.current().map_err(error)?;
            let n: u64 = match current {
                None => 0,
                Some(bytes) => String::from_utf8_lossy(&bytes)
                    .parse()
                    .map_err(|_| Response::text(409, "the value is not a decimal u64"))?,
            };
            let next = (n + 1).to_string();
            match atomics::swap(cas, next.as_bytes()) {
                Ok(()) => return Ok(Response::text(200, format!("{next} {retries}"))),
                Err(CasError::CasFailed(fresh)) => {
                    retries += 1;
                    cas = fresh;
                }
                Err(CasError::StoreError(e)) => return Err(error(e)),
            }
        }
    }

    /// `GET /get2/{key}`: draft2's `exists`, then its `get`: 200 with the
    /// value, 404 `key not found`, or 500 if the two disagree.
    pub fn get(req: &Request, key: &str) -> Result {
        let bucket = open(req)?;
        let exists = bucket.exists(key).map_err(error)?;
        match (exists, bucket.get(key).map_err(error)?) {
            (true, Some(value)) => Ok(Response::octets(200, value)),
            (false, None) => Ok(Response::text(404, "key not found")),
            (exists, value) => Ok(Response::text(
                500,
                format!("exists says {exists}, get found {}", value.is_some()),
            )),
        }
    }

    /// `POST /incr2/{key}?by=N`: draft2's signed increment; 200 with the sum.
    pub fn increment(req: &Request, key: &str) -> Result {
        let by = req.parse_param::<i64>("by")?.unwrap_or(1);
        let bucket = open(req)?;
        let sum = atomics::increment(&bucket, key, by).map_err(error)?;
        Ok(Response::text(200, sum.to_string()))
    }

    /// `GET /keys2?cursor=C`: one draft2 `list-keys` page: the next cursor
    /// (`-` at the end) on the first line, then one key per line.
    pub fn keys(req: &Request) -> Result {
        let cursor = req.param("cursor")?;
        let bucket = open(req)?;
        let page = bucket.list_keys(cursor.as_deref()).map_err(error)?;
        let mut out = page.cursor.unwrap_or_else(|| "-".to_owned());
        for key in page.keys {
            let _ = write!(out, "\n{key}");
        }
        Ok(Response::text(200, out))
    }
}

/// Routes over `fermyon:spin/key-value@2.0.0`, the interface Spin's
/// WASIp2 SDKs import, bound by wit-bindgen from Spin's published text, on
/// the same data as the other key-value routes. The store is the `store`
/// query parameter (`default` when absent), as a Spin label.
mod spin2 {
    use guest_common::fermyon::spin::key_value::{Error, Store};
    use guest_common::http::{Request, Response, Result};
    use guest_common::wasi::http::types::Method;

    /// `GET|PUT|DELETE /spin2/kv/{key}`, `GET /spin2/exists/{key}`,
    /// `GET /spin2/keys` (one key per line).
    pub fn route(req: &Request, rest: &str) -> Result {
        let label = req.param("store")?.unwrap_or("default".into());
        let store = Store::open(&label).map_err(error)?;
        if let Some(raw) = rest.strip_prefix("kv/") {
            let key = guest_common::kv::key(raw)?;
            return match req.method() {
                Method::Get => match store.get(&key).map_err(error)? {
                    Some(value) => Ok(Response::octets(200, value)),
                    None => Ok(Response::text(404, "key not found")),
                },
                Method::Put => {
                    store.set(&key, &req.read_body()?).map_err(error)?;
                    Ok(Response::no_content())
                }
                Method::Delete => {
                    store.delete(&key).map_err(error)?;
                    Ok(Response::no_content())
                }
                _ => Err(Response::method_not_allowed("GET, PUT, DELETE")),
            };
        }
        if let Some(raw) = rest.strip_prefix("exists/") {
            let found = store.exists(&guest_common::kv::key(raw)?).map_err(error)?;
            return Ok(Response::text(200, found.to_string()));
        }
        if rest == "keys" {
            let keys = store.get_keys().map_err(error)?;
            return Ok(Response::text(200, keys.join("\n")));
        }
        Err(Response::no_route())
    }

    /// Spin's error by its variant's name: 403 `access-denied`, 507 for a
    /// quota, 500 otherwise.
    fn error(e: Error) -> Response {
        let (status, text) = match e {
            Error::AccessDenied => (403, "access-denied".to_owned()),
            Error::NoSuchStore => (404, "no-such-store".to_owned()),
            Error::StoreTableFull => (500, "store-table-full".to_owned()),
            Error::Other(text) => {
                let status = match guest_common::kv::token(&text) {
                    Some("quota-exceeded") => 507,
                    _ => 500,
                };
                (status, format!("other: {text}"))
            }
        };
        Response::text(status, format!("store error: {text}"))
    }
}

/// Set by `/residue`, in the module's data section: a fresh instance
/// starts with it at 0.
static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `GET /residue`: what a previous request left behind, then leaves
/// something itself. Answers `static=S dirty=D`: S the mark a static holds
/// (0 in a fresh instance), D the nonzero bytes in 4 MiB of memory just
/// grown with `memory.grow` (zero in a fresh instance). Then it sets the
/// mark and fills every other 4 KiB page of them with 0xA5, so a reset
/// that missed a page shows in the next request given the same pool slot:
/// 512 separate dirty regions, more than one `PAGEMAP_SCAN` reports at
/// once (vendor/wasmtime/PATCHED.md).
#[cfg(target_arch = "wasm32")]
fn residue(_: &Request) -> Result {
    use core::arch::wasm32::memory_grow;
    use std::sync::atomic::Ordering;
    const PAGES: usize = 64;
    let seen = MARK.swap(0xA5A5, Ordering::Relaxed);
    let old = memory_grow::<0>(PAGES);
    if old == usize::MAX {
        return Ok(Response::text(507, "memory.grow failed"));
    }
    // SAFETY: the pages were just grown, so nothing else (the allocator
    // included) knows about them: this is their only use.
    let dirty = unsafe {
        let pages = std::slice::from_raw_parts_mut((old * 65536) as *mut u8, PAGES * 65536);
        let dirty = pages.iter().filter(|&&b| b != 0).count();
        for page in pages.chunks_mut(8192) {
            page[..4096].fill(0xA5);
        }
        black_box(&pages);
        dirty
    };
    Ok(Response::text(200, format!("static={seen} dirty={dirty}")))
}

#[cfg(not(target_arch = "wasm32"))]
fn residue(_: &Request) -> Result {
    Ok(Response::text(501, "residue needs wasm32"))
}

/// `GET /loop`: spins forever. `black_box` keeps the optimizer from proving
/// the loop does nothing; only the host's epoch or fuel limit ends it.
fn spin(_: &Request) -> Result {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// `GET /burn?iters=N`: N iterations of a loop the optimizer must keep, then
/// 200 with N.
fn burn(req: &Request) -> Result {
    let iters: u64 = req.required_param("iters")?;
    for i in 0..iters {
        black_box(i);
    }
    Ok(Response::text(200, iters.to_string()))
}

/// `GET /grow`: keeps allocating 1 MiB chunks, each filled so its pages are
/// really touched, until the allocator fails; Rust then aborts, which traps.
fn grow(_: &Request) -> Result {
    const CHUNK: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = Vec::with_capacity(CHUNK);
        chunk.resize(CHUNK, 0xA5);
        chunks.push(black_box(chunk));
    }
}

/// `GET /grow-raw`: grows memory 0 one 64 KiB page at a time until
/// `memory.grow` fails, then answers with the page count reached, so a test
/// can check the exact memory limit.
#[cfg(target_arch = "wasm32")]
fn grow_raw(_: &Request) -> Result {
    use core::arch::wasm32::{memory_grow, memory_size};
    // Pages grown here are not the allocator's, so once memory is full the
    // allocator could not get more for the response. Allocating and freeing
    // 64 KiB first leaves it enough free space to answer from.
    drop(black_box(Vec::<u8>::with_capacity(64 * 1024)));
    let mut body = String::with_capacity(24);
    while memory_grow::<0>(1) != usize::MAX {}
    let pages = memory_size::<0>();
    let _ = write!(body, "{pages}");
    Ok(Response::text(200, body))
}

/// Only wasm has `memory.grow`; this lets the crate build (and be checked) on
/// the host too.
#[cfg(not(target_arch = "wasm32"))]
fn grow_raw(_: &Request) -> Result {
    Ok(Response::text(501, "grow-raw needs wasm32"))
}

/// Unbounded recursion that ends in the host's "call stack exhausted" trap
/// (`--max-wasm-stack`).
///
/// The result is mixed after the call with a rotate (not an associative
/// accumulator), so LLVM can neither make it a tail call nor turn it into a
/// loop. It deliberately avoids `black_box` and stack arrays: on wasm those
/// put locals in the shadow stack in linear memory, and with a small shadow
/// stack (the default guest links with 64 KiB) that can run out first and end
/// in an out-of-bounds memory access instead of a stack overflow. Each frame
/// here lives on the native wasm stack only, so the outcome does not depend
/// on the shadow stack's size.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return depth;
    }
    recurse(depth + 1).rotate_left(7) ^ depth
}

/// `GET /big-value?bytes=N`: sets `big` to N bytes in the default bucket (or
/// `?bucket=`); 204, or the store error mapped like every route's.
fn big_value(req: &Request) -> Result {
    let bytes: usize = req.required_param("bytes")?;
    let bucket = kv::open(req)?;
    bucket.set("big", &vec![b'x'; bytes])?;
    Ok(Response::no_content())
}

/// `GET /fill-keys?max=N`: sets `k0`, `k1`, ... to a 10-byte value until a set
/// fails or N keys are written (N defaults to 1 000 000).
fn fill_keys(req: &Request) -> Result {
    let max: u64 = req.parse_param("max")?.unwrap_or(1_000_000);
    let bucket = kv::open(req)?;
    let mut key = String::with_capacity(24);
    for written in 0..max {
        key.clear();
        let _ = write!(key, "k{written}");
        if let Err(error) = bucket.set(&key, b"0123456789") {
            return Err(Response::text(
                kv::error_status(&error),
                format!("wrote {written} keys; store error: {}", StoreError(&error)),
            ));
        }
    }
    Ok(Response::text(200, format!("wrote {max} keys")))
}

/// `GET /huge-body?bytes=N`: 200 with N bytes of `x`, streamed 4096 at a time.
fn huge_body(req: &Request) -> Result {
    let len: u64 = req.required_param("bytes")?;
    Ok(Response::text(200, Body::Repeat { byte: b'x', len }))
}

/// `GET /stdout?bytes=N`: writes N bytes of `x` to stdout in 4096-byte writes,
/// ignoring write errors (the host may cap or close stdout), then 200 `ok`.
/// `GET /fields?count=N[&bytes=M]`: holds N header-field resources at once,
/// each with one header of M bytes if given, as a guest that tries to make
/// the host allocate without bound would.
fn fields(req: &Request) -> Result {
    let count: usize = req.required_param("count")?;
    let bytes: usize = req.parse_param("bytes")?.unwrap_or(0);
    let value = vec![b'a'; bytes];
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        if bytes == 0 {
            held.push(Fields::new());
        } else if let Ok(fields) = Fields::from_list(&[("x-fill", &value[..])]) {
            held.push(fields);
        }
    }
    Ok(Response::text(200, format!("held {}", held.len())))
}

/// `GET /lines?count=N`: N one-byte lines on stdout, as a guest that tries
/// to make the log far larger than its output would.
fn lines(req: &Request) -> Result {
    let count: usize = req.required_param("count")?;
    let mut out = std::io::stdout().lock();
    for _ in 0..count {
        let _ = out.write_all(b"a\n");
    }
    let _ = out.flush();
    Ok(Response::text(200, "ok"))
}

/// `GET /print?text=...`: writes `text` (percent-decoded) to stdout, as a
/// guest that tries to forge log fields or lines would.
fn print(req: &Request) -> Result {
    let text: String = req.required_param("text")?;
    println!("{text}");
    Ok(Response::text(200, "ok"))
}

/// `GET /stderr?text=...&tail=...`: writes `text` to stderr three bytes per
/// write, then a newline, then `tail` with none, as a program printing a
/// line piece by piece and leaving its last one unfinished would.
fn stderr(req: &Request) -> Result {
    let text: String = req.required_param("text")?;
    let tail: String = req.parse_param("tail")?.unwrap_or_default();
    let mut err = std::io::stderr();
    for piece in text.as_bytes().chunks(3) {
        let _ = err.write_all(piece);
    }
    let _ = err.write_all(b"\n");
    let _ = err.write_all(tail.as_bytes());
    Ok(Response::text(200, "ok"))
}

fn stdout(req: &Request) -> Result {
    let mut left: u64 = req.required_param("bytes")?;
    let chunk = [b'x'; 4096];
    let mut out = std::io::stdout().lock();
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        let _ = out.write_all(&chunk[..n]);
        left -= n as u64;
    }
    let _ = out.flush();
    Ok(Response::text(200, "ok"))
}

/// `GET /sleep?ms=N`: blocks in the host for N ms
/// (`monotonic-clock.subscribe-duration` + `pollable.block`), then `slept`.
fn sleep(req: &Request) -> Result {
    let ms: u64 = req.required_param("ms")?;
    monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    Ok(Response::text(200, "slept"))
}

/// `?name=N`: the value, or 404 `none`; without a name, every `name=value`
/// on a line of its own (`get-all`).
fn config_answer(
    req: &Request,
    get: impl Fn(&str) -> std::result::Result<Option<String>, String>,
    all: impl Fn() -> std::result::Result<Vec<(String, String)>, String>,
) -> Result {
    let reply = match req.param("name")? {
        Some(name) => get(&name).map(|found| match found {
            Some(value) => Response::text(200, value),
            None => Response::text(404, "none"),
        }),
        None => all().map(|pairs| {
            let lines: String = pairs.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            Response::text(200, lines)
        }),
    };
    Ok(reply.unwrap_or_else(|e| Response::text(500, e)))
}

/// `wasi:config/store@0.2.0-rc.1`, as wasmtime and wasmCloud link it.
fn config_rc1(req: &Request) -> Result {
    use guest_common::wasi::config0_2_0_rc_1::store;
    config_answer(
        req,
        |name| store::get(name).map_err(|e| format!("{e:?}")),
        || store::get_all().map_err(|e| format!("{e:?}")),
    )
}

/// `wasi:config/store@0.2.0-draft-2024-09-27`, as Spin links it.
fn config_draft(req: &Request) -> Result {
    use guest_common::wasi::config0_2_0_draft_2024_09_27::store;
    config_answer(
        req,
        |name| store::get(name).map_err(|e| format!("{e:?}")),
        || store::get_all().map_err(|e| format!("{e:?}")),
    )
}

/// `fermyon:spin/variables@2.0.0`: the value, or its error (404
/// `undefined`, 400 `invalid-name`) with the host's message.
fn config_spin2(req: &Request) -> Result {
    use guest_common::fermyon::spin::variables::{Error, get};
    let name: String = req.required_param("name")?;
    Ok(match get(&name) {
        Ok(value) => Response::text(200, value),
        Err(Error::Undefined(why)) => Response::text(404, format!("undefined: {why}")),
        Err(Error::InvalidName(why)) => Response::text(400, format!("invalid-name: {why}")),
        Err(e) => Response::text(500, format!("{e:?}")),
    })
}
