//! The accept loop: a connection cap, a header-read timeout and a graceful drain.

use std::future::Future;
use std::io;
use std::sync::Arc;
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

use crate::config::ServeConfig;
use crate::service::{self, App};
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
    app.rules.refresh(&app.store, &app.metrics).await;
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
    // The permit is taken before accept: at the cap, new clients wait in the backlog
    // instead of being accepted and starved.
    let permits = Arc::new(Semaphore::new(app.config.max_connections));
    let graceful = GracefulShutdown::new();
    // Owned here so that whatever outlives the grace period is cut when `run` returns,
    // also when the runtime goes on (as in tests or an embedding program).
    let mut connections = JoinSet::new();
    tracing::info!(address = %listener.local_addr()?, store = %app.store.describe(), "listening");
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
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
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| service::handle(Arc::clone(&app), request)),
        );
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
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
