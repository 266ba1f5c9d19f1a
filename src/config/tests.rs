//! Config loading: defaults, the OTEL_* variables, and every kind of bad input reported with
//! file, line and key.

use super::*;

fn ok(yaml: &str) -> Settings {
    load(yaml, "t.yaml", &Env::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn errs(yaml: &str) -> Vec<ConfigError> {
    load(yaml, "bad.yaml", &Env::default())
        .expect_err("should fail")
        .0
}

const BASE: &str = "upstreams:\n  - name: app\n    endpoints: [http://127.0.0.1:3000]\nroutes:\n  - upstream: app\n";

#[test]
fn empty_file_gives_safe_defaults() {
    let s = ok("");
    assert_eq!(
        s.listeners,
        vec![ListenerSettings::plain("127.0.0.1:8080".parse().unwrap())]
    );
    assert_eq!(
        s.admin,
        Some("127.0.0.1:9901".parse().unwrap()),
        "admin on loopback by default"
    );
    assert_eq!(s.tracing.service_name, "tracegate");
    assert_eq!(s.tracing.trace_id_header.as_ref().unwrap(), "x-trace-id");
    assert_eq!(s.tracing.correlation_headers.len(), 2);
    assert!(
        matches!(&s.export, ExportSettings::Otlp(o) if o.protocol == Protocol::Grpc && o.endpoint == "http://localhost:4317")
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = errs(&format!("{BASE}tracing:\n  service_nme: x\n"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].source, "bad.yaml");
    assert_eq!(e[0].line, 7, "{}", e[0]);
    assert_eq!(e[0].key, "service_nme");
    assert!(e[0].message.contains("unknown field"), "{}", e[0]);
    assert!(e[0].to_string().starts_with("bad.yaml:7:"), "{}", e[0]);
}

#[test]
fn opt_in_attributes_are_checked_by_name() {
    let s = ok(&format!(
        "{BASE}tracing:\n  opt_in_attributes: [client.port, http.response.body.size]\n"
    ));
    assert_eq!(
        s.tracing.opt_in.names().collect::<Vec<_>>(),
        ["client.port", "http.response.body.size"]
    );
    assert_eq!(ok(BASE).tracing.opt_in, crate::span::OptIn::default());
    let e = errs(&format!(
        "{BASE}tracing:\n  opt_in_attributes:\n    - client.port\n    - http.request.size\n"
    ));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 9, "{}", e[0]);
    assert_eq!(e[0].key, "tracing.opt_in_attributes[1]");
    assert!(e[0].message.contains("`http.request.size`"), "{}", e[0]);
    assert!(e[0].message.contains("network.local.port"), "{}", e[0]);
}

#[test]
fn wrong_type_names_line_and_key() {
    let e = errs(&format!("{BASE}export:\n  batch_size: lots\n"));
    assert_eq!(e[0].line, 7, "{}", e[0]);
    assert_eq!(e[0].key, "batch_size");
}

#[test]
fn bad_regex_names_line_and_key() {
    let e = errs(
        "upstreams:\n  - name: app\n    endpoints: [http://127.0.0.1:3000]\nroutes:\n  - match:\n      path_regex: '/users/(['\n    upstream: app\n",
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 6);
    assert_eq!(e[0].key, "routes[0].match.path_regex");
    assert!(e[0].message.contains("invalid regex"), "{}", e[0]);
}

#[test]
fn unknown_upstream_names_line_and_key() {
    let e = errs(
        "upstreams:\n  - name: app\n    endpoints: [http://127.0.0.1:3000]\nroutes:\n  - upstream: nope\n",
    );
    assert_eq!(e[0].line, 5);
    assert_eq!(e[0].key, "routes[0].upstream");
    assert!(e[0].message.contains("unknown upstream `nope`"), "{}", e[0]);
}

#[test]
fn every_validation_problem_is_reported_at_once() {
    let yaml = "listeners:\n  - address: nowhere\nupstreams:\n  - name: app\n    endpoints: [ftp://x]\n    connect_timeout: soon\nroutes:\n  - upstream: nope\n    match: {path_regex: '('}\ntracing:\n  sampling: {ratio: 2}\n";
    let e = errs(yaml);
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listeners[0].address",
            "upstreams[0].endpoints[0]",
            "upstreams[0].connect_timeout",
            "routes[0].match.path_regex",
            "routes[0].upstream",
            "tracing.sampling.ratio"
        ]
    );
    let lines: Vec<u64> = e.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 5, 6, 9, 8, 11]);
}

