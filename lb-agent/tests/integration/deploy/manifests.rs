//! Everything under deploy/ parses into its Kubernetes type (strictly: no unknown
//! fields), the DaemonSet runs unprivileged with exactly the capabilities it needs, the
//! RBAC grants exactly what the agent uses, the pieces reference each other correctly,
//! the examples get the seed homelab's addresses from the IPAM, the Helm chart renders
//! (real `helm template`) the same objects as the plain manifests and lints clean, and
//! the install guide's steps (docs/install.md) work as written.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    process::Command,
};

use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Container, PodSpec},
};
use lb_agent::{
    api::http::DEFAULT_LISTEN,
    apis::service,
    ipam::{
        allocator::Allocator,
        pool::Pool,
        request::{ClassPolicy, Responsibility},
    },
    sources::kubernetes::settings::KubernetesSettings,
};
use serde_json::{Value, json};

use super::{
    helm, install_guide,
    objects::{self, Document, Object, deploy_dir, documents, read_dir, strict},
    rbac,
};

pub(super) const NAMESPACE: &str = "xdplb-system";
/// The capabilities the agent needs (see the DaemonSet's comments).
const AGENT_CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "NET_RAW", "PERFMON"];

pub(super) fn manifests() -> Vec<Document> {
    read_dir(&deploy_dir().join("manifests"))
}

fn daemonset(objects: &[Object]) -> DaemonSet {
    let sets: Vec<&DaemonSet> = objects
        .iter()
        .filter_map(|object| match object {
            Object::DaemonSet(set) => Some(set.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 1, "one DaemonSet");
    sets[0].clone()
}

fn pod(set: &DaemonSet) -> &PodSpec {
    set.spec.template.spec.as_ref().expect("a pod template")
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|container| container.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Capabilities a container adds, and whether it drops all others.
fn capabilities(container: &Container) -> (BTreeSet<String>, bool) {
    let capabilities = container
        .security_context
        .as_ref()
        .and_then(|context| context.capabilities.as_ref());
    let added = capabilities
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let drops_all = capabilities
        .and_then(|c| c.drop.as_ref())
        .is_some_and(|drop| drop.iter().any(|cap| cap == "ALL"));
    (added, drops_all)
}

/// Everything wrong with the DaemonSet's security and health settings.
fn daemonset_problems(set: &DaemonSet) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = pod(set);
    if spec.host_network != Some(true) {
        problems.push("hostNetwork must be true (XDP and ARP on the node's LAN)".to_owned());
    }
    if spec.dns_policy.as_deref() != Some("ClusterFirstWithHostNet") {
        problems.push("dnsPolicy must be ClusterFirstWithHostNet".to_owned());
    }
    let init = spec.init_containers.as_deref().unwrap_or_default();
    for container in spec.containers.iter().chain(init) {
        let context = container.security_context.clone().unwrap_or_default();
        if context.privileged != Some(false) {
            problems.push(format!("{}: privileged must be false", container.name));
        }
        if context.allow_privilege_escalation != Some(false) {
            problems.push(format!(
                "{}: allowPrivilegeEscalation must be false",
                container.name
            ));
        }
        if context.read_only_root_filesystem != Some(true) {
            problems.push(format!(
                "{}: readOnlyRootFilesystem must be true",
                container.name
            ));
        }
        if !capabilities(container).1 {
            problems.push(format!("{}: must drop ALL capabilities", container.name));
        }
    }
    let agent = container(&spec.containers, "agent");
    let wanted: BTreeSet<String> = AGENT_CAPABILITIES.map(str::to_owned).into();
    if capabilities(agent).0 != wanted {
        problems.push(format!(
            "agent: capabilities {:?}, want exactly {wanted:?}",
            capabilities(agent).0
        ));
    }
    let http_get = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .and_then(|probe| probe.http_get.as_ref())
            .map(|get| (get.path.clone().unwrap_or_default(), get.port.clone()))
    };
    let http = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into());
    if http_get(&agent.readiness_probe) != Some(("/readyz".to_owned(), http.clone())) {
        problems.push("agent: readinessProbe must GET /readyz on port http".to_owned());
    }
    if http_get(&agent.liveness_probe) != Some(("/healthz".to_owned(), http)) {
        problems.push("agent: livenessProbe must GET /healthz on port http".to_owned());
    }
    let requests = agent
        .resources
        .as_ref()
        .and_then(|resources| resources.requests.as_ref());
    if !requests
        .is_some_and(|requests| requests.contains_key("cpu") && requests.contains_key("memory"))
    {
        problems.push("agent: resources.requests needs cpu and memory".to_owned());
    }
    let strategy = set.spec.update_strategy.as_ref();
    let max_unavailable = strategy
        .and_then(|strategy| strategy.rolling_update.as_ref())
        .and_then(|rolling| rolling.max_unavailable.clone());
    if strategy.and_then(|strategy| strategy.type_.as_deref()) != Some("RollingUpdate")
        || max_unavailable
            != Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    {
        problems.push("updateStrategy must be RollingUpdate with maxUnavailable 1".to_owned());
    }
    problems
}

