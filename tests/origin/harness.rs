//! Origins over real sockets (in this process or as the built binary), a small HTTP/1.1
//! client, and what the demo fleet should look like to a device.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use fleetpack_origin::config::{OriginSecret, ServeConfig};
use fleetpack_resolver::{ObjectLocation, Rule, StoredRules};
use fleetpack_store::demo::{DEMO_FLEET, DemoRelease, publish_demo, write_demo_binary};
use fleetpack_store::publish::{Release, publish};
use fleetpack_store::{AnyStore, AwsStore, LocalStore, Store};
use http::header::HOST;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Size of every demo binary: big enough for several tar blocks and deflate blocks.
pub const DEMO_SIZE: u64 = 64 * 1024;

pub const CACHE_CONTROL_OK: &str =
    "public, max-age=100, s-maxage=100, stale-while-revalidate=60, stale-if-error=86400";
pub const CACHE_CONTROL_4XX: &str = "public, max-age=10";

/// The AWS sample README's four device queries.
pub const SAMPLE_QUERIES: [&str; 4] = [
    "cpuArch=armv8",
    "cpuArch=armv8&os=beta",
    "cpuArch=armv8&attrGamer=prod",
    "cpuArch=armv8&attrGamer=prod&attrCellular=prod",
];
pub const FULL_SAMPLE: &str = SAMPLE_QUERIES[3];

/// A fresh local store holding the demo fleet.
pub async fn demo_store() -> (TempDir, LocalStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path()).expect("open local store");
    publish_demo_fleet(&store).await;
    (dir, store)
}

async fn publish_demo_fleet<S: Store>(store: &S) {
    let outcomes = publish_demo(store, DEMO_SIZE)
        .await
        .expect("publish demo fleet");
    assert_eq!(outcomes.len(), DEMO_FLEET.len());
    for (demo, outcome) in outcomes {
        outcome.unwrap_or_else(|error| panic!("publish {} {}: {error}", demo.app, demo.version));
    }
}

/// Which store the HTTP contract tests run against: `FLEETPACK_TEST_STORE=aws` runs
/// them on DynamoDB + S3 (the test command does both passes).
fn on_aws() -> bool {
    match std::env::var("FLEETPACK_TEST_STORE").as_deref() {
        Ok("aws") => true,
        Ok("local") | Err(_) => false,
        Ok(other) => panic!("FLEETPACK_TEST_STORE is `{other}`; use `local` or `aws`"),
    }
}

/// The bucket the demo fleet's binaries share on the AWS pass: the same bytes under
/// the same keys for every test, so their urls are known in advance.
const SHARED_DEMO_BUCKET: &str = "fleetpack-test-demo";

/// The url a demo binary has in the store the contract tests run against.
pub fn object_url(key: &str) -> String {
    if on_aws() {
        format!("s3://{SHARED_DEMO_BUCKET}/{key}")
    } else {
        format!("local://{key}")
    }
}

/// A fresh, unique table and bucket name.
pub fn aws_names() -> (String, String) {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "fp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    (format!("{name}-rules"), format!("{name}-objects"))
}

/// An AWS store on the S3/DynamoDB-compatible server the test command started, with
/// its table and bucket created.
pub async fn aws_store(table: &str, bucket: &str) -> AwsStore {
    assert!(
        std::env::var("FLEETPACK_TEST_AWS").as_deref() == Ok("1"),
        "AWS-store tests need the S3/DynamoDB-compatible server: run scripts/test.sh, or \
         `source scripts/moto.sh && moto_install && moto_start` first"
    );
    let store = AwsStore::connect(table, bucket, Default::default()).await;
    store.init().await.expect("create table and bucket");
    store
}

/// An S3 client on the same server, for changing objects behind the origin's back.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    )
}

/// A store holding the demo fleet, local or on AWS.
#[derive(Debug)]
pub struct TestStore {
    pub store: AnyStore,
    place: Place,
}

/// Where a test store keeps its rules and binaries.
#[derive(Debug)]
enum Place {
    Local(TempDir),
    Aws { table: String, bucket: String },
}

impl TestStore {
    /// A local store in `dir`.
    pub fn local(dir: TempDir, store: LocalStore) -> Self {
        TestStore {
            store: store.into(),
            place: Place::Local(dir),
        }
    }

    /// An AWS store on `table` and `bucket`.
    pub fn aws(store: AwsStore, table: String, bucket: String) -> Self {
        TestStore {
            store: store.into(),
            place: Place::Aws { table, bucket },
        }
    }