#[test]
fn duplicate_upstream_and_empty_endpoints() {
    let e = errs(
        "upstreams:\n  - name: a\n    endpoints: []\n  - name: a\n    endpoints: [http://h:1]\n",
    );
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["upstreams[0].endpoints", "upstreams[1].name"]);
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let e = errs("routes:\n  - upstream: [unclosed\n");
    assert!(e[0].line >= 2, "{}", e[0]);
}

#[test]
fn endpoints_parse_with_default_port() {
    let ep = parse_endpoint("http://app.local").unwrap();
    assert_eq!((ep.host.as_str(), ep.port), ("app.local", 80));
    assert_eq!(ep.to_string(), "http://app.local:80");
    assert!(parse_endpoint("http://h:1/path").is_err());
    assert!(parse_endpoint("h:1").is_err());
    let tls = parse_endpoint("https://api.example").unwrap();
    assert!(tls.tls);
    assert_eq!(tls.to_string(), "https://api.example:443");
    assert!(parse_endpoint("ftp://h:1").is_err());
    assert_eq!(parse_endpoint("http://[::1]:9").unwrap().host, "::1");
}

#[test]
fn route_names_default_to_templates() {
    let s = ok(
        "upstreams:\n  - name: a\n    endpoints: [http://h:1]\nroutes:\n  - match: {path_prefix: /api/}\n    upstream: a\n  - match: {path: /x}\n    upstream: a\n  - upstream: a\n  - name: named\n    upstream: a\n",
    );
    let names: Vec<&str> = s.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["/api/*", "/x", "/*", "named"]);
}