#[test]
fn every_yaml_file_parses_into_its_type() {
    let deploy = deploy_dir();
    let mut kinds = BTreeMap::new();
    for dir in [
        "manifests",
        "examples",
        "crds",
        "secrets",
        "helm/xdplb/crds",
    ] {
        let documents = read_dir(&deploy.join(dir));
        for object in objects::all_typed(&documents) {
            match object {
                Object::Namespace(namespace) => {
                    assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
                }
                Object::CustomResourceDefinition(crd) => {
                    assert_eq!(crd.spec.names.kind, "AddressPool");
                }
                _ => {}
            }
        }
        for document in &documents {
            *kinds
                .entry(format!("{dir}: {}", document.kind()))
                .or_insert(0) += 1;
        }
    }
    let expected: BTreeMap<String, i32> = [
        ("manifests: Namespace", 1),
        ("manifests: ServiceAccount", 1),
        ("manifests: ClusterRole", 1),
        ("manifests: ClusterRoleBinding", 1),
        ("manifests: Role", 1),
        ("manifests: RoleBinding", 1),
        ("manifests: ConfigMap", 1),
        ("manifests: DaemonSet", 1),
        ("examples: AddressPool", 2),
        ("examples: Service", 3),
        ("crds: CustomResourceDefinition", 1),
        ("secrets: Secret", 1),
        ("helm/xdplb/crds: CustomResourceDefinition", 1),
    ]
    .into_iter()
    .map(|(kind, count)| (kind.to_owned(), count))
    .collect();
    assert_eq!(kinds, expected);
}

#[test]
fn unknown_fields_and_wrong_types_fail_the_parse() {
    for (yaml, error) in [
        (
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: { name: x }\nspec:\n  selector: {}\n  template:\n    spec:\n      hostNetwrk: true\n      containers: []\n",
            ".spec.template.spec.hostNetwrk: unknown field",
        ),
        (
            "apiVersion: xdplb.io/v1alpha1\nkind: AddressPool\nmetadata: { name: lan }\nspec: { addresses: [10.0.0.0/24], autoAsign: false }\n",
            ".spec.autoAsign: unknown field",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\ndata: { a: 1 }\n",
            "invalid type: integer `1`, expected a string",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: { name: x }\n",
            "unexpected kind Pod (v1)",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: x }\nrules: [{ apiGroups: [''], resources: [pods], verb: [get] }]\n",
            ".rules[0].verb: unknown field",
        ),
    ] {
        let document = documents("test", yaml).expect("YAML").remove(0);
        let message = objects::typed(&document).expect_err(yaml);
        assert!(message.contains(error), "expected {error:?} in {message:?}");
    }
}

