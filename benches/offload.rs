//! A fleet behind a caching CDN: 100,000 simulated devices with a Zipf mix of
//! configurations ask nginx (tests/cdn/nginx.conf) for their package, the way devices
//! in the field spell requests: parameters in any order and letter case, defaults
//! sometimes written out, digests in `If-None-Match` quoted or bare, in any order. The
//! same devices run twice, with an empty cache each time: once as sent, through nginx
//! keyed on the path, the query and `If-None-Match` (the CloudFront cache policy before
//! `installed=`); once rewritten into the form that the CloudFront Function forwards
//! (`canonical_request`, which the function matches on the shared vectors: the query
//! in canonical form with the device's list moved into it as `installed=`, the header
//! dropped), through nginx keyed on the path and query alone, as the cache policy is
//! now. A third run starts two staged rollouts and gives every device a `deviceKey` of
//! its own, which the function turns into the device's cohorts. It prints how many
//! requests reached the origin in each run.
//!
//! `cargo bench --bench offload` (needs nginx: `apt-get install nginx`);
//! `FLEET_DEVICES=20000` for a shorter run.

mod draws;
#[path = "../tests/cdn/nginx.rs"]
mod nginx;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fleetpack_origin::config::{OriginSecret, ServeConfig};
use fleetpack_resolver::{DeviceQuery, RolloutState, RuleSet, canonical_request};
use fleetpack_store::demo::{DemoRelease, publish_demo, write_demo_binary};
use fleetpack_store::publish::{Release, publish};
use fleetpack_store::{LocalStore, Store};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use tokio::net::{TcpListener, TcpStream};

use draws::{ZIPF_EXPONENT, Zipf, shuffle, uniform};
use nginx::{Cdn, Keying};

const SECRET: &str = "fleet-simulation-secret";
/// Size of each demo binary: small, since the cache's behaviour is what is measured.
const BINARY_SIZE: u64 = 4096;
/// Exponent of the Zipf law over configurations: a few are common, most are rare.
/// Devices asking at once.
const CONCURRENCY: usize = 32;

/// What a device is: its architecture, channels and payload type, in the documented
/// spelling and order.
#[derive(Debug, Clone)]
struct Configuration {
    params: Vec<(&'static str, &'static str)>,
    /// MD5s of the binaries its package holds.
    md5s: Vec<String>,
}

/// One request, as a device sends it.
#[derive(Debug, Clone)]
struct DeviceRequest {
    query: String,
    if_none_match: Option<String>,
}

fn main() {
    let devices: usize = std::env::var("FLEET_DEVICES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(simulate(devices));
}

async fn simulate(devices: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path()).expect("store");
    publish_demo(&store, BINARY_SIZE).await.expect("demo fleet");
    let (rules, _) = RuleSet::build_holding(store.load_rules().await.expect("rules"), |_| true);
    let configurations = configurations(&rules);
    let requests = devices_of(&configurations, devices);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = listener.local_addr().expect("address");
    let config = ServeConfig {
        origin_secret: Some(OriginSecret::new(SECRET).expect("secret")),
        ..ServeConfig::default()
    };
    tokio::spawn(fleetpack_origin::run(
        listener,
        store.clone(),
        config,
        std::future::pending(),
    ));

    println!(
        "{devices} devices, {} configurations (Zipf s={ZIPF_EXPONENT}), {CONCURRENCY} at a time, through nginx",
        configurations.len()
    );
    println!("| cache key | distinct keys | reached the origin | share | cache hits | time |");
    println!("|---|---:|---:|---:|---:|---:|");
    measure(
        "as sent: path, query, If-None-Match",
        origin,
        requests.clone(),
        Keying::PathQueryAndIfNoneMatch,
    )
    .await;
    let canonical_requests = requests
        .iter()
        .map(|request| canonical(request, &[]))
        .collect();
    measure(
        "canonical, list in the query: path and query",
        origin,
        canonical_requests,
        Keying::PathAndQuery,
    )
    .await;

    let rollouts = start_rollouts(&store, origin).await;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let keyed: Vec<DeviceRequest> = requests
        .iter()
        .map(|request| with_device_key(&mut rng, request))
        .map(|request| canonical(&request, &rollouts))
        .collect();
    measure(
        "canonical, 2 rollouts in progress, a key per device",
        origin,
        keyed,
        Keying::PathAndQuery,
    )
    .await;
}

