//! A tap between a cache and the origin: relays the bytes of every connection both
//! ways, unchanged, and keeps the head of each request the cache sent, so that a test
//! sees what reached the origin (a revalidation's `If-None-Match`, a device's header
//! that was not forwarded).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A request as the cache sent it to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// `GET /package?... HTTP/1.1`.
    pub line: String,
    /// Names in lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    fn parse(head: &[u8]) -> Self {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let line = lines.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        RequestHead { line, headers }
    }

    /// The target: path and query.
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }

    /// Every value of `name` (lowercase).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// A listening tap in front of an origin; stops accepting when dropped.
#[derive(Debug)]
pub struct Tap {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<RequestHead>>>,
    accepting: JoinHandle<()>,
}

impl Tap {
    /// A tap relaying to `origin`. It reads request heads only: caches send GET and
    /// HEAD requests without bodies.
    pub async fn start(origin: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the tap");
        let addr = listener.local_addr().expect("tap address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let accepting = tokio::spawn(async move {
            while let Ok((cache, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(upstream) = TcpStream::connect(origin).await else {
                        return;
                    };
                    relay(cache, upstream, seen).await;
                });
            }
        });
        Tap {
            addr,
            requests,
            accepting,
        }
    }

    /// Every request the cache sent so far, in order.
    pub fn requests(&self) -> Vec<RequestHead> {
        self.requests.lock().expect("tap requests").clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn relay(cache: TcpStream, origin: TcpStream, seen: Arc<Mutex<Vec<RequestHead>>>) {
    let (mut from_cache, mut to_cache) = cache.into_split();
    let (mut from_origin, mut to_origin) = origin.into_split();
    let answers = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_origin, &mut to_cache).await;
        let _ = to_cache.shutdown().await;
    });
    let mut pending = Vec::new();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from_cache.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        pending.extend_from_slice(&buffer[..read]);
        while let Some(end) = pending.windows(4).position(|window| window == b"\r\n\r\n") {
            let head = RequestHead::parse(&pending[..end]);
            seen.lock().expect("tap requests").push(head);
            pending.drain(..end + 4);
        }
        if to_origin.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to_origin.shutdown().await;
    let _ = answers.await;
}
