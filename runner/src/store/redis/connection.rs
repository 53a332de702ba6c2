//! The connection to Redis or a Redis Cluster, its renewal after a
//! failover, and the time bound on every call.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Cmd, RedisFuture, Value};

use crate::store::Error;

/// A connection to Redis or to a Redis Cluster, multiplexed: clones share
/// it, and requests from many tasks are pipelined on it.
#[derive(Clone)]
pub enum Connection {
    /// This clone's manager, its generation, and where the latest is.
    Single(ConnectionManager, u64, Arc<Renewal>),
    Cluster(ClusterConnection),
}

/// The latest connection manager to a single node, replaced when the node
/// turns out to be a replica: after a failover behind one DNS name, the
/// old primary may stay up as a replica, and a kept connection to it would
/// answer READONLY to every write for as long as it lives. redis-rs
/// reconnects on a broken connection only, so the backend renews it.
pub struct Renewal {
    client: ::redis::Client,
    config: ConnectionManagerConfig,
    latest: parking_lot::RwLock<(u64, ConnectionManager)>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Connection::Single(..) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c, ..) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c, ..) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c, ..) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

impl Connection {
    /// Connects to `urls`: one URL is one Redis (`redis://`, or
    /// `rediss://` for TLS), unless `cluster`; several are seed nodes of one
    /// Cluster. Each attempt to connect and each reply is bounded by
    /// `timeout`. A single node is connected on first use, so nothing is
    /// sent yet.
    pub async fn open(urls: &[String], cluster: bool, timeout: Duration) -> Result<Self, Error> {
        let unavailable = |e: ::redis::RedisError| Error::Unavailable(format!("redis: {e}"));
        match urls {
            [url] if !cluster => {
                let client = client(url, timeout).map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    // Retries happen within a call's time; past it the call
                    // fails and the next one tries again.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(500));
                let manager =
                    ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
                        .map_err(unavailable)?;
                let renewal = Renewal {
                    client,
                    config,
                    latest: parking_lot::RwLock::new((0, manager.clone())),
                };
                Ok(Connection::Single(manager, 0, Arc::new(renewal)))
            }
            seeds => {
                let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                    .tcp_settings(tcp_settings(timeout))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(unavailable)?;
                let connection = within(timeout, client.get_async_connection()).await?;
                Ok(Connection::Cluster(connection))
            }
        }
    }

    /// The connection to send a call on: the latest one.
    pub fn current(&self) -> Self {
        match self {
            Connection::Single(_, _, renewal) => {
                let (generation, manager) = renewal.latest.read().clone();
                Connection::Single(manager, generation, renewal.clone())
            }
            Connection::Cluster(_) => self.clone(),
        }
    }

    /// After `error` on this connection: a READONLY answer means the node
    /// it reaches is a replica now, so the next call gets a new connection
    /// (to whatever the URL's name resolves to then), once for all the
    /// calls that failed on this one.
    pub fn renew_after(&self, error: &::redis::RedisError) {
        let Connection::Single(_, generation, renewal) = self else {
            return;
        };
        if error.kind() != ::redis::ErrorKind::Server(::redis::ServerErrorKind::ReadOnly) {
            return;
        }
        let mut latest = renewal.latest.write();
        if latest.0 != *generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(
            renewal.client.clone(),
            renewal.config.clone(),
        ) {
            Ok(manager) => {
                tracing::warn!("Redis answered READONLY: reconnecting, in case it failed over");
                *latest = (generation + 1, manager);
            }
            Err(e) => tracing::error!("reconnecting to Redis after READONLY: {e}"),
        }
    }

    /// Runs `call`'s outcome through [`Connection::renew_after`] and the
    /// error mapping of [`within`].
    pub(super) fn settle<T>(
        &self,
        timeout: Duration,
        outcome: Result<::redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, Error> {
        if let Ok(Err(e)) = &outcome {
            self.renew_after(e);
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Unavailable(format!("redis: {e}"))),
            Err(_) => Err(timed_out(timeout)),
        }
    }
}

/// How every connection to Redis is set up: no Nagle delay on small
/// commands, and a dead peer detected by the kernel (keepalive probes on an
/// idle connection, a bound on unacknowledged data on a busy one), so the
/// connection errors and is replaced instead of timing calls out for as
/// long as TCP would retransmit.
fn tcp_settings(timeout: Duration) -> ::redis::io::tcp::TcpSettings {
    use ::redis::io::tcp::socket2::TcpKeepalive;
    let settings = ::redis::io::tcp::TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(
            TcpKeepalive::new()
                .with_time(Duration::from_secs(5))
                .with_interval(Duration::from_secs(1))
                .with_retries(3),
        );
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout((timeout * 4).max(Duration::from_secs(1)));
    settings
}

/// A client for one node, its connections set up as [`tcp_settings`] says.
pub fn client(url: &str, timeout: Duration) -> ::redis::RedisResult<::redis::Client> {
    use ::redis::IntoConnectionInfo as _;
    let info = url
        .into_connection_info()?
        .set_tcp_settings(tcp_settings(timeout));
    ::redis::Client::open(info)
}

/// Awaits a Redis call for at most `timeout`; a failure or a timeout is
/// `store-unavailable`.
pub(super) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Unavailable(format!("redis: {e}"))),
        Err(_) => Err(timed_out(timeout)),
    }
}

pub(super) fn timed_out(timeout: Duration) -> Error {
    Error::Unavailable(format!(
        "redis did not answer within {}",
        humantime::format_duration(timeout)
    ))
}
