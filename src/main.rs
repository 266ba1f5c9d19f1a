//! The `tracegate` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracegate::config::{self, Settings};
use tracegate::gateway::Gateway;
use tracegate::workers::Workers;
use tracegate::{demo, log};

/// A reverse proxy that traces every HTTP request with OpenTelemetry.
///
/// Put it in front of a service; every request gets a SERVER and a CLIENT span exported over
/// OTLP, the caller's W3C trace context is continued, and the trace id is returned in
/// X-Trace-Id.
#[derive(Parser)]
#[command(name = "tracegate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file; alone it means `run --config FILE`.
    #[arg(long, global = false)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: with --config FILE, or zero-config with --listen and --upstream.
    Run {
        /// YAML config file (see config/tracegate.yaml for every key).
        #[arg(long, conflicts_with_all = ["listen", "upstream"])]
        config: Option<PathBuf>,
        /// Zero-config: address to accept traffic on, e.g. 127.0.0.1:8080.
        #[arg(long, requires = "upstream")]
        listen: Option<String>,
        /// Zero-config: the one upstream, e.g. http://127.0.0.1:3000.
        #[arg(long, requires = "listen")]
        upstream: Option<String>,
        /// Admin address (health, readiness, metrics), or `off`. Default 127.0.0.1:9901.
        #[arg(long)]
        admin: Option<String>,
        /// Worker threads, each serving the connections it is handed from start to end
        /// with upstream connections of its own. Default: one per core.
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file: print every problem with file:line and key, then the
    /// effective config (YAML merged with OTEL_* variables). Exits 1 on any problem.
    Check {
        /// The YAML file to check.
        file: PathBuf,
    },
    /// Run only the built-in echo upstream: it answers every request with JSON describing
    /// what it received (method, path, headers). A stand-in service for trying tracegate.
    Echo {
        /// Where the echo listens.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: String,
        /// Worker threads. Default: one per core.
        #[arg(long)]
        workers: Option<usize>,
        /// Answer every request with the same small JSON body instead, whatever arrived:
        /// a load-test upstream whose work does not grow with the headers a proxy adds.
        #[arg(long)]
        fixed: bool,
    },
    /// Probe a URL (default: the admin port's /healthz): exit 0 on a 2xx answer within 2s,
    /// else 1. For container HEALTHCHECKs in images without curl.
    Health {
        #[arg(default_value = "http://127.0.0.1:9901/healthz")]
        url: String,
    },
    /// Run the embedded default: a built-in echo upstream with tracegate in front of it.
    /// Needs no collector; exports over OTLP too when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    Demo {
        /// Where tracegate listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: String,
    },
}

/// One worker: a current-thread runtime (no cross-thread wake-ups or work stealing to pay
/// for); more: the multi-thread runtime (`tracegate echo`; `serve` starts its other
/// workers on worker 0's current-thread runtime, `Workers::start`).
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().thread_name("tracegate").build()
}

