//! How one tenant request ended, decided once.
//!
//! Every path that ends a request (admission, the call, the guest's own
//! answer, the client hanging up) produces one [`Outcome`]; [`classify`]
//! names the limit or trap behind a failed call. [`Request::end`]
//! derives the response, the log line and every metric from it, in one
//! place, so they cannot disagree.

use std::sync::Arc;
use std::time::Instant;

use ::http::{HeaderValue, Response, StatusCode, header};

use wasmtime::component::ResourceTableError;
use wasmtime::{PoolConcurrencyLimitError, Trap};
use wasmtime_wasi_http::FieldMapError;

use crate::body::{Failed, Guarded, OutBody, text};
use crate::limits::{Limit, Limits};
use crate::metrics::{Ended, Kind, TrapKind};
use crate::request_id::{self, RequestId};
use crate::tenant::scope::Scope;

/// How a request ended.
pub enum Outcome {
    /// The guest answered; its response, whole.
    Served(Response<OutBody>),
    /// The guest answered and is still writing its body; how it ends comes
    /// on the receiver (`None`: cleanly) when the guest does (see
    /// [`Failed`] for when the body's end may be trusted first). The
    /// request ends, and is counted, when its body does.
    Streaming(Response<OutBody>, Failed),
    /// The guest answered, then failed (the second value) before its body
    /// was done: the client gets the head, the body as far as it got, and a
    /// broken connection instead of the body's end.
    CutShort(Response<OutBody>, Box<Outcome>),
    /// Refused for a named limit before the guest could answer: a
    /// concurrency cap, a full instance pool, a request body over its limit.
    Refused(Limit, String),
    /// The guest ran into one of its limits while running (fuel, deadline,
    /// memory, table, stack); the message names the limit and its value.
    LimitHit(Limit, String),
    /// The guest trapped for a reason of its own (a panic, say).
    Trap(TrapKind, String),
    /// The guest ended without a usable response.
    GuestError(String),
    /// The runner failed; the message is for the operator's log only.
    HostFault(String),
    /// The client broke off or garbled its request (its body could not be
    /// read): 400, counted as `client_gone`.
    ClientError(String),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Served(r) => f.debug_tuple("Served").field(&r.status()).finish(),
            Outcome::Streaming(r, _) => f.debug_tuple("Streaming").field(&r.status()).finish(),
            Outcome::CutShort(r, why) => f
                .debug_tuple("CutShort")
                .field(&r.status())
                .field(why)
                .finish(),
            Outcome::Refused(l, m) => f.debug_tuple("Refused").field(l).field(m).finish(),
            Outcome::LimitHit(l, m) => f.debug_tuple("LimitHit").field(l).field(m).finish(),
            Outcome::Trap(k, m) => f.debug_tuple("Trap").field(k).field(m).finish(),
            Outcome::GuestError(m) => f.debug_tuple("GuestError").field(m).finish(),
            Outcome::HostFault(m) => f.debug_tuple("HostFault").field(m).finish(),
            Outcome::ClientError(m) => f.debug_tuple("ClientError").field(m).finish(),
        }
    }
}

impl Outcome {
    /// The metric label for this outcome.
    pub fn kind(&self) -> Kind {
        match self {
            Outcome::Served(r) | Outcome::Streaming(r, _) => Kind::answered(r.status()),
            Outcome::CutShort(_, why) => why.kind(),
            Outcome::Refused(..) => Kind::Rejected,
            Outcome::LimitHit(Limit::Fuel, _) => Kind::FuelExhausted,
            Outcome::LimitHit(Limit::Deadline, _) => Kind::DeadlineExceeded,
            Outcome::LimitHit(..) | Outcome::Trap(..) => Kind::Trap,
            Outcome::GuestError(_) => Kind::Guest5xx,
            Outcome::HostFault(_) => Kind::HostError,
            Outcome::ClientError(_) => Kind::ClientGone,
        }
    }

