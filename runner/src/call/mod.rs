//! Running one request of a tenant in an instance of its component.
//!
//! Each request gets a fresh `Store` and instance from its tenant's
//! pre-instantiated component, or, where the tenant reuses instances, one
//! kept from its own last clean request (`engine::kept`), or, for
//! a WASIp3 tenant with `max-instance-concurrency`, a place in one of its
//! instances that serve several requests at once (`shared`). A store is
//! dropped after a trap or a limit, so nothing carries over from a failed
//! request, and never serves another tenant.
//!
//! - `handoff`: the request into the guest and its response head out,
//!   WASIp2 and WASIp3.
//! - `shared`: WASIp3 instances that serve several requests at once, and
//!   what each limit means there.
//! - `timed`: the time spent running a tenant's guest, counted.

mod handoff;
mod shared;
mod timed;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt as _;
use tokio::sync::oneshot;
use wasmtime::error::Context as _;
use wasmtime::{PoolConcurrencyLimitError, Store, UpdateDeadline};

use self::handoff::{serve_p2, serve_p3};
use self::timed::Timed;
use crate::admission::Admission;
use crate::body::{Failed, Guarded, Head, OutBody};
use crate::engine::Runtime;
use crate::engine::kept::{Instance, Registry};
use crate::host::{Handler, Host};
use crate::limits::Limit;
use crate::outcome::{DeadlineExceeded, Outcome, classify, deadline_exceeded};
use crate::request_id::RequestId;
use crate::tenant::Tenant;
use crate::tenant::workers::{Job, Reply};

