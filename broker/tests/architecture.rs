//! Architecture invariants of the broker crate (docs/ARCHITECTURE.md), checked on the source:
//! the core, storage, groups, topics and the shared network layer name no wire format (neither
//! the native protocol's prost types, `tidelog_proto::pb`, nor prost itself, nor the Kafka
//! codec crate), and the core names no listener.
//!
//! The check reads each file with comments, string and char literals removed, then looks at
//! every path: `use` trees (including groups and renames: `use tidelog_proto::{self as p,
//! pb}`) and paths in expressions and types (`tidelog_proto::pb::Request`, `pb::ErrorCode`,
//! `::kafka_protocol::…`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// Directories and files (relative to `broker/src`) that must name no wire format.
const WIRE_FREE: &[&str] = &[
    "core",
    "storage",
    "groups",
    "topics",
    "topics.rs",
    "net",
    "metadata.rs",
    "maintenance.rs",
    "cleaner",
    "resources.rs",
    "clock.rs",
];

/// Paths (relative to `broker/src`) that must name no listener.
const LISTENER_FREE: &[&str] = &["core", "net", "maintenance.rs", "cleaner"];

/// Crates no wire-free module may name at all.
const FORBIDDEN_CRATES: &[&str] = &["kafka_protocol", "prost"];

/// Modules of this crate a listener-free module may not name.
const LISTENER_MODULES: &[&str] = &["native", "kafka"];

