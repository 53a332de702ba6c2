//! `wasi:http`'s outgoing requests, WASIp2 (`outgoing-handler`) and WASIp3
//! (`client`) alike: both come here, and go on through the tenant's
//! [`TenantEgress`], counted against the current request's cap.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::output::GuestLog;
use crate::outbound::TenantEgress;

pub(crate) struct Outgoing {
    egress: Arc<TenantEgress>,
    /// Outgoing requests the current request(s) may still make.
    left: usize,
    /// Whose request id a refusal's log line carries.
    log: GuestLog,
}

impl Outgoing {
    pub fn new(egress: Arc<TenantEgress>, log: GuestLog) -> Self {
        Self {
            egress,
            left: 0,
            log,
        }
    }

    /// A request starts alone on the instance: a whole cap.
    pub fn begin(&mut self, cap: usize) {
        self.left = cap;
    }

    /// One more request shares the instance: its cap joins the rest.
    pub fn join(&mut self, cap: usize) {
        self.left = self.left.saturating_add(cap);
    }
}

type Io = Box<dyn Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), Error>> + Send> {
        let over_cap = match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                false
            }
            None => true,
        };
        let id = self.log.request_id();
        let egress = self.egress.clone();
        Box::new(async move {
            let response = egress.send(request, options, over_cap, id).await?;
            // The pool drives the connection itself.
            Ok((response, Box::new(async { Ok(()) }) as Io))
        })
    }
}

/// The hooks an incoming request is read with, before it has a store:
/// only the forbidden headers are asked of them; they send nothing.
pub(crate) struct DenyOutgoing;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Io,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), Error>> + Send> {
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