    /// The demo fleet on the store of this pass. `private_objects` gives an AWS store a
    /// bucket of its own, for tests that change objects.
    pub async fn demo(private_objects: bool) -> Self {
        if !on_aws() {
            return Self::demo_local().await;
        }
        let (table, own_bucket) = aws_names();
        let bucket = if private_objects {
            own_bucket
        } else {
            SHARED_DEMO_BUCKET.to_owned()
        };
        let store = aws_store(&table, &bucket).await;
        publish_demo_fleet(&store).await;
        Self::aws(store, table, bucket)
    }

    /// The demo fleet on a local store, whatever the pass.
    pub async fn demo_local() -> Self {
        let (dir, store) = demo_store().await;
        Self::local(dir, store)
    }

    /// An empty store of this pass, with a bucket of its own on AWS.
    pub async fn empty() -> Self {
        if on_aws() {
            let (table, bucket) = aws_names();
            let store = aws_store(&table, &bucket).await;
            return Self::aws(store, table, bucket);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let store = LocalStore::open(dir.path()).expect("open local store");
        Self::local(dir, store)
    }

    /// The arguments that point `fleetpack-origin` or `fleetpack-seed` at this store.
    pub fn args(&self) -> Vec<String> {
        match &self.place {
            Place::Local(dir) => {
                vec!["--data-dir".to_owned(), dir.path().display().to_string()]
            }
            Place::Aws { table, bucket } => {
                ["--store", "aws", "--table", table, "--bucket", bucket]
                    .map(str::to_owned)
                    .to_vec()
            }
        }
    }

    /// Runs `fleetpack-seed` on this store with `args`.
    pub fn seed(&self, args: &[&str]) -> std::process::Output {
        command("fleetpack-seed")
            .args(self.args())
            .args(args)
            .output()
            .expect("run fleetpack-seed")
    }

    /// The local store's `rules.json`; `None` on AWS.
    pub fn rules_file(&self) -> Option<PathBuf> {
        match &self.place {
            Place::Local(dir) => Some(dir.path().join("rules.json")),
            Place::Aws { .. } => None,
        }
    }

    /// Writes the stored rules again, unchanged. The local store's file gets a new
    /// inode, so its stamp changes; the AWS store has no stamp and reads the table on
    /// every refresh anyway.
    pub fn rewrite_rules_unchanged(&self) {
        if let Some(rules) = self.rules_file() {
            let copy = rules.with_extension("json.copy");
            std::fs::copy(&rules, &copy).expect("copy the rules file");
            std::fs::rename(&copy, &rules).expect("replace the rules file");
        }
    }

    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub async fn publish(&self, release: &Release, path: &Path) {
        publish(&self.store, release, path, &|_| {}, None)
            .await
            .expect("publish");
    }

    /// The current release of every app and channel.
    pub async fn load_rules(&self) -> Vec<Rule> {
        self.load_stored().await.current
    }

    pub async fn load_stored(&self) -> StoredRules {
        self.store.load_rules().await.expect("load rules")
    }

    /// Removes the `segment` of every rule, current and history, as for a table the
    /// sample made.
    pub async fn strip_segments(&self) {
        let stored = self.load_stored().await;
        for rule in &stored.current {
            let stripped = Rule {
                segment: None,
                ..rule.clone()
            };
            self.store
                .put_rule(stripped, Some(rule))
                .await
                .expect("write rule");
        }
        for rule in stored.history {
            let stripped = Rule {
                segment: None,
                ..rule
            };
            self.store
                .put_release(stripped)
                .await
                .expect("write release");
        }
    }

    /// The stored bytes at `url` (`local://key` or `s3://bucket/key`).
    pub async fn read(&self, url: &str) -> Vec<u8> {
        let object = ObjectLocation::parse(url).expect("a store url");
        let mut reader = self
            .store
            .open_object(&object)
            .await
            .expect("open object")
            .into_reader();
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await.expect("read object");
        bytes
    }

    /// Replaces the stored bytes of a binary, or deletes them (`None`).
    pub async fn tamper(&self, app: &str, version: &str, bytes: Option<&[u8]>) {
        self.tamper_key(format!("{app}_{version}"), bytes).await;
    }

    /// Flips every bit of a binary's stored segment: same length, other bytes, so the
    /// origin only finds out while it sends them.
    pub async fn corrupt_segment(&self, app: &str, version: &str) {
        self.tamper_segment(app, version, |bytes| {
            Some(bytes.iter().map(|b| !b).collect())
        })
        .await;
    }

    /// Replaces the stored segment of a binary with what `change` makes of its bytes,
    /// or deletes it when `change` gives `None`.
    pub async fn tamper_segment(
        &self,
        app: &str,
        version: &str,
        change: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>,
    ) {
        let rules = self.load_rules().await;
        let rule = rules
            .iter()
            .find(|rule| rule.app == app && rule.version == version)
            .expect("a published rule");
        let segment = rule.segment.as_ref().expect("a segment");
        let changed = change(self.read(&segment.url).await);
        let key = ObjectLocation::parse(&segment.url)
            .expect("segment url")
            .key;
        self.tamper_key(key, changed.as_deref()).await;
    }

    async fn tamper_key(&self, key: String, bytes: Option<&[u8]>) {
        match (&self.place, bytes) {
            (Place::Local(dir), Some(bytes)) => {
                std::fs::write(dir.path().join("objects").join(key), bytes)
                    .expect("replace object");
            }
            (Place::Local(dir), None) => {
                std::fs::remove_file(dir.path().join("objects").join(key)).expect("delete object");
            }
            (Place::Aws { bucket, .. }, Some(bytes)) => {
                s3_client()
                    .await
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(bytes.to_vec().into())
                    .send()
                    .await
                    .expect("replace object");
            }
            (Place::Aws { bucket, .. }, None) => {
                s3_client()
                    .await
                    .delete_object()
                    .bucket(bucket)
                    .key(key)
                    .send()
                    .await
                    .expect("delete object");
            }
        }
    }
}

/// An origin served by `fleetpack_origin::server::run` on this test's runtime.
#[derive(Debug)]
pub struct Origin {
    pub addr: SocketAddr,
    pub store: TestStore,
    /// Sent in `X-Origin-Verify` by [`Origin::get`] and [`Origin::metric`].
    secret: Option<String>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Origin {
    /// The demo fleet on the store of this pass.
    pub async fn demo() -> Self {
        Self::serve(TestStore::demo(false).await).await
    }

    /// Like [`Origin::demo`], for tests that change the stored binaries.
    pub async fn demo_with_own_objects() -> Self {
        Self::serve(TestStore::demo(true).await).await
    }

    /// Like [`Origin::demo_with_own_objects`], with the rules' segments removed, so that
    /// packages are compressed as they stream.
    pub async fn demo_streaming() -> Self {
        let store = TestStore::demo(true).await;
        store.strip_segments().await;
        Self::serve(store).await
    }

    pub async fn serve(store: TestStore) -> Self {
        Self::serve_with(store, ServeConfig::default()).await
    }

    pub async fn serve_with(store: TestStore, config: ServeConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let (shutdown, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        tokio::spawn(fleetpack_origin::run(
            listener,
            store.store.clone(),
            config,
            stopped,
        ));
        Origin {
            addr,
            store,
            secret: None,
            shutdown: Some(shutdown),
        }
    }

    /// An origin that answers only requests carrying `secret` in `X-Origin-Verify`.
    pub async fn serve_with_secret(store: TestStore, config: ServeConfig, secret: &str) -> Self {
        let config = ServeConfig {
            origin_secret: Some(OriginSecret::new(secret).expect("a valid secret")),
            ..config
        };
        let mut origin = Self::serve_with(store, config).await;
        origin.secret = Some(secret.to_owned());
        origin
    }

    pub async fn get(&self, target: &str) -> Response {
        self.get_with(target, &[]).await
    }

    pub async fn get_with(&self, target: &str, headers: &[(&str, &str)]) -> Response {
        let mut headers = headers.to_vec();
        if let Some(secret) = &self.secret {
            headers.push(("x-origin-verify", secret));
        }
        request(self.addr, Method::GET, target, &headers).await
    }

    /// The value of one line of `/metrics`, e.g. `fleetpack_packages_aborted_total`.
    pub async fn metric(&self, name: &str) -> u64 {
        let metrics = self.get("/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        let text = metrics.text();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no metric `{name}` in:\n{text}"))
            .parse()
            .expect("a counter")
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// The Python of the test tools (installed by scripts/test.sh with moto): it has boto3,
/// for the AWS sample's fixture, and `cryptography`, for the device verifier.
pub fn tools_python() -> Command {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/moto/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh installs it (or `source scripts/moto.sh && moto_install`)",
        python.display()
    );
    Command::new(python)
}

impl Origin {
    /// Another origin instance on the same store, once it is ready.
    pub async fn another_instance(&self, config: ServeConfig) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(fleetpack_origin::run(
            listener,
            self.store.store.clone(),
            config,
            std::future::pending(),
        ));
        eventually(Duration::from_secs(15), "another origin ready", || async {
            request(addr, Method::GET, "/readyz", &[]).await.status == StatusCode::OK
        })
        .await;
        addr
    }
}

/// Directory of the workspace's built binaries: the parent of `deps/`, which holds this test.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .to_owned()
}

/// A built binary of the workspace, e.g. `fleetpack-origin`, as a command that ignores
/// the caller's `FLEETPACK_*` settings. `cargo test` does not build other packages'
/// binaries, so a binary older than the sources would test old code: refuse it.
pub fn command(name: &str) -> Command {
    let path = bin_dir().join(name);
    let rebuild = "run `cargo build --workspace --bins` first";
    let built = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", path.display()));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    let own = match name {
        "fleetpack-origin" => "origin/src",
        "fleetpack-seed" => "seed/src",
        _ => panic!("{name} is not a binary of the workspace"),
    };
    for source in [own, "store/src", "resolver/src"] {
        if let Some((newest, changed)) = newest_file(&workspace.join(source)) {
            assert!(
                changed <= built,
                "{} is older than {}: {rebuild}",
                path.display(),
                newest.display()
            );
        }
    }
    let mut command = Command::new(path);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FLEETPACK_") {
            command.env_remove(name);
        }
    }
    command
}

