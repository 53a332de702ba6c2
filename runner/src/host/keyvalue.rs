//! `wasi:keyvalue` (store, atomics, batch) over the tenant's namespace of
//! the [`crate::store`], in two versions on the same data: `0.2.0-draft`
//! (wasmtime's) and `0.2.0-draft2` (Spin's: string cursors, a signed
//! increment, compare-and-swap). A bucket is the same host resource in both.
//!
//! The calls are async, so a backend may wait on a disk or a network; the
//! in-memory backend is ready at the first poll, and no lock is held
//! across an await or a call into the guest. Where the store's reads never
//! wait (in memory, with or without a data directory), `get` and `exists`
//! are linked as synchronous imports instead ([`super::link_ready_reads`]).

use bytes::Bytes;
use wasmtime::component::{ComponentType, Linker, Lower, Resource, WasmStr};

use super::Host;
use super::bindings::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use super::bindings::wasi::keyvalue0_2_0_draft2::{
    atomics as atomics2, batch as batch2, store as store2,
};
use crate::metrics::{KvOp, Stopwatch};
use crate::store::{Bucket, Error, Swap};

/// What a guest's `bucket` resource points at.
pub struct BucketHandle(pub(super) Bucket);

/// A draft2 compare-and-swap in progress: the key and the value it had
/// when the handle was made, which `swap` expects to find still there.
pub struct CasHandle {
    bucket: Bucket,
    key: String,
    seen: Option<Bytes>,
}

type KvResult<T> = wasmtime::Result<Result<T, store::Error>>;
type KvResult2<T> = wasmtime::Result<Result<T, store2::Error>>;

/// A draft error as draft2 spells it: the same variants.
fn draft2(error: store::Error) -> store2::Error {
    match error {
        store::Error::NoSuchStore => store2::Error::NoSuchStore,
        store::Error::AccessDenied => store2::Error::AccessDenied,
        store::Error::Other(text) => store2::Error::Other(text),
    }
}

/// Draft2 list-keys cursors are strings: the draft's u64 cursor in decimal.
fn parse_cursor(cursor: Option<String>) -> Result<Option<u64>, Error> {
    cursor
        .map(|text| {
            text.parse().map_err(|_| {
                Error::Invalid(format!("{text:?} is not a cursor this store returned"))
            })
        })
        .transpose()
}

impl Host {
    pub(super) fn bucket(&self, handle: &Resource<BucketHandle>) -> wasmtime::Result<&Bucket> {
        Ok(&self.table.get(handle)?.0)
    }

    /// Records the call in the tenant's metrics and turns a store error into
    /// the WIT error the guest sees.
    fn finish<T>(&self, op: KvOp, started: Stopwatch, result: Result<T, Error>) -> KvResult<T> {
        Ok(self.record(op, started, result).map_err(wit_error))
    }

    /// Records the call in the tenant's metrics.
    fn record<T>(
        &self,
        op: KvOp,
        started: Stopwatch,
        result: Result<T, Error>,
    ) -> Result<T, Error> {
        self.tenant
            .metrics()
            .kv_op(op, started, result.as_ref().err());
        result
    }

    /// `get` for [`super::link_ready_reads`], with the async import's
    /// answer and metrics; each interface spells the error its own way.
    pub(super) fn get_now(
        &self,
        b: &Resource<BucketHandle>,
        key: &str,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let started = Stopwatch::now();
        let value = self.bucket(b)?.get_now(key).unwrap_or_else(super::waits);
        Ok(self.record(KvOp::Get, started, value))
    }

    /// `exists` for [`super::link_ready_reads`], as [`Host::get_now`].
    pub(super) fn exists_now(
        &self,
        b: &Resource<BucketHandle>,
        key: &str,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let started = Stopwatch::now();
        let found = self.bucket(b)?.exists_now(key).unwrap_or_else(super::waits);
        Ok(self.record(KvOp::Exists, started, found))
    }
}