#[test]
fn the_daemonset_runs_unprivileged_with_the_capabilities_it_needs() {
    let set = daemonset(&objects::all_typed(&manifests()));
    assert_eq!(daemonset_problems(&set), Vec::<String>::new());
    let init = container(
        pod(&set).init_containers.as_deref().unwrap_or_default(),
        "prepare-interface",
    );
    assert_eq!(capabilities(init), (["NET_ADMIN".to_owned()].into(), true));

    // Each of these breaks the DaemonSet; the checks must say so.
    let mutations: [(&str, Mutation); 6] = [
        ("privileged must be false", |set| {
            agent_mut(set).security_context.as_mut().unwrap().privileged = Some(true);
        }),
        ("want exactly", |set| {
            let context = agent_mut(set).security_context.as_mut().unwrap();
            context.capabilities.as_mut().unwrap().add = Some(vec!["SYS_ADMIN".into()]);
        }),
        ("readinessProbe must GET /readyz", |set| {
            let probe = agent_mut(set).readiness_probe.as_mut().unwrap();
            probe.http_get.as_mut().unwrap().path = Some("/healthz".into());
        }),
        ("readOnlyRootFilesystem", |set| {
            agent_mut(set)
                .security_context
                .as_mut()
                .unwrap()
                .read_only_root_filesystem = None;
        }),
        ("hostNetwork", |set| {
            pod_mut(set).host_network = None;
        }),
        ("maxUnavailable 1", |set| {
            set.spec.update_strategy = None;
        }),
    ];
    for (problem, mutate) in mutations {
        let mut broken = set.clone();
        mutate(&mut broken);
        let problems = daemonset_problems(&broken).join("\n");
        assert!(
            problems.contains(problem),
            "{problem} not reported: {problems}"
        );
    }
}

/// A change that breaks a DaemonSet.
type Mutation = fn(&mut DaemonSet);

fn pod_mut(set: &mut DaemonSet) -> &mut PodSpec {
    set.spec.template.spec.as_mut().unwrap()
}

fn agent_mut(set: &mut DaemonSet) -> &mut Container {
    pod_mut(set)
        .containers
        .iter_mut()
        .find(|container| container.name == "agent")
        .unwrap()
}

#[test]
fn rbac_grants_exactly_what_the_agent_uses() {
    let objects = objects::all_typed(&manifests());
    let cluster = objects
        .iter()
        .find_map(|object| match object {
            Object::ClusterRole(role) => Some(role.rules.clone().unwrap_or_default()),
            _ => None,
        })
        .expect("a ClusterRole");
    let namespaced = objects
        .iter()
        .find_map(|object| match object {
            Object::Role(role) => Some(role.rules.clone().unwrap_or_default()),
            _ => None,
        })
        .expect("a Role");
    let expected_cluster = rbac::expected(rbac::CLUSTER);
    let expected_namespaced = rbac::expected(rbac::NAMESPACED);
    assert_eq!(rbac::difference(&expected_cluster, &cluster), None);
    assert_eq!(rbac::difference(&expected_namespaced, &namespaced), None);

    // One verb more, or one less, is reported.
    let mut wider = cluster.clone();
    wider[0].verbs.push("delete".into());
    let message = rbac::difference(&expected_cluster, &wider).expect("extra verb");
    assert!(message.contains("\"services\", \"delete\""), "{message}");
    let mut any_lease = namespaced.clone();
    any_lease[0].resource_names = None;
    let message = rbac::difference(&expected_namespaced, &any_lease).expect("no name limit");
    assert!(message.contains("\"leases\", \"get\", \"*\""), "{message}");
    let mut without_events = cluster.clone();
    without_events.retain(|rule| rule.resources.as_deref() != Some(&["events".to_owned()][..]));
    let message = rbac::difference(&expected_cluster, &without_events).expect("missing events");
    assert!(
        message.contains("\"create\", \"*\") for events on Services"),
        "{message}"
    );
}

