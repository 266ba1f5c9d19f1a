//! The gRPC exporter's connection, with its writes gathered into one system call a burst.
//!
//! HTTP/2 (the `h2` crate) writes a DATA frame at a time, each at most the collector's
//! `SETTINGS_MAX_FRAME_SIZE` (16 KiB unless it asks for more; the OpenTelemetry Collector
//! does not), and flushes after each: a 220 KB batch left as 16 `writev` calls, each one a
//! trip through the loopback or network stack, on the core the proxy's workers run on
//! (`strace` of the export thread under load, benches/README.md). [`Gathered`] copies what
//! HTTP/2 writes into a buffer of its own and writes it out when the connection is next
//! polled: one call for the whole burst, or one per [`LIMIT`] bytes.
//!
//! The flush HTTP/2 asks for after new bytes is answered at once and the connection's task
//! is woken, so that it is polled again straight away; `h2` reads from the connection
//! first thing in every poll while it is open, and that read writes out what is gathered
//! before it reads. A shutdown writes it out first as well. Nothing gathered waits for
//! anything but the next turn of the export thread's runtime, or for room in the socket:
//! a flush with nothing new waits for that like any other write.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// The most gathered before it is written out while HTTP/2 is still writing: above a
/// 512-span batch (~230 KB), so that a batch leaves in one call.
pub const LIMIT: usize = 256 * 1024;

/// A connection whose writes are gathered (see the module's comment).
pub struct Gathered<T> {
    inner: T,
    buf: Vec<u8>,
    /// How much of `buf` is written out already.
    sent: usize,
    /// Bytes were gathered since the last try to write out: a flush is answered at once.
    /// Otherwise a flush writes out, and waits for the socket when it is full.
    fresh: bool,
}

impl<T> Gathered<T> {
    pub fn new(inner: T) -> Self {
        Gathered {
            inner,
            buf: Vec::new(),
            sent: 0,
            fresh: false,
        }
    }
}

impl<T: Write + Unpin> Gathered<T> {
    /// Writes out everything gathered; `Ready(Ok)` once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.fresh = false;
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `n` more bytes: writes out what is gathered when `n` more would pass
    /// [`LIMIT`]. `Ready(true)` when the caller should write its `n` bytes itself (nothing
    /// gathered, and they alone are [`LIMIT`] or more).
    fn poll_room(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<io::Result<bool>> {
        if self.buf.len() + n > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        Poll::Ready(Ok(n >= LIMIT))
    }
}

impl<T: Write + Unpin> Write for Gathered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.buf.extend_from_slice(data);
        this.fresh = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = data.iter().map(|s| s.len()).sum();
        if ready!(this.poll_room(cx, n))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, data);
        }
        for s in data {
            this.buf.extend_from_slice(s);
        }
        this.fresh |= n > 0;
        Poll::Ready(Ok(n))
    }

    /// Vectored: `h2` then hands over a frame's head and its payload in one call.
    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Answered at once when bytes were gathered since the last try to write out: the
    /// task is woken so that its next poll (a read, see the module's comment) writes them
    /// out. Otherwise it writes out what is left, and waits for the socket when it is
    /// full: answering at once then would have the task poll itself again and again while
    /// the collector is slow to read.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.fresh {
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<T: Read + Write + Unpin> Read for Gathered<T> {
    /// Writes out what is gathered, then reads. A write that cannot go on now (the
    /// socket's buffer is full) leaves the rest gathered and the task woken when it can;
    /// the read goes on regardless.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: Connection> Connection for Gathered<T> {
    fn connected(&self) -> Connected {
        self.inner.connected()
    }
}

/// A connector whose connections are [`Gathered`].
#[derive(Clone)]
pub struct Gather<C>(pub C);

