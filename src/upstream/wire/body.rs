//! A response body read from an upstream's HTTP/1.1 connection as the client side polls
//! it: by `Content-Length`, chunked (with trailers), or until the upstream closes. At its
//! end the connection goes back to the endpoint's idle list when it can carry another
//! request; a body dropped before its end closes it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::{Connection, Home, MAX_READ_BUF};
use crate::http1::{BodyError, Chunk, Decoded, RawFields, decode};

/// How much of a response body is still to come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

/// A response body read from the connection as it is polled.
pub struct Body {
    /// `None` once the body is over (the connection went home or was closed).
    pub(super) conn: Option<Box<Connection>>,
    pub(super) framing: Incoming,
    /// Body bytes that came with the head.
    pub(super) ready: Option<Bytes>,
    /// The connection can carry another request once the body is read.
    pub(super) keep: bool,
    pub(super) home: Option<Home>,
    /// The head's fields, when kept as they came (the head's map is empty then).
    pub(super) fields: Option<RawFields>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body {
    /// The response head's fields, when they were kept as they came.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.fields.as_ref()
    }

    /// The body is over: the connection goes home if it can carry another request.
    pub(super) fn finish(&mut self) {
        let conn = self.conn.take();
        if let (Some(mut conn), Some(home), true) = (conn, self.home.take(), self.keep) {
            conn.idle();
            home.list.put_back(conn);
        }
    }

    fn fail(&mut self, e: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }

    fn data(&mut self, b: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.framing == Incoming::Length(0) {
            self.finish();
        }
        Poll::Ready(Some(Ok(Frame::data(b))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(b) = this.ready.take() {
            if let Incoming::Length(n) = &mut this.framing {
                *n -= b.len() as u64;
            }
            return this.data(b);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let have = conn.buffered().len();
            match &mut this.framing {
                Incoming::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Incoming::Length(n) if have > 0 => {
                    let take = have.min(usize::try_from(*n).unwrap_or(usize::MAX));
                    *n -= take as u64;
                    let b = conn.inbox.take(take);
                    return this.data(b);
                }
                Incoming::Close if have > 0 => {
                    let b = conn.inbox.take(have);
                    return this.data(b);
                }
                Incoming::Chunked(state) => match decode(&mut conn.inbox, state, "response") {
                    Ok(Decoded::Data(b)) => return this.data(b),
                    Ok(Decoded::End(trailers)) => {
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return this.fail(Box::new(BodyError(e))),
                },
                Incoming::Length(_) | Incoming::Close => {}
            }
            let conn = this.conn.as_deref_mut();
            let Some(conn) = conn else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx, MAX_READ_BUF)) {
                Ok(0) => match this.framing {
                    Incoming::Close => {
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    _ => {
                        return this.fail(Box::new(BodyError(
                            "the upstream closed the connection before the response body ended"
                                .into(),
                        )));
                    }
                },
                Ok(_) => {}
                Err(e) => return this.fail(Box::new(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() && self.ready.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Incoming::Length(n) if self.conn.is_some() || self.ready.is_some() => {
                SizeHint::with_exact(n)
            }
            _ if self.is_end_stream() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
