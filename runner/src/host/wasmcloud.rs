//! `wasmcloud:keyvalue@0.2.0`, wasmCloud's WASIp3 key-value package, over
//! the tenant's namespace of the [`crate::store`]: the same buckets and
//! data as `wasi:keyvalue` (a bucket is the same host resource), with
//! typed errors, expiry and if-not-exists on `set`, prefix listing with
//! string cursors, and versioned compare-and-swap.
//!
//! Every function is an `async func`: a call that waits on the store lets
//! the guest's other tasks run. The host state is reached through the
//! accessor only to read the tenant and the bucket handle; the store is
//! awaited outside it, so no access to the store is held across an await.

use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Accessor, Resource};

use super::bindings::wasmcloud::keyvalue::{atomics, batch, cas, store, types};
use super::{BucketHandle, Host, HostData};
use crate::metrics::{KvOp, Stopwatch};
use crate::store::{self as kv, Bucket, Require, SetOptions, Swapped};

type Result<T> = wasmtime::Result<std::result::Result<T, types::Error>>;

/// The typed error a guest sees for a store error. The variants carry no
/// text, except `other`, which starts with the store's token.
fn typed(error: kv::Error) -> types::Error {
    match error {
        kv::Error::Quota { .. } => types::Error::QuotaExceeded,
        kv::Error::Invalid(_) => types::Error::InvalidArgument,
        kv::Error::Unavailable(_) => types::Error::StoreUnavailable,
        unsupported @ kv::Error::Unsupported(_) => types::Error::Other(unsupported.to_string()),
        kv::Error::Denied(_) => types::Error::AccessDenied,
    }
}

/// The tenant's bucket behind `handle`, and the tenant for its metrics.
pub(super) fn bucket<T>(
    accessor: &Accessor<T, HostData>,
    handle: &Resource<BucketHandle>,
) -> wasmtime::Result<(Bucket, std::sync::Arc<crate::tenant::scope::Scope>)> {
    accessor.with(|mut access| {
        let host: &mut Host = access.get();
        let bucket = host.table.get(handle)?.0.clone();
        Ok((bucket, host.tenant.clone()))
    })
}

/// Records the call in the tenant's metrics and gives the guest its typed
/// error.
fn finish<T>(
    tenant: &crate::tenant::scope::Scope,
    op: KvOp,
    started: Stopwatch,
    result: std::result::Result<T, kv::Error>,
) -> std::result::Result<T, types::Error> {
    tenant.metrics().kv_op(op, started, result.as_ref().err());
    result.map_err(typed)
}

impl<T: Send> store::HostWithStore<T> for HostData {
    async fn open(
        accessor: &Accessor<T, Self>,
        identifier: String,
    ) -> Result<Resource<BucketHandle>> {
        let started = Stopwatch::now();
        let tenant = accessor.with(|mut access| access.get().tenant.clone());
        let opened = tenant.namespace().open(&identifier).await;
        Ok(match finish(&tenant, KvOp::Open, started, opened) {
            Ok(bucket) => {
                Ok(accessor.with(|mut access| access.get().table.push(BucketHandle(bucket)))?)
            }
            Err(e) => Err(e),
        })
    }
}

impl store::Host for Host {}

impl<T: Send> types::HostBucketWithStore<T> for HostData {
    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Result<Option<Vec<u8>>> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let value = bucket.get(&key).await.map(|v| v.map(|v| v.to_vec()));
        Ok(finish(&tenant, KvOp::Get, started, value))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
        options: Option<types::SetOptions>,
    ) -> Result<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let options = options.map_or_else(SetOptions::default, |o| SetOptions {
            ttl: o.ttl_ms.map(Duration::from_millis),
            if_absent: o.if_not_exists,
        });
        let written = bucket.set_with(key, Bytes::from(value), options).await;
        Ok(match finish(&tenant, KvOp::Set, started, written) {
            Ok(true) => Ok(()),
            Ok(false) => Err(types::Error::PreconditionFailed),
            Err(e) => Err(e),
        })
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Result<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let result = bucket.delete(&key).await;
        Ok(finish(&tenant, KvOp::Delete, started, result))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Result<bool> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let found = bucket.exists(&key).await;
        Ok(finish(&tenant, KvOp::Exists, started, found))
    }

    async fn list_keys(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        prefix: Option<String>,
        cursor: Option<String>,
    ) -> Result<types::KeyResponse> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let page = bucket
            .list_prefix(prefix.as_deref().unwrap_or(""), cursor.as_deref())
            .await
            .map(|page| types::KeyResponse {
                keys: page.keys,
                cursor: page.next,
            });
        Ok(finish(&tenant, KvOp::ListKeys, started, page))
    }
}

impl types::HostBucket for Host {
    fn drop(&mut self, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl types::Host for Host {}

impl<T: Send> atomics::HostWithStore<T> for HostData {
    async fn increment(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> Result<i64> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let sum = bucket.increment_signed(key, delta).await;
        Ok(finish(&tenant, KvOp::Increment, started, sum))
    }
}

impl atomics::Host for Host {}

fn entry(versioned: kv::Versioned) -> cas::Entry {
    cas::Entry {
        value: versioned.value.to_vec(),
        version: versioned.version,
    }
}

impl<T: Send> cas::HostWithStore<T> for HostData {
    async fn current(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Result<Option<cas::Entry>> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let current = bucket.current(&key).await.map(|c| c.map(entry));
        Ok(finish(&tenant, KvOp::Get, started, current))
    }

    async fn swap(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
        options: cas::CasOptions,
    ) -> Result<cas::CasResult> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let require = Require {
            version: options.require_version,
            value: options.require_value.map(Bytes::from),
        };
        let swapped = bucket
            .swap(key, Bytes::from(value), require)
            .await
            .map(|swapped| match swapped {
                Swapped::Done => cas::CasResult::Swapped,
                Swapped::Stale(current) => cas::CasResult::Stale(current.map(entry)),
            });
        Ok(finish(&tenant, KvOp::Swap, started, swapped))
    }
}

impl cas::Host for Host {}

impl<T: Send> batch::HostWithStore<T> for HostData {
    async fn get_many(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let values = bucket.get_many(keys).await.map(|values| {
            values
                .into_iter()
                .map(|pair| pair.map(|(k, v)| (k, v.to_vec())))
                .collect()
        });
        Ok(finish(&tenant, KvOp::GetMany, started, values))
    }

    async fn set_many(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let pairs = key_values
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect();
        let result = bucket.set_many(pairs).await;
        Ok(finish(&tenant, KvOp::SetMany, started, result))
    }

    async fn delete_many(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> Result<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let result = bucket.delete_many(&keys).await;
        Ok(finish(&tenant, KvOp::DeleteMany, started, result))
    }
}

impl batch::Host for Host {}
