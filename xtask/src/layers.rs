//! The layer check of `lb-agent/src` (lint tier): no module imports from a layer above
//! its own.
//!
//! The layers are written down once, in `lb-agent/src/lib.rs`: each `// layer: NAME`
//! comment starts a layer, the `mod` declarations after it belong to it, and the
//! layers run bottom to top in the order they appear. A file belongs to the layer of
//! its top-level module (`sources/kubernetes/source.rs` to that of `sources`). Every
//! `crate::…` path in its code (a `use`, a `crate::{a, b::c}` group, or a path in an
//! expression) and every `super::…` path that climbs to the crate root names a
//! top-level module; naming one of a higher layer fails, with the file and line.
//!
//! The layer named `core` is pure besides: a file of it that names one of [`IO_CRATES`]
//! (`tokio::…`, `kube::…`, …) fails too, with the file and line.
//!
//! Not checked: comments (doc links may point anywhere), `$crate` in macros, the
//! binaries under `src/bin/` (they sit on top of everything), and test code (files
//! named `tests.rs` and what follows `#[cfg(test)] mod tests {`): a test may build its
//! inputs with the help of a higher layer.

use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// The crate whose layers are checked, relative to the workspace root.
const CRATE_SRC: &str = "lb-agent/src";
/// What starts a layer in lib.rs.
const MARKER: &str = "// layer:";
/// The layer that decides without doing I/O.
const PURE_LAYER: &str = "core";
/// The crates that do I/O (or are only there for it), which [`PURE_LAYER`] must not use.
pub const IO_CRATES: [&str; 5] = ["tokio", "aya", "kube", "k8s_openapi", "hyper"];

/// The layers of a crate, bottom first, and the top-level modules in each.
#[derive(Debug, PartialEq, Eq)]
pub struct Layers {
    names: Vec<String>,
    /// Top-level module -> index into `names`.
    modules: BTreeMap<String, usize>,
}

impl Layers {
    /// Reads the layers from lib.rs's text.
    pub fn parse(lib: &str) -> anyhow::Result<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut modules = BTreeMap::new();
        for (number, line) in lib.lines().enumerate() {
            let line = line.trim();
            if let Some(name) = line.strip_prefix(MARKER) {
                let name = ident(name.trim_start());
                if name.is_empty() {
                    bail!("lib.rs:{}: `{MARKER}` without a name", number + 1);
                }
                names.push(name.to_owned());
                continue;
            }
            let Some(module) = declared_module(line) else {
                continue;
            };
            if names.is_empty() {
                bail!(
                    "lib.rs:{}: module `{module}` is declared before the first `{MARKER}` line",
                    number + 1
                );
            }
            modules.insert(module.to_owned(), names.len() - 1);
        }
        if names.is_empty() {
            bail!("lib.rs has no `{MARKER}` lines: the layer order is not written down");
        }
        Ok(Self { names, modules })
    }

    fn layer(&self, module: &str) -> Option<usize> {
        self.modules.get(module).copied()
    }
}

/// `foo` for `pub mod foo;`, `pub(crate) mod foo;`, `mod foo;`.
fn declared_module(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("pub(crate) ")
        .or_else(|| line.strip_prefix("pub "))
        .unwrap_or(line);
    rest.strip_prefix("mod ")?.strip_suffix(';')
}

/// An import from a higher layer.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub file: PathBuf,
    pub line: usize,
    pub module: String,
    pub layer: String,
    pub imported: String,
    pub imported_layer: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` (layer {}) imports `crate::{}` (layer {}, above it)",
            self.file.display(),
            self.line,
            self.module,
            self.layer,
            self.imported,
            self.imported_layer
        )
    }
}

/// A use of a crate of [`IO_CRATES`] in the pure layer.
#[derive(Debug, PartialEq, Eq)]
pub struct IoUse {
    pub file: PathBuf,
    pub line: usize,
    pub module: String,
    pub krate: String,
}

impl fmt::Display for IoUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` (layer {PURE_LAYER}) uses `{}`, which does I/O; the {PURE_LAYER} \
             decides, a higher layer acts",
            self.file.display(),
            self.line,
            self.module,
            self.krate
        )
    }
}

