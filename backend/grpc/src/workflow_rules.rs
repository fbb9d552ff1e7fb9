//! Rules of a WorkflowSpec that buf.validate field rules cannot express: task names unique per
//! list, jump targets that exist, and every `task_config` Struct being a valid instance of the
//! config message its kind names. FOR, FORK and TRY carry task lists of their own inside that
//! Struct, so the rules apply again to every nested list.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use prost_protovalidate::{Error, Validator, Violation};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use serde_json::Value as Json;

use crate::error::FieldViolation;
use crate::fields::{child, get_i32, get_str, has};

/// Package of the kind-specific config messages (they travel only as Structs).
const TASKS_PACKAGE: &str = "ai.stigmer.agentic.workflow.v1.tasks";
/// The message nested task lists are made of.
const TASK_MESSAGE: &str = "ai.stigmer.agentic.workflow.v1.WorkflowTask";
/// Kind value names are this prefix plus the config message name in SCREAMING_SNAKE_CASE.
const KIND_PREFIX: &str = "WORKFLOW_TASK_KIND_";
/// The reserved jump target that ends the workflow.
const END: &str = "end";
/// Beyond this many tasks, listing the valid targets is more noise than help.
const MAX_LISTED_TARGETS: usize = 8;

/// Semantic rules of a WorkflowSpec beyond field rules. Paths are relative to the resource and
/// in JSON names, e.g. "spec.tasks[2].taskConfig.method": below taskConfig (a Struct) nothing
/// renames them later.
// Nothing calls this outside the tests until the Workflow controller is wired to it.
pub(crate) fn check_workflow_spec(
    validator: &Validator,
    spec: &DynamicMessage,
) -> Vec<FieldViolation> {
    let mut out = Vec::new();
    check_task_list(validator, &messages(spec, "tasks"), "spec.tasks", &mut out);
    out
}

/// The messages of the repeated message field `field`; empty if unset or no such field.
fn messages(message: &DynamicMessage, field: &str) -> Vec<DynamicMessage> {
    message
        .get_field_by_name(field)
        .and_then(|value| {
            value.as_list().map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_message)
                    .cloned()
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Rules 1–3 (and 5, through recursion) for one list of tasks found at `path`.
fn check_task_list(
    validator: &Validator,
    tasks: &[DynamicMessage],
    path: &str,
    out: &mut Vec<FieldViolation>,
) {
    let names: Vec<String> = tasks.iter().map(|task| get_str(task, "name")).collect();
    check_unique_names(&names, path, out);
    for (index, task) in tasks.iter().enumerate() {
        let task_path = format!("{path}[{index}]");
        let then = child(task, "flow")
            .map(|flow| get_str(&flow, "then"))
            .unwrap_or_default();
        check_target(&names, &then, &format!("{task_path}.flow.then"), out);
        let Some(config) = task_config(validator, task, &task_path, out) else {
            continue;
        };
        let config_path = format!("{task_path}.taskConfig");
        for (case_path, target) in switch_targets(&config, &config_path) {
            check_target(&names, &target, &case_path, out);
        }
        for (list_path, list) in nested_task_lists(&config, &config_path) {
            check_task_list(validator, &list, &list_path, out);
        }
    }
}

fn check_unique_names(names: &[String], path: &str, out: &mut Vec<FieldViolation>) {
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, name) in names.iter().enumerate() {
        // An empty name is the `required` field rule's to report.
        if name.is_empty() {
            continue;
        }
        match first_index.entry(name) {
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
            Entry::Occupied(first) => out.push(FieldViolation::new(
                format!("{path}[{index}].name"),
                format!(
                    "task name {name:?} is already used by {path}[{}]",
                    first.get()
                ),
            )),
        }
    }
}

/// A jump (flow.then or a SWITCH case's then) must stay within its own list, or end.
fn check_target(names: &[String], target: &str, path: &str, out: &mut Vec<FieldViolation>) {
    // Empty means "the next task" for flow.then, and is a field-rule violation for a case.
    if target.is_empty() || target == END || names.iter().any(|name| name == target) {
        return;
    }
    let mut description = format!("{target:?} names no task of this list and is not \"{END}\"");
    if names.len() <= MAX_LISTED_TARGETS {
        let valid: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|name| !name.is_empty())
            .chain([END])
            .collect();
        description.push_str(&format!("; valid: {}", valid.join(", ")));
    }
    out.push(FieldViolation::new(path, description));
}