#[test]
fn the_pieces_reference_each_other() {
    let objects = objects::all_typed(&manifests());
    for object in &objects {
        let namespace = match object {
            Object::ServiceAccount(o) => o.metadata.namespace.clone(),
            Object::Role(o) => o.metadata.namespace.clone(),
            Object::RoleBinding(o) => o.metadata.namespace.clone(),
            Object::ConfigMap(o) => o.metadata.namespace.clone(),
            Object::DaemonSet(o) => o.metadata.namespace.clone(),
            _ => continue,
        };
        assert_eq!(namespace.as_deref(), Some(NAMESPACE), "{object:?}");
    }
    let set = daemonset(&objects);
    let spec = pod(&set);
    let account = objects.iter().find_map(|object| match object {
        Object::ServiceAccount(account) => account.metadata.name.clone(),
        _ => None,
    });
    assert_eq!(spec.service_account_name, account);
    for binding in objects.iter().filter_map(|object| match object {
        Object::ClusterRoleBinding(b) => Some(b.subjects.clone().unwrap_or_default()),
        Object::RoleBinding(b) => Some(b.subjects.clone().unwrap_or_default()),
        _ => None,
    }) {
        assert_eq!(binding.len(), 1);
        assert_eq!(Some(&binding[0].name), account.as_ref());
        assert_eq!(binding[0].namespace.as_deref(), Some(NAMESPACE));
    }

    // The settings file the agent reads is in the ConfigMap it mounts, parses, and
    // points at the gossip key the projected volume puts beside it.
    let agent = container(&spec.containers, "agent");
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "config")
        .and_then(|volume| volume.projected.clone())
        .expect("the projected config volume");
    let mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.name == "config")
        .expect("config mounted");
    let sources = volume.sources.unwrap_or_default();
    let config_map = sources
        .iter()
        .find_map(|s| s.config_map.clone())
        .expect("ConfigMap");
    let secret = sources
        .iter()
        .find_map(|s| s.secret.clone())
        .expect("Secret");
    let settings_text = objects
        .iter()
        .find_map(|object| match object {
            Object::ConfigMap(map) if map.metadata.name.as_deref() == Some(&config_map.name) => map
                .data
                .as_ref()
                .and_then(|data| data.get("settings.yaml").cloned()),
            _ => None,
        })
        .expect("the ConfigMap with settings.yaml");
    assert_eq!(
        agent.args.as_deref(),
        Some(
            &[
                "kubernetes".to_owned(),
                format!("--settings={}/settings.yaml", mount.mount_path)
            ][..]
        )
    );
    let settings = KubernetesSettings::parse(&settings_text).expect("the settings parse");
    let key_item = &secret.items.as_ref().expect("items")[0];
    assert_eq!(key_item.mode, Some(0o400));
    assert_eq!(
        settings
            .node_settings
            .gossip
            .expect("gossip configured")
            .key_file,
        std::path::Path::new(&mount.mount_path).join(&key_item.path)
    );
    let secrets = objects::all_typed(&read_dir(&deploy_dir().join("secrets")));
    let Object::Secret(example) = &secrets[0] else {
        panic!("deploy/secrets holds a Secret");
    };
    assert_eq!(example.metadata.name, Some(secret.name.clone()));
    assert_eq!(example.metadata.namespace.as_deref(), Some(NAMESPACE));
    assert!(
        example
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(&key_item.key))
    );

    // The probes' port is where the agent serves HTTP by default.
    let http_port = agent
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some("http"))
        .map(|port| port.container_port);
    let default_port = DEFAULT_LISTEN
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok());
    assert_eq!(http_port, default_port);
    let env: BTreeMap<String, String> = agent
        .env
        .iter()
        .flatten()
        .filter_map(|var| {
            let path = var
                .value_from
                .as_ref()?
                .field_ref
                .as_ref()?
                .field_path
                .clone();
            Some((var.name.clone(), path))
        })
        .collect();
    assert_eq!(env["NODE_NAME"], "spec.nodeName");
    assert_eq!(env["POD_NAMESPACE"], "metadata.namespace");
    assert_eq!(env["POD_NAME"], "metadata.name");
    let bpffs = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|mount| mount.mount_path == "/sys/fs/bpf")
        .expect("bpffs mounted");
    assert_eq!(bpffs.mount_propagation.as_deref(), Some("HostToContainer"));
}

