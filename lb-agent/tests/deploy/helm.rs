//! Enough of Helm's template language to render deploy/helm/xdplb without a helm
//! binary: `{{ .Values.a.b }}` and `{{ .Release.Namespace }}`, the pipeline functions
//! `toYaml`, `quote`, `indent` and `nindent`, `{{ if }}`/`{{ else }}`/`{{ end }}`,
//! `{{- `/` -}}` whitespace trimming and `{{/* comments */}}`. Anything else is an
//! error, so a template that grows beyond this subset fails the test instead of
//! rendering wrongly. A missing value is an error too (Helm would print nothing).

use serde_json::Value;

#[derive(Debug)]
enum Node {
    Text(String),
    Output(String),
    If {
        condition: String,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

/// Text and actions, with `{{-` and `-}}` trimming applied to the text.
fn lex(template: &str) -> Result<Vec<(bool, String)>, String> {
    let mut tokens: Vec<(bool, String)> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let mut action = &after[..end];
        if let Some(trimmed) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = trimmed;
        }
        trim_next = false;
        if let Some(trimmed) = action.strip_suffix(" -") {
            trim_next = true;
            action = trimmed;
        }
        tokens.push((false, text.to_owned()));
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            tokens.push((true, action.to_owned()));
        }
        rest = &after[end + 2..];
    }
    tokens.push((
        false,
        if trim_next { rest.trim_start() } else { rest }.to_owned(),
    ));
    Ok(tokens)
}

/// Nodes up to an `else` or `end` (returned with them), or the end of input.
fn parse(
    tokens: &mut std::vec::IntoIter<(bool, String)>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some((is_action, text)) = tokens.next() {
        if !is_action {
            nodes.push(Node::Text(text));
            continue;
        }
        if text == "end" || text == "else" {
            return Ok((nodes, Some(text)));
        }
        if let Some(condition) = text.strip_prefix("if ") {
            let (then, closer) = parse(tokens)?;
            let otherwise = match closer.as_deref() {
                Some("end") => Vec::new(),
                Some("else") => match parse(tokens)? {
                    (otherwise, Some(end)) if end == "end" => otherwise,
                    _ => return Err(format!("`if {condition}`: else without end")),
                },
                _ => return Err(format!("`if {condition}` without end")),
            };
            nodes.push(Node::If {
                condition: condition.trim().to_owned(),
                then,
                otherwise,
            });
            continue;
        }
        nodes.push(Node::Output(text));
    }
    Ok((nodes, None))
}

fn lookup(context: &Value, path: &str) -> Result<Value, String> {
    let mut value = context;
    for key in path.trim_start_matches('.').split('.') {
        value = value
            .get(key)
            .ok_or_else(|| format!("`{path}` has no value"))?;
    }
    Ok(value.clone())
}

fn argument(context: &Value, word: &str) -> Result<Value, String> {
    if word.starts_with('.') {
        return lookup(context, word);
    }
    word.parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("unsupported argument `{word}`"))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn indent(width: &Value, value: &Value) -> Result<String, String> {
    let width = width
        .as_u64()
        .and_then(|width| usize::try_from(width).ok())
        .ok_or("indent needs a width")?;
    let pad = " ".repeat(width);
    Ok(format!(
        "{pad}{}",
        text(value).replace('\n', &format!("\n{pad}"))
    ))
}

fn call(function: &str, args: &[Value]) -> Result<Value, String> {
    let text = match (function, args) {
        ("toYaml", [value]) => serde_yaml::to_string(value)
            .map_err(|error| error.to_string())?
            .trim_end_matches('\n')
            .to_owned(),
        ("quote", [value]) => serde_json::to_string(&text(value)).expect("a string encodes"),
        ("indent", [width, value]) => indent(width, value)?,
        ("nindent", [width, value]) => format!("\n{}", indent(width, value)?),
        _ => {
            return Err(format!(
                "unsupported function `{function}` with {} arguments",
                args.len()
            ));
        }
    };
    Ok(Value::String(text))
}

