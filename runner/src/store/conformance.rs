//! The store's promises, written once; every backend runs them.
//!
//! A backend's test module invokes [`conformance_suite!`] with an expression
//! that makes a fresh, empty backend; the macro expands to one test per
//! promise. Calls go through the front ([`super::Namespace`]), as the host
//! makes them.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::{
    Backend, Bucket, Error, KeyPage, Namespace, Page, Quota, Quotas, Require, SetOptions, Swap,
    Swapped, Usage,
};

/// Makes a fresh, empty backend.
pub type Make<'a> = &'a dyn Fn() -> Arc<dyn Backend>;

/// Expands to one `#[tokio::test]` per promise, each on a fresh backend.
macro_rules! conformance_suite {
    ($make:expr) => {
        $crate::store::conformance::conformance_suite!($make, skip unless true);
    };
    // A backend that needs a service the machine may lack skips each test
    // where `$ready` is false.
    ($make:expr, skip unless $ready:expr) => {
        $crate::store::conformance::conformance_suite!(@tests $make, $ready;
            set_get_delete_round_trip,
            empty_and_default_name_one_bucket_and_others_are_apart,
            namespaces_do_not_share_keys,
            one_tenant_reaches_the_same_data_twice,
            reopening_applies_the_new_quotas,
            purge_empties_one_tenant_only,
            bucket_names_are_bounded,
            only_the_listed_buckets_open,
            size_quotas_refuse_whole_writes,
            accounting_is_exact_across_overwrites_and_deletes,
            increment_is_decimal_and_checked,
            concurrent_increments_add_up,
            signed_increments_count_on_the_same_decimal,
            compare_and_swap_compares_values,
            racing_compare_and_swaps_each_land_once,
            list_walk_returns_every_key_once_in_small_pages,
            list_walk_is_stable_under_concurrent_writes,
            list_pages_respect_the_call_size_limit,
            cursor_at_the_end_of_the_hash_space_is_an_empty_last_page,
            get_many_is_bounded_and_ordered,
            set_many_checks_sizes_before_writing,
            errors_start_with_their_token,
            batches_past_their_key_limit_are_refused_whole,
            an_expired_key_is_gone_from_every_read_and_gives_its_quota_back,
            expired_keys_are_reclaimed_with_no_request,
            a_write_without_expiry_makes_a_key_permanent,
            if_not_exists_lets_exactly_one_racing_writer_win,
            versioned_swaps_land_each_racing_increment_once,
            a_version_names_one_write_of_one_key,
            prefix_pages_list_each_key_once_in_order_under_writes
        );
    };
    (@tests $make:expr, $ready:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if !$ready {
                    return;
                }
                let make = || -> std::sync::Arc<dyn $crate::store::Backend> { std::sync::Arc::new($make) };
                $crate::store::conformance::$name(&make).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

fn ns_with(make: Make<'_>, quotas: Quotas) -> Namespace {
    Namespace::new(&*make(), "t", quotas).expect("a fresh backend opens a namespace")
}

fn ns(make: Make<'_>) -> Namespace {
    ns_with(make, Quotas::default())
}

/// A namespace whose list pages hold seven keys, so a walk takes many.
fn paged(make: Make<'_>) -> Namespace {
    ns_with(
        make,
        Quotas {
            max_page_keys: 7,
            ..Quotas::default()
        },
    )
}

async fn bucket(ns: &Namespace, name: &str) -> Bucket {
    ns.open(name).await.expect("opening a bucket")
}

pub async fn walk(bucket: &Bucket) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).await.expect("listing keys");
        keys.extend(page.keys);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return keys,
        }
    }
}

fn value(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

pub async fn set_get_delete_round_trip(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    assert_eq!(b.get("k").await.unwrap(), None);
    b.set("k".into(), value(b"v1")).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(b.exists("k").await.unwrap());
    b.set("k".into(), value(b"v22")).await.unwrap();
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v22"[..]));
    b.delete("k").await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None);
    assert!(!b.exists("k").await.unwrap());
    b.delete("k").await.unwrap();
}

