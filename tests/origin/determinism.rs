//! The same inputs give the same bytes and ETag on every request and every instance.

use fleetpack_origin::config::ServeConfig;
use http::StatusCode;

use crate::harness::{Origin, OriginProcess, SAMPLE_QUERIES, TestStore};

fn targets() -> Vec<String> {
    SAMPLE_QUERIES
        .iter()
        .flat_map(|query| {
            [
                format!("/package?{query}"),
                format!("/package?{query}&payloadType=metadataOnly"),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_request_twice_gives_identical_bytes_whether_answers_are_reused_or_not() {
    let origin = Origin::demo().await;
    let without_reuse = ServeConfig {
        answer_cache_bytes: 0,
        ..ServeConfig::default()
    };
    let fresh = Origin::serve_with(TestStore::demo(false).await, without_reuse).await;
    for target in targets() {
        let first = origin.get(&target).await;
        let second = origin.get(&target).await;
        let computed = fresh.get(&target).await;
        let recomputed = fresh.get(&target).await;
        assert_eq!(first.status, StatusCode::OK, "{target}");
        assert_eq!(second.etag(), first.etag(), "{target}");
        assert_eq!(computed.etag(), first.etag(), "{target}");
        assert!(first.body == second.body, "{target}: bodies differ");
        assert!(
            computed.body == second.body,
            "{target}: a reused answer differs"
        );
        assert!(
            recomputed.body == computed.body,
            "{target}: computing twice differs"
        );
    }
    let reused = origin.metric("fleetpack_answers_reused_total").await;
    assert_eq!(reused, targets().len() as u64);
    assert_eq!(fresh.metric("fleetpack_answers_reused_total").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_origin_processes_give_identical_packages_and_etags() {
    let store = TestStore::demo(false).await;
    let first = OriginProcess::spawn(&store);
    let second = OriginProcess::spawn(&store);
    // An instance whose store was published separately, at another time.
    let elsewhere = Origin::demo().await;
    for target in targets() {
        let a = first.get(&target).await;
        let b = second.get(&target).await;
        let c = elsewhere.get(&target).await;
        assert_eq!(a.status, StatusCode::OK, "{target}");
        assert_eq!(b.etag(), a.etag(), "{target}");
        assert_eq!(c.etag(), a.etag(), "{target}");
        assert!(a.body == b.body, "{target}: processes differ");
        assert!(
            a.body == c.body,
            "{target}: separately published stores differ"
        );
    }
}
