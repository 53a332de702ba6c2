//! Correctness under load (`--verify`).
//!
//! Each worker owns its keys — `v-{run}-{worker}-{i}` for values and
//! `c-{run}-{worker}-{i}` for counters, the same names in every tenant — and
//! is the only writer of them, one request at a time, so it knows exactly what
//! a correct server must answer. `run` is random per run, so values left by an
//! earlier run cannot be mistaken for this one's.
//!
//! A value is `t{tenant}|{key}|{seq}|` padded with `.` to `--value-size`; `seq`
//! grows with every write the worker makes. A read is then checked against the
//! worker's record of the key:
//!
//! | record                | answer                 | verdict          |
//! |-----------------------|------------------------|------------------|
//! | written `s`           | not found              | `lost_writes`    |
//! | written `s`           | our key, `seq < s`     | `stale_reads`    |
//! | deleted               | our key, older `seq`   | `stale_reads`    |
//! | any                   | tenant embedded ≠ asked| `wrong_tenant`   |
//! | any                   | unparsable, other key, `seq` never written | `corrupt_values` |
//!
//! A write or delete that failed (error status, timeout) may or may not have
//! happened, so the key's record becomes *unknown* until the next acknowledged
//! write or delete; any of our own values is accepted meanwhile. Counters
//! work the same way: each acknowledged `incr` must return the previous total
//! plus `by`, or it counts in `bad_increments`.

use std::collections::HashMap;
use std::fmt::{self, Write as _};

use bytes::BytesMut;
use serde::Serialize;

/// Violations found, and how many answers were checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VerifyCounts {
    /// Reads that found nothing where an acknowledged write should be.
    pub lost_writes: u64,
    /// Reads that returned an older value than the last acknowledged write,
    /// or a value after its acknowledged delete.
    pub stale_reads: u64,
    /// Values whose embedded tenant is not the tenant asked.
    pub wrong_tenant: u64,
    /// Increments whose result is not the expected running total.
    pub bad_increments: u64,
    /// Values that cannot have come from this worker: unparsable, another
    /// key's, or a sequence number never written.
    pub corrupt_values: u64,
    /// Reads (single or within a batch) whose answer was checked.
    pub checked_reads: u64,
    /// Increments whose answer was checked.
    pub checked_increments: u64,
}

impl VerifyCounts {
    /// Total violations; anything above 0 fails the run.
    pub fn violations(&self) -> u64 {
        self.lost_writes
            + self.stale_reads
            + self.wrong_tenant
            + self.bad_increments
            + self.corrupt_values
    }

    pub(crate) fn add(&mut self, o: &VerifyCounts) {
        self.lost_writes += o.lost_writes;
        self.stale_reads += o.stale_reads;
        self.wrong_tenant += o.wrong_tenant;
        self.bad_increments += o.bad_increments;
        self.corrupt_values += o.corrupt_values;
        self.checked_reads += o.checked_reads;
        self.checked_increments += o.checked_increments;
    }
}

/// What the worker knows about one of its keys in one tenant. No entry at all
/// means the key was never written in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Written(u64),
    Deleted,
    Unknown,
}

/// The name of a worker-owned key (or, without a namespace, a plain load key
/// `k{i}` / `c{i}` shared by all workers).
#[derive(Debug, Clone, Copy)]
pub struct KeyName {
    /// `(run, worker)` in verify mode.
    pub owner: Option<(u32, u32)>,
    pub counter: bool,
    pub index: u32,
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.owner, self.counter) {
            (None, false) => write!(f, "k{}", self.index),
            (None, true) => write!(f, "c{}", self.index),
            (Some((run, w)), false) => write!(f, "v-{run:08x}-{w}-{}", self.index),
            (Some((run, w)), true) => write!(f, "c-{run:08x}-{w}-{}", self.index),
        }
    }
}

