//! One worker: one keep-alive connection, one request at a time, its own
//! random stream, statistics and (with `--verify`) its own keys.
//!
//! Schedules. Closed loop: the next request goes out when the last one is
//! answered, and latency runs from the actual send. Open loop (`--rate R`
//! over `C` connections): request `n = k·C + w` — the `k`-th of worker `w` —
//! is due at `start + n / R`, and its latency runs from that *intended* time.
//! A worker that falls behind (a stalled server) sends its backlog as fast as
//! it can, and every request of the backlog carries the wait it suffered, so
//! a stall cannot hide (no coordinated omission). A worker that is on time
//! sleeps until the due time on tokio's timer, which has millisecond
//! granularity and so wakes it up to ~1 ms late; that lateness is the load
//! generator's, not the server's, so such a request is timed from its actual
//! send. Only a worker kept behind by slow answers is timed from due times.
//!
//! Each request is one route: a built-in op, or a request template (a path
//! with `{tenant}` and `{key}` filled in, its own headers and body, borrowed
//! from the plan). Per request the worker allocates nothing it can avoid: the
//! path is written into a reused buffer, bodies into a `BytesMut` whose
//! split-off parts are given back to it once sent, the response body goes
//! into a reused `Vec`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::config::Workload;
use crate::conn::Conn;
use crate::dist::Dist;
use crate::live::{Buffer, Live};
use crate::mix::Op;
use crate::report::{ErrorKind, Stats};
use crate::template::Expect;
use crate::tenant::TenantSet;
use crate::verify::{Checker, KeyName};

/// After a failed connect, a closed-loop worker waits this long before the
/// next attempt, so a refused port is not hammered (and counted) in a spin.
const CONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// Room for paths and bodies before a buffer must reclaim or grow.
const BUFFER_CAPACITY: usize = 16 * 1024;

/// What all workers share, read-only but for the request tickets.
pub(crate) struct Plan {
    /// Where requests go; with several, each worker sends its requests to
    /// each in turn.
    pub targets: Vec<Target>,
    /// Draws a tenant's index into `tenant_names`.
    pub tenants: Dist,
    pub tenant_names: TenantSet,
    pub keys: Dist,
    pub workload: Workload,
    pub value_size: usize,
    pub batch_size: usize,
    pub bucket: Option<String>,
    /// The run's random id in verify mode.
    pub verify_run: Option<u32>,
    pub timeout: Duration,
    pub concurrency: u64,
    pub rate: Option<f64>,
    pub start: Instant,
    /// End of the warm-up.
    pub measure_start: Instant,
    /// End of a `--duration` run.
    pub end: Option<Instant>,
    /// `--requests`: measured requests to send in total.
    pub requests: Option<u64>,
    /// Measured requests claimed so far, against `requests`.
    pub tickets: AtomicU64,
    pub seed: u64,
    pub live: Option<Arc<Live>>,
}

/// One `--target`, resolved.
pub(crate) struct Target {
    pub addr: SocketAddr,
    /// `Host: …\r\n` and the `-H` headers, sent with every request.
    pub headers: Vec<u8>,
    /// The target URL's path, prepended to every request path.
    pub prefix: String,
    /// An https:// target's TLS.
    pub tls: Option<crate::conn::Tls>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// A response; `ok` if its status is what the route expects.
    Response {
        status: u16,
        ok: bool,
    },
    Failed(ErrorKind),
}

/// How a response is judged: as its built-in op's, or by the statuses its
/// template expects.
#[derive(Clone, Copy)]
enum Judge<'a> {
    Op(Op),
    Expect(&'a Expect),
}

/// What a verify-mode request touched, to settle once its answer is in.
#[derive(Debug, Clone, Copy)]
enum Pending {
    None,
    Read {
        tenant: u32,
        index: u32,
    },
    Write {
        tenant: u32,
        index: u32,
        seq: u64,
    },
    Delete {
        tenant: u32,
        index: u32,
    },
    Incr {
        tenant: u32,
        index: u32,
        by: i64,
    },
    /// The batch's key indices are in `Worker::batch`.
    BatchRead {
        tenant: u32,
    },
    /// Sequence numbers `first_seq ..` in the order of `Worker::batch`.
    BatchWrite {
        tenant: u32,
        first_seq: u64,
    },
    BatchDelete {
        tenant: u32,
    },
}

