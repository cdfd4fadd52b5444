//! metrics-tower's modules depend downward only: a module cycle fails here,
//! naming the modules. The graph is read from the files, so the modules
//! behind the `axum` feature are checked whatever features the run enables.
//!
//! The rule (`test_support::module_graph`, docs/decisions.md "Module
//! cycles"): an edge goes to the module that *defines* the item a path
//! names. A child reaching `super::X` that its parent only re-exports from
//! another child is an edge to that sibling, not to the parent; the
//! parent's own `pub use` of a child is no edge. So a parent may use its
//! children, and a child may use what the parent re-exports, but a parent
//! and a child that each use an item the other defines are a cycle, as are
//! two siblings that use each other's items.

use test_support::module_graph::ModuleGraph;

fn graph() -> ModuleGraph {
    ModuleGraph::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

#[test]
fn metrics_tower_has_no_module_cycle() {
    let graph = graph();
    // The graph was read from the real tree (not an empty or wrong path).
    for module in [
        "metrics",
        "metrics::layer",
        "metrics::service",
        "axum::api",
        "axum::api::handlers",
        "axum::api::state",
        "axum::dashboard",
        "axum::dashboard::page",
    ] {
        assert!(graph.modules().any(|m| m == module), "{module} not found");
    }
    assert!(
        graph
            .dependencies("metrics::layer")
            .any(|m| m == "metrics::service")
    );
    graph.assert_acyclic();
}

#[test]
fn routers_use_their_children_and_not_the_reverse() {
    let graph = graph();
    // The routers (`axum::api`, `axum::dashboard`) mount their handlers;
    // no child names an item its router defines.
    for parent in ["axum::api", "axum::dashboard"] {
        assert!(
            graph
                .dependencies(parent)
                .any(|m| m == format!("{parent}::handlers"))
        );
        let prefix = format!("{parent}::");
        for child in graph.modules().filter(|m| m.starts_with(&prefix)) {
            assert!(
                !graph.dependencies(child).any(|m| m == parent),
                "{child} uses an item of {parent}"
            );
        }
    }
}

#[test]
fn no_code_follows_a_tests_module() {
    assert!(
        graph().code_after_tests().is_empty(),
        "{:?}",
        graph().code_after_tests()
    );
}