/// The task's config as the message its kind names, its field rules checked. `None` when
/// there is no config to look further into.
fn task_config(
    validator: &Validator,
    task: &DynamicMessage,
    task_path: &str,
    out: &mut Vec<FieldViolation>,
) -> Option<DynamicMessage> {
    let kind = get_i32(task, "kind");
    // An unspecified kind or a missing config is already a field-rule violation.
    if kind == 0 || !has(task, "task_config") {
        return None;
    }
    let descriptor = match config_descriptor(task, kind) {
        Ok(descriptor) => descriptor,
        Err(reason) => {
            out.push(FieldViolation::new(format!("{task_path}.kind"), reason));
            return None;
        }
    };
    let path = format!("{task_path}.taskConfig");
    let config = child(task, "task_config")
        .and_then(|config| struct_to_json(&config, &path, out))
        .and_then(|json| convert(&descriptor, json, &path, out))?;
    validate(validator, &config, &path, out);
    Some(config)
}

/// The tasks.* message a kind value names, found by name so that a new kind needs no code here.
fn config_descriptor(task: &DynamicMessage, kind: i32) -> Result<MessageDescriptor, String> {
    let value = task
        .descriptor()
        .get_field_by_name("kind")
        .and_then(|field| field.kind().as_enum().cloned())
        .and_then(|kinds| kinds.get_value(kind))
        .ok_or_else(|| format!("{kind} is not a known task kind"))?;
    let name = config_message_name(value.name());
    task.descriptor()
        .parent_pool()
        .get_message_by_name(&format!("{TASKS_PACKAGE}.{name}"))
        .ok_or_else(|| format!("{} has no config message {name}", value.name()))
}

/// WORKFLOW_TASK_KIND_HTTP_CALL → HttpCallTaskConfig.
fn config_message_name(kind_value: &str) -> String {
    let stem = kind_value.strip_prefix(KIND_PREFIX).unwrap_or(kind_value);
    let mut name: String = stem.split('_').map(capitalize).collect();
    name.push_str("TaskConfig");
    name
}

fn capitalize(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn struct_to_json(
    config: &DynamicMessage,
    path: &str,
    out: &mut Vec<FieldViolation>,
) -> Option<Json> {
    serde_json::to_value(config)
        .map_err(|err| {
            out.push(FieldViolation::new(
                path,
                format!("is not valid JSON: {err}"),
            ))
        })
        .ok()
}

/// Proto3 JSON parsing of the config: lowerCamel and snake_case keys both accepted, unknown
/// keys refused so that a typo is not silently dropped.
fn convert(
    descriptor: &MessageDescriptor,
    json: Json,
    path: &str,
    out: &mut Vec<FieldViolation>,
) -> Option<DynamicMessage> {
    // The parser names no path for an unknown key, so find those first, each where it is.
    let unknown = unknown_fields(descriptor, &json, path);
    if !unknown.is_empty() {
        out.extend(unknown);
        return None;
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(descriptor.clone(), json, &options)
        .map_err(|err| {
            let description = format!("does not convert to {}: {err}", descriptor.name());
            out.push(FieldViolation::new(path, description));
        })
        .ok()
}

/// Keys of `json` that `descriptor` (and the messages under it) has no field for.
fn unknown_fields(descriptor: &MessageDescriptor, json: &Json, path: &str) -> Vec<FieldViolation> {
    // Anything but an object is a type error, which the parser reports.
    let Json::Object(object) = json else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, value) in object {
        let field = descriptor
            .get_field_by_json_name(key)
            .or_else(|| descriptor.get_field_by_name(key));
        let Some(field) = field else {
            let description = format!(
                "unknown field; {} has: {}",
                descriptor.name(),
                field_names(descriptor)
            );
            out.push(FieldViolation::new(format!("{path}.{key}"), description));
            continue;
        };
        // Map keys are free-form (our maps hold strings), and well-known types such as
        // Struct have JSON forms of their own.
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        if field.is_map() || is_well_known(&inner) {
            continue;
        }
        let field_path = format!("{path}.{}", field.json_name());
        match value {
            Json::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let item_path = format!("{field_path}[{index}]");
                    out.extend(unknown_fields(&inner, item, &item_path));
                }
            }
            _ => out.extend(unknown_fields(&inner, value, &field_path)),
        }
    }
    out
}

