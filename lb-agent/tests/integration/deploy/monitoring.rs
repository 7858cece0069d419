//! deploy/monitoring checked: the alerting rules with Prometheus's own `promtool` (syntax
//! and the unit tests of deploy/monitoring/tests, where every alert must have a case
//! that fires and one that must not), each alert's runbook in docs/monitoring.md, the
//! Grafana dashboard's structure, and the chart's monitoring values: the PodMonitor and
//! PrometheusRule they render valid against the Prometheus operator's CRD schemas
//! (vendored excerpts, tests/fixtures/prometheus-operator), and equal to the plain
//! manifests of deploy/monitoring/operator.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::{
    helm,
    manifests::{NAMESPACE, by_name, chart_difference, manifests},
    objects::{Document, deploy_dir, read_dir, repo_dir, strict},
    schema::{crd_schema, problems},
};

/// Where Debian's `prometheus` package (installed by `cargo xtask setup`) puts promtool.
const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = "deploy/monitoring/xdplb-rules.yaml";
const RULE_TESTS: &str = "deploy/monitoring/tests/xdplb-rules.test.yaml";
const DASHBOARD: &str = "deploy/monitoring/xdplb-dashboard.json";
/// The values that switch every monitoring object on.
const MONITORING_ON: &str = "monitoring.podMonitor.enabled=true,monitoring.prometheusRule.enabled=true,monitoring.dashboard.enabled=true";

