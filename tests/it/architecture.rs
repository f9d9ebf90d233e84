//! Imports point down: no module of a crate reaches, through `crate::` paths, a module that
//! reaches it back. A circle means a type lives in the wrong file (STYLE.md), and this test
//! names the circle. Test code (from a file's `#[cfg(test)]` on) may import anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name -> the modules of the same crate it names through `crate::`.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The top-level modules of the crate at `src` and what each imports. A module is a file
/// `src/NAME.rs` with the files under `src/NAME/`; `lib.rs`, `main.rs` and `bin/` are the
/// crate's roots, which may name anything.
fn graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            let entries = std::fs::read_dir(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
            files.extend(entries.map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let imports = graph.entry(module.clone()).or_default();
        for name in crate_paths(&text) {
            if name != module {
                imports.insert(name);
            }
        }
    }
    graph
}

/// The first segment of every `crate::` path in code outside comments and tests, `{a, b::c}`
/// groups included.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Only the group's own top-level segments: `{a::{x, y}, b}` names a and b.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    c if start && !c.is_whitespace() => start = false,
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.retain(|name| !name.is_empty() && name != "self");
    found
}

/// A circle in `graph`, as the modules along it with the first repeated at the end.
fn circle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        graph: &Graph,
        module: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut found = path[at..].to_vec();
            found.push(module.to_string());
            return Some(found);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in graph.get(module).into_iter().flatten() {
            if graph.contains_key(next) {
                if let Some(found) = visit(graph, next, path, done) {
                    return Some(found);
                }
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(graph, module, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_of_the_workspace_has_a_circle_of_imports() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each library crate, with the fewest modules it has (a floor, so a moved folder fails
    // here instead of checking nothing). The bench crate is binaries only.
    for (src, at_least) in [("src", 20), ("demo/src", 7), ("envoy-module/src", 2)] {
        let graph = graph(&root.join(src));
        assert!(
            graph.len() >= at_least,
            "{src}: {} modules found",
            graph.len()
        );
        if let Some(circle) = circle(&graph) {
            panic!("{src}: imports go in a circle: {}", circle.join(" -> "));
        }
    }
}

#[test]
fn the_import_reader_sees_groups_and_skips_comments_and_tests() {
    let text = "use crate::a::{X, Y};\nuse crate::{b, c::{D, E}, self};\n\
                // crate::d is only mentioned\nfn f() { crate::e::g() }\n\
                #[cfg(test)]\nmod tests { use crate::f; }\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "e"]);
}

#[test]
fn a_circle_is_found_and_named() {
    let edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")];
    let mut graph = Graph::new();
    for (from, to) in edges {
        graph.entry(from.into()).or_default().insert(to.into());
        graph.entry(to.into()).or_default();
    }
    assert_eq!(circle(&graph).unwrap().join(" -> "), "a -> b -> c -> a");
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(circle(&graph), None);
}