pub async fn empty_and_default_name_one_bucket_and_others_are_apart(make: Make<'_>) {
    let ns = ns(make);
    bucket(&ns, "")
        .await
        .set("k".into(), value(b"v"))
        .await
        .unwrap();
    let default = bucket(&ns, "default").await;
    assert_eq!(default.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(bucket(&ns, "other").await.get("k").await.unwrap(), None);
}

pub async fn namespaces_do_not_share_keys(make: Make<'_>) {
    let backend = make();
    let a = Namespace::new(&*backend, "a", Quotas::default()).unwrap();
    let b = Namespace::new(&*backend, "b", Quotas::default()).unwrap();
    bucket(&a, "x")
        .await
        .set("k".into(), value(b"a"))
        .await
        .unwrap();
    let bx = bucket(&b, "x").await;
    assert_eq!(bx.get("k").await.unwrap(), None);
    assert!(!bx.exists("k").await.unwrap());
    assert!(walk(&bx).await.is_empty());
    assert_eq!(bx.increment("k".into(), 1).await.unwrap(), 1);
    assert_eq!(b.usage(), Usage { keys: 1, bytes: 2 });
    assert_eq!(
        bucket(&a, "x").await.get("k").await.unwrap().as_deref(),
        Some(&b"a"[..])
    );
}

pub async fn one_tenant_reaches_the_same_data_twice(make: Make<'_>) {
    let backend = make();
    let first = Namespace::new(&*backend, "a", Quotas::default()).unwrap();
    bucket(&first, "")
        .await
        .set("k".into(), value(b"v"))
        .await
        .unwrap();
    let again = Namespace::new(&*backend, "a", Quotas::default()).unwrap();
    let b = bucket(&again, "default").await;
    assert_eq!(b.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(again.usage(), Usage { keys: 1, bytes: 2 });
}

pub async fn reopening_applies_the_new_quotas(make: Make<'_>) {
    let backend = make();
    let quotas = |max_keys, max_buckets| Quotas {
        max_keys,
        max_buckets,
        ..Quotas::default()
    };
    let first = Namespace::new(&*backend, "a", quotas(3, 5)).unwrap();
    let b = bucket(&first, "").await;
    for k in ["k1", "k2"] {
        b.set(k.into(), value(b"v")).await.unwrap();
    }
    // Lowered below what it holds: the data stays, growth is refused,
    // through the old front as well as the new one.
    let lowered = Namespace::new(&*backend, "a", quotas(1, 0)).unwrap();
    let again = bucket(&lowered, "").await;
    assert_eq!(again.get("k2").await.unwrap().as_deref(), Some(&b"v"[..]));
    let err = b.set("k3".into(), value(b"v")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: the tenant holds 2 keys, the limit is 1"
    );
    let err = lowered.open("named").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: the tenant already has 0 named buckets, the limit"
    );
    again.delete("k1").await.unwrap();
    again.set("k2".into(), value(b"w")).await.unwrap();
    // Raised: room again.
    let raised = Namespace::new(&*backend, "a", quotas(10, 5)).unwrap();
    bucket(&raised, "")
        .await
        .set("k3".into(), value(b"v"))
        .await
        .unwrap();
    raised.open("named").await.unwrap();
    assert_eq!(raised.usage(), Usage { keys: 2, bytes: 6 });
}

pub async fn purge_empties_one_tenant_only(make: Make<'_>) {
    let backend = make();
    let a = Namespace::new(&*backend, "a", Quotas::default()).unwrap();
    let other = Namespace::new(&*backend, "b", Quotas::default()).unwrap();
    for ns in [&a, &other] {
        bucket(ns, "")
            .await
            .set("k".into(), value(b"v"))
            .await
            .unwrap();
        bucket(ns, "named")
            .await
            .set("n".into(), value(b"w"))
            .await
            .unwrap();
    }
    backend.purge("a").await.unwrap();
    let fresh = Namespace::new(&*backend, "a", Quotas::default()).unwrap();
    assert_eq!(fresh.usage(), Usage::default());
    assert_eq!(bucket(&fresh, "").await.get("k").await.unwrap(), None);
    assert!(walk(&bucket(&fresh, "named").await).await.is_empty());
    let kept = bucket(&other, "named").await;
    assert_eq!(kept.get("n").await.unwrap().as_deref(), Some(&b"w"[..]));
    assert_eq!(other.usage(), Usage { keys: 2, bytes: 4 });
    // Purging a tenant that holds nothing is no error.
    backend.purge("never").await.unwrap();
}

pub async fn bucket_names_are_bounded(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_buckets: 2,
            ..Quotas::default()
        },
    );
    let long = "b".repeat(256);
    assert!(matches!(ns.open(&long).await, Err(Error::Invalid(_))));
    ns.open(&"b".repeat(255)).await.unwrap();
    ns.open("two").await.unwrap();
    ns.open("two").await.unwrap();
    let err = ns.open("three").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: the tenant already has 2 named buckets, the limit"
    );
    ns.open("default").await.unwrap();
    ns.open("").await.unwrap();
}

