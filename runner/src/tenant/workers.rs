//! A tenant's WASIp3 instances that serve several of its requests at once
//! (with `max-instance-concurrency` above 1): the list of them and the jobs
//! they are handed. What runs in them is [`crate::call`]'s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use parking_lot::Mutex;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::outcome::Outcome;

/// A request body as a worker takes it, whatever the caller's body type.
pub type JobBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// One request handed to a worker.
pub struct Job {
    pub request: http::Request<JobBody>,
    pub deadline: Instant,
    pub reply: oneshot::Sender<Reply>,
}

/// What a worker answers a request with.
pub enum Reply {
    /// The guest's response head, or the error code it answered instead.
    Head(crate::body::Head),
    /// The request failed before its response: a limit, a trap, the
    /// instance ending.
    Failed(Outcome),
}

/// One tenant's workers.
pub struct Workers {
    list: Mutex<Vec<Arc<Worker>>>,
    /// One per instance alive, listed or not: an instance that takes no
    /// more requests (past `max-instance-reuse`, say) keeps its pool slot
    /// until its guest's tasks end, so the tenant's share of the pool is
    /// bounded here, by its `max-tenant-in-flight`, not by its requests.
    /// Made with the first such instance: most tenants never have one.
    instances: std::sync::OnceLock<Arc<Semaphore>>,
    max: usize,
}

impl Workers {
    /// Workers of a tenant that may have `max` instances alive at once.
    pub fn new(max: usize) -> Self {
        Self {
            list: Mutex::default(),
            instances: std::sync::OnceLock::new(),
            max,
        }
    }

    fn instances(&self) -> &Arc<Semaphore> {
        self.instances
            .get_or_init(|| Arc::new(Semaphore::new(self.max)))
    }

    /// Returns once every instance the tenant had has ended, holding the
    /// places so no new one starts.
    pub async fn ended(&self) {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        let _ = self.instances().acquire_many(all).await;
    }

    /// A place for one more instance, held for its life; `None` when the
    /// tenant has as many as it may.
    pub fn room(&self) -> Option<OwnedSemaphorePermit> {
        self.instances().clone().try_acquire_owned().ok()
    }

    /// Hands `job` to a worker with room (fewer than `max` requests
    /// waiting for their response), and says which; gives the job back
    /// when none has any.
    pub fn offer(&self, job: Job, max: usize) -> Result<Taken, Box<Job>> {
        let list = self.list.lock();
        let Some(worker) = list.iter().find(|w| {
            w.load
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then(|| n + 1)
                })
                .is_ok()
        }) else {
            return Err(Box::new(job));
        };
        // The worker leaves the list before it stops taking jobs, and the
        // list is locked here, so the send cannot miss it.
        match worker.jobs.send(job) {
            Ok(()) => Ok(Taken(worker.clone())),
            Err(refused) => Err(Box::new(refused.0)),
        }
    }

    /// Makes a worker whose first job is `job`, lists it, and gives back
    /// the queue its task takes jobs from.
    pub fn add(&self, job: Job) -> (Arc<Worker>, mpsc::UnboundedReceiver<Job>) {
        let (jobs, queue) = mpsc::unbounded_channel();
        let worker = Arc::new(Worker {
            jobs,
            load: AtomicUsize::new(1),
            closed: Notify::new(),
        });
        worker
            .jobs
            .send(job)
            .expect("the receiver is alive: it is returned to the caller");
        self.list.lock().push(worker.clone());
        (worker, queue)
    }

    /// Takes the worker that has `job`'s request off the list: the request
    /// expired, and no more requests join an instance after that. The
    /// worker closes itself when it sees the expiry, but the caller sees it
    /// at the same instant and may send its next request first.
    pub fn expired(&self, taken: &Taken) {
        self.remove(&taken.0);
    }

    /// Takes `worker` off the list, so it gets no more jobs; false if it
    /// was not on it.
    pub fn remove(&self, worker: &Arc<Worker>) -> bool {
        let mut list = self.list.lock();
        let listed = list.len();
        list.retain(|w| !Arc::ptr_eq(w, worker));
        list.len() < listed
    }

    /// Closes every worker: the tenant was replaced or removed. Requests
    /// already in them finish.
    pub fn close(&self) {
        for worker in self.list.lock().drain(..) {
            worker.closed.notify_one();
        }
    }
}

/// The worker a job was handed to.
pub struct Taken(pub Arc<Worker>);

pub struct Worker {
    jobs: mpsc::UnboundedSender<Job>,
    /// Requests handed to it that have no response yet.
    pub load: AtomicUsize,
    /// Told when its tenant closed it.
    pub closed: Notify,
}
