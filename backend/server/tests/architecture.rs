//! ARCHITECTURE.md's layering, checked on the real dependency graph (`cargo metadata`), the way
//! rust-analyzer's tidy test checks its own rules: the store crate knows no gRPC, protobuf or
//! SQL; the gRPC crate knows no SQL and no backend; the CLI reaches the server only through the
//! client library.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// The resolved graph: package name → names of its normal (non-dev, non-build) dependencies.
fn normal_dependencies() -> HashMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata JSON");
    let name_of: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().expect("id"),
                p["name"].as_str().expect("name"),
            )
        })
        .collect();
    let mut graph = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().expect("nodes") {
        let deps = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
            })
            .map(|dep| name_of[dep["pkg"].as_str().expect("pkg")].to_string())
            .collect();
        graph.insert(name_of[node["id"].as_str().expect("id")].to_string(), deps);
    }
    graph
}

/// Every package `name` needs to build, itself excluded.
fn closure(graph: &HashMap<String, Vec<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = graph.get(name).cloned().unwrap_or_default();
    while let Some(next) = todo.pop() {
        if seen.insert(next.clone()) {
            todo.extend(graph.get(&next).cloned().unwrap_or_default());
        }
    }
    seen
}

fn assert_none_of(graph: &HashMap<String, Vec<String>>, krate: &str, banned: &[&str], why: &str) {
    let reached = closure(graph, krate);
    assert!(!reached.is_empty(), "{krate} is not in the workspace graph");
    let found: Vec<&&str> = banned.iter().filter(|b| reached.contains(**b)).collect();
    assert!(found.is_empty(), "{krate} depends on {found:?}: {why}");
}

const SQL: &[&str] = &[
    "rusqlite",
    "libsqlite3-sys",
    "tokio-postgres",
    "postgres",
    "sqlx",
    "refinery",
];

#[test]
fn the_layers_depend_only_downwards() {
    let graph = normal_dependencies();
    let mut store_bans = vec!["tonic", "prost", "prost-reflect", "hyper"];
    store_bans.extend(SQL);
    assert_none_of(
        &graph,
        "stigmer-store",
        &store_bans,
        "the storage contract knows no gRPC, protobuf or SQL",
    );
    let mut grpc_bans = vec!["stigmer-sqlite", "stigmer-postgres", "stigmer-database"];
    grpc_bans.extend(SQL);
    assert_none_of(
        &graph,
        "stigmer-grpc",
        &grpc_bans,
        "the server library takes the store it is given and knows no SQL",
    );
    assert_none_of(
        &graph,
        "stigmer-core",
        SQL,
        "what client and server share knows no SQL",
    );
    let workspace: BTreeSet<&str> = graph
        .keys()
        .map(String::as_str)
        .filter(|name| name.starts_with("stigmer"))
        .collect();
    let cli_workspace_deps: Vec<&String> = graph["stigmer"]
        .iter()
        .filter(|dep| workspace.contains(dep.as_str()))
        .collect();
    assert_eq!(
        cli_workspace_deps,
        ["stigmer-client"],
        "the CLI reaches the server only through the client library"
    );
}

#[test]
fn a_banned_dependency_is_found_through_any_path() {
    let graph: HashMap<String, Vec<String>> = [
        ("a".to_string(), vec!["b".to_string()]),
        ("b".to_string(), vec!["rusqlite".to_string()]),
        ("rusqlite".to_string(), Vec::new()),
    ]
    .into_iter()
    .collect();
    assert!(closure(&graph, "a").contains("rusqlite"));
    let caught = std::panic::catch_unwind(|| assert_none_of(&graph, "a", SQL, "test"));
    assert!(
        caught.is_err(),
        "a transitive SQL dependency must fail the check"
    );
}
