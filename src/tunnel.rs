//! After an upgrade's handshake (WebSocket): the bytes flow both ways between the client
//! and the upstream until a side is done. The upstream's side is always hyper's upgraded
//! HTTP/1.1 connection. The client's side is hyper's upgraded connection (HTTP/1.1
//! `Upgrade`, or an extended CONNECT on hyper's HTTP/2 server), or a stream of our own
//! HTTP/2 server (`listen::http2`): its DATA frames come in as the request's body, and
//! what goes out is the response's body.

use bytes::{Bytes, BytesMut};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::listen::ClientBody;
use crate::listen::http2::body as h2body;

/// How much is read from the upstream at a time for an HTTP/2 stream.
const READ_CHUNK: usize = 16 * 1024;
/// Chunks read from the upstream that wait for the client's stream (its window).
const QUEUED: usize = 4;

/// The client's side of an upgrade, taken from the request before it goes upstream.
pub enum ClientSide {
    /// hyper hands over the connection (or its HTTP/2 stream) once the answer is sent.
    Hyper(OnUpgrade),
    /// A stream of our HTTP/2 server: its request body, the bytes the client sends.
    Stream(h2body::Body),
}

impl ClientSide {
    /// Takes the client's side of an upgrade `req` asks for: an extended CONNECT on our
    /// HTTP/2 server leaves an empty body in its place (the stream's DATA are the
    /// tunnel's, not a body for the upstream), as hyper's server does.
    pub fn take(req: &mut Request<ClientBody>) -> ClientSide {
        if req.method() == Method::CONNECT
            && let ClientBody::Http2(b) = req.body_mut()
        {
            return ClientSide::Stream(std::mem::replace(b, h2body::empty()));
        }
        ClientSide::Hyper(hyper::upgrade::on(req))
    }
}

/// The client's bytes from an upstream's tunnel, for a [`ClientSide::Stream`]: the
/// response body reads them (`ProxyBody::tunnel`). An error ends the stream with a reset.
pub type Downstream = mpsc::Receiver<std::io::Result<Bytes>>;

/// Starts moving bytes between `client` and the upstream's upgraded connection. For a
/// stream of our HTTP/2 server, the returned receiver is the response body's source.
pub fn start(client: ClientSide, upstream: OnUpgrade) -> Option<Downstream> {
    match client {
        ClientSide::Hyper(client) => {
            tokio::spawn(connections(client, upstream));
            None
        }
        ClientSide::Stream(body) => {
            let (tx, rx) = mpsc::channel(QUEUED);
            tokio::spawn(stream(body, upstream, tx));
            Some(rx)
        }
    }
}

/// Copies bytes both ways between two upgraded connections until either side closes.
async fn connections(client: OnUpgrade, upstream: OnUpgrade) {
    let (Ok(client), Ok(upstream)) = (client.await, upstream.await) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// An HTTP/2 stream's tunnel: the request body's bytes to the upstream (its end shuts
/// the upstream's writing side, as END_STREAM is a half-close, RFC 9113 section 8.5), and
/// the upstream's bytes to `tx` (their end ends the response; an error resets it). Each
/// direction goes on after the other half-closed; a client that resets the stream, or
/// goes away, ends both.
async fn stream(body: h2body::Body, upstream: OnUpgrade, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    let upstream = match upstream.await {
        Ok(u) => u,
        Err(e) => {
            let _ = tx.send(Err(std::io::Error::other(e))).await;
            return;
        }
    };
    let (mut from_up, mut to_up) = tokio::io::split(TokioIo::new(upstream));
    let up = async {
        let mut body = std::pin::pin!(body);
        while let Some(frame) = body.frame().await {
            // The client reset the stream, or its connection ended.
            let Ok(frame) = frame else { return false };
            if let Ok(data) = frame.into_data()
                && to_up.write_all(&data).await.is_err()
            {
                return false;
            }
        }
        let _ = to_up.shutdown().await;
        true
    };
    // Owns `tx`: the response ends as soon as this is done. True: the upstream closed its
    // side (the client's may go on, as with a TCP half-close).
    let down = async move {
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(READ_CHUNK);
            match from_up.read_buf(&mut buf).await {
                Ok(0) => return true,
                Ok(_) => {
                    if tx.send(Ok(buf.split().freeze())).await.is_err() {
                        // The client's stream is gone.
                        return false;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return false;
                }
            }
        }
    };
    let mut up = std::pin::pin!(up);
    let mut down = std::pin::pin!(down);
    tokio::select! {
        // The client half-closed: the upstream's answer may still be coming. Otherwise
        // the client reset the stream, or the upstream would not take the bytes.
        half_closed = &mut up => {
            if half_closed {
                down.await;
            }
        }
        // The upstream half-closed: the client's bytes still go to it until the client
        // ends them or the upstream refuses them. Otherwise the client's stream is gone,
        // or the upstream's connection failed (the client sees a reset).
        half_closed = &mut down => {
            if half_closed {
                up.await;
            }
        }
    }
}