pub async fn only_the_listed_buckets_open(make: Make<'_>) {
    let listed = |names: &[&str]| Quotas {
        max_buckets: 1,
        buckets: Some(names.iter().map(|n| n.to_string()).collect()),
        ..Quotas::default()
    };
    let ns = ns_with(make, listed(&["default", "cache"]));
    let err = ns.open("other").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "access-denied: bucket \"other\" is not among the tenant's key-value-stores"
    );
    // The refusal made no bucket: the one named bucket allowed is still free.
    bucket(&ns, "cache").await;
    bucket(&ns, "").await;
    bucket(&ns, "default").await;
    let none = Namespace::new(&*make(), "u", listed(&[])).unwrap();
    assert!(matches!(none.open("").await, Err(Error::Denied(_))));
    assert!(matches!(none.open("default").await, Err(Error::Denied(_))));
}

pub async fn size_quotas_refuse_whole_writes(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_key_bytes: 4,
            max_value_bytes: 8,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    b.set("four".into(), Bytes::from(vec![0; 8])).await.unwrap();
    let err = b.set("fives".into(), Bytes::new()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: key of 5 bytes is over the 4-byte limit"
    );
    let err = b
        .set("k".into(), Bytes::from(vec![0; 9]))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: value of 9 bytes is over the 8-byte limit"
    );
    let err = b.increment("fives".into(), 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Quota {
                quota: Quota::KeySize,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(ns.usage(), Usage { keys: 1, bytes: 12 });
}

pub async fn accounting_is_exact_across_overwrites_and_deletes(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_keys: 2,
            max_bytes: 20,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    let other = bucket(&ns, "other").await;
    b.set("a".into(), Bytes::from(vec![0; 9])).await.unwrap(); // 10 bytes
    other
        .set("b".into(), Bytes::from(vec![0; 4]))
        .await
        .unwrap(); // 5 bytes
    assert_eq!(ns.usage(), Usage { keys: 2, bytes: 15 });
    let err = b.set("c".into(), Bytes::new()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Quota {
                quota: Quota::Keys,
                ..
            }
        ),
        "{err}"
    );
    let err = b
        .set("a".into(), Bytes::from(vec![0; 15]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Quota {
                quota: Quota::Bytes,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        b.get("a").await.unwrap().unwrap().len(),
        9,
        "a refused write stores nothing"
    );
    b.set("a".into(), Bytes::from(vec![0; 1])).await.unwrap();
    assert_eq!(ns.usage(), Usage { keys: 2, bytes: 7 });
    other.delete("b").await.unwrap();
    b.set("c".into(), Bytes::from(vec![0; 12])).await.unwrap();
    assert_eq!(ns.usage(), Usage { keys: 2, bytes: 15 });
    b.delete("a").await.unwrap();
    b.delete("c").await.unwrap();
    assert_eq!(ns.usage(), Usage::default());
}

pub async fn increment_is_decimal_and_checked(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    assert_eq!(b.increment("n".into(), 5).await.unwrap(), 5);
    assert_eq!(b.increment("n".into(), 7).await.unwrap(), 12);
    assert_eq!(b.get("n").await.unwrap().as_deref(), Some(&b"12"[..]));
    b.set("s".into(), value(b"abc")).await.unwrap();
    assert!(matches!(
        b.increment("s".into(), 1).await,
        Err(Error::Invalid(_))
    ));
    b.set("m".into(), Bytes::from(u64::MAX.to_string()))
        .await
        .unwrap();
    let err = b.increment("m".into(), 1).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid-argument: incrementing 18446744073709551615 by 1 leaves the u64 range"
    );
    assert_eq!(
        b.get("m").await.unwrap().unwrap(),
        Bytes::from(u64::MAX.to_string())
    );
}

pub async fn signed_increments_count_on_the_same_decimal(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    assert_eq!(b.increment_signed("n".into(), -5).await.unwrap(), -5);
    assert_eq!(b.get("n").await.unwrap().as_deref(), Some(&b"-5"[..]));
    assert_eq!(
        b.increment("n".into(), 1).await.unwrap_err().to_string(),
        "invalid-argument: the value under \"n\" is not a decimal u64, so it cannot be incremented"
    );
    assert_eq!(b.increment_signed("n".into(), 7).await.unwrap(), 2);
    // Either kind counts on the other's decimal.
    assert_eq!(b.increment("n".into(), 3).await.unwrap(), 5);
    assert_eq!(b.increment_signed("n".into(), -5).await.unwrap(), 0);

    b.set("big".into(), Bytes::from(u64::MAX.to_string()))
        .await
        .unwrap();
    assert_eq!(
        b.increment_signed("big".into(), 0)
            .await
            .unwrap_err()
            .to_string(),
        "invalid-argument: the value under \"big\" is not a decimal i64, so it cannot be incremented"
    );
    for (start, delta) in [(i64::MAX, 1), (i64::MIN, -1)] {
        b.set("edge".into(), Bytes::from(start.to_string()))
            .await
            .unwrap();
        assert_eq!(
            b.increment_signed("edge".into(), delta)
                .await
                .unwrap_err()
                .to_string(),
            format!("invalid-argument: incrementing {start} by {delta} leaves the i64 range")
        );
        assert_eq!(
            b.get("edge").await.unwrap(),
            Some(Bytes::from(start.to_string()))
        );
    }
}

pub async fn compare_and_swap_compares_values(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_value_bytes: 4,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    let swap = |expected: Option<&'static [u8]>, new: &'static [u8]| {
        let b = b.clone();
        async move {
            b.compare_and_swap("k".into(), expected.map(Bytes::from_static), value(new))
                .await
        }
    };
    assert_eq!(swap(None, b"1").await.unwrap(), Swap::Done);
    assert_eq!(
        swap(None, b"x").await.unwrap(),
        Swap::Changed(Some(value(b"1")))
    );
    assert_eq!(
        swap(Some(b"0"), b"x").await.unwrap(),
        Swap::Changed(Some(value(b"1")))
    );
    assert_eq!(swap(Some(b"1"), b"22").await.unwrap(), Swap::Done);
    assert_eq!(b.get("k").await.unwrap(), Some(value(b"22")));
    assert_eq!(ns.usage(), Usage { keys: 1, bytes: 3 });
    assert!(matches!(
        swap(Some(b"22"), b"12345").await,
        Err(Error::Quota {
            quota: Quota::ValueSize,
            ..
        })
    ));
    assert_eq!(b.get("k").await.unwrap(), Some(value(b"22")));
    b.delete("k").await.unwrap();
    assert_eq!(swap(Some(b"22"), b"3").await.unwrap(), Swap::Changed(None));
    assert_eq!(b.get("k").await.unwrap(), None);
    assert_eq!(ns.usage(), Usage::default());
}

/// Runs `work` on eight tasks at once, each with its own handle on `b`.
async fn racing<F, Fut>(b: &Bucket, work: F)
where
    F: Fn(Bucket) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(work(b.clone()))).collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// The decimal a counter holds (`None`: absent, 0) plus one.