/// One worker's record of its keys and counters.
#[derive(Debug)]
pub struct Checker {
    run: u32,
    worker: u32,
    /// The last sequence number handed out; values carry 1, 2, ….
    seq: u64,
    slots: HashMap<(u32, u32), Slot>,
    /// Expected counter totals; `None` after a failed increment.
    counters: HashMap<(u32, u32), Option<i64>>,
    /// Scratch for formatting the expected key of a read.
    scratch: String,
    pub counts: VerifyCounts,
}

impl Checker {
    pub fn new(run: u32, worker: u32) -> Self {
        Checker {
            run,
            worker,
            seq: 0,
            slots: HashMap::new(),
            counters: HashMap::new(),
            scratch: String::new(),
            counts: VerifyCounts::default(),
        }
    }

    /// The name of value key `index` (or counter `index`).
    pub fn key(&self, index: u32, counter: bool) -> KeyName {
        KeyName {
            owner: Some((self.run, self.worker)),
            counter,
            index,
        }
    }

    /// Appends a fresh value for `tenant`/`index` to `buf`, padded to `size`
    /// bytes (longer if the header alone is longer); returns its sequence number.
    pub fn write_value(&mut self, buf: &mut BytesMut, tenant: u32, index: u32, size: usize) -> u64 {
        self.seq += 1;
        let start = buf.len();
        let key = self.key(index, false);
        // Writing into a BytesMut cannot fail.
        let _ = write!(buf, "t{tenant}|{key}|{}|", self.seq);
        let written = buf.len() - start;
        if written < size {
            buf.resize(start + size, b'.');
        }
        self.seq
    }

    /// A write of `seq` to the key was acknowledged.
    pub fn written(&mut self, tenant: u32, index: u32, seq: u64) {
        self.slots.insert((tenant, index), Slot::Written(seq));
    }

    /// A delete of the key was acknowledged.
    pub fn deleted(&mut self, tenant: u32, index: u32) {
        self.slots.insert((tenant, index), Slot::Deleted);
    }

    /// A write or delete of the key failed: it may or may not have happened.
    pub fn unsure(&mut self, tenant: u32, index: u32) {
        self.slots.insert((tenant, index), Slot::Unknown);
    }

    /// Checks a read of the key: `None` for "not found", else the value.
    pub fn read(&mut self, tenant: u32, index: u32, value: Option<&[u8]>) {
        self.counts.checked_reads += 1;
        let slot = self.slots.get(&(tenant, index)).copied();
        let Some(value) = value else {
            if let Some(Slot::Written(_)) = slot {
                self.counts.lost_writes += 1;
            }
            return;
        };
        let Some((value_tenant, value_key, value_seq)) = parse_value(value) else {
            self.counts.corrupt_values += 1;
            return;
        };
        if value_tenant != tenant {
            self.counts.wrong_tenant += 1;
            return;
        }
        self.scratch.clear();
        let _ = write!(self.scratch, "{}", self.key(index, false));
        if value_key != self.scratch.as_bytes() || value_seq == 0 || value_seq > self.seq {
            self.counts.corrupt_values += 1;
            return;
        }
        match slot {
            Some(Slot::Written(s)) if value_seq < s => self.counts.stale_reads += 1,
            Some(Slot::Written(s)) if value_seq > s => self.counts.corrupt_values += 1,
            Some(Slot::Written(_)) | Some(Slot::Unknown) => {}
            Some(Slot::Deleted) => self.counts.stale_reads += 1,
            // A value for a key this worker never wrote.
            None => self.counts.corrupt_values += 1,
        }
    }

    /// Checks an increment of counter `index` by `by`: `Some(body)` is an
    /// acknowledged answer, `None` a failed one (the total becomes unknown).
    pub fn incremented(&mut self, tenant: u32, index: u32, by: i64, answer: Option<&[u8]>) {
        let expected = self.counters.entry((tenant, index)).or_insert(Some(0));
        let Some(body) = answer else {
            *expected = None;
            return;
        };
        let parsed = std::str::from_utf8(body)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        let Some(total) = parsed else {
            self.counts.corrupt_values += 1;
            *expected = None;
            return;
        };
        if let Some(before) = *expected {
            self.counts.checked_increments += 1;
            if before.checked_add(by) != Some(total) {
                self.counts.bad_increments += 1;
            }
        }
        // Follow the server's total, so one bad answer counts once.
        *expected = Some(total);
    }
}

