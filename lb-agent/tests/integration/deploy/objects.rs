//! Reading deploy/: every YAML document into its Kubernetes type, strictly.
//!
//! The k8s-openapi types skip fields they do not know, so a typo (`hostNetwrk: true`)
//! would parse and silently do nothing. Each document is therefore parsed, written back,
//! and compared with what the file says: any field that does not survive the round trip
//! is unknown to the type or has the wrong shape, and fails.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use lb_agent::apis::address_pool::AddressPool;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// The repository's root.
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    repo_dir().join("deploy")
}

/// One manifest, typed.
#[derive(Clone, Debug)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    Role(Role),
    RoleBinding(RoleBinding),
    ConfigMap(ConfigMap),
    Secret(Secret),
    DaemonSet(Box<DaemonSet>),
    Service(Service),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    AddressPool(AddressPool),
}

/// A document as written, with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    pub origin: String,
    pub value: Value,
}

impl Document {
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.kind(), self.name(), self.origin)
    }
}

/// The non-empty documents of YAML `text`, named after `origin`.
pub fn documents(origin: &str, text: &str) -> Result<Vec<Document>, String> {
    let mut documents = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = format!("{origin}, document {}", index + 1);
        let value: Value = serde::Deserialize::deserialize(document)
            .map_err(|error| format!("{origin}: not YAML: {error}"))?;
        if !value.is_null() {
            documents.push(Document { origin, value });
        }
    }
    Ok(documents)
}

/// Every document of every `.yaml` file directly in `dir`, in file name order.
pub fn read_dir(dir: &Path) -> Vec<Document> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no YAML file", dir.display());
    files
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).expect("read manifest");
            documents(&path.display().to_string(), &text).unwrap_or_else(|error| panic!("{error}"))
        })
        .collect()
}

/// Where `written` has something `parsed` lost: a field the type does not know or a
/// value of another shape. `null`s count as absent.
fn lost(path: &str, written: &Value, parsed: &Value, problems: &mut Vec<String>) {
    match (written, parsed) {
        (Value::Null, _) => {}
        (Value::Object(written), Value::Object(parsed)) => {
            for (key, value) in written {
                let inner = format!("{path}.{key}");
                match parsed.get(key) {
                    Some(parsed) => lost(&inner, value, parsed, problems),
                    None if value.is_null() => {}
                    None => problems.push(format!("{inner}: unknown field")),
                }
            }
        }
        (Value::Array(written), Value::Array(parsed)) if written.len() == parsed.len() => {
            for (index, (written, parsed)) in written.iter().zip(parsed).enumerate() {
                lost(&format!("{path}[{index}]"), written, parsed, problems);
            }
        }
        (written, parsed) if written == parsed => {}
        (written, parsed) => problems.push(format!("{path}: {written} reads as {parsed}")),
    }
}

/// `value` as `T`, refusing unknown fields and values the type reads differently.
pub fn strict<T: DeserializeOwned + Serialize>(value: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|error| error.to_string())?;
    let parsed = serde_json::to_value(&typed).map_err(|error| error.to_string())?;
    let mut problems = Vec::new();
    lost("", value, &parsed, &mut problems);
    if problems.is_empty() {
        Ok(typed)
    } else {
        Err(problems.join("; "))
    }
}

/// The document as its type, by `apiVersion` and `kind`.
pub fn typed(document: &Document) -> Result<Object, String> {
    let value = &document.value;
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    let object = match (api_version, document.kind()) {
        ("v1", "Namespace") => strict(value).map(Object::Namespace),
        ("v1", "ServiceAccount") => strict(value).map(Object::ServiceAccount),
        ("v1", "ConfigMap") => strict(value).map(Object::ConfigMap),
        ("v1", "Secret") => strict(value).map(Object::Secret),
        ("v1", "Service") => strict(value).map(Object::Service),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict(value).map(Object::ClusterRole),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            strict(value).map(Object::ClusterRoleBinding)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => strict(value).map(Object::Role),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => strict(value).map(Object::RoleBinding),
        ("apps/v1", "DaemonSet") => strict(value).map(|ds| Object::DaemonSet(Box::new(ds))),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            strict(value).map(|crd| Object::CustomResourceDefinition(Box::new(crd)))
        }
        ("xdplb.io/v1alpha1", "AddressPool") => strict(value).map(Object::AddressPool),
        (api_version, kind) => Err(format!("unexpected kind {kind} ({api_version})")),
    };
    object.map_err(|error| format!("{document}: {error}"))
}

/// Every document of `documents`, typed; panics naming each that fails.
pub fn all_typed(documents: &[Document]) -> Vec<Object> {
    let (objects, errors): (Vec<_>, Vec<_>) = documents.iter().map(typed).partition(Result::is_ok);
    let errors: Vec<String> = errors.into_iter().filter_map(Result::err).collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    objects.into_iter().filter_map(Result::ok).collect()
}