fn next_count(stored: Option<&[u8]>) -> Bytes {
    let n: u64 = stored.map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
    Bytes::from((n + 1).to_string())
}

pub async fn racing_compare_and_swaps_each_land_once(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    racing(&b, |b| async move {
        for _ in 0..250 {
            let mut seen = b.get("c").await.unwrap();
            loop {
                let next = next_count(seen.as_deref());
                match b.compare_and_swap("c".into(), seen, next).await.unwrap() {
                    Swap::Done => break,
                    Swap::Changed(now) => seen = now,
                }
            }
        }
    })
    .await;
    // 2,000 swaps each added one: none was lost and none counted twice.
    assert_eq!(b.get("c").await.unwrap().as_deref(), Some(&b"2000"[..]));
}

pub async fn concurrent_increments_add_up(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                for _ in 0..1000 {
                    b.increment("n".into(), 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(b.get("n").await.unwrap().as_deref(), Some(&b"4000"[..]));
}

pub async fn list_walk_returns_every_key_once_in_small_pages(make: Make<'_>) {
    let ns = paged(make);
    let b = bucket(&ns, "").await;
    for i in 0..500 {
        b.set(format!("k{i}"), Bytes::new()).await.unwrap();
    }
    let first = b.list_keys(None).await.unwrap();
    assert_eq!(first.keys.len(), 7);
    let keys = walk(&b).await;
    assert_eq!(keys.len(), 500);
    let unique: HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), 500);
}

