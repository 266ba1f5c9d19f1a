//! The real exporter as the exporter benchmarks drive it: tracegate's `Exporters` (its own
//! thread and runtime, its OTLP encoder and client) started from an `export:` section.

use tracegate::config::{Env, load};
use tracegate::export::{ExportHandle, Exporters, Pace};

pub struct Started {
    /// The runtime `flush` and `handle` run on; the exporter has its own thread.
    pub rt: tokio::runtime::Runtime,
    pub exporters: Exporters,
    pub handle: ExportHandle,
}

/// Starts the exporter with `export` (the YAML lines under `export:`, indented two spaces)
/// in an otherwise minimal config.
pub fn start(export: &str) -> Started {
    let yaml = format!(
        "upstreams:\n  - name: app\n    endpoints: [\"http://127.0.0.1:9\"]\nroutes:\n  - upstream: app\nexport:\n{export}"
    );
    let settings = load(&yaml, "bench.yaml", &Env::default()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let exporters = rt.block_on(async {
        Exporters::start(&settings.export, &settings.tracing, Pace::default()).unwrap()
    });
    let handle = rt.block_on(exporters.handle());
    Started {
        rt,
        exporters,
        handle,
    }
}