/// A store error as the drafts spell it: `access-denied` for a bucket
/// outside the tenant's `key-value-stores`, otherwise `other`, with the
/// error's text, which starts with its stable token.
fn wit_error(error: Error) -> store::Error {
    match error {
        Error::Denied(_) => store::Error::AccessDenied,
        e => store::Error::Other(e.to_string()),
    }
}

/// `get` and `exists` of both `wasi:keyvalue` drafts as synchronous
/// imports; see [`super::link_ready_reads`].
pub(super) fn link_ready_reads(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    let (first, second) = (
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:keyvalue/store@0.2.0-draft2",
    );
    link_reads(linker, first, "[method]bucket", wit_error)?;
    link_reads(linker, second, "[method]bucket", |e| draft2(wit_error(e)))
}

/// Links `{resource}.get` and `{resource}.exists` of `interface` as
/// synchronous imports over [`Host::get_now`] and [`Host::exists_now`],
/// a store error spelt the interface's way by `spell`.
pub(super) fn link_reads<E>(
    linker: &mut Linker<Host>,
    interface: &str,
    resource: &str,
    spell: fn(Error) -> E,
) -> wasmtime::Result<()>
where
    E: ComponentType + Lower + Send + Sync + 'static,
{
    type Params = (Resource<BucketHandle>, WasmStr);
    let mut instance = linker.instance(interface)?;
    instance.func_wrap(
        &format!("{resource}.get"),
        move |store, (b, key): Params| {
            let key = key.to_str(&store)?;
            Ok((store.data().get_now(&b, &key)?.map_err(spell),))
        },
    )?;
    instance.func_wrap(
        &format!("{resource}.exists"),
        move |store, (b, key): Params| {
            let key = key.to_str(&store)?;
            Ok((store.data().exists_now(&b, &key)?.map_err(spell),))
        },
    )?;
    Ok(())
}

impl store::Host for Host {
    async fn open(&mut self, identifier: String) -> KvResult<Resource<BucketHandle>> {
        let started = Stopwatch::now();
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
        let started = Stopwatch::now();
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
        let started = Stopwatch::now();
        let result = self.bucket(&b)?.set(key, Bytes::from(value)).await;
        self.finish(KvOp::Set, started, result)
    }

    async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult<()> {
        let started = Stopwatch::now();
        let result = self.bucket(&b)?.delete(&key).await;
        self.finish(KvOp::Delete, started, result)
    }

    async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult<bool> {
        let started = Stopwatch::now();
        let found = self.bucket(&b)?.exists(&key).await;
        self.finish(KvOp::Exists, started, found)
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<u64>,
    ) -> KvResult<store::KeyResponse> {
        let started = Stopwatch::now();
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
        let started = Stopwatch::now();
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
        let started = Stopwatch::now();
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
        let started = Stopwatch::now();
        let pairs = key_values
            .into_iter()
            .map(|(k, v)| (k, Bytes::from(v)))
            .collect();
        let result = self.bucket(&b)?.set_many(pairs).await;
        self.finish(KvOp::SetMany, started, result)
    }

    async fn delete_many(&mut self, b: Resource<BucketHandle>, keys: Vec<String>) -> KvResult<()> {
        let started = Stopwatch::now();
        let result = self.bucket(&b)?.delete_many(&keys).await;
        self.finish(KvOp::DeleteMany, started, result)
    }
}

impl store2::Host for Host {
    async fn open(&mut self, identifier: String) -> KvResult2<Resource<BucketHandle>> {
        Ok(store::Host::open(self, identifier).await?.map_err(draft2))
    }
}