fn field_names(descriptor: &MessageDescriptor) -> String {
    let names: Vec<String> = descriptor
        .fields()
        .map(|field| field.json_name().to_string())
        .collect();
    names.join(", ")
}

fn is_well_known(descriptor: &MessageDescriptor) -> bool {
    descriptor.package_name() == "google.protobuf"
}

/// The config's buf.validate rules, with paths made relative to the resource.
fn validate(
    validator: &Validator,
    config: &DynamicMessage,
    path: &str,
    out: &mut Vec<FieldViolation>,
) {
    match validator.validate(config) {
        Ok(()) => {}
        Err(Error::Validation(err)) => {
            let descriptor = config.descriptor();
            out.extend(
                err.violations()
                    .iter()
                    .map(|violation| relative_to(&descriptor, path, violation)),
            )
        }
        Err(other) => out.push(FieldViolation::new(
            path,
            format!(
                "the rules of {} could not run: {other}",
                config.descriptor().name()
            ),
        )),
    }
}

fn relative_to(config: &MessageDescriptor, path: &str, violation: &Violation) -> FieldViolation {
    let mut found = crate::validation::field_violation(config, violation);
    found.field = if found.field.is_empty() {
        path.to_string()
    } else {
        format!("{path}.{}", found.field)
    };
    found
}

/// Each SWITCH case's `then`, which jumps within the enclosing list just as flow.then does.
fn switch_targets(config: &DynamicMessage, config_path: &str) -> Vec<(String, String)> {
    if config.descriptor().name() != "SwitchTaskConfig" {
        return Vec::new();
    }
    messages(config, "cases")
        .iter()
        .enumerate()
        .map(|(index, case)| {
            let path = format!("{config_path}.cases[{index}].then");
            (path, get_str(case, "then"))
        })
        .collect()
}

/// Every list of WorkflowTask anywhere inside `message` (FOR `do`, FORK `branches[i].do`, TRY
/// `try` and `catch.do`), with its path. Found by type, so a new nesting kind needs no code.
fn nested_task_lists(message: &DynamicMessage, path: &str) -> Vec<(String, Vec<DynamicMessage>)> {
    let mut lists = Vec::new();
    for (field, value) in message.fields() {
        let Kind::Message(inner) = field.kind() else {
            continue;
        };
        if field.is_map() || is_well_known(&inner) {
            continue;
        }
        let field_path = format!("{path}.{}", field.json_name());
        let holds_tasks = inner.full_name() == TASK_MESSAGE;
        match value {
            Value::List(items) if holds_tasks => {
                let tasks = items
                    .iter()
                    .filter_map(Value::as_message)
                    .cloned()
                    .collect();
                lists.push((field_path, tasks));
            }
            Value::List(items) => {
                for (index, item) in items.iter().enumerate() {
                    if let Some(item) = item.as_message() {
                        let item_path = format!("{field_path}[{index}]");
                        lists.extend(nested_task_lists(item, &item_path));
                    }
                }
            }
            Value::Message(inner_message) if !holds_tasks => {
                lists.extend(nested_task_lists(inner_message, &field_path));
            }
            _ => {}
        }
    }
    lists
}

#[cfg(test)]
mod tests {
    use prost_protovalidate::ValidatorOption;
    use serde_json::json;

    use super::*;

    fn validator() -> Validator {
        Validator::with_options(&[ValidatorOption::AdditionalDescriptorSetBytes(
            stigmer_api::FILE_DESCRIPTOR_SET.to_vec(),
        )])
    }

    /// The violations of a spec whose tasks are `tasks`.
    fn violations(tasks: Json) -> Vec<FieldViolation> {
        let descriptor = stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name("ai.stigmer.agentic.workflow.v1.WorkflowSpec")
            .expect("WorkflowSpec descriptor");
        let spec = json!({
            "document": {"dsl": "1.0.0", "namespace": "ns", "name": "wf", "version": "1"},
            "tasks": tasks,
        });
        let spec = crate::json::from_json(&descriptor, &spec.to_string()).expect("spec parses");
        check_workflow_spec(&validator(), &spec)
    }

    fn paths(violations: &[FieldViolation]) -> Vec<&str> {
        violations.iter().map(|v| v.field.as_str()).collect()
    }

    fn task(name: &str, kind: &str, config: Json) -> Json {
        json!({"name": name, "kind": format!("WORKFLOW_TASK_KIND_{kind}"), "taskConfig": config})
    }