/// The check as the lint tier runs it.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let src = root.join(CRATE_SRC);
    let lib = fs::read_to_string(src.join("lib.rs")).context("reading lib.rs")?;
    let layers = Layers::parse(&lib)?;
    let mut files = Vec::new();
    collect(&src, &mut files)?;
    files.sort();
    let mut problems = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("found under src");
        if relative == Path::new("lib.rs") || relative.starts_with("bin") {
            continue;
        }
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let shown = Path::new(CRATE_SRC).join(relative);
        match check_file(&layers, relative, &text) {
            Ok(violations) => problems.extend(violations.into_iter().map(|mut violation| {
                violation.file = shown.clone();
                violation.to_string()
            })),
            Err(error) => problems.push(format!("{}: {error}", shown.display())),
        }
        problems.extend(
            io_uses(&layers, relative, &text)
                .into_iter()
                .map(|mut used| {
                    used.file = shown.clone();
                    used.to_string()
                }),
        );
    }
    if problems.is_empty() {
        eprintln!(
            "layers: {CRATE_SRC} keeps its layer order ({})",
            layers.names.join(" -> ")
        );
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!(
        "{} import(s) from a higher layer, or use(s) of an I/O crate in the {PURE_LAYER}, in \
         {CRATE_SRC} (the order is in lib.rs)",
        problems.len()
    )
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    Ok(())
}

/// The module path of a file under src: `a/b.rs` and `a/b/mod.rs` are `["a", "b"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = path.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last);
        if stem != "mod" {
            path.push(stem.to_owned());
        }
    }
    path
}

/// The imports from a higher layer in one file (`relative` to src).
pub fn check_file(layers: &Layers, relative: &Path, text: &str) -> anyhow::Result<Vec<Violation>> {
    let module = module_path(relative);
    if module.last().is_some_and(|last| last == "tests") {
        return Ok(Vec::new());
    }
    let top = module.first().context("a file directly in src")?;
    let Some(own) = layers.layer(top) else {
        bail!("module `{top}` is in no layer: declare it under a `{MARKER}` line in lib.rs");
    };
    let mut violations = Vec::new();
    for (line, imported) in references(&code(text), module.len()) {
        let Some(layer) = layers.layer(&imported) else {
            continue;
        };
        if layer > own {
            violations.push(Violation {
                file: relative.to_path_buf(),
                line,
                module: top.clone(),
                layer: layers.names[own].clone(),
                imported,
                imported_layer: layers.names[layer].clone(),
            });
        }
    }
    Ok(violations)
}

/// The uses of [`IO_CRATES`] in one file (`relative` to src) of the pure layer; none
/// for a file of another layer or a test file.
pub fn io_uses(layers: &Layers, relative: &Path, text: &str) -> Vec<IoUse> {
    let module = module_path(relative);
    let layer = module.first().and_then(|top| layers.layer(top));
    let pure = layer.is_some_and(|layer| layers.names[layer] == PURE_LAYER);
    if !pure || module.last().is_some_and(|last| last == "tests") {
        return Vec::new();
    }
    let code = code(text);
    let mut found = Vec::new();
    for (number, line) in code.lines().enumerate() {
        let bytes = line.as_bytes();
        for (at, _) in line.match_indices("::") {
            let start = line[..at]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |before| before + 1);
            let after_path = start >= 2 && &bytes[start - 2..start] == b"::";
            let krate = &line[start..at];
            if !after_path && IO_CRATES.contains(&krate) {
                found.push(IoUse {
                    file: relative.to_path_buf(),
                    line: number + 1,
                    module: module[0].clone(),
                    krate: krate.to_owned(),
                });
            }
        }
    }
    found
}