#[test]
fn otel_env_applies_when_yaml_is_silent() {
    let env = Env::from_pairs([
        ("OTEL_SERVICE_NAME", "checkout"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=prod,service.version=1.2.3",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc%20def"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ]);
    let s = load("", "t.yaml", &env).unwrap();
    assert_eq!(s.tracing.service_name, "checkout");
    assert_eq!(s.tracing.service_version, "1.2.3");
    assert_eq!(
        s.tracing.resource_attributes,
        vec![(
            "deployment.environment.name".to_string(),
            "prod".to_string()
        )]
    );
    assert_eq!(
        s.tracing.sampling,
        SamplingSettings {
            ratio: 0.25,
            parent_based: true,
            ..SamplingSettings::default()
        }
    );
    let ExportSettings::Otlp(o) = &s.export else {
        panic!("export disabled")
    };
    assert_eq!(o.protocol, Protocol::HttpProtobuf);
    assert_eq!(o.endpoint, "http://collector:4318/v1/traces");
    assert_eq!(
        o.headers,
        vec![("api-key".to_string(), "abc def".to_string())]
    );
    assert_eq!(o.timeout, Duration::from_millis(2500));
    assert!(o.gzip);
}

#[test]
fn yaml_wins_over_otel_env() {
    let env = Env::from_pairs([
        ("OTEL_SERVICE_NAME", "from-env"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://env:4318/v1/traces",
        ),
        ("OTEL_TRACES_SAMPLER", "always_off"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=env"),
    ]);
    let s = load(
        "tracing:\n  service_name: from-yaml\n  resource_attributes: {team: yaml}\n  sampling: {ratio: 1.0}\nexport:\n  protocol: grpc\n  endpoint: http://yaml:4317\n",
        "t.yaml",
        &env,
    )
    .unwrap();
    assert_eq!(s.tracing.service_name, "from-yaml");
    assert_eq!(
        s.tracing.resource_attributes,
        vec![("team".to_string(), "yaml".to_string())]
    );
    assert_eq!(s.tracing.sampling.ratio, 1.0);
    let ExportSettings::Otlp(o) = &s.export else {
        panic!()
    };
    assert_eq!(
        (o.protocol, o.endpoint.as_str()),
        (Protocol::Grpc, "http://yaml:4317")
    );
}

#[test]
fn sdk_disabled_turns_export_off_and_none_protocol_too() {
    let env = Env::from_pairs([("OTEL_SDK_DISABLED", "true")]);
    assert!(matches!(
        load("", "t", &env).unwrap().export,
        ExportSettings::Disabled
    ));
    assert!(matches!(
        ok("export:\n  protocol: none\n").export,
        ExportSettings::Disabled
    ));
}

#[test]
fn bad_env_values_are_reported_by_variable() {
    let env = Env::from_pairs([
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
    ]);
    let e = load("", "t.yaml", &env).unwrap_err().0;
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["OTEL_TRACES_SAMPLER", "OTEL_EXPORTER_OTLP_PROTOCOL"]);
    assert!(
        e[0].to_string()
            .starts_with("environment: OTEL_TRACES_SAMPLER:")
    );
}

#[test]
fn export_header_values_can_come_from_env() {
    let env = Env::from_pairs([("COLLECTOR_TOKEN", "s3cret")]);
    let s = load(
        "export:\n  headers:\n    authorization: ${COLLECTOR_TOKEN}\n",
        "t",
        &env,
    )
    .unwrap();
    let ExportSettings::Otlp(o) = &s.export else {
        panic!()
    };
    assert_eq!(
        o.headers,
        vec![("authorization".to_string(), "s3cret".to_string())]
    );
    assert!(
        !s.describe().to_string().contains("s3cret"),
        "secrets are redacted"
    );
    let e = load(
        "export:\n  headers:\n    authorization: ${MISSING}\n",
        "t",
        &Env::default(),
    )
    .unwrap_err();
    assert_eq!(e.0[0].line, 3);
}

#[test]
fn sidecar_mode_builds_one_catch_all_route() {
    let s = sidecar(
        "127.0.0.1:0",
        "http://127.0.0.1:3000",
        None,
        &Env::default(),
    )
    .unwrap();
    assert_eq!(s.routes.len(), 1);
    assert_eq!(s.routes[0].name, "/*");
    assert_eq!(s.upstreams[0].endpoints[0].port, 3000);
    let e = sidecar("127.0.0.1:0", "3000", None, &Env::default()).unwrap_err();
    assert_eq!(e.0[0].source, "command line");
}

#[test]
fn admin_off() {
    assert_eq!(ok("admin:\n  address: \"off\"\n").admin, None);
}

#[test]
fn base_config_loads() {
    let s = ok(BASE);
    assert_eq!(s.routes[0].upstream, 0);
    assert_eq!(s.upstreams[0].connect_timeout, Duration::from_secs(5));
}

#[test]
fn schema_errors_are_all_reported_with_validation_errors() {
    let yaml = "upstreams:\n  - name: app\n    endpoints: [http://127.0.0.1:3000]\n    conect_timeout: 1s\n    request_timeout: soon\nroutes:\n  - upstream: nope\n    match:\n      path_prefx: /api\nexport:\n  batch_size: many\n";
    let e = errs(yaml);
    let got: Vec<(u64, &str)> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (4, "conect_timeout"),
            (9, "path_prefx"),
            (11, "batch_size"),
            (5, "upstreams[0].request_timeout"),
            (7, "routes[0].upstream"),
        ]
    );
}

#[test]
fn recovery_stops_at_block_values_without_inventing_errors() {
    let yaml = "tracing:\n  samplin:\n    ratio: 1\n  service_nam: x\n";
    let e = errs(yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].key.as_str()), (2, "samplin"));
}

#[test]
fn blanking_a_required_key_does_not_report_it_missing() {
    let yaml = "upstreams:\n  - name: app\n    endpoints: [http://h:1]\nroutes:\n  - upstream: app\n    match: {path: /x}\n    extra: 1\n";
    let e = errs(yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "extra");
}

#[test]
fn sections_with_every_key_commented_out_mean_defaults() {
    let s = ok(
        "tracing:\n  # service_name: x\nexport:\nshutdown:\n  # grace_period: 1s\nupstreams:\n  - name: a\n    endpoints: [http://h:1]\nroutes:\n  - upstream: a\n    match:\n    sampling:\n",
    );
    assert_eq!(s.tracing.service_name, "tracegate");
    assert_eq!(s.shutdown.grace_period, Duration::from_secs(25));
    assert!(matches!(s.routes[0].path, PathMatch::Any));
}

#[test]
fn spans_still_point_at_lines_inside_null_tolerant_sections() {
    let e = errs("tracing:\n  sampling:\n    ratio: 7\n");
    assert_eq!(
        (e[0].line, e[0].key.as_str()),
        (3, "tracing.sampling.ratio")
    );
}