pub async fn list_walk_is_stable_under_concurrent_writes(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_page_keys: 13,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    for i in 0..2000 {
        b.set(format!("stable{i}"), Bytes::new()).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = tokio::spawn({
        let (b, stop) = (b.clone(), stop.clone());
        async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                b.set(format!("churn{}", i % 300), Bytes::new())
                    .await
                    .unwrap();
                b.delete(&format!("churn{}", (i + 150) % 300))
                    .await
                    .unwrap();
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        }
    });
    let keys = walk(&b).await;
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    let stable: Vec<_> = keys.iter().filter(|k| k.starts_with("stable")).collect();
    let unique: HashSet<_> = stable.iter().collect();
    assert_eq!(stable.len(), 2000);
    assert_eq!(unique.len(), 2000);
}

pub async fn list_pages_respect_the_call_size_limit(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_call_bytes: 100,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    for i in 0..50 {
        b.set(format!("{i:0>10}"), Bytes::new()).await.unwrap();
    }
    let page = b.list_keys(None).await.unwrap();
    assert_eq!(page.keys.len(), 10);
    assert!(page.cursor.is_some());
    assert_eq!(walk(&b).await.len(), 50);
}

pub async fn cursor_at_the_end_of_the_hash_space_is_an_empty_last_page(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    b.set("k".into(), Bytes::new()).await.unwrap();
    assert_eq!(
        b.list_keys(Some(u64::MAX)).await.unwrap(),
        Page {
            keys: vec![],
            cursor: None
        }
    );
}

pub async fn get_many_is_bounded_and_ordered(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_call_bytes: 10,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    b.set("a".into(), value(b"1234")).await.unwrap();
    b.set("b".into(), value(b"1234")).await.unwrap();
    let got = b
        .get_many(vec!["b".into(), "x".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            Some(("b".into(), value(b"1234"))),
            None,
            Some(("a".into(), value(b"1234")))
        ]
    );
    let err = b
        .get_many(vec!["a".into(), "b".into(), "a".into()])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Quota {
            quota: Quota::CallSize,
            ..
        }
    ));
}

pub async fn set_many_checks_sizes_before_writing(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_value_bytes: 2,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    let err = b
        .set_many(vec![("a".into(), value(b"1")), ("b".into(), value(b"123"))])
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Quota {
            quota: Quota::ValueSize,
            ..
        }
    ));
    assert_eq!(b.get("a").await.unwrap(), None);
    b.set_many(vec![("a".into(), value(b"1"))]).await.unwrap();
    b.delete_many(&["a".into(), "zz".into()]).await.unwrap();
    assert_eq!(ns.usage(), Usage::default());
}

pub async fn errors_start_with_their_token(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_keys: 1,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    b.set("a".into(), Bytes::new()).await.unwrap();
    let quota = b.set("b".into(), Bytes::new()).await.unwrap_err();
    b.set("s".into(), Bytes::new()).await.unwrap_err();
    b.set("a".into(), value(b"x")).await.unwrap();
    let invalid = b.increment("a".into(), 1).await.unwrap_err();
    for (err, token) in [(quota, "quota-exceeded"), (invalid, "invalid-argument")] {
        assert_eq!(err.token(), token);
        assert!(err.to_string().starts_with(&format!("{token}: ")), "{err}");
    }
    let unavailable = Error::Unavailable("connection refused".into());
    assert_eq!(
        unavailable.to_string(),
        "store-unavailable: connection refused"
    );
}