/// The text with comments and the insides of string and char literals blanked
/// (newlines kept, so lines still count), and nothing after a `#[cfg(test)]` followed
/// by `mod tests {`.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut previous = "";
    let mut literal = Literal::None;
    for line in text.lines() {
        let trimmed = line.trim();
        if literal == Literal::None
            && previous == "#[cfg(test)]"
            && trimmed.starts_with("mod tests {")
        {
            break;
        }
        if !trimmed.is_empty() {
            previous = trimmed;
        }
        out.push_str(&blank(line, &mut literal));
        out.push('\n');
    }
    out
}

/// Inside which literal a line ends (strings may span lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Literal {
    None,
    Str,
    /// A raw string closed by `"` and this many `#`.
    Raw(usize),
}

/// `line` with its comment dropped and literal contents as spaces. ASCII only is
/// kept: what is blanked becomes one space per byte, so offsets stay.
fn blank(line: &str, literal: &mut Literal) -> String {
    let bytes = line.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match *literal {
            Literal::Str => {
                if byte == b'\\' {
                    out.extend_from_slice(b"  ");
                    index += 2;
                    continue;
                }
                if byte == b'"' {
                    *literal = Literal::None;
                }
            }
            Literal::Raw(hashes) => {
                let closing = bytes[index + 1..]
                    .iter()
                    .take_while(|&&b| b == b'#')
                    .count();
                if byte == b'"' && closing >= hashes {
                    *literal = Literal::None;
                    out.push(b'"');
                    out.extend(std::iter::repeat_n(b' ', hashes));
                    index += 1 + hashes;
                    continue;
                }
            }
            Literal::None => {
                let previous_ident = index > 0 && is_ident(bytes[index - 1]);
                if byte == b'/' && bytes.get(index + 1) == Some(&b'/') {
                    break;
                }
                if byte == b'"' {
                    *literal = Literal::Str;
                    out.push(b'"');
                    index += 1;
                    continue;
                }
                if byte == b'r' && !previous_ident {
                    let hashes = bytes[index + 1..]
                        .iter()
                        .take_while(|&&b| b == b'#')
                        .count();
                    if bytes.get(index + 1 + hashes) == Some(&b'"') {
                        *literal = Literal::Raw(hashes);
                        out.extend(std::iter::repeat_n(b' ', 2 + hashes));
                        index += 2 + hashes;
                        continue;
                    }
                }
                if byte == b'\'' {
                    // A char literal ('x', '\n', '"'); a lifetime has no closing quote.
                    let length = match bytes.get(index + 1) {
                        Some(b'\\') => bytes[index + 2..]
                            .iter()
                            .position(|&b| b == b'\'')
                            .map(|end| end + 3),
                        Some(_) if bytes.get(index + 2) == Some(&b'\'') => Some(3),
                        _ => None,
                    };
                    if let Some(length) = length {
                        out.extend(std::iter::repeat_n(b' ', length));
                        index += length;
                        continue;
                    }
                }
                out.push(if byte.is_ascii() { byte } else { b' ' });
                index += 1;
                continue;
            }
        }
        out.push(b' ');
        index += 1;
    }
    String::from_utf8(out).expect("ASCII only")
}

/// The top-level modules `code` names, with the line of each: after `crate::`
/// (one, or each of a `{…}` group) and after as many `super::` as climb from a module
/// `depth` deep to the crate root.
fn references(code: &str, depth: usize) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let rest = &code[index..];
        let boundary = index == 0 || !is_ident(bytes[index - 1]);
        let mut supers = 0;
        let mut cursor = index;
        if boundary && rest.starts_with("crate::") && (index == 0 || bytes[index - 1] != b'$') {
            cursor += "crate::".len();
        } else if boundary && rest.starts_with("super::") {
            while code[cursor..].starts_with("super::") {
                supers += 1;
                cursor += "super::".len();
            }
            if supers < depth {
                index = cursor;
                continue;
            }
        } else {
            index += 1;
            continue;
        }
        let line = code[..index].matches('\n').count() + 1;
        if code[cursor..].starts_with('{') {
            let (items, end) = group(code, cursor);
            for (offset, item) in items {
                let line = line + code[cursor..offset].matches('\n').count();
                found.push((line, item));
            }
            index = end;
        } else {
            let name = ident(&code[cursor..]);
            if !name.is_empty() {
                found.push((line, name.to_owned()));
            }
            index = cursor + name.len().max(1);
        }
    }
    found
}

