//! metrics-core's modules depend downward only: a module cycle fails here,
//! naming the modules.
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
fn metrics_core_has_no_module_cycle() {
    let graph = graph();
    // The graph was read from the real tree (not an empty or wrong path).
    for module in [
        "collector",
        "collector::queue",
        "collector::shared",
        "collector::worker",
        "sink",
        "error",
        "record",
    ] {
        assert!(graph.modules().any(|m| m == module), "{module} not found");
    }
    assert!(graph.dependencies("sink").any(|m| m == "record"));
    graph.assert_acyclic();
}

#[test]
fn the_collector_parts_share_state_below_the_handle() {
    let graph = graph();
    // The worker and the handle (`collector`) both use `shared`; the worker
    // does not reach back into the module that spawns it.
    assert!(
        graph
            .dependencies("collector")
            .any(|m| m == "collector::shared")
    );
    assert!(
        graph
            .dependencies("collector::worker")
            .any(|m| m == "collector::shared")
    );
    assert!(
        !graph
            .dependencies("collector::worker")
            .any(|m| m == "collector")
    );
    // The error and sink vocabulary names no collector module.
    for module in ["error", "sink"] {
        assert!(
            !graph
                .dependencies(module)
                .any(|m| m.starts_with("collector")),
            "{module}: {:?}",
            graph.dependencies(module).collect::<Vec<_>>()
        );
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