/// The DaemonSet's command line is one the agent accepts.
#[test]
fn the_agent_accepts_the_daemonsets_arguments() {
    let set = daemonset(&objects::all_typed(&manifests()));
    let agent = container(&pod(&set).containers, "agent");
    let output = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
        .args(agent.args.iter().flatten())
        .arg("--help")
        .output()
        .expect("run lb-agent");
    assert!(
        output.status.success(),
        "lb-agent {:?}: {}",
        agent.args,
        String::from_utf8_lossy(&output.stderr)
    );
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in ["NODE_NAME", "POD_NAMESPACE", "POD_NAME"] {
        assert!(help.contains(variable), "{variable} missing from:\n{help}");
    }
}

fn service_key(service: &k8s_openapi::api::core::v1::Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or_default(),
        service.metadata.name.as_deref().unwrap_or_default()
    )
}

#[test]
fn the_examples_get_the_seed_addresses() {
    let objects = objects::all_typed(&read_dir(&deploy_dir().join("examples")));
    let pools: Vec<Pool> = objects
        .iter()
        .filter_map(|object| match object {
            Object::AddressPool(pool) => Some(Pool::from_resource(pool).expect("a valid pool")),
            _ => None,
        })
        .collect();
    let mut allocator = Allocator::new(pools);
    let mut addresses = BTreeMap::new();
    for object in &objects {
        let Object::Service(service) = object else {
            continue;
        };
        let policy = ClassPolicy::default();
        assert_eq!(
            service::responsibility(policy, service),
            Responsibility::Ours,
            "{service:?}"
        );
        let request = service::request(service).expect("a valid request");
        let allocation = allocator
            .allocate(&request, &BTreeMap::new())
            .unwrap_or_else(|error| panic!("{}: {error}", service_key(service)));
        addresses.insert(service_key(service), (allocation.ip, allocation.pool));
    }
    let at = |ip: [u8; 4], pool: &str| (Ipv4Addr::from(ip), Some(pool.to_owned()));
    assert_eq!(
        addresses,
        BTreeMap::from([
            ("edge/traefik".to_owned(), at([172, 16, 200, 20], "lan")),
            (
                "internal-dns/coredns-udp".to_owned(),
                at([172, 16, 200, 53], "dns")
            ),
            (
                "internal-dns/coredns-tcp".to_owned(),
                at([172, 16, 200, 53], "dns")
            ),
        ])
    );
}

fn chart_values() -> Value {
    let text = std::fs::read_to_string(helm::chart_dir().join("values.yaml")).expect("values");
    serde_yaml::from_str(&text).expect("values.yaml parses")
}

/// The first place `left` and `right` differ, as a path; `None` when equal.
fn first_difference(path: &str, left: &Value, right: &Value) -> Option<String> {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => l.keys().chain(r.keys()).find_map(|key| {
            let (a, b) = (
                l.get(key).unwrap_or(&Value::Null),
                r.get(key).unwrap_or(&Value::Null),
            );
            first_difference(&format!("{path}.{key}"), a, b)
        }),
        (Value::Array(l), Value::Array(r)) if l.len() == r.len() => l
            .iter()
            .zip(r)
            .enumerate()
            .find_map(|(index, (a, b))| first_difference(&format!("{path}[{index}]"), a, b)),
        (l, r) if l == r => None,
        (l, r) => Some(format!("{path}: {l} vs {r}")),
    }
}

/// An object's kind and name.
pub(super) type Key = (String, String);

/// Documents by kind and name.
pub(super) fn by_name(documents: &[Document]) -> BTreeMap<Key, Value> {
    documents
        .iter()
        .map(|d| ((d.kind().to_owned(), d.name().to_owned()), d.value.clone()))
        .collect()
}

