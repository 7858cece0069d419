//! A Kubernetes `LabelSelector` (as a pool's `namespaceSelector` and `serviceSelector`
//! are written) compiled into the IPAM's [`Selector`], refused as kube-rs refuses it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use crate::ipam::{
    PoolError,
    selector::{Requirement, Selector},
};

/// `selector` compiled, or why it cannot be (`field` names it).
pub(crate) fn compile(
    field: &'static str,
    selector: Option<LabelSelector>,
) -> Result<Option<Selector>, PoolError> {
    let Some(selector) = selector else {
        return Ok(None);
    };
    let equal = selector
        .match_labels
        .into_iter()
        .flatten()
        .map(|(key, value)| Requirement::Equals { key, value });
    let expressions = selector
        .match_expressions
        .into_iter()
        .flatten()
        .map(|expression| {
            requirement(expression).map_err(|problem| PoolError::Selector {
                field,
                problem: problem.to_owned(),
            })
        });
    Ok(Some(Selector(
        equal.map(Ok).chain(expressions).collect::<Result<_, _>>()?,
    )))
}

fn requirement(expression: LabelSelectorRequirement) -> Result<Requirement, &'static str> {
    let key = expression.key;
    let values = expression
        .values
        .map(|values| values.into_iter().collect())
        .ok_or("Expected values for In operator, got none");
    match expression.operator.as_str() {
        "In" => Ok(Requirement::In {
            key,
            values: values?,
        }),
        "NotIn" => Ok(Requirement::NotIn {
            key,
            values: values?,
        }),
        "Exists" => Ok(Requirement::Exists(key)),
        "DoesNotExist" => Ok(Requirement::DoesNotExist(key)),
        _ => Err("Invalid expression operator"),
    }
}
