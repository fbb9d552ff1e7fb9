//! Field paths in the names users write. Rules and protovalidate name fields as the .proto
//! does (`spec.skill_refs[0]`); manifests, grpcurl bodies and stored JSON use the lowerCamel
//! JSON names (`spec.skillRefs[0]`), so every violation is renamed here before it leaves.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// `path` (as protovalidate renders it) with each field named by its JSON name, walking
/// `root`'s descriptor. Subscripts (`[0]`, `["KEY"]`) stay as they are; from the first segment
/// the descriptor does not know (a Struct's keys, a header name), the rest stays as given.
pub(crate) fn json_path(root: &MessageDescriptor, path: &str) -> String {
    let mut message = Some(root.clone());
    let mut out = Vec::new();
    for (name, subscripts) in segments(path) {
        let field = message.as_ref().and_then(|m| field_named(m, name));
        let Some(field) = field else {
            message = None;
            out.push(format!("{name}{subscripts}"));
            continue;
        };
        out.push(format!("{}{subscripts}", field.json_name()));
        message = inner_message(&field, !subscripts.is_empty());
    }
    out.join(".")
}

/// For a `(buf.validate.oneof).required` violation at `path` (`spec.server_type`): the JSON
/// path of the message holding the oneof (`spec`) and the JSON paths of its members, or `None`
/// when `path` names no oneof.
pub(crate) fn oneof_members(root: &MessageDescriptor, path: &str) -> Option<(String, Vec<String>)> {
    let (parent_path, oneof_name) = match path.rsplit_once('.') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    };
    let parent = message_at(root, parent_path)?;
    let oneof = parent.oneofs().find(|o| o.name() == oneof_name)?;
    let parent_json = json_path(root, parent_path);
    let members = oneof
        .fields()
        .map(|field| match parent_json.as_str() {
            "" => field.json_name().to_string(),
            prefix => format!("{prefix}.{}", field.json_name()),
        })
        .collect();
    Some((parent_json, members))
}

/// The message type found at `path` under `root` (`root` itself for an empty path).
fn message_at(root: &MessageDescriptor, path: &str) -> Option<MessageDescriptor> {
    let mut message = root.clone();
    for (name, subscripts) in segments(path) {
        let field = field_named(&message, name)?;
        message = inner_message(&field, !subscripts.is_empty())?;
    }
    Some(message)
}

/// A field by its proto name or, so that renaming twice changes nothing, its JSON name.
fn field_named(message: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    if is_well_known(message) {
        return None;
    }
    message
        .get_field_by_name(name)
        .or_else(|| message.get_field_by_json_name(name))
}

/// The message a path goes on into after `field`: a map's value or a list's item when
/// subscripted, the field's own message otherwise.
fn inner_message(field: &FieldDescriptor, subscripted: bool) -> Option<MessageDescriptor> {
    let Kind::Message(message) = field.kind() else {
        return None;
    };
    if field.is_map() {
        if !subscripted {
            return None;
        }
        return match message.map_entry_value_field().kind() {
            Kind::Message(value) => Some(value),
            _ => None,
        };
    }
    if field.is_list() && !subscripted {
        return None;
    }
    Some(message)
}

/// google.protobuf types (Struct, Value, Any…) hold user keys, not fields.
fn is_well_known(message: &MessageDescriptor) -> bool {
    message.package_name() == "google.protobuf"
}

/// `a.b[0].c["x.y"]` → `[("a", ""), ("b", "[0]"), ("c", "[\"x.y\"]")]`: split on the dots
/// outside subscripts and quoted keys.
fn segments(path: &str) -> Vec<(&str, &str)> {
    if path.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mut start, mut depth, mut quoted, mut escaped) = (0, 0usize, false, false);
    for (at, c) in path.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if depth > 0 => quoted = true,
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(split_subscripts(&path[start..at]));
                start = at + 1;
            }
            _ => {}
        }
    }
    out.push(split_subscripts(&path[start..]));
    out
}

fn split_subscripts(segment: &str) -> (&str, &str) {
    match segment.find('[') {
        Some(at) => segment.split_at(at),
        None => (segment, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(name: &str) -> MessageDescriptor {
        stigmer_api::DESCRIPTOR_POOL
            .get_message_by_name(name)
            .unwrap_or_else(|| panic!("{name} descriptor"))
    }

    fn agent() -> MessageDescriptor {
        descriptor("ai.stigmer.agentic.agent.v1.Agent")
    }

    #[test]
    fn fields_get_their_json_names_and_subscripts_stay() {
        let agent = agent();
        assert_eq!(
            json_path(&agent, "spec.skill_refs[0].org"),
            "spec.skillRefs[0].org"
        );
        assert_eq!(json_path(&agent, "api_version"), "apiVersion");
        assert_eq!(json_path(&agent, "spec.skillRefs[0]"), "spec.skillRefs[0]");
        let env = descriptor("ai.stigmer.agentic.environment.v1.Environment");
        assert_eq!(
            json_path(&env, r#"spec.data["my_key.x[1]"].is_secret"#),
            r#"spec.data["my_key.x[1]"].isSecret"#
        );
    }

    #[test]
    fn unknown_segments_and_struct_keys_stay_as_given() {
        let agent = agent();
        assert_eq!(
            json_path(&agent, "spec.no_such.field_x"),
            "spec.no_such.field_x"
        );
        assert_eq!(json_path(&agent, "x-stigmer-org"), "x-stigmer-org");
        assert_eq!(json_path(&agent, ""), "");
        let workflow = descriptor("ai.stigmer.agentic.workflow.v1.Workflow");
        assert_eq!(
            json_path(&workflow, "spec.tasks[1].task_config.timeout_seconds"),
            "spec.tasks[1].taskConfig.timeout_seconds"
        );
    }

    #[test]
    fn a_required_oneof_names_its_members() {
        let mcp = descriptor("ai.stigmer.agentic.mcpserver.v1.McpServer");
        let (parent, members) = oneof_members(&mcp, "spec.server_type").expect("a oneof");
        assert_eq!(parent, "spec");
        assert_eq!(members, ["spec.stdio", "spec.http", "spec.docker"]);
        assert!(oneof_members(&mcp, "spec.description").is_none());
        let spec = descriptor("ai.stigmer.agentic.mcpserver.v1.McpServerSpec");
        let (parent, members) = oneof_members(&spec, "server_type").expect("a oneof");
        assert_eq!((parent.as_str(), members[0].as_str()), ("", "stdio"));
    }
}
