//! Key-value helpers: opening the request's bucket, keys from paths, the
//! store-error → HTTP status mapping, and the `/kv/{key}` routes both guests
//! serve.

use std::borrow::Cow;
use std::fmt;

use crate::http::{Request, Response, Result};
use crate::query::percent_decode;
pub use crate::wasi::keyvalue0_2_0_draft::store::{Bucket, Error};

/// Shows a store error the way responses spell it: `no-such-store`,
/// `access-denied`, or the message of `other` as it is.
pub struct StoreError<'a>(pub &'a Error);

impl fmt::Display for StoreError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Error::NoSuchStore => f.write_str("no-such-store"),
            Error::AccessDenied => f.write_str("access-denied"),
            Error::Other(message) => f.write_str(message),
        }
    }
}

/// The HTTP status for a store error.
///
/// The runner's `other` errors start with a stable token and a colon (the
/// README lists them); the status follows the token, whatever the rest of
/// the message says:
///
/// | error                                   | status |
/// |-----------------------------------------|--------|
/// | `no-such-store`                         | 404    |
/// | `access-denied`                         | 403    |
/// | `other("quota-exceeded: ...")`          | 507    |
/// | `other("invalid-argument: ...")`        | 400    |
/// | `other("store-unavailable: ...")`       | 503    |
/// | any other `other(...)`                  | 500    |
pub fn error_status(error: &Error) -> u16 {
    match error {
        Error::NoSuchStore => 404,
        Error::AccessDenied => 403,
        Error::Other(message) => match token(message) {
            Some("quota-exceeded") => 507,
            Some("invalid-argument") => 400,
            Some("store-unavailable") => 503,
            _ => 500,
        },
    }
}

/// The token an `other` message starts with: the text before its first
/// `": "`, if that is a lowercase, hyphenated word.
pub fn token(message: &str) -> Option<&str> {
    let (token, _) = message.split_once(": ")?;
    let word = !token.is_empty() && token.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    word.then_some(token)
}

/// `store error: <error>` with the mapped status.
impl From<Error> for Response {
    fn from(error: Error) -> Self {
        Response::text(
            error_status(&error),
            format!("store error: {}", StoreError(&error)),
        )
    }
}

/// Opens the bucket named by the request's `bucket` query parameter (`""`,
/// the default bucket, when absent).
pub fn open(request: &Request) -> Result<Bucket> {
    let name = request.bucket()?;
    Ok(crate::wasi::keyvalue0_2_0_draft::store::open(&name)?)
}

/// Percent-decodes a key taken from a path; 400 if it is empty or not UTF-8.
pub fn key(raw: &str) -> Result<Cow<'_, str>> {
    let key =
        percent_decode(raw).map_err(|e| Response::bad_request(format!("invalid key: {e}")))?;
    if key.is_empty() {
        return Err(Response::bad_request("empty key"));
    }
    Ok(key)
}

/// `GET /kv/{key}`: 200 with the value's bytes, or 404 `key not found`.
pub fn get(request: &Request, key: &str) -> Result {
    let bucket = open(request)?;
    match bucket.get(key)? {
        Some(value) => Ok(Response::octets(200, value)),
        None => Ok(Response::text(404, "key not found")),
    }
}

/// `PUT /kv/{key}`: the body is the value; 204.
pub fn put(request: &Request, key: &str) -> Result {
    let value = request.read_body()?;
    let bucket = open(request)?;
    bucket.set(key, &value)?;
    Ok(Response::no_content())
}

/// `GET /setget/{key}`: sets the key to `world`, reads it back and answers
/// it: one request's work in the speed comparisons.
pub fn set_get(request: &Request, key: &str) -> Result {
    let bucket = open(request)?;
    bucket.set(key, b"world")?;
    match bucket.get(key)? {
        Some(value) => Ok(Response::octets(200, value)),
        None => Ok(Response::text(404, "key not found")),
    }
}

/// `DELETE /kv/{key}`: 204 whether or not the key existed.
pub fn delete(request: &Request, key: &str) -> Result {
    let bucket = open(request)?;
    bucket.delete(key)?;
    Ok(Response::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(message: &str) -> Error {
        Error::Other(message.to_owned())
    }

    #[test]
    fn maps_store_errors() {
        assert_eq!(error_status(&Error::NoSuchStore), 404);
        assert_eq!(error_status(&Error::AccessDenied), 403);
        assert_eq!(error_status(&other("quota-exceeded: too many keys")), 507);
        assert_eq!(error_status(&other("invalid-argument: key too long")), 400);
        assert_eq!(error_status(&other("store-unavailable: refused")), 503);
        assert_eq!(error_status(&other("quota exceeded: old wording")), 500);
        assert_eq!(error_status(&other("disk on fire")), 500);
        let response = Response::from(other(
            "quota-exceeded: value of 1048577 bytes is over the 1048576-byte limit",
        ));
        assert_eq!(response.status(), 507);
        assert!(matches!(
            response.body(),
            crate::http::Body::Bytes(b) if b == b"store error: quota-exceeded: value of 1048577 bytes is over the 1048576-byte limit"
        ));
        assert_eq!(StoreError(&Error::NoSuchStore).to_string(), "no-such-store");
    }

    #[test]
    fn checks_keys() {
        assert_eq!(key("a%2Fb").ok().as_deref(), Some("a/b"));
        assert_eq!(key("").map_err(|r| r.status()).err(), Some(400));
        assert_eq!(key("%FF").map_err(|r| r.status()).err(), Some(400));
    }
}