fn newest_file(path: &Path) -> Option<(PathBuf, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((path.to_owned(), meta.modified().ok()?));
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(|entry| newest_file(&entry.ok()?.path()))
        .max_by_key(|(_, modified)| *modified)
}

/// A `fleetpack-origin` process serving a local store; killed on drop.
#[derive(Debug)]
pub struct OriginProcess {
    pub addr: SocketAddr,
    child: Child,
    // Held open: the process may still print.
    _stdout: BufReader<ChildStdout>,
    _logs: TempDir,
}

impl OriginProcess {
    pub fn spawn(store: &TestStore) -> Self {
        let logs = tempfile::tempdir().expect("temp dir");
        let log_path = logs.path().join("stderr");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = command("fleetpack-origin")
            .args(store.args())
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn fleetpack-origin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let prefix = "fleetpack-origin listening on http://";
        let addr = loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).expect("read origin stdout") == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "fleetpack-origin exited before listening; stderr:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if let Some(addr) = line.trim_end().strip_prefix(prefix) {
                break addr.parse().expect("a socket address");
            }
        };
        OriginProcess {
            addr,
            child,
            _stdout: stdout,
            _logs: logs,
        }
    }

    pub async fn get(&self, target: &str) -> Response {
        request(self.addr, Method::GET, target, &[]).await
    }
}

