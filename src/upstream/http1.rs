//! An endpoint's HTTP/1.1 connections (`protocol: http1`, `auto` over cleartext, and `auto`
//! over TLS where the server chose HTTP/1.1): connections of our own ([`super::wire`]),
//! the idle ones in a list on the endpoint ([`super::conns::Conns`] decides which protocol
//! a request takes).
//!
//! A request takes the most recently used idle connection the upstream has not closed
//! meanwhile (a look at the socket's readiness, no system call), or connects; the response
//! body carries the connection and puts it back when the response is over. Idle
//! connections are closed after `idle_timeout`, and those beyond `max_idle_per_endpoint`
//! once a whole pass of `reap` (the upstream's background task) found them unused. A
//! request asking to switch protocols (WebSocket) goes on a new connection through hyper's
//! client, whose upgrade machinery hands the tunnel both ends; that connection is not
//! kept. Racing a new connection against one coming free is left out (a request that finds
//! none free connects at once, as Envoy's HTTP/1 pool does).

#![allow(clippy::disallowed_types)] // The list's lock: see `Http1List::idle`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use http::{Request, Response, header};
use hyper::client::conn::http1::Builder;

use super::connect::Conn;
use super::conns::ConnSettings;
use super::wire::{self, Connection, Home};
use super::{Due, Keep, RequestBody, UpstreamBody};
use crate::error::Failure;

/// One endpoint's idle HTTP/1.1 connections.
#[derive(Default)]
pub struct Http1List {
    /// Oldest first. A std mutex, held for a push or a pop (and a readiness look at each
    /// connection passed over), never across an `.await`.
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    conn: Box<Connection>,
    /// When `reap` first saw it idle.
    since: Option<Instant>,
}

impl Http1List {
    /// Sends `req` on a new HTTP/1.1 connection over `io`, kept for the next requests
    /// unless `max_idle` is 0.
    pub async fn send_new(
        self: &Arc<Self>,
        settings: &ConnSettings,
        io: Conn,
        req: Request<RequestBody>,
        keep: Keep<'_>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        if asks_upgrade(&req) {
            return send_upgrade(io, req, keep).await;
        }
        self.send_on(settings, Connection::new(io), req, keep, None)
            .await
    }

    /// Sends `req` on `conn` (origin-form URI); `due`: the wait for the response headers
    /// is timed by the connection (else by the caller). A plain function returning the
    /// send's future: the request path's futures nest as deep as their `async fn`s, and
    /// each level moved the request in and the response out.
    pub fn send_on<'a>(
        self: &Arc<Self>,
        settings: &ConnSettings,
        conn: Box<Connection>,
        req: Request<RequestBody>,
        keep: Keep<'a>,
        due: Option<Due>,
    ) -> impl Future<Output = Result<Response<UpstreamBody>, Failure>> + use<'a> {
        let home = Home {
            list: self.clone(),
            keeps: settings.max_idle > 0,
        };
        wire::send(conn, req, home, keep, due)
    }

    /// The most recently used idle connection the upstream has not closed; the others
    /// passed over are closed.
    pub fn take_idle(&self) -> Option<Box<Connection>> {
        let mut idle = self.lock();
        while let Some(mut i) = idle.pop() {
            if i.conn.alive() {
                return Some(i.conn);
            }
        }
        None
    }

    /// A connection whose response is over: kept, however many are idle (`reap` trims
    /// them). Closing it here when `max_idle` were idle already made a proxy with more
    /// requests in flight than that close connections as they came free and connect again
    /// for the next ones: 256 HTTP/2 clients with 10 streams each on one worker connected
    /// for most requests (18.6k req/s; 44.7k with all kept, `benches/README.md`).
    pub fn put_back(&self, conn: Box<Connection>) {
        self.lock().push(Idle { conn, since: None });
    }

    /// Closes the connections idle for longer than `idle_timeout`, those the upstream
    /// closed, and, of the idle ones beyond `max_idle`, the oldest that were idle at the
    /// last pass already (unused since). `now`: the time of this pass.
    pub fn reap(&self, settings: &ConnSettings, now: Instant) {
        let mut idle = self.lock();
        idle.retain_mut(|i| {
            let since = *i.since.get_or_insert(now);
            now.duration_since(since) < settings.idle_timeout && i.conn.alive()
        });
        // Those an earlier pass saw come first: the list is oldest first, and one taken and
        // put back since is a new entry at its end, first seen now.
        let excess = idle.len().saturating_sub(settings.max_idle);
        let unused = idle
            .iter()
            .take(excess)
            .take_while(|i| i.since.is_some_and(|t| t < now))
            .count();
        idle.drain(..unused);
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The request asks to switch protocols (`forward::ask_upgrade` set `Upgrade`): it takes a
/// new connection of its own.
pub fn asks_upgrade(req: &Request<RequestBody>) -> bool {
    req.headers().contains_key(header::UPGRADE)
}

/// An upgrade request, on a connection of its own through hyper's client: a 101 answer
/// hands the tunnel the connection (`hyper::upgrade::on`).
async fn send_upgrade(
    io: Conn,
    req: Request<RequestBody>,
    keep: Keep<'_>,
) -> Result<Response<UpstreamBody>, Failure> {
    // hyper takes the request: a copy of its head for a retry (upgrades are rare).
    let mut req = req;
    super::merge_added(&mut req);
    let (parts, body) = req.into_parts();
    let head = keep.is_some().then(|| parts.clone());
    let req = Request::from_parts(parts, body);
    let failed = |failure: Failure| {
        if let (Some(keep), Some(head)) = (keep, head) {
            *keep = Some(Box::new(head));
        }
        failure
    };
    let (mut sender, conn) = match Builder::new().handshake(io).await {
        Ok(handshake) => handshake,
        Err(e) => return Err(failed(Failure::new(&e, true))),
    };
    tokio::spawn(async move {
        // Its errors reach the request waiting on it.
        let _ = conn.with_upgrades().await;
    });
    match sender.send_request(req).await {
        Ok(resp) => Ok(resp.map(UpstreamBody::Engine)),
        Err(e) => Err(failed(Failure::new(&e, false))),
    }
}
