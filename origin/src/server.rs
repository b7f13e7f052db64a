//! The accept loop: a connection cap that sockets without requests cannot hold against
//! new clients, a header-read timeout and a graceful drain.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fleetpack_store::Store;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::service;
use crate::snapshot::Rules;

/// Largest request head accepted (request line and headers); `If-None-Match` alone may
/// take 8 KiB.
/// hyper also caps its write buffer at this size; `ChannelSink::abort` relies on it being
/// smaller than a body chunk.
const MAX_REQUEST_HEAD: usize = 32 * 1024;
const _: () = assert!(MAX_REQUEST_HEAD < crate::body::SINK_CHUNK);

/// Serves `store` on `listener` until `shutdown` completes, then stops accepting and
/// lets running responses finish for at most `config.shutdown_grace`.
pub async fn run<S: Store>(
    listener: TcpListener,
    store: S,
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let app = Arc::new(App {
        store,
        rules: Rules::new(config.answer_cache_bytes),
        metrics: Default::default(),
        config,
    });
    app.rules.load(&app.store, &app.metrics).await;
    let stop_refresh = CancellationToken::new();
    let refresher = tokio::spawn({
        let app = Arc::clone(&app);
        let stop = stop_refresh.clone();
        async move {
            let interval = app.config.rules_refresh;
            app.rules
                .keep_fresh(&app.store, &app.metrics, interval, stop)
                .await;
        }
    });

    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    let permits = Arc::new(Semaphore::new(app.config.max_connections));
    let unused = Arc::new(Unused::default());
    let graceful = GracefulShutdown::new();
    // Owned here so that whatever outlives the grace period is cut when `run` returns,
    // also when the runtime goes on (as in tests or an embedding program).
    let mut connections = JoinSet::new();
    tracing::info!(address = %listener.local_addr()?, store = %app.store.describe(), "listening");
    tokio::pin!(shutdown);
    loop {
        let ready = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => Some(permit),
            // At the cap with every connection busy, new clients wait in the backlog
            // instead of being accepted and starved.
            Err(_) if unused.is_empty() => tokio::select! {
                permit = Arc::clone(&permits).acquire_owned() => Some(permit.expect("the semaphore is never closed")),
                () = &mut shutdown => break,
            },
            // At the cap with connections that sent nothing: accept, then make room.
            Err(_) => None,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let permit = match ready {
            Some(permit) => permit,
            None => {
                // Sockets that connect and send nothing must not keep clients out: the
                // one that has waited longest without a request makes room, as nginx
                // reuses idle keep-alive connections. A request in progress is never cut.
                if unused.close_oldest() {
                    Metrics::increment(&app.metrics.connections_closed_unused);
                }
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let waiting = unused.add();
        let service = {
            let waiting = Arc::clone(&waiting);
            service_fn(move |request| {
                waiting.requested();
                service::handle(Arc::clone(&app), request)
            })
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            tokio::select! {
                ended = connection => if let Err(error) = ended {
                    tracing::debug!(error = %error, "connection ended with an error");
                },
                () = waiting.close.cancelled() => {
                    tracing::debug!("closed a connection that sent no request, to admit another");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    stop_refresh.cancel();
    let _ = refresher.await;
    let grace = app.config.shutdown_grace;
    tracing::info!(grace = %humantime::format_duration(grace), "shutting down; letting running responses finish");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; cutting the remaining connections");
    }
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::terminate(),
    ) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = interrupt.await;
            return;
        }
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

/// Connections that have not sent a request yet, oldest first: the ones that make room
/// for new clients at the connection cap.
#[derive(Debug, Default)]
struct Unused {
    connections: Mutex<VecDeque<Arc<Waiting>>>,
}

/// One connection's wait for its first request.
#[derive(Debug, Default)]
struct Waiting {
    /// [`WAITING`], then [`REQUESTED`] or [`CLOSING`], whichever comes first.
    state: AtomicU8,
    close: CancellationToken,
}

const WAITING: u8 = 0;
const REQUESTED: u8 = 1;
const CLOSING: u8 = 2;

impl Waiting {
    /// The connection sent a request: from now on it is never closed to make room.
    fn requested(&self) {
        let _ =
            self.state
                .compare_exchange(WAITING, REQUESTED, Ordering::AcqRel, Ordering::Acquire);
    }
}

impl Unused {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Arc<Waiting>>> {
        self.connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn add(&self) -> Arc<Waiting> {
        let waiting = Arc::new(Waiting::default());
        let mut connections = self.lock();
        // Connections that sent a request leave the queue here, so it stays short.
        connections.retain(|waiting| waiting.state.load(Ordering::Acquire) == WAITING);
        connections.push_back(Arc::clone(&waiting));
        waiting
    }

    fn is_empty(&self) -> bool {
        !self
            .lock()
            .iter()
            .any(|waiting| waiting.state.load(Ordering::Acquire) == WAITING)
    }

    /// Closes the connection that has waited longest without a request; false when
    /// every connection has sent one.
    fn close_oldest(&self) -> bool {
        let mut connections = self.lock();
        while let Some(waiting) = connections.pop_front() {
            // Only a connection still waiting is closed: one whose request arrived in the
            // meantime has moved on.
            if waiting
                .state
                .compare_exchange(WAITING, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                waiting.close.cancel();
                return true;
            }
        }
        false
    }
}
