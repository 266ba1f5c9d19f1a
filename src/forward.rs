//! Step 5 of the request path: rewrite the request for the upstream (hop-by-hop headers,
//! X-Forwarded-*, one trace context, upgrades) and the response for the client. Sending
//! it is `upstream`'s job.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Version};

use crate::context::correlation::IdValue;
use crate::context::{NameLengths, Outgoing, Propagation, w3c};

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
pub(crate) const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name first: most messages carry none of these, and a `remove` per
    // name hashes and probes the map eight times per message.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The original client when the peer is a trusted proxy: walking `X-Forwarded-For` from the
/// right, the first address that is not itself a trusted proxy. `None` when the peer is not
/// trusted (its headers are not believed) or names nobody usable.
pub fn forwarded_client(
    headers: &HeaderMap,
    peer: std::net::IpAddr,
    trusted: &[crate::config::IpNet],
) -> Option<std::net::IpAddr> {
    let is_trusted = |ip: std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return None;
    }
    let mut hops: Vec<&str> = Vec::new();
    for v in headers.get_all(&X_FORWARDED_FOR) {
        hops.extend(v.to_str().ok()?.split(','));
    }
    for hop in hops.iter().rev() {
        let ip: std::net::IpAddr = hop.trim().parse().ok()?;
        if !is_trusted(ip) {
            return Some(ip);
        }
    }
    None
}

/// Appends `value` to a comma-separated list header (one line out).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: HeaderValue) {
    // Most requests carry no earlier hop's value: the new one goes in as it is (one lookup).
    let mut earlier = match headers.entry(name) {
        header::Entry::Vacant(v) => {
            v.insert(value);
            return;
        }
        header::Entry::Occupied(o) => o,
    };
    let mut joined = String::new();
    for v in earlier.iter() {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.push_str(", ");
            }
            joined.push_str(s);
        }
    }
    if let Ok(s) = value.to_str() {
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(s);
    }
    if let Ok(v) = HeaderValue::from_str(&joined) {
        earlier.insert(v);
    }
}

/// Fields the proxy adds to a request that did not carry them (`X-Forwarded-*`, the
/// `traceparent`, a generated correlation id), kept beside its header map. Our HTTP/1.1
/// upstream connections write them after the map's own fields; wherever else the request
/// goes (hyper's HTTP/2 and upgrade clients, a head kept for a retry) they are merged into
/// the map first ([`Added::merge_into`]). An insert into an `http::HeaderMap` hashes the
/// name and probes the table, ~250-310 instructions for these names, and most requests
/// carry none of them.
///
/// The list travels with the request, which moves many times on its way: it is a `Vec`
/// (three words) whose buffer comes from, and goes back to, a per-thread pool, not an
/// allocation per request.
#[derive(Debug, Default)]
pub struct Added(Vec<Field>);

/// One field of an [`Added`] list.
#[derive(Debug)]
enum Field {
    Value(HeaderName, HeaderValue),
    /// The `traceparent`, as text: a header value of its own (an allocation, and its free)
    /// only where the request goes to a map.
    Traceparent([u8; w3c::TRACEPARENT_LEN]),
    /// A correlation id tracegate made, under its header's name, as text (the same).
    MadeId(HeaderName, [u8; 36]),
}

/// Room for the five fields above.
const ADDED: usize = 5;
/// Lists kept per thread for the next requests; more are dropped. As many as header maps
/// (`http1::SPARE_MAPS`), for the same reason: a list is in flight until the answer comes.
const SPARE_ADDED: usize = crate::http1::SPARE_MAPS;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<Field>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Added {
    /// An empty list, with room from this thread's pool when it has some.
    pub fn new() -> Added {
        // `try_with`: the thread may be ending.
        let spare = SPARE.try_with(|s| s.borrow_mut().pop()).ok().flatten();
        Added(spare.unwrap_or_else(|| Vec::with_capacity(ADDED)))
    }

    /// `name` (which the request's map does not hold) with `value`.
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.0.push(Field::Value(name, value));
    }

    /// The correlation id under `name` (which the request's map does not hold); a made
    /// one as text.
    pub fn add_id(&mut self, name: HeaderName, value: &IdValue) {
        self.0.push(match value {
            IdValue::Reused(v) => Field::Value(name, v.clone()),
            IdValue::Made(text) => Field::MadeId(name, *text),
        });
    }

    /// A `traceparent` (which the request's map does not hold), as text
    /// ([`w3c::traceparent_text`]).
    pub fn add_traceparent(&mut self, text: [u8; w3c::TRACEPARENT_LEN]) {
        self.0.push(Field::Traceparent(text));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the fields, HTTP/1.1 style.
    pub fn put(&self, out: &mut Vec<u8>) {
        for f in &self.0 {
            match f {
                Field::Value(name, value) => crate::http1::put_field(out, name, value),
                Field::Traceparent(text) => {
                    crate::http1::put_raw_field(out, w3c::TRACEPARENT.as_str().as_bytes(), text);
                }
                Field::MadeId(name, text) => {
                    crate::http1::put_raw_field(out, name.as_str().as_bytes(), text);
                }
            }
        }
    }

    /// Moves the fields into `headers`, after its own.
    pub fn merge_into(&mut self, headers: &mut HeaderMap) {
        for f in self.0.drain(..) {
            match f {
                Field::Value(name, value) => drop(headers.append(name, value)),
                Field::Traceparent(text) => {
                    if let Some(v) = crate::context::unique_value(&text) {
                        headers.append(&w3c::TRACEPARENT, v);
                    }
                }
                Field::MadeId(name, text) => {
                    if let Some(v) = crate::context::unique_value(&text) {
                        headers.append(name, v);
                    }
                }
            }
        }
    }
}

