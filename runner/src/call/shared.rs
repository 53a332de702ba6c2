//! WASIp3 instances that serve several requests at once, for tenants with
//! `max-instance-concurrency` above 1.
//!
//! Such an instance is a worker: a task that owns the instance's store and
//! runs its concurrent event loop (`Store::run_concurrent`), starting each
//! request it is handed as one more guest task beside those already
//! running, as `wasmtime serve` does with WASIp3 components. A tenant's
//! request goes to the first of its workers with room; when none has any, a
//! new instance is made for it. An instance belongs to one tenant (one
//! version of it) for its life.
//!
//! What the per-request limits mean when requests share an instance:
//! - fuel: each request adds its whole budget to the instance's tank when it
//!   starts, so the tank always holds what the requests in it brought, less
//!   what they burned. One request may burn what another brought; an
//!   instance that runs dry traps, and every request in it fails with the
//!   fuel limit.
//! - deadline: each request's `timeout` ends that request alone (504); the
//!   instance takes no more requests after one of its requests expired, and
//!   is dropped once the others are answered. A guest still computing past
//!   the latest deadline of the requests in it is trapped by the epoch
//!   callback, which ends the instance and every request in it.
//! - memory, tables, host resources and the log budget are the instance's,
//!   shared by its requests (each request that starts refills the log
//!   budget to `max-log-bytes`).
//! - a trap ends the instance and fails every request in it that has no
//!   response yet, with the trap's error.
//!
//! A request counts against its instance's concurrency until its response
//! head comes; its body may still be streaming after that, as with
//! `wasmtime serve`. A worker is dropped after `max-instance-reuse`
//! requests, after `instance-idle-timeout` with none, after one of its
//! requests expired, after a trap, or when its tenant is replaced or
//! removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use wasmtime::component::Accessor;
use wasmtime::{AsContextMut as _, Store};
use wasmtime_wasi_http::p3::bindings::Service;

use super::handoff::handle_p3;
use crate::host::{DenyOutgoing, Host};
use crate::outcome::{self, Outcome};
use crate::tenant::Tenant;
use crate::tenant::workers::{Job, Reply, Taken, Worker};

/// Takes `store` and `service`, a fresh instance of `tenant`'s component,
/// as a new worker that serves `job` first, and starts it. `room`, its
/// place among the tenant's instances, is held until it ends.
pub(super) fn start(
    tenant: Arc<Tenant>,
    store: Store<Host>,
    service: Service,
    job: Job,
    room: OwnedSemaphorePermit,
) -> Taken {
    let (worker, queue) = tenant.workers().add(job);
    let run = run(tenant.clone(), worker.clone(), store, service, queue);
    let run = async move {
        run.await;
        drop(room);
    };
    tokio::spawn(super::timed::Timed::new(tenant, run));
    Taken(worker)
}

/// Requests accepted by a worker that have no answer yet, by number: the
/// worker answers them all if its instance fails.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// The worker's task: runs the instance's event loop until the worker is
/// done, then answers whatever it could not serve with why.
async fn run(
    tenant: Arc<Tenant>,
    worker: Arc<Worker>,
    mut store: Store<Host>,
    service: Service,
    mut queue: mpsc::UnboundedReceiver<Job>,
) {
    let limits = tenant.limits().clone();
    let max_memory = crate::limits::bytes(limits.max_reused_memory);
    let pending: Pending = Arc::default();
    // Requests it took, and the fuel they brought.
    let served = AtomicU64::new(0);
    let budget = AtomicU64::new(0);
    let result = {
        let (pending, served, budget) = (&pending, &served, &budget);
        let (tenant, worker, service) = (&tenant, &worker, &service);
        let queue = &mut queue;
        store
            .run_concurrent(async |accessor| -> wasmtime::Result<()> {
                let mut running = FuturesUnordered::new();
                let mut open = true;
                let accept = |job: Job, running: &mut FuturesUnordered<_>| {
                    let id = served.fetch_add(1, Ordering::Relaxed) + 1;
                    budget.fetch_add(limits.fuel, Ordering::Relaxed);
                    if id > 1 {
                        tenant.metrics().instance_reused();
                    }
                    let place = Place {
                        id,
                        pending: pending.clone(),
                        worker,
                        max_memory,
                    };
                    running.push(serve(accessor, service, job, place, tenant));
                    id
                };
                loop {
                    if !open {
                        // Jobs sent before the worker left its tenant's
                        // list are served; no more can come.
                        while let Ok(job) = queue.try_recv() {
                            accept(job, &mut running);
                        }
                        if running.is_empty() {
                            break;
                        }
                    }
                    let idle = tokio::time::sleep(limits.instance_idle_timeout);
                    tokio::select! {
                        Some(job) = queue.recv(), if open => {
                            if accept(job, &mut running) >= limits.max_instance_reuse {
                                open = false;
                                tenant.workers().remove(worker);
                            }
                        }
                        Some(done) = running.next() => {
                            worker.load.fetch_sub(1, Ordering::AcqRel);
                            if done? != Served::Answered && open {
                                // A request expired, or the instance grew
                                // past max-reused-memory: no more join it.
                                open = false;
                                tenant.workers().remove(worker);
                            }
                        }
                        () = worker.closed.notified(), if open => open = false,
                        () = idle, if open && running.is_empty() => {
                            open = false;
                            tenant.workers().remove(worker);
                        }
                    }
                }
                // Guest tasks still running (one that outlived its
                // request's deadline, say) end with the instance, at the
                // latest deadline its requests had.
                let last = accessor.with(|mut store| store.get().deadline);
                let _ = tokio::time::timeout_at(
                    last.into(),
                    std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx)),
                )
                .await;
                Ok(())
            })
            .await
            .and_then(|inner| inner)
    };
    tenant.workers().remove(&worker);
    let fuel = store.get_fuel().unwrap_or(0);
    tenant
        .metrics()
        .fuel_consumed(budget.into_inner().saturating_sub(fuel));
    metrics::histogram!(crate::metrics::INSTANCE_REQUESTS).record(served.into_inner() as f64);
    let failure = result.err();
    let hit = store.data().limiter.hit;
    let mut unanswered: Vec<_> = pending.lock().drain().map(|(_, reply)| reply).collect();
    // Jobs that arrived as it ended.
    queue.close();
    while let Ok(job) = queue.try_recv() {
        unanswered.push(job.reply);
    }
    for reply in unanswered {
        let outcome = match &failure {
            Some(error) => outcome::classify(error, hit, tenant.limits()),
            None => Outcome::GuestError("the guest ended without sending a response".into()),
        };
        let _ = reply.send(Reply::Failed(outcome));
    }
}