#[test]
fn core_storage_groups_and_topics_name_no_wire_format() {
    let mut violations = Vec::new();
    for file in rust_files(WIRE_FREE) {
        let source = fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for found in wire_format_paths(&source) {
            violations.push(format!("{}: {found}", file.display()));
        }
    }
    assert!(
        violations.is_empty(),
        "wire-format types named outside the front ends:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_core_names_no_listener() {
    let mut violations = Vec::new();
    for file in rust_files(LISTENER_FREE) {
        let source = fs::read_to_string(&file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
        for found in listener_paths(&source) {
            violations.push(format!("{}: {found}", file.display()));
        }
    }
    assert!(
        violations.is_empty(),
        "a listener named by the core or the shared network layer:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checks_see_every_way_of_naming_a_wire_type() {
    let caught = [
        "use tidelog_proto::pb;",
        "use tidelog_proto::pb::{self, ErrorCode};",
        "use tidelog_proto::{batch::BatchIter, pb};",
        "use tidelog_proto::{\n    batch,\n    pb::ErrorCode,\n};",
        "use tidelog_proto::{pb as wire};",
        "use ::tidelog_proto :: pb;",
        "fn f() -> tidelog_proto::pb::Request { todo!() }",
        "fn f(code: pb::ErrorCode) {}",
        "let x = pb :: ErrorCode::None;",
        "use kafka_protocol::messages::ProduceRequest;",
        "fn f(x: ::kafka_protocol::ResponseHeader) {}",
        "use prost::Message;",
        "extern crate prost;",
        "use tidelog_proto::*;",
    ];
    for source in caught {
        assert!(!wire_format_paths(source).is_empty(), "missed: {source}");
    }
    let clean = [
        "use tidelog_proto::batch::{BatchIter, RecordBatch};",
        "use tidelog_proto::BatchError;",
        "// a comment naming tidelog_proto::pb and kafka_protocol\nfn f() {}",
        "/* block comment: use prost::Message; */ fn f() {}",
        "let s = \"pb::ErrorCode in a string\";",
        "let s = r#\"use kafka_protocol\"#;",
        "let pbx = 1; let y = pbx::z;",
        "let c = 'p'; let b = b'\"';",
        "use tidelog_proto::batch::NO_PRODUCER_ID;",
    ];
    for source in clean {
        assert_eq!(
            wire_format_paths(source),
            Vec::<String>::new(),
            "false alarm: {source}"
        );
    }
    assert!(!listener_paths("use crate::native::error;").is_empty());
    assert!(!listener_paths("use crate::{core, kafka::dispatch};").is_empty());
    assert!(!listener_paths("fn f(x: &crate::native::ListenerState) {}").is_empty());
    assert!(!listener_paths("use super::super::native;").is_empty());
    assert!(listener_paths("use crate::net::budget::ConnectionBudget;").is_empty());
    assert!(listener_paths("// crate::native is a front end").is_empty());
}

/// Every `.rs` file under the given paths (relative to `broker/src`). A path that does not
/// exist fails the test, so a rename cannot silently drop a directory from the check.
fn rust_files(roots: &[&str]) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for root in roots {
        let path = src.join(root);
        assert!(
            path.exists(),
            "{} does not exist: update the architecture test",
            path.display()
        );
        collect(&path, &mut files);
    }
    assert!(files.len() >= roots.len(), "too few files found: {files:?}");
    files
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = fs::read_dir(path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            collect(&entry, files);
        }
    } else if path.extension().is_some_and(|extension| extension == "rs") {
        files.push(path.to_path_buf());
    }
}

/// Each wire-format path in `source`, as written (whitespace normalised).
fn wire_format_paths(source: &str) -> Vec<String> {
    let paths = paths(&tokens(&strip(source)));
    paths
        .into_iter()
        .filter(|path| names_wire_format(path))
        .map(|path| path.join("::"))
        .collect()
}

/// Each path in `source` that names a listener module of this crate.
fn listener_paths(source: &str) -> Vec<String> {
    let paths = paths(&tokens(&strip(source)));
    paths
        .into_iter()
        .filter(|path| {
            let start = path
                .iter()
                .position(|segment| !matches!(segment.as_str(), "crate" | "super" | "self"))
                .unwrap_or(path.len());
            // Only paths through this crate (`crate::`, `super::`) name its modules.
            start > 0
                && path
                    .get(start)
                    .is_some_and(|first| LISTENER_MODULES.contains(&first.as_str()))
        })
        .map(|path| path.join("::"))
        .collect()
}

fn names_wire_format(path: &[String]) -> bool {
    let Some(first) = path.first() else {
        return false;
    };
    if FORBIDDEN_CRATES.contains(&first.as_str()) {
        return true;
    }
    match first.as_str() {
        // `tidelog_proto::pb…`, and a glob that would bring `pb` in.
        "tidelog_proto" => path.get(1).is_some_and(|second| second == "pb" || second == "*"),
        // `pb::…`: the module imported under its own name.
        "pb" => path.len() > 1,
        _ => false,
    }
}

/// `source` without comments and the contents of string, byte-string, raw-string and char
/// literals (each literal becomes `""`), so only code is checked.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    depth += 1;
                    at += 2;
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    depth -= 1;
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    at += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('#') | Some('"')) && !ident_char_before(&chars, at) {
            // Raw string: r"..." or r#"..."#.
            let mut hashes = 0;
            let mut probe = at + 1;
            while chars.get(probe) == Some(&'#') {
                hashes += 1;
                probe += 1;
            }
            if chars.get(probe) != Some(&'"') {
                out.push(c);
                at += 1;
                continue;
            }
            at = probe + 1;
            while at < chars.len() {
                if chars[at] == '"' && (0..hashes).all(|offset| chars.get(at + 1 + offset) == Some(&'#')) {
                    at += 1 + hashes;
                    break;
                }
                at += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                if chars[at] == '\\' {
                    at += 1;
                }
                at += 1;
            }
            at += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a): only the former is
            // skipped.
            let closing = if next == Some('\\') {
                (at + 2..chars.len().min(at + 12)).find(|&probe| chars[probe] == '\'')
            } else if chars.get(at + 2) == Some(&'\'') {
                Some(at + 2)
            } else {
                None
            };
            match closing {
                Some(end) => {
                    at = end + 1;
                    out.push_str("' '");
                }
                None => {
                    out.push(c);
                    at += 1;
                }
            }
        } else {
            out.push(c);
            at += 1;
        }
    }
    out
}