impl Drop for Added {
    /// The list goes back to the pool emptied: nothing of one request reaches the next.
    fn drop(&mut self) {
        if self.0.capacity() == 0 || self.0.capacity() > 2 * ADDED {
            return;
        }
        let mut list = std::mem::take(&mut self.0);
        list.clear();
        let _ = SPARE.try_with(|s| {
            let mut spare = s.borrow_mut();
            if spare.len() < SPARE_ADDED {
                spare.push(list);
            }
        });
    }
}

/// What the upstream request carries beyond the client's own headers.
pub struct Outbound<'a> {
    /// The URI's authority (`Endpoint::uri_authority`); `None`: origin-form.
    pub authority: Option<&'a http::uri::Authority>,
    /// The upstream's HTTP version.
    pub version: Version,
    /// The endpoint is `https://`.
    pub upstream_tls: bool,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub client_tls: bool,
    /// The host the client addressed (`Host` or the authority).
    pub host: Option<&'a HeaderValue>,
    /// The peer's address as a header value (`ConnInfo::peer_value`).
    pub peer: Option<&'a HeaderValue>,
    /// The context to inject in every configured format; `None`: an excluded route, whose
    /// trace headers pass through untouched.
    pub trace: Option<(&'a Propagation, Outgoing<'a>)>,
    pub correlation: Option<(&'a HeaderName, &'a IdValue)>,
    /// The names the request may hold (`NameLengths::of` its headers as they arrived).
    pub seen: NameLengths,
}

/// The URI of a request to an endpoint: absolute with `authority`, else origin-form
/// (`path`, `/` when there is none).
pub fn upstream_uri(
    tls: bool,
    authority: Option<&http::uri::Authority>,
    path: Option<PathAndQuery>,
) -> Uri {
    let mut parts = http::uri::Parts::default();
    if let Some(a) = authority {
        parts.scheme = Some(if tls { Scheme::HTTPS } else { Scheme::HTTP });
        parts.authority = Some(a.clone());
    }
    parts.path_and_query = Some(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    Uri::from_parts(parts).unwrap_or_default()
}

/// Rewrites the client's request in place for the upstream. Returns the fields it adds that
/// the request did not have (see [`Added`]).
pub fn prepare_request<B>(req: &mut Request<B>, out: Outbound<'_>) -> Added {
    let path = req.uri().path_and_query().cloned();
    *req.uri_mut() = upstream_uri(out.upstream_tls, out.authority, path);
    *req.version_mut() = out.version;
    let h = req.headers_mut();
    // No room reserved: what is added below goes to the map only under a name it holds
    // already (a list appended to, a value replaced), or as `Host` and `TE`; the rest goes
    // to `added`. A reserve for all of it grew every HTTP/2 request's map (h2 sizes it to
    // the request's fields) for nothing.
    // A name the request cannot hold (no name of its length) is not looked up; one it may
    // hold is. Taken before the hop-by-hop headers go: a removed one is only looked up.
    let seen = out.seen;
    // `TE: trailers` is hop-by-hop but says the client takes trailers, which gRPC requires
    // of every hop: it is kept (and only it).
    let te_trailers = seen.may_have(&header::TE)
        && h.get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    remove_hop_by_hop(h);
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // `Host` is kept; an HTTP/2 request has only `:authority`, which becomes `Host`.
    if !h.contains_key(header::HOST) {
        if let Some(v) = out.host {
            h.insert(header::HOST, v.clone());
        }
    }
    // A name the request cannot hold goes to `added`.
    let mut added = Added::new();
    let mut append = |h: &mut HeaderMap, name: &HeaderName, value: HeaderValue| {
        if seen.may_have(name) && h.contains_key(name) {
            append_list(h, name, value);
        } else {
            added.add(name.clone(), value);
        }
    };
    if let Some(peer) = out.peer {
        append(h, &X_FORWARDED_FOR, peer.clone());
    }
    append(
        h,
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if out.client_tls { "https" } else { "http" }),
    );
    if let Some(host) = out.host {
        append(h, &X_FORWARDED_HOST, host.clone());
    }
    // One copy of each configured format: inbound copies are replaced.
    if let Some((propagation, outgoing)) = &out.trace {
        // What it may hold still: the map gained only `Host` and names it had.
        propagation.inject(h, Some((&mut added, seen)), outgoing);
    }
    if let Some((name, value)) = out.correlation {
        if seen.may_have(name) {
            if let Some(v) = value.to_value() {
                h.insert(name, v);
            }
        } else {
            added.add_id(name.clone(), value);
        }
    }
    added
}

