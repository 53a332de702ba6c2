//! The WASIp3 component of the speed comparisons (bench/p3.sh): `GET
//! /hello` answers `hello`, and `GET /sleep?ms=N` waits N milliseconds on
//! `wasi:clocks` before it answers, so requests that share an instance
//! (`max-instance-concurrency`) overlap their waits. Built with the
//! toolchain's defaults, it imports only WASI and `wasi:http@0.3.0`, so
//! `wasmtime serve` runs it unchanged.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

struct Service;

wasip3::http::service::export!(Service);

impl wasip3::exports::http::handler::Guest for Service {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let target = request.get_path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match path {
            "/hello" => Ok(text(200, b"hello")),
            "/sleep" => {
                let ms: u64 = query
                    .strip_prefix("ms=")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                wasip3::clocks::monotonic_clock::wait_for(ms * 1_000_000).await;
                Ok(text(200, b"slept"))
            }
            _ => Ok(text(404, b"no such route")),
        }
    }
}

/// A response with `body`, written after the handler returns it.
fn text(status: u16, body: &'static [u8]) -> Response {
    let (mut writer, contents) = wit_stream::new();
    let (trailers_tx, trailers) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (response, _sent) = Response::new(Fields::new(), Some(contents), trailers);
    response
        .set_status_code(status)
        .expect("statuses used here are valid");
    wasip3::spawn_local(async move {
        writer.write_all(body.to_vec()).await;
    });
    response
}
