//! ResourceService/applyBatch: many resources of any kinds applied in one transaction, all or
//! none. Each item runs through its kind's own apply, against an [`overlay::Overlay`] that
//! shows the items before it, so references between items resolve; then every write commits
//! at once, each resource taking its own revision in item order.

mod overlay;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor, ReflectMessage, Value};
use stigmer_store::{Store, StoredResource};

use crate::catalog::{KindInfo, Method, Verb};
use crate::codec::Reply;
use crate::controller::{Controller, id_of};
use crate::error::{ApiError, FieldViolation};
use crate::fields::{get_str, set, set_str};
use crate::resource::{Caller, meta, set_revision};
use crate::validation::check;
use overlay::{Outcome, Overlay};

const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// One item of a batch, decoded, with the apply that serves its kind.
struct Item {
    apply: Arc<Method>,
    resource: DynamicMessage,
}

/// One call of a kind's method inside a batch or transaction, and where the caller's request
/// holds it (`resources[2]`), to name its mistakes by.
struct Step {
    method: Arc<Method>,
    request: DynamicMessage,
    at: String,
}

/// Steps run against an overlay, not yet committed: what each answered, and the writes.
struct Staged {
    overlay: Arc<Overlay>,
    replies: Vec<DynamicMessage>,
}

impl Controller {
    pub(crate) async fn apply_batch(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let steps: Vec<Step> = self
            .batch_items(caller, &request)?
            .into_iter()
            .enumerate()
            .map(|(index, item)| Step {
                method: item.apply,
                request: item.resource,
                at: format!("resources[{index}]"),
            })
            .collect();
        let failed = format!("batch of {} resources: nothing was applied", steps.len());
        let staged = self.stage(caller, &steps, failed).await?;
        let mutations = staged.overlay.mutations();
        let committed = if mutations.is_empty() {
            Vec::new()
        } else {
            self.store.transact(mutations).await?
        };
        answer(output, staged, &committed)
    }

    /// Runs every step, in order, against one overlay; nothing reaches the store. Every step's
    /// mistakes are reported (as `failed`, naming each step's fields), not only the first one's.
    async fn stage(
        &self,
        caller: &Caller,
        steps: &[Step],
        failed: String,
    ) -> Result<Staged, ApiError> {
        let overlay = Arc::new(Overlay::over(Arc::clone(&self.store)).await?);
        let staged = self.with_store(Arc::clone(&overlay) as Arc<dyn Store>);
        let mut replies = Vec::with_capacity(steps.len());
        let mut violations = Vec::new();
        for step in steps {
            if step.method.verb == Verb::Delete && overlay.holds_write_of(&id_of(&step.request)) {
                // Its cascade would see only committed children, not those the write made.
                violations.push(FieldViolation::new(
                    step.at.clone(),
                    "deletes a resource an operation before it wrote: put or delete each resource once in a transaction",
                ));
                continue;
            }
            match staged
                .handle(&step.method, caller, step.request.clone())
                .await
            {
                Ok(reply) => replies.push(decoded(&step.method.kind, reply)?),
                Err(ApiError::InvalidArgument {
                    violations: found, ..
                }) => violations.extend(in_item(&step.at, found)),
                Err(other) => return Err(other),
            }
        }
        if !violations.is_empty() {
            return Err(ApiError::invalid(failed, violations));
        }
        Ok(Staged { overlay, replies })
    }

    /// Each item unpacked, of a kind with an apply, in the caller's org and (cloud mode)
    /// allowed by its kind's apply rule.
    fn batch_items(
        &self,
        caller: &Caller,
        request: &DynamicMessage,
    ) -> Result<Vec<Item>, ApiError> {
        let Some(Value::List(anys)) = request.get_field_by_name("resources").as_deref().cloned()
        else {
            return Ok(Vec::new());
        };
        let mut items = Vec::with_capacity(anys.len());
        let mut violations = Vec::new();
        for (index, any) in anys.iter().enumerate() {
            match self.batch_item(caller, any) {
                Ok(item) => items.push(item),
                Err(ItemError::Invalid(why)) => {
                    violations.push(FieldViolation::new(format!("resources[{index}]"), why))
                }
                Err(ItemError::Refused(err)) => return Err(err),
            }
        }
        if violations.is_empty() {
            Ok(items)
        } else {
            Err(ApiError::invalid("ApplyBatchRequest", violations))
        }
    }