/// A request to switch protocols: HTTP/1.1 `Upgrade`, or HTTP/2 extended CONNECT
/// (RFC 8441, `:protocol`), which goes to an HTTP/1.1 upstream as an `Upgrade`.
#[derive(Clone, Debug)]
pub struct Upgrade {
    pub protocol: String,
    pub extended_connect: bool,
}

/// An HTTP/2 extended CONNECT (RFC 8441): a CONNECT that names a `:protocol`, as opposed
/// to a tunnel to `host:port`.
pub fn is_extended_connect(method: &http::Method, extensions: &http::Extensions) -> bool {
    method == http::Method::CONNECT && extensions.get::<hyper::ext::Protocol>().is_some()
}

/// The protocol a request asks to switch to, if any. `seen`: the names the request may
/// hold; an HTTP/1.1 request without a `Connection` header asks for nothing.
pub fn upgrade_request<B>(req: &Request<B>, seen: NameLengths) -> Option<Upgrade> {
    if req.version() == Version::HTTP_2 {
        let p = req.extensions().get::<hyper::ext::Protocol>()?;
        return (req.method() == http::Method::CONNECT).then(|| Upgrade {
            protocol: p.as_str().to_string(),
            extended_connect: true,
        });
    }
    if req.version() != Version::HTTP_11 || !seen.may_have(&header::CONNECTION) {
        return None;
    }
    let h = req.headers();
    let asks = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| h.get(header::UPGRADE)?.to_str().ok().map(str::to_string))
        .flatten()
        .map(|protocol| Upgrade {
            protocol,
            extended_connect: false,
        })
}

/// An extended CONNECT becomes the HTTP/1.1 `GET` + `Upgrade` the upstream understands; a
/// WebSocket one gets the `Sec-WebSocket-Key` HTTP/2 does without (RFC 8441 section 5).
pub fn connect_to_upgrade<B>(req: &mut Request<B>, protocol: &str) {
    *req.method_mut() = http::Method::GET;
    req.extensions_mut().remove::<hyper::ext::Protocol>();
    let h = req.headers_mut();
    if protocol.eq_ignore_ascii_case("websocket") && !h.contains_key("sec-websocket-key") {
        let key: [u8; 16] = rand::random();
        if let Ok(v) = HeaderValue::from_str(&base64(&key)) {
            h.insert("sec-websocket-key", v);
        }
        h.entry("sec-websocket-version")
            .or_insert(HeaderValue::from_static("13"));
    }
}

/// The upstream's 101 as the HTTP/2 client expects it: a 200, without the HTTP/1.1
/// handshake's headers.
pub fn upgrade_to_connect(status: &mut http::StatusCode, h: &mut HeaderMap) {
    *status = http::StatusCode::OK;
    h.remove("sec-websocket-accept");
}

