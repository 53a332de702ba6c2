//! Spin's key-value interfaces over the tenant's namespace of the
//! [`crate::store`], on the same buckets and data as `wasi:keyvalue` and
//! `wasmcloud:keyvalue` (a store is the same host resource as a bucket):
//! `fermyon:spin/key-value@2.0.0`, which Spin's WASIp2 SDKs import, and
//! `spin:key-value/key-value@3.0.0`, which Spin SDK 7 (WASIp3) imports,
//! every function an `async func`.
//!
//! A label is a bucket's name, `"default"` the default bucket, as in
//! Spin's host; one outside the tenant's `key-value-stores` is refused with
//! `access-denied`, which Spin's host answers for a label its manifest does
//! not list. 3.0.0's `get-keys` streams the bucket a page at a time, so the
//! host holds one page whatever the bucket holds; 2.0.0's answers a list,
//! and a bucket larger than one page is refused with `quota-exceeded`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::oneshot;
use wasmtime::StoreContextMut;
use wasmtime::component::{
    Accessor, Destination, FutureReader, Linker, Resource, StreamProducer, StreamReader,
    StreamResult, VecBuffer,
};

use super::bindings::fermyon::spin::key_value as v2;
use super::bindings::spin::key_value::key_value as v3;
use super::wasmcloud::bucket;
use super::{BucketHandle, Host, HostData};
use crate::metrics::{KvOp, Stopwatch};
use crate::store::{self as kv, Bucket, Page, Quota};
use crate::tenant::scope::Scope;

/// Spin's error for a store error: `access-denied` for a label outside the
/// tenant's list, otherwise `other` with the error's text, which starts
/// with its stable token (as the other interfaces' `other` does).
fn spin2(error: kv::Error) -> v2::Error {
    match error {
        kv::Error::Denied(_) => v2::Error::AccessDenied,
        other => v2::Error::Other(other.to_string()),
    }
}

fn spin3(error: kv::Error) -> v3::Error {
    match error {
        kv::Error::Denied(_) => v3::Error::AccessDenied,
        other => v3::Error::Other(other.to_string()),
    }
}

/// Records the call in the tenant's metrics.
fn record<T>(
    tenant: &Scope,
    op: KvOp,
    started: Stopwatch,
    result: Result<T, kv::Error>,
) -> Result<T, kv::Error> {
    tenant.metrics().kv_op(op, started, result.as_ref().err());
    result
}

/// The bucket's keys as one list, for 2.0.0's `get-keys`: one page, or
/// `quota-exceeded` when the bucket holds more than a page.
async fn all_keys(bucket: &Bucket) -> Result<Vec<String>, kv::Error> {
    let Page { keys, cursor } = bucket.list_keys(None).await?;
    if cursor.is_some() {
        let limits = bucket.page_limits();
        return Err(kv::Error::quota(
            Quota::CallSize,
            format!(
                "the bucket holds more keys than one call may return \
                 (max-page-keys {}, max-call-bytes {}); \
                 spin:key-value@3.0.0's get-keys and wasi:keyvalue's list-keys walk it all",
                limits.max_keys,
                bytesize::ByteSize(limits.max_bytes as u64),
            ),
        ));
    }
    Ok(keys)
}

type Answer2<T> = wasmtime::Result<Result<T, v2::Error>>;

impl v2::Host for Host {}

/// `get` and `exists` of `fermyon:spin/key-value@2.0.0` as synchronous
/// imports, for a store whose reads never wait; see
/// [`super::link_ready_reads`].
pub(super) fn link_ready_reads(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    let interface = "fermyon:spin/key-value@2.0.0";
    super::keyvalue::link_reads(linker, interface, "[method]store", spin2)
}

impl v2::HostStore for Host {
    async fn open(&mut self, label: String) -> Answer2<Resource<BucketHandle>> {
        let started = Stopwatch::now();
        let opened = self.tenant.namespace().open(&label).await;
        Ok(match record(&self.tenant, KvOp::Open, started, opened) {
            Ok(bucket) => Ok(self.table.push(BucketHandle(bucket))?),
            Err(e) => Err(spin2(e)),
        })
    }

    async fn get(&mut self, this: Resource<BucketHandle>, key: String) -> Answer2<Option<Vec<u8>>> {
        let started = Stopwatch::now();
        let value = self.bucket(&this)?.get(&key).await;
        let value = value.map(|v| v.map(|v| v.to_vec()));
        Ok(record(&self.tenant, KvOp::Get, started, value).map_err(spin2))
    }

