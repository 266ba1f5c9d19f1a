//! Hot reload: SIGHUP, or a change of the config file, parses and validates the file and
//! swaps the running config atomically. In-flight requests keep the version they started
//! with; the next request uses the new one; connections are untouched. An invalid file is
//! reported with the same file:line errors as `tracegate check`, and the old config keeps
//! serving.
//!
//! Reloaded: routes, upstreams, sampling, propagation, header and attribute policy.
//! Listener, admin and exporter changes need a restart; a reload that changes them says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, Env, Settings};
use crate::gateway::stopped;
use crate::log;
use crate::proxy::{Runtime, Shared};

/// How often the file's metadata is compared.
pub const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct ReloadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

/// What identifies a version of the file: modification time, size and inode (a ConfigMap
/// update swaps a symlink, which changes the inode even when the time does not).
fn stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

pub struct Reloader {
    pub path: PathBuf,
    pub env: Env,
    pub shared: Arc<Shared>,
    /// The effective config `/config` shows.
    pub config_json: Arc<ArcSwap<String>>,
    pub stats: Arc<ReloadStats>,
    /// The settings running now (to tell what a reload could not change).
    pub current: Settings,
}

impl Reloader {
    /// Loads the file once; swaps it in when valid. Returns whether it applied.
    pub fn reload(&mut self, why: &str) -> bool {
        match config::load_file(&self.path, &self.env) {
            Ok(next) => {
                let needs_restart = restart_only_changes(&self.current, &next);
                self.shared.runtime.store(Arc::new(Runtime::build(&next)));
                self.config_json.store(Arc::new(
                    serde_json::to_string_pretty(&next.describe()).unwrap_or_default(),
                ));
                self.current = next;
                self.stats.ok.fetch_add(1, Relaxed);
                log::info(&format!(
                    "config reloaded from {} ({why})",
                    self.path.display()
                ));
                if !needs_restart.is_empty() {
                    log::warn(&format!(
                        "changes to {} take effect after a restart",
                        needs_restart.join(", ")
                    ));
                }
                true
            }
            Err(errors) => {
                self.stats.failed.fetch_add(1, Relaxed);
                log::error(&format!(
                    "config reload ({why}) rejected, the previous config keeps serving:\n{errors}"
                ));
                false
            }
        }
    }

    /// Reloads on SIGHUP and when the file changes, until `stop`.
    /// `hup`: the SIGHUP stream, registered by the caller before serving.
    pub async fn run(
        mut self,
        mut hup: Option<tokio::signal::unix::Signal>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut seen = stamp(&self.path);
        loop {
            tokio::select! {
                _ = async {
                    match &mut hup {
                        Some(h) => { h.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    seen = stamp(&self.path);
                    self.reload("SIGHUP");
                }
                () = tokio::time::sleep(POLL) => {
                    let now = stamp(&self.path);
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload("file changed");
                    }
                }
                () = stopped(&mut stop) => return,
            }
        }
    }
}

/// The parts of a config a reload cannot apply.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listeners != new.listeners {
        out.push("listeners");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.describe()["export"] != new.describe()["export"]
        || old.tracing.service_name != new.tracing.service_name
    {
        out.push("export and resource");
    }
    if old.access_log != new.access_log {
        out.push("access_log");
    }
    out
}