/// Standard base64 with padding (for a 16-byte WebSocket key).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Puts back the two hop-by-hop headers an upgrade needs on the next hop.
pub fn ask_upgrade(h: &mut HeaderMap, protocol: &str) {
    if let Ok(v) = HeaderValue::from_str(protocol) {
        h.insert(header::UPGRADE, v);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// A 101 for the client keeps `Upgrade` and `Connection: upgrade`.
pub fn keep_upgrade(h: &mut HeaderMap, protocol: Option<&str>) {
    if let Some(p) = protocol {
        ask_upgrade(h, p);
    }
}

/// Response headers for the client: hop-by-hop removed, trace id (`None` for an excluded
/// route) and correlation id added.
pub fn prepare_response(
    headers: &mut HeaderMap,
    trace_id_header: Option<&HeaderName>,
    trace_id: Option<&[u8; 16]>,
    correlation: Option<(&HeaderName, &IdValue)>,
) {
    remove_hop_by_hop(headers);
    Stamp {
        trace: trace_id_header.zip(trace_id),
        correlation,
    }
    .merge_into(headers);
}

/// The fields tracegate adds to a response for the client: the trace id (under
/// `tracing.trace_id_header`) and the correlation id. Each replaces the
/// upstream's field of that name. Our HTTP/1.1 and HTTP/2 connections write them after the
/// response's fields, leaving out those of the same names (`covers`); inserting them in the map
/// hashed both names, and made the trace id a value of its own (an allocation): ~600
/// instructions a request.
#[derive(Clone, Copy, Default)]
pub struct Stamp<'a> {
    pub trace: Option<(&'a HeaderName, &'a [u8; 16])>,
    pub correlation: Option<(&'a HeaderName, &'a IdValue)>,
}

impl Stamp<'_> {
    /// Whether a field of the map named `name` gives way to one of these.
    pub fn covers(&self, name: &HeaderName) -> bool {
        self.trace.is_some_and(|(n, _)| n == name)
            || self.correlation.is_some_and(|(n, _)| n == name)
    }

    /// Whether a field among names with these bits (`RawFields::names`) may be covered.
    pub fn may_cover(&self, names: u64) -> bool {
        let bit = |n: &HeaderName| crate::http1::name_bit(n.as_str().as_bytes());
        let mine =
            self.trace.map_or(0, |(n, _)| bit(n)) | self.correlation.map_or(0, |(n, _)| bit(n));
        mine & names != 0
    }

    /// [`Self::covers`] for a name as it came on the wire, in any case.
    pub fn covers_raw(&self, name: &[u8]) -> bool {
        let same = |n: &HeaderName| n.as_str().as_bytes().eq_ignore_ascii_case(name);
        self.trace.is_some_and(|(n, _)| same(n)) || self.correlation.is_some_and(|(n, _)| same(n))
    }

    /// Each field, name and value.
    pub fn each(&self, mut f: impl FnMut(&HeaderName, &[u8])) {
        // Both under one name (a configuration that asks for it): the correlation id, as
        // `merge_into`'s second insert leaves it.
        let shadowed = |name| self.correlation.is_some_and(|(n, _)| n == name);
        if let Some((name, trace_id)) = self.trace.filter(|(n, _)| !shadowed(*n)) {
            f(name, &w3c::trace_id_hex(trace_id));
        }
        if let Some((name, value)) = self.correlation {
            f(name, value.as_bytes());
        }
    }

    /// Writes the fields, HTTP/1.1 style.
    pub fn put(&self, out: &mut Vec<u8>) {
        self.each(|name, value| crate::http1::put_raw_field(out, name.as_str().as_bytes(), value));
    }

    /// Puts the fields in `headers`, in place of any of the same names (for hyper's
    /// connections, and where something reads the map before it is written).
    pub fn merge_into(&self, headers: &mut HeaderMap) {
        headers.reserve(2);
        if let Some((name, trace_id)) = self.trace {
            let hex = w3c::trace_id_hex(trace_id);
            if let Some(v) = crate::context::unique_value(&hex) {
                headers.insert(name, v);
            }
        }
        if let Some((name, id)) = self.correlation
            && let Some(value) = id.to_value()
        {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_list_comes_back_from_the_pool_empty_and_merges_after_the_map() {
        // A thread of its own: the pool is per thread.
        std::thread::spawn(|| {
            let mut a = Added::new();
            a.add(
                X_FORWARDED_FOR.clone(),
                HeaderValue::from_static("10.0.0.1"),
            );
            a.add(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
            let room = a.0.as_ptr();
            drop(a);
            let mut again = Added::new();
            assert!(again.is_empty(), "nothing of one request reaches the next");
            assert_eq!(again.0.as_ptr(), room, "the same list, not a new one");
            again.add(X_FORWARDED_HOST.clone(), HeaderValue::from_static("h"));
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("h"));
            h.insert(X_FORWARDED_HOST.clone(), HeaderValue::from_static("a"));
            again.merge_into(&mut h);
            assert!(again.is_empty());
            let hosts: Vec<_> = h.get_all(&X_FORWARDED_HOST).iter().collect();
            assert_eq!(hosts, ["a", "h"], "appended after the map's own");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ids_kept_as_text_are_written_and_merged_as_their_values() {
        let (trace, parent) = ([0xab; 16], [0xcd; 8]);
        let rid = HeaderName::from_static("x-request-id");
        let mut a = Added::new();
        a.add(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        a.add_traceparent(w3c::traceparent_text(&trace, &parent, 1));
        a.add_id(rid.clone(), &IdValue::Made(*MADE));
        let mut out = Vec::new();
        a.put(&mut out);
        let value = w3c::format_traceparent(&trace, &parent, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "x-forwarded-proto: http\r\ntraceparent: {}\r\nx-request-id: {}\r\n",
                value.to_str().unwrap(),
                std::str::from_utf8(MADE).unwrap()
            )
        );
        let mut h = HeaderMap::new();
        a.merge_into(&mut h);
        assert!(a.is_empty());
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["traceparent"], value);
        assert_eq!(
            h["traceparent"],
            "00-abababababababababababababababab-cdcdcdcdcdcdcdcd-01"
        );
        assert!(
            h["traceparent"].is_sensitive(),
            "never indexed, as the ids we make"
        );
        assert_eq!(h["x-request-id"].as_bytes(), MADE);
        assert!(h["x-request-id"].is_sensitive());
        // A reused id goes as the caller's value.
        let mut a = Added::new();
        a.add_id(rid, &IdValue::Reused(HeaderValue::from_static("req-1")));
        let mut out = Vec::new();
        a.put(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "x-request-id: req-1\r\n");
    }

    /// A correlation id as tracegate makes them (a UUID v4).
    const MADE: &[u8; 36] = b"0f8fad5b-d9cb-469f-a165-70867728950e";

    #[test]
    fn the_trace_id_for_the_client_is_never_indexed() {
        let mut h = HeaderMap::new();
        let name = HeaderName::from_static("x-trace-id");
        prepare_response(&mut h, Some(&name), Some(&[0xab; 16]), None);
        assert_eq!(h["x-trace-id"], "abababababababababababababababab");
        assert!(h["x-trace-id"].is_sensitive());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        use crate::config::IpNet;
        let trusted = [
            IpNet::parse("10.0.0.0/8").unwrap(),
            IpNet::parse("::1").unwrap(),
        ];
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.7"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.1.1.1"));
        let lb: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        // Rightmost untrusted hop: the proxies' own entries are skipped.
        assert_eq!(
            forwarded_client(&h, lb, &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
        // An untrusted peer's header is not believed; nor anything without a list.
        assert_eq!(
            forwarded_client(&h, "192.0.2.9".parse().unwrap(), &trusted),
            None
        );
        assert_eq!(forwarded_client(&h, lb, &[]), None);
        // Garbage is not an address.
        let mut bad = HeaderMap::new();
        bad.append("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(forwarded_client(&bad, lb, &trusted), None);
        // IPv4-mapped IPv6 peers match IPv4 ranges.
        assert_eq!(
            forwarded_client(&h, "::ffff:10.0.0.2".parse().unwrap(), &trusted),
            Some("203.0.113.7".parse().unwrap())
        );
    }

    #[test]
    fn ip_ranges() {
        use crate::config::IpNet;
        let n = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            IpNet::parse("2001:db8::/32")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("10.0.0/8").is_none());
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff; 16]).len(), 24);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("trailer", HeaderValue::from_static("x-t"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-end-to-end"], "kept");
    }

    #[test]
    fn te_trailers_is_the_only_hop_by_hop_value_kept() {
        // Exercised through prepare_request in tests/grpc.rs; here the rule itself.
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip, trailers"));
        remove_hop_by_hop(&mut h);
        assert!(
            h.get("te").is_none(),
            "removed with the other hop-by-hop headers first"
        );
    }

    #[test]
    fn list_headers_are_appended_to() {
        // No earlier hop: the new value alone. Earlier hops: one line, in order.
        let mut h = HeaderMap::new();
        append_list(
            &mut h,
            &X_FORWARDED_FOR,
            HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h["x-forwarded-for"], "3.3.3.3");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("2.2.2.2"));
        append_list(
            &mut h,
            &X_FORWARDED_FOR,
            HeaderValue::from_static("3.3.3.3"),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 3.3.3.3");
    }
}
