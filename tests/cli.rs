//! The `tracegate` binary: `check` on bad configs, the shipped example configs, and SIGTERM
//! in the zero-config sidecar mode (in-flight request completes, spans flushed, exit 0).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_tracegate");

fn check(yaml: &str) -> (bool, String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tracegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("c{}.yaml", yaml.len()));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(BIN).arg("check").arg(&path).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text, path)
}

const UP: &str = "upstreams:\n  - name: app\n    endpoints: [http://127.0.0.1:3000]\n";

#[test]
fn check_reports_unknown_key_with_file_and_line() {
    let (ok, text, path) = check(&format!(
        "{UP}routes:\n  - upstream: app\n    match:\n      path_prefx: /api\n"
    ));
    assert!(!ok);
    assert!(text.contains(&format!("{}:7:", path.display())), "{text}");
    assert!(text.contains("path_prefx"), "{text}");
}

#[test]
fn check_reports_wrong_type_with_file_and_line() {
    let (ok, text, path) = check(&format!("{UP}export:\n  queue_limit: [1, 2]\n"));
    assert!(!ok);
    assert!(text.contains(&format!("{}:5:", path.display())), "{text}");
    assert!(text.contains("queue_limit"), "{text}");
}

#[test]
fn check_reports_every_semantic_problem_at_once() {
    let (ok, text, path) = check(&format!(
        "{UP}routes:\n  - upstream: missing\n  - match: {{ path_regex: '[a-' }}\n    upstream: app\n"
    ));
    assert!(!ok);
    let p = path.display();
    assert!(
        text.contains(&format!("{p}:5:"))
            && text.contains("routes[0].upstream")
            && text.contains("unknown upstream"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{p}:6:")) && text.contains("routes[1].match.path_regex"),
        "{text}"
    );
    assert!(text.contains("2 problem(s)"), "{text}");
}

#[test]
fn check_prints_the_effective_config() {
    let (ok, text, _) = check(&format!("{UP}routes:\n  - upstream: app\n"));
    assert!(ok, "{text}");
    assert!(text.contains("\"service_name\": \"tracegate\""), "{text}");
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(yaml_files(&p));
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
    out
}

#[test]
fn shipped_configs_all_pass_check() {
    let files = yaml_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"));
    assert!(files.len() >= 3, "{files:?}");
    for f in files {
        // multi-upstream.yaml reads its collector token from the environment.
        let out = Command::new(BIN)
            .arg("check")
            .arg(&f)
            .env("COLLECTOR_TOKEN", "t")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn readme_documents_every_config_key() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let schema =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config/schema.rs"))
            .unwrap();
    let reference = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tracegate.yaml"),
    )
    .unwrap();
    for line in schema.lines() {
        let l = line.trim();
        let Some(rest) = l.strip_prefix("pub ") else {
            continue;
        };
        let Some((field, _)) = rest.split_once(':') else {
            continue;
        };
        if field.contains(' ') {
            continue;
        }
        let key = if field == "matcher" { "match" } else { field };
        assert!(
            readme.contains(&format!("`{key}`")),
            "README reference lacks `{key}`"
        );
        assert!(
            reference.contains(&format!("{key}:")),
            "config/tracegate.yaml lacks {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_inflight_request_finish_and_flushes_spans() {
    let up = upstream().await;
    let col = grpc_collector().await;
    let endpoint = format!("http://{}", col.addr);
    let upstream_url = format!("http://{}", up.addr);
    let mut tg = spawn_tracegate(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream_url,
            "--admin",
            "off",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "sidecar-test"),
            // A long batch delay: only the shutdown flush can deliver the spans in time.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ],
    );
    let addr = tg.proxy.clone();
    let client = h1_client();
    let url = format!("http://{addr}/slow/1500");
    let inflight = tokio::spawn(async move { get(&client, &url, &[]).await });
    up.seen.wait_for(1).await;
    tg.signal("TERM");
    let r = inflight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request completes");
    assert_eq!(r.body, "slow ok");
    let status = tg.exit().await;
    assert!(
        status.success(),
        "exit 0 after a graceful shutdown: {status:?}"
    );
    let spans = col.spans.wait_for(2).await;
    assert_eq!(
        spans[0].resource_attr("service.name").as_deref(),
        Some("sidecar-test")
    );
    assert!(
        spans
            .iter()
            .any(|s| s.attr("url.path").as_deref() == Some("/slow/1500"))
    );
}

#[tokio::test]
async fn health_probes_the_admin_port() {
    let mut tg = spawn_tracegate(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
            "--admin",
            "127.0.0.1:0",
        ],
        &[],
    );
    let admin = tg.admin.clone().unwrap();
    let ok = Command::new(BIN)
        .args(["health", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(ok.success());
    let missing = Command::new(BIN)
        .args(["health", &format!("http://{admin}/nope")])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    tg.signal("TERM");
    assert!(tg.exit().await.success());
    let refused = Command::new(BIN)
        .args(["health", &format!("http://{admin}/healthz")])
        .status()
        .unwrap();
    assert!(!refused.success());
}

#[tokio::test]
async fn the_echo_answers_the_status_and_delay_asked_for() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(tracegate::demo::serve_echo(l, false));
    let client = h1_client();
    let r = get(&client, &format!("http://{addr}/x?status=503"), &[]).await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("\"path\": \"/x\""));
    let started = std::time::Instant::now();
    let r = get(
        &client,
        &format!("http://{addr}/x?delay_ms=50&status=999"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "an invalid status is ignored");
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
}

#[tokio::test]
async fn the_fixed_echo_answers_the_same_bytes_whatever_arrived() {
    use tokio::io::AsyncWriteExt;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(tracegate::demo::serve_echo(l, true));
    // One connection: a bare GET, one with a proxy's headers, a POST with a body, then a
    // GET again (the POST's body was read: the connection stays in step).
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let requests = [
        "GET /a HTTP/1.1\r\nhost: x\r\n\r\n".to_string(),
        "GET /b?status=503 HTTP/1.1\r\nhost: x\r\ntraceparent: \
         00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nx-request-id: r1\r\n\
         x-forwarded-for: 10.0.0.1\r\n\r\n"
            .to_string(),
        format!(
            "POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n{}",
            "z".repeat(5000)
        ),
        "GET /d HTTP/1.1\r\nhost: x\r\n\r\n".to_string(),
    ];
    for r in &requests {
        s.write_all(r.as_bytes()).await.unwrap();
        let response = read_response(&mut s).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(body, tracegate::demo::FIXED_BODY, "{head}");
    }
}
