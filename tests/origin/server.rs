//! The accept loop: graceful shutdown, the shutdown grace period, the header-read
//! timeout and the connection cap, over real sockets with the timings set short.

use std::net::SocketAddr;
use std::time::Duration;

use fleetpack_origin::config::ServeConfig;
use fleetpack_store::LocalStore;
use fleetpack_store::demo::publish_demo;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::harness::{FULL_SAMPLE, demo_store};

/// An origin whose shutdown the test triggers and whose end it can await.
struct Served {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    finished: JoinHandle<std::io::Result<()>>,
    _dir: TempDir,
}

async fn serve(dir: TempDir, store: LocalStore, config: ServeConfig) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let (shutdown, stopped) = oneshot::channel::<()>();
    let finished = tokio::spawn(fleetpack_origin::run(listener, store, config, async move {
        let _ = stopped.await;
    }));
    Served {
        addr,
        shutdown,
        finished,
        _dir: dir,
    }
}

async fn send_package_request(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET /package?{FULL_SAMPLE} HTTP/1.1\r\nHost: origin\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    stream
}

async fn read_until_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection");
    received
}

/// Whether a raw HTTP/1.1 response holds its whole body, by its Content-Length or its
/// last chunk.
fn complete(response: &[u8]) -> bool {
    let Some(split) = response.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let body = &response[split + 4..];
    match head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
    {
        Some(len) => body.len() == len.trim().parse::<usize>().expect("a length"),
        None => body.ends_with(b"\r\n0\r\n\r\n"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_download_finish() {
    let (dir, store) = demo_store().await;
    let served = serve(dir, store, ServeConfig::default()).await;
    let mut stream = send_package_request(served.addr).await;
    let mut response = vec![0u8; 64];
    let read = stream.read(&mut response).await.expect("response starts");
    response.truncate(read);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));

    served.shutdown.send(()).expect("server running");
    response.extend(read_until_close(&mut stream).await);
    assert!(complete(&response), "the download was cut by the shutdown");
    tokio::time::timeout(Duration::from_secs(10), served.finished)
        .await
        .expect("the server stops once the download is done")
        .expect("server task")
        .expect("server result");
    assert!(
        TcpStream::connect(served.addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_cuts_a_download_that_takes_too_long() {
    // Binaries large enough that an unread package cannot fit in the socket buffers.
    let dir = tempfile::tempdir().expect("temp dir");
    let store = LocalStore::open(dir.path()).expect("open store");
    for (_, outcome) in publish_demo(&store, 4 * 1024 * 1024)
        .await
        .expect("publish")
    {
        outcome.expect("publish demo release");
    }
    let config = ServeConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let served = serve(dir, store, config).await;
    let mut stream = send_package_request(served.addr).await;
    let mut response = vec![0u8; 64];
    let read = stream.read(&mut response).await.expect("response starts");
    response.truncate(read);
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));

    served.shutdown.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(10), served.finished)
        .await
        .expect("the server stops after its grace period, reader or not")
        .expect("server task")
        .expect("server result");
    response.extend(read_until_close(&mut stream).await);
    assert!(!complete(&response), "the unread download was completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_head_not_sent_in_time_closes_the_connection() {
    let (dir, store) = demo_store().await;
    let config = ServeConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let served = serve(dir, store, config).await;
    let mut stream = TcpStream::connect(served.addr).await.expect("connect");
    stream
        .write_all(b"GET /package?cpuArch=armv8 HTTP/1.1\r\nHost: origin\r\n")
        .await
        .expect("send half a request head");
    let received = read_until_close(&mut stream).await;
    assert!(
        !received.starts_with(b"HTTP/1.1 200"),
        "an unfinished request was answered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let (dir, store) = demo_store().await;
    let config = ServeConfig {
        max_connections: 1,
        ..ServeConfig::default()
    };
    let served = serve(dir, store, config).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: origin\r\n\r\n";

    let mut first = TcpStream::connect(served.addr).await.expect("connect");
    first.write_all(request).await.expect("send");
    let mut buf = [0u8; 256];
    let read = first.read(&mut buf).await.expect("first answered");
    assert!(buf[..read].starts_with(b"HTTP/1.1 200 OK"));

    // The first connection is kept alive, so it holds the only slot.
    let mut second = TcpStream::connect(served.addr)
        .await
        .expect("the backlog accepts");
    second.write_all(request).await.expect("send");
    let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waited.is_err(), "a connection over the cap was served");

    drop(first);
    let read = tokio::time::timeout(Duration::from_secs(10), second.read(&mut buf))
        .await
        .expect("served once the slot is free")
        .expect("read");
    assert!(buf[..read].starts_with(b"HTTP/1.1 200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_do_not_keep_new_clients_out() {
    let (dir, store) = demo_store().await;
    let config = ServeConfig {
        max_connections: 100,
        // Long enough that the header timeout cannot be what lets the client in.
        header_read_timeout: Duration::from_secs(60),
        ..ServeConfig::default()
    };
    let served = serve(dir, store, config).await;
    // A download in progress when the flood starts, read once it is over.
    let request =
        format!("GET /package?{FULL_SAMPLE} HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n");
    let mut download = TcpStream::connect(served.addr).await.expect("connect");
    download.write_all(request.as_bytes()).await.expect("send");
    let mut first = [0u8; 1];
    download
        .read_exact(&mut first)
        .await
        .expect("the answer starts");

    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match TcpStream::connect(served.addr).await {
            Ok(socket) => idle.push(socket),
            Err(_) => refused += 1,
        }
    }
    let started = std::time::Instant::now();
    let answered = crate::harness::request(
        served.addr,
        http::Method::GET,
        "/package?cpuArch=armv8&payloadType=metadataOnly",
        &[],
    )
    .await;
    let waited = started.elapsed();
    println!(
        "{} idle sockets open ({refused} refused), a new client answered in {waited:?}",
        idle.len()
    );
    assert_eq!(answered.status, http::StatusCode::OK);
    assert!(waited < Duration::from_secs(2), "{waited:?}");

    let mut rest = Vec::new();
    download
        .read_to_end(&mut rest)
        .await
        .expect("the download goes on");
    let mut response = first.to_vec();
    response.extend(rest);
    assert!(complete(&response), "the download in progress was cut");
    drop(idle);
}