    async fn set(
        &mut self,
        this: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Answer2<()> {
        let started = Stopwatch::now();
        let result = self.bucket(&this)?.set(key, Bytes::from(value)).await;
        Ok(record(&self.tenant, KvOp::Set, started, result).map_err(spin2))
    }

    async fn delete(&mut self, this: Resource<BucketHandle>, key: String) -> Answer2<()> {
        let started = Stopwatch::now();
        let result = self.bucket(&this)?.delete(&key).await;
        Ok(record(&self.tenant, KvOp::Delete, started, result).map_err(spin2))
    }

    async fn exists(&mut self, this: Resource<BucketHandle>, key: String) -> Answer2<bool> {
        let started = Stopwatch::now();
        let found = self.bucket(&this)?.exists(&key).await;
        Ok(record(&self.tenant, KvOp::Exists, started, found).map_err(spin2))
    }

    async fn get_keys(&mut self, this: Resource<BucketHandle>) -> Answer2<Vec<String>> {
        let started = Stopwatch::now();
        let keys = all_keys(self.bucket(&this)?).await;
        Ok(record(&self.tenant, KvOp::ListKeys, started, keys).map_err(spin2))
    }

    async fn drop(&mut self, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

type Answer3<T> = wasmtime::Result<Result<T, v3::Error>>;

impl<T: Send> v3::HostStoreWithStore<T> for HostData {
    async fn open(accessor: &Accessor<T, Self>, label: String) -> Answer3<Resource<BucketHandle>> {
        let started = Stopwatch::now();
        let tenant = accessor.with(|mut access| access.get().tenant.clone());
        let opened = tenant.namespace().open(&label).await;
        Ok(match record(&tenant, KvOp::Open, started, opened) {
            Ok(bucket) => {
                Ok(accessor.with(|mut access| access.get().table.push(BucketHandle(bucket)))?)
            }
            Err(e) => Err(spin3(e)),
        })
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Answer3<Option<Vec<u8>>> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let value = bucket.get(&key).await.map(|v| v.map(|v| v.to_vec()));
        Ok(record(&tenant, KvOp::Get, started, value).map_err(spin3))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
        value: Vec<u8>,
    ) -> Answer3<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let result = bucket.set(key, Bytes::from(value)).await;
        Ok(record(&tenant, KvOp::Set, started, result).map_err(spin3))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Answer3<()> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let result = bucket.delete(&key).await;
        Ok(record(&tenant, KvOp::Delete, started, result).map_err(spin3))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
        key: String,
    ) -> Answer3<bool> {
        let started = Stopwatch::now();
        let (bucket, tenant) = bucket(accessor, &this)?;
        let found = bucket.exists(&key).await;
        Ok(record(&tenant, KvOp::Exists, started, found).map_err(spin3))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        this: Resource<BucketHandle>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let (bucket, tenant) = bucket(accessor, &this)?;
        let (done, result) = oneshot::channel();
        let keys = KeyStream {
            bucket,
            tenant,
            cursor: None,
            fetching: None,
            done: Some(done),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let result = FutureReader::new(&mut access, result)?;
            Ok((keys, result))
        })
    }
}

impl v3::HostStore for Host {
    fn drop(&mut self, this: Resource<BucketHandle>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl v3::Host for Host {}

type Fetch = Pin<Box<dyn Future<Output = Result<Page, kv::Error>> + Send>>;

/// 3.0.0's `get-keys` stream: the bucket's keys, one page read from the
/// store per guest read, so the host holds at most one page. The cursor
/// walk gives each key that exists throughout the walk exactly once. Its
/// end, or the store's error, goes to the future beside it.
struct KeyStream {
    bucket: Bucket,
    tenant: Arc<Scope>,
    /// Where the next page starts.
    cursor: Option<u64>,
    /// The page being read.
    fetching: Option<Fetch>,
    /// The future's sender, until the walk ends.
    done: Option<oneshot::Sender<Result<(), v3::Error>>>,
}

impl KeyStream {
    fn end(&mut self, result: Result<(), v3::Error>) -> Poll<wasmtime::Result<StreamResult>> {
        if let Some(done) = self.done.take() {
            // The guest may have dropped the future: nothing to tell.
            let _ = done.send(result);
        }
        Poll::Ready(Ok(StreamResult::Dropped))
    }
}

impl<D> StreamProducer<D> for KeyStream {
    type Item = String;
    type Buffer = VecBuffer<String>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        _: StoreContextMut<'a, D>,
        mut destination: Destination<'a, String, VecBuffer<String>>,
        finish: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = self.get_mut();
        if this.done.is_none() {
            return Poll::Ready(Ok(StreamResult::Dropped));
        }
        loop {
            let fetch = this.fetching.get_or_insert_with(|| {
                let bucket = this.bucket.clone();
                let cursor = this.cursor;
                let started = Stopwatch::now();
                let tenant = this.tenant.clone();
                Box::pin(async move {
                    let page = bucket.list_keys(cursor).await;
                    record(&tenant, KvOp::ListKeys, started, page)
                })
            });
            let page = match fetch.as_mut().poll(cx) {
                Poll::Pending if finish => {
                    // A read is only a read: dropping it leaves nothing
                    // behind, and the next read starts the page again.
                    this.fetching = None;
                    return Poll::Ready(Ok(StreamResult::Cancelled));
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(page) => page,
            };
            this.fetching = None;
            match page {
                Err(e) => return this.end(Err(spin3(e))),
                // A page may come back empty with more after it (every key
                // in it was deleted meanwhile): read on.
                Ok(Page {
                    keys,
                    cursor: Some(cursor),
                }) if keys.is_empty() => {
                    this.cursor = Some(cursor);
                }
                Ok(Page { keys, cursor }) => {
                    destination.set_buffer(keys.into());
                    this.cursor = cursor;
                    return match cursor {
                        Some(_) => Poll::Ready(Ok(StreamResult::Completed)),
                        None => this.end(Ok(())),
                    };
                }
            }
        }
    }
}

impl Drop for KeyStream {
    /// A guest that drops the stream before its end still gets its future
    /// resolved: no error happened.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(Ok(()));
        }
    }
}
