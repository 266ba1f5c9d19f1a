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
//! The flush HTTP/2 asks for is answered at once and the connection's task is woken, so
//! that it is polled again straight away; `h2` reads from the connection first thing in
//! every poll while it is open, and that read writes out what is gathered before it reads.
//! A shutdown writes it out first as well. Nothing gathered waits for anything but the
//! next turn of the export thread's runtime.

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
}

impl<T> Gathered<T> {
    pub fn new(inner: T) -> Self {
        Gathered {
            inner,
            buf: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: Write + Unpin> Gathered<T> {
    /// Writes out everything gathered; `Ready(Ok)` once all of it is written.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
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
        Poll::Ready(Ok(n))
    }

    /// Vectored: `h2` then hands over a frame's head and its payload in one call.
    fn is_write_vectored(&self) -> bool {
        true
    }

    /// Answered at once while anything is gathered; the task is woken so that its next
    /// poll (a read, see the module's comment) writes it out.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buf.is_empty() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(()))
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

    /// Counts the writes that reach the socket (those that wrote something).
    struct Counted<T> {
        inner: T,
        writes: Arc<AtomicUsize>,
    }

    impl<T> Counted<T> {
        fn count(&self, r: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
            if let Poll::Ready(Ok(n)) = r
                && n > 0
            {
                self.writes.fetch_add(1, Relaxed);
            }
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

    /// Sends a small request (so that both sides' settings are exchanged), then `len`
    /// bytes, over one HTTP/2 connection, gathered or not. Returns the server's summaries
    /// of both bodies and how many writes reached the socket for the second request.
    async fn send(
        addr: SocketAddr,
        gathered: bool,
        len: usize,
        small_buffers: bool,
    ) -> (Vec<String>, usize) {
        let socket = TcpSocket::new_v4().unwrap();
        if small_buffers {
            socket.set_send_buffer_size(4096).unwrap();
        }
        let tcp: TcpStream = socket.connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let io = Counted {
            inner: TokioIo::new(tcp),
            writes: writes.clone(),
        };
        let bodies = [body(100), body(len)];
        let mut answers = Vec::new();
        let mut counted = 0;
        macro_rules! exchange {
            ($io:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), $io)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                for b in &bodies {
                    let before = writes.load(Relaxed);
                    let req = http::Request::post("http://tracegate.test/")
                        .body(Full::new(b.clone()))
                        .unwrap();
                    let answer = sender.send_request(req).await.unwrap();
                    let text = answer.into_body().collect().await.unwrap().to_bytes();
                    answers.push(String::from_utf8(text.to_vec()).unwrap());
                    counted = writes.load(Relaxed) - before;
                }
            }};
        }
        if gathered {
            exchange!(Gathered::new(io));
        } else {
            exchange!(io);
        }
        (answers, counted)
    }

    #[tokio::test]
    async fn a_batch_leaves_in_a_few_writes_and_arrives_whole() {
        let addr = server(false).await;
        let len = 220_000;
        let want = vec![summary(&body(100)), summary(&body(len))];
        // Without gathering, HTTP/2 writes each 16 KiB frame on its own: this is what the
        // count below is compared with.
        let (answers, plain) = send(addr, false, len, false).await;
        assert_eq!(answers, want);
        assert!(plain >= len / 16_384, "{plain} writes without gathering");
        let (answers, gathered) = send(addr, true, len, false).await;
        assert_eq!(answers, want);
        // The request's head and its body (the head goes before the body is polled).
        assert!((1..=3).contains(&gathered), "{gathered} writes gathered");
    }

    #[tokio::test]
    async fn more_than_the_limit_leaves_in_pieces_of_it() {
        let addr = server(false).await;
        let len = 3 * LIMIT + 1000;
        let (answers, writes) = send(addr, true, len, false).await;
        assert_eq!(answers, vec![summary(&body(100)), summary(&body(len))]);
        // hyper's server opens a 1 MiB window: the body waits once for more.
        assert!((4..=10).contains(&writes), "{writes} writes");
    }

    #[tokio::test]
    async fn writes_the_socket_cannot_take_at_once_arrive_whole() {
        let addr = server(true).await;
        let len = 2 * LIMIT + 12_345;
        let (answers, writes) = send(addr, true, len, true).await;
        assert_eq!(answers, vec![summary(&body(100)), summary(&body(len))]);
        // The small buffers took it in many partial writes (the rest waited, gathered).
        assert!(writes > 10, "{writes} writes: the socket took it at once");
    }
}
