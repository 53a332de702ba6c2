//! The request id: one per tenant request, returned in `x-request-id` and
//! written on every log line of the request, the guest's own included, so
//! a failed response can be tied to what was logged about it.
//!
//! Made here as 32 lowercase hex digits, the shape of a W3C trace id; with
//! `--request-id trust`, taken from the client's `traceparent` (its trace
//! id) or `x-request-id` when well formed, for a proxy in front that
//! already names its requests.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// The response header that carries the id, and the request header a
/// trusted client may set it with.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C Trace Context header (`00-{trace id}-{parent id}-{flags}`).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Longest id taken from a client; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// Where a request's id comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, clap::ValueEnum)]
pub enum Policy {
    /// Always made by the runner; ids a client sends are ignored.
    Generate,
    /// The trace id of a valid `traceparent`, else a well-formed
    /// `x-request-id` (1 to 128 of `A-Z a-z 0-9 - _ . : + / =`), else made
    /// by the runner. For a trusted proxy in front: a client could reuse
    /// another request's id.
    Trust,
}

crate::settings::value_enum_setting!(Policy, "generate, trust");

/// One request's id: visible ASCII, at most [`MAX_LEN`] bytes, cheap to
/// clone (it shares the header value's bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id for a request with `headers`, under `policy`.
    pub fn for_request(headers: &HeaderMap, policy: Policy) -> Self {
        if policy == Policy::Trust
            && let Some(id) = from_traceparent(headers).or_else(|| from_header(headers))
        {
            return id;
        }
        Self::generate()
    }

    /// A new id, unique in this process and unlikely to repeat across
    /// processes: two 64-bit mixes of a random seed and a counter.
    pub fn generate() -> Self {
        static SEED: OnceLock<(u64, u64)> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let &(a, b) = SEED.get_or_init(|| {
            let random = |i: u64| {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u64(i);
                h.finish()
            };
            (random(0), random(1))
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // splitmix64 is a bijection, so distinct counts give distinct ids.
        let id = (u128::from(splitmix64(a ^ n)) << 64) | u128::from(splitmix64(b.wrapping_add(n)));
        // Written in place: one allocation, the header value's own.
        let mut hex = [0u8; 32];
        for (i, digit) in hex.iter_mut().enumerate() {
            let nibble = (id >> (124 - 4 * i)) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        Self(HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0")))
    }

    pub fn as_str(&self) -> &str {
        // Only visible ASCII is ever stored.
        self.0.to_str().unwrap_or("-")
    }

    pub fn header_value(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.as_str())
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The trace id of a valid version-00 `traceparent` (all zeros is invalid).
fn from_traceparent(headers: &HeaderMap) -> Option<RequestId> {
    let value = single(headers, &TRACEPARENT)?;
    let text = value.to_str().ok()?;
    let mut parts = text.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    if !valid {
        return None;
    }
    HeaderValue::from_str(trace).ok().map(RequestId)
}

/// A well-formed `x-request-id`.
fn from_header(headers: &HeaderMap) -> Option<RequestId> {
    let value = single(headers, &HEADER)?;
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b));
    valid.then(|| RequestId(value.clone()))
}

/// The header's value, if it was sent exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn id(pairs: &[(&str, &str)], policy: Policy) -> String {
        RequestId::for_request(&headers(pairs), policy).to_string()
    }

    fn is_made(id: &str) -> bool {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn made_ids_are_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| RequestId::generate().to_string())
            .collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| is_made(id)), "{ids:?}");
    }

    #[test]
    fn trusted_ids_come_from_traceparent_then_x_request_id() {
        let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        assert_eq!(id(&[("traceparent", &traceparent)], Policy::Trust), TRACE);
        assert_eq!(
            id(
                &[("traceparent", &traceparent), ("x-request-id", "abc")],
                Policy::Trust
            ),
            TRACE
        );
        assert_eq!(
            id(&[("x-request-id", "req-42:a/b+c=")], Policy::Trust),
            "req-42:a/b+c="
        );
        assert_eq!(
            id(&[("x-request-id", &"a".repeat(128))], Policy::Trust).len(),
            128
        );
    }

    #[test]
    fn malformed_or_untrusted_ids_are_replaced() {
        let traceparent = format!("00-{TRACE}-00f067aa0ba902b7-01");
        for (pairs, policy) in [
            (
                vec![("traceparent", traceparent.as_str())],
                Policy::Generate,
            ),
            (vec![("x-request-id", "abc")], Policy::Generate),
            (vec![("x-request-id", "has space")], Policy::Trust),
            (vec![("x-request-id", "quote\"")], Policy::Trust),
            (
                vec![("x-request-id", "a"), ("x-request-id", "b")],
                Policy::Trust,
            ),
            (
                vec![(
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                )],
                Policy::Trust,
            ),
            (
                vec![(
                    "traceparent",
                    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )],
                Policy::Trust,
            ),
            (
                vec![(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                )],
                Policy::Trust,
            ),
            (
                vec![(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                )],
                Policy::Trust,
            ),
            (
                vec![("traceparent", "00-4bf92f-00f067aa0ba902b7-01")],
                Policy::Trust,
            ),
        ] {
            let made = id(&pairs, policy);
            assert!(is_made(&made), "{pairs:?} {policy:?} gave {made}");
            assert_ne!(made, TRACE);
        }
        let long = "a".repeat(MAX_LEN + 1);
        assert!(is_made(&id(&[("x-request-id", &long)], Policy::Trust)));
    }
}
