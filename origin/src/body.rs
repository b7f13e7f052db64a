//! Response bodies: small ones from memory, packages streamed from a writer task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

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
/// [`SINK_CHUNK`]-sized chunks, this bounds a download's buffered bytes.
const CHANNEL_CHUNKS: usize = 4;
/// Bytes gathered before they are handed on as one chunk.
const SINK_CHUNK: usize = 64 * 1024;

/// A body fed by a writer task through [`ChannelSink`]. An `Err` item aborts the
/// response: hyper then closes the connection without ending the chunked body, so
/// neither a client nor a cache can take the truncated bytes for a whole package.
pub fn channel() -> (ChannelSink, Body) {
    let (sender, receiver) = mpsc::channel(CHANNEL_CHUNKS);
    let sink = ChannelSink {
        sender: PollSender::new(sender),
        pending: BytesMut::new(),
    };
    (sink, ChannelBody { receiver }.boxed())
}

#[derive(Debug)]
struct ChannelBody {
    receiver: mpsc::Receiver<io::Result<Bytes>>,
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
        SizeHint::default()
    }
}

/// The writing end of [`channel`]: an `AsyncWrite` that waits while the client is slow.
#[derive(Debug)]
pub struct ChannelSink {
    sender: PollSender<io::Result<Bytes>>,
    pending: BytesMut,
}

impl ChannelSink {
    /// Whether the client has gone away (the body was dropped).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Aborts the response with `error`.
    pub async fn abort(mut self, error: io::Error) {
        if std::future::poll_fn(|cx| self.sender.poll_reserve(cx))
            .await
            .is_ok()
        {
            // The receiver may vanish in between; then there is nobody left to tell.
            let _ = self.sender.send_item(Err(error));
        }
    }

    fn poll_send_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.sender.poll_reserve(cx)).map_err(|_| client_gone())?;
        let chunk = self.pending.split().freeze();
        self.sender
            .send_item(Ok(chunk))
            .map_err(|_| client_gone())?;
        Poll::Ready(Ok(()))
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
