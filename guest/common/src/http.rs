//! Request parsing and response writing on top of `wasi:http`.

use std::borrow::Cow;
use std::fmt::Display;
use std::str::FromStr;

use crate::query;
use crate::wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use crate::wasi::io::streams::{OutputStream, StreamError};

/// The most bytes one `output-stream.blocking-write-and-flush` call accepts.
pub const WRITE_CHUNK: usize = 4096;

/// How many bytes to ask for per `input-stream.blocking-read` call.
const READ_CHUNK: u64 = 65536;

/// A route handler's result: the error side is also a response (400, 404,
/// store errors...), so handlers can use `?` on anything that converts into a
/// [`Response`].
pub type Result<T = Response> = std::result::Result<T, Response>;

/// Reads `request`, runs `route` on it and sends what it returns.
pub fn serve(
    request: IncomingRequest,
    out: ResponseOutparam,
    route: impl FnOnce(&Request) -> Result,
) {
    let request = Request::new(request);
    route(&request).unwrap_or_else(|e| e).send(out);
}

/// An incoming request with its method and path read out once.
pub struct Request {
    inner: IncomingRequest,
    method: Method,
    path_with_query: String,
    /// Where the path ends: the index of `?`, or the length.
    path_end: usize,
}

impl Request {
    pub fn new(inner: IncomingRequest) -> Self {
        let method = inner.method();
        // Only absent for some non-HTTP schemes; an empty path matches no route.
        let path_with_query = inner.path_with_query().unwrap_or_default();
        let path_end = path_with_query.find('?').unwrap_or(path_with_query.len());
        Self {
            inner,
            method,
            path_with_query,
            path_end,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The path, still percent-encoded, without the query. The runner strips
    /// the tenant prefix, so this is e.g. `/kv/foo`.
    pub fn path(&self) -> &str {
        &self.path_with_query[..self.path_end]
    }

    /// The query string without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        self.path_with_query
            .get(self.path_end + 1..)
            .unwrap_or_default()
    }

    /// The percent-decoded query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Result<Option<Cow<'_, str>>> {
        query::param(self.query(), name)
            .map_err(|e| Response::bad_request(format!("invalid {name}: {e}")))
    }

    /// Query parameter `name` parsed as a `T`, if present; 400 if it does not
    /// parse.
    pub fn parse_param<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.param(name)? {
            None => Ok(None),
            Some(value) => value
                .parse()
                .map(Some)
                .map_err(|e| Response::bad_request(format!("invalid {name}: {value:?}: {e}"))),
        }
    }

    /// Query parameter `name` parsed as a `T`; 400 if it is missing or does not
    /// parse.
    pub fn required_param<T>(&self, name: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_param(name)?
            .ok_or_else(|| Response::bad_request(format!("missing query parameter: {name}")))
    }

    /// The `bucket` query parameter: the store identifier for `store.open`.
    /// Absent means `""`, the tenant's default bucket.
    pub fn bucket(&self) -> Result<Cow<'_, str>> {
        Ok(self.param("bucket")?.unwrap_or(Cow::Borrowed("")))
    }

    /// Reads the whole request body: 400 `failed to read request body` if the
    /// stream fails. A body can be consumed only once; a second call answers
    /// 500.
    pub fn read_body(&self) -> Result<Vec<u8>> {
        let body = self
            .inner
            .consume()
            .map_err(|()| Response::text(500, "request body already consumed"))?;
        let data = read_stream(&body)?;
        // Nobody looks at request trailers.
        drop(IncomingBody::finish(body));
        Ok(data)
    }
}

fn read_stream(body: &IncomingBody) -> Result<Vec<u8>> {
    let stream = body
        .stream()
        .map_err(|()| Response::text(500, "request body already consumed"))?;
    let mut data = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            // The first chunk is taken as it is: most bodies fit in one.
            Ok(chunk) if data.is_empty() => data = chunk,
            Ok(chunk) => data.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(data),
            Err(StreamError::LastOperationFailed(_)) => {
                return Err(Response::bad_request("failed to read request body"));
            }
        }
    }
    // `stream` (a child of `body`) is dropped here, before `body` is finished.
}

