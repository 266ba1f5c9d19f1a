//! Faults during a bounded load loop: the collector goes away mid-run and comes back on the
//! same address. Requests never notice; spans are either delivered or counted as dropped
//! (produced = exported + dropped, exactly); after the collector returns, export resumes
//! and every later span arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP relay in front of a collector that can be switched off (listener closed, open
/// connections cut: the collector "goes down") and on again on the same address.
struct Switch {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Switch {
    async fn new(target: SocketAddr) -> Switch {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut s = Switch {
            addr,
            target,
            task: None,
        };
        s.task = Some(tokio::spawn(relay(l, target)));
        s
    }

    fn down(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn up(&mut self) {
        let l = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.task = Some(tokio::spawn(relay(l, self.target)));
    }
}

/// Relays every connection to `target`; aborting the task cuts them all (a JoinSet).
async fn relay(l: TcpListener, target: SocketAddr) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = l.accept() => {
                let Ok((mut client, _)) = accepted else { return };
                conns.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_mid_run_and_back_loses_nothing_it_did_not_count() {
    let app = upstream().await;
    let collector = grpc_collector().await;
    let mut switch = Switch::new(collector.addr).await;
    let export = format!(
        "export:\n  protocol: grpc\n  endpoint: \"http://{}\"\n  batch_delay: 50ms\n  timeout: 1s\n",
        switch.addr
    );
    let gw = tracegate(&config(app.addr, &export)).await;
    let url = format!("http://{}/api/1", gw.proxy_addrs[0]);
    let client = h1_client();
    let stats = gw.export_stats.clone();

    let phase = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut ids = Vec::new();
            for _ in 0..n {
                let r = get(&client, &url, &[]).await;
                assert_eq!(r.status, 200, "a request failed because of the collector");
                ids.push(r.headers["x-trace-id"].to_str().unwrap().to_string());
            }
            ids
        }
    };

    // 1. Collector up: everything arrives.
    let before = phase(50).await;
    collector.spans.wait_for(100).await;

    // 2. Collector down: requests are unaffected; spans fail to export and are counted.
    switch.down();
    let during = phase(200).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while stats.dropped_export_failed.load(Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed export counted"
        );
        let _ = phase(10).await;
    }

    // 3. Back: export resumes and everything from now on arrives.
    switch.up().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let after = loop {
        let ids = phase(20).await;
        // Give these spans a few batch delays to arrive.
        let mut arrived = false;
        for _ in 0..40 {
            let got = collector.spans.all();
            if ids
                .iter()
                .all(|id| got.iter().filter(|s| &s.trace_id() == id).count() == 2)
            {
                arrived = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if arrived {
            break ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "export did not resume after the collector came back"
        );
    };

    // Every span is accounted for: produced = exported + dropped, and the collector got
    // exactly the exported ones.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let produced = stats.produced.load(Relaxed);
        let exported = stats.exported.load(Relaxed);
        let dropped = stats.dropped();
        let queued = stats.queue_len.load(Relaxed);
        if queued == 0 && produced == exported + dropped {
            // Spans of an export whose answer was lost may have arrived all the same: the
            // collector has at least what was reported exported.
            assert!(collector.spans.len() as u64 >= exported);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "produced {produced} != exported {exported} + dropped {dropped} (queued {queued})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = collector.spans.all();
    for id in before.iter().chain(after.iter()) {
        assert_eq!(
            got.iter().filter(|s| &s.trace_id() == id).count(),
            2,
            "trace {id} lost while the collector was up"
        );
    }
    assert!(!during.is_empty());
    assert_eq!(stats.dropped_queue_full.load(Relaxed), 0);
}
