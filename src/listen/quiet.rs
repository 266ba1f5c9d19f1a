//! `limits.idle_timeout` for HTTP/2 connections served by hyper (`http2_server: hyper`),
//! whose server has no idle timeout of its own. The bytes moving either way are counted
//! ([`Counted`]); [`quiet`] resolves once a whole timeout passed with none moving and no
//! request in flight ([`Quiet::Idle`]: the connection is then shut down gracefully, GOAWAY
//! with NO_ERROR, as tracegate's own HTTP/2 server and nginx's `keepalive_timeout` do), or
//! with a write waiting on the socket all along and nothing written ([`Quiet::Stalled`]: a
//! client that reads nothing; the connection is closed, nginx's `send_timeout`).
//!
//! A wrapper of its own rather than a count in `limits::Watched` (which wraps every client
//! connection): our HTTP/1.1 connections write through `Watched` on every answer and need no
//! count.
//!
//! Unlike our own server's, this one cannot see a client that keeps its HTTP/2 windows shut
//! while it goes on reading: hyper then writes nothing and waits, which looks the same as a
//! slow upstream; such a connection is kept while its requests are in flight.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::ConnState;

/// What a connection's IO did.
#[derive(Default)]
pub struct Moves {
    /// Reads and writes that moved bytes.
    moved: AtomicU64,
    /// The writes among them.
    written: AtomicU64,
    /// The last write is waiting for room in the socket.
    waiting: AtomicBool,
}

impl Moves {
    // One task touches them at a time; the counts only have to change.
    fn bump(n: &AtomicU64) {
        n.store(n.load(Relaxed).wrapping_add(1), Relaxed);
    }

    fn read(&self) {
        Self::bump(&self.moved);
    }

    /// A write's outcome: bytes taken, `Pending` (the socket is full), or an error.
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                Self::bump(&self.moved);
                Self::bump(&self.written);
                self.waiting.store(false, Relaxed);
            }
            Poll::Pending => self.waiting.store(true, Relaxed),
            Poll::Ready(_) => self.waiting.store(false, Relaxed),
        }
    }
}

/// A connection's IO, counting what moved ([`Moves`]).
pub struct Counted<I> {
    inner: I,
    moves: Arc<Moves>,
}

impl<I> Counted<I> {
    pub fn new(inner: I) -> (Self, Arc<Moves>) {
        let moves = Arc::new(Moves::default());
        (
            Counted {
                inner,
                moves: moves.clone(),
            },
            moves,
        )
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
            self.moves.read();
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
        self.moves.wrote(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.moves.wrote(&r);
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

/// Why [`quiet`] resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// Nothing moved either way for a whole timeout, and nothing is in flight.
    Idle,
    /// A write waited for room in the socket for a whole timeout, and nothing was written:
    /// the client reads nothing.
    Stalled,
}

/// Resolves once `timeout` has passed with nothing moved on the connection and nothing in
/// flight at its end, or with a write waiting at its start and its end and nothing written
/// in between; looked at once a timeout, so within twice `timeout`. Never resolves for
/// `None`.
pub async fn quiet(state: &ConnState, moves: &Moves, timeout: Option<Duration>) -> Quiet {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let look = || {
        (
            moves.moved.load(Relaxed),
            moves.written.load(Relaxed),
            moves.waiting.load(Relaxed),
        )
    };
    let mut seen = look();
    loop {
        tokio::time::sleep(timeout).await;
        let now = look();
        if now.0 == seen.0 && state.in_flight() == 0 {
            return Quiet::Idle;
        }
        if seen.2 && now.2 && now.1 == seen.1 {
            return Quiet::Stalled;
        }
        seen = now;
    }
}
