//! Every kind, one table: the same create → get → getByReference → update → apply → list →
//! delete cycle and the same negative checks, run against the real server for each of the
//! eleven kinds of CONTRACT.md, through real gRPC calls with proto3 JSON requests.
//!
//! `table.rs` says, per kind (`kind_case.rs`), its package, id prefix, which RPCs it has, the
//! parents it needs on the server, a minimal valid spec, a changed spec for update/apply,
//! rule-breaking patches with the field path the server must name, and references to missing
//! resources with the exact violation. `per_kind!` turns it into one test module per kind
//! (`cargo test --test every_kind agent::`) that runs `cycle.rs` (with `lifecycle.rs`, what the
//! server does beyond the generic verbs) and `negative.rs`; Skill, which has no create, has
//! `skill.rs`.
//!
//! Specs name their parents by placeholder (`"{agent}"`); each test first creates the parents in
//! every org it uses (`fixture.rs`) and substitutes their real ids; `api.rs` makes the calls.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod checks;
mod cycle;
mod fixture;
mod json;
mod kind_case;
mod lifecycle;
mod negative;
mod skill;
mod table;

use prost_reflect::DynamicMessage;
use serde_json::json;

use api::Api;
use checks::assert_not_found;
use common::TestServer;
use fixture::Fixture;
use json::{default_instance_of, id_of, patched, slug_of, spec_str};
use kind_case::{Lifecycle, Parent, Rpc};
use table::cases;

/// The org besides "local" that tests make resources in, to check they stay apart.
const OTHER_ORG: &str = "other-org";