impl<C> tower_service::Service<http::Uri> for Gather<C>
where
    C: tower_service::Service<http::Uri>,
    C::Future: Send + 'static,
{
    type Response = Gathered<C::Response>;
    type Error = C::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Gathered<C::Response>, C::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Gathered::new) })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::{TcpSocket, TcpStream};

    use super::*;

    /// Counts the writes that reach the socket (those that wrote something), and the
    /// writes the socket could not take then (`Pending`).
    struct Counted<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
        refused: Arc<AtomicUsize>,
    }

    impl<T> Counted<T> {
        fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
            match r {
                Poll::Ready(Ok(n)) if n > 0 => self.writes.fetch_add(1, Relaxed),
                Poll::Pending => self.refused.fetch_add(1, Relaxed),
                _ => 0,
            };
            r
        }
    }

    impl<T: Read + Unpin> Read for Counted<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: ReadBufCursor<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: Write + Unpin> Write for Counted<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write(cx, data);
            self.count(r)
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let r = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
            self.count(r)
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

    /// A real HTTP/2 server (hyper, hyper's default windows) that answers each request
    /// with its body's length and a checksum of its bytes. `small_buffers`: the listening
    /// socket's receive buffer is made small, so that a big write cannot go at once.
    async fn server(small_buffers: bool) -> SocketAddr {
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffers {
            socket.set_recv_buffer_size(4096).unwrap();
        }
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(summary(
                            &body,
                        )))))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        addr
    }

    fn summary(body: &[u8]) -> String {
        let sum = body.iter().enumerate().fold(0u64, |s, (i, &b)| {
            s.wrapping_add((i as u64 + 1) * u64::from(b))
        });
        format!("{} {sum}", body.len())
    }

    fn body(len: usize) -> Bytes {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// The second request's trip: the server's summaries of both bodies, and the writes
    /// the socket took and refused while the second was sent.
    struct Sent {
        answers: Vec<String>,
        writes: usize,
        refused: usize,
    }

    /// Sends a small request (so that both sides' settings are exchanged), then `len`
    /// bytes, over one HTTP/2 connection, gathered or not.
    async fn send(addr: SocketAddr, gathered: bool, len: usize, small_buffers: bool) -> Sent {
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffers {
            socket.set_send_buffer_size(4096).unwrap();
        }
        let tcp: TcpStream = socket.connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (writes, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let io = Counted {
            inner: TokioIo::new(tcp),
            writes: writes.clone(),
            refused: refused.clone(),
        };
        let mut sent = Sent {
            answers: Vec::new(),
            writes: 0,
            refused: 0,
        };
        macro_rules! exchange {
            ($io:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), $io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for b in [body(100), body(len)] {
                    let before = (writes.load(Relaxed), refused.load(Relaxed));
                    let req = http::Request::post("http://tracegate.test/")
                        .body(Full::new(b))
                        .unwrap();
                    let answer = sender.send_request(req).await.unwrap();
                    let text = answer.into_body().collect().await.unwrap().to_bytes();
                    sent.answers.push(String::from_utf8(text.to_vec()).unwrap());
                    sent.writes = writes.load(Relaxed) - before.0;
                    sent.refused = refused.load(Relaxed) - before.1;
                }
            }};
        }
        if gathered {
            exchange!(Gathered::new(io));
        } else {
            exchange!(io);
        }
        sent
    }

    /// [`send`] to a server of its own, checking that both bodies arrived whole.
    async fn send_whole(gathered: bool, len: usize, small_buffers: bool) -> Sent {
        let sent = send(server(small_buffers).await, gathered, len, small_buffers).await;
        assert_eq!(sent.answers, [summary(&body(100)), summary(&body(len))]);
        sent
    }

    #[tokio::test]
    async fn a_batch_leaves_in_a_few_writes_and_arrives_whole() {
        let len = 220_000;
        // Without gathering, HTTP/2 writes each 16 KiB frame on its own: this is what the
        // count below is compared with.
        let plain = send_whole(false, len, false).await.writes;
        assert!(plain >= len / 16_384, "{plain} writes without gathering");
        // The request's head and its body (the head goes before the body is polled).
        let gathered = send_whole(true, len, false).await.writes;
        assert!((1..=3).contains(&gathered), "{gathered} writes gathered");
    }

    #[tokio::test]
    async fn more_than_the_limit_leaves_in_pieces_of_it() {
        let writes = send_whole(true, 3 * LIMIT + 1000, false).await.writes;
        // hyper's server opens a 1 MiB window: the body waits once for more.
        assert!((4..=10).contains(&writes), "{writes} writes");
    }

    #[tokio::test]
    async fn writes_the_socket_cannot_take_at_once_arrive_whole_without_spinning() {
        let sent = send_whole(true, 2 * LIMIT + 12_345, true).await;
        // The small buffers took it in many partial writes (the rest waited, gathered).
        assert!(
            sent.writes > 10,
            "{} writes: the socket took it at once",
            sent.writes
        );
        // A refused write waits for the socket (or the peer's next frame) before the next
        // try: about two tries for each write taken (the one after it, and the flush's).
        // A connection that polled itself again while the socket was full tried over and
        // over (890 refused against 104 taken, on this single-threaded runtime).
        assert!(
            sent.refused <= 3 * sent.writes + 20,
            "{} writes refused, {} taken",
            sent.refused,
            sent.writes
        );
    }
}
