//! Response bodies: small ones from memory, packages streamed from a writer task.

use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use fleetpack_store::archive::ArchiveError;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::metrics::Metrics;

/// Every response body the origin sends.
pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Chunks a writer task hands to the connection before it waits: with
/// [`SINK_CHUNK`]-sized chunks or a store's blocks, this bounds a download's buffered
/// bytes (two chunks, as many as keep the connection busy while the next is made).
const CHANNEL_CHUNKS: usize = 2;
/// Bytes gathered before they are handed on as one chunk.
pub(crate) const SINK_CHUNK: usize = 64 * 1024;

/// A body fed by a writer task through [`ChannelSink`]. An `Err` item aborts the
/// response: hyper then closes the connection without ending the chunked body, so
/// neither a client nor a cache can take the truncated bytes for a whole package.
///
/// With `len`, the body announces that exact length (and hyper sends it as
/// `Content-Length`); a body that ends short of it is cut as well.
pub fn channel(len: Option<u64>) -> (ChannelSink, Body) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let sink = ChannelSink {
        sender: PollSender::new(sender.clone()),
        raw: sender,
        pending: BytesMut::new(),
        announced: len,
        sent: 0,
    };
    (sink, ChannelBody { receiver, len }.boxed())
}

#[derive(Debug)]
struct ChannelBody {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
    len: Option<u64>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.receiver
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        self.len
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// The writing end of [`channel`]: an `AsyncWrite` that waits while the client is slow.
#[derive(Debug)]
pub struct ChannelSink {
    sender: PollSender<io::Result<Bytes>>,
    raw: mpsc::Sender<io::Result<Bytes>>,
    pending: BytesMut,
    /// The body's announced length, if any, and the bytes handed on so far.
    announced: Option<u64>,
    sent: u64,
}

/// Sent after the last real bytes of an aborted body; see [`ChannelSink::abort`].
static FILLER: [u8; SINK_CHUNK] = [0; SINK_CHUNK];

impl ChannelSink {
    /// Whether the client has gone away (the body was dropped).
    pub fn is_closed(&self) -> bool {
        // `raw`, not `sender`: a PollSender learns of the closure only when it sends,
        // and blocks bypass it.
        self.raw.is_closed()
    }

    /// Aborts the response with `error`, after the bytes written so far.
    ///
    /// hyper drops the response bytes it still buffers when a body fails, and it buffers
    /// up to its write-buffer limit (the server's `max_buf_size`, smaller than
    /// [`SINK_CHUNK`]). So up to two chunks of filler follow the real bytes, and the error
    /// is sent only once the connection has taken them: by then every real byte has gone
    /// to the socket. The filler itself is never decoded, since whoever aborts ends the
    /// real bytes with something no decoder accepts; and it never reaches a body's
    /// announced length.
    pub async fn abort(mut self, error: io::Error) {
        use tokio::io::AsyncWriteExt;
        if self.flush().await.is_err() {
            return;
        }
        // A body of announced length must stay short of it, or it would look complete.
        let mut filler = 2 * SINK_CHUNK as u64;
        if let Some(announced) = self.announced {
            filler = filler.min(announced.saturating_sub(self.sent).saturating_sub(1));
        }
        while filler > 0 {
            let take = filler.min(SINK_CHUNK as u64) as usize;
            if self
                .raw
                .send(Ok(Bytes::from_static(&FILLER[..take])))
                .await
                .is_err()
            {
                return;
            }
            filler -= take as u64;
        }
        if let Ok(mut permits) = self.raw.reserve_many(CHANNEL_CHUNKS).await
            && let Some(permit) = permits.next()
        {
            permit.send(Err(error));
        }
    }

    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.sender.poll_reserve(cx)).map_err(|_| client_gone())?;
        let chunk = self.pending.split().freeze();
        self.sent += chunk.len() as u64;
        self.sender
            .send_item(Ok(chunk))
            .map_err(|_| client_gone())?;
        Poll::Ready(Ok(()))
    }
}

impl fleetpack_store::splice::BlockSink for ChannelSink {
    /// Hands `block` to the connection as it is, waiting (blocking the thread) while
    /// the client is slow. Only for a sink nothing was written to through `AsyncWrite`.
    fn send_block(&mut self, block: Bytes) -> io::Result<()> {
        debug_assert!(self.pending.is_empty(), "bytes written before a block");
        let len = block.len() as u64;
        self.raw
            .blocking_send(Ok(block))
            .map_err(|_| client_gone())?;
        self.sent += len;
        Ok(())
    }
}

fn client_gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the client closed the connection",
    )
}

impl AsyncWrite for ChannelSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() >= SINK_CHUNK {
            ready!(self.poll_send_pending(cx))?;
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_pending(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

/// Runs `write` with the body's sink on a blocking thread; `None` when it panicked.
pub async fn on_blocking_thread(
    mut sink: ChannelSink,
    write: impl FnOnce(&mut ChannelSink, &tokio::runtime::Handle) -> Result<(), ArchiveError>
    + Send
    + 'static,
) -> Option<(ChannelSink, Result<(), ArchiveError>)> {
    let runtime = tokio::runtime::Handle::current();
    let sent = tokio::task::spawn_blocking(move || {
        let written = write(&mut sink, &runtime);
        (sink, written)
    })
    .await;
    sent.map_err(|panicked| tracing::error!(error = %panicked, "body writer failed"))
        .ok()
}

/// Where a streamed body's ending is counted.
pub struct BodyCounters<'a> {
    pub completed: &'a AtomicU64,
    pub aborted: &'a AtomicU64,
    pub client_gone: &'a AtomicU64,
}

/// Ends a streamed body after its writer: counted as completed, cut by the client, or
/// aborted so that it never looks complete. `what` names it in the log.
pub async fn end_body(
    written: Option<(ChannelSink, Result<(), ArchiveError>)>,
    counters: BodyCounters<'_>,
    what: &str,
) {
    let Some((sink, written)) = written else {
        Metrics::increment(counters.aborted);
        return;
    };
    match written {
        Ok(()) => Metrics::increment(counters.completed),
        Err(error) if sink.is_closed() => {
            Metrics::increment(counters.client_gone);
            tracing::debug!(
                what,
                error = &error as &dyn std::error::Error,
                "client left during a download"
            );
        }
        Err(error) => {
            Metrics::increment(counters.aborted);
            tracing::error!(
                what,
                error = &error as &dyn std::error::Error,
                "download aborted after the status line"
            );
            sink.abort(io::Error::other(error)).await;
        }
    }
}