pub async fn batches_past_their_key_limit_are_refused_whole(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_batch_keys: 100,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    let pairs = |n: usize| -> Vec<(String, Bytes)> {
        (0..n).map(|i| (format!("k{i}"), value(b"v"))).collect()
    };
    let err = b.set_many(pairs(101)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "quota-exceeded: a batch of 101 keys is over the 100-key limit"
    );
    assert!(matches!(
        err,
        Error::Quota {
            quota: Quota::BatchSize,
            ..
        }
    ));
    assert_eq!(ns.usage(), Usage::default(), "nothing was written");
    b.set_many(pairs(100)).await.unwrap();
    let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
    assert!(b.get_many(keys.clone()).await.is_err());
    assert!(b.delete_many(&keys).await.is_err());
    assert_eq!(ns.usage().keys, 100, "nothing was deleted");
    let got = b.get_many(keys[..100].to_vec()).await.unwrap();
    assert!(got.iter().all(Option::is_some));
    b.delete_many(&keys[..100]).await.unwrap();
    assert_eq!(ns.usage(), Usage::default());
}

fn expiring(ms: u64) -> SetOptions {
    SetOptions {
        ttl: Some(Duration::from_millis(ms)),
        if_absent: false,
    }
}

const IF_ABSENT: SetOptions = SetOptions {
    ttl: None,
    if_absent: true,
};

