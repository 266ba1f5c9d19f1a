//! A request body on a client connection of our own: the connection reads and decodes it
//! (by `Content-Length` or chunked) when, and only when, the body is polled for more, and
//! hands each piece over through a slot the two share. The body may be polled from
//! another task (hyper's HTTP/2 client sends request bodies from its connection task), so
//! the slot is a mutex, held only for a swap, never across an await.

#![allow(clippy::disallowed_types)] // The slot's lock: see above.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use crate::http1::{BodyError, Chunk};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as the proxy gets it: from hyper's server (HTTP/2, and HTTP/1.1
/// requests handed over to it), or from a connection of our own (HTTP/1.1, or HTTP/2 with
/// `listen::http2`).
pub enum ClientBody {
    Hyper(Incoming),
    Own(Body),
    /// From our own HTTP/2 server (`listen::http2`).
    Http2(crate::listen::http2::body::Body),
}

impl http_body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            ClientBody::Own(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Http2(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Own(b) => b.is_end_stream(),
            ClientBody::Http2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Own(b) => b.size_hint(),
            ClientBody::Http2(b) => b.size_hint(),
        }
    }
}

/// What the connection and the body share.
#[derive(Default)]
pub(super) struct Slot {
    /// The next piece, read and waiting for the body.
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    /// The body asked for more and has not got it yet.
    want: bool,
    /// Everything (or an error) has been put in the slot: nothing more comes.
    done: bool,
    /// `Content-Length` bytes not handed over yet (`None`: chunked).
    left: Option<u64>,
    /// The body was dropped: nobody reads on.
    dropped: bool,
    body: Option<Waker>,
    conn: Option<Waker>,
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A request body read by the connection as it is polled (`None`: no body).
pub struct Body(Option<Arc<Mutex<Slot>>>);

impl Body {
    pub(super) fn empty() -> Body {
        Body(None)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(slot) = &self.0 else {
            return Poll::Ready(None);
        };
        let mut s = lock(slot);
        if let Some(frame) = s.frame.take() {
            return Poll::Ready(Some(frame.map_err(BoxError::from)));
        }
        if s.done {
            return Poll::Ready(None);
        }
        s.want = true;
        if !s.body.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.body = Some(cx.waker().clone());
        }
        let conn = s.conn.take();
        drop(s);
        if let Some(w) = conn {
            w.wake();
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(|slot| {
            let s = lock(slot);
            s.done && s.frame.is_none()
        })
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            None => SizeHint::with_exact(0),
            Some(slot) => match lock(slot).left {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(slot) = &self.0 {
            let mut s = lock(slot);
            s.dropped = true;
            s.want = false;
        }
    }
}

/// How the rest of a request body comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked(Chunk),
}

/// The connection's end of a request body being read.
pub(super) struct Reader {
    pub(super) framing: Framing,
    slot: Arc<Mutex<Slot>>,
}

/// What the body wants of the connection now.
pub(super) enum Demand {
    /// A piece: read and decode one.
    Piece,
    /// Nothing until it asks again (the waker is kept to be woken then).
    Wait,
    /// The body was dropped unread: the rest of it will never be read.
    Abandoned,
}

impl Reader {
    /// A body of `framing`, and the connection's end of it.
    pub(super) fn new(framing: Framing) -> (Body, Reader) {
        let slot = Arc::new(Mutex::new(Slot {
            left: match framing {
                Framing::Length(n) => Some(n),
                Framing::Chunked(_) => None,
            },
            ..Slot::default()
        }));
        (Body(Some(slot.clone())), Reader { framing, slot })
    }

    pub(super) fn demand(&self, cx: &Context<'_>) -> Demand {
        let mut s = lock(&self.slot);
        if s.dropped {
            return Demand::Abandoned;
        }
        if s.want && s.frame.is_none() {
            return Demand::Piece;
        }
        if !s.conn.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.conn = Some(cx.waker().clone());
        }
        Demand::Wait
    }

    /// Hands a piece to the body; `last`: nothing comes after it.
    pub(super) fn put(&self, frame: Result<Frame<Bytes>, BodyError>, last: bool) {
        let mut s = lock(&self.slot);
        if let (Ok(f), Some(left)) = (&frame, &mut s.left) {
            if let Some(d) = f.data_ref() {
                *left = left.saturating_sub(d.len() as u64);
            }
        }
        s.done |= last || frame.is_err();
        s.frame = Some(frame);
        s.want = false;
        let body = s.body.take();
        drop(s);
        if let Some(w) = body {
            w.wake();
        }
    }

    /// The body is over: its end is the next thing the body reads.
    pub(super) fn end(&self) {
        let mut s = lock(&self.slot);
        s.done = true;
        s.left = Some(0);
        s.want = false;
        let body = s.body.take();
        drop(s);
        if let Some(w) = body {
            w.wake();
        }
    }
}
