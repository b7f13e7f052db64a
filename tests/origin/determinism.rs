//! The same inputs give the same bytes and ETag on every request and every instance.

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
async fn same_request_twice_gives_identical_bytes() {
    let origin = Origin::demo().await;
    for target in targets() {
        let first = origin.get(&target).await;
        let second = origin.get(&target).await;
        assert_eq!(first.status, StatusCode::OK, "{target}");
        assert_eq!(second.etag(), first.etag(), "{target}");
        assert!(first.body == second.body, "{target}: bodies differ");
    }
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
