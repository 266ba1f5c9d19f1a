//! Operational log lines (not the access log): one JSON object per line on stderr.

use std::io::Write;

fn line(level: &str, msg: &str) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let obj = serde_json::json!({ "ts": ts, "level": level, "msg": msg });
    let _ = writeln!(std::io::stderr().lock(), "{obj}");
}

pub fn info(msg: &str) {
    line("info", msg);
}

pub fn warn(msg: &str) {
    line("warn", msg);
}

pub fn error(msg: &str) {
    line("error", msg);
}
