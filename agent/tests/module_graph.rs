//! Data flows one way: no cycle among the agent's top-level modules.
//!
//! The module tree is read as the compiler sees it, from `src/lib.rs` through every `mod`
//! declaration (`#[path]` included), leaving out everything under `#[cfg(test)]`. Every
//! `crate::name` path counts — `use` lines, `use crate::{a, b}` groups, inline paths in code,
//! and paths inside macro invocations (`tracing::info!`, `section!`) — while comments and doc
//! comments do not. An edge `a → b` means code in top-level module `a` names something in `b`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Top-level module → the top-level modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// A source tree: file path (relative to `src/`) → text.
type Sources = BTreeMap<PathBuf, String>;

fn read_sources() -> Sources {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Sources::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.insert(path.strip_prefix(&root).unwrap().to_owned(), text);
            }
        }
    }
    out
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && {
            let tokens = a.meta.require_list().map(|l| l.tokens.to_string());
            tokens.is_ok_and(|t| {
                t.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .any(|w| w == "test")
                    && !t.contains("not")
            })
        }
    })
}

/// Collects `crate::name` references of one file, and the files of its non-test submodules.
struct Collector {
    names: BTreeSet<String>,
    submodules: Vec<(String, Option<String>)>,
}

impl Collector {
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        for (i, tree) in trees.iter().enumerate() {
            match tree {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" => {
                    // `crate` `:` `:` `name`
                    if let (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) =
                        (trees.get(i + 1), trees.get(i + 2))
                    {
                        if a.as_char() == ':' && b.as_char() == ':' {
                            match trees.get(i + 3) {
                                Some(TokenTree::Ident(name)) => {
                                    self.names.insert(name.to_string());
                                }
                                Some(TokenTree::Group(g)) => self.group(g.stream()),
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The first identifier of each comma-separated part of `crate::{a, b::c}`.
    fn group(&mut self, tokens: TokenStream) {
        let mut expect_name = true;
        for tree in tokens {
            match tree {
                TokenTree::Ident(id) if expect_name => {
                    self.names.insert(id.to_string());
                    expect_name = false;
                }
                TokenTree::Punct(p) if p.as_char() == ',' => expect_name = true,
                _ => {}
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            syn::Item::Struct(s) => &s.attrs,
            syn::Item::Enum(e) => &e.attrs,
            syn::Item::Const(c) => &c.attrs,
            syn::Item::Static(s) => &s.attrs,
            syn::Item::Macro(m) => &m.attrs,
            syn::Item::Trait(t) => &t.attrs,
            syn::Item::Type(t) => &t.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Mod(m) = item {
            if m.content.is_none() {
                let path = m.attrs.iter().find_map(|a| match &a.meta {
                    syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) => Some(s.value()),
                        _ => None,
                    },
                    _ => None,
                });
                self.submodules.push((m.ident.to_string(), path));
            }
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        if let syn::ImplItem::Fn(f) = item {
            if is_cfg_test(&f.attrs) {
                return;
            }
        }
        syn::visit::visit_impl_item(self, item);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let mut segments = path.segments.iter();
        if let (Some(first), Some(second)) = (segments.next(), segments.next()) {
            if first.ident == "crate" {
                self.names.insert(second.ident.to_string());
            }
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_use_tree(&mut self, tree: &'ast syn::UseTree) {
        if let syn::UseTree::Path(p) = tree {
            if p.ident == "crate" {
                match &*p.tree {
                    syn::UseTree::Path(q) => {
                        self.names.insert(q.ident.to_string());
                    }
                    syn::UseTree::Name(n) => {
                        self.names.insert(n.ident.to_string());
                    }
                    syn::UseTree::Rename(r) => {
                        self.names.insert(r.ident.to_string());
                    }
                    syn::UseTree::Group(g) => {
                        for t in &g.items {
                            let name = match t {
                                syn::UseTree::Path(q) => Some(&q.ident),
                                syn::UseTree::Name(n) => Some(&n.ident),
                                syn::UseTree::Rename(r) => Some(&r.ident),
                                _ => None,
                            };
                            if let Some(name) = name {
                                self.names.insert(name.to_string());
                            }
                        }
                    }
                    syn::UseTree::Glob(_) => {}
                }
                return;
            }
        }
        syn::visit::visit_use_tree(self, tree);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        self.tokens(mac.tokens.clone());
    }
}

/// The module graph of `sources`, walking the module tree from `lib.rs`.
fn graph(sources: &Sources) -> Graph {
    let lib = syn::parse_file(&sources[Path::new("lib.rs")]).expect("lib.rs parses");
    let mut top = Collector {
        names: BTreeSet::new(),
        submodules: Vec::new(),
    };
    top.visit_file(&lib);
    let modules: BTreeSet<String> = top.submodules.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = Graph::new();
    for (module, path) in &top.submodules {
        let mut names = BTreeSet::new();
        let file = match path {
            Some(p) => PathBuf::from(p),
            None => module_file(sources, Path::new(""), module),
        };
        walk(sources, &file, &mut names);
        names.remove(module);
        names.retain(|n| modules.contains(n));
        graph.insert(module.clone(), names);
    }
    graph
}

/// `dir/name.rs` or `dir/name/mod.rs`, whichever exists.
fn module_file(sources: &Sources, dir: &Path, name: &str) -> PathBuf {
    let flat = dir.join(format!("{name}.rs"));
    if sources.contains_key(&flat) {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// Adds the `crate::` names of `file` and of its non-test submodules to `names`.
fn walk(sources: &Sources, file: &Path, names: &mut BTreeSet<String>) {
    let text = sources
        .get(file)
        .unwrap_or_else(|| panic!("module file {} not found", file.display()));
    let ast = syn::parse_file(text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut c = Collector {
        names: BTreeSet::new(),
        submodules: Vec::new(),
    };
    c.visit_file(&ast);
    names.extend(c.names);
    // Submodules of `x.rs` live in `x/`; of `x/mod.rs` (and `lib.rs`) in `x/`.
    let dir = if file.file_name().is_some_and(|n| n == "mod.rs") {
        file.parent().unwrap().to_owned()
    } else {
        file.with_extension("")
    };
    for (sub, path) in c.submodules {
        let sub_file = match path {
            Some(p) => file.parent().unwrap().join(p),
            None => module_file(sources, &dir, &sub),
        };
        walk(sources, &sub_file, names);
    }
}

/// Every cycle's modules (the strongly connected components of more than one module, or one
/// naming itself), each sorted.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let reaches = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reaches(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in graph.keys() {
        if !reach[m].contains(m) {
            continue;
        }
        let component: Vec<String> = graph
            .keys()
            .filter(|n| reach[m].contains(*n) && reach[n].contains(m))
            .cloned()
            .collect();
        if !out.contains(&component) {
            out.push(component);
        }
    }
    out
}

fn show(graph: &Graph) -> String {
    graph
        .iter()
        .map(|(m, to)| {
            format!(
                "  {m} → {}",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_cycle_among_top_level_modules() {
    let g = graph(&read_sources());
    assert!(g.len() > 10, "too few modules found:\n{}", show(&g));
    assert!(
        g["daemon"].contains("server") && g["config"].contains("server"),
        "the scan misses edges:\n{}",
        show(&g)
    );
    let found = cycles(&g);
    assert!(found.is_empty(), "cycles {found:?} in:\n{}", show(&g));
    println!("module graph (no cycle):\n{}", show(&g));
}

#[test]
fn a_planted_inline_cycle_is_found() {
    let mut sources = read_sources();
    // An inline path in a function body (no `use` line) from a module the daemon depends on.
    let metrics = sources
        .keys()
        .find(|p| p.starts_with("metrics"))
        .unwrap()
        .clone();
    sources
        .get_mut(&metrics)
        .unwrap()
        .push_str("\nfn planted() -> &'static str { crate::daemon::planted_name() }\n");
    let g = graph(&sources);
    assert!(g["metrics"].contains("daemon"), "{}", show(&g));
    let found = cycles(&g);
    assert!(
        found
            .iter()
            .any(|c| c.contains(&"metrics".to_owned()) && c.contains(&"daemon".to_owned())),
        "{found:?}"
    );
}

#[test]
fn test_code_and_comments_do_not_count() {
    let mut sources = read_sources();
    let before = graph(&sources);
    let metrics = sources
        .keys()
        .find(|p| p.starts_with("metrics"))
        .unwrap()
        .clone();
    sources.get_mut(&metrics).unwrap().push_str(
        "\n/// See [`crate::daemon`].\n// crate::daemon::x()\n#[cfg(test)]\nfn t() { crate::daemon::x() }\n",
    );
    assert_eq!(graph(&sources), before);
}

#[test]
fn grouped_uses_and_macro_arguments_count() {
    let mut c = Collector {
        names: BTreeSet::new(),
        submodules: Vec::new(),
    };
    let file = syn::parse_file(
        "use crate::{alpha::A, beta};\nfn f() { tracing::info!(x = %crate::gamma::g(), \"m\"); crate::delta::d(); }\n",
    )
    .unwrap();
    c.visit_file(&file);
    let names: Vec<_> = c.names.into_iter().collect();
    assert_eq!(names, ["alpha", "beta", "delta", "gamma"]);
}
