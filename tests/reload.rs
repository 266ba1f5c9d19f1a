//! Hot reload through the real binary: SIGHUP and file changes swap routes without failing a
//! request; an invalid file is rejected with its file:line errors and the old config serves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;

fn config_to(upstream: SocketAddr) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\nroutes:\n  - upstream: app\nexport:\n  protocol: none\n"
    )
}

/// Replaces the file atomically (write + rename), as editors and ConfigMaps do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The process's log once a line holds `needle`: its stderr is read by a thread of the
/// harness, so a line can arrive after what the test saw over the sockets (a counter).
async fn log_with(log: &std::sync::Mutex<Vec<String>>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let logged = log.lock().unwrap().join("\n");
        if logged.contains(needle) || tokio::time::Instant::now() >= deadline {
            return logged;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until the counter `name` reaches at least `n`; returns its value. (A change may be
/// applied twice, by the file watch and by SIGHUP, whichever comes first: both are reloads.)
async fn counter_at_least(admin: &str, name: &str, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let value = metric(admin, name).await.unwrap_or(0) as u64;
        if value >= n {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {value}, below {n}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Requests `url` in a loop (bounded) until the flag is set; returns every status.
fn load_loop(url: String) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<u16>>) {
    let done = Arc::new(AtomicBool::new(false));
    let stop = done.clone();
    let load = tokio::spawn(async move {
        let client = h1_client();
        let mut statuses = Vec::new();
        while !stop.load(Ordering::Relaxed) && statuses.len() < 200_000 {
            statuses.push(get(&client, &url, &[]).await.status.as_u16());
        }
        statuses
    });
    (done, load)
}

const OK: &str = "tracegate_config_reloads_total{result=\"ok\"}";
const FAILED: &str = "tracegate_config_reloads_total{result=\"failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_config_without_failing_a_request() {
    let a = upstream().await;
    let b = upstream().await;
    let dir = std::env::temp_dir().join(format!("tracegate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracegate.yaml");
    write(&path, &config_to(a.addr));

    let mut tg = spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[]);
    let (proxy, admin, log) = (tg.proxy.clone(), tg.admin.clone().unwrap(), tg.log.clone());

    // A bounded load loop for the whole test: every request must succeed.
    let (done, load) = load_loop(format!("http://{proxy}/x"));
    a.seen.wait_for(1).await;
    let hup = || tg.signal("HUP");

    // 1. A valid change, applied by SIGHUP.
    write(&path, &config_to(b.addr));
    hup();
    b.seen.wait_for(1).await;
    let ok = counter_at_least(&admin, OK, 1).await;
    let cfg = get(&h1_client(), &format!("http://{admin}/config"), &[]).await;
    assert!(
        String::from_utf8_lossy(&cfg.body).contains(&b.addr.to_string()),
        "/config shows the new upstream"
    );

    // 2. An invalid file: rejected with file:line, the old config keeps serving.
    write(
        &path,
        &config_to(a.addr).replace("upstream: app", "upstream: nope"),
    );
    hup();
    counter_at_least(&admin, FAILED, 1).await;
    assert_eq!(
        counter_at_least(&admin, OK, 0).await,
        ok,
        "a rejected file is not applied"
    );
    let before = b.seen.len();
    b.seen.wait_for(before + 5).await;
    let logged = log_with(&log, "unknown upstream `nope`").await;
    assert!(
        logged.contains(&format!("{}:9:", path.display()))
            && logged.contains("unknown upstream `nope`"),
        "{logged}"
    );

    // 2b. A file that is not even YAML (a half-written save): rejected the same way.
    write(&path, "listeners: [\n  - address: {\n");
    hup();
    counter_at_least(&admin, FAILED, 2).await;
    let before = b.seen.len();
    b.seen.wait_for(before + 5).await;

    // 3. A valid change picked up from the file alone, no signal.
    let seen_by_a = a.seen.len();
    write(&path, &config_to(a.addr));
    a.seen.wait_for(seen_by_a + 1).await;
    counter_at_least(&admin, OK, ok + 1).await;

    done.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 10, "the load loop ran: {}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request failed during reloads"
    );

    // The upstream's connections are counted across config versions: each version's
    // upstream starts with no connection (to a, to b, to a again, and again for a change
    // applied twice); a replaced version's close with it, the current one's stays open.
    let series = "tracegate_upstream_connections_";
    let opened = counter_at_least(
        &admin,
        &format!("{series}opened_total{{upstream=\"app\"}}"),
        3,
    )
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let open = loop {
        let r = get(&h1_client(), &format!("http://{admin}/metrics"), &[]).await;
        let open = String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series}open{{upstream=\"app\"}} ")))
            .map(str::to_string);
        if open.as_deref() == Some("1") || tokio::time::Instant::now() > deadline {
            break open;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        open.as_deref(),
        Some("1"),
        "the current version's connection"
    );
    let accepted = a.accepted.load(Ordering::SeqCst) + b.accepted.load(Ordering::SeqCst);
    assert_eq!(
        opened, accepted as u64,
        "every connection the upstreams accepted"
    );
    tg.signal("TERM");
    assert!(tg.exit().await.success());
}

/// A port free now (bound and released), for a listener a reload adds.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn moving_config(upstream: SocketAddr, second: u16, service: &str, export: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:0\n  - address: 127.0.0.1:{second}\nadmin:\n  address: 127.0.0.1:0\nupstreams:\n  - name: app\n    endpoints: [\"http://{upstream}\"]\nroutes:\n  - upstream: app\ntracing:\n  service_name: {service}\n{export}"
    )
}