impl Drop for OriginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response read to its end, or to the error that cut its body.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Why the body did not end cleanly (an aborted connection), if it did not.
    pub body_error: Option<String>,
}

impl Response {
    /// The single value of `name`; panics when it is absent or repeated.
    pub fn header(&self, name: &str) -> &str {
        let mut values = self.headers.get_all(name).iter();
        let value = values
            .next()
            .unwrap_or_else(|| panic!("no `{name}` header in {:?}", self.headers));
        assert!(values.next().is_none(), "`{name}` repeated");
        value.to_str().expect("ASCII header")
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {:?}", self.body))
    }

    /// The ETag, checked to be strong, quoted and 32 lowercase hex digits.
    pub fn etag(&self) -> &str {
        let etag = self.header("etag");
        let opaque = etag
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("ETag {etag} is not a strong quoted tag"));
        assert!(
            opaque.len() == 32
                && opaque
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "ETag {etag} is not 32 lowercase hex digits"
        );
        etag
    }

    /// Checks a `{"error": message}` response with its status and 4xx caching.
    pub fn assert_error(&self, status: StatusCode, message: &str) {
        assert_eq!(self.status, status, "body: {:?}", self.body);
        assert_eq!(self.header("content-type"), "application/json");
        assert_eq!(self.json(), json!({ "error": message }));
        if status.is_client_error() {
            assert_eq!(self.header("cache-control"), CACHE_CONTROL_4XX);
        }
        assert!(!self.has_header("etag"));
    }
}