/// Turns of the instance's event loop between a response head and its
/// reply to the caller.
const SETTLE_TURNS: usize = 2;

/// How one request in a shared instance ended, when it did not fail it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Answered,
    /// It ran past its deadline.
    Expired,
    /// Answered, and the instance's memory is now past
    /// `max-reused-memory`.
    Grown,
}

/// A request's place in a shared instance.
struct Place<'a> {
    id: u64,
    pending: Pending,
    worker: &'a Arc<Worker>,
    /// The tenant's `max-reused-memory`, in bytes.
    max_memory: usize,
}

/// Starts one request in the instance and answers it with its response
/// head, or its deadline.
async fn serve(
    accessor: &Accessor<Host>,
    service: &Service,
    job: Job,
    place: Place<'_>,
    tenant: &Tenant,
) -> wasmtime::Result<Served> {
    let Place {
        id,
        pending,
        worker,
        max_memory,
    } = place;
    let fuel = tenant.limits().fuel;
    let Job {
        request,
        deadline,
        reply,
    } = job;
    pending.lock().insert(id, reply);
    // Forbidden headers are stripped as the store's own hooks would: they
    // are these.
    // Its scheme was set when the job was made (`call_shared`).
    let (request, io) = wasmtime_wasi_http::p3::Request::from_http(&mut DenyOutgoing, request);
    accessor.with(|mut store| -> wasmtime::Result<_> {
        let mut context = store.as_context_mut();
        let fuel = context.get_fuel()?.saturating_add(fuel);
        context.set_fuel(fuel)?;
        store.get().join_request(deadline);
        Ok(())
    })?;
    let call = handle_p3(accessor, service, request, io);
    let head = match tokio::time::timeout_at(deadline.into(), call).await {
        Ok(head) => head?,
        Err(_elapsed) => {
            // The caller gives up at the same deadline; whichever sees it
            // first answers.
            if let Some(reply) = pending.lock().remove(&id) {
                let _ = reply.send(Reply::Failed(outcome::deadline_exceeded(tenant.limits())));
            }
            return Ok(Served::Expired);
        }
    };
    // The guest usually writes its body from a task of its own right after
    // it returns the response: a few turns of the event loop let it, so the
    // caller gets a response whose body is already there and writes it
    // whole, head and body in one system call.
    for _ in 0..SETTLE_TURNS {
        tokio::task::yield_now().await;
    }
    // Grown past its limit: it leaves the tenant's list before the
    // reply goes out, so the caller's next request cannot join it.
    let grown = accessor.with(|mut store| store.get().limiter.memory) > max_memory;
    if grown && tenant.workers().remove(worker) {
        tenant.metrics().instance_recycled();
    }
    if let Some(reply) = pending.lock().remove(&id) {
        let _ = reply.send(Reply::Head(head));
    }
    Ok(if grown {
        Served::Grown
    } else {
        Served::Answered
    })
}
