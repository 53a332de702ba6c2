//! The key-value interfaces end to end: round trips, buckets, counters,
//! list walks under writes, batches, value sizes, and draft2 on the same
//! data.

use std::collections::HashSet;

use http::{Method, StatusCode};

use crate::harness::{InProcess, Tenants, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_value_round_trip_and_values_persist_across_requests() {
    let r = InProcess::start(&["--tenants", "2"]);
    let res = request(
        r.addr,
        Method::PUT,
        "/t/t0/kv/greeting",
        b"hello there".to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    for _ in 0..3 {
        let res = get(r.addr, "/t/t0/kv/greeting").await;
        assert_eq!(
            (res.status, res.text().as_str()),
            (StatusCode::OK, "hello there")
        );
    }
    assert_eq!(get(r.addr, "/t/t0/exists/greeting").await.text(), "true");
    let res = request(r.addr, Method::DELETE, "/t/t0/kv/greeting", vec![]).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = get(r.addr, "/t/t0/kv/greeting").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (StatusCode::NOT_FOUND, "key not found")
    );
    assert_eq!(get(r.addr, "/t/t0/exists/greeting").await.text(), "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_default_bucket_names_are_one_bucket() {
    let r = InProcess::start(&[]);
    request(
        r.addr,
        Method::PUT,
        "/t/t0/kv/k?bucket=default",
        b"v".to_vec(),
    )
    .await;
    assert_eq!(get(r.addr, "/t/t0/kv/k").await.text(), "v");
    assert_eq!(get(r.addr, "/t/t0/kv/k?bucket=").await.text(), "v");
    assert_eq!(
        get(r.addr, "/t/t0/kv/k?bucket=other").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_add_up_exactly() {
    let r = InProcess::start(&[]);
    let addr = r.addr;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(
                async move { request(addr, Method::POST, "/t/t0/incr/counter", vec![]).await },
            )
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        seen.insert(res.text());
    }
    assert_eq!(seen.len(), 200, "every increment saw a distinct total");
    assert_eq!(get(addr, "/t/t0/kv/counter").await.text(), "200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_walk_returns_each_unchanged_key_once_under_concurrent_writes() {
    let r = InProcess::start(&["--max-page-keys", "300"]);
    let addr = r.addr;
    let pairs: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("stable-{i}"), "x".into()))
        .collect();
    for chunk in pairs.chunks(500) {
        let body: serde_json::Map<String, serde_json::Value> = chunk
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        let res = request(
            addr,
            Method::POST,
            "/t/t0/batch/set",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(res.status, StatusCode::NO_CONTENT);
    }
    let writer = tokio::spawn(async move {
        for i in 0..400 {
            let path = format!("/t/t0/kv/churn-{}", i % 50);
            let method = if i % 3 == 0 {
                Method::DELETE
            } else {
                Method::PUT
            };
            request(addr, method, &path, b"y".to_vec()).await;
        }
    });
    let mut stable = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/t/t0/keys?cursor={c}"),
            None => "/t/t0/keys".into(),
        };
        let page = get(addr, &path).await.json();
        pages += 1;
        for k in page["keys"].as_array().unwrap() {
            let k = k.as_str().unwrap();
            if k.starts_with("stable-") {
                stable.push(k.to_string());
            }
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    writer.await.unwrap();
    let unique: HashSet<_> = stable.iter().collect();
    assert_eq!(stable.len(), 5000);
    assert_eq!(unique.len(), 5000);
    assert!(
        pages >= 17,
        "5000 keys in pages of at most 300 take at least 17 pages, took {pages}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_operations() {
    let r = InProcess::start(&[]);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/set",
        br#"{"a":"1","b":"2","c":"3"}"#.to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        br#"["c","missing","a"]"#.to_vec(),
    )
    .await;
    assert_eq!(
        res.json(),
        serde_json::json!({"c": "3", "missing": null, "a": "1"})
    );
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/delete",
        br#"["a","b"]"#.to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        br#"["a","b","c"]"#.to_vec(),
    )
    .await;
    assert_eq!(
        res.json(),
        serde_json::json!({"a": null, "b": null, "c": "3"})
    );
    let res = request(
        r.addr,
        Method::POST,
        "/t/t0/batch/get",
        b"not json".to_vec(),
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_value_round_trips_and_one_byte_more_is_refused() {
    let r = InProcess::start(&[]);
    let value: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let res = request(r.addr, Method::PUT, "/t/t0/kv/big", value.clone()).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT);
    let res = get(r.addr, "/t/t0/kv/big").await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body == value, "the value came back changed");
    let mut over = value;
    over.push(0);
    let res = request(r.addr, Method::PUT, "/t/t0/kv/big", over).await;
    assert_eq!(res.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        res.text(),
        "store error: quota-exceeded: value of 1048577 bytes is over the 1048576-byte limit"
    );
    assert_eq!(
        get(r.addr, "/t/t0/kv/big").await.body.len(),
        1 << 20,
        "the refused write stored nothing"
    );
}

/// Guests racing to compare-and-swap one key through draft2, each retrying
/// on `cas-failed` with the handle it gives back: every swap lands exactly
/// once, and the draft routes read the same counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_compare_and_swaps_through_draft2_each_land_once() {
    let r = InProcess::start_with(&Tenants::new().hostile("spin", ""), &[]);
    let addr = r.addr;
    const GUESTS: usize = 16;
    const SWAPS: usize = 25;
    let tasks: Vec<_> = (0..GUESTS)
        .map(|_| {
            tokio::spawn(async move {
                let mut values = Vec::new();
                for _ in 0..SWAPS {
                    let res = request(addr, Method::POST, "/t/spin/cas/n", vec![]).await;
                    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
                    let text = res.text();
                    let (value, _retries) = text.split_once(' ').unwrap();
                    values.push(value.parse::<usize>().unwrap());
                }
                values
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in tasks {
        for value in t.await.unwrap() {
            assert!(seen.insert(value), "two swaps both wrote {value}");
        }
    }
    let total = GUESTS * SWAPS;
    assert_eq!(seen, (1..=total).collect::<HashSet<_>>());
    assert_eq!(get(addr, "/t/spin/kv/n").await.text(), total.to_string());

    // A write between taking the handle and swapping fails the swap; the
    // handle it gives back has the new value, and the retry lands.
    let res = request(addr, Method::POST, "/t/spin/cas/m?interfere", vec![]).await;
    assert_eq!(res.text(), "2 1");
}

/// Draft2's signed increment, its string cursors and its errors, on the
/// same data the draft routes see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft2_counts_and_lists_on_the_same_data() {
    let r = InProcess::start_with(&Tenants::new().hostile("spin", "max-page-keys = 4"), &[]);
    let addr = r.addr;
    let post = |path: &'static str| async move { request(addr, Method::POST, path, vec![]).await };
    assert_eq!(post("/t/spin/incr2/c?by=-7").await.text(), "-7");
    assert_eq!(get(addr, "/t/spin/kv/c").await.text(), "-7");
    assert_eq!(post("/t/spin/incr2/c?by=10").await.text(), "3");
    request(addr, Method::PUT, "/t/spin/kv/word", b"abc".to_vec()).await;
    let res = post("/t/spin/incr2/word").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "store error: invalid-argument: the value under \"word\" is not a decimal i64, so it cannot be incremented"
        )
    );

    for i in 0..25 {
        let path = format!("/t/spin/kv/k{i}?bucket=list");
        request(addr, Method::PUT, &path, b"v".to_vec()).await;
    }
    let mut keys = HashSet::new();
    let mut cursor = None::<String>;
    let mut pages = 0;
    loop {
        pages += 1;
        let path = match &cursor {
            None => "/t/spin/keys2?bucket=list".to_owned(),
            Some(c) => format!("/t/spin/keys2?bucket=list&cursor={c}"),
        };
        let res = get(addr, &path).await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        let text = res.text();
        let mut lines = text.lines();
        let next = lines.next().unwrap().to_owned();
        for key in lines {
            assert!(keys.insert(key.to_owned()), "{key} listed twice");
        }
        if next == "-" {
            break;
        }
        cursor = Some(next);
    }
    assert_eq!(
        keys,
        (0..25).map(|i| format!("k{i}")).collect::<HashSet<_>>()
    );
    assert!(pages >= 7, "pages of at most 4 keys: {pages}");
    let res = get(addr, "/t/spin/keys2?cursor=not-a-cursor").await;
    assert_eq!(
        (res.status, res.text().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "store error: invalid-argument: \"not-a-cursor\" is not a cursor this store returned"
        )
    );
}

/// `get` and `exists` of both `wasi:keyvalue` drafts and of Spin 2.0
/// answer alike on every store: linked as synchronous imports where reads
/// never wait (in memory, with or without a data directory), as async
/// ones over Redis. The key is not ASCII, so the guest's string is read as
/// UTF-8 in its own memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_alike_on_every_store() {
    let redis = system_tests::redis::Redis::start();
    let dir = system_tests::TempDir::new();
    let data = dir.path.join("data");
    let mut stores = vec![
        vec![],
        vec!["--data-dir".to_owned(), data.display().to_string()],
    ];
    if let Some(redis) = &redis {
        stores.push(vec!["--store".to_owned(), redis.url()]);
    }
    for store in stores {
        let args: Vec<&str> = store.iter().map(String::as_str).collect();
        let r = InProcess::start_with(&Tenants::new().hostile("h", ""), &args);
        let put = request(
            r.addr,
            Method::PUT,
            "/t/h/kv/%C3%A9t%C3%A9",
            b"summer".to_vec(),
        )
        .await;
        assert_eq!(
            put.status,
            StatusCode::NO_CONTENT,
            "{store:?}: {}",
            put.text()
        );
        for route in ["kv", "get2", "spin2/kv"] {
            let found = get(r.addr, &format!("/t/h/{route}/%C3%A9t%C3%A9")).await;
            assert_eq!(
                (found.status, found.text().as_str()),
                (StatusCode::OK, "summer"),
                "{store:?} {route}"
            );
            let missing = get(r.addr, &format!("/t/h/{route}/%C3%A9t%C3%A9s")).await;
            assert_eq!(
                (missing.status, missing.text().as_str()),
                (StatusCode::NOT_FOUND, "key not found"),
                "{store:?} {route}"
            );
        }
        for (key, found) in [("%C3%A9t%C3%A9", "true"), ("%C3%A9t%C3%A9s", "false")] {
            let res = get(r.addr, &format!("/t/h/spin2/exists/{key}")).await;
            assert_eq!(
                (res.status, res.text().as_str()),
                (StatusCode::OK, found),
                "{store:?}"
            );
        }
    }
}