pub(crate) struct Worker {
    id: u32,
    plan: Arc<Plan>,
    rng: SmallRng,
    /// A connection per target, opened on first use.
    conns: Vec<Option<Conn>>,
    /// The target of the request being built and sent.
    target: usize,
    /// Requests built so far, which picks the next one's target.
    turn: usize,
    path: BytesMut,
    body: BytesMut,
    response: Vec<u8>,
    /// A value of `--value-size` bytes of `x` (plain mode).
    value: Bytes,
    /// Key indices of the current batch request.
    batch: Vec<u32>,
    checker: Option<Checker>,
    pending: Pending,
    live: Option<Buffer>,
    stats: Stats,
}

impl Worker {
    pub fn new(plan: Arc<Plan>, id: u32) -> Worker {
        // Distinct, reproducible streams per worker for a given --seed.
        let rng =
            SmallRng::seed_from_u64(plan.seed ^ u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        Worker {
            id,
            rng,
            conns: plan.targets.iter().map(|_| None).collect(),
            target: 0,
            turn: 0,
            path: BytesMut::with_capacity(BUFFER_CAPACITY),
            body: BytesMut::with_capacity(BUFFER_CAPACITY),
            response: Vec::with_capacity(BUFFER_CAPACITY),
            value: Bytes::from(vec![b'x'; plan.value_size]),
            batch: Vec::with_capacity(plan.batch_size),
            checker: plan.verify_run.map(|run| Checker::new(run, id)),
            pending: Pending::None,
            live: plan.live.as_ref().map(|l| l.buffer()),
            stats: Stats::new(plan.workload.route_count()),
            plan,
        }
    }

    /// Sends requests until the run's end, the request budget, or `stop`.
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Stats {
        let plan = Arc::clone(&self.plan);
        // One timer serves every request's timeout; see `execute`.
        let watchdog = sleep(plan.timeout);
        tokio::pin!(watchdog);
        let mut k: u64 = 0;
        loop {
            let intended = plan.rate.map(|rate| {
                let n = k * plan.concurrency + u64::from(self.id);
                plan.start + Duration::from_secs_f64(n as f64 / rate)
            });
            k += 1;
            let mut slept = false;
            match intended {
                Some(at) => {
                    if plan.end.is_some_and(|end| at >= end) {
                        break;
                    }
                    if at > Instant::now() {
                        tokio::select! {
                            biased;
                            _ = &mut stop => break,
                            () = sleep_until(at) => {}
                        }
                        slept = true;
                    }
                }
                None => {
                    if plan.end.is_some_and(|end| Instant::now() >= end) {
                        break;
                    }
                }
            }
            let sent = Instant::now();
            let measured = intended.unwrap_or(sent) >= plan.measure_start;
            // Behind schedule: time from when the request was due. Idle and
            // woken by the timer: time from the send, as the timer's own
            // lateness is not the server's (see the module docs).
            let scheduled = match intended {
                Some(at) if !slept => at,
                _ => sent,
            };
            if measured
                && let Some(budget) = plan.requests
                && plan.tickets.fetch_add(1, Ordering::Relaxed) >= budget
            {
                break;
            }
            let route = match &plan.workload {
                Workload::Ops(mix) => mix.sample(&mut self.rng) as usize,
                Workload::Templates(templates) => templates.sample(&mut self.rng),
            };
            let outcome = tokio::select! {
                biased;
                _ = &mut stop => break,
                outcome = self.execute(&plan, route, watchdog.as_mut(), sent + plan.timeout) => outcome,
            };
            let done = Instant::now();
            self.record(route, outcome, done - scheduled, measured, done);
            if plan.rate.is_none() && matches!(outcome, Outcome::Failed(ErrorKind::Connect)) {
                tokio::select! {
                    biased;
                    _ = &mut stop => break,
                    () = sleep(CONNECT_BACKOFF) => {}
                }
            }
        }
        if let (Some(live), Some(buffer)) = (&plan.live, &mut self.live) {
            live.flush(buffer, Instant::now());
        }
        if let Some(checker) = &self.checker {
            self.stats.verify = checker.counts;
        }
        self.stats
    }

    fn record(
        &mut self,
        route: usize,
        outcome: Outcome,
        latency: Duration,
        measured: bool,
        done: Instant,
    ) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let (responded, error) = match outcome {
            Outcome::Response { ok, .. } => (Some(latency_us), !ok),
            Outcome::Failed(_) => (None, true),
        };
        if let (Some(live), Some(buffer)) = (&self.plan.live, &mut self.live) {
            live.record(buffer, responded, error, done);
        }
        if !measured {
            self.stats.warmup_requests += 1;
            return;
        }
        self.stats.routes[route].record(responded, error);
        match outcome {
            Outcome::Response { status, ok: false } => {
                *self.stats.by_status.entry(status).or_default() += 1;
            }
            Outcome::Failed(kind) => self.stats.by_kind[kind as usize] += 1,
            Outcome::Response { ok: true, .. } => {}
        }
        self.stats.last_done = Some(done);
    }

