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
use tokio::sync::oneshot;
use wasmtime::component::ResourceTableError;
use wasmtime::{PoolConcurrencyLimitError, Trap};
use wasmtime_wasi_http::FieldMapError;

use crate::body::{Guarded, OutBody, text};
use crate::limits::{Limit, Limits};
use crate::metrics::{Ended, Kind, TrapKind};
use crate::tenant::scope::Scope;

/// How a request ended.
pub enum Outcome {
    /// The guest answered; its response, whole.
    Served(Response<OutBody>),
    /// The guest answered and is still writing its body; how it ends comes
    /// on the receiver (`None`: cleanly) when the guest does. The request
    /// ends, and is counted, when its body does.
    Streaming(Response<OutBody>, oneshot::Receiver<Option<Ended>>),
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
    fn respond(self, tenant: &Scope) -> Response<OutBody> {
        let name = tenant.name();
        match self {
            Outcome::Served(response) => response,
            // Wrapped by `Request::end`, which counts it when its body ends.
            Outcome::Streaming(response, _) => response,
            Outcome::CutShort(response, why) => {
                tracing::debug!(tenant = name, outcome = ?why, "the guest failed mid-body; its response is cut short");
                response
            }
            Outcome::Refused(limit, message) | Outcome::LimitHit(limit, message) => {
                tracing::debug!(tenant = name, limit = limit.as_str(), "{message}");
                limit_response(limit, message)
            }
            Outcome::Trap(_, message) | Outcome::GuestError(message) => {
                tracing::debug!(tenant = name, "{message}");
                text(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
            Outcome::ClientError(message) => {
                tracing::debug!(tenant = name, "{message}");
                text(StatusCode::BAD_REQUEST, message)
            }
            Outcome::HostFault(message) => {
                tracing::error!(tenant = name, "request failed in the host: {message}");
                let body = "internal error in the runner; the operator's log has details";
                text(StatusCode::INTERNAL_SERVER_ERROR, body.into())
            }
        }
    }
}

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
}

impl<'t> Request<'t> {
    pub fn start(tenant: &'t Arc<Scope>) -> Self {
        tenant.metrics().request_started();
        Self {
            tenant,
            started: Instant::now(),
            ended: false,
            head: false,
        }
    }

    /// Marks a HEAD request, whose response has no body to wait for.
    pub fn head(mut self, head: bool) -> Self {
        self.head = head;
        self
    }

    /// Records `outcome` in the metrics and the log, and returns the
    /// response the client gets.
    pub fn end(mut self, outcome: Outcome) -> Response<OutBody> {
        self.ended = true;
        if let Outcome::Streaming(response, ended) = outcome {
            // Counted when the body ends: as the guest ended, or as
            // `client_gone` if the client leaves first.
            let tenant = self.tenant.clone();
            let started = self.started;
            let status = response.status();
            let whole = Ended {
                kind: Kind::answered(status),
                limit: None,
                trap: None,
            };
            // What hyper writes before it drops the body as done.
            let declared = if self.head
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
            };
            let record = move |ended: Option<Ended>| {
                let Ended { kind, limit, trap } = ended.unwrap_or(whole);
                if ended.is_some() {
                    tracing::debug!(
                        tenant = tenant.name(),
                        outcome = kind.as_str(),
                        "the guest's streamed response ended before its body did"
                    );
                }
                tenant
                    .metrics()
                    .request_finished(kind, limit, trap, started.elapsed());
            };
            return response
                .map(|body| Guarded::streaming(body, declared, ended, Box::new(record)));
        }
        self.tenant.metrics().request_finished(
            outcome.kind(),
            outcome.limit(),
            outcome.trap(),
            self.started.elapsed(),
        );
        outcome.respond(self.tenant)
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if !self.ended {
            tracing::debug!(
                tenant = self.tenant.name(),
                "the client went away before the response"
            );
            self.tenant.metrics().request_finished(
                Kind::ClientGone,
                None,
                None,
                self.started.elapsed(),
            );
        }
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

    use super::{DeadlineExceeded, Outcome, Request, classify};
    use crate::body::text;
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
            let text = recorder.render(&[], 4, std::iter::empty());
            series(&text, name, &format!("tenant=\"t0\",{labels}"))
        };
        let requests =
            |outcome: &str| shown("runner_requests_total", &format!("outcome=\"{outcome}\""));
        let in_flight = || {
            let text = recorder.render(&[], 4, std::iter::empty());
            series(&text, "runner_requests_in_flight", "tenant=\"t0\"")
        };

        let (guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant).end(Outcome::Streaming(
            text(StatusCode::OK, "whole".into()),
            ended,
        ));
        assert_eq!((requests("ok"), in_flight()), (0.0, 1.0));
        guest.send(None).unwrap();
        assert_eq!(body(response).await, "whole\n");
        assert_eq!((requests("ok"), in_flight()), (1.0, 0.0));

        let (guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant).end(Outcome::Streaming(
            text(StatusCode::OK, "cut".into()),
            ended,
        ));
        let deadline = Outcome::LimitHit(Limit::Deadline, "deadline".into());
        guest.send(Some(deadline.ended())).unwrap();
        assert!(response.into_body().collect().await.is_err());
        assert_eq!(requests("deadline_exceeded"), 1.0);
        assert_eq!(shown("runner_limit_hits_total", "limit=\"deadline\""), 1.0);
        assert_eq!(shown("runner_traps_total", "kind=\"deadline\""), 1.0);

        let (_guest, ended) = tokio::sync::oneshot::channel();
        let response = Request::start(&tenant).end(Outcome::Streaming(
            text(StatusCode::OK, "left".into()),
            ended,
        ));
        drop(response);
        assert_eq!(
            (requests("client_gone"), requests("ok"), in_flight()),
            (1.0, 1.0, 0.0)
        );
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
            let response = Request::start(&tenant).end(outcome);
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(body(response).await, text);
        }
        drop(Request::start(&tenant));
        let shown = recorder.render(&[], 4, std::iter::empty());
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