/// The first segment of each item of the `{…}` group opening at `open`, with the byte
/// offset of each, and the offset after the closing brace.
fn group(code: &str, open: usize) -> (Vec<(usize, String)>, usize) {
    let bytes = code.as_bytes();
    let mut items = Vec::new();
    let mut depth = 0;
    let mut expect_item = true;
    let mut index = open;
    while index < bytes.len() {
        match bytes[index] {
            b'{' => {
                depth += 1;
                expect_item = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return (items, index + 1);
                }
            }
            b',' if depth == 1 => expect_item = true,
            byte if expect_item && depth == 1 && is_ident(byte) => {
                let name = ident(&code[index..]);
                if name != "self" {
                    items.push((index, name.to_owned()));
                }
                expect_item = false;
                index += name.len();
                continue;
            }
            _ => {}
        }
        index += 1;
    }
    (items, bytes.len())
}

fn ident(text: &str) -> &str {
    let end = text
        .bytes()
        .position(|byte| !is_ident(byte))
        .unwrap_or(text.len());
    &text[..end]
}

fn is_ident(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB: &str = "\
//! A crate.

// layer: core. What is pure.
pub mod model;
pub(crate) mod wire;
// layer: adapters
pub mod dataplane;
// layer: runtime
pub mod runtime;

#[cfg(test)]
mod fixtures;
";

    fn layers() -> Layers {
        Layers::parse(LIB).expect("valid layers")
    }

    fn check(path: &str, text: &str) -> Vec<String> {
        check_file(&layers(), Path::new(path), text)
            .expect("a file in a layer")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn lib_rs_declares_the_layers_bottom_first() {
        let layers = layers();
        assert_eq!(layers.names, ["core", "adapters", "runtime"]);
        assert_eq!(layers.layer("model"), Some(0));
        assert_eq!(layers.layer("wire"), Some(0));
        assert_eq!(layers.layer("dataplane"), Some(1));
        assert_eq!(layers.layer("runtime"), Some(2));
        // Declared after the last marker: the top layer.
        assert_eq!(layers.layer("fixtures"), Some(2));
    }

    #[test]
    fn a_module_before_the_first_marker_or_no_marker_is_refused() {
        let error = Layers::parse("pub mod model;\n// layer: core\n").expect_err("refused");
        assert!(
            error.to_string().contains("lib.rs:1: module `model`"),
            "{error}"
        );
        let error = Layers::parse("pub mod model;\n").expect_err("refused");
        assert!(error.to_string().contains("lib.rs:1"), "{error}");
        let error = Layers::parse("//! Nothing.\n").expect_err("refused");
        assert!(error.to_string().contains("not written down"), "{error}");
    }

    #[test]
    fn an_upward_use_is_named_with_its_file_and_line() {
        let text = "//! The model.\n\nuse std::fmt;\n\nuse crate::dataplane::Dataplane;\n";
        assert_eq!(
            check("model/tables.rs", text),
            [
                "model/tables.rs:5: `model` (layer core) imports `crate::dataplane` \
              (layer adapters, above it)"
            ]
        );
    }

    #[test]
    fn downward_and_same_layer_imports_pass() {
        let text = "use crate::{model::State, wire};\nuse super::maps::Maps;\n";
        assert!(check("dataplane/engine.rs", text).is_empty());
        assert!(check("runtime/mod.rs", "use crate::dataplane::Engine;\n").is_empty());
    }

    #[test]
    fn each_item_of_a_group_is_checked_on_its_own_line() {
        let text =
            "use crate::{\n    model::{self, State},\n    runtime::Plan,\n    dataplane,\n};\n";
        assert_eq!(
            check("wire.rs", text),
            [
                "wire.rs:3: `wire` (layer core) imports `crate::runtime` (layer runtime, above it)",
                "wire.rs:4: `wire` (layer core) imports `crate::dataplane` (layer adapters, above it)",
            ]
        );
    }

    #[test]
    fn paths_in_expressions_count() {
        let text = "fn f() {\n    let x = crate::runtime::start();\n}\n";
        assert_eq!(check("model.rs", text).len(), 1);
    }

    #[test]
    fn super_climbing_to_the_crate_root_counts_and_within_a_module_does_not() {
        // model.rs is one deep: its `super` is the crate root.
        assert_eq!(check("model.rs", "use super::runtime::Plan;\n").len(), 1);
        // model/tables.rs is two deep: one `super` stays in `model`.
        assert!(check("model/tables.rs", "use super::runtime;\n").is_empty());
        assert_eq!(
            check("model/tables.rs", "use super::super::runtime;\n").len(),
            1
        );
    }

    #[test]
    fn comments_strings_macros_and_tests_are_not_imports() {
        let text = "\
//! See [`crate::runtime`].
/// Like [`crate::dataplane::Engine`].
const URL: &str = \"http://crate::runtime\"; // crate::runtime
macro_rules! m { () => { $crate::runtime::x() }; }

#[cfg(test)]
mod tests {
    use crate::runtime::Plan;
}
";
        assert!(
            check("model.rs", text).is_empty(),
            "{:?}",
            check("model.rs", text)
        );
        assert!(check("model/tests.rs", "use crate::runtime::Plan;\n").is_empty());
    }

    fn io(path: &str, text: &str) -> Vec<String> {
        io_uses(&layers(), Path::new(path), text)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_core_using_a_crate_that_does_io_is_named_with_its_file_and_line() {
        let text = "//! Pools.\n\nuse std::fmt;\nuse kube::core::Selector;\n\nfn f() {\n    tokio::spawn(g());\n}\n";
        assert_eq!(
            io("model/pool.rs", text),
            [
                "model/pool.rs:4: `model` (layer core) uses `kube`, which does I/O; the core \
                 decides, a higher layer acts",
                "model/pool.rs:7: `model` (layer core) uses `tokio`, which does I/O; the core \
                 decides, a higher layer acts",
            ]
        );
        for krate in IO_CRATES {
            assert_eq!(
                io("wire.rs", &format!("use {krate}::X;\n")).len(),
                1,
                "{krate}"
            );
        }
    }

    #[test]
    fn other_layers_tests_and_lookalikes_may_use_them() {
        let text = "use tokio::sync::watch;\nuse kube::Api;\n";
        assert!(io("dataplane/engine.rs", text).is_empty());
        assert!(io("model/tests.rs", text).is_empty());
        let lookalikes = "//! Unlike [`kube::Api`].\nuse aya_log::X;\nuse crate::kube::Y;\nconst S: &str = \"tokio::x\";\n#[cfg(test)]\nmod tests {\n    use tokio::test;\n}\n";
        assert!(
            io("model.rs", lookalikes).is_empty(),
            "{:?}",
            io("model.rs", lookalikes)
        );
    }

    #[test]
    fn a_module_in_no_layer_is_refused() {
        let error = check_file(&layers(), Path::new("extra/mod.rs"), "").expect_err("in no layer");
        assert!(
            error.to_string().contains("module `extra` is in no layer"),
            "{error}"
        );
    }

    #[test]
    fn the_agent_keeps_its_layer_order() {
        super::check(&crate::test::workspace_root())
            .expect("no upward import in lb-agent/src, no I/O crate in its core");
    }
}