/// Evaluates a pipeline: `.Path | fn args | ...` or `fn args | ...`.
fn pipeline(context: &Value, source: &str) -> Result<Value, String> {
    let mut value: Option<Value> = None;
    for command in source.split('|') {
        let words: Vec<&str> = command.split_whitespace().collect();
        let Some((head, rest)) = words.split_first() else {
            return Err(format!("empty command in `{source}`"));
        };
        let mut args = rest
            .iter()
            .map(|word| argument(context, word))
            .collect::<Result<Vec<_>, _>>()?;
        value = Some(
            if head.starts_with('.') && rest.is_empty() && value.is_none() {
                lookup(context, head)?
            } else {
                args.extend(value.take());
                call(head, &args)?
            },
        );
    }
    value.ok_or_else(|| format!("empty action `{source}`"))
}

/// Go templates' truth: false, 0, null and empty strings, lists and maps are false.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(value) => *value,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

fn evaluate(nodes: &[Node], context: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Output(source) => out.push_str(&text(&pipeline(context, source)?)),
            Node::If {
                condition,
                then,
                otherwise,
            } => {
                let branch = if truthy(&pipeline(context, condition)?) {
                    then
                } else {
                    otherwise
                };
                evaluate(branch, context, out)?;
            }
        }
    }
    Ok(())
}

/// `template` rendered with `values` in release namespace `namespace`.
pub fn render(template: &str, values: &Value, namespace: &str) -> Result<String, String> {
    let context = serde_json::json!({
        "Values": values,
        "Release": { "Namespace": namespace, "Name": "xdplb" },
    });
    let mut tokens = lex(template)?.into_iter();
    let (nodes, closer) = parse(&mut tokens)?;
    if let Some(closer) = closer {
        return Err(format!("`{closer}` without if"));
    }
    let mut out = String::new();
    evaluate(&nodes, &context, &mut out)?;
    Ok(out)
}

/// Values with `overrides` merged in (maps merge key by key, anything else replaces).
pub fn merge(values: &mut Value, overrides: &Value) {
    match (values, overrides) {
        (Value::Object(values), Value::Object(overrides)) => {
            for (key, value) in overrides {
                merge(values.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (values, overrides) => *values = overrides.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_the_subset_the_chart_uses() {
        let values = json!({
            "name": "agent",
            "list": [{ "key": "a", "effect": "NoSchedule" }],
            "empty": {},
            "on": true,
            "text": "line1\nline2\n",
        });
        let template = "\
a: {{ .Values.name }}
b: {{ .Values.name | quote }}
list:
  {{- toYaml .Values.list | nindent 2 }}
{{- if .Values.empty }}
empty: here
{{- else }}
empty: no
{{- end }}
{{- if .Values.on }}
on: yes {{/* a comment */}}
{{- end }}
block: |
{{ .Values.text | indent 2 }}
ns: {{ .Release.Namespace }}
";
        let rendered = render(template, &values, "xdplb-system").expect("renders");
        assert_eq!(
            rendered,
            "a: agent\nb: \"agent\"\nlist:\n  - effect: NoSchedule\n    key: a\nempty: no\non: yes \nblock: |\n  line1\n  line2\n  \nns: xdplb-system\n"
        );
    }

    #[test]
    fn anything_else_is_an_error() {
        let values = json!({ "name": "agent" });
        for (template, error) in [
            ("{{ .Values.nmae }}", "`.Values.nmae` has no value"),
            ("{{ .Values.name | upper }}", "unsupported function `upper`"),
            ("{{ if .Values.name }}x", "without end"),
            ("{{ end }}", "`end` without if"),
            ("{{ .Values.name", "unclosed"),
            ("{{ include \"x\" . }}", "unsupported argument"),
        ] {
            let message = render(template, &values, "ns").expect_err(template);
            assert!(message.contains(error), "{template}: {message}");
        }
    }
}
