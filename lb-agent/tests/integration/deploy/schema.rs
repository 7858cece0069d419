//! A reader of a CRD's structural OpenAPI v3 schema, strict as the API server is with
//! `fieldValidation=Strict`: objects as the schema's types say, no field it does not
//! know, `required`, `enum`, `pattern`, `minLength`, `minimum`/`maximum` and the
//! int-or-string `anyOf`. An object schema without `properties` or
//! `additionalProperties` (`metadata`, and the subtrees cut from the vendored excerpts)
//! takes any object, as upstream's `metadata: {type: object}` does. CEL rules
//! (`x-kubernetes-validations`) are not evaluated.

use std::path::Path;

use serde_json::Value;

use super::objects::{documents, repo_dir};

/// The `openAPIV3Schema` of version `version` of the CRD in `file` (relative to the
/// repository).
pub fn crd_schema(file: &str, version: &str) -> Value {
    let path = repo_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let crd = documents(&display(&path), &text)
        .unwrap_or_else(|error| panic!("{error}"))
        .remove(0)
        .value;
    crd["spec"]["versions"]
        .as_array()
        .and_then(|versions| versions.iter().find(|v| v["name"] == version))
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap_or_else(|| panic!("{file} has no version {version}"))
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Every way `value` breaks `schema`, each with its path.
pub fn problems(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check("", schema, value, &mut problems);
    problems
}

fn check(path: &str, schema: &Value, value: &Value, problems: &mut Vec<String>) {
    if let Some(alternatives) = schema["anyOf"].as_array() {
        let fits = alternatives
            .iter()
            .any(|alternative| problems_of(alternative, value).is_empty());
        if !fits {
            problems.push(format!("{path}: {value} fits none of {alternatives:?}"));
        }
    }
    if let Some(kind) = schema["type"].as_str()
        && !has_type(value, kind)
    {
        problems.push(format!("{path}: {value} is not of type {kind}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        problems.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    match value {
        Value::String(text) => check_string(path, schema, text, problems),
        Value::Number(number) => {
            let number = number.as_f64().unwrap_or(f64::NAN);
            if schema["minimum"].as_f64().is_some_and(|min| number < min)
                || schema["maximum"].as_f64().is_some_and(|max| number > max)
            {
                problems.push(format!("{path}: {number} is out of range"));
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                check(
                    &format!("{path}[{index}]"),
                    &schema["items"],
                    item,
                    problems,
                );
            }
        }
        Value::Object(fields) => check_object(path, schema, fields, problems),
        Value::Null | Value::Bool(_) => {}
    }
}

fn problems_of(schema: &Value, value: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    check("", schema, value, &mut problems);
    problems
}

fn has_type(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => false,
    }
}

fn check_string(path: &str, schema: &Value, text: &str, problems: &mut Vec<String>) {
    if let Some(pattern) = schema["pattern"].as_str() {
        let regex = regex::Regex::new(pattern)
            .unwrap_or_else(|error| panic!("{path}: the schema's pattern {pattern}: {error}"));
        if !regex.is_match(text) {
            problems.push(format!("{path}: {text:?} does not match {pattern}"));
        }
    }
    if schema["minLength"]
        .as_u64()
        .is_some_and(|min| (text.chars().count() as u64) < min)
    {
        problems.push(format!("{path}: {text:?} is too short"));
    }
}

fn check_object(
    path: &str,
    schema: &Value,
    fields: &serde_json::Map<String, Value>,
    problems: &mut Vec<String>,
) {
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap_or_default();
        if !fields.contains_key(name) {
            problems.push(format!("{path}: required field {name} missing"));
        }
    }
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties");
    if properties.is_none() && additional.is_none() {
        return;
    }
    for (name, value) in fields {
        let inner = format!("{path}.{name}");
        match (properties.and_then(|p| p.get(name)), additional) {
            (Some(field), _) => check(&inner, field, value, problems),
            (None, Some(additional)) => check(&inner, additional, value, problems),
            (None, None) => problems.push(format!("{inner}: unknown field")),
        }
    }
}

#[test]
fn the_reader_finds_what_the_api_server_would_refuse() {
    let schema = crd_schema(
        "lb-agent/tests/fixtures/prometheus-operator/podmonitors.yaml",
        "v1",
    );
    let valid = serde_json::json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": { "name": "x", "labels": { "a": "b" } },
        "spec": {
            "selector": { "matchLabels": { "app": "x" } },
            "podMetricsEndpoints": [{ "port": "http", "interval": "30s",
                "relabelings": [{ "sourceLabels": ["a"], "targetLabel": "b" }] }],
        },
    });
    assert_eq!(problems(&schema, &valid), Vec::<String>::new());
    for (pointer, bad, expected) in [
        (
            "/spec/podMetricsEndpoints/0/portt",
            Value::from("http"),
            "unknown field",
        ),
        (
            "/spec/podMetricsEndpoints/0/interval",
            Value::from("30 s"),
            "does not match",
        ),
        (
            "/spec/podMetricsEndpoints/0/scheme",
            Value::from("ftp"),
            "is not one of",
        ),
        (
            "/spec/podMetricsEndpoints/0/portNumber",
            Value::from(70000),
            "out of range",
        ),
        (
            "/spec/podMetricsEndpoints/0/honorLabels",
            Value::from("yes"),
            "not of type boolean",
        ),
        (
            "/spec/selector/matchLabels/app",
            Value::from(1),
            "not of type string",
        ),
        (
            "/spec/podMetricsEndpoints/0/targetPort",
            Value::from(true),
            "fits none",
        ),
    ] {
        let mut broken = valid.clone();
        let (parent, field) = pointer.rsplit_once('/').expect("pointer");
        broken
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .expect("parent object")
            .insert(field.to_owned(), bad);
        let found = problems(&schema, &broken).join("; ");
        assert!(
            found.contains(expected),
            "{pointer}: expected {expected:?}, got {found:?}"
        );
    }
    let mut no_selector = valid.clone();
    no_selector["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("selector");
    assert!(
        problems(&schema, &no_selector)
            .join(";")
            .contains("required field selector")
    );
}