fn read(relative: &str) -> String {
    let path = repo_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn yaml(relative: &str) -> Value {
    serde_yaml::from_str(&read(relative)).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

fn promtool(args: &[&str]) -> String {
    assert!(
        Path::new(PROMTOOL).is_file(),
        "no {PROMTOOL}: run `cargo xtask setup` (it installs Debian's prometheus package)"
    );
    let output = Command::new(PROMTOOL)
        .args(args)
        .current_dir(repo_dir())
        .output()
        .expect("running promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let checked = promtool(&["check", "rules", RULES]);
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    println!("{checked}{}", promtool(&["test", "rules", RULE_TESTS]));
}

/// The alerting rules: name → rule.
fn alerts(rules: &Value) -> BTreeMap<String, Value> {
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|rule| Some((rule["alert"].as_str()?.to_owned(), rule)))
        .collect()
}

/// Alerts the unit tests expect to fire somewhere, and alerts they check stay silent
/// at some time (an empty `exp_alerts`).
fn cases(tests: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let checks = tests["tests"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|test| {
            test["alert_rule_test"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        });
    for check in checks {
        let name = check["alertname"].as_str().unwrap_or_default().to_owned();
        match check["exp_alerts"].as_array().map(Vec::len) {
            Some(0) | None => quiet.insert(name),
            Some(_) => firing.insert(name),
        };
    }
    (firing, quiet)
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_case() {
    let names: BTreeSet<String> = alerts(&yaml(RULES)).into_keys().collect();
    assert_eq!(names.len(), 10, "{names:?}");
    let (firing, quiet) = cases(&yaml(RULE_TESTS));
    assert_eq!(firing, names, "alerts with a case that fires");
    assert_eq!(quiet, names, "alerts with a case that must not fire");
}

/// The anchors GitHub gives docs/monitoring.md's headings.
fn doc_anchors() -> BTreeSet<String> {
    read("docs/monitoring.md")
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == ' ' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_section() {
    let anchors = doc_anchors();
    for (name, rule) in alerts(&yaml(RULES)) {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: no summary"
        );
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = url
            .strip_prefix("https://example.invalid/xdplb/docs/monitoring.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url:?} is not docs/monitoring.md"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: its own section");
        assert!(
            anchors.contains(anchor),
            "{name}: docs/monitoring.md has no heading for #{anchor}"
        );
        assert!(rule["for"].is_string(), "{name}: no `for`");
    }
}

/// Everything Grafana needs that `dashboard` lacks.
fn dashboard_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if dashboard["schemaVersion"].as_u64().is_none_or(|v| v < 36) {
        problems.push("schemaVersion missing or below 36".to_owned());
    }
    for field in ["title", "uid"] {
        if !dashboard[field].is_string() {
            problems.push(format!("no {field}"));
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus");
    let Some(variable) = datasource.and_then(|v| v["name"].as_str()) else {
        problems.push("no Prometheus datasource template variable".to_owned());
        return problems;
    };
    let uses = |node: &Value| node["datasource"]["uid"] == format!("${{{variable}}}");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let id = panel["id"].as_u64();
        let title = panel["title"].as_str().unwrap_or("?");
        if !id.is_some_and(|id| ids.insert(id)) {
            problems.push(format!("panel {title:?}: id {id:?} missing or not unique"));
        }
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64(), grid["w"].as_u64());
        if x.zip(w).is_none_or(|(x, w)| x + w > 24) || !grid["h"].is_u64() {
            problems.push(format!(
                "panel {title:?}: gridPos {grid} outside the 24 columns"
            ));
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if !uses(panel) || targets.is_empty() || !targets.iter().all(&uses) {
            problems.push(format!("panel {title:?}: not every query uses ${variable}"));
        }
        if !targets
            .iter()
            .all(|t| t["expr"].is_string() && t["refId"].is_string())
        {
            problems.push(format!("panel {title:?}: a target without expr or refId"));
        }
    }
    problems
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

#[test]
fn the_dashboard_has_what_grafana_needs() {
    let dashboard = dashboard();
    assert_eq!(dashboard_problems(&dashboard), Vec::<String>::new());
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    for wanted in [
        "Owner of each VIP",
        "Ownership changes",
        "Packets per VIP",
        "Drops by reason",
        "Gossip members by state",
        "Gossip datagrams dropped",
        "ARP and gratuitous ARP",
        "Pool addresses",
        "Map sync latency",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }

    // The check can fail: each defect shows.
    let mut broken = dashboard.clone();
    broken["panels"][2]["id"] = broken["panels"][1]["id"].clone();
    broken["panels"][3]["targets"][0]["datasource"]["uid"] = "prometheus".into();
    broken["schemaVersion"] = 16.into();
    let found = dashboard_problems(&broken).join("\n");
    for defect in ["not unique", "not every query uses", "schemaVersion"] {
        assert!(found.contains(defect), "{defect:?} not found in\n{found}");
    }
    broken["templating"]["list"] = Value::Array(Vec::new());
    assert!(dashboard_problems(&broken)[1].contains("datasource template variable"));
}

/// The chart rendered with every monitoring value on, and `extra`.
fn monitoring_render(extra: &[&str]) -> Vec<Document> {
    let mut args = vec!["--set", MONITORING_ON];
    args.extend(extra);
    helm::template(NAMESPACE, &args)
}

fn the_one<'a>(rendered: &'a BTreeMap<(String, String), Value>, kind: &str) -> &'a Value {
    let found: Vec<&Value> = rendered
        .iter()
        .filter(|((k, _), _)| k == kind)
        .map(|(_, value)| value)
        .collect();
    assert_eq!(found.len(), 1, "want one {kind}");
    found[0]
}

const FIXTURES: &str = "lb-agent/tests/fixtures/prometheus-operator";

#[test]
fn the_monitoring_values_render_valid_operator_objects() {
    let rendered = by_name(&monitoring_render(&[
        "--set-string",
        "monitoring.labels.release=kube-prometheus-stack",
    ]));
    let pod_monitor = the_one(&rendered, "PodMonitor");
    let rule = the_one(&rendered, "PrometheusRule");
    for (object, crd, api_version) in [
        (pod_monitor, "podmonitors.yaml", "monitoring.coreos.com/v1"),
        (rule, "prometheusrules.yaml", "monitoring.coreos.com/v1"),
    ] {
        assert_eq!(object["apiVersion"], api_version);
        let schema = crd_schema(&format!("{FIXTURES}/{crd}"), "v1");
        assert_eq!(problems(&schema, object), Vec::<String>::new(), "{object}");
        assert_eq!(
            object["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        assert_eq!(object["metadata"]["namespace"], NAMESPACE);
    }
    // What the rules expect of the scrape: job="xdplb" from the pods' name label, the
    // node label, the agents' container port.
    let spec = &pod_monitor["spec"];
    assert_eq!(spec["jobLabel"], "app.kubernetes.io/name");
    let endpoint = &spec["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "http");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(
        rule["spec"],
        yaml(RULES),
        "the PrometheusRule carries the rules file"
    );

    let map: ConfigMap = strict(&rendered[&("ConfigMap".to_owned(), "xdplb-dashboard".to_owned())])
        .expect("a ConfigMap");
    let labels = map.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("grafana_dashboard").map(String::as_str),
        Some("1")
    );
    let json = &map.data.unwrap_or_default()["xdplb.json"];
    assert_eq!(
        serde_json::from_str::<Value>(json).expect("JSON"),
        dashboard()
    );
}

/// deploy/monitoring/operator: the chart's monitoring objects as plain manifests.
fn operator_dir() -> PathBuf {
    deploy_dir().join("monitoring/operator")
}

/// The plain file of each monitoring template.
const PLAIN: [(&str, &str); 3] = [
    ("templates/podmonitor.yaml", "podmonitor.yaml"),
    ("templates/prometheusrule.yaml", "prometheusrule.yaml"),
    ("templates/dashboard.yaml", "dashboard.yaml"),
];

/// Writes deploy/monitoring/operator from the chart (`XDPLB_BLESS=1`), as the chart's
/// CRDs are refreshed.
fn bless_plain_manifests() {
    for (template, file) in PLAIN {
        let mut command = Command::new(helm::binary());
        command
            .args([
                "template",
                "xdplb",
                "deploy/helm/xdplb",
                "--namespace",
                NAMESPACE,
            ])
            .args(["--set", MONITORING_ON, "--show-only", template])
            .current_dir(repo_dir());
        let output = command.output().expect("helm");
        let text = String::from_utf8_lossy(&output.stdout);
        let body = text
            .lines()
            .skip_while(|line| *line == "---" || line.starts_with("# Source:"))
            .collect::<Vec<_>>()
            .join("\n");
        let header = format!(
            "# Generated from the Helm chart's {template} with every monitoring value on\n\
             # (lb-agent/tests/integration/deploy/monitoring.rs keeps them equal; refresh with\n\
             # XDPLB_BLESS=1 cargo test -p lb-agent --test integration deploy::monitoring).\n"
        );
        std::fs::write(operator_dir().join(file), format!("{header}{body}\n"))
            .expect("writing a plain monitoring manifest");
    }
}

#[test]
fn the_chart_with_monitoring_on_renders_the_plain_manifests_and_monitoring_objects() {
    if std::env::var_os("XDPLB_BLESS").is_some() {
        bless_plain_manifests();
    }
    let rendered = monitoring_render(&[]);
    let mut plain = manifests();
    plain.retain(|document| document.kind() != "Namespace");
    plain.extend(read_dir(&deploy_dir().join("crds")));
    plain.extend(read_dir(&operator_dir()));
    assert_eq!(
        chart_difference(&rendered, &plain),
        None,
        "refresh deploy/monitoring/operator with XDPLB_BLESS=1 cargo test -p lb-agent \
         --test integration deploy::monitoring"
    );
    // Each value switches its own object only.
    for (value, kind) in [
        ("monitoring.podMonitor.enabled=true", "PodMonitor"),
        ("monitoring.prometheusRule.enabled=true", "PrometheusRule"),
        ("monitoring.dashboard.enabled=true", "ConfigMap"),
    ] {
        let defaults = by_name(&helm::template(NAMESPACE, &[]));
        let with = by_name(&helm::template(NAMESPACE, &["--set", value]));
        let added: Vec<&(String, String)> = with
            .keys()
            .filter(|key| !defaults.contains_key(*key))
            .collect();
        assert_eq!(added.len(), 1, "{value} adds {added:?}");
        assert_eq!(added[0].0, kind, "{value}");
    }
}

/// The chart reads the rules and the dashboard from its own files/ (Helm cannot read
/// outside the chart): copies of deploy/monitoring's, refreshed by `XDPLB_BLESS=1`.
#[test]
fn the_charts_monitoring_files_are_deploys() {
    for file in ["xdplb-rules.yaml", "xdplb-dashboard.json"] {
        let source = read(&format!("deploy/monitoring/{file}"));
        let copy = helm::chart_dir().join("files").join(file);
        if std::env::var_os("XDPLB_BLESS").is_some() {
            std::fs::write(&copy, &source).expect("writing the chart's copy");
        }
        let copied = std::fs::read_to_string(&copy).unwrap_or_default();
        assert!(
            copied == source,
            "{} differs from deploy/monitoring/{file}: refresh it with XDPLB_BLESS=1 \
             cargo test -p lb-agent --test integration deploy::monitoring",
            copy.display()
        );
    }
}