/// Where the chart rendered by `helm template` with its defaults differs from
/// `plain`, object by object (the chart's side first).
pub(super) fn chart_difference(rendered: &[Document], plain: &[Document]) -> Option<String> {
    let (rendered, plain) = (by_name(rendered), by_name(plain));
    if rendered.keys().ne(plain.keys()) {
        return Some(format!(
            "objects: the chart renders {:?}, deploy/ has {:?}",
            rendered.keys().collect::<Vec<_>>(),
            plain.keys().collect::<Vec<_>>()
        ));
    }
    plain.iter().find_map(|(key, value)| {
        first_difference("", &rendered[key], value)
            .map(|difference| format!("{key:?}: the chart and deploy/ differ at {difference}"))
    })
}

#[test]
fn the_helm_chart_renders_the_plain_manifests() {
    let rendered = helm::template(NAMESPACE, &[]);
    objects::all_typed(&rendered);
    let mut plain = manifests();
    // Helm stores the release in its namespace before creating anything, so the
    // namespace comes from deploy/manifests/00-namespace.yaml (or --create-namespace).
    plain.retain(|document| document.kind() != "Namespace");
    assert_eq!(
        chart_values().get("namespace"),
        None,
        "no value can make the chart's namespace"
    );
    plain.extend(read_dir(&deploy_dir().join("crds")));
    assert_eq!(chart_difference(&rendered, &plain), None);

    // A different value anywhere shows, at its place.
    let retagged = helm::template(NAMESPACE, &["--set", "image.tag=0.0.9"]);
    let difference = chart_difference(&retagged, &plain).expect("another image");
    assert!(
        difference.contains(".spec.template.spec.containers[0].image:"),
        "{difference}"
    );
}

#[test]
fn the_helm_chart_creates_the_gossip_secret_only_when_given_the_key() {
    let key = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0";
    let rendered = by_name(&helm::template(
        NAMESPACE,
        &[
            "--set-string",
            &format!("gossip.key={key},gossip.secretName=lan-key"),
            "--set-string",
            "nodeSelector.xdplb\\.io/lan=true",
        ],
    ));
    assert!(!rendered.keys().any(|(kind, _)| kind == "Namespace"));
    let secret = &rendered[&("Secret".to_owned(), "lan-key".to_owned())];
    assert_eq!(secret["stringData"]["key"], key);
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let set = &rendered[&("DaemonSet".to_owned(), "xdplb-agent".to_owned())];
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"], json!({ "xdplb.io/lan": "true" }));
    assert_eq!(
        pod["volumes"][1]["projected"]["sources"][1]["secret"]["name"],
        "lan-key"
    );
    let set: DaemonSet = strict(set).expect("the DaemonSet still parses");
    assert_eq!(daemonset_problems(&set), Vec::<String>::new());
}

#[test]
fn helm_lint_strict_is_clean() {
    println!("{}", helm::lint());
}

/// Problems of the install guide's steps when a reader runs them in order: an object
/// created twice (which `kubectl create` and `helm install` refuse), a namespace or the
/// agents' Secret that no step up to this one made.
fn install_problems(commands: &[install_guide::Command]) -> Vec<String> {
    let effects: Vec<_> = commands
        .iter()
        .filter_map(|command| Some((command, command.effect()?)))
        .collect();
    let mut problems = Vec::new();
    for (index, (command, effect)) in effects.iter().enumerate() {
        let earlier = made_before(&effects[..index], command);
        let created = by_name(&effect.objects);
        let exists = |kind: &str, name: &str| {
            let key = (kind.to_owned(), name.to_owned());
            earlier.contains_key(&key) || created.contains_key(&key)
        };
        let at = format!("step {}: `{}`", command.step, command.line);
        for (key, value) in &created {
            if let Some(step) = earlier.get(key).filter(|_| !effect.updates_existing) {
                problems.push(format!("{at} creates {key:?}, which step {step} created"));
            }
            if let Some(namespace) = value["metadata"]["namespace"].as_str()
                && !exists("Namespace", namespace)
            {
                problems.push(format!(
                    "{at}: {key:?} in namespace {namespace}, not made yet"
                ));
            }
            if let Some(secret) = agents_secret(value)
                && !exists("Secret", secret)
            {
                problems.push(format!(
                    "{at}: the agents read Secret {secret}, not made yet"
                ));
            }
        }
    }
    problems
}

