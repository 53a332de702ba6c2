//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch) over the tenant's
//! namespace of the [`crate::store`].
//!
//! The calls are async, so a backend may wait on a disk or a network; the
//! in-memory backend is ready at the first poll, and no lock is held
//! across an await or a call into the guest.

use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::Resource;

use super::Host;
use super::bindings::wasi::keyvalue::{atomics, batch, store};
use crate::metrics::KvOp;
use crate::store::{Bucket, Error};

/// What a guest's `bucket` resource points at.
pub struct BucketHandle(Bucket);

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl Host {
    fn bucket(&self, handle: &Resource<BucketHandle>) -> wasmtime::Result<&Bucket> {
        Ok(&self.table.get(handle)?.0)
    }

    /// Records the call in the tenant's metrics and turns a store error into
    /// the WIT error the guest sees: `other`, with the error's text, which
    /// starts with its stable token.
    fn finish<T>(&self, op: KvOp, started: Instant, result: Result<T, Error>) -> KvResult<T> {
        self.tenant
            .metrics()
            .kv_op(op, started.elapsed(), result.as_ref().err());
        Ok(result.map_err(|e| store::Error::Other(e.to_string())))
    }
}

impl store::Host for Host {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        let started = Instant::now();
        match self.tenant.namespace().open(&identifier).await {
            Ok(bucket) => {
                let handle = self.table.push(BucketHandle(bucket))?;
                self.finish(KvOp::Open, started, Ok(handle))
            }
            Err(e) => self.finish(KvOp::Open, started, Err(e)),
        }
    }
}

impl store::HostBucket for Host {
    async fn get(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult<Option<Vec<u8>>> {
        let started = Instant::now();
        let value = self.bucket(&b)?.get(&key).await;
        // The copy into a Vec happens outside any backend lock.
        self.finish(KvOp::Get, started, value.map(|v| v.map(|v| v.to_vec())))
    }

    async fn set(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult<()> {
        let started = Instant::now();
        let result = self.bucket(&b)?.set(key, Bytes::from(value)).await;
        self.finish(KvOp::Set, started, result)
    }

    async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult<()> {
        let started = Instant::now();
        let result = self.bucket(&b)?.delete(&key).await;
        self.finish(KvOp::Delete, started, result)
    }

    async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        let started = Instant::now();
        let found = self.bucket(&b)?.exists(&key).await;
        self.finish(KvOp::Exists, started, found)
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let started = Instant::now();
        let page = self.bucket(&b)?.list_keys(cursor).await;
        let response = page.map(|page| store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        });
        self.finish(KvOp::ListKeys, started, response)
    }

    async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(b)?;
        Ok(())
    }
}

impl atomics::Host for Host {
    async fn increment(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        delta: u64,
    ) -> KvResult<u64> {
        let started = Instant::now();
        let result = self.bucket(&b)?.increment(key, delta).await;
        self.finish(KvOp::Increment, started, result)
    }
}

impl batch::Host for Host {
    async fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult<Vec<Option<(String, Vec<u8>)>>> {
        let started = Instant::now();
        let result = self.bucket(&b)?.get_many(keys).await.map(|values| {
            values
                .into_iter()
                .map(|pair| pair.map(|(k, v)| (k, v.to_vec())))
                .collect()
        });
        self.finish(KvOp::GetMany, started, result)
    }

    async fn set_many(
        &mut self,
        b: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult<()> {
        let started = Instant::now();
        let pairs = key_values
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect();
        let result = self.bucket(&b)?.set_many(pairs).await;
        self.finish(KvOp::SetMany, started, result)
    }

    async fn delete_many(&mut self, b: Resource<BucketHandle>, keys: Vec<String>) -> KvResult<()> {
        let started = Instant::now();
        let result = self.bucket(&b)?.delete_many(&keys).await;
        self.finish(KvOp::DeleteMany, started, result)
    }
}