/// A fresh store for `tenant`: its limits, and an epoch callback that
/// yields every tick and traps at the current request's deadline.
fn store(runtime: &Runtime, tenant: &Tenant) -> Store<Host> {
    let mut store = Store::new(tenant.pre().engine(), Host::new(tenant.scope().clone()));
    store.limiter(|host| &mut host.limiter);
    let yields = runtime.metrics().epoch_yields.clone();
    // Set once per store and reading the deadline from the store's data,
    // so a reused instance needs no new callback per request.
    store.epoch_deadline_callback(move |store| {
        if Instant::now() >= store.data().deadline {
            return Err(DeadlineExceeded.into());
        }
        yields.increment(1);
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Drops `tenant`'s kept instances and keeps no more: it was replaced or
/// removed.
pub fn forget(runtime: &Runtime, tenant: &Tenant) {
    for part in tenant.components() {
        runtime.kept().forget(part.idle());
        part.workers().close();
    }
}

/// Instantiates the tenant's component once, under its own limits, so a
/// component that cannot fit them (too large an initial memory, too many
/// instances) fails at start-up rather than on every request.
pub async fn preflight(runtime: &Runtime, tenant: &Tenant) -> wasmtime::Result<()> {
    let mut store = store(runtime, tenant);
    begin(
        &mut store,
        tenant,
        Instant::now() + tenant.limits().timeout,
        None,
    )?;
    tenant
        .pre()
        .instantiate_async(&mut store)
        .await
        .context("instantiating it under the tenant's limits")?;
    Ok(())
}

/// An instance for one request of `tenant`, begun with its fuel and
/// `deadline`: one the tenant kept from an earlier request where it
/// reuses instances, else a fresh one. A full pool first evicts kept
/// instances, any tenant's, before it refuses.
async fn acquire(
    runtime: &Runtime,
    tenant: &Tenant,
    deadline: Instant,
    id: Option<RequestId>,
) -> wasmtime::Result<Instance> {
    if tenant.limits().max_instance_reuse > 1
        && let Some(mut kept) = runtime.kept().take(tenant.idle())
    {
        kept.served += 1;
        begin(&mut kept.store, tenant, deadline, id)?;
        tenant.metrics().instance_reused();
        return Ok(kept);
    }
    fresh(runtime, tenant, deadline, id).await
}

/// A new instance of `tenant`'s component, begun with its fuel and
/// `deadline`. A full pool first evicts kept instances, any tenant's,
/// before it refuses.
async fn fresh(
    runtime: &Runtime,
    tenant: &Tenant,
    deadline: Instant,
    id: Option<RequestId>,
) -> wasmtime::Result<Instance> {
    loop {
        let mut store = store(runtime, tenant);
        begin(&mut store, tenant, deadline, id.clone())?;
        let started = Instant::now();
        match tenant.pre().instantiate_async(&mut store).await {
            Ok(guest) => {
                runtime.metrics().instantiation.record(started.elapsed());
                tenant.metrics().instance_created();
                return Ok(Instance {
                    store,
                    guest,
                    served: 1,
                });
            }
            Err(e)
                if e.is::<PoolConcurrencyLimitError>()
                    && runtime.kept().evict_one(tenant.pre().is_p3()) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs one request of `tenant` in an instance of its component.
///
/// Returns once the guest has sent its response head; the guest may
/// still be streaming the body. `admission` is held until the guest's
/// instance is dropped or kept, so it bounds instances in use, not just
/// heads. `id` goes on the guest's log lines.
pub async fn run<B>(
    runtime: &Arc<Runtime>,
    tenant: &Arc<Tenant>,
    request: http::Request<B>,
    admission: Admission,
    id: Option<RequestId>,
) -> Outcome
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    if tenant.limits().max_instance_concurrency > 1 && tenant.pre().is_p3() {
        return call_shared(runtime, tenant, request, admission).await;
    }
    let deadline = Instant::now() + tenant.limits().timeout;
    let (sender, mut head) = oneshot::channel();
    let for_runtime = runtime.clone();
    let for_guest = tenant.clone();
    let mut guest = Timed::new(tenant.clone(), async move {
        let (runtime, tenant) = (for_runtime, for_guest);
        let mut instance = None;
        let run = async {
            let instance = instance.insert(acquire(&runtime, &tenant, deadline, id).await?);
            match &instance.guest {
                Handler::P2(guest) => serve_p2(&mut instance.store, guest, request, sender).await,
                Handler::P3(service) => {
                    serve_p3(&mut instance.store, service, request, sender).await
                }
            }
        };
        // The epoch callback ends a guest that computes past its
        // deadline; this ends one blocked in a host call.
        let result = match (Backstop {
            inner: std::pin::pin!(run),
            deadline,
            timer: None,
            waited: 0,
        })
        .await
        {
            Some(result) => result,
            None => Err(DeadlineExceeded.into()),
        };
        let hit = instance.as_ref().and_then(|i| i.store.data().limiter.hit);
        let failure = result.err().map(|e| classify(&e, hit, tenant.limits()));
        if let Some(instance) = &mut instance {
            // A line the guest left unfinished is its request's last.
            instance.store.data_mut().end_request();
            let fuel = instance.store.get_fuel().unwrap_or(0);
            tenant
                .metrics()
                .fuel_consumed(tenant.limits().fuel.saturating_sub(fuel));
        }
        (failure, instance)
    });

    // The guest runs in this task: most guests finish within one poll,
    // and then no task is spawned and no other thread is woken. One
    // that is still running when its response head arrives (streaming a
    // body, say) continues in a task of its own.
    let registry = runtime.kept();
    // How a request ends once its guest has: the instance kept or
    // dropped, and the response whole or cut short.
    let finished = |(failure, instance): (Option<Outcome>, Option<Instance>),
                    head: Option<Head>,
                    admission: Admission| {
        let clean = failure.is_none() && matches!(head, Some(Ok(_)));
        if let Some(instance) = instance {
            if failure.is_none() && head.is_none() && instance.served > 1 {
                registry.refuse(tenant.idle());
            }
            release(registry, tenant, instance, clean);
        }
        drop(admission);
        match (head, failure) {
            // Done and whole: nothing to guard, and no box per request.
            (Some(Ok(response)), None) => Outcome::Served(response),
            // It answered, then failed before its body was done.
            (Some(Ok(response)), Some(failure)) => {
                Outcome::CutShort(guarded(response, Failed::Known(true)), Box::new(failure))
            }
            (Some(Err(code)), _) => guest_error(&code),
            (None, failure) => failure.unwrap_or_else(no_response),
        }
    };
    tokio::select! {
        biased;
        ended = &mut guest => finished(ended, head.try_recv().ok(), admission),
        sent = &mut head => {
            // A guest that answers before it has written its body (the
            // usual WASIp3 shape: a task of the guest's writes it, into
            // a channel that holds the first chunk) is often done a few
            // polls later; then the response goes out whole, in one
            // write, and no task is spawned.
            for _ in 0..EAGER_POLLS {
                if let Some(ended) = (&mut guest).now_or_never() {
                    return finished(ended, sent.ok(), admission);
                }
            }
            let answered = matches!(sent, Ok(Ok(_)));
            let (ended, ended_later) = oneshot::channel();
            let tenant = tenant.clone();
            let registry = registry.clone();
            let p3 = tenant.pre().is_p3();
            tokio::spawn(async move {
                let (failure, instance) = guest.await;
                // Told before the instance goes: a WASIp3 body that ends
                // because its instance was dropped must find the failure
                // (`Failed::BodyEnds`).
                let _ = ended.send(failure.as_ref().map(Outcome::ended));
                if let Some(instance) = instance {
                    release(&registry, &tenant, instance, answered && failure.is_none());
                }
                drop(admission);
            });
            // A WASIp3 guest's finished body goes out whole when it is
            // finished, whatever tasks the guest left running (they are
            // bounded by the deadline all the same).
            let failed = if p3 {
                Failed::BodyEnds(ended_later)
            } else {
                Failed::Later(ended_later)
            };
            match sent {
                Ok(Ok(response)) => Outcome::Streaming(response, failed),
                Ok(Err(code)) => guest_error(&code),
                // Unreachable while the guest's store, which holds the
                // sender, is alive; handled all the same.
                Err(_) => no_response(),
            }
        }
    }
}

/// Ends a request's use of `instance` (`Registry::release`), counting it
/// in the tenant's metrics when it was dropped for its grown memory.
fn release(registry: &Registry, tenant: &Tenant, instance: Instance, clean: bool) {
    if registry.release(tenant.idle(), instance, clean) {
        tenant.metrics().instance_recycled();
    }
}

/// Runs one request of `tenant` in one of its WASIp3 instances that
/// serve several requests at once (`shared`), making a new
/// one when none has room. `admission` is held until the response head.
async fn call_shared<B>(
    runtime: &Runtime,
    tenant: &Arc<Tenant>,
    request: http::Request<B>,
    admission: Admission,
) -> Outcome
where
    B: http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error> + Send + 'static,
{
    use http_body_util::BodyExt as _;

    let limits = tenant.limits();
    let deadline = Instant::now() + limits.timeout;
    // Here, so a request the guest cannot be given fails alone, not the
    // shared instance it would have joined.
    let request = match handoff::with_scheme(request) {
        Ok(request) => request,
        Err(e) => return classify(&e, None, limits),
    };
    let (reply, answer) = oneshot::channel();
    let job = Job {
        request: request.map(|body| body.boxed_unsync()),
        deadline,
        reply,
    };
    let taken = match tenant.workers().offer(job, limits.max_instance_concurrency) {
        Ok(taken) => taken,
        Err(job) => {
            let Some(room) = tenant.workers().room() else {
                return Outcome::Refused(
                    Limit::TenantConcurrency,
                    format!(
                        "too many requests: tenant {} already has {} instances running (its \
                         max-tenant-in-flight)",
                        tenant.name(),
                        limits.max_tenant_in_flight
                    ),
                );
            };
            match fresh(runtime, tenant, deadline, None).await {
                Ok(Instance {
                    mut store,
                    guest: Handler::P3(service),
                    ..
                }) => {
                    // The worker adds each request's budget as it starts.
                    let _ = store.set_fuel(0);
                    shared::start(tenant.clone(), store, service, *job, room)
                }
                Ok(_) => return Outcome::HostFault("a WASIp2 instance of a WASIp3 tenant".into()),
                Err(e) => return classify(&e, None, tenant.limits()),
            }
        }
    };
    let outcome = match tokio::time::timeout_at(deadline.into(), answer).await {
        // Its body goes on in an instance that outlives the request: it
        // ends at the request's deadline, whole only if the guest ended it.
        Ok(Ok(Reply::Head(Ok(response)))) => {
            let (parts, body) = response.into_parts();
            let past = deadline_exceeded(limits).ended();
            let (body, ended) = crate::body::UntilDeadline::wrap(body, deadline, past);
            Outcome::Streaming(
                http::Response::from_parts(parts, body),
                Failed::Later(ended),
            )
        }
        Ok(Ok(Reply::Head(Err(code)))) => guest_error(&code),
        Ok(Ok(Reply::Failed(outcome))) => outcome,
        Ok(Err(_dropped)) => no_response(),
        Err(_elapsed) => {
            tenant.workers().expired(&taken);
            deadline_exceeded(tenant.limits())
        }
    };
    drop(admission);
    outcome
}

/// Polls of a guest that has sent its response head, before it is left to
/// finish in a task of its own.
const EAGER_POLLS: usize = 4;

/// `inner` until `deadline` (`None` past it), with the timer armed only
/// once `inner` has kept waiting: most guests finish within a few polls,
/// and a timer armed per request costs a wake-up of the runtime's driver
/// (a system call) each time. Until then it asks to be polled again at
/// once, which is cheap.
struct Backstop<F> {
    inner: F,
    deadline: Instant,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    waited: usize,
}

/// Pending polls of a guest before its deadline timer is armed: past the
/// eager polls after its response head, so a guest that finishes within
/// them never arms one.
const UNTIMED_POLLS: usize = EAGER_POLLS + 2;

impl<F: Future + Unpin> Future for Backstop<F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = &mut *self;
        if let Poll::Ready(done) = std::pin::Pin::new(&mut this.inner).poll(cx) {
            return Poll::Ready(Some(done));
        }
        if this.timer.is_none() {
            if this.waited < UNTIMED_POLLS && Instant::now() < this.deadline {
                this.waited += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.timer = Some(Box::pin(tokio::time::sleep_until(this.deadline.into())));
        }
        match this.timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }
}

/// Starts a request in `store`: the host's per-request state, a whole fuel
/// budget, and the first epoch check one tick away.
fn begin(
    store: &mut Store<Host>,
    tenant: &Tenant,
    deadline: Instant,
    id: Option<RequestId>,
) -> wasmtime::Result<()> {
    store.data_mut().begin_request(deadline, id);
    store.set_fuel(tenant.limits().fuel)?;
    store.set_epoch_deadline(1);
    Ok(())
}

/// The guest's response with its body guarded against looking whole when
/// the guest failed mid-body.
fn guarded(response: http::Response<OutBody>, failed: Failed) -> http::Response<OutBody> {
    response.map(|body| Guarded::wrap(body, failed))
}

fn guest_error(code: &str) -> Outcome {
    Outcome::GuestError(format!("the guest failed the request: {code}"))
}

fn no_response() -> Outcome {
    Outcome::GuestError("the guest ended without sending a response".into())
}