    fn batch_item(&self, caller: &Caller, any: &Value) -> Result<Item, ItemError> {
        let any = any
            .as_message()
            .ok_or_else(|| ItemError::Invalid("is not a google.protobuf.Any".into()))?;
        let type_url = get_str(any, "type_url");
        let name = type_url.strip_prefix(TYPE_URL_PREFIX).unwrap_or(&type_url);
        let kind = self
            .catalog
            .kinds()
            .iter()
            .find(|kind| kind.message.full_name() == name && !kind.is_iam())
            .ok_or_else(|| {
                ItemError::Invalid(format!(
                    "type_url {type_url:?} names no resource kind; use {TYPE_URL_PREFIX}<message>, e.g. {TYPE_URL_PREFIX}ai.stigmer.agentic.agent.v1.Agent"
                ))
            })?;
        let apply = self
            .catalog
            .method_of(&kind.name, Verb::Apply)
            .cloned()
            .ok_or_else(|| {
                ItemError::Invalid(format!(
                    "{} has no apply: a batch applies kinds that do (use its own create)",
                    kind.name
                ))
            })?;
        let bytes = any
            .get_field_by_name("value")
            .and_then(|value| value.as_bytes().cloned())
            .unwrap_or_default();
        let resource = DynamicMessage::decode(kind.message.clone(), bytes.as_ref())
            .map_err(|err| ItemError::Invalid(format!("is not a valid {}: {err}", kind.name)))?;
        crate::service::only_own_org(caller, &resource).map_err(ItemError::Refused)?;
        self.auth
            .authorize(&apply.path, caller, &resource)
            .map_err(ItemError::Refused)?;
        Ok(Item { apply, resource })
    }
}

/// The response of a committed batch or transaction: each step's resource, at the revision it
/// was written at (a deleted one as it was), with what happened to it.
fn answer(
    output: &MessageDescriptor,
    staged: Staged,
    committed: &[StoredResource],
) -> Result<DynamicMessage, ApiError> {
    let revisions: HashMap<&str, i64> = committed
        .iter()
        .map(|row| (row.id.as_str(), row.revision))
        .collect();
    let mut results = Vec::with_capacity(staged.replies.len());
    for mut resource in staged.replies {
        let id = meta(&resource).id;
        let outcome = staged.overlay.outcome(&id);
        if let (Some(revision), false) = (revisions.get(id.as_str()), outcome == Outcome::Deleted) {
            set_revision(&mut resource, *revision);
        }
        results.push(result(output, resource, outcome)?);
    }
    let mut response = DynamicMessage::new(output.clone());
    set(&mut response, "results", Value::List(results));
    let last = committed.iter().map(|row| row.revision).max().unwrap_or(0);
    set(&mut response, "revision", Value::I64(last));
    Ok(response)
}

enum ItemError {
    Invalid(String),
    Refused(ApiError),
}

/// Violations of the item at `item` (`resources[3]`), named from the request's root.
fn in_item(item: &str, violations: Vec<FieldViolation>) -> Vec<FieldViolation> {
    violations
        .into_iter()
        .map(|violation| {
            let field = if violation.field.is_empty() {
                item.to_string()
            } else {
                format!("{item}.{}", violation.field)
            };
            FieldViolation::new(field, violation.description)
        })
        .collect()
}

/// An item's answer as a message, whether it was built or served from a cached encoding.
fn decoded(kind: &KindInfo, reply: Reply) -> Result<DynamicMessage, ApiError> {
    match reply {
        Reply::Message(message) => Ok(message),
        Reply::Encoded(bytes) => DynamicMessage::decode(kind.message.clone(), bytes.as_ref())
            .map_err(|err| ApiError::internal(format!("re-reading a batch item: {err}"))),
    }
}

/// One `AppliedResource`: the resource as an Any and what happened to it.
fn result(
    output: &MessageDescriptor,
    resource: DynamicMessage,
    outcome: Outcome,
) -> Result<Value, ApiError> {
    let applied = output
        .get_field_by_name("results")
        .and_then(|field| field.kind().as_message().cloned())
        .ok_or_else(|| ApiError::internal(format!("{} lacks results", output.full_name())))?;
    let any_type = applied
        .get_field_by_name("resource")
        .and_then(|field| field.kind().as_message().cloned())
        .ok_or_else(|| ApiError::internal("AppliedResource lacks resource"))?;
    let mut any = DynamicMessage::new(any_type);
    set_str(
        &mut any,
        "type_url",
        format!("{TYPE_URL_PREFIX}{}", resource.descriptor().full_name()),
    );
    set(
        &mut any,
        "value",
        Value::Bytes(resource.encode_to_vec().into()),
    );
    let mut item = DynamicMessage::new(applied);
    set(&mut item, "resource", Value::Message(any));
    let outcome = match outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::Deleted => "deleted",
    };
    set_str(&mut item, "outcome", outcome);
    Ok(Value::Message(item))
}
