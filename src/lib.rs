//! tracegate: a reverse proxy that traces every HTTP request with OpenTelemetry.
//!
//! ```text
//!  client ──► listen ──► proxy::handle ─────────────────────────────────────────► upstream
//!             (TCP, TLS, │ 2 route    (host, path, method, headers → route)
//!              h1/h2,    │ 3 context  (traceparent/tracestate, correlation id)
//!              limits)   │ 4 sample   (parent-based, trace-id ratio)
//!                        │ 5 forward  (hop-by-hop, X-Forwarded-*, one traceparent, upgrades;
//!                        │            tunnel: an upgrade's bytes both ways)
//!                        │   upstream (balance: endpoint pick, health; pool, TLS, timeouts)
//!                        │ 6 span     (SERVER + CLIENT, ended with the response body)
//!                        └─► 7 export (bounded queue → export thread → OTLP protobuf
//!                                      encoded from the exchange → gRPC / HTTP)
//! ```
//!
//! Around the path: `config` (YAML + `OTEL_*`), `admin` (health, readiness, metrics),
//! `reload` (SIGHUP and file watch), `gateway` (start and graceful shutdown), `demo` (the
//! embedded default).

pub mod config;

pub mod balance;
pub mod body;
pub mod capture;
pub mod context;
pub mod error;
pub mod export;
pub mod forward;
pub mod http1;
pub mod limits;
pub mod listen;
pub mod proxy;
pub mod route;
pub mod sample;
pub mod span;
pub mod timer;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub mod access_log;
pub mod admin;
pub mod demo;
pub mod gateway;
pub mod log;
pub mod metrics;
pub mod reload;
pub mod viewer;
pub mod workers;