/// A response body.
#[derive(Debug)]
pub enum Body {
    Empty,
    Static(&'static [u8]),
    Bytes(Vec<u8>),
    /// `len` copies of `byte`, written without ever being held in memory.
    Repeat {
        byte: u8,
        len: u64,
    },
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Static(b) => b.len() as u64,
            Body::Bytes(b) => b.len() as u64,
            Body::Repeat { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the body in chunks of at most [`WRITE_CHUNK`] bytes.
    fn write_to(&self, stream: &OutputStream) -> std::result::Result<(), StreamError> {
        match self {
            Body::Empty => Ok(()),
            Body::Static(b) => write_all(stream, b),
            Body::Bytes(b) => write_all(stream, b),
            Body::Repeat { byte, len } => {
                let chunk = [*byte; WRITE_CHUNK];
                let mut left = *len;
                while left > 0 {
                    let n = left.min(WRITE_CHUNK as u64) as usize;
                    stream.blocking_write_and_flush(&chunk[..n])?;
                    left -= n as u64;
                }
                Ok(())
            }
        }
    }
}

fn write_all(stream: &OutputStream, bytes: &[u8]) -> std::result::Result<(), StreamError> {
    bytes
        .chunks(WRITE_CHUNK)
        .try_for_each(|chunk| stream.blocking_write_and_flush(chunk))
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::Static(s.as_bytes())
    }
}

impl From<&'static [u8]> for Body {
    fn from(b: &'static [u8]) -> Self {
        Body::Static(b)
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::Bytes(s.into_bytes())
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Body::Bytes(b)
    }
}

pub const TEXT: &str = "text/plain";
pub const JSON: &str = "application/json";
pub const OCTETS: &str = "application/octet-stream";

/// A response to send: status, a content type, and the body.
#[derive(Debug)]
pub struct Response {
    status: u16,
    content_type: Option<&'static str>,
    /// The `allow` header of a 405.
    allow: Option<&'static str>,
    body: Body,
}

impl Response {
    pub fn new(status: u16, content_type: Option<&'static str>, body: impl Into<Body>) -> Self {
        Self {
            status,
            content_type,
            allow: None,
            body: body.into(),
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Body>) -> Self {
        Self::new(status, Some(TEXT), body)
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: Vec<u8>) -> Self {
        Self::new(status, Some(JSON), body)
    }

    /// An `application/octet-stream` response.
    pub fn octets(status: u16, body: Vec<u8>) -> Self {
        Self::new(status, Some(OCTETS), body)
    }

    /// 204 with no body and no content type.
    pub fn no_content() -> Self {
        Self::new(204, None, Body::Empty)
    }

    /// 400 with `message` as the body.
    pub fn bad_request(message: impl Into<Body>) -> Self {
        Self::text(400, message)
    }

    /// 404 `no route`: the path is not one this guest serves.
    pub fn no_route() -> Self {
        Self::text(404, "no route")
    }

    /// 405 for a known path; `allow` lists the methods it takes, e.g. `"GET, PUT"`.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::text(405, "method not allowed")
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body(&self) -> &Body {
        &self.body
    }

    /// Sends the response: headers and status first (`response-outparam.set`,
    /// so the host can start answering), then the body, then
    /// `outgoing-body.finish`.
    ///
    /// If a body write fails (the client went away, or the host refused the
    /// bytes) the body is dropped without being finished, which tells the host
    /// the response is incomplete rather than silently truncated.
    pub fn send(self, out: ResponseOutparam) {
        let mut digits = [0u8; 20];
        let mut headers: [(&str, &[u8]); 3] = [("", &[]); 3];
        let mut n = 0;
        if let Some(content_type) = self.content_type {
            headers[n] = ("content-type", content_type.as_bytes());
            n += 1;
        }
        // A 204 must not carry a content-length.
        if self.status != 204 {
            headers[n] = ("content-length", decimal(self.body.len(), &mut digits));
            n += 1;
        }
        if let Some(allow) = self.allow {
            headers[n] = ("allow", allow.as_bytes());
            n += 1;
        }
        // The names are fixed and valid, so this does not fail; an empty
        // header set is a harmless fallback all the same.
        let fields = Fields::from_list(&headers[..n]).unwrap_or_else(|_| Fields::new());
        let response = OutgoingResponse::new(fields);
        // Only fails for a status outside 100..=999, which no route uses.
        let _ = response.set_status_code(self.status);
        // `body` succeeds on its first call, which this is.
        let body = response.body();
        ResponseOutparam::set(out, Ok(response));
        let Ok(body) = body else { return };
        if write_body(&body, &self.body).is_ok() {
            // An error here means the host gave up on the response; there is
            // nobody left to tell.
            let _ = OutgoingBody::finish(body, None);
        }
    }
}

fn write_body(body: &OutgoingBody, content: &Body) -> std::result::Result<(), ()> {
    if content.is_empty() {
        return Ok(());
    }
    let stream = body.write()?;
    content.write_to(&stream).map_err(drop)
    // `stream` (a child of `body`) is dropped here, before `body` is finished.
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_decimal() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4096, &mut buf), b"4096");
        assert_eq!(decimal(u64::MAX, &mut buf), b"18446744073709551615");
    }
}
