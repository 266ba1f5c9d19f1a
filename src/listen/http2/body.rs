//! A request body received on an HTTP/2 connection of our own: the connection pushes each
//! DATA frame's bytes (and the trailers) into a queue the body shares with it, and the
//! body hands them to whoever polls it: the exchange, in the connection's task, or
//! hyper's HTTP/2 client, in its own. What the body hands out is counted, so that the
//! connection gives that much window back to the client; a body dropped unread lets the
//! connection give back everything still queued and whatever comes after.

#![allow(clippy::disallowed_types)] // The queue's lock: held for a push or a pop, never across an await.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Queue {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// The client ended the body (END_STREAM, or its trailers).
    ended: bool,
    /// The stream was reset before the body ended.
    reset: bool,
    /// Handed out since the connection last collected the count.
    taken: usize,
    /// The body was dropped: nobody will take what is queued.
    dropped: bool,
    reader: Option<Waker>,
    /// The connection's task, woken when bytes are taken.
    conn: Option<Waker>,
    /// The client waits for `100 Continue` before it sends the body (`expect:
    /// 100-continue`): asked for when the body is first read, as hyper's HTTP/1.1 server
    /// does, so a request answered without its body never has it sent.
    expects_continue: bool,
    /// The body was read while the client waited: the connection sends the 100.
    continue_due: bool,
}

fn lock(q: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// The request body, as the proxy reads it.
pub struct Body {
    /// `None`: a request without a body (no queue made).
    queue: Option<Arc<Mutex<Queue>>>,
    length: Option<u64>,
}

/// The body of a request that has none.
pub fn empty() -> Body {
    Body {
        queue: None,
        length: Some(0),
    }
}

/// The connection's end of a body.
pub struct Feed(Arc<Mutex<Queue>>);

/// A body and the connection's end of it; `length`: the request's `content-length`.
pub fn channel(length: Option<u64>, conn: Waker) -> (Body, Feed) {
    let queue = Arc::new(Mutex::new(Queue {
        conn: Some(conn),
        ..Queue::default()
    }));
    (
        Body {
            queue: Some(queue.clone()),
            length,
        },
        Feed(queue),
    )
}

/// The body was reset by the client, or the connection ended, before it was complete.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client reset the HTTP/2 stream before its body ended")
    }
}

impl std::error::Error for Aborted {}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(queue) = &self.queue else {
            return Poll::Ready(None);
        };
        let mut q = lock(queue);
        if q.expects_continue {
            q.expects_continue = false;
            q.continue_due = true;
            if let Some(w) = &q.conn {
                w.wake_by_ref();
            }
        }
        if let Some(chunk) = q.chunks.pop_front() {
            q.taken += chunk.len();
            let conn = q.conn.clone();
            drop(q);
            if let Some(w) = conn {
                w.wake();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(t) = q.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if q.reset {
            return Poll::Ready(Some(Err(Box::new(Aborted))));
        }
        if q.ended {
            return Poll::Ready(None);
        }
        if !q.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            q.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let Some(queue) = &self.queue else {
            return true;
        };
        let q = lock(queue);
        q.ended && q.chunks.is_empty() && q.trailers.is_none() && !q.reset
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let mut q = lock(queue);
        q.dropped = true;
        let conn = q.conn.take();
        drop(q);
        if let Some(w) = conn {
            w.wake();
        }
    }
}

/// The connection dropped its end (the stream is gone, or the connection ended) before
/// the body ended: the reader, maybe hyper's HTTP/2 client or a tunnel in a task of its
/// own, sees the body fail rather than wait for bytes that will not come.
impl Drop for Feed {
    fn drop(&mut self) {
        self.reset();
    }
}

impl Feed {
    /// The client asked for `100 Continue` before sending the body.
    pub fn expect_continue(&self) {
        lock(&self.0).expects_continue = true;
    }