fn ident_char_before(chars: &[char], at: usize) -> bool {
    at > 0 && (chars[at - 1].is_alphanumeric() || chars[at - 1] == '_')
}

/// Identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let c = chars[at];
        if c.is_whitespace() {
            at += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = at;
            while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
            tokens.push(chars[start..at].iter().collect());
        } else if c == ':' && chars.get(at + 1) == Some(&':') {
            tokens.push("::".into());
            at += 2;
        } else {
            tokens.push(c.to_string());
            at += 1;
        }
    }
    tokens
}

/// Every path in the token stream, with `use` trees expanded into one path per leaf
/// (`use a::{b, c::d}` gives `a::b` and `a::c::d`) and `extern crate x` as `x`. A leading
/// `::` is dropped.
fn paths(tokens: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        if tokens[at] == "use" {
            let end = (at..tokens.len())
                .find(|&probe| tokens[probe] == ";")
                .unwrap_or(tokens.len());
            use_tree(&tokens[at + 1..end], &mut Vec::new(), &mut paths);
            at = end + 1;
        } else if tokens[at] == "extern" && tokens.get(at + 1).is_some_and(|token| token == "crate") {
            if let Some(name) = tokens.get(at + 2) {
                paths.push(vec![name.clone()]);
            }
            at += 3;
        } else if is_ident(&tokens[at]) && !continues_path(tokens, at) {
            // A path in an expression or a type: ident (:: ident)*, or a single identifier.
            let mut path = vec![tokens[at].clone()];
            let mut probe = at + 1;
            while tokens.get(probe).is_some_and(|token| token == "::") {
                match tokens.get(probe + 1) {
                    Some(next) if is_ident(next) || next == "*" => {
                        path.push(next.clone());
                        probe += 2;
                    }
                    // `::<T>` or `::{` (a group outside `use`): the path ends here.
                    _ => {
                        path.push(String::new());
                        break;
                    }
                }
            }
            if path.len() > 1 || FORBIDDEN_CRATES.contains(&path[0].as_str()) {
                paths.push(path);
            }
            at = probe.max(at + 1);
        } else {
            at += 1;
        }
    }
    paths
}

/// Expands one `use` tree (the tokens between `use` and `;`) below `prefix`.
fn use_tree(tree: &[String], prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut at = 0;
    let depth = prefix.len();
    while at < tree.len() {
        let token = &tree[at];
        if token == "::" {
            at += 1;
            continue;
        }
        if token == "{" {
            // Split the group's contents at top-level commas.
            let mut level = 0;
            let mut item_start = at + 1;
            let mut probe = at + 1;
            while probe < tree.len() {
                match tree[probe].as_str() {
                    "{" => level += 1,
                    "}" if level == 0 => break,
                    "}" => level -= 1,
                    "," if level == 0 => {
                        use_tree(&tree[item_start..probe], &mut prefix.clone(), out);
                        item_start = probe + 1;
                    }
                    _ => {}
                }
                probe += 1;
            }
            use_tree(&tree[item_start..probe.min(tree.len())], &mut prefix.clone(), out);
            prefix.truncate(depth);
            return;
        }
        if token == "as" {
            // The rename does not change what is named.
            break;
        }
        if token == "self" && !prefix.is_empty() {
            at += 1;
            continue;
        }
        prefix.push(token.clone());
        at += 1;
    }
    if !prefix.is_empty() {
        out.push(prefix.clone());
    }
    prefix.truncate(depth);
}

/// Whether the identifier at `at` is a later segment of a path (`a::here`, `T>::here`),
/// rather than the start of one (`::here` after an operator is a crate path's start).
fn continues_path(tokens: &[String], at: usize) -> bool {
    at >= 2 && tokens[at - 1] == "::" && (is_ident(&tokens[at - 2]) || tokens[at - 2] == ">")
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}
