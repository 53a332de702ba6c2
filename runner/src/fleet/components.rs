//! The components a runner holds, and letting go of them.
//!
//! A compiled component stays held while a tenant runs it. Once none does
//! (its tenants updated to another component or removed, or it was
//! uploaded and never deployed), it is released after `--component-grace`:
//! its compiled code (freed when the last request on it ends), its copy in
//! the data directory and its entries in the compiled cache. `DELETE
//! /v1/components/{digest}` releases an unused one at once.
//!
//! In a Redis fleet each runner releases its own compiled code and cache
//! entries; the copy in Redis is the fleet's, deleted only by `DELETE`, and
//! only while no tenant of the fleet names it. A component released here
//! that a tenant is deployed on later is read back from the data directory
//! or Redis, where they still have it ([`Fleet::component`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::deployed::{Keeper, Removal};
use super::{Fleet, Refused};
use crate::engine::component::Digest;

/// A component held, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub digest: Digest,
    /// Bytes of its compiled code.
    pub code_bytes: usize,
    /// Tenants that run it.
    pub tenants: usize,
    /// How long no tenant has run it, where none does.
    pub unused_for: Option<Duration>,
}

impl Fleet {
    /// The components tenants run, with how many run each.
    fn in_use(&self) -> HashMap<Digest, usize> {
        let mut used = HashMap::new();
        for tenant in self.tenants.read().values() {
            for part in tenant.components() {
                *used.entry(part.component()).or_insert(0) += 1;
            }
        }
        used
    }

    /// Every component held now, by digest.
    pub fn held(&self) -> Vec<Held> {
        let used = self.in_use();
        let unused = self.unused.lock().clone();
        let mut held: Vec<Held> = self
            .runtime
            .held()
            .into_iter()
            .map(|(digest, code_bytes)| Held {
                digest,
                code_bytes,
                tenants: used.get(&digest).copied().unwrap_or(0),
                unused_for: unused.get(&digest).map(Instant::elapsed),
            })
            .collect();
        held.sort_unstable_by_key(|h| h.digest);
        held
    }

    /// Sets the gauges of components held and their code's bytes.
    pub(super) fn count_components(&self) {
        let held = self.runtime.held();
        self.metrics.components.set(held.len() as f64);
        let bytes: usize = held.iter().map(|(_, bytes)| bytes).sum();
        self.metrics.code_bytes.set(bytes as f64);
    }

    /// Refuses to deploy component `digest` if it was released (and its
    /// copy deleted) since it was looked up, or, in a Redis fleet, deleted
    /// from Redis (through any runner): a deployment must name a component
    /// every runner, and this one after a restart, can read back. Callers
    /// hold `changes`.
    pub(super) async fn check_kept(&self, digest: &Digest) -> Result<(), Refused> {
        let gone = || {
            Refused::NotFound(format!(
                "no component {digest}: it was deleted or released meanwhile (no tenant ran \
                 it for --component-grace); upload it again"
            ))
        };
        if *digest == self.default_guest {
            return Ok(());
        }
        match &self.deployed {
            None => Ok(()),
            Some((Keeper::Files(_), _)) if self.runtime.loaded(digest).is_some() => Ok(()),
            Some((Keeper::Files(_), _)) => Err(gone()),
            Some((keeper @ Keeper::Redis(_), _)) => match keeper.has_component(digest).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(gone()),
                Err(e) => Err(Refused::Failed(e)),
            },
        }
    }

    /// One round of collection: releases each component no tenant has run
    /// for `grace`, and deletes the data directory's and the cache's copies
    /// of components not held that are that old. Returns the components
    /// released.
    pub async fn collect(&self, grace: Duration) -> Vec<Digest> {
        let _one_at_a_time = self.changes.lock().await;
        let used = self.in_use();
        let now = Instant::now();
        let due: Vec<Digest> = {
            let held = self.runtime.held();
            let mut unused = self.unused.lock();
            unused.retain(|digest, _| {
                !used.contains_key(digest) && held.iter().any(|(h, _)| h == digest)
            });
            held.iter()
                .filter(|(digest, _)| !used.contains_key(digest))
                .filter(|(digest, _)| {
                    let since = *unused.entry(*digest).or_insert(now);
                    now.duration_since(since) >= grace
                })
                .map(|(digest, _)| *digest)
                .collect()
        };
        for digest in &due {
            self.release(digest);
            tracing::info!(component = %digest, "component released: no tenant ran it for {}", humantime::format_duration(grace));
        }
        if let Some((Keeper::Files(files), _)) = &self.deployed {
            let keep = |digest: &Digest| {
                used.contains_key(digest) || self.runtime.loaded(digest).is_some()
            };
            for digest in files.sweep(&keep, grace) {
                tracing::info!(component = %digest, "unused upload deleted from the data directory: no tenant ran it for {}", humantime::format_duration(grace));
            }
        }
        self.runtime.sweep_cache(grace);
        if !due.is_empty() {
            self.count_components();
        }
        due
    }

    /// Lets go of `digest` here: its compiled code, the checks made with
    /// it, its data-directory copy and its cache entries. Callers hold
    /// `changes`. Says whether there was anything to let go of.
    fn release(&self, digest: &Digest) -> bool {
        let held = self.runtime.release(digest);
        self.unused.lock().remove(digest);
        self.checked.lock().retain(|(d, _)| d != digest);
        let kept = match &self.deployed {
            Some((Keeper::Files(files), _)) => files.remove_component(digest).unwrap_or_else(|e| {
                tracing::warn!(component = %digest, "{e:#}");
                true
            }),
            _ => false,
        };
        held || kept
    }

    /// Removes component `digest` now (`DELETE /v1/components/{digest}`),
    /// unless a tenant runs it: here, or, in a Redis fleet, on any runner.
    pub async fn remove_component(&self, digest: &Digest) -> Result<(), Refused> {
        let _one_at_a_time = self.changes.lock().await;
        let mut users: Vec<String> = self
            .tenants
            .read()
            .values()
            .filter(|t| t.components().any(|part| part.component() == *digest))
            .map(|t| t.name().to_string())
            .collect();
        if !users.is_empty() {
            users.sort_unstable();
            let more = users.len().saturating_sub(5);
            users.truncate(5);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            return Err(Refused::InUse(format!(
                "component {digest} is run by tenant(s) {}{more}: update or remove them first",
                users.join(", ")
            )));
        }
        let shared = match &self.deployed {
            Some((Keeper::Redis(shared), _)) => {
                match shared
                    .remove_component(digest)
                    .await
                    .map_err(Refused::Failed)?
                {
                    Removal::Removed => true,
                    Removal::Absent => false,
                    Removal::InUse(names) => {
                        return Err(Refused::InUse(format!(
                            "component {digest} is run by tenants of the fleet ({}): update or \
                             remove them first",
                            names.join(", ")
                        )));
                    }
                }
            }
            _ => false,
        };
        let released = self.release(digest);
        self.count_components();
        if !(released || shared) {
            return Err(Refused::NotFound(format!("no component {digest}")));
        }
        tracing::info!(component = %digest, "component removed through the admin API");
        Ok(())
    }
}

/// The task that collects unused components, stopped when this is
/// dropped.
#[derive(Debug)]
pub struct Collector(tokio::task::JoinHandle<()>);

impl Collector {
    /// Collects every quarter of `grace` (at least every 250 ms, at most
    /// every minute).
    pub fn start(fleet: Arc<Fleet>, grace: Duration) -> Self {
        let every = (grace / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                fleet.collect(grace).await;
            }
        }))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.0.abort();
    }
}