    fn wake_reader(mut q: MutexGuard<'_, Queue>) {
        let reader = q.reader.take();
        drop(q);
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// Body data from a DATA frame. Returns false when the body was dropped: the bytes
    /// are not queued, and the caller gives them back to the client at once.
    pub fn push(&self, data: Bytes, end: bool) -> bool {
        let mut q = lock(&self.0);
        if q.dropped {
            return false;
        }
        if !data.is_empty() {
            q.chunks.push_back(data);
            // The client sent the body without waiting: no 100 (RFC 9110, 10.1.1).
            q.expects_continue = false;
        }
        q.ended |= end;
        Self::wake_reader(q);
        true
    }

    /// The trailers, which end the body.
    pub fn trailers(&self, fields: HeaderMap) {
        let mut q = lock(&self.0);
        q.trailers = Some(fields);
        q.ended = true;
        Self::wake_reader(q);
    }

    /// The stream was reset (or the connection ended) before the body did.
    pub fn reset(&self) {
        let mut q = lock(&self.0);
        if !q.ended {
            q.reset = true;
        }
        Self::wake_reader(q);
    }

    /// Bytes handed out since the last call, and what a dropped body left queued: both
    /// are the client's to send again. And whether the 100 is due now (once): the body
    /// was read while the client waited for it. One lock for both, on every pass.
    pub fn collect(&self) -> (usize, bool) {
        let mut q = lock(&self.0);
        let mut n = std::mem::take(&mut q.taken);
        if q.dropped {
            n += q.chunks.drain(..).map(|c| c.len()).sum::<usize>();
        }
        (n, std::mem::take(&mut q.continue_due))
    }

    /// Whether the body was dropped.
    pub fn dropped(&self) -> bool {
        lock(&self.0).dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[tokio::test]
    async fn data_trailers_and_what_was_taken() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let (mut body, feed) = channel(Some(5), Waker::from(woken.clone()));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(feed.push(Bytes::from_static(b"abc"), false));
        assert!(feed.push(Bytes::from_static(b"de"), false));
        let mut t = HeaderMap::new();
        t.insert("x-sum", "1".parse().unwrap());
        feed.trailers(t);
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "abc");
        assert_eq!(feed.collect().0, 3);
        // Taking bytes wakes the connection, to give the window back.
        assert_eq!(woken.0.load(Relaxed), 1);
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "de");
        let f = body.frame().await.unwrap().unwrap();
        assert_eq!(f.into_trailers().unwrap()["x-sum"], "1");
        assert!(body.frame().await.is_none());
        assert_eq!(feed.collect().0, 2);
    }

    #[tokio::test]
    async fn a_reset_is_an_error_and_a_dropped_body_gives_back_all() {
        let noop = Waker::noop().clone();
        let (mut body, feed) = channel(None, noop.clone());
        assert!(feed.push(Bytes::from_static(b"abc"), false));
        feed.reset();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_err());

        // The connection's end dropped before the body ended: the reader sees it fail.
        let (mut body, feed) = channel(None, noop.clone());
        drop(feed);
        assert!(body.frame().await.unwrap().is_err());
        // ... but not after the body ended.
        let (mut body, feed) = channel(None, noop.clone());
        assert!(feed.push(Bytes::from_static(b"abc"), true));
        drop(feed);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.is_none());

        let (body, feed) = channel(None, noop);
        assert!(feed.push(Bytes::from_static(b"abcd"), false));
        drop(body);
        assert!(feed.dropped());
        assert_eq!(feed.collect().0, 4);
        assert!(!feed.push(Bytes::from_static(b"ef"), false));
    }

    #[tokio::test]
    async fn continue_is_due_once_when_a_held_back_body_is_read() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let (mut body, feed) = channel(Some(1), Waker::from(woken.clone()));
        feed.expect_continue();
        assert!(!feed.collect().1, "not before the body is read");
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert_eq!(
            woken.0.load(Relaxed),
            1,
            "the connection is woken to send it"
        );
        assert!(feed.collect().1);
        assert!(!feed.collect().1, "once");
        // A client that sent its body without waiting gets no 100.
        let (mut body, feed) = channel(Some(1), Waker::noop().clone());
        feed.expect_continue();
        assert!(feed.push(Bytes::from_static(b"x"), true));
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!feed.collect().1);
    }

    #[tokio::test]
    async fn a_reader_waiting_is_woken() {
        let (mut body, feed) = channel(None, Waker::noop().clone());
        let reading = tokio::spawn(async move { body.frame().await.map(|f| f.is_ok()) });
        tokio::task::yield_now().await;
        feed.push(Bytes::from_static(b"x"), true);
        assert_eq!(reading.await.unwrap(), Some(true));
    }
}
