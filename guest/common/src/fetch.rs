//! Outgoing HTTP through `wasi:http/outgoing-handler`: one `GET`, its
//! response read whole. The host decides whether it may go out at all: a
//! refusal comes back as the `error-code` it chose.

use crate::wasi::http::outgoing_handler;
use crate::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme,
};
use crate::wasi::io::streams::StreamError;

/// What came back: the status and the body.
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
}

/// How a request is sent besides its URL: for tests of what the host
/// allows.
#[derive(Default)]
pub struct Options<'a> {
    /// A `Host` header to set (the host forbids it).
    pub host: Option<&'a str>,
    /// A request target to send instead of the URL's path: an absolute
    /// URL, say, naming another host than the authority.
    pub target: Option<&'a str>,
}

/// Sends `GET url` and reads the response. An error is the host's
/// `error-code` as Rust prints it (`HttpRequestDenied`, ...), or the
/// guest's own complaint about the URL.
pub fn get(url: &str, options: &Options) -> Result<Fetched, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} has no scheme"))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_string()),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    if let Some(host) = options.host {
        headers
            .append("host", host.as_bytes())
            .map_err(|e| format!("header refused: {e:?}"))?;
    }
    let request = OutgoingRequest::new(headers);
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    request
        .set_path_with_query(Some(options.target.unwrap_or(path)))
        .map_err(|()| "the path was refused".to_string())?;
    let future = outgoing_handler::handle(request, None).map_err(code)?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| "the response was taken twice".to_string())?
        .map_err(code)?;
    let status = response.status();
    let body = response
        .consume()
        .map_err(|()| "no body".to_string())?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| "no body stream".to_string())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(match crate::wasi::http::types::http_error_code(&e) {
                        Some(c) => code(c),
                        None => e.to_debug_string(),
                    });
                }
            }
        }
    }
    // The trailers, if any, are not wanted; an error in them is.
    let trailers = IncomingBody::finish(body);
    loop {
        match trailers.get() {
            Some(Ok(Ok(_))) => break,
            Some(Ok(Err(c))) => return Err(code(c)),
            Some(Err(())) => break,
            None => trailers.subscribe().block(),
        }
    }
    Ok(Fetched {
        status,
        body: bytes,
    })
}

fn code(c: ErrorCode) -> String {
    format!("{c:?}")
}

/// `GET /fetch?url=URL[&n=N]`: fetches URL N times (1 by default), one
/// after another, and answers the last response's status and body; the
/// first failure answers 502 `outgoing request N failed: CODE`.
pub fn route(req: &crate::http::Request, options: &Options) -> crate::http::Result {
    use crate::http::Response;
    let url: String = req.required_param("url")?;
    let n: u32 = req.parse_param("n")?.unwrap_or(1);
    let mut last = None;
    for i in 1..=n {
        match get(&url, options) {
            Ok(fetched) => last = Some(fetched),
            Err(e) => {
                return Ok(Response::text(
                    502,
                    format!("outgoing request {i} failed: {e}"),
                ));
            }
        }
    }
    let Some(fetched) = last else {
        return Ok(Response::no_content());
    };
    Ok(Response::new(
        fetched.status,
        Some(crate::http::OCTETS),
        fetched.body,
    ))
}
