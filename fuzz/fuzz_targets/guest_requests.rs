//! Guest-facing host calls with chosen arguments: requests to the default
//! guest, whose routes turn a request's path, query and body into every
//! `wasi:keyvalue` call (keys, bucket names, values, cursors, batches of
//! JSON) and `wasi:logging`, served by a real runner over loopback. Every
//! request gets an HTTP response (a panic in a host call would drop the
//! connection), never the runner's own internal error, and the runner
//! keeps serving its other tenant.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "loopback.rs"]
mod loopback;

#[derive(Arbitrary, Debug)]
struct Call {
    method: u8,
    route: u8,
    /// Percent-encoded into the path after the route.
    rest: Vec<u8>,
    query: Vec<(u8, Vec<u8>)>,
    body: Vec<u8>,
}

const ROUTES: [&str; 10] = [
    "/kv/",
    "/exists/",
    "/incr/",
    "/keys",
    "/batch/get",
    "/batch/set",
    "/batch/delete",
    "/demo",
    "/hello",
    "/",
];
const METHODS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];
const PARAMS: [&str; 4] = ["bucket", "cursor", "by", "x"];

/// A runner with two tenants and small quotas, started once per process.
fn runner() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let args = [
            "--tenants",
            "2",
            "--max-keys",
            "50",
            "--max-store-bytes",
            "64KiB",
            "--max-value-bytes",
            "4KiB",
            "--max-page-keys",
            "5",
            "--log",
            "off",
        ];
        loopback::start(args.map(String::from).to_vec()).0
    })
}

fn send(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    loopback::send(addr, method, target, &[], body)
}

fuzz_target!(|call: Call| {
    let addr = runner();
    let method = METHODS[usize::from(call.method) % METHODS.len()];
    let route = ROUTES[usize::from(call.route) % ROUTES.len()];
    let mut target = format!("/t/t0{route}{}", loopback::encode(&call.rest));
    for (i, (param, value)) in call.query.iter().take(4).enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(PARAMS[usize::from(*param) % PARAMS.len()]);
        target.push('=');
        target.push_str(&loopback::encode(value));
    }
    let (status, body) = send(addr, method, &target, &call.body);
    // A 500 may be the guest's (a trap, a store error it maps); the
    // runner's own faults answer this text.
    assert!(
        !body.starts_with("internal error in the runner"),
        "{method} {target}: {status} {body}"
    );
    let (status, body) = send(addr, "GET", "/t/t1/hello", b"");
    assert_eq!((status, body.as_str()), (200, "hello"));
});