macro_rules! per_kind {
    ($($module:ident => $kind:literal),* $(,)?) => {
        $(
            mod $module {
                use crate::table::case;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn full_cycle() {
                    crate::cycle::full_cycle(&case($kind)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn invalid_writes_and_requests_are_rejected() {
                    crate::negative::invalid_writes_and_requests_are_rejected(&case($kind)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn a_taken_slug_is_refused_within_its_org() {
                    crate::negative::a_taken_slug_is_refused_within_its_org(&case($kind)).await;
                }
            }
        )*

        /// The kinds with a module of their own: every kind with create.
        const PER_KIND: &[&str] = &[$($kind),*];
    };
}

per_kind! {
    agent => "Agent",
    agent_execution => "AgentExecution",
    session => "Session",
    mcp_server => "McpServer",
    agent_instance => "AgentInstance",
    workflow => "Workflow",
    workflow_instance => "WorkflowInstance",
    workflow_execution => "WorkflowExecution",
    environment => "Environment",
    execution_context => "ExecutionContext",
}

/// The table agrees with the protos: all eleven kinds, each with exactly the RPCs its
/// controllers have, the right list field, and valid JSON for its messages.
#[test]
fn the_table_matches_the_protos() {
    let pool = &*stigmer_api::DESCRIPTOR_POOL;
    let cases = cases();
    assert_eq!(cases.len(), 11, "eleven kinds");
    let with_create: Vec<&str> = cases
        .iter()
        .filter(|c| c.has(Rpc::Create))
        .map(|c| c.name)
        .collect();
    assert_eq!(
        with_create, PER_KIND,
        "every kind with create has a test module"
    );
    let without_create: Vec<&str> = cases
        .iter()
        .filter(|c| !c.has(Rpc::Create))
        .map(|c| c.name)
        .collect();
    assert_eq!(
        without_create,
        ["Skill"],
        "skill.rs tests the one kind without create"
    );
    let kind_enum = pool
        .get_enum_by_name("ai.stigmer.commons.apiresource.apiresourcekind.ApiResourceKind")
        .expect("ApiResourceKind");
    for case in &cases {
        let k = case.name;
        assert!(
            kind_enum.get_value_by_name(case.kind_enum).is_some(),
            "{k}: kind enum"
        );
        for rpc in Rpc::ALL {
            let service_name = case.service(rpc.is_command());
            let service = pool
                .get_service_by_name(&service_name)
                .unwrap_or_else(|| panic!("{k}: no service {service_name}"));
            let present = service.methods().any(|m| m.name() == rpc.method());
            assert_eq!(present, case.has(rpc), "{k}: has {}?", rpc.method());
        }
        for service in [case.service(true), case.service(false)] {
            let service = pool.get_service_by_name(&service).expect("service");
            assert!(
                service
                    .methods()
                    .any(|m| m.name() == "get" || m.name() == "delete")
            );
        }
        if case.has(Rpc::List) {
            let (_, output) = common::method_types(&case.query("list"));
            let field = output
                .get_field_by_name(case.list_field)
                .unwrap_or_else(|| panic!("{k}: list response has no {}", case.list_field));
            assert!(field.is_list(), "{k}: {} is repeated", case.list_field);
        }
        if case.has(Rpc::Create) {
            let (input, _) = common::method_types(&case.command("create"));
            for spec in [&case.spec, &case.changed_spec] {
                DynamicMessage::deserialize(input.clone(), case.request(Some("x"), spec))
                    .unwrap_or_else(|e| panic!("{k}: spec does not fit {}: {e}", input.name()));
            }
            // Unknown JSON names would be refused for the wrong reason.
            let valid = case.request(Some("x"), &case.spec);
            for refusal in &case.refusals {
                DynamicMessage::deserialize(input.clone(), patched(&valid, &refusal.patch))
                    .unwrap_or_else(|e| panic!("{k}: {} does not fit: {e}", refusal.patch));
            }
            let spec_type = input
                .get_field_by_name("spec")
                .and_then(|f| f.kind().as_message().cloned())
                .expect("spec message");
            for key in case.derived {
                assert!(
                    spec_type.fields().any(|f| f.json_name() == *key),
                    "{k}: derived field {key} is not in {}",
                    spec_type.name()
                );
            }
        }
    }
}

/// Slugs are unique per (org, kind), not across kinds: one name in every kind works, every
/// listing and getByReference shows only its own kind, and no kind's get, update or delete
/// reaches another kind's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_slug_fits_every_kind_and_no_kind_serves_anothers_ids() {
    let server = TestServer::start().await;
    let all_parents = [
        Parent::Environment,
        Parent::Agent,
        Parent::Session,
        Parent::Workflow,
        Parent::AgentExecution,
        Parent::WorkflowExecution,
    ];
    let fixture = Fixture::build(&server, &all_parents).await;
    let cases = cases();
    let mut ids = Vec::new();
    // What the server created along with them (default instances, sessions): listed with
    // their kind, but under other slugs.
    let mut made_along: Vec<(&str, String)> = Vec::new();
    for case in cases.iter().filter(|c| c.has(Rpc::Create)) {
        let api = Api::new(&server, case, &fixture);
        let created = api
            .create(&api.request(Some("Shared Name"), &case.spec))
            .await
            .unwrap_or_else(|s| panic!("{}: create of a shared slug failed: {s:?}", case.name));
        assert_eq!(slug_of(&created), "shared-name", "{}", case.name);
        ids.push((case.name, id_of(&created)));
        match case.lifecycle {
            Lifecycle::DefaultInstance { instance, .. } => {
                made_along.push((instance, default_instance_of(&created)));
            }
            Lifecycle::AgentExecution => {
                made_along.push(("Session", spec_str(&created, "sessionId")));
            }
            _ => {}
        }
    }
    for case in &cases {
        let k = case.name;
        let api = Api::new(&server, case, &fixture);
        let own: Vec<String> = ids
            .iter()
            .filter(|(kind, _)| *kind == k)
            .map(|(_, id)| id.clone())
            .collect();
        if case.has(Rpc::List) {
            // The fixture's parents of this kind, ours, and those made along: nothing else.
            let mut expected: Vec<String> = api.preexisting();
            expected.extend(own.iter().cloned());
            expected.extend(
                made_along
                    .iter()
                    .filter(|(kind, _)| *kind == k)
                    .map(|(_, id)| id.clone()),
            );
            expected.sort();
            let (listed, _) = api.list_all(2).await;
            assert_eq!(listed, expected, "{k}: the list shows only this kind");
        }
        if case.has(Rpc::GetByReference) {
            let result = api
                .get_by_reference(&json!({ "slug": "shared-name" }))
                .await;
            match own.first() {
                Some(id) => {
                    let found = result.unwrap_or_else(|s| panic!("{k}: getByReference: {s:?}"));
                    assert_eq!(&id_of(&found), id, "{k}: getByReference finds its own kind");
                }
                None => assert_not_found(case, result, "shared-name", "no such kind yet"),
            }
        }
        // An id of another kind is not found through this kind's get.
        // Nor updated or deleted through it.
        for (kind, id) in ids
            .iter()
            .chain(made_along.iter())
            .filter(|(kind, _)| *kind != k)
        {
            let result = api.get(id).await;
            assert_not_found(case, result, id, &format!("get of a {kind} id"));
            if case.has(Rpc::Update) {
                let mut request = api.request(Some("Shared Name"), &case.spec);
                request["metadata"]["id"] = json!(id);
                let result = api.update(&request).await;
                assert_not_found(case, result, id, &format!("update of a {kind} id"));
            }
            let result = api.delete(id, 0).await;
            assert_not_found(case, result, id, &format!("delete of a {kind} id"));
        }
    }
}
