//! The access log: one line per request (JSON or text) on stdout, stderr or a file.
//!
//! The request path only moves a small record into a bounded queue (`try_send`: a full
//! queue drops the line and counts it); a dedicated thread formats and writes, so a slow
//! stdout or disk never slows a request.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::context::correlation::IdValue;
use http::Method;

use crate::config::{AccessLogFormat, AccessLogSettings, AccessLogTarget};
use crate::context::w3c::trace_id_hex;

/// One request, as logged.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    /// `None` for excluded (untraced) requests.
    pub trace_id: Option<[u8; 16]>,
    pub span_id: Option<[u8; 8]>,
    pub request_id: Option<IdValue>,
    pub route: Option<Arc<str>>,
    pub method: Method,
    pub path: String,
    /// Already redacted.
    pub query: Option<String>,
    pub status: u16,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream: Option<Arc<str>>,
    pub error_type: Option<&'static str>,
    pub sampled: bool,
}

enum Msg {
    Line(Box<Entry>),
    Flush(std::sync::mpsc::Sender<()>),
}

#[derive(Debug, Default)]
pub struct AccessLogStats {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
}

/// The request path's handle (cheap to clone).
#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Msg>>,
    pub stats: Arc<AccessLogStats>,
}

impl AccessLog {
    pub fn off() -> Self {
        AccessLog {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Opens the target and starts the writer thread.
    pub fn start(s: &AccessLogSettings) -> Result<Self, String> {
        let AccessLogSettings::On {
            format,
            target,
            buffer,
        } = s
        else {
            return Ok(AccessLog::off());
        };
        let out: Box<dyn Write + Send> = match target {
            AccessLogTarget::Stdout => Box::new(std::io::stdout()),
            AccessLogTarget::Stderr => Box::new(std::io::stderr()),
            AccessLogTarget::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("cannot open the access log {}: {e}", path.display()))?,
            ),
        };
        let (tx, rx) = sync_channel(*buffer);
        let stats = Arc::new(AccessLogStats::default());
        let (format, writer_stats) = (*format, stats.clone());
        std::thread::Builder::new()
            .name("tracegate-access-log".into())
            .spawn(move || write_loop(rx, std::io::BufWriter::new(out), format, &writer_stats))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(AccessLog {
            tx: Some(tx),
            stats,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a line; never waits.
    pub fn log(&self, entry: Entry) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(Msg::Line(Box::new(entry))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Waits (at most `deadline`) until every line queued so far is written and flushed.
    pub async fn flush(&self, deadline: Duration) -> bool {
        let Some(tx) = self.tx.clone() else {
            return true;
        };
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        let waited = tokio::task::spawn_blocking(move || {
            tx.send(Msg::Flush(ack_tx)).is_ok() && ack_rx.recv_timeout(deadline).is_ok()
        });
        tokio::time::timeout(deadline, waited)
            .await
            .is_ok_and(|r| r.unwrap_or(false))
    }
}

fn write_loop(
    rx: Receiver<Msg>,
    mut out: impl Write,
    format: AccessLogFormat,
    stats: &AccessLogStats,
) {
    let mut line = String::with_capacity(512);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Write everything queued, then flush once.
        while let Some(msg) = next.take() {
            match msg {
                Msg::Line(e) => {
                    line.clear();
                    match format {
                        AccessLogFormat::Json => json_line(&e, &mut line),
                        AccessLogFormat::Text => text_line(&e, &mut line),
                    }
                    line.push('\n');
                    if out.write_all(line.as_bytes()).is_ok() {
                        stats.written.fetch_add(1, Relaxed);
                    } else {
                        stats.dropped.fetch_add(1, Relaxed);
                    }
                }
                Msg::Flush(ack) => {
                    let _ = out.flush();
                    let _ = ack.send(());
                }
            }
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-23T02:30:06.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Lowercase hex of an id.
pub fn hex<const N: usize>(bytes: &[u8; N]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn json_line(e: &Entry, out: &mut String) {
    let path = match &e.query {
        Some(q) => format!("{}?{q}", e.path),
        None => e.path.clone(),
    };
    let v = serde_json::json!({
        "time": rfc3339(e.time),
        "trace_id": e.trace_id.map(|t| String::from_utf8_lossy(&trace_id_hex(&t)).into_owned()),
        "span_id": e.span_id.as_ref().map(hex),
        "request_id": e.request_id.as_ref().map(IdValue::as_str),
        "route": e.route.as_deref(),
        "method": e.method.as_str(),
        "path": path,
        "status": e.status,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "upstream": e.upstream.as_deref(),
        "error_type": e.error_type,
        "sampled": e.sampled,
    });
    out.push_str(&v.to_string());
}

fn text_line(e: &Entry, out: &mut String) {
    use std::fmt::Write as _;
    let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
    let _ = write!(
        out,
        "{} \"{} {}{}{}\" {} {:.3}ms in={} out={} route={} upstream={} request_id={} trace_id={} error={} sampled={}",
        rfc3339(e.time),
        e.method,
        e.path,
        if e.query.is_some() { "?" } else { "" },
        e.query.as_deref().unwrap_or(""),
        e.status,
        e.duration.as_secs_f64() * 1000.0,
        e.bytes_in,
        e.bytes_out,
        dash(e.route.as_deref()),
        dash(e.upstream.as_deref()),
        dash(e.request_id.as_ref().map(IdValue::as_str)),
        e.trace_id.map_or_else(
            || "-".to_string(),
            |t| String::from_utf8_lossy(&trace_id_hex(&t)).into_owned()
        ),
        dash(e.error_type),
        e.sampled,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_401_006_123);
        assert_eq!(rfc3339(t), "2026-11-23T02:30:06.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    fn entry() -> Entry {
        Entry {
            time: UNIX_EPOCH,
            trace_id: Some([0xab; 16]),
            span_id: Some([0xcd; 8]),
            request_id: Some(IdValue::Reused(http::HeaderValue::from_static("rid-1"))),
            route: Some(Arc::from("/api/*")),
            method: Method::POST,
            path: "/api/x".into(),
            query: Some("sig=REDACTED".into()),
            status: 502,
            duration: Duration::from_micros(1500),
            bytes_in: 10,
            bytes_out: 20,
            upstream: Some(Arc::from("http://127.0.0.1:1")),
            error_type: Some("connection_refused"),
            sampled: true,
        }
    }

    #[test]
    fn json_line_has_every_field() {
        let mut s = String::new();
        json_line(&entry(), &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], "cd".repeat(8));
        assert_eq!(v["path"], "/api/x?sig=REDACTED");
        assert_eq!(v["status"], 502);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["error_type"], "connection_refused");
        assert_eq!(v["request_id"], "rid-1");
    }

    #[test]
    fn text_line_is_one_line() {
        let mut s = String::new();
        text_line(&entry(), &mut s);
        assert!(
            s.contains("\"POST /api/x?sig=REDACTED\" 502 1.500ms"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A writer that never drains: a queue of 1 takes one line, the rest are dropped.
        let (tx, _rx) = sync_channel(1);
        let log = AccessLog {
            tx: Some(tx),
            stats: Arc::default(),
        };
        for _ in 0..5 {
            log.log(entry());
        }
        assert_eq!(log.stats.dropped.load(Relaxed), 4);
    }
}