impl store2::HostBucket for Host {
    async fn get(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult2<Option<Vec<u8>>> {
        Ok(store::HostBucket::get(self, b, key).await?.map_err(draft2))
    }

    async fn set(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> KvResult2<()> {
        Ok(store::HostBucket::set(self, b, key, value)
            .await?
            .map_err(draft2))
    }

    async fn delete(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult2<()> {
        Ok(store::HostBucket::delete(self, b, key)
            .await?
            .map_err(draft2))
    }

    async fn exists(&mut self, b: Resource<BucketHandle>, key: String) -> KvResult2<bool> {
        Ok(store::HostBucket::exists(self, b, key)
            .await?
            .map_err(draft2))
    }

    async fn list_keys(
        &mut self,
        b: Resource<BucketHandle>,
        cursor: Option<String>,
    ) -> KvResult2<store2::KeyResponse> {
        let started = Stopwatch::now();
        let page = match parse_cursor(cursor) {
            Ok(cursor) => self.bucket(&b)?.list_keys(cursor).await,
            Err(e) => Err(e),
        };
        let response = page.map(|page| store2::KeyResponse {
            keys: page.keys,
            cursor: page.cursor.map(|c| c.to_string()),
        });
        Ok(self
            .finish(KvOp::ListKeys, started, response)?
            .map_err(draft2))
    }

    async fn drop(&mut self, b: Resource<BucketHandle>) -> wasmtime::Result<()> {
        store::HostBucket::drop(self, b).await
    }
}

impl atomics2::Host for Host {
    async fn increment(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
        delta: i64,
    ) -> KvResult2<i64> {
        let started = Stopwatch::now();
        let result = self.bucket(&b)?.increment_signed(key, delta).await;
        Ok(self
            .finish(KvOp::Increment, started, result)?
            .map_err(draft2))
    }

    async fn swap(
        &mut self,
        cas: Resource<CasHandle>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics2::CasError>> {
        let started = Stopwatch::now();
        let CasHandle { bucket, key, seen } = self.table.delete(cas)?;
        let result = bucket
            .compare_and_swap(key.clone(), seen, Bytes::from(value))
            .await;
        Ok(match self.finish(KvOp::Swap, started, result)? {
            Ok(Swap::Done) => Ok(()),
            // The WIT asks for a handle brought up to date, for the retry.
            Ok(Swap::Changed(now)) => {
                let handle = self.table.push(CasHandle {
                    bucket,
                    key,
                    seen: now,
                })?;
                Err(atomics2::CasError::CasFailed(handle))
            }
            Err(e) => Err(atomics2::CasError::StoreError(draft2(e))),
        })
    }
}

impl atomics2::HostCas for Host {
    async fn new(
        &mut self,
        b: Resource<BucketHandle>,
        key: String,
    ) -> KvResult2<Resource<CasHandle>> {
        let started = Stopwatch::now();
        let bucket = self.bucket(&b)?.clone();
        let seen = bucket.get(&key).await;
        Ok(match self.finish(KvOp::Get, started, seen)? {
            Ok(seen) => Ok(self.table.push(CasHandle { bucket, key, seen })?),
            Err(e) => Err(draft2(e)),
        })
    }

    async fn current(&mut self, cas: Resource<CasHandle>) -> KvResult2<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.seen.as_ref().map(|v| v.to_vec())))
    }

    async fn drop(&mut self, cas: Resource<CasHandle>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch2::Host for Host {
    /// Spin's shape: each key with its value or `None`, in request order.
    async fn get_many(
        &mut self,
        b: Resource<BucketHandle>,
        keys: Vec<String>,
    ) -> KvResult2<Vec<(String, Option<Vec<u8>>)>> {
        let started = Stopwatch::now();
        let bucket = self.bucket(&b)?;
        let result = bucket.get_many(keys.clone()).await.map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(key, pair)| (key, pair.map(|(_, v)| v.to_vec())))
                .collect()
        });
        Ok(self.finish(KvOp::GetMany, started, result)?.map_err(draft2))
    }

    async fn set_many(
        &mut self,
        b: Resource<BucketHandle>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> KvResult2<()> {
        Ok(batch::Host::set_many(self, b, key_values)
            .await?
            .map_err(draft2))
    }

    async fn delete_many(&mut self, b: Resource<BucketHandle>, keys: Vec<String>) -> KvResult2<()> {
        Ok(batch::Host::delete_many(self, b, keys)
            .await?
            .map_err(draft2))
    }
}