    /// The limit this outcome counts under, if any.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Outcome::Refused(l, _) | Outcome::LimitHit(l, _) => Some(*l),
            Outcome::CutShort(_, why) => why.limit(),
            _ => None,
        }
    }

    /// The labels it is counted under.
    pub fn ended(&self) -> Ended {
        Ended {
            kind: self.kind(),
            limit: self.limit(),
            trap: self.trap(),
        }
    }

    /// The trap this outcome counts under, if the guest trapped.
    pub fn trap(&self) -> Option<TrapKind> {
        match self {
            Outcome::LimitHit(limit, _) => Some(match limit {
                Limit::Fuel => TrapKind::Fuel,
                Limit::Deadline => TrapKind::Deadline,
                Limit::Memory => TrapKind::Memory,
                Limit::StackOverflow => TrapKind::Stack,
                _ => TrapKind::Other,
            }),
            Outcome::Trap(kind, _) => Some(*kind),
            Outcome::CutShort(_, why) => why.trap(),
            _ => None,
        }
    }

    /// The response the client gets, and the log line that goes with it.
    /// What the guest brought on itself (a trap, a limit it ran into, a
    /// failed answer) is a warning, charged to the tenant's log rate so a
    /// tenant failing in a loop cannot flood the log; a refusal before the
    /// guest ran is routine load shedding, at debug.
    fn respond(self, tenant: &Scope, id: &RequestId) -> Response<OutBody> {
        let name = tenant.name();
        let id = id.as_str();
        let noted = |message: &str| {
            tenant
                .log_rate()
                .take(LOG_LINE + name.len() + message.len())
        };
        match self {
            Outcome::Served(response) => response,
            // Wrapped by `Request::end`, which counts it when its body ends.
            Outcome::Streaming(response, _) => response,
            Outcome::CutShort(response, why) => {
                let why = format!("{why:?}");
                if noted(&why) {
                    tracing::warn!(tenant = %name, request_id = %id, outcome = why, "the guest failed mid-body; its response is cut short");
                }
                response
            }
            Outcome::Refused(limit, message) => {
                tracing::debug!(tenant = %name, request_id = %id, limit = limit.as_str(), "{message}");
                limit_response(limit, message)
            }
            Outcome::LimitHit(limit, message) => {
                if noted(&message) {
                    tracing::warn!(tenant = %name, request_id = %id, limit = limit.as_str(), "{message}");
                }
                limit_response(limit, message)
            }
            Outcome::Trap(_, message) | Outcome::GuestError(message) => {
                if noted(&message) {
                    tracing::warn!(tenant = %name, request_id = %id, "{message}");
                }
                text(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            Outcome::ClientError(message) => {
                tracing::debug!(tenant = %name, request_id = %id, "{message}");
                text(StatusCode::BAD_REQUEST, message)
            }
            Outcome::HostFault(message) => {
                tracing::error!(tenant = %name, request_id = %id, "request failed in the host: {message}");
                let body = "internal error in the runner; the operator's log has details";
                text(StatusCode::INTERNAL_SERVER_ERROR, body.into())
            }
        }
    }
}

/// What a runner line about a tenant's request costs its log rate beyond
/// the message: timestamp, level, target, field names, the request id.
const LOG_LINE: usize = 128;

/// A limit's response: its status, `x-runner-limit` naming it, and
/// `Retry-After` when waiting may help.
fn limit_response(limit: Limit, message: String) -> Response<OutBody> {
    let mut response = text(limit.status(), message);
    let headers = response.headers_mut();
    headers.insert("x-runner-limit", HeaderValue::from_static(limit.as_str()));
    if limit.retry_later() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// One routed request, from the moment it names its tenant until it ends.
///
/// [`Request::end`] records how it ended. A request dropped without an end
/// (the client hung up, so hyper dropped its future) is recorded as
/// `client_gone` by `Drop`, so the in-flight gauge never leaks.
pub struct Request<'t> {
    tenant: &'t Arc<Scope>,
    started: Instant,
    ended: bool,
    /// A HEAD request: its response carries no body.
    head: bool,
    id: RequestId,
    /// With the access log on, what its line says of the request.
    access: Option<Access>,
}

impl<'t> Request<'t> {
    pub fn start(tenant: &'t Arc<Scope>, id: RequestId) -> Self {
        tenant.metrics().request_started();
        Self {
            tenant,
            started: Instant::now(),
            ended: false,
            head: false,
            id,
            access: None,
        }
    }

    /// Marks a HEAD request, whose response has no body to wait for.
    pub fn head(mut self, head: bool) -> Self {
        self.head = head;
        self
    }

    /// Writes an access line for this request when it ends.
    pub fn access(mut self, access: Option<Access>) -> Self {
        self.access = access;
        self
    }

    /// Records `outcome` in the metrics and the log, and returns the
    /// response the client gets, carrying the request id.
    pub fn end(mut self, outcome: Outcome) -> Response<OutBody> {
        self.ended = true;
        let mut response = self.finish(outcome);
        response
            .headers_mut()
            .insert(request_id::HEADER, self.id.header_value());
        response
    }

    fn finish(&mut self, outcome: Outcome) -> Response<OutBody> {
        let tenant = self.tenant.clone();
        let started = self.started;
        if let Outcome::Streaming(response, ended) = outcome {
            // Counted when the body ends: as the guest ended, or as
            // `client_gone` if the client leaves first.
            let status = response.status();
            let whole = Ended {
                kind: Kind::answered(status),
                limit: None,
                trap: None,
            };
            let declared = self.declared(&response);
            let access = self.access.take().map(|a| (a, self.id.clone()));
            let record = move |ended: Option<Ended>, bytes: u64| {
                let Ended { kind, limit, trap } = ended.unwrap_or(whole);
                if ended.is_some() {
                    tracing::debug!(
                        tenant = %tenant.name(),
                        outcome = kind.as_str(),
                        "the guest's streamed response ended before its body did"
                    );
                }
                let elapsed = started.elapsed();
                tenant
                    .metrics()
                    .request_finished(kind, limit, trap, elapsed);
                if let Some((access, id)) = access {
                    access.log(tenant.name(), &id, status, kind.as_str(), bytes);
                }
            };
            return response
                .map(|body| Guarded::streaming(body, declared, ended, Box::new(record)));
        }
        let kind = outcome.kind();
        self.tenant.metrics().request_finished(
            kind,
            outcome.limit(),
            outcome.trap(),
            started.elapsed(),
        );
        let response = outcome.respond(self.tenant, &self.id);
        let Some(access) = self.access.take() else {
            return response;
        };
        // The line is written once the body is out, with its size.
        let status = response.status();
        let declared = self.declared(&response);
        let id = self.id.clone();
        let log = move |_: Option<Ended>, bytes: u64| {
            access.log(tenant.name(), &id, status, kind.as_str(), bytes);
        };
        response.map(|body| Guarded::observed(body, declared, Box::new(log)))
    }

    /// What hyper writes of `response`'s body before it drops the body as
    /// done.
    fn declared(&self, response: &Response<OutBody>) -> Option<u64> {
        let status = response.status();
        if self.head
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Some(0)
        } else {
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.ended {
            tracing::debug!(
                tenant = %self.tenant.name(),
                request_id = %self.id,
                "the client went away before the response"
            );
            let elapsed = self.started.elapsed();
            self.tenant
                .metrics()
                .request_finished(Kind::ClientGone, None, None, elapsed);
            if let Some(access) = self.access.take() {
                // 499, as nginx logs a client that closed first: no
                // status was sent.
                let status = StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST);
                let gone = Kind::ClientGone.as_str();
                access.log(self.tenant.name(), &self.id, status, gone, 0);
            }
        }
    }
}