/// The exporter and the listeners change on reload: spans of requests started before go to
/// the old collector (the old exporter drains), later ones to the new collector over the
/// new protocol with the new resource; an added listener serves, a removed one finishes
/// its in-flight request and then refuses connections; the kept one never fails a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_moves_exporter_and_listeners() {
    let app = upstream().await;
    let old_collector = grpc_collector().await;
    let new_collector = http_collector().await;
    let (p1, p2) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("tracegate-move-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tracegate.yaml");
    let before = moving_config(app.addr, p1, "svc-old", &grpc_export(old_collector.addr));
    write(&path, &before);

    let mut tg = spawn_tracegate(&["run", "--config", path.to_str().unwrap()], &[]);
    let (kept, admin) = (tg.proxy.clone(), tg.admin.clone().unwrap());
    let client = h1_client();
    assert_eq!(
        get(&client, &format!("http://127.0.0.1:{p1}/a"), &[])
            .await
            .status,
        200
    );
    old_collector.spans.wait_for(2).await;

    // Load on the kept listener for the whole test.
    let (done, load) = load_loop(format!("http://{kept}/load"));
    // In flight on the listener about to be removed, across the reload.
    let slow = tokio::spawn({
        let url = format!("http://127.0.0.1:{p1}/slow/1500");
        async move { get(&h1_client(), &url, &[]).await }
    });
    while !app.seen.all().iter().any(|s| s.path == "/slow/1500") {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let export = format!(
        "export:\n  protocol: http/protobuf\n  endpoint: \"http://{}\"\n  batch_delay: 20ms\n",
        new_collector.addr
    );
    write(&path, &moving_config(app.addr, p2, "svc-new", &export));
    tg.signal("HUP");
    counter_at_least(&admin, OK, 1).await;

    let fresh = get(&client, &format!("http://127.0.0.1:{p2}/b"), &[]).await;
    assert_eq!(fresh.status, 200, "the added listener serves");
    let trace_id = fresh.headers["x-trace-id"].to_str().unwrap().to_string();
    let spans = new_collector.spans.wait_for(1).await;
    let mut spans = spans;
    while !spans.iter().any(|s| s.trace_id() == trace_id) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        spans = new_collector.spans.all();
    }
    let span = spans.iter().find(|s| s.trace_id() == trace_id).unwrap();
    assert_eq!(
        span.resource_attr("service.name").as_deref(),
        Some("svc-new")
    );

    let slow = slow.await.unwrap();
    assert_eq!(
        slow.status, 200,
        "the in-flight request on the removed listener finished"
    );
    let slow_trace = slow.headers["x-trace-id"].to_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !old_collector
        .spans
        .all()
        .iter()
        .any(|s| s.trace_id() == slow_trace)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old exporter exported the span of the request it had"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !new_collector
            .spans
            .all()
            .iter()
            .any(|s| s.trace_id() == slow_trace),
        "a request's spans go to one exporter"
    );

    // The removed listener is closed once its connection finished.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(("127.0.0.1", p1))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the removed listener still accepts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logged = log_with(&tg.log, &format!("draining [127.0.0.1:{p1}]")).await;
    assert!(
        logged.contains(&format!("draining [127.0.0.1:{p1}]")),
        "{logged}"
    );

    done.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 10, "the load loop ran: {}", statuses.len());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "a request on the kept listener failed during the reload"
    );

    // A listener address already taken: the reload is rejected, nothing moves.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    write(
        &path,
        &moving_config(app.addr, taken_port, "svc-new", &export),
    );
    tg.signal("HUP");
    counter_at_least(&admin, FAILED, 1).await;
    assert_eq!(
        get(&client, &format!("http://127.0.0.1:{p2}/c"), &[])
            .await
            .status,
        200,
        "the listeners keep serving after a rejected reload"
    );
    let needle = format!("cannot bind the proxy listener on 127.0.0.1:{taken_port}");
    let logged = log_with(&tg.log, &needle).await;
    assert!(logged.contains(&needle), "{logged}");
    tg.signal("TERM");
    assert!(tg.exit().await.success());
}