/// The objects of the `effects` a reader ran before `command`, with their step.
fn made_before<'a>(
    effects: &'a [(&install_guide::Command, install_guide::Effect)],
    command: &install_guide::Command,
) -> BTreeMap<Key, &'a str> {
    effects
        .iter()
        .filter(|(other, _)| command.follows(other))
        .flat_map(|(other, effect)| {
            by_name(&effect.objects)
                .into_keys()
                .map(|key| (key, other.step.as_str()))
        })
        .collect()
}

/// The Secret a DaemonSet's agents read their gossip key from.
fn agents_secret(object: &Value) -> Option<&str> {
    let volumes = object["spec"]["template"]["spec"]["volumes"].as_array()?;
    volumes
        .iter()
        .filter_map(|volume| volume["projected"]["sources"].as_array())
        .flatten()
        .find_map(|source| source["secret"]["name"].as_str())
}

#[test]
fn the_install_guides_steps_work_as_written() {
    let commands = install_guide::commands();
    for path in ["kubectl apply -f deploy/manifests/", "helm install "] {
        assert!(
            commands
                .iter()
                .any(|command| command.line.starts_with(path)),
            "docs/install.md documents `{path}`: {commands:#?}"
        );
    }
    assert_eq!(install_problems(&commands), Vec::<String>::new());

    // The defect this guards against: the key given to Helm after step 2 made the Secret.
    let mut twice = commands;
    let helm = twice
        .iter_mut()
        .find(|c| c.line.starts_with("helm "))
        .unwrap();
    helm.line
        .push_str(" --set-string gossip.key=c2VjcmV0LXNlY3JldC1zZWNyZXQ=");
    let problems = install_problems(&twice).join("\n");
    assert!(
        problems.contains("creates (\"Secret\", \"xdplb-gossip-key\"), which step 2 created"),
        "{problems}"
    );
}

/// The value at dotted `name` (`gossip.key`) of `values`.
fn value_at<'a>(values: &'a Value, name: &str) -> Option<&'a Value> {
    name.split('.')
        .try_fold(values, |value, key| value.get(key))
}

#[test]
fn every_value_the_install_guide_names_is_in_the_chart() {
    let values = chart_values();
    let names = install_guide::values();
    assert!(names.contains(&"gossip.secretName".to_owned()), "{names:?}");
    let unknown: Vec<&String> = names
        .iter()
        .filter(|name| value_at(&values, name).is_none())
        .collect();
    assert_eq!(unknown, Vec::<&String>::new(), "not in values.yaml");
}

/// Helm installs the CRD from the chart's crds/ (never templated), a copy of the
/// generated deploy/crds. `XDPLB_BLESS=1` refreshes the copy.
#[test]
fn the_charts_crds_are_the_generated_ones() {
    let deploy = deploy_dir();
    let generated = std::fs::read_to_string(deploy.join("crds/addresspools.yaml")).expect("crd");
    let copy = deploy.join("helm/xdplb/crds/addresspools.yaml");
    if std::env::var_os("XDPLB_BLESS").is_some() {
        std::fs::write(&copy, &generated).expect("write the chart's copy");
    }
    let copied = std::fs::read_to_string(&copy).unwrap_or_default();
    assert!(
        copied == generated,
        "{} differs from deploy/crds/addresspools.yaml: refresh it with \
         XDPLB_BLESS=1 cargo test -p lb-agent --test integration deploy::manifests \
         (or cp deploy/crds/addresspools.yaml deploy/helm/xdplb/crds/)",
        copy.display()
    );
}