    fn http(name: &str, method: &str) -> Json {
        task(
            name,
            "HTTP_CALL",
            // timeout_seconds has no presence, so its 1..300 rule applies even when unset.
            json!({"method": method, "endpoint": {"uri": "https://example.com"}, "timeoutSeconds": 10}),
        )
    }

    fn wait(name: &str, seconds: i32) -> Json {
        task(name, "WAIT", json!({"seconds": seconds}))
    }

    #[test]
    fn every_task_kind_names_a_config_message() {
        let pool = &stigmer_api::DESCRIPTOR_POOL;
        let kinds = pool
            .get_enum_by_name("ai.stigmer.commons.apiresource.WorkflowTaskKind")
            .expect("WorkflowTaskKind");
        for value in kinds.values().filter(|value| value.number() != 0) {
            let name = format!("{TASKS_PACKAGE}.{}", config_message_name(value.name()));
            assert!(pool.get_message_by_name(&name).is_some(), "{name} missing");
        }
        assert_eq!(
            config_message_name("WORKFLOW_TASK_KIND_AGENT_CALL"),
            "AgentCallTaskConfig"
        );
    }

    #[test]
    fn a_valid_workflow_with_nested_for_fork_and_try_has_no_violations() {
        let tasks = json!([
            task("init", "SET", json!({"variables": {"n": "1"}})),
            // snake_case and lowerCamel keys are both proto3 JSON.
            task("fetch", "HTTP_CALL", json!({
                "method": "GET", "endpoint": {"uri": "https://x"}, "timeout_seconds": 30,
                "headers": {"accept": "json"}, "body": {"any": ["thing", 1]}
            })),
            task("post", "HTTP_CALL", json!({
                "method": "POST", "endpoint": {"uri": "https://x"}, "timeoutSeconds": 5
            })),
            task("loop", "FOR", json!({"each": "item", "in": "${ .items }", "do": [
                http("get", "GET"),
                {"name": "pause", "kind": "WORKFLOW_TASK_KIND_WAIT",
                 "task_config": {"seconds": 1}, "flow": {"then": "get"}},
            ]})),
            task("fan", "FORK", json!({"compete": true, "branches": [
                {"name": "a", "do": [http("get", "GET")]},
                {"name": "b", "do": [task("inner", "TRY", json!({
                    "try": [http("get", "PUT")],
                    "catch": {"as": "err", "do": [wait("backoff", 2)]}
                }))]},
            ]})),
            task("guard", "TRY", json!({
                "try": [http("call", "DELETE"), task("grpc", "GRPC_CALL",
                    json!({"service": "s", "method": "m", "request": {"a": 1}}))],
                "catch": {"do": [task("fail", "RAISE", json!({"error": "${.e}", "message": "m"}))]}
            })),
            task("route", "SWITCH", json!({"cases": [
                {"name": "again", "when": "${ .retry }", "then": "fetch"},
                {"name": "done", "then": "end"},
            ]})),
            task("listen", "LISTEN", json!({"to": {"mode": "one",
                "signals": [{"id": "go", "type": "signal"}]}})),
            task("activity", "CALL_ACTIVITY", json!({"activity": "a", "input": {"x": true}})),
            task("run", "RUN", json!({"workflow": "other"})),
            {"name": "ask", "kind": "WORKFLOW_TASK_KIND_AGENT_CALL",
             "task_config": {"agent": "helper", "message": "${ .q }", "scope": "platform",
                             "config": {"model": "m", "timeout": 60, "temperature": 0.5}},
             "export": {"as": "${.}"}, "flow": {"then": "end"}},
            wait("last", 1),
        ]);
        assert_eq!(violations(tasks), vec![]);
    }

    #[test]
    fn duplicate_names_name_the_later_task_and_the_earlier_index() {
        let found = violations(json!([
            wait("a", 1),
            wait("b", 1),
            // The same name in a nested list is another list, so it is no duplicate.
            task(
                "a",
                "FOR",
                json!({"each": "i", "in": "${.x}",
                "do": [wait("a", 1), wait("x", 1), wait("x", 1)]})
            ),
        ]));
        assert_eq!(
            paths(&found),
            ["spec.tasks[2].name", "spec.tasks[2].taskConfig.do[2].name"]
        );
        assert_eq!(
            found[0].description,
            "task name \"a\" is already used by spec.tasks[0]"
        );
        assert!(
            found[1]
                .description
                .contains("spec.tasks[2].taskConfig.do[1]")
        );
    }