#[test]
fn propagation_from_yaml_or_otel_propagators() {
    use crate::context::Format;
    let s = ok("tracing:\n  propagation: [b3, tracecontext, b3]\n");
    assert_eq!(
        s.tracing.propagation.formats(),
        [Format::B3, Format::TraceContext]
    );
    let env = Env::from_pairs([("OTEL_PROPAGATORS", "jaeger, b3multi")]);
    let s = load("", "t", &env).unwrap();
    assert_eq!(
        s.tracing.propagation.formats(),
        [Format::Jaeger, Format::B3Multi]
    );
    let env = Env::from_pairs([("OTEL_PROPAGATORS", "none")]);
    assert!(
        load("", "t", &env)
            .unwrap()
            .tracing
            .propagation
            .formats()
            .is_empty()
    );
    assert_eq!(
        ok("").tracing.propagation.formats(),
        [Format::TraceContext, Format::Baggage]
    );
    let e = errs("tracing:\n  propagation: [b3, xray]\n");
    assert_eq!(
        (e[0].line, e[0].key.as_str()),
        (2, "tracing.propagation[1]")
    );
    let env = Env::from_pairs([("OTEL_PROPAGATORS", "tracecontext,ottrace")]);
    assert_eq!(
        load("", "t", &env).unwrap_err().0[0].key,
        "OTEL_PROPAGATORS"
    );
}