/// Sends `requests` through a fresh CDN (an empty cache) keyed as `keying` says and
/// prints one table row.
async fn measure(name: &str, origin: SocketAddr, requests: Vec<DeviceRequest>, keying: Keying) {
    let devices = requests.len();
    let distinct_keys = requests
        .iter()
        .map(|request| match keying {
            Keying::PathQueryAndIfNoneMatch => {
                (request.query.as_str(), request.if_none_match.as_deref())
            }
            Keying::PathAndQuery => (request.query.as_str(), None),
        })
        .collect::<HashSet<_>>()
        .len();
    let cdn = Cdn::start(origin, SECRET, keying);
    let started = Instant::now();
    let misses = run_devices(cdn.addr, requests).await;
    let elapsed = started.elapsed();
    println!(
        "| {name} | {distinct_keys} | {misses} | {:.2}% | {:.2}% | {:.1} s |",
        100.0 * misses as f64 / devices as f64,
        100.0 * (devices - misses) as f64 / devices as f64,
        elapsed.as_secs_f64()
    );
}

/// Publishes two candidates as staged rollouts (the prod OS image for armv8 to 10% of
/// devices, scoreboard to 5%), waits until the origin serves them, and returns the
/// state the CDN's function gets.
async fn start_rollouts(store: &LocalStore, origin: SocketAddr) -> Vec<RolloutState> {
    let dir = tempfile::tempdir().expect("temp dir");
    for (app, version, attributes, percent) in [
        ("os_armv8", "1.2.0", &[][..], 10),
        ("scoreboard", "1.1.0", &["gamer"][..], 5),
    ] {
        let demo = DemoRelease {
            app,
            channel: "prod",
            version,
            cpu_arch: None,
            attributes,
        };
        let path = dir.path().join(app);
        write_demo_binary(&demo, BINARY_SIZE, &path).expect("binary");
        let release = Release {
            attributes: attributes.iter().map(|name| (*name).to_owned()).collect(),
            rollout: Some(percent),
            ..Release::new(app, "prod", version)
        };
        publish(store, &release, &path, &|_| {}, None)
            .await
            .expect("publish a candidate");
    }
    let (rules, _) = RuleSet::build_holding(store.load_rules().await.expect("rules"), |_| true);
    let rollouts: Vec<RolloutState> = rules.rollouts().cloned().collect();
    assert_eq!(rollouts.len(), 2);
    // The origin reloads the rules within a second; until then it serves none of them.
    let probe = format!(
        "/package?cpuArch=armv8&payloadType=metadataOnly&cohort={}",
        rollouts[0].id
    );
    let mut sender = connect(origin).await;
    for _ in 0..100 {
        let request = Request::builder()
            .uri(probe.as_str())
            .header("host", origin.to_string())
            .header("x-origin-verify", SECRET)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        if String::from_utf8_lossy(&body).contains("1.2.0") {
            return rollouts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the origin did not serve the rollouts");
}

/// `request` from a device that made itself a random key, placed among its parameters.
fn with_device_key(rng: &mut ChaCha8Rng, request: &DeviceRequest) -> DeviceRequest {
    let key = format!("{:016x}", rng.next_u64());
    let query = if uniform(rng) < 0.5 {
        format!("deviceKey={key}&{}", request.query)
    } else {
        format!("{}&deviceKey={key}", request.query)
    };
    DeviceRequest {
        query,
        if_none_match: request.if_none_match.clone(),
    }
}

/// Every combination of the demo fleet's parameters a device can have, with the
/// binaries of its package.
fn configurations(rules: &RuleSet) -> Vec<Configuration> {
    // Each parameter with the values a device may give it (`None`: left out).
    let dimensions: [(&str, &[Option<&str>]); 6] = [
        ("cpuArch", &[Some("armv8"), Some("armv7")]),
        ("os", &[None, Some("beta")]),
        ("attrGamer", &[None, Some("prod"), Some("beta")]),
        ("attrCamera", &[None, Some("prod"), Some("beta")]),
        ("attrCellular", &[None, Some("prod")]),
        ("payloadType", &[None, Some("metadataOnly")]),
    ];
    let mut combinations: Vec<Vec<(&'static str, &'static str)>> = vec![Vec::new()];
    for (name, values) in dimensions {
        combinations = combinations
            .iter()
            .flat_map(|params| {
                values.iter().map(move |value| {
                    let mut params = params.clone();
                    params.extend(value.map(|value| (name, value)));
                    params
                })
            })
            .collect();
    }
    combinations
        .into_iter()
        .map(|params| {
            let parsed = DeviceQuery::parse(&spell(&params)).expect("a valid query");
            let selection = rules.resolve(&parsed).expect("a package");
            let md5s = selection
                .items
                .iter()
                .map(|selected| selected.rule.md5.clone())
                .collect();
            Configuration { params, md5s }
        })
        .collect()
}

fn spell(params: &[(impl AsRef<str>, impl AsRef<str>)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{}={}", name.as_ref(), value.as_ref()))
        .collect();
    pairs.join("&")
}

/// The devices' requests, in arrival order: configurations drawn by a Zipf law over a
/// shuffled ranking, each spelled the way some device firmware would.
fn devices_of(configurations: &[Configuration], devices: usize) -> Vec<DeviceRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let mut ranking: Vec<&Configuration> = configurations.iter().collect();
    shuffle(&mut rng, &mut ranking);
    let zipf = Zipf::new(ranking.len());
    (0..devices)
        .map(|_| {
            let rank = zipf.draw(&mut rng);
            device_request(&mut rng, ranking[rank])
        })
        .collect()
}

fn device_request(rng: &mut ChaCha8Rng, configuration: &Configuration) -> DeviceRequest {
    let mut params: Vec<(String, String)> = configuration
        .params
        .iter()
        .map(|&(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    // Some firmware writes the defaults out.
    if uniform(rng) < 0.2 {
        if !params.iter().any(|(name, _)| name == "os") {
            params.push(("os".to_owned(), "prod".to_owned()));
        }
        if !params.iter().any(|(name, _)| name == "payloadType") {
            params.push(("payloadType".to_owned(), "fullPayload".to_owned()));
        }
    }
    if uniform(rng) < 0.5 {
        shuffle(rng, &mut params);
    }
    let case = uniform(rng);
    for (name, _) in &mut params {
        if case < 0.15 {
            *name = name.to_ascii_lowercase();
        } else if case < 0.2 {
            *name = name.to_ascii_uppercase();
        }
    }
    let query = spell(&params);
    // 60% know nothing yet; 25% have every binary (304); 15% have the OS image only.
    let known: Vec<String> = match uniform(rng) {
        draw if draw < 0.6 => Vec::new(),
        draw if draw < 0.85 => configuration.md5s.clone(),
        _ => configuration.md5s.iter().take(1).cloned().collect(),
    };
    let if_none_match = (!known.is_empty()).then(|| {
        let mut tags: Vec<String> = known
            .iter()
            .map(|md5| match rng.next_u32() % 4 {
                0 => md5.clone(),
                1 => format!("\"{md5}\""),
                2 => format!("W/\"{md5}\""),
                _ => md5.to_ascii_uppercase(),
            })
            .collect();
        shuffle(rng, &mut tags);
        tags.join(if uniform(rng) < 0.5 { "," } else { ", " })
    });
    DeviceRequest {
        query,
        if_none_match,
    }
}

/// What the CloudFront Function makes of a request, with `rollouts` in progress: the
/// canonical query with the device's list in it (`installed=`), the header dropped; or
/// the request as sent when the function forwards it so.
fn canonical(request: &DeviceRequest, rollouts: &[RolloutState]) -> DeviceRequest {
    match canonical_request(&request.query, request.if_none_match.as_deref(), rollouts) {
        Some(canonical) => DeviceRequest {
            query: canonical.query,
            if_none_match: (!canonical.drops_if_none_match)
                .then(|| request.if_none_match.clone())
                .flatten(),
        },
        None => request.clone(),
    }
}

/// Sends every request through the CDN, `CONCURRENCY` devices at a time over
/// keep-alive connections; returns how many reached the origin.
async fn run_devices(cdn: SocketAddr, requests: Vec<DeviceRequest>) -> usize {
    let queue = Arc::new(std::sync::Mutex::new(requests.into_iter()));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let queue = Arc::clone(&queue);
        workers.spawn(async move {
            let mut sender = connect(cdn).await;
            let mut misses = 0;
            loop {
                let next = queue.lock().expect("queue").next();
                let Some(device) = next else { break };
                // nginx closes a keep-alive connection after keepalive_requests.
                if sender.ready().await.is_err() {
                    sender = connect(cdn).await;
                }
                let mut request = Request::builder()
                    .method(Method::GET)
                    .uri(format!("/package?{}", device.query))
                    .header("host", cdn.to_string());
                if let Some(value) = &device.if_none_match {
                    request = request.header("if-none-match", value);
                }
                let request = request.body(Empty::<Bytes>::new()).expect("request");
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                assert!(
                    matches!(status, StatusCode::OK | StatusCode::NOT_MODIFIED),
                    "{status} for {device:?}"
                );
                let cache = response
                    .headers()
                    .get("x-cache")
                    .map(|value| value.to_str().unwrap_or_default().to_owned())
                    .unwrap_or_default();
                response.into_body().collect().await.expect("body");
                if !matches!(cache.as_str(), "HIT" | "STALE" | "UPDATING") {
                    misses += 1;
                }
            }
            misses
        });
    }
    let mut misses = 0;
    while let Some(result) = workers.join_next().await {
        misses += result.expect("worker");
    }
    misses
}

async fn connect(cdn: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(cdn).await.expect("connect to nginx");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}
