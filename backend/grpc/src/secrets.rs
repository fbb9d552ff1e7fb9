//! Secret values in resources: EnvironmentValue and ExecutionValue entries marked `is_secret`.
//! They are sealed before anything is stored (so the database, its change log and WAL never
//! hold them in plain text), redacted in everything the API returns, and opened only on the
//! just-in-time path of a running execution's ExecutionContext.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value,
};
use stigmer_secrets::{Keyring, is_sealed};

use crate::encode::encode_message;
use crate::error::{ApiError, FieldViolation};
use crate::fields::{get_str, set_str};

/// What a secret's value reads as outside the just-in-time path.
pub(crate) const REDACTED: &str = "[redacted: secret]";

const SECRET_TYPES: &[&str] = &[
    "ai.stigmer.agentic.environment.v1.EnvironmentValue",
    "ai.stigmer.agentic.executioncontext.v1.ExecutionValue",
];

/// Which message types can hold a secret somewhere below them, so that walks skip the rest.
#[derive(Debug)]
pub(crate) struct SecretMap {
    holders: HashSet<String>,
}

/// The map of our own descriptor pool, built once.
static API_SECRETS: LazyLock<SecretMap> =
    LazyLock::new(|| SecretMap::new(&stigmer_api::DESCRIPTOR_POOL));

impl SecretMap {
    /// The map of every message in the API.
    pub(crate) fn api() -> &'static Self {
        &API_SECRETS
    }

    /// The protobuf encoding reads return for `resource`: secrets redacted.
    pub(crate) fn public_encoding(&self, resource: &DynamicMessage) -> Vec<u8> {
        // Most resources that could hold a secret hold none; copying them to redact nothing
        // costs more than looking.
        if self.has_secret(resource) {
            let mut public = resource.clone();
            self.redact(&mut public);
            encode_message(&public)
        } else {
            encode_message(resource)
        }
    }

    pub(crate) fn new(pool: &DescriptorPool) -> Self {
        let mut holders: HashSet<String> = SECRET_TYPES.iter().map(|s| s.to_string()).collect();
        loop {
            let before = holders.len();
            for message in pool.all_messages() {
                if message
                    .fields()
                    .any(|f| field_type(&f).is_some_and(|t| holders.contains(t.full_name())))
                {
                    holders.insert(message.full_name().to_string());
                }
            }
            if holders.len() == before {
                return Self { holders };
            }
        }
    }

    fn holds(&self, descriptor: &MessageDescriptor) -> bool {
        self.holders.contains(descriptor.full_name())
    }

    /// Whether any value under `message` is marked secret.
    pub(crate) fn has_secret(&self, message: &DynamicMessage) -> bool {
        if !self.holds(&message.descriptor()) {
            return false;
        }
        if SECRET_TYPES.contains(&message.descriptor().full_name()) {
            return matches!(
                message.get_field_by_name("is_secret").as_deref(),
                Some(Value::Bool(true))
            );
        }
        message.fields().any(|(field, value)| {
            field_type(&field).is_some_and(|t| self.holds(&t))
                && match value {
                    Value::Message(child) => self.has_secret(child),
                    Value::List(items) => items.iter().any(
                        |item| matches!(item, Value::Message(child) if self.has_secret(child)),
                    ),
                    Value::Map(entries) => entries.values().any(
                        |item| matches!(item, Value::Message(child) if self.has_secret(child)),
                    ),
                    _ => false,
                }
        })
    }

    /// Calls `visit(path, value)` for every secret value under `message`.
    fn walk(
        &self,
        message: &mut DynamicMessage,
        path: &str,
        visit: &mut dyn FnMut(&str, &mut DynamicMessage),
    ) {
        if !self.holds(&message.descriptor()) {
            return;
        }
        if SECRET_TYPES.contains(&message.descriptor().full_name()) {
            if matches!(
                message.get_field_by_name("is_secret").as_deref(),
                Some(Value::Bool(true))
            ) {
                visit(path, message);
            }
            return;
        }
        for (field, value) in message.fields_mut() {
            if !field_type(&field).is_some_and(|t| self.holds(&t)) {
                continue;
            }
            let here = if path.is_empty() {
                field.name().to_string()
            } else {
                format!("{path}.{}", field.name())
            };
            match value {
                Value::Message(child) => self.walk(child, &here, visit),
                Value::List(items) => {
                    for (index, item) in items.iter_mut().enumerate() {
                        if let Value::Message(child) = item {
                            self.walk(child, &format!("{here}[{index}]"), visit);
                        }
                    }
                }
                Value::Map(entries) => {
                    for (key, item) in entries.iter_mut() {
                        if let (Value::Message(child), prost_reflect::MapKey::String(key)) =
                            (item, key)
                        {
                            self.walk(child, &format!("{here}[{key:?}]"), visit);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Replaces every secret value with [`REDACTED`].
    pub(crate) fn redact(&self, message: &mut DynamicMessage) {
        self.walk(message, "", &mut |_, secret| {
            set_str(secret, "value", REDACTED)
        });
    }

    /// Opens every sealed secret value (the just-in-time path only).
    pub(crate) fn open(
        &self,
        keyring: &Keyring,
        message: &mut DynamicMessage,
    ) -> Result<(), ApiError> {
        let mut failure = None;
        self.walk(message, "", &mut |path, secret| {
            let value = get_str(secret, "value");
            if is_sealed(&value) {
                match keyring.open(&value) {
                    Ok(plain) => set_str(secret, "value", plain),
                    Err(err) => {
                        failure = Some(ApiError::internal(format!(
                            "opening the secret at {path}: {err}"
                        )))
                    }
                }
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Seals every secret value of a resource about to be stored. A value sent back redacted,
    /// or unchanged, keeps its stored ciphertext, so that round trips and no-op updates work.
    pub(crate) fn seal(
        &self,
        keyring: &Keyring,
        resource: &mut DynamicMessage,
        stored: Option<&DynamicMessage>,
    ) -> Result<Vec<FieldViolation>, ApiError> {
        let mut before = HashMap::new();
        if let Some(stored) = stored {
            let mut stored = stored.clone();
            self.walk(&mut stored, "", &mut |path, secret| {
                before.insert(path.to_string(), get_str(secret, "value"));
            });
        }
        let mut violations = Vec::new();
        let mut failure = None;
        self.walk(resource, "", &mut |path, secret| {
            let value = get_str(secret, "value");
            let kept = before.get(path);
            let unchanged = kept.is_some_and(|sealed| {
                value == REDACTED
                    || *sealed == value
                    || keyring.open(sealed).is_ok_and(|plain| plain == value)
            });
            if let (true, Some(sealed)) = (unchanged, kept) {
                set_str(secret, "value", sealed.clone());
            } else if value == REDACTED || is_sealed(&value) {
                violations.push(FieldViolation::new(
                    format!("{path}.value"),
                    "holds a redacted or sealed value, not a secret: send the secret itself",
                ));
            } else {
                match keyring.seal(&value) {
                    Ok(sealed) => set_str(secret, "value", sealed),
                    Err(err) => {
                        failure = Some(ApiError::internal(format!(
                            "sealing the secret at {path}: {err}"
                        )))
                    }
                }
            }
        });
        failure.map_or(Ok(violations), Err)
    }
}

fn field_type(field: &prost_reflect::FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(message) if message.is_map_entry() => {
            match message.map_entry_value_field().kind() {
                Kind::Message(value) => Some(value),
                _ => None,
            }
        }
        Kind::Message(message) => Some(message),
        _ => None,
    }
}
