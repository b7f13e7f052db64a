//! The resolver's share of a request, in wall time: parsing the device query and
//! `If-None-Match`, resolving against fleets of 10, 1,000 and 100,000 rules (the cost
//! should not grow with the fleet: lookups are hash maps), rendering the metadata JSON and
//! ETag, and the whole metadata-only request path. Rules are generated (`fleet/mod.rs`)
//! with the fields `publish` writes; building them is setup, not measured.
//!
//! `cargo bench --bench resolve` (add `-- --quick` for a short run). For instruction
//! counts, which are repeatable on a noisy machine, see `benches/callgrind.sh`.

mod fleet;

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fleetpack_resolver::{
    DeviceQuery, IfNoneMatch, ObjectLocation, PackagePlan, PayloadType, Rule, Served,
};

use fleet::{
    FLEET_SIZES, TYPICAL_QUERY, fleet, header_lines, if_none_match, metadata_request, rule_set,
    typical_if_none_match,
};

/// The most parameters a query may have (32), a third of them percent-encoded, in mixed
/// letter case: the OS channel, 14 attributes and 15 pins.
fn long_query() -> String {
    let mut params = vec![
        "cpuArch=ARMv8".to_owned(),
        "os=beta".to_owned(),
        "payloadType=metadataOnly".to_owned(),
    ];
    for group in 0..14 {
        params.push(match group % 3 {
            0 => format!("attr%47roup{group}=%70rod"),
            1 => format!("attrGroup{group}=beta"),
            _ => format!("ATTRgroup{group}=Prod"),
        });
    }
    for app in 100..115 {
        params.push(match app % 3 {
            0 => format!("app%2D{app}=canary"),
            _ => format!("app-{app}=beta"),
        });
    }
    let query = params.join("&");
    let parsed = DeviceQuery::parse(&query).expect("a valid query");
    assert_eq!((parsed.attributes().len(), parsed.pins().len()), (14, 15));
    query
}

fn parse_query(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse query");
    for (name, query) in [
        ("typical", TYPICAL_QUERY.to_owned()),
        ("long", long_query()),
    ] {
        group.throughput(Throughput::Bytes(query.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &query, |b, query| {
            b.iter(|| DeviceQuery::parse(black_box(query)).expect("a valid query"))
        });
    }
    group.finish();
}

fn resolve(c: &mut Criterion) {
    let query = DeviceQuery::parse(TYPICAL_QUERY).expect("a valid query");
    let mut group = c.benchmark_group("resolve rules");
    for size in FLEET_SIZES {
        let rules = rule_set(size);
        group.bench_with_input(BenchmarkId::from_parameter(size), &rules, |b, rules| {
            b.iter(|| rules.resolve(black_box(&query)).expect("a package"))
        });
    }
    group.finish();
}

fn parse_if_none_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse If-None-Match");
    for tags in [1, 256] {
        let header = if_none_match(tags, &[]);
        group.throughput(Throughput::Elements(tags as u64));
        group.bench_with_input(BenchmarkId::new("tags", tags), &header, |b, header| {
            b.iter(|| IfNoneMatch::parse([black_box(header.as_bytes())]).expect("valid"))
        });
    }
    group.finish();
}

/// The prod rules of `os_armv8` and the first apps of the 1,000-rule fleet.
fn prod_rules(apps: usize) -> Vec<(Rule, ObjectLocation)> {
    fleet(1_000)
        .into_iter()
        .filter(|rule| {
            rule.channel == "prod" && (rule.app == "os_armv8" || !rule.app.starts_with("os_"))
        })
        .take(apps)
        .map(|rule| {
            let object = rule.check().expect("a valid rule");
            (rule, object)
        })
        .collect()
}

fn render_metadata(c: &mut Criterion) {
    let mut group = c.benchmark_group("render metadata");
    let if_none_match = IfNoneMatch::default();
    for apps in [4, 32] {
        let rules = prod_rules(apps);
        let served: Vec<Served<'_>> = rules
            .iter()
            .map(|(rule, object)| Served {
                rule,
                object,
                installed: None,
                mandatory: rule.mandatory,
                downgrade: false,
            })
            .collect();
        assert_eq!(served.len(), apps);
        group.throughput(Throughput::Elements(apps as u64));
        group.bench_with_input(BenchmarkId::new("apps", apps), &served, |b, served| {
            b.iter(|| {
                let plan =
                    PackagePlan::new(black_box(served), &if_none_match, PayloadType::MetadataOnly);
                black_box((plan.details_json(), plan.etag()));
                plan
            })
        });
    }
    group.finish();
}

fn metadata_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("metadata request");
    for size in FLEET_SIZES {
        let rules = rule_set(size);
        for tags in [0, 256] {
            let header = typical_if_none_match(&rules, tags);
            let lines = header_lines(&header);
            let body = metadata_request(&rules, TYPICAL_QUERY, &lines).expect("a 200 response");
            assert!(!body.is_empty());
            let id = BenchmarkId::new(format!("{size} rules"), format!("{tags} tags"));
            group.bench_with_input(id, &lines, |b, lines| {
                b.iter(|| metadata_request(&rules, black_box(TYPICAL_QUERY), black_box(lines)))
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    parse_query,
    resolve,
    parse_if_none_match,
    render_metadata,
    metadata_path
);
criterion_main!(benches);
