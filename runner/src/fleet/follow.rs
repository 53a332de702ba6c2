//! Keeps a runner's fleet in step with the other runners on its Redis.
//!
//! A runner that changes a tenant through the admin API keeps the change
//! in Redis and then publishes the tenant's name (see
//! [`crate::fleet::deployed::Shared`]). Every runner subscribes; on a name it
//! reads that tenant from Redis and applies what it finds
//! ([`Fleet::follow`]), so a change reaches the whole fleet in about one
//! round trip. Pub/sub is not a queue: a runner whose subscription drops
//! misses what was published meanwhile, so after every (re)subscription it
//! reads every tenant again ([`Fleet::resync`]), and it does so every
//! [`RESYNC_EVERY`] as well, in case an announcement was read while Redis
//! could not answer the read that follows it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;

use super::Fleet;
use super::deployed::RESYNC_EVERY;

/// Longest wait between two attempts to subscribe while Redis is away.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The task that follows the fleet's announcements, stopped when this is
/// dropped.
#[derive(Debug)]
pub struct Follower(tokio::task::JoinHandle<()>);

impl Follower {
    /// Starts following `fleet`'s Redis; the task does nothing where the
    /// fleet shares none.
    pub fn start(fleet: Arc<Fleet>) -> Self {
        Self(tokio::spawn(follow(fleet)))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows the fleet's announcements until the task is dropped; does
/// nothing where the fleet shares no Redis.
async fn follow(fleet: Arc<Fleet>) {
    let Some(shared) = fleet.shared() else {
        return;
    };
    let (urls, channel) = (shared.urls().to_vec(), shared.channel());
    let shared_timeout = shared.timeout();
    let mut backoff = Duration::from_millis(50);
    let mut node = 0;
    let mut away = false;
    loop {
        let url = &urls[node % urls.len()];
        let subscribed = async {
            let client = crate::store::redis::client(url, shared_timeout)?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(MAX_BACKOFF * 5, subscribed).await {
            Ok(Ok(pubsub)) => pubsub,
            outcome => {
                if !away {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "no answer".to_string(),
                    };
                    tracing::warn!(
                        "cannot follow the fleet's changes in Redis ({why}); retrying until it is back"
                    );
                    away = true;
                }
                node += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if away {
            tracing::info!("following the fleet's changes in Redis again");
            away = false;
        }
        backoff = Duration::from_millis(50);
        // Subscribed first, read after: a change made between the two is
        // seen by one or both, never by neither.
        resync(&fleet).await;
        let mut messages = pubsub.into_on_message();
        let mut every = tokio::time::interval(RESYNC_EVERY);
        every.reset();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        tracing::warn!("lost the subscription to the fleet's changes; reconnecting");
                        break;
                    };
                    let Ok(name) = message.get_payload::<String>() else {
                        continue;
                    };
                    if let Err(e) = fleet.follow(&name).await {
                        tracing::error!(tenant = %name, "following the fleet's change: {e:#}");
                    }
                }
                _ = every.tick() => resync(&fleet).await,
            }
        }
    }
}

async fn resync(fleet: &Fleet) {
    match fleet.resync().await {
        Ok(0) => {}
        Ok(changed) => tracing::info!(changed, "tenants brought in step with the fleet's store"),
        Err(e) => tracing::error!("reading the fleet's tenants from Redis: {e:#}"),
    }
}