    /// Builds, sends and judges one request of `route`, giving up at `deadline`.
    ///
    /// `watchdog` is the worker's one timer. Arming a timer per request
    /// (`tokio::time::timeout`) costs a timer-wheel insertion and removal each
    /// time; instead the watchdog is re-armed lazily: it fires at an earlier
    /// request's deadline, which is never later than this one's, and is then
    /// moved on to this request's deadline. So the timer wheel is touched
    /// about once per timeout period, and every deadline is still exact.
    async fn execute(
        &mut self,
        plan: &Plan,
        route: usize,
        mut watchdog: Pin<&mut Sleep>,
        deadline: Instant,
    ) -> Outcome {
        let tenant = plan.tenants.sample(&mut self.rng);
        let owned: Bytes;
        let (method, content, headers, op) = match &plan.workload {
            Workload::Ops(_) => {
                let op = Op::ALL[route];
                let (method, body) = self.build(plan, op, tenant as u32);
                owned = body;
                (method, &owned[..], &[][..], Judge::Op(op))
            }
            Workload::Templates(templates) => {
                let t = templates.get(route);
                let key = if t.path.uses_key() {
                    plan.keys.sample(&mut self.rng)
                } else {
                    0
                };
                self.start_path(plan);
                t.path
                    .write(&mut self.path, &plan.tenant_names, tenant, key);
                self.pending = Pending::None;
                (
                    t.method.as_str(),
                    &t.body[..],
                    &t.header_lines[..],
                    Judge::Expect(&t.expect),
                )
            }
        };
        let result = {
            let exchange = self.exchange(method, content, headers);
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    biased;
                    result = &mut exchange => break Some(result),
                    () = watchdog.as_mut() => {
                        if Instant::now() >= deadline {
                            break None;
                        }
                        watchdog.as_mut().reset(deadline);
                    }
                }
            }
        };
        let result = result.unwrap_or_else(|| {
            // The connection has a request in flight: unusable.
            self.conns[self.target] = None;
            Err(ErrorKind::Timeout)
        });
        let outcome = match result {
            Ok(status) => Outcome::Response {
                status,
                ok: match op {
                    Judge::Op(op) => is_success(op, status, &self.response),
                    Judge::Expect(expect) => expect.contains(status),
                },
            },
            Err(kind) => Outcome::Failed(kind),
        };
        if self.checker.is_some() {
            self.settle(outcome);
        }
        outcome
    }

    /// Sends the request built in `self.path` on the worker's connection,
    /// opening one if needed.
    async fn exchange(
        &mut self,
        method: &str,
        content: &[u8],
        headers: &[u8],
    ) -> Result<u16, ErrorKind> {
        let slot = &mut self.conns[self.target];
        if slot.as_mut().is_some_and(|c| !c.is_open()) {
            *slot = None;
        }
        let conn = match slot {
            Some(conn) => conn,
            None => {
                let target = &self.plan.targets[self.target];
                let conn = Conn::open_with(target.addr, &target.headers, target.tls.as_ref())
                    .await
                    .map_err(|_| ErrorKind::Connect)?;
                slot.insert(conn)
            }
        };
        self.response.clear();
        match conn
            .send(method, &self.path, headers, content, &mut self.response)
            .await
        {
            Ok(status) => Ok(status),
            Err(_) => {
                self.conns[self.target] = None;
                Err(ErrorKind::Io)
            }
        }
    }

    fn key(&self, index: u32, counter: bool) -> KeyName {
        match &self.checker {
            Some(c) => c.key(index, counter),
            None => KeyName {
                owner: None,
                counter,
                index,
            },
        }
    }

    /// Picks the next request's target and starts its path with the
    /// target's base path.
    fn start_path(&mut self, plan: &Plan) {
        self.path.clear();
        self.target = self.turn % plan.targets.len();
        self.turn = self.turn.wrapping_add(1);
        self.path
            .extend_from_slice(plan.targets[self.target].prefix.as_bytes());
    }

    /// Builds the request for `op` on `tenant`: its path into `self.path`,
    /// its method and body returned; notes what verify must check.
    fn build(&mut self, plan: &Plan, op: Op, tenant: u32) -> (&'static str, Bytes) {
        self.start_path(plan);
        self.path.extend_from_slice(b"/t/");
        plan.tenant_names.write(tenant as usize, &mut self.path);
        // Writes into a BytesMut cannot fail; `let _` keeps the hot path free
        // of unwraps.
        let verify = self.checker.is_some();
        let mut query_started = false;
        let (method, body) = match op {
            Op::Hello => {
                self.path.extend_from_slice(b"/hello");
                self.pending = Pending::None;
                ("GET", Bytes::new())
            }
            Op::Get | Op::Set | Op::Delete => {
                let index = plan.keys.sample(&mut self.rng) as u32;
                let key = self.key(index, false);
                let _ = write!(self.path, "/kv/{key}");
                match op {
                    Op::Get => {
                        self.pending = Pending::Read { tenant, index };
                        ("GET", Bytes::new())
                    }
                    Op::Set => match &mut self.checker {
                        Some(checker) => {
                            let seq =
                                checker.write_value(&mut self.body, tenant, index, plan.value_size);
                            self.pending = Pending::Write { tenant, index, seq };
                            ("PUT", self.body.split().freeze())
                        }
                        None => ("PUT", self.value.clone()),
                    },
                    _ => {
                        self.pending = Pending::Delete { tenant, index };
                        ("DELETE", Bytes::new())
                    }
                }
            }
            Op::Incr => {
                let index = plan.keys.sample(&mut self.rng) as u32;
                // Varying steps in verify mode, so an answer off by a
                // different step is still caught.
                let by: i64 = if verify {
                    self.rng.random_range(1..=9)
                } else {
                    1
                };
                let key = self.key(index, true);
                let _ = write!(self.path, "/incr/{key}?by={by}");
                query_started = true;
                self.pending = Pending::Incr { tenant, index, by };
                ("POST", Bytes::new())
            }
            Op::List => {
                self.path.extend_from_slice(b"/keys");
                self.pending = Pending::None;
                ("GET", Bytes::new())
            }
            Op::BatchGet | Op::BatchSet | Op::BatchDelete => {
                self.draw_batch();
                let (route, pending, body) = match op {
                    Op::BatchGet => ("get", Pending::BatchRead { tenant }, self.batch_keys_body()),
                    Op::BatchSet => {
                        let (first_seq, body) = self.batch_set_body(tenant);
                        ("set", Pending::BatchWrite { tenant, first_seq }, body)
                    }
                    _ => (
                        "delete",
                        Pending::BatchDelete { tenant },
                        self.batch_keys_body(),
                    ),
                };
                let _ = write!(self.path, "/batch/{route}");
                self.pending = pending;
                ("POST", body)
            }
        };
        if let Some(bucket) = &plan.bucket {
            let sep = if query_started { '&' } else { '?' };
            let _ = write!(self.path, "{sep}bucket={bucket}");
        }
        (method, body)
    }

    /// Draws `--batch-size` distinct key indices (fewer if the key space is
    /// smaller, or the draws keep colliding) into `self.batch`.
    fn draw_batch(&mut self) {
        self.batch.clear();
        for _ in 0..self.plan.batch_size * 4 {
            if self.batch.len() == self.plan.batch_size {
                break;
            }
            let index = self.plan.keys.sample(&mut self.rng) as u32;
            if !self.batch.contains(&index) {
                self.batch.push(index);
            }
        }
    }

    /// `["key",...]` for the current batch. Key names and values are
    /// letters, digits, `-`, `|` and `.`: nothing needs JSON escaping.
    fn batch_keys_body(&mut self) -> Bytes {
        self.body.extend_from_slice(b"[");
        for (n, &index) in self.batch.iter().enumerate() {
            let sep = if n == 0 { "" } else { "," };
            let key = self.key(index, false);
            let _ = write!(self.body, "{sep}\"{key}\"");
        }
        self.body.extend_from_slice(b"]");
        self.body.split().freeze()
    }

    /// `{"key":"value",...}` for the current batch; returns the first
    /// sequence number written (verify mode) and the body.
    fn batch_set_body(&mut self, tenant: u32) -> (u64, Bytes) {
        let mut first_seq = 0;
        self.body.extend_from_slice(b"{");
        for n in 0..self.batch.len() {
            let index = self.batch[n];
            let key = self.key(index, false);
            let sep = if n == 0 { "" } else { "," };
            let _ = write!(self.body, "{sep}\"{key}\":\"");
            match &mut self.checker {
                Some(checker) => {
                    let seq =
                        checker.write_value(&mut self.body, tenant, index, self.plan.value_size);
                    if n == 0 {
                        first_seq = seq;
                    }
                }
                None => self.body.extend_from_slice(&self.value),
            }
            self.body.extend_from_slice(b"\"");
        }
        self.body.extend_from_slice(b"}");
        (first_seq, self.body.split().freeze())
    }

    /// Updates the verify record with the outcome of the pending request.
    fn settle(&mut self, outcome: Outcome) {
        let Some(checker) = &mut self.checker else {
            return;
        };
        let status = match outcome {
            Outcome::Response { status, .. } => Some(status),
            Outcome::Failed(_) => None,
        };
        let body = &self.response[..];
        match self.pending {
            Pending::None => {}
            Pending::Read { tenant, index } => match status {
                Some(200) => checker.read(tenant, index, Some(body)),
                Some(404) if is_key_not_found(body) => checker.read(tenant, index, None),
                _ => {}
            },
            Pending::Write { tenant, index, seq } => match status {
                Some(204) => checker.written(tenant, index, seq),
                _ => checker.unsure(tenant, index),
            },
            Pending::Delete { tenant, index } => match status {
                Some(204) => checker.deleted(tenant, index),
                _ => checker.unsure(tenant, index),
            },
            Pending::Incr { tenant, index, by } => {
                let answer = (status == Some(200)).then_some(body);
                checker.incremented(tenant, index, by, answer);
            }
            Pending::BatchRead { tenant } => {
                if status != Some(200) {
                    return;
                }
                match serde_json::from_slice::<std::collections::HashMap<String, Option<String>>>(
                    body,
                ) {
                    Ok(values) => {
                        for &index in &self.batch {
                            let key = checker.key(index, false).to_string();
                            match values.get(&key) {
                                Some(value) => {
                                    checker.read(tenant, index, value.as_deref().map(str::as_bytes))
                                }
                                // An answer that leaves out a requested key.
                                None => checker.counts.corrupt_values += 1,
                            }
                        }
                    }
                    Err(_) => checker.counts.corrupt_values += 1,
                }
            }
            Pending::BatchWrite { tenant, first_seq } => {
                for (n, &index) in self.batch.iter().enumerate() {
                    match status {
                        Some(204) => checker.written(tenant, index, first_seq + n as u64),
                        _ => checker.unsure(tenant, index),
                    }
                }
            }
            Pending::BatchDelete { tenant } => {
                for &index in &self.batch {
                    match status {
                        Some(204) => checker.deleted(tenant, index),
                        _ => checker.unsure(tenant, index),
                    }
                }
            }
        }
    }
}

fn is_key_not_found(body: &[u8]) -> bool {
    body.trim_ascii() == b"key not found"
}

/// Whether `status` (and body) is what a correct server answers to `op`: the
/// op's expected status, or for `get` also 404 `key not found`.
fn is_success(op: Op, status: u16, body: &[u8]) -> bool {
    status == op.expected_status() || (op == Op::Get && status == 404 && is_key_not_found(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_depends_on_op_and_status() {
        assert!(is_success(Op::Get, 200, b""));
        assert!(is_success(Op::Get, 404, b"key not found"));
        assert!(is_success(Op::Get, 404, b"key not found\n"));
        assert!(!is_success(Op::Get, 404, b"no such tenant"));
        assert!(!is_success(Op::Incr, 404, b"key not found"));
        assert!(is_success(Op::Set, 204, b""));
        assert!(!is_success(Op::Set, 200, b""));
        assert!(is_success(Op::BatchDelete, 204, b""));
        assert!(is_success(Op::List, 200, b"{}"));
        assert!(!is_success(Op::Hello, 500, b""));
    }
}
