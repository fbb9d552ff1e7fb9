//! The parents a kind's specs name, made on the server before a test, and the placeholders
//! that stand for them in the table.

use std::collections::HashMap;

use serde_json::{Value, json};
use stigmer_grpc::LOCAL;

use crate::OTHER_ORG;
use crate::api::call;
use crate::common::TestServer;
use crate::json::{default_instance_of, id_of, slug_of};
use crate::kind_case::Parent;
use crate::table::{case, workflow_spec};

/// Parents created on the server before a test, in every org the test uses, with everything
/// their creation wrote (default instances, sessions).
pub struct Fixture {
    /// (org, placeholder name) → id (or slug, for `agentSlug`).
    ids: HashMap<(String, String), String>,
    /// (kind, org, id) of every resource on the server once the fixture was built: the
    /// parents and whatever the server wrote with them (default instances, sessions, ...).
    made: Vec<(String, String, String)>,
}

impl Fixture {
    pub fn empty() -> Self {
        Self {
            ids: HashMap::new(),
            made: Vec::new(),
        }
    }

    /// The case's parents in "local" and in OTHER_ORG.
    pub async fn build(server: &TestServer, parents: &[Parent]) -> Self {
        let mut fixture = Self::empty();
        if parents.is_empty() {
            // Nothing to make (and the server may not have opened its database yet).
            return fixture;
        }
        for org in [LOCAL, OTHER_ORG] {
            fixture.build_in(server, org, parents).await;
        }
        let db = server.sqlite();
        let mut query = db
            .prepare("SELECT kind, org_id, id FROM resources")
            .expect("prepare");
        fixture.made = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query rows")
            .collect::<Result<_, _>>()
            .expect("read rows");
        fixture
    }

    async fn build_in(&mut self, server: &TestServer, org: &str, parents: &[Parent]) {
        let needs = |parent: Parent| parents.contains(&parent);
        if needs(Parent::Environment) {
            let environment = self
                .make(
                    server,
                    org,
                    "Environment",
                    json!({ "metadata": { "name": "prod" }, "spec": { "data": { "REGION": { "value": "eu" } } } }),
                )
                .await;
            self.put(org, "environment", id_of(&environment));
        }
        if needs(Parent::Agent) || needs(Parent::Session) || needs(Parent::AgentExecution) {
            let agent = self
                .make(
                    server,
                    org,
                    "Agent",
                    json!({
                        "metadata": { "name": "Parent Agent" },
                        "spec": { "instructions": "You are the parent of the resources under test." }
                    }),
                )
                .await;
            let instance = default_instance_of(&agent);
            self.put(org, "agent", id_of(&agent));
            self.put(org, "agentSlug", slug_of(&agent));
            self.put(org, "agentInstance", instance);
        }
        if needs(Parent::Session) {
            let instance = self.id(org, "agentInstance").to_string();
            let session = self
                .make(
                    server,
                    org,
                    "Session",
                    json!({ "metadata": { "name": "Parent Session" }, "spec": { "agentInstanceId": instance } }),
                )
                .await;
            self.put(org, "session", id_of(&session));
        }
        if needs(Parent::Workflow) || needs(Parent::WorkflowExecution) {
            let workflow = self
                .make(
                    server,
                    org,
                    "Workflow",
                    json!({ "metadata": { "name": "Parent Workflow" }, "spec": workflow_spec("parent", "0") }),
                )
                .await;
            let instance = default_instance_of(&workflow);
            self.put(org, "workflow", id_of(&workflow));
            self.put(org, "workflowInstance", instance);
        }
        if needs(Parent::AgentExecution) {
            let agent = self.id(org, "agent").to_string();
            let execution = self
                .make(
                    server,
                    org,
                    "AgentExecution",
                    json!({ "metadata": {}, "spec": { "message": "parent", "agentId": agent } }),
                )
                .await;
            self.put(org, "agentExecution", id_of(&execution));
        }
        if needs(Parent::WorkflowExecution) {
            let instance = self.id(org, "workflowInstance").to_string();
            let execution = self
                .make(
                    server,
                    org,
                    "WorkflowExecution",
                    json!({ "metadata": {}, "spec": { "workflowInstanceId": instance, "triggerMessage": "parent" } }),
                )
                .await;
            self.put(org, "workflowExecution", id_of(&execution));
        }
    }

    async fn make(&self, server: &TestServer, org: &str, kind: &str, request: Value) -> Value {
        let path = case(kind).command("create");
        call(server, org, &path, &request)
            .await
            .unwrap_or_else(|s| panic!("fixture: create {kind} in {org} failed: {s:?}"))
    }

    fn put(&mut self, org: &str, name: &str, id: String) {
        self.ids.insert((org.to_string(), name.to_string()), id);
    }

    pub fn id(&self, org: &str, name: &str) -> &str {
        self.ids
            .get(&(org.to_string(), name.to_string()))
            .unwrap_or_else(|| {
                panic!("the fixture has no {{{name}}} in org {org:?}; add its Parent")
            })
    }

    /// `value` with every `"{name}"` string replaced by the id of that parent in `org`, and
    /// every `"{other:name}"` by the one in OTHER_ORG.
    pub fn resolve(&self, value: &Value, org: &str) -> Value {
        match value {
            Value::String(text) => match placeholder(text) {
                Some(name) => match name.strip_prefix("other:") {
                    Some(name) => json!(self.id(OTHER_ORG, name)),
                    None => json!(self.id(org, name)),
                },
                None => value.clone(),
            },
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.resolve(v, org)).collect())
            }
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), self.resolve(v, org)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `text` with the placeholders in it replaced as `resolve` does.
    pub fn resolve_text(&self, text: &str, org: &str) -> String {
        let mut text = text.to_string();
        for ((owner, name), id) in &self.ids {
            if owner == org {
                text = text.replace(&format!("{{{name}}}"), id);
            }
            if owner == OTHER_ORG {
                text = text.replace(&format!("{{other:{name}}}"), id);
            }
        }
        text
    }

    /// Ids of the fixture's resources of `kind` in `org`, ascending.
    pub fn ids_of(&self, kind: &str, org: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .made
            .iter()
            .filter(|(k, o, _)| k == kind && o == org)
            .map(|(_, _, id)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn contains(&self, id: &str) -> bool {
        self.made.iter().any(|(_, _, made)| made == id)
    }
}

/// "name" of a `"{name}"` placeholder.
fn placeholder(text: &str) -> Option<&str> {
    let name = text.strip_prefix('{')?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == ':'))
        .then_some(name)
}
