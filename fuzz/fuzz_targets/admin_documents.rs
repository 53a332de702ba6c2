//! The admin API's documents and routes, with the right token, on a real
//! runner over loopback: tenant documents (built from limit keys and values
//! of every JSON type, or raw bytes), component uploads, deletes with any
//! query, any tenant name or digest in the path. Every request gets a JSON
//! answer: a success, or a problem document whose status is the response's
//! and whose type is one of the API's; never a 500 (the store here is
//! memory, so nothing can fail part way), never a dropped connection; and
//! the runner's own tenant keeps answering.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "loopback.rs"]
mod loopback;

const TOKEN: &str = "fuzz-admin-token";

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    /// A duration or size as the limits spell them.
    Unit(u32, u8),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Tenant {
        component: u8,
        limits: Vec<(u8, Json)>,
        extra: Vec<(String, Json)>,
    },
}

#[derive(Arbitrary, Debug)]
struct Call {
    method: u8,
    route: u8,
    name: u8,
    /// Percent-encoded into the path instead of a known name, when set.
    raw_name: Option<Vec<u8>>,
    query: Vec<(u8, Vec<u8>)>,
    body: Body,
}

const METHODS: [&str; 4] = ["GET", "PUT", "POST", "DELETE"];
const ROUTES: [&str; 5] = [
    "/v1/tenants/",
    "/v1/tenants",
    "/v1/components",
    "/v1/components/",
    "/v1/",
];
// Not t0: the runner's own tenant, which must keep answering.
const NAMES: [&str; 6] = ["a", "b", "x", "a-b_c", "sha256:0", "default"];
const PARAMS: [&str; 4] = ["purge", "limit", "cursor", "x"];
const LIMIT_KEYS: [&str; 14] = [
    "fuel",
    "timeout",
    "max-memory",
    "max-keys",
    "max-store-bytes",
    "max-value-bytes",
    "max-key-bytes",
    "max-tenant-in-flight",
    "max-instance-concurrency",
    "max-instance-reuse",
    "instance-idle-timeout",
    "max-reused-memory",
    "max-log-bytes-per-second",
    "max-page-keys",
    "max-buckets",
];
const UNITS: [&str; 8] = ["ms", "s", "m", "h", "KiB", "MiB", "GiB", "B"];

fn value(json: &Json, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => Value::from(*i),
        Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Json::Text(t) => Value::String(t.clone()),
        Json::Unit(n, unit) => {
            Value::String(format!("{n}{}", UNITS[usize::from(*unit) % UNITS.len()]))
        }
        Json::List(items) if depth < 4 => {
            Value::Array(items.iter().take(8).map(|v| value(v, depth + 1)).collect())
        }
        Json::Object(fields) if depth < 4 => Value::Object(
            fields
                .iter()
                .take(8)
                .map(|(k, v)| (k.clone(), value(v, depth + 1)))
                .collect(),
        ),
        Json::List(_) | Json::Object(_) => Value::Null,
    }
}

fn body(body: &Body, digest: &str) -> Vec<u8> {
    match body {
        Body::Raw(bytes) => bytes.clone(),
        Body::Tenant {
            component,
            limits,
            extra,
        } => {
            let component = match component % 4 {
                0 => "default".to_string(),
                1 => digest.to_string(),
                2 => format!("sha256:{}", "0".repeat(64)),
                _ => "shop.wasm".to_string(),
            };
            let limits: serde_json::Map<String, serde_json::Value> = limits
                .iter()
                .take(8)
                .map(|(key, v)| {
                    (
                        LIMIT_KEYS[usize::from(*key) % LIMIT_KEYS.len()].to_string(),
                        value(v, 0),
                    )
                })
                .collect();
            let mut document = serde_json::json!({ "component": component, "limits": limits });
            for (key, v) in extra.iter().take(2) {
                document[key] = value(v, 0);
            }
            document.to_string().into_bytes()
        }
    }
}

/// A runner with one tenant of its own and the admin API on, started once
/// per process: its tenant listener, its admin listener, and the digest
/// of the one component uploaded (the default guest's bytes).
fn runner() -> (SocketAddr, SocketAddr, &'static str) {
    static ADDRS: OnceLock<(SocketAddr, SocketAddr, String)> = OnceLock::new();
    let (addr, admin, digest) = ADDRS.get_or_init(|| {
        let token = std::env::temp_dir().join(format!("runner-fuzz-token-{}", std::process::id()));
        std::fs::write(&token, TOKEN).expect("writing the token file");
        let token = token.to_str().unwrap().to_string();
        let args = [
            "--tenants",
            "1",
            "--admin-token-file",
            &token,
            "--log",
            "off",
        ];
        let (addr, admin) = loopback::start(args.map(String::from).to_vec());
        let (status, answer) = send(
            admin,
            "PUT",
            "/v1/components",
            runner::engine::DEFAULT_GUEST,
        );
        assert!(status == 200 || status == 201, "{status} {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        (addr, admin, answer["digest"].as_str().unwrap().to_string())
    });
    (*addr, *admin, digest.as_str())
}

/// Sends one request with the admin token.
fn send(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> (u16, String) {
    let authorization = format!("authorization: Bearer {TOKEN}");
    loopback::send(addr, method, target, &[&authorization], body)
}

const PROBLEMS: [&str; 12] = [
    "unauthorized",
    "bad-request",
    "not-found",
    "no-route",
    "method-not-allowed",
    "body-timeout",
    "body-too-large",
    "conflict",
    "in-use",
    "host-claimed",
    "cannot-run",
    "failed",
];

fuzz_target!(|call: Call| {
    let (addr, admin, digest) = runner();
    let method = METHODS[usize::from(call.method) % METHODS.len()];
    let route = ROUTES[usize::from(call.route) % ROUTES.len()];
    let mut target = route.to_string();
    if route.ends_with("s/") {
        match &call.raw_name {
            Some(raw) => target.push_str(&loopback::encode(raw)),
            None if route == "/v1/components/" && call.name % 2 == 0 => target.push_str(digest),
            None => target.push_str(NAMES[usize::from(call.name) % NAMES.len()]),
        }
    }
    for (i, (param, value)) in call.query.iter().take(3).enumerate() {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(PARAMS[usize::from(*param) % PARAMS.len()]);
        target.push('=');
        target.push_str(&loopback::encode(value));
    }
    let sent = body(&call.body, digest);
    let (status, answer) = send(admin, method, &target, &sent);
    let document: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {target}: {status} not JSON ({e}): {answer}"));
    assert_ne!(status, 500, "{method} {target}: {answer}");
    if status >= 400 {
        let kind = document["type"].as_str().unwrap_or_default();
        let token = kind.strip_prefix("urn:runner:problem:").unwrap_or_default();
        assert!(
            PROBLEMS.contains(&token),
            "{method} {target}: {status} {answer}"
        );
        assert_eq!(document["status"], status, "{method} {target}: {answer}");
        assert!(
            document["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{answer}"
        );
    }
    // The uploaded component stays deployable whatever was deleted: put it
    // back if a DELETE took it.
    if method == "DELETE" && status == 200 && target.starts_with("/v1/components/") {
        let (status, answer) = send(
            admin,
            "PUT",
            "/v1/components",
            runner::engine::DEFAULT_GUEST,
        );
        assert!(status == 200 || status == 201, "{status} {answer}");
    }
    let (status, body) = send(addr, "GET", "/t/t0/hello", b"");
    assert_eq!((status, body.as_str()), (200, "hello"));
});