#[test]
fn kubernetes_downward_api_variables_become_resource_attributes() {
    let env = Env::from_pairs([
        ("K8S_POD_NAME", "web-7d9f"),
        ("K8S_NAMESPACE_NAME", "shop"),
        ("K8S_NODE_NAME", "node-1"),
        ("K8S_POD_UID", "1234"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.node.name=from-otel"),
    ]);
    let s = load(
        "tracing:\n  resource_attributes: { k8s.namespace.name: from-yaml }\n",
        "t",
        &env,
    )
    .unwrap();
    let get = |k: &str| {
        s.tracing
            .resource_attributes
            .iter()
            .find(|(rk, _)| rk == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("k8s.pod.name"), Some("web-7d9f"));
    assert_eq!(get("k8s.pod.uid"), Some("1234"));
    assert_eq!(
        get("k8s.node.name"),
        Some("from-otel"),
        "OTEL_RESOURCE_ATTRIBUTES wins over K8S_*"
    );
    assert_eq!(
        get("k8s.namespace.name"),
        Some("from-yaml"),
        "the YAML wins over both"
    );
}

#[test]
fn capture_lists_and_query_redaction_defaults() {
    let s = ok(
        "tracing:\n  capture:\n    request_headers: [X-Tenant]\n    response_headers: [\"*\"]\n    reveal: [cookie]\n",
    );
    assert_eq!(
        s.tracing.capture.request,
        HeaderList::Some(vec![HeaderName::from_static("x-tenant")])
    );
    assert_eq!(s.tracing.capture.response, HeaderList::All);
    assert_eq!(
        s.tracing.redact_query,
        ["AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"]
    );
    let e = errs("tracing:\n  capture:\n    request_headers: [\"bad header\"]\n");
    assert_eq!(
        (e[0].line, e[0].key.as_str()),
        (3, "tracing.capture.request_headers[0]")
    );
}

#[test]
fn effective_config_shows_every_section_of_the_reference() {
    let env = Env::from_pairs([("COLLECTOR_TOKEN", "t")]);
    let s = load(
        include_str!("../../config/tracegate.yaml"),
        "tracegate.yaml",
        &env,
    )
    .unwrap();
    let d = s.describe();
    for key in [
        "listeners",
        "admin",
        "upstreams",
        "routes",
        "tracing",
        "export",
        "shutdown",
        "access_log",
    ] {
        assert!(!d[key].is_null(), "describe() lacks {key}");
    }
    for key in [
        "service_name",
        "resource_attributes",
        "trace_id_header",
        "correlation_headers",
        "client_spans",
        "propagation",
        "baggage_attributes",
        "opt_in_attributes",
        "capture",
        "redact_query",
        "attributes",
        "sampling",
    ] {
        assert!(
            !d["tracing"][key].is_null(),
            "describe() lacks tracing.{key}"
        );
    }
    for key in [
        "ratio",
        "parent_based",
        "rate_limit",
        "keep_errors",
        "slow_threshold_ms",
        "exclude_paths",
    ] {
        assert!(
            !d["tracing"]["sampling"][key].is_null(),
            "describe() lacks tracing.sampling.{key}"
        );
    }
    assert_eq!(d["routes"][3]["sampling"]["slow_threshold_ms"], 300);
    assert_eq!(d["upstreams"][0]["protocol"], "http1");
    assert_eq!(d["access_log"]["format"], "json");
}

#[test]
fn http_endpoint_without_path_gets_the_traces_path() {
    let endpoint = |yaml: &str| {
        let s = load(yaml, "t.yaml", &Env::default()).unwrap();
        let ExportSettings::Otlp(o) = s.export else {
            panic!("export disabled")
        };
        o.endpoint
    };
    let http = "export:\n  protocol: http/protobuf\n  endpoint: ";
    assert_eq!(
        endpoint(&format!("{http}http://c:4318")),
        "http://c:4318/v1/traces"
    );
    assert_eq!(
        endpoint(&format!("{http}http://c:4318/")),
        "http://c:4318/v1/traces"
    );
    assert_eq!(
        endpoint(&format!("{http}http://c:4318/otlp/v1/traces")),
        "http://c:4318/otlp/v1/traces"
    );
    assert_eq!(
        endpoint("export:\n  protocol: grpc\n  endpoint: http://c:4317"),
        "http://c:4317"
    );
}

#[test]
fn tls_files_are_checked_with_their_line() {
    let e = errs(
        "listeners:\n  - address: 127.0.0.1:0\n    tls:\n      certificates:\n        - cert: /nonexistent/site.crt\n          key: /nonexistent/site.key\n      client_auth: optional\nupstreams:\n  - name: a\n    endpoints: [http://h:1]\n    protocol: auto\n    tls:\n      ca: /nonexistent/ca.pem\n",
    );
    let found: Vec<(u64, &str)> = e.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        found,
        [
            (5, "listeners[0].tls.certificates[0]"),
            (7, "listeners[0].tls.client_auth"),
            (11, "upstreams[0].protocol"),
            (13, "upstreams[0].tls.ca"),
            (9, "upstreams[0].tls"),
        ],
        "{e:?}"
    );
    assert!(
        e[0].message.contains("cannot read /nonexistent/site.crt"),
        "{}",
        e[0]
    );
    assert!(e[4].message.contains("no https:// endpoint") || e[4].message.contains("has none"));
}

#[test]
fn https_endpoints_make_tls_settings() {
    let s = ok("upstreams:\n  - name: a\n    endpoints: [https://h:8443]\n    protocol: http2\n");
    assert_eq!(s.upstreams[0].tls, Some(ClientTlsSettings::default()));
    assert_eq!(s.upstreams[0].protocol, UpstreamProtocol::Http2);
    let s = ok("upstreams:\n  - name: a\n    endpoints: [http://h:1]\n    protocol: h2c\n");
    assert_eq!(s.upstreams[0].tls, None);
    assert_eq!(s.upstreams[0].protocol, UpstreamProtocol::Http2);
}

#[test]
fn the_http2_server_is_one_of_two() {
    let e = errs(&format!("{BASE}limits:\n  http2_server: fast\n"));
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, "limits.http2_server");
    assert_eq!(e[0].line, 7, "{}", e[0]);
    assert!(e[0].message.contains("`fast` (native, hyper)"), "{}", e[0]);
    let s = load(
        &format!("{BASE}limits:\n  http2_server: hyper\n"),
        "t.yaml",
        &Env::default(),
    )
    .unwrap();
    assert_eq!(s.limits.http2_server, Http2Server::Hyper);
    let s = load(BASE, "t.yaml", &Env::default()).unwrap();
    assert_eq!(s.limits.http2_server, Http2Server::Native);
}

#[test]
fn concurrent_exports_are_bounded() {
    let otlp = |s: &Settings| match &s.export {
        ExportSettings::Otlp(o) => o.max_concurrent_exports,
        ExportSettings::Disabled => panic!("export off"),
    };
    assert_eq!(otlp(&ok(BASE)), 4, "the default");
    assert_eq!(
        otlp(&ok(&format!(
            "{BASE}export:\n  max_concurrent_exports: 1\n"
        ))),
        1
    );
    for bad in ["0", "65"] {
        let e = errs(&format!("{BASE}export:\n  max_concurrent_exports: {bad}\n"));
        assert_eq!(e.len(), 1, "{bad}");
        assert_eq!(e[0].key, "export.max_concurrent_exports");
        assert_eq!(e[0].line, 7, "{}", e[0]);
        assert!(e[0].message.contains("must be 1 to 64"), "{}", e[0]);
    }
}
