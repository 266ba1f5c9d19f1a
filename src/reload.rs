//! Hot reload: SIGHUP, or a change of the config file, parses and validates the file and
//! swaps the running config atomically. In-flight requests keep the version they started
//! with; the next request uses the new one; connections are untouched. An invalid file is
//! reported with the same file:line errors as `tracegate check`, and the old config keeps
//! serving.
//!
//! Reloaded: routes, upstreams, sampling, propagation, header and attribute policy; the
//! exporter (endpoint, protocol, headers, batching, resource), whose predecessor exports
//! what was queued to it; and the proxy listeners: added addresses are bound before
//! anything changes (a bind failure rejects the reload), removed ones stop accepting and
//! drain their connections. Admin and access-log changes need a restart; a reload that
//! changes them says so.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{self, Env, Settings};
use crate::export::Exporters;
use crate::gateway::stopped;
use crate::listen::Listeners;
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
    pub exporters: Arc<Exporters>,
    pub listeners: Arc<Listeners>,
    /// The effective config `/config` shows.
    pub config_json: Arc<ArcSwap<String>>,
    pub stats: Arc<ReloadStats>,
    /// The settings running now (to tell what a reload could not change).
    pub current: Settings,
}

impl Reloader {
    /// Loads the file once; swaps it in when valid. Returns whether it applied.
    pub async fn reload(&mut self, why: &str) -> bool {
        match self.apply(why).await {
            Ok(()) => {
                self.stats.ok.fetch_add(1, Relaxed);
                true
            }
            Err(errors) => {
                // Logged before it is counted: whoever sees the count finds the reason.
                log::error(&format!(
                    "config reload ({why}) rejected, the previous config keeps serving:\n{errors}"
                ));
                self.stats.failed.fetch_add(1, Relaxed);
                false
            }
        }
    }

    /// Everything that can fail happens before the first change: parsing, validation,
    /// building the exporter, binding new listeners.
    async fn apply(&mut self, why: &str) -> Result<(), String> {
        let next = config::load_file(&self.path, &self.env).map_err(|e| e.to_string())?;
        let bound = if next.listeners != self.current.listeners {
            Some(self.listeners.prepare(&next.listeners).await?)
        } else {
            None
        };
        // Built against the current exporter first, so a failure leaves nothing started.
        let mut runtime = Runtime::build(
            &next,
            self.shared.runtime.load().export.clone(),
            &self.shared.upstream_conns,
            self.shared.workers.count(),
        )?;
        if export_changed(&self.current, &next) {
            runtime.export = self.exporters.replace(&next.export, &next.tracing).await?;
        }
        self.shared.runtime.store(Arc::new(runtime));
        let moved = match bound {
            Some(b) => Some(self.listeners.apply(&next.listeners, b).await),
            None => None,
        };
        self.config_json.store(Arc::new(
            serde_json::to_string_pretty(&next.describe()).unwrap_or_default(),
        ));
        let needs_restart = restart_only_changes(&self.current, &next);
        let export_changed = export_changed(&self.current, &next);
        self.current = next;
        log::info(&format!(
            "config reloaded from {} ({why})",
            self.path.display()
        ));
        if let Some((added, removed)) = moved {
            let list = |v: &[std::net::SocketAddr]| {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            log::info(&format!(
                "listeners: now serving on [{}]; added [{}]; draining [{}]",
                list(&self.listeners.addrs().await),
                list(&added),
                list(&removed)
            ));
        }
        if export_changed {
            log::info(
                "exporter restarted with the new settings; the previous one exports what it had queued",
            );
        }
        if !needs_restart.is_empty() {
            log::warn(&format!(
                "changes to {} take effect after a restart",
                needs_restart.join(", ")
            ));
        }
        Ok(())
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
                    self.reload("SIGHUP").await;
                    self.listeners.refresh_certificates().await;
                }
                () = tokio::time::sleep(POLL) => {
                    self.listeners.refresh_certificates().await;
                    let now = stamp(&self.path);
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload("file changed").await;
                    }
                }
                () = stopped(&mut stop) => return,
            }
        }
    }
}

/// Whether the exporter must be rebuilt: its settings or the resource it reports changed.
fn export_changed(old: &Settings, new: &Settings) -> bool {
    old.export != new.export
        || old.tracing.service_name != new.tracing.service_name
        || old.tracing.service_version != new.tracing.service_version
        || old.tracing.resource_attributes != new.tracing.resource_attributes
}

/// The parts of a config a reload cannot apply.
fn restart_only_changes(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.access_log != new.access_log {
        out.push("access_log");
    }
    out
}