/// Waits until `ns` shows `usage`, for at most five seconds.
async fn settles_at(ns: &Namespace, usage: Usage) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ns.usage() != usage {
        assert!(
            std::time::Instant::now() < deadline,
            "usage {:?}, not {usage:?}",
            ns.usage()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn an_expired_key_is_gone_from_every_read_and_gives_its_quota_back(make: Make<'_>) {
    let ns = ns_with(
        make,
        Quotas {
            max_keys: 3,
            ..Quotas::default()
        },
    );
    let b = bucket(&ns, "").await;
    b.set_with("a".into(), value(b"1"), expiring(300))
        .await
        .unwrap();
    b.set_with("n".into(), value(b"5"), expiring(300))
        .await
        .unwrap();
    b.set("b".into(), value(b"22")).await.unwrap();
    // Before its time, it is there to every read.
    assert_eq!(b.get("a").await.unwrap(), Some(value(b"1")));
    assert_eq!(b.list_prefix("", None).await.unwrap().keys, ["a", "b", "n"]);
    assert_eq!(ns.usage(), Usage { keys: 3, bytes: 7 });
    assert_eq!(
        b.set("c".into(), value(b"3")).await.unwrap_err().token(),
        "quota-exceeded"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.get("a").await.unwrap(), None);
    assert!(!b.exists("a").await.unwrap());
    let many = b.get_many(vec!["a".into(), "b".into()]).await.unwrap();
    assert_eq!(many, [None, Some(("b".to_string(), value(b"22")))]);
    assert_eq!(b.current("a").await.unwrap(), None);
    assert_eq!(walk(&b).await, ["b"]);
    assert_eq!(b.list_prefix("", None).await.unwrap().keys, ["b"]);
    assert_eq!(
        b.list_prefix("a", None).await.unwrap().keys,
        Vec::<String>::new()
    );
    // Its quota is free for the next write, whether or not the reaper came.
    b.set("c".into(), value(b"3")).await.unwrap();
    assert_eq!(ns.usage(), Usage { keys: 2, bytes: 5 });
    // Writes treat it as absent.
    assert_eq!(b.increment("n".into(), 1).await.unwrap(), 1);
    b.delete("c").await.unwrap();
    assert!(
        b.set_with("a".into(), value(b"4"), IF_ABSENT)
            .await
            .unwrap()
    );
    assert_eq!(
        b.compare_and_swap("a".into(), None, value(b"x"))
            .await
            .unwrap(),
        Swap::Changed(Some(value(b"4")))
    );
    assert_eq!(ns.usage(), Usage { keys: 3, bytes: 7 });
}

pub async fn expired_keys_are_reclaimed_with_no_request(make: Make<'_>) {
    // The backend, and its reaper, live on as they do in the runner.
    let backend = make();
    let ns = Namespace::new(&*backend, "t", Quotas::default()).unwrap();
    let b = bucket(&ns, "").await;
    let other = bucket(&ns, "other").await;
    for i in 0..100 {
        let bucket = if i % 2 == 0 { &b } else { &other };
        bucket
            .set_with(format!("k{i:02}"), value(b"v"), expiring(50))
            .await
            .unwrap();
    }
    b.set("kept".into(), value(b"v")).await.unwrap();
    settles_at(&ns, Usage { keys: 1, bytes: 5 }).await;
    assert_eq!(walk(&b).await, ["kept"]);
    assert!(walk(&other).await.is_empty());
}

pub async fn a_write_without_expiry_makes_a_key_permanent(make: Make<'_>) {
    let backend = make();
    let ns = Namespace::new(&*backend, "t", Quotas::default()).unwrap();
    let b = bucket(&ns, "").await;
    for key in ["set", "incr", "cas", "swap", "again"] {
        b.set_with(key.into(), value(b"1"), expiring(150))
            .await
            .unwrap();
    }
    b.set("set".into(), value(b"2")).await.unwrap();
    assert_eq!(b.increment("incr".into(), 1).await.unwrap(), 2);
    assert_eq!(
        b.compare_and_swap("cas".into(), Some(value(b"1")), value(b"2"))
            .await
            .unwrap(),
        Swap::Done
    );
    let version = b.current("swap").await.unwrap().unwrap().version;
    let require = Require {
        version: Some(version),
        value: None,
    };
    assert_eq!(
        b.swap("swap".into(), value(b"2"), require).await.unwrap(),
        Swapped::Done
    );
    // An expiry set again replaces the first.
    b.set_with("again".into(), value(b"2"), expiring(2_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for key in ["set", "incr", "cas", "swap", "again"] {
        assert_eq!(b.get(key).await.unwrap(), Some(value(b"2")), "{key}");
    }
    settles_at(
        &ns,
        Usage {
            keys: 5,
            bytes: 4 + 5 + 4 + 5 + 6,
        },
    )
    .await;
}

pub async fn if_not_exists_lets_exactly_one_racing_writer_win(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let won = b
                    .set_with("lock".into(), Bytes::from(format!("w{i}")), IF_ABSENT)
                    .await
                    .unwrap();
                won.then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for writer in writers {
        winners.extend(writer.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = Bytes::from(format!("w{}", winners[0]));
    assert_eq!(b.get("lock").await.unwrap(), Some(winner));
}

pub async fn versioned_swaps_land_each_racing_increment_once(make: Make<'_>) {
    let b = bucket(&ns(make), "").await;
    racing(&b, |b| async move {
        for _ in 0..25 {
            let mut seen = b.current("c").await.unwrap();
            loop {
                let next = next_count(seen.as_ref().map(|v| &v.value[..]));
                let outcome = match &seen {
                    Some(v) => {
                        let require = Require {
                            version: Some(v.version.clone()),
                            value: None,
                        };
                        b.swap("c".into(), next, require).await.unwrap()
                    }
                    // An absent key has no version: set-if-absent creates it.
                    None => match b.set_with("c".into(), next, IF_ABSENT).await.unwrap() {
                        true => Swapped::Done,
                        false => Swapped::Stale(b.current("c").await.unwrap()),
                    },
                };
                match outcome {
                    Swapped::Done => break,
                    Swapped::Stale(now) => seen = now,
                }
            }
        }
    })
    .await;
    // 200 swaps each added one: none was lost and none counted twice.
    assert_eq!(b.get("c").await.unwrap(), Some(value(b"200")));
}

pub async fn a_version_names_one_write_of_one_key(make: Make<'_>) {
    let backend = make();
    let ns = Namespace::new(&*backend, "t", Quotas::default()).unwrap();
    let b = bucket(&ns, "").await;
    let named = bucket(&ns, "named").await;
    let other = Namespace::new(&*backend, "u", Quotas::default()).unwrap();
    let ob = bucket(&other, "").await;
    for bucket in [&b, &named, &ob] {
        for key in ["k", "j"] {
            bucket.set(key.into(), value(b"a")).await.unwrap();
        }
    }
    let first = b.current("k").await.unwrap().unwrap();
    // The same value written again is another write, with another version.
    b.set("k".into(), value(b"a")).await.unwrap();
    let second = b.current("k").await.unwrap().unwrap();
    assert_eq!(first.value, second.value);
    assert_ne!(first.version, second.version);
    let by = |version: String| Require {
        version: Some(version),
        value: None,
    };
    // A stale token, or one of another key, bucket or tenant, or none of
    // ours at all: stale, with the entry as it is.
    let foreign = [
        first.version.clone(),
        b.current("j").await.unwrap().unwrap().version,
        named.current("k").await.unwrap().unwrap().version,
        ob.current("k").await.unwrap().unwrap().version,
        "not a token".to_string(),
        String::new(),
    ];
    for token in foreign {
        assert_eq!(
            b.swap("k".into(), value(b"b"), by(token.clone()))
                .await
                .unwrap(),
            Swapped::Stale(Some(second.clone())),
            "{token:?}"
        );
    }
    // Version and value both required: both must hold.
    let both = |v: &'static [u8]| Require {
        version: Some(second.version.clone()),
        value: Some(value(v)),
    };
    assert_eq!(
        b.swap("k".into(), value(b"b"), both(b"z")).await.unwrap(),
        Swapped::Stale(Some(second.clone()))
    );
    assert_eq!(
        b.swap("k".into(), value(b"b"), both(b"a")).await.unwrap(),
        Swapped::Done
    );
    assert_eq!(b.get("k").await.unwrap(), Some(value(b"b")));
    // An absent key meets no version.
    assert_eq!(
        b.swap("absent".into(), value(b"b"), by(second.version.clone()))
            .await
            .unwrap(),
        Swapped::Stale(None)
    );
    // Every kind of write gives a new version.
    let mut seen = HashSet::new();
    seen.insert(b.current("j").await.unwrap().unwrap().version);
    b.increment("n".into(), 1).await.unwrap();
    seen.insert(b.current("n").await.unwrap().unwrap().version);
    b.increment("n".into(), 1).await.unwrap();
    seen.insert(b.current("n").await.unwrap().unwrap().version);
    b.compare_and_swap("j".into(), Some(value(b"a")), value(b"a"))
        .await
        .unwrap();
    seen.insert(b.current("j").await.unwrap().unwrap().version);
    b.set_many(vec![("j".into(), value(b"a"))]).await.unwrap();
    seen.insert(b.current("j").await.unwrap().unwrap().version);
    b.set_with("j".into(), value(b"a"), expiring(60_000))
        .await
        .unwrap();
    seen.insert(b.current("j").await.unwrap().unwrap().version);
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert_eq!(
        ob.current("k").await.unwrap().map(|v| v.value),
        Some(value(b"a"))
    );
}

pub async fn prefix_pages_list_each_key_once_in_order_under_writes(make: Make<'_>) {
    let ns = paged(make);
    let b = bucket(&ns, "").await;
    let mut expected = Vec::new();
    let pairs: Vec<(String, Bytes)> = (0..300)
        .flat_map(|i| [format!("p/{i:03}"), format!("q/{i:03}")])
        .map(|k| (k, Bytes::new()))
        .collect();
    for chunk in pairs.chunks(100) {
        b.set_many(chunk.to_vec()).await.unwrap();
    }
    expected.extend((0..300).map(|i| format!("p/{i:03}")));
    // Keys under the prefix come and go while the walk runs; the ones that
    // stay put are each seen once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for round in 0.. {
        b.set(format!("p/{round:03}x"), Bytes::new()).await.unwrap();
        if round > 0 {
            b.delete(&format!("p/{:03}x", round - 1)).await.unwrap();
        }
        let page = b.list_prefix("p/", cursor.as_deref()).await.unwrap();
        assert!(page.keys.len() <= 7);
        seen.extend(page.keys.into_iter().filter(|k| !k.ends_with('x')));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // A cursor before the prefix starts at the prefix; one past it ends.
    let page = b.list_prefix("q/", Some("a")).await.unwrap();
    assert_eq!(page.keys[..2], ["q/000", "q/001"]);
    let page = b.list_prefix("q/", Some("r")).await.unwrap();
    assert_eq!(
        page,
        KeyPage {
            keys: Vec::new(),
            next: None
        }
    );
    // The last page says so: no cursor after it.
    let page = b.list_prefix("q/29", None).await.unwrap();
    assert_eq!(page.keys.len(), 7);
    let rest = b.list_prefix("q/29", page.next.as_deref()).await.unwrap();
    assert_eq!(
        rest,
        KeyPage {
            keys: vec!["q/297".into(), "q/298".into(), "q/299".into()],
            next: None
        }
    );
}
