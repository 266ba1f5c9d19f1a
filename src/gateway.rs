//! A running tracegate: bound listeners, the exporter, the admin port, and the shutdown
//! sequence (readiness off → drain delay → stop accepting → in-flight requests finish →
//! spans flushed), all within the grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::access_log::AccessLog;
use crate::admin::{self, AdminState};
use crate::config::{Env, Settings};
use crate::export::{ExportStats, Exporters, Pace};
use crate::listen::{self, Listeners};
use crate::log;
use crate::metrics::{self, Metrics, Sources};
use crate::proxy::{Runtime, Shared};
use crate::reload::{ReloadStats, Reloader};
use crate::sample::SamplingStats;
use crate::upstream::ConnStats;
use crate::viewer::Viewer;
use crate::workers::Workers;

pub struct Gateway {
    /// Bound proxy addresses, in config order (port 0 resolved).
    pub proxy_addrs: Vec<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub export_stats: Arc<ExportStats>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    shared: Arc<Shared>,
    exporters: Arc<Exporters>,
    listeners: Arc<Listeners>,
    config_json: Arc<ArcSwap<String>>,
    reloads: Arc<ReloadStats>,
    settings: Settings,
}

impl Gateway {
    /// Binds every listener, starts the exporter and the admin port, and serves every
    /// connection on the runtime it is called on.
    pub async fn start(settings: Settings) -> Result<Gateway, String> {
        Gateway::start_on(settings, Workers::here()).await
    }

    /// As [`Gateway::start`], connections served by `workers`.
    pub async fn start_on(settings: Settings, workers: Workers) -> Result<Gateway, String> {
        let workers = Arc::new(workers);
        let bound = Listeners::bind(&settings.listeners).await?;
        let admin_listener = match settings.admin {
            Some(a) => Some(listen::bind(a, "admin").await?),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());

        let downstream = Arc::new(crate::limits::DownstreamStats::default());
        let exporters = Arc::new(Exporters::start(
            &settings.export,
            &settings.tracing,
            Pace::new(downstream.clone(), workers.count()),
        )?);
        let sampling = Arc::new(SamplingStats::default());
        let config_json = Arc::new(ArcSwap::from_pointee(
            serde_json::to_string_pretty(&settings.describe()).unwrap_or_default(),
        ));
        let reloads = Arc::new(ReloadStats::default());
        let access_log = AccessLog::start(&settings.access_log)?;
        // Request metrics are recorded only where they can be read: with an admin port.
        let request_metrics = Arc::new(Metrics::default());
        let viewer = (settings.admin.is_some() && settings.viewer_capacity > 0)
            .then(|| Viewer::start(settings.viewer_capacity));
        let upstream_conns = Arc::new(ConnStats::default());
        let runtime = Runtime::build(
            &settings,
            exporters.handle().await,
            &upstream_conns,
            workers.count(),
        )?;
        let shared = Arc::new(Shared {
            runtime: ArcSwap::from_pointee(runtime),
            access_log: access_log.clone(),
            sampling: sampling.clone(),
            metrics: settings.admin.is_some().then(|| request_metrics.clone()),
            viewer: viewer.clone(),
            draining: Arc::default(),
            downstream: downstream.clone(),
            upstream_conns: upstream_conns.clone(),
            workers: workers.clone(),
        });
        let admin_state = Arc::new(AdminState {
            ready: AtomicBool::new(false),
            exposition: metrics::exposition(Arc::new(Sources {
                metrics: request_metrics,
                export: exporters.stats(),
                sampling,
                access_log: access_log.stats.clone(),
                reloads: reloads.clone(),
                downstream,
                upstream_conns,
                workers,
            })),
            config_json: config_json.clone(),
            viewer,
            trace_link: settings.trace_link.clone(),
        });

        let listeners = Arc::new(Listeners::serve(bound, shared.clone()));
        let proxy_addrs = listeners.addrs().await;
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        if let Some(l) = admin_listener {
            tokio::spawn(admin::serve(l, admin_state.clone(), admin_stop_rx));
        }
        admin_state.ready.store(true, Relaxed);
        log::info(&format!(
            "tracegate {} serving on {} (admin {})",
            env!("CARGO_PKG_VERSION"),
            proxy_addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            admin_addr.map_or("off".to_string(), |a| a.to_string()),
        ));

        let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
        let draining = shared.draining.clone();
        let shared_for_reload = shared.clone();
        let export_stats = exporters.stats();
        let (exporters_, listeners_) = (exporters.clone(), listeners.clone());
        let drain_delay = settings.shutdown.drain_delay;
        let grace = settings.shutdown.grace_period;
        let task = tokio::spawn(async move {
            stopped(&mut shutdown_rx).await;
            admin_state.ready.store(false, Relaxed);
            draining.store(true, Relaxed);
            log::info(&format!(
                "shutting down: draining for {drain_delay:?}, grace period {grace:?}"
            ));
            tokio::time::sleep(drain_delay).await;
            let deadline = tokio::time::Instant::now() + grace;
            for task in listeners_.stop().await {
                if tokio::time::timeout_at(deadline, task).await.is_err() {
                    log::warn("grace period over with requests still in flight");
                    break;
                }
            }
            // Every finished exchange is queued by now: flush what is left.
            drop(shared);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !exporters_.flush(left).await {
                // Whatever is still queued or being sent is lost: count it.
                let stats = exporters_.stats();
                let lost = stats
                    .produced
                    .load(Relaxed)
                    .saturating_sub(stats.exported.load(Relaxed) + stats.dropped());
                stats.dropped_shutdown.fetch_add(lost, Relaxed);
                log::warn(&format!(
                    "grace period over before the last spans were exported: {lost} spans dropped"
                ));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !access_log
                .flush(left.max(std::time::Duration::from_millis(100)))
                .await
            {
                log::warn("access log not flushed within the grace period");
            }
            let _ = admin_stop_tx.send(true);
            let stats = exporters_.stats();
            log::info(&format!(
                "shutdown complete: spans produced {}, exported {}, dropped {}",
                stats.produced.load(Relaxed),
                stats.exported.load(Relaxed),
                stats.dropped()
            ));
        });
        Ok(Gateway {
            proxy_addrs,
            admin_addr,
            export_stats,
            shutdown: shutdown_tx,
            task,
            shared: shared_for_reload,
            exporters,
            listeners,
            config_json,
            reloads,
            settings,
        })
    }

    /// Reloads `path` on SIGHUP and when it changes, until shutdown.
    pub fn watch_config(
        &self,
        path: std::path::PathBuf,
        env: Env,
        sighup: tokio::signal::unix::Signal,
    ) {
        let reloader = Reloader {
            path,
            env,
            shared: self.shared.clone(),
            exporters: self.exporters.clone(),
            listeners: self.listeners.clone(),
            config_json: self.config_json.clone(),
            stats: self.reloads.clone(),
            current: self.settings.clone(),
        };
        tokio::spawn(reloader.run(Some(sighup), self.shutdown.subscribe()));
    }

    /// The proxy addresses served now (a reload may have changed them).
    pub async fn listening(&self) -> Vec<SocketAddr> {
        self.listeners.addrs().await
    }

    /// Starts the graceful shutdown (what SIGTERM does). Returns at once.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the shutdown sequence has completed.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Resolves once the flag turns true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
