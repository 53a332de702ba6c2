//! The one hand-off of a request to a guest and of its response back:
//! through a WASIp2 handler (`wasi:http/incoming-handler@0.2`) or a WASIp3
//! one (`wasi:http/handler@0.3.0`).

use bytes::Bytes;
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime::component::Accessor;
use wasmtime::error::Context as _;
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::Service;

use crate::body::Head;
use crate::host::{self, DenyOutgoing, Host};

/// Runs one request through a WASIp2 handler: returns when `handle` does,
/// with the response head sent on `head` as soon as the guest set it.
pub(super) async fn serve_p2<B>(
    store: &mut Store<Host>,
    guest: &host::Guest,
    request: http::Request<B>,
    head: oneshot::Sender<Head>,
) -> wasmtime::Result<()>
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    let mut http = store.data_mut().http();
    let request = http
        .new_incoming_request(Scheme::Http, request)
        .context("passing the request to the guest")?;
    let outparam = http
        .new_response_outparam_from_callback(move |result| {
            let _ = head.send(result.map_err(|code| format!("{code:?}")));
        })
        .context("creating the response slot")?;
    guest
        .wasi_http_incoming_handler()
        .call_handle(store, request, outparam)
        .await
}

/// Runs one request through a WASIp3 handler, in the store's concurrent
/// event loop: the response head is sent on `head` when `handle` returns
/// it, and this returns once the guest's task has exited, which a guest
/// writing its body after returning (the usual WASIp3 shape) does when
/// the body is written.
pub(super) async fn serve_p3<B>(
    store: &mut Store<Host>,
    service: &Service,
    request: http::Request<B>,
    head: oneshot::Sender<Head>,
) -> wasmtime::Result<()>
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    // Forbidden headers are stripped as the store's own hooks would: they
    // are these.
    let (request, request_io) =
        wasmtime_wasi_http::p3::Request::from_http(&mut DenyOutgoing, with_scheme(request)?);
    store
        .run_concurrent(async move |accessor| -> wasmtime::Result<()> {
            let sent = handle_p3(accessor, service, request, request_io).await?;
            let _ = head.send(sent);
            std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)).await;
            Ok(())
        })
        .await?
}

/// `request` with the scheme WASIp3 guests see, as WASIp2 guests do.
pub(super) fn with_scheme<B>(request: http::Request<B>) -> wasmtime::Result<http::Request<B>> {
    let (mut parts, body) = request.into_parts();
    // The guest sees the scheme as WASIp2 guests do.
    if parts.uri.scheme().is_none() {
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(http::uri::Scheme::HTTP);
        parts.uri = http::Uri::from_parts(uri).context("passing the request to the guest")?;
    }
    Ok(http::Request::from_parts(parts, body))
}

/// Hands `request` to a WASIp3 handler inside its store's event loop and
/// takes its answer: the response head, or the error code it answered
/// with. Both the one-request path and the shared instances' come here.
pub(super) async fn handle_p3(
    accessor: &Accessor<Host>,
    service: &Service,
    request: wasmtime_wasi_http::p3::Request,
    io: impl Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send + 'static,
) -> wasmtime::Result<Head> {
    let view: fn(&mut Host) -> wasmtime_wasi_http::WasiHttpCtxView<'_> = Host::http;
    let request = accessor
        .with(|mut store| view(store.get()).table.push(request))
        .context("passing the request to the guest")?;
    let answer = service
        .wasi_http_handler()
        .call_handle(accessor, request)
        .await?;
    Ok(match answer {
        Ok(response) => Ok(accessor.with(|mut store| {
            let response = view(store.get()).table.delete(response)?;
            response.into_http_with_getter(&mut store, io, view)
        })?),
        Err(code) => Err(format!("{code:?}")),
    })
}
