//! What can be checked of the deployment files without a Docker engine or a cluster: the
//! compose stack parses and mounts files that exist, its tracegate configs pass `tracegate
//! check`, the collector config wires the components it defines (with the tail-sampling
//! policies the demo promises), Prometheus and Grafana point at services that exist, the
//! Dockerfile has what the image needs, and the Kubernetes example's embedded config is
//! valid. (.ci/run validates the Kubernetes manifests against the API schemas.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_types)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_tracegate");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_config(path: &Path) {
    let out = Command::new(BIN).arg("check").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_stack_is_complete() {
    let dir = root().join("docker");
    let compose = yaml(&dir.join("compose.yaml"));
    let services = compose["services"].as_object().unwrap();
    for name in [
        "legacy",
        "legacy-proxy",
        "frontend",
        "frontend-proxy",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    let mut tracegate_configs = 0;
    for (name, svc) in services {
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap();
            let (src, rest) = v.split_once(':').unwrap();
            assert!(
                src.starts_with("./"),
                "{name}: mounts {src} from outside docker/"
            );
            let file = dir.join(src);
            assert!(file.is_file(), "{name}: {} does not exist", file.display());
            if rest.starts_with("/etc/tracegate/tracegate.yaml") {
                check_config(&file);
                tracegate_configs += 1;
            }
        }
        for dep in svc["depends_on"].as_array().into_iter().flatten() {
            assert!(
                services.contains_key(dep.as_str().unwrap()),
                "{name} depends on {dep}"
            );
        }
        if let Some(build) = svc.get("build") {
            let context = dir.join(build["context"].as_str().unwrap());
            assert!(
                context
                    .join(build["dockerfile"].as_str().unwrap())
                    .is_file()
            );
        }
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name} has no image"
        );
    }
    assert_eq!(tracegate_configs, 2, "two tracegates in the stack");

    // Both tracegates export where the collector listens, and are scraped by Prometheus.
    let prometheus = yaml(&dir.join("prometheus.yaml"));
    let targets: Vec<&str> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(targets, ["legacy-proxy:9901", "frontend-proxy:9901"]);
    for t in targets {
        assert!(services.contains_key(t.split(':').next().unwrap()));
    }
    let grafana = yaml(&dir.join("grafana/datasources.yaml"));
    let uids: Vec<&str> = grafana["datasources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["uid"].as_str().unwrap())
        .collect();
    let exemplar_target =
        grafana["datasources"][0]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"]
            .as_str()
            .unwrap();
    assert!(uids.contains(&exemplar_target));
}

#[test]
fn collector_config_wires_what_it_defines() {
    let c = yaml(&root().join("docker/otel-collector.yaml"));
    let pipeline = &c["service"]["pipelines"]["traces"];
    for (section, key) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        let defined = c[section].as_object().unwrap();
        for used in pipeline[key].as_array().unwrap() {
            assert!(
                defined.contains_key(used.as_str().unwrap()),
                "{section}: {used} is used but not defined"
            );
        }
    }
    let processors: Vec<&str> = pipeline["processors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        processors.first(),
        Some(&"memory_limiter"),
        "memory_limiter comes first"
    );
    assert!(processors.contains(&"tail_sampling") && processors.contains(&"batch"));
    let policies = c["processors"]["tail_sampling"]["policies"]
        .as_array()
        .unwrap();
    let kinds: Vec<&str> = policies
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"status_code") && kinds.contains(&"latency"),
        "{kinds:?}"
    );
    let grpc = c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(grpc.ends_with(":4317"));
    for f in ["tracegate-legacy.yaml", "tracegate-frontend.yaml"] {
        let t = yaml(&root().join("docker").join(f));
        assert_eq!(
            t["export"]["endpoint"].as_str(),
            Some("http://otel-collector:4317")
        );
    }
}

#[test]
fn dockerfile_builds_a_small_non_root_image_with_a_healthcheck() {
    let text = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "multi-stage: {from:?}");
    assert!(from[1].contains("distroless"), "{from:?}");
    assert!(text.contains("USER 65532"));
    assert!(text.contains("EXPOSE 8080 9901"));
    assert!(text.contains("HEALTHCHECK") && text.contains("\"health\""));
    assert!(text.contains("/etc/tracegate/tracegate.yaml"));
    assert!(text.contains("--locked"));
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(root().join(src).exists(), "COPY source {src} is missing");
        }
    }
    // The image's default config passes check.
    check_config(&root().join("config/examples/sidecar.yaml"));
}

/// The dependency layer builds with an empty `fn main` for each `[[bench]]`: Cargo refuses a
/// manifest whose bench target has no file. The Dockerfile's own awk program, run on
/// Cargo.toml, must name every bench target.
#[test]
fn dockerfile_writes_a_main_for_every_bench_target_of_the_manifest() {
    let docker = std::fs::read_to_string(root().join("docker/Dockerfile")).unwrap();
    let start = docker.find("$(awk ").expect("the placeholder loop's awk") + 2;
    let end = start + docker[start..].find(" Cargo.toml)").unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} Cargo.toml", &docker[start..end]))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let placeholders: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let mut benches = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
        } else if in_bench && let Some(name) = line.strip_prefix("name = ") {
            benches.push(name.trim_matches('"').to_string());
        }
    }
    assert!(!benches.is_empty());
    assert_eq!(placeholders, benches);
}

#[test]
fn kubernetes_example_embeds_a_valid_config_and_matching_drain_times() {
    let path = root().join("examples/kubernetes/tracegate-sidecar.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Deployment", "Service"]);
    let config = docs[0]["data"]["tracegate.yaml"].as_str().unwrap();
    let file = std::env::temp_dir().join(format!("tracegate-k8s-{}.yaml", std::process::id()));
    std::fs::write(&file, config).unwrap();
    check_config(&file);
    let embedded: Value = serde_saphyr::from_str(config).unwrap();
    let secs = |v: &Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse::<u64>()
            .unwrap()
    };
    let drain =
        secs(&embedded["shutdown"]["drain_delay"]) + secs(&embedded["shutdown"]["grace_period"]);
    let pod = &docs[1]["spec"]["template"]["spec"];
    let budget = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(drain < budget, "drain {drain}s must fit in {budget}s");
    let sidecar = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "tracegate")
        .unwrap();
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/healthz");
    let app = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    assert!(
        app["command"].to_string().contains("127.0.0.1"),
        "the app listens on loopback only"
    );
    assert_eq!(docs[2]["spec"]["ports"][0]["targetPort"], "http");
}

#[test]
fn example_tracegate_configs_pass_check() {
    for f in [
        "examples/chained/frontend-tracegate.yaml",
        "examples/chained/legacy-tracegate.yaml",
        "examples/python-app/tracegate.yaml",
    ] {
        check_config(&root().join(f));
    }
    // Every example says how to run it, first thing.
    for dir in ["legacy-app", "chained", "python-app", "kubernetes"] {
        let readme = std::fs::read_to_string(root().join("examples").join(dir).join("README.md"))
            .unwrap_or_else(|e| panic!("examples/{dir}/README.md: {e}"));
        let first_block = readme.split("```").nth(1).unwrap_or("");
        assert!(
            readme.find("```").unwrap_or(usize::MAX) < 400 && !first_block.trim().is_empty(),
            "examples/{dir}/README.md does not open with its commands"
        );
    }
}
