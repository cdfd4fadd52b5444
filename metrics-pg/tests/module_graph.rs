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
fn the_jobs_depend_downward_and_nothing_below_them_names_them() {
    let graph = graph();
    let deps = |m: &str| graph.dependencies(m).map(str::to_owned).collect::<Vec<_>>();
    for module in [
        "jobs::schedule",
        "jobs::retention",
        "jobs::rollup",
        "jobs::rollup::hour",
        "jobs::daily",
        "jobs::lock",
    ] {
        assert!(graph.modules().any(|m| m == module), "{module} not found");
    }
    // schedule ─► retention ─► rollup ─► daily: each names only those below.
    assert!(
        deps("jobs::schedule")
            .iter()
            .any(|m| m == "jobs::retention")
    );
    assert!(
        deps("jobs::retention")
            .iter()
            .any(|m| m.starts_with("jobs::rollup"))
    );
    for lower in [
        "jobs::daily",
        "jobs::partition",
        "jobs::lock",
        "jobs::governance",
    ] {
        assert!(
            !deps(lower)
                .iter()
                .any(|m| m.starts_with("jobs::rollup") || m == "jobs::schedule"),
            "{lower} depends on a job above it: {:?}",
            deps(lower)
        );
    }
    // The sink and the queries never run a job.
    for user in ["sink", "query", "conn", "tables", "units"] {
        let over: Vec<_> = graph
            .modules()
            .filter(|m| *m == user || m.starts_with(&format!("{user}::")))
            .flat_map(&deps)
            .filter(|d| d.starts_with("jobs"))
            .collect();
        assert!(over.is_empty(), "{user} depends on {over:?}");
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
