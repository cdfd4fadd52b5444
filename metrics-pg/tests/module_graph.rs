//! metrics-pg's modules depend downward only: a module cycle fails here,
//! naming the modules (docs/architecture.md draws the layers).

use test_support::module_graph::ModuleGraph;

fn graph() -> ModuleGraph {
    ModuleGraph::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

#[test]
fn metrics_pg_has_no_module_cycle() {
    let graph = graph();
    // The graph was read from the real tree (not an empty or wrong path).
    for module in ["units", "tables", "conn", "sink", "query", "query::store"] {
        assert!(graph.modules().any(|m| m == module), "{module} not found");
    }
    assert!(graph.dependencies("sink").any(|m| m == "conn"));
    graph.assert_acyclic();
}

#[test]
fn the_bottom_layer_depends_on_nothing_above_it() {
    let graph = graph();
    // units and tables are the shared vocabulary: they name no module of
    // the crate; conn names only the error type.
    assert_eq!(graph.dependencies("units").count(), 0);
    assert_eq!(graph.dependencies("tables").count(), 0);
    assert_eq!(graph.dependencies("conn").collect::<Vec<_>>(), ["error"]);
}

#[test]
fn no_code_follows_a_tests_module() {
    assert!(
        graph().code_after_tests().is_empty(),
        "{:?}",
        graph().code_after_tests()
    );
}