/// Splits `t{tenant}|{key}|{seq}|…` into its parts.
fn parse_value(value: &[u8]) -> Option<(u32, &[u8], u64)> {
    let mut parts = value.splitn(4, |&b| b == b'|');
    let tenant = parts.next()?.strip_prefix(b"t")?;
    let key = parts.next()?;
    let seq = parts.next()?;
    parts.next()?;
    let tenant = std::str::from_utf8(tenant).ok()?.parse().ok()?;
    let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
    Some((tenant, key, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(c: &mut Checker, tenant: u32, index: u32) -> (BytesMut, u64) {
        let mut buf = BytesMut::new();
        let seq = c.write_value(&mut buf, tenant, index, 40);
        (buf, seq)
    }

    #[test]
    fn values_embed_tenant_key_and_sequence() {
        let mut c = Checker::new(0xab, 3);
        let (buf, seq) = value(&mut c, 7, 12);
        assert_eq!(seq, 1);
        assert_eq!(&buf[..], b"t7|v-000000ab-3-12|1|...................");
        assert_eq!(parse_value(&buf), Some((7, &b"v-000000ab-3-12"[..], 1)));
        let mut short = BytesMut::new();
        c.write_value(&mut short, 0, 1, 0);
        assert_eq!(&short[..], b"t0|v-000000ab-3-1|2|");
        assert_eq!(c.key(5, true).to_string(), "c-000000ab-3-5");
    }

    #[test]
    fn classifies_reads() {
        let mut c = Checker::new(1, 0);
        // Never written: not found is right.
        c.read(0, 0, None);
        let (v1, s1) = value(&mut c, 0, 0);
        c.written(0, 0, s1);
        c.read(0, 0, Some(&v1));
        assert_eq!(c.counts.violations(), 0);
        c.read(0, 0, None);
        assert_eq!(c.counts.lost_writes, 1);
        let (v2, s2) = value(&mut c, 0, 0);
        c.written(0, 0, s2);
        c.read(0, 0, Some(&v1));
        assert_eq!(c.counts.stale_reads, 1);
        // The same key's value from tenant 0, read in tenant 1.
        c.written(1, 0, s2);
        c.read(1, 0, Some(&v2));
        assert_eq!(c.counts.wrong_tenant, 1);
        c.deleted(0, 0);
        c.read(0, 0, Some(&v2));
        assert_eq!(c.counts.stale_reads, 2);
        c.read(0, 0, Some(b"garbage"));
        // Key 1 was never written, so no value of it can exist.
        let (v3, _) = value(&mut c, 0, 1);
        c.read(0, 1, Some(&v3));
        assert_eq!(c.counts.corrupt_values, 2);
        c.unsure(0, 1);
        c.read(0, 1, Some(&v3));
        c.read(0, 1, None);
        assert_eq!(c.counts.violations(), 6);
        assert_eq!(c.counts.checked_reads, 10);
    }

    #[test]
    fn increments_must_add_up() {
        let mut c = Checker::new(1, 0);
        c.incremented(0, 0, 3, Some(b"3"));
        c.incremented(0, 0, 2, Some(b"5\n"));
        assert_eq!(c.counts.bad_increments, 0);
        c.incremented(0, 0, 1, Some(b"7"));
        assert_eq!(c.counts.bad_increments, 1);
        // Resynchronised on the server's 7.
        c.incremented(0, 0, 1, Some(b"8"));
        assert_eq!(c.counts.bad_increments, 1);
        // After a failure the next answer is taken as the new baseline.
        c.incremented(0, 0, 1, None);
        c.incremented(0, 0, 1, Some(b"10"));
        c.incremented(0, 0, 1, Some(b"11"));
        assert_eq!(c.counts.bad_increments, 1);
        assert_eq!(c.counts.checked_increments, 5);
        c.incremented(1, 0, 1, Some(b"one"));
        assert_eq!(c.counts.corrupt_values, 1);
    }
}