    #[test]
    fn flow_then_must_name_a_task_of_the_same_list_or_end() {
        let mut bad = wait("b", 1);
        bad["flow"] = json!({"then": "nowhere"});
        let mut outer_target = wait("inner", 1);
        outer_target["flow"] = json!({"then": "a"});
        let found = violations(json!([
            wait("a", 1),
            bad,
            task(
                "loop",
                "FOR",
                json!({"each": "i", "in": "${.x}", "do": [outer_target]})
            ),
        ]));
        assert_eq!(
            paths(&found),
            [
                "spec.tasks[1].flow.then",
                "spec.tasks[2].taskConfig.do[0].flow.then"
            ]
        );
        assert_eq!(
            found[0].description,
            "\"nowhere\" names no task of this list and is not \"end\"; valid: a, b, loop, end"
        );
    }

    #[test]
    fn an_unknown_field_in_task_config_is_named_with_the_fields_there_are() {
        let found = violations(json!([
            task(
                "a",
                "HTTP_CALL",
                json!({"methd": "GET", "endpoint": {"uri": "u"}})
            ),
            task(
                "b",
                "HTTP_CALL",
                json!({"method": "GET", "endpoint": {"url": "u"}})
            ),
        ]));
        assert_eq!(
            paths(&found),
            [
                "spec.tasks[0].taskConfig.methd",
                "spec.tasks[1].taskConfig.endpoint.url"
            ]
        );
        assert_eq!(
            found[0].description,
            "unknown field; HttpCallTaskConfig has: method, endpoint, headers, body, timeoutSeconds"
        );
        assert_eq!(found[1].description, "unknown field; HttpEndpoint has: uri");
    }

    #[test]
    fn a_config_of_the_wrong_type_names_the_task_config() {
        let found = violations(json!([task(
            "a",
            "HTTP_CALL",
            json!({"method": 5, "endpoint": {"uri": "u"}})
        ),]));
        assert_eq!(paths(&found), ["spec.tasks[0].taskConfig"]);
        assert!(
            found[0]
                .description
                .starts_with("does not convert to HttpCallTaskConfig")
        );
    }

    #[test]
    fn a_broken_config_rule_is_named_under_task_config() {
        let found = violations(json!([wait("a", 1), http("b", "FETCH")]));
        assert_eq!(paths(&found), ["spec.tasks[1].taskConfig.method"]);
    }

    #[test]
    fn a_broken_rule_two_levels_deep_has_the_full_path() {
        let found = violations(json!([
            wait("first", 1),
            task(
                "loop",
                "FOR",
                json!({"each": "i", "in": "${.x}", "do": [
                    task("guard", "TRY", json!({
                        "try": [http("call", "FETCH")],
                        "catch": {"do": [wait("backoff", 0)]}
                    })),
                ]})
            ),
        ]));
        assert_eq!(
            paths(&found),
            [
                "spec.tasks[1].taskConfig.do[0].taskConfig.try[0].taskConfig.method",
                "spec.tasks[1].taskConfig.do[0].taskConfig.catch.do[0].taskConfig.seconds",
            ]
        );
    }

    #[test]
    fn a_switch_case_must_jump_within_its_list() {
        let found = violations(json!([
            task(
                "route",
                "SWITCH",
                json!({"cases": [
                    {"name": "ok", "then": "next"},
                    {"name": "bad", "then": "missing"},
                ]})
            ),
            wait("next", 1),
        ]));
        assert_eq!(paths(&found), ["spec.tasks[0].taskConfig.cases[1].then"]);
    }

    #[test]
    fn a_fork_needs_two_branches() {
        let found = violations(json!([task(
            "fan",
            "FORK",
            json!({"branches": [{"name": "only", "do": [wait("w", 1)]}]})
        ),]));
        assert_eq!(paths(&found), ["spec.tasks[0].taskConfig.branches"]);
    }

    #[test]
    fn an_unspecified_kind_is_left_to_the_field_rules() {
        let found = violations(json!([
            {"name": "a", "kind": "WORKFLOW_TASK_KIND_UNSPECIFIED", "task_config": {"x": 1}},
            {"name": "b", "task_config": {"bogus": true}},
        ]));
        assert_eq!(found, vec![]);
    }
}
