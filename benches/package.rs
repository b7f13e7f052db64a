//! Package assembly: a 4 x 64 MiB package spliced from stored segments against the same
//! bytes compressed as they stream. Both write into a sink on one task, so the time per
//! iteration is the CPU cost of one request.
//!
//! `cargo bench --bench package`

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fleetpack_resolver::{DeviceRequest, RuleSet};
use fleetpack_store::archive::{PackageObject, write_package};
use fleetpack_store::demo::{DemoRelease, write_demo_binary};
use fleetpack_store::publish::{Release, publish};
use fleetpack_store::splice::{Discard, Spliced, write_parts};
use fleetpack_store::{LocalStore, Store};

const BINARY_SIZE: u64 = 64 * 1024 * 1024;
const APPS: [&str; 4] = ["firmware1", "firmware2", "firmware3", "firmware4"];

fn assembly(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path()).expect("store");
    runtime.block_on(async {
        for app in APPS {
            let demo = DemoRelease {
                app,
                channel: "prod",
                version: "1.0.0",
                cpu_arch: None,
                attributes: &["bench"],
            };
            let path = dir.path().join(app);
            write_demo_binary(&demo, BINARY_SIZE, &path).expect("binary");
            let release = Release {
                attributes: vec!["bench".to_owned()],
                ..Release::new(app, "prod", "1.0.0")
            };
            publish(&store, &release, &path, &|_| {}, None)
                .await
                .expect("publish");
        }
    });
    let (rules, _) =
        RuleSet::build_holding(runtime.block_on(store.load_rules()).expect("rules"), |_| {
            true
        });
    let request = DeviceRequest::parse("cpuArch=bench&attrBench=prod", []).expect("request");
    let plan = rules.answer(&request).expect("a package");
    let spliced = runtime
        .block_on(Spliced::plan(plan.details_json(), plan.to_send()))
        .expect("plan")
        .expect("every binary has a segment");

    let mut group = c.benchmark_group("package 4 x 64 MiB");
    group.throughput(Throughput::Bytes(spliced.len()));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("spliced", |b| {
        b.to_async(&runtime).iter(|| async {
            let parts = spliced.open(&store, None).await.expect("segments");
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || write_parts(&mut Discard, parts, &handle))
                .await
                .expect("writer")
                .expect("written");
        })
    });
    group.bench_function("streaming gzip", |b| {
        b.to_async(&runtime).iter(|| async {
            let mut objects = Vec::new();
            for entry in plan.to_send() {
                let object = store.open_object(&entry.object).await.expect("binary");
                objects.push(PackageObject {
                    entry: entry.clone(),
                    object,
                });
            }
            write_package(&mut tokio::io::sink(), plan.details_json(), objects)
                .await
                .expect("written");
        })
    });
    group.finish();
}

criterion_group!(benches, assembly);
criterion_main!(benches);