/// `tracegate health`: one GET, answered 2xx within 2 s.
fn health(url: &str) -> Result<(), String> {
    use http_body_util::Empty;
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    let rt = runtime(Some(1)).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(2), client.get(uri))
            .await
            .map_err(|_| "no answer within 2s".to_string())?
            .map_err(|e| e.to_string())?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status()))
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = config::process_env();
    match cli.command {
        Some(Command::Check { file }) => match config::load_file(&file, &env) {
            Ok(s) => {
                // Written without println!, which panics when stdout is a closed pipe
                // (`tracegate check f | head -1`).
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{}: ok\n{}",
                    file.display(),
                    serde_json::to_string_pretty(&s.describe()).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("{}: {} problem(s)", file.display(), errors.0.len());
                ExitCode::FAILURE
            }
        },
        Some(Command::Health { url }) => match health(&url) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{url}: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Echo {
            listen,
            workers,
            fixed,
        }) => {
            let rt = match runtime(workers) {
                Ok(rt) => rt,
                Err(e) => {
                    log::error(&format!("cannot start the runtime: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async {
                match tokio::net::TcpListener::bind(&listen).await {
                    Ok(l) => {
                        log::info(&format!("echo upstream serving on {listen}"));
                        tokio::select! {
                            () = demo::serve_echo(l, fixed) => ExitCode::SUCCESS,
                            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
                        }
                    }
                    Err(e) => {
                        log::error(&format!("cannot bind the echo upstream on {listen}: {e}"));
                        ExitCode::FAILURE
                    }
                }
            })
        }
        Some(Command::Demo { listen, admin }) => serve(None, None, move |rt| {
            rt.block_on(async {
                let echo = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("cannot bind the echo upstream: {e}"))?;
                let echo_addr = echo.local_addr().map_err(|e| e.to_string())?;
                tokio::spawn(demo::serve_echo(echo, false));
                demo::settings(&listen, &admin, echo_addr, &env).map_err(|e| e.to_string())
            })
        }),
        Some(Command::Run {
            config,
            listen,
            upstream,
            admin,
            workers,
        }) => {
            let path = config.or(cli.config);
            let watch = path.clone().map(|p| (p, env.clone()));
            let settings = match (path, listen, upstream) {
                (Some(path), _, _) => config::load_file(&path, &env).map(|mut s| {
                    if let Some(a) = admin.as_deref() {
                        s.admin = if a == "off" {
                            None
                        } else {
                            a.parse().ok().or(s.admin)
                        };
                    }
                    s
                }),
                (None, Some(l), Some(u)) => config::sidecar(&l, &u, admin.as_deref(), &env),
                _ => {
                    eprintln!("tracegate run: give --config FILE, or --listen ADDR --upstream URL");
                    return ExitCode::from(2);
                }
            };
            serve(workers, watch, move |_| settings.map_err(|e| e.to_string()))
        }
        None => match cli.config {
            Some(path) => {
                let settings = config::load_file(&path, &env);
                serve(None, Some((path, env)), move |_| {
                    settings.map_err(|e| e.to_string())
                })
            }
            None => {
                eprintln!(
                    "tracegate: give a command (run, check, demo) or --config FILE; see --help"
                );
                ExitCode::from(2)
            }
        },
    }
}

/// Runs tracegate until SIGTERM/SIGINT has drained it. A second signal exits at once.
fn serve(
    workers: Option<usize>,
    watch: Option<(PathBuf, config::Env)>,
    settings: impl FnOnce(&tokio::runtime::Runtime) -> Result<Settings, String>,
) -> ExitCode {
    // Worker 0's runtime; the others are started on it (`Workers::start`).
    let rt = match runtime(Some(1)) {
        Ok(rt) => rt,
        Err(e) => {
            log::error(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok().map(Into::into))
        .unwrap_or(1)
        .max(1);
    let settings = match settings(&rt) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = settings.source == "demo";
    rt.block_on(async move {
        // Signals are caught from before the first connection: a SIGTERM (or SIGHUP) that
        // arrives while starting must not take its default action and kill the process.
        use tokio::signal::unix::{SignalKind, signal};
        let (mut sigterm, mut sigint, sighup) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(t), Ok(i), Ok(h)) => (t, i, h),
            _ => {
                log::error("cannot install the signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let workers = if workers == 1 {
            Workers::here()
        } else {
            match Workers::start(workers) {
                Ok(w) => w,
                Err(e) => {
                    log::error(&format!("cannot start {workers} workers: {e}"));
                    return ExitCode::FAILURE;
                }
            }
        };
        let gateway = match Gateway::start_on(settings, workers).await {
            Ok(g) => g,
            Err(e) => {
                log::error(&e);
                return ExitCode::FAILURE;
            }
        };
        if demo {
            print_demo_help(&gateway);
        }
        if let Some((path, env)) = watch {
            gateway.watch_config(path, env, sighup);
        }
        tokio::select! {
            _ = sigterm.recv() => {},
            _ = sigint.recv() => {},
        }
        gateway.shutdown();
        tokio::select! {
            () = gateway.wait() => ExitCode::SUCCESS,
            _ = sigterm.recv() => {
                log::warn("second signal: exiting now");
                ExitCode::FAILURE
            }
            _ = sigint.recv() => {
                log::warn("second signal: exiting now");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_demo_help(g: &Gateway) {
    let proxy = g
        .proxy_addrs
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let admin = g
        .admin_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout().lock(),
        "\ntracegate demo is running.\n\n  proxy (echo upstream behind it):  curl -i http://{proxy}/api/hello\n  continue a trace:                 curl -i -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://{proxy}/api/hello\n  trace viewer (open in a browser):  http://{admin}/traces\n  health / metrics / config:        curl http://{admin}/healthz   http://{admin}/metrics   http://{admin}/config\n\nThe echo shows the headers the upstream received (traceparent, x-request-id, x-forwarded-*).\nSet OTEL_EXPORTER_OTLP_ENDPOINT to export the spans to a collector too. Ctrl-C to stop.\n"
    );
}
