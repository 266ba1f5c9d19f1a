//! The trace viewer's JSON API and page through real sockets, with export off: recent,
//! slowest and failed lists, filters, search, and a trace's SERVER and CLIENT spans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

mod support;

use serde_json::Value;
use support::*;

async fn json(url: &str) -> Value {
    let r = get(&h1_client(), url, &[]).await;
    assert_eq!(r.status, 200, "{url}");
    serde_json::from_slice(&r.body).unwrap()
}

/// tracegate with export off and `admin_extra` under `admin:`, in front of the test
/// upstream; its proxy and admin base URLs.
async fn with_viewer(admin_extra: &str) -> (tracegate::gateway::Gateway, String, String) {
    let up = upstream().await;
    let yaml = config(up.addr, "export:\n  protocol: none\n").replace(
        "admin:\n  address: 127.0.0.1:0\n",
        &format!("admin:\n  address: 127.0.0.1:0\n{admin_extra}"),
    );
    let gw = tracegate(&yaml).await;
    let base = format!("http://{}", gw.proxy_addrs[0]);
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    (gw, base, admin)
}

#[tokio::test]
async fn viewer_lists_filters_and_shows_traces() {
    let (_gw, base, admin) =
        with_viewer("  traces: 100\n  trace_link: \"http://jaeger:16686/trace/{trace_id}\"\n")
            .await;
    let client = h1_client();
    let ok = get(&client, &format!("{base}/api/1?sig=secret"), &[]).await;
    let failed = get(&client, &format!("{base}/status/503"), &[]).await;
    let slow = get(&client, &format!("{base}/slow/300"), &[]).await;
    let id = |r: &Reply| r.headers["x-trace-id"].to_str().unwrap().to_string();

    // The store is filled off the request path: wait until it has all three.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let list = loop {
        let list = json(&format!("{admin}/traces.json")).await;
        if list["recent"].as_array().unwrap().len() == 3 {
            break list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let recent: Vec<&str> = list["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, [id(&slow), id(&failed), id(&ok)], "newest first");
    assert_eq!(list["failed"][0]["trace_id"], id(&failed));
    assert_eq!(list["failed"].as_array().unwrap().len(), 1);
    assert_eq!(
        list["slowest"][0]["trace_id"],
        id(&slow),
        "the slowest first"
    );
    assert_eq!(list["trace_link"], "http://jaeger:16686/trace/{trace_id}");
    assert_eq!(list["recent"][2]["path"], "/api/1?sig=REDACTED");
    assert!(
        list["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "/api/{id}")
    );

    let only_5xx = json(&format!("{admin}/traces.json?status=5xx")).await;
    assert_eq!(only_5xx["recent"].as_array().unwrap().len(), 1);
    let by_route = json(&format!("{admin}/traces.json?route=%2Fapi%2F%7Bid%7D")).await;
    assert_eq!(by_route["recent"][0]["trace_id"], id(&ok));
    let slow_only = json(&format!("{admin}/traces.json?min_ms=250")).await;
    assert_eq!(slow_only["recent"].as_array().unwrap().len(), 1);
    let search = json(&format!("{admin}/traces.json?trace_id={}", &id(&ok)[..12])).await;
    assert_eq!(search["recent"].as_array().unwrap().len(), 1);

    let trace = json(&format!("{admin}/traces/{}.json", id(&failed))).await;
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2);
    assert_eq!(
        (spans[0]["kind"].as_str(), spans[1]["kind"].as_str()),
        (Some("SERVER"), Some("CLIENT"))
    );
    assert_eq!(spans[1]["parent_span_id"], spans[0]["span_id"]);
    assert_eq!(spans[0]["status"], "error");
    assert_eq!(spans[0]["attributes"]["http.response.status_code"], 503);
    assert!(spans[0]["end_unix_nano"].as_u64() >= spans[1]["end_unix_nano"].as_u64());

    let missing = get(
        &client,
        &format!("{admin}/traces/{}.json", "0".repeat(32)),
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);
    let page = get(&client, &format!("{admin}/traces"), &[]).await;
    assert!(
        page.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"waterfall\""));
}

#[tokio::test]
async fn recent_keeps_the_last_n_and_the_slowest_list_takes_only_slower_ones() {
    let (_gw, base, admin) = with_viewer("  traces: 3\n").await;
    let client = h1_client();
    let id = |r: &Reply| r.headers["x-trace-id"].to_str().unwrap().to_string();
    let trace_ids = |list: &Value, key: &str| -> Vec<String> {
        list[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["trace_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Waits until the newest recent request is `newest`.
    let settled = |newest: String| {
        let admin = admin.clone();
        async move {
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let list = json(&format!("{admin}/traces.json?limit=100")).await;
                if list["recent"][0]["trace_id"] == newest.as_str() {
                    return list;
                }
                assert!(tokio::time::Instant::now() < deadline, "{list}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(id(&get(&client, &format!("{base}/api/{i}"), &[]).await));
    }
    let list = settled(ids[4].clone()).await;
    assert_eq!(
        trace_ids(&list, "recent"),
        [ids[4].clone(), ids[3].clone(), ids[2].clone()]
    );
    assert_eq!(list["capacity"], 3);

    // Fifty quick ones fill the slowest list; a slow one then heads it, and quick ones
    // after it stay out.
    for _ in 0..50 {
        get(&client, &format!("{base}/ok"), &[]).await;
    }
    let slow = id(&get(&client, &format!("{base}/slow/200"), &[]).await);
    let mut last = String::new();
    for _ in 0..5 {
        last = id(&get(&client, &format!("{base}/ok"), &[]).await);
    }
    // The slowest list is filled by the store's task: wait for the slow one there too.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let list = loop {
        let list = settled(last.clone()).await;
        if list["slowest"][0]["trace_id"] == slow.as_str() {
            break list;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let slowest = trace_ids(&list, "slowest");
    assert_eq!(slowest.len(), 50, "the list keeps fifty");
    assert_eq!(slowest[0], slow);
    assert!(list["failed"].as_array().unwrap().is_empty());
}