/// Sends one request on a new connection and reads the whole response; panics when the
/// body is cut (see [`request_allowing_abort`]).
pub async fn request(
    addr: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> Response {
    let response = request_allowing_abort(addr, method, target, headers).await;
    if let Some(error) = &response.body_error {
        panic!("GET {target}: body cut: {error}");
    }
    response
}

/// Like [`request`], but a body that ends in an error is returned with that error.
pub async fn request_allowing_abort(
    addr: SocketAddr,
    method: Method,
    target: &str,
    headers: &[(&str, &str)],
) -> Response {
    let stream = TcpStream::connect(addr).await.expect("connect to origin");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header(HOST, addr.to_string());
    for &(name, value) in headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(Empty::<Bytes>::new()).expect("valid request");
    let response = sender.send_request(request).await.expect("response head");
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    let body_error = loop {
        match body.frame().await {
            None => break None,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => break Some(error.to_string()),
        }
    };
    Response {
        status: parts.status,
        headers: parts.headers,
        body: bytes.freeze(),
        body_error,
    }
}

/// Writes `request` as is and reads until the server closes: the exact bytes on the wire.
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect to origin");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut received = Vec::new();
    // A reset after an abort is an end too; what arrived before it is what counts.
    let _ = stream.read_to_end(&mut received).await;
    received
}

/// Serving settings whose rules refresh quickly, so a change made with
/// `fleetpack-seed` shows within a fraction of a second.
pub fn quick_refresh() -> ServeConfig {
    ServeConfig {
        rules_refresh: Duration::from_millis(100),
        ..ServeConfig::default()
    }
}

/// Polls `condition` until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A demo binary as the device should receive it.
#[derive(Debug)]
pub struct DemoBinary {
    pub release: DemoRelease,
    pub bytes: Vec<u8>,
    pub md5: String,
    pub sha256: String,
}

/// The demo binary of `app` on `channel`, regenerated independently of the store.
pub fn demo_binary(app: &str, channel: &str) -> &'static DemoBinary {
    static BINARIES: OnceLock<Vec<DemoBinary>> = OnceLock::new();
    let binaries = BINARIES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        DEMO_FLEET
            .iter()
            .map(|release| {
                let path = dir
                    .path()
                    .join(format!("{}_{}", release.app, release.version));
                write_demo_binary(release, DEMO_SIZE, &path).expect("write demo binary");
                let bytes = std::fs::read(&path).expect("read demo binary");
                DemoBinary {
                    release: *release,
                    md5: hex::encode(Md5::digest(&bytes)),
                    sha256: hex::encode(Sha256::digest(&bytes)),
                    bytes,
                }
            })
            .collect()
    });
    binaries
        .iter()
        .find(|binary| binary.release.app == app && binary.release.channel == channel)
        .unwrap_or_else(|| panic!("no demo release {app} on {channel}"))
}

/// `package_details.json` of the demo apps `(app, channel)`, in the given order; the apps
/// in `known` are reported as not modified.
pub fn expected_details(apps: &[(&str, &str)], known: &[&str]) -> Value {
    let entries = apps.iter().map(|&(app, channel)| {
        let binary = demo_binary(app, channel);
        let version = binary.release.version;
        let status = if known.contains(&app) { 304 } else { 200 };
        let detail = json!({
            "latestVersion": version,
            "url": object_url(&format!("{app}_{version}")),
            "status_code": status,
            "channel": channel,
            "md5": binary.md5,
            "sha256": binary.sha256,
            "size": DEMO_SIZE,
            "downloadUrl": format!("/binaries/{}", binary.sha256),
        });
        (app.to_owned(), detail)
    });
    Value::Object(entries.collect())
}

/// The `package_details.json` a package holds, from the metadata-only answer to the
/// same request: the same text without the `downloadUrl` lines, which only metadata
/// answers carry (each the last field of its entry).
pub fn package_details_of(metadata: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(metadata).expect("UTF-8 JSON");
    let mut lines: Vec<&str> = Vec::new();
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("\"downloadUrl\": ") {
            let previous = lines.pop().expect("a field before downloadUrl");
            let (field, end) = previous.split_at(previous.len() - 1);
            assert_eq!(end, "\n");
            lines.push(field.strip_suffix(',').expect("a comma before downloadUrl"));
            lines.push("\n");
        } else {
            lines.push(line);
        }
    }
    lines.concat().into_bytes()
}

/// The keys of a JSON object in the order the text has them (serde_json's map sorts them).
pub fn object_keys(text: &[u8]) -> Vec<String> {
    let value: Value = serde_json::from_slice(text).expect("JSON text");
    assert!(value.is_object(), "not a JSON object: {value}");
    let mut keys = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut expect_key) = (0, false, false, false);
    let mut start = 0;
    for (at, &b) in text.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => {
                    in_string = false;
                    if expect_key {
                        let key = serde_json::from_slice(&text[start..=at]).expect("key");
                        keys.push(key);
                        expect_key = false;
                    }
                }
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                start = at;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'}' | b']' => depth -= 1,
            b',' => expect_key = depth == 1,
            _ => {}
        }
    }
    keys
}
