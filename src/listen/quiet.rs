//! `limits.idle_timeout` for HTTP/2 connections served by hyper (`http2_server: hyper`),
//! whose server has no idle timeout of its own. The bytes moving either way are counted
//! ([`Counted`]); [`idle`] resolves once a whole timeout passed with none moving and no
//! request in flight, and the connection is then shut down gracefully (GOAWAY, NO_ERROR),
//! as tracegate's own HTTP/2 server and nginx's `keepalive_timeout` do.
//!
//! A wrapper of its own rather than a count in `limits::Watched` (which wraps every client
//! connection): our HTTP/1.1 connections write through `Watched` on every answer and need no
//! count.
//!
//! Unlike our own server's, this one cannot tell a stream whose answer waits for a client
//! that reads nothing from one whose upstream is slow: while a request is in flight the
//! connection is kept (no `send_timeout` here).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::ConnState;

/// A connection's IO, counting the reads and writes that moved bytes.
pub struct Counted<I> {
    inner: I,
    moves: Arc<AtomicU64>,
}

impl<I> Counted<I> {
    pub fn new(inner: I) -> (Self, Arc<AtomicU64>) {
        let moves = Arc::new(AtomicU64::new(0));
        (
            Counted {
                inner,
                moves: moves.clone(),
            },
            moves,
        )
    }

    fn moved(&self) {
        // One task touches it at a time; the count only has to change.
        self.moves
            .store(self.moves.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Counted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Counted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once `timeout` has passed with nothing moved on the connection and nothing in
/// flight at its end; looked at once a timeout, so within twice `timeout` of going quiet.
/// Never resolves for `None`.
pub async fn idle(state: &ConnState, moves: &AtomicU64, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let mut seen = moves.load(Relaxed);
    loop {
        tokio::time::sleep(timeout).await;
        let now = moves.load(Relaxed);
        if now == seen && state.in_flight() == 0 {
            return;
        }
        seen = now;
    }
}