/// What an access line says of a request beyond its tenant, end and id.
#[derive(Debug)]
pub struct Access {
    pub method: ::http::Method,
    /// The path as the client sent it, without the query (which may carry
    /// secrets).
    pub path: Box<str>,
    /// When its head was read: the line's duration runs from here to the
    /// response body's end.
    pub received: Instant,
    /// How it found its tenant: `host`, `path`, or `-` (it did not).
    pub routed: &'static str,
}

impl Access {
    /// One line, target `access`, at info.
    pub fn log(&self, tenant: &str, id: &RequestId, status: StatusCode, outcome: &str, bytes: u64) {
        let elapsed = self.received.elapsed();
        // A URI path holds no control characters, and a text line quotes it.
        tracing::info!(
            target: "access",
            %tenant,
            method = %self.method,
            path = &*self.path,
            status = status.as_u16(),
            %outcome,
            routed = %self.routed,
            duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            bytes,
            request_id = %id,
        );
    }
}

/// The error the epoch callback and the wall-clock backstop raise.
#[derive(Debug)]
pub(crate) struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// A request that ran past its deadline.
pub(crate) fn deadline_exceeded(limits: &Limits) -> Outcome {
    classify(&DeadlineExceeded.into(), None, limits)
}

/// Names the limit or trap behind a failed call. Counting is left to the
/// request's end, so each outcome is counted once.
pub(crate) fn classify(
    error: &wasmtime::Error,
    limiter_hit: Option<Limit>,
    limits: &Limits,
) -> Outcome {
    if error.is::<DeadlineExceeded>() {
        return Outcome::LimitHit(
            Limit::Deadline,
            format!(
                "deadline exceeded: the request ran past its {} timeout",
                humantime::format_duration(limits.timeout)
            ),
        );
    }
    let table_full = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ResourceTableError>(),
            Some(ResourceTableError::Full)
        )
    });
    if table_full {
        return Outcome::LimitHit(
            Limit::HostResources,
            format!(
                "host resource limit exceeded: a request may hold at most {} host resources \
                 (headers, bodies, streams) at once",
                limits.max_host_resources
            ),
        );
    }
    let fields_full = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<FieldMapError>(),
            Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
        )
    });
    if fields_full {
        return Outcome::LimitHit(
            Limit::HeaderFields,
            format!(
                "header limit exceeded: one set of header fields may hold at most {} bytes",
                limits.max_header_field_bytes.as_u64()
            ),
        );
    }
    if let Some(pool) = error.downcast_ref::<PoolConcurrencyLimitError>() {
        return Outcome::Refused(
            Limit::InstancePool,
            format!("instance pool exhausted ({pool}); retry later"),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Outcome::LimitHit(
            Limit::Fuel,
            format!(
                "fuel exhausted: the request burned its whole budget of {} fuel units",
                limits.fuel
            ),
        ),
        Some(Trap::StackOverflow) => Outcome::LimitHit(
            Limit::StackOverflow,
            "stack overflow: the guest exhausted its wasm stack".into(),
        ),
        Some(trap) => match limiter_hit {
            // Most guests abort when memory.grow fails; the trap that
            // follows is the limit's doing.
            Some(Limit::Memory) => Outcome::LimitHit(
                Limit::Memory,
                format!(
                    "memory limit exceeded: a linear memory may grow to at most {} bytes",
                    limits.max_memory.as_u64()
                ),
            ),
            Some(Limit::TableElements) => Outcome::LimitHit(
                Limit::TableElements,
                format!(
                    "table limit exceeded: a table may grow to at most {} elements",
                    limits.max_table_elements
                ),
            ),
            _ => {
                let kind = if *trap == Trap::UnreachableCodeReached {
                    TrapKind::Unreachable
                } else {
                    TrapKind::Other
                };
                let what = trap.to_string();
                let what = what.strip_prefix("wasm trap: ").unwrap_or(&what);
                Outcome::Trap(kind, format!("guest trapped: {what}"))
            }
        },
        // Not a trap and not a limit: a host call failed, which is the
        // runner's fault, not the tenant's.
        None => Outcome::HostFault(format!("{error:#}")),
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;

    use super::{DeadlineExceeded, Outcome, Request, RequestId, classify};
    use crate::body::{Failed, text};
    use crate::limits::{Limit, Limits};
    use crate::metrics::{Recorder, TrapKind};

    /// The value of one series in `exposition`, 0 when absent.
    fn series(exposition: &str, name: &str, labels: &str) -> f64 {
        let head = format!("{name}{{{labels}}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(&head))
            .map_or(0.0, |v| v.parse().expect("a number"))
    }

    async fn body(response: http::Response<super::OutBody>) -> String {
        let bytes = response.into_body().collect().await.expect("a body");
        String::from_utf8_lossy(&bytes.to_bytes()).into_owned()
    }

    /// A response whose body is still streaming is counted when the body
    /// ends, under how the guest ended: whole, cut short by a limit, or
    /// left by the client.
    #[tokio::test]
    async fn a_streamed_request_counts_when_its_body_ends() {
        let recorder = Recorder::new().unwrap();
        let tenant = crate::tenant::scope::Scope::for_tests(&recorder);
        let shown = |name: &str, labels: &str| {
            let text = recorder.render(&[], 4, std::iter::empty(), std::iter::empty());
            series(&text, name, &format!("tenant=\"t0\",{labels}"))
        };
        let requests =
            |outcome: &str| shown("runner_requests_total", &format!("outcome=\"{outcome}\""));
        let in_flight = || {
            let text = recorder.render(&[], 4, std::iter::empty(), std::iter::empty());
            series(&text, "runner_requests_in_flight", "tenant=\"t0\"")
        };

        let (guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant, RequestId::generate()).end(Outcome::Streaming(
            text(StatusCode::OK, "whole".into()),
            Failed::Later(ended),
        ));
        assert_eq!((requests("ok"), in_flight()), (0.0, 1.0));
        guest.send(None).unwrap();
        assert_eq!(body(response).await, "whole\n");
        assert_eq!((requests("ok"), in_flight()), (1.0, 0.0));

        let (guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant, RequestId::generate()).end(Outcome::Streaming(
            text(StatusCode::OK, "cut".into()),
            Failed::Later(ended),
        ));
        let deadline = Outcome::LimitHit(Limit::Deadline, "deadline".into());
        guest.send(Some(deadline.ended())).unwrap();
        assert!(response.into_body().collect().await.is_err());
        assert_eq!(requests("deadline_exceeded"), 1.0);
        assert_eq!(shown("runner_limit_hits_total", "limit=\"deadline\""), 1.0);
        assert_eq!(shown("runner_traps_total", "kind=\"deadline\""), 1.0);

        let (_guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant, RequestId::generate()).end(Outcome::Streaming(
            text(StatusCode::OK, "left".into()),
            Failed::Later(ended),
        ));
        drop(response);
        assert_eq!(
            (requests("client_gone"), requests("ok"), in_flight()),
            (1.0, 1.0, 0.0)
        );

        // A WASIp3 body's end is the guest's word: whole at once, while
        // the guest's other tasks go on; a failure sent before it, cut.
        let (_guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant, RequestId::generate()).end(Outcome::Streaming(
            text(StatusCode::OK, "whole".into()),
            Failed::BodyEnds(ended),
        ));
        assert_eq!(body(response).await, "whole\n");
        assert_eq!((requests("ok"), in_flight()), (2.0, 0.0));
        let (guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant, RequestId::generate()).end(Outcome::Streaming(
            text(StatusCode::OK, "cut".into()),
            Failed::BodyEnds(ended),
        ));
        guest.send(Some(deadline.ended())).unwrap();
        assert!(response.into_body().collect().await.is_err());
        assert_eq!(requests("deadline_exceeded"), 2.0);
    }

    #[tokio::test]
    async fn each_outcome_gives_its_response_and_counts_once() {
        let recorder = Recorder::new().unwrap();
        let tenant = crate::tenant::scope::Scope::for_tests(&recorder);
        let cases = [
            (
                Outcome::Served(text(StatusCode::OK, "hi".into())),
                200,
                "hi\n",
            ),
            (
                Outcome::Served(text(StatusCode::NOT_FOUND, "no".into())),
                404,
                "no\n",
            ),
            (
                Outcome::Refused(Limit::TenantConcurrency, "too many".into()),
                429,
                "too many\n",
            ),
            (
                Outcome::LimitHit(Limit::Memory, "memory limit".into()),
                500,
                "memory limit\n",
            ),
            (
                Outcome::Trap(TrapKind::Unreachable, "guest trapped".into()),
                500,
                "guest trapped\n",
            ),
            (
                Outcome::GuestError("no response".into()),
                500,
                "no response\n",
            ),
            (
                Outcome::HostFault("the table is on fire".into()),
                500,
                "internal error in the runner; the operator's log has details\n",
            ),
        ];
        for (outcome, status, text) in cases {
            let id = RequestId::generate();
            let response = Request::start(&tenant, id.clone()).end(outcome);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(response.headers()["x-request-id"], id.as_str());
            assert_eq!(body(response).await, text);
        }
        drop(Request::start(&tenant, RequestId::generate()));
        let shown = recorder.render(&[], 4, std::iter::empty(), std::iter::empty());
        let requests = |outcome: &str| {
            series(
                &shown,
                "runner_requests_total",
                &format!("tenant=\"t0\",outcome=\"{outcome}\""),
            )
        };
        for (outcome, count) in [
            ("ok", 1.0),
            ("guest_4xx", 1.0),
            ("rejected", 1.0),
            ("trap", 2.0),
            ("guest_5xx", 1.0),
            ("host_error", 1.0),
            ("client_gone", 1.0),
            ("fuel_exhausted", 0.0),
            ("deadline_exceeded", 0.0),
        ] {
            assert_eq!(requests(outcome), count, "{outcome}");
        }
        let traps = |kind: &str| {
            series(
                &shown,
                "runner_traps_total",
                &format!("tenant=\"t0\",kind=\"{kind}\""),
            )
        };
        // The host fault is the runner's, so it is no trap of the tenant's.
        assert_eq!(
            (traps("memory"), traps("unreachable"), traps("other")),
            (1.0, 1.0, 0.0)
        );
        let limits = |limit: &str| {
            series(
                &shown,
                "runner_limit_hits_total",
                &format!("tenant=\"t0\",limit=\"{limit}\""),
            )
        };
        assert_eq!((limits("tenant_concurrency"), limits("memory")), (1.0, 1.0));
        assert_eq!(
            series(&shown, "runner_requests_in_flight", "tenant=\"t0\""),
            0.0
        );
    }

    #[test]
    fn errors_that_are_not_traps_are_host_faults() {
        let limits = Limits::default();
        let fault = wasmtime::Error::msg("resource table broke");
        assert!(matches!(
            classify(&fault, None, &limits),
            Outcome::HostFault(m) if m == "resource table broke"
        ));
        let trap = wasmtime::Error::from(wasmtime::Trap::UnreachableCodeReached);
        assert!(matches!(classify(&trap, None, &limits), Outcome::Trap(..)));
        assert!(matches!(
            classify(&trap, Some(Limit::Memory), &limits),
            Outcome::LimitHit(Limit::Memory, _)
        ));
        let late = wasmtime::Error::from(DeadlineExceeded);
        assert!(matches!(
            classify(&late, None, &limits),
            Outcome::LimitHit(Limit::Deadline, _)
        ));
    }
}
