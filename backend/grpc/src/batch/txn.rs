//! ResourceService/txn: etcd's compare-and-swap transaction over resources. Conditions on
//! revisions are checked first (a failed one answers `succeeded = false` and runs nothing);
//! the operations then run as a batch's items do, against an overlay; and the commit holds
//! the conditions again as [`Mutation::Expect`]s ahead of the writes, so a writer that slips
//! in between makes the transaction answer as a failed condition, never half-apply.

use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use stigmer_store::{ChangeFilter, Mutation, Scope, StoreError, StoredResource};

use super::{ItemError, Step, answer};
use crate::catalog::{Method, Verb};
use crate::controller::{Controller, ID_FIELDS};
use crate::error::{ApiError, FieldViolation};
use crate::fields::{child, get_i64, get_str, has, repeated, set, set_str};
use crate::resource::Caller;
use crate::validation::check;

/// The resource `id` is at `revision`; 0 = absent.
struct Condition {
    scope: Scope,
    id: String,
    revision: i64,
}

/// A condition that did not hold: its index in the request and what was found instead.
struct Failed {
    index: usize,
    found: i64,
}

impl Controller {
    pub(crate) async fn txn(
        &self,
        caller: &Caller,
        request: DynamicMessage,
        output: &MessageDescriptor,
    ) -> Result<DynamicMessage, ApiError> {
        let mut violations = Vec::new();
        let conditions = self.txn_conditions(caller, &request, &mut violations)?;
        let steps = self.txn_steps(caller, &request, &mut violations)?;
        check(&self.validator, &request, violations)?;
        if let Some(failed) = self.first_failed(&conditions).await? {
            return failed_response(output, failed);
        }
        let failed = format!(
            "transaction of {} operations: nothing was written",
            steps.len()
        );
        let staged = self.stage(caller, &steps, failed).await?;
        let writes = staged.overlay.mutations();
        let deletes: Vec<bool> = writes.iter().filter_map(is_delete).collect();
        let committed = if writes.is_empty() {
            // Nothing to write: the conditions held when read, which is all a reader can know.
            Vec::new()
        } else {
            let mut mutations: Vec<Mutation> = conditions.iter().map(Condition::expect).collect();
            mutations.extend(writes);
            match self.store.transact(mutations).await {
                Ok(rows) => rows,
                Err(StoreError::ExpectationFailed {
                    kind, id, found, ..
                }) => {
                    let index = conditions
                        .iter()
                        .position(|c| c.scope.kind == kind && c.id == id)
                        .ok_or_else(|| {
                            ApiError::internal("a failed condition the txn never set")
                        })?;
                    let found = found.unwrap_or(0);
                    return failed_response(output, Failed { index, found });
                }
                Err(err) => return Err(err.into()),
            }
        };
        let last = self
            .last_revision(&caller.org, &committed, &deletes)
            .await?;
        let mut response = answer(output, staged, &committed)?;
        set(&mut response, "succeeded", Value::Bool(true));
        set(&mut response, "revision", Value::I64(last));
        Ok(response)
    }

    /// The revision of a committed transaction's last change (0 = none). A transaction's
    /// changes take consecutive revisions, so one written row tells them all; but a store
    /// answers a delete with the row as it was, so a transaction that only deleted reads its
    /// last delete's revision back from the change log.
    async fn last_revision(
        &self,
        org: &str,
        committed: &[StoredResource],
        deletes: &[bool],
    ) -> Result<i64, ApiError> {
        let after_last = |at: usize| (committed.len() - 1 - at) as i64;
        let written = committed
            .iter()
            .zip(deletes)
            .position(|(_, deleted)| !deleted);
        if let Some(at) = written {
            return Ok(committed[at].revision + after_last(at));
        }
        let Some(row) = committed.last() else {
            return Ok(0);
        };
        let filter = ChangeFilter {
            org: org.to_string(),
            kind: Some(row.scope.kind.clone()),
            id: Some(row.id.clone()),
        };
        let changes = self.store.changes(filter, row.revision, 1).await?;
        Ok(changes.first().map_or(0, |change| change.revision))
    }

    /// The request's conditions, each of a kind an org holds and (cloud mode) readable by the
    /// caller as its kind's get.
    fn txn_conditions(
        &self,
        caller: &Caller,
        request: &DynamicMessage,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Vec<Condition>, ApiError> {
        let mut conditions = Vec::new();
        for (index, condition) in repeated(request, "conditions").iter().enumerate() {
            let (kind, id) = (get_str(condition, "kind"), get_str(condition, "id"));
            let Some(get) = self.kind_method(&kind, Verb::Get, violations, || {
                format!("conditions[{index}].kind")
            }) else {
                continue;
            };
            self.auth
                .authorize(&get.path, caller, &id_request(&get, &id)?)?;
            conditions.push(Condition {
                scope: Scope::new(kind, caller.org.clone()),
                id,
                revision: get_i64(condition, "revision"),
            });
        }
        Ok(conditions)
    }

    /// Each operation as a call of its kind's apply (put) or delete, authorized as that call.
    fn txn_steps(
        &self,
        caller: &Caller,
        request: &DynamicMessage,
        violations: &mut Vec<FieldViolation>,
    ) -> Result<Vec<Step>, ApiError> {
        let mut steps = Vec::new();
        for (index, operation) in repeated(request, "operations").iter().enumerate() {
            if has(operation, "put")
                && let Some(put) = operation.get_field_by_name("put")
            {
                let at = format!("operations[{index}].put");
                match self.batch_item(caller, put.as_ref()) {
                    Ok(item) => steps.push(Step {
                        method: item.apply,
                        request: item.resource,
                        at,
                    }),
                    Err(ItemError::Invalid(why)) => violations.push(FieldViolation::new(at, why)),
                    Err(ItemError::Refused(err)) => return Err(err),
                }
                continue;
            }
            // The validator saw to it that an operation is a put or a delete.
            let Some(delete) = child(operation, "delete").filter(|_| has(operation, "delete"))
            else {
                continue;
            };
            let (kind, id) = (get_str(&delete, "kind"), get_str(&delete, "id"));
            let Some(method) = self.kind_method(&kind, Verb::Delete, violations, || {
                format!("operations[{index}].delete.kind")
            }) else {
                continue;
            };
            let request = id_request(&method, &id)?;
            self.auth.authorize(&method.path, caller, &request)?;
            steps.push(Step {
                method,
                request,
                at: format!("operations[{index}].delete"),
            });
        }
        Ok(steps)
    }

    /// The method of `verb` of the org kind named `name`; a violation of the field `at` names
    /// when there is none.
    fn kind_method(
        &self,
        name: &str,
        verb: Verb,
        violations: &mut Vec<FieldViolation>,
        at: impl Fn() -> String,
    ) -> Option<std::sync::Arc<Method>> {
        let Some(kind) = self.catalog.org_kind_by_name(name) else {
            violations.push(FieldViolation::new(
                at(),
                self.catalog.not_an_org_kind(name),
            ));
            return None;
        };
        let method = self.catalog.method_of(&kind.name, verb).cloned();
        if method.is_none() {
            violations.push(FieldViolation::new(
                at(),
                format!("{name} has no {verb:?} RPC, so a transaction cannot do that to it"),
            ));
        }
        method
    }

    /// The first condition that does not hold now, read outside any transaction: a cheap
    /// answer for the common case, checked again when the writes commit.
    async fn first_failed(&self, conditions: &[Condition]) -> Result<Option<Failed>, ApiError> {
        for (index, condition) in conditions.iter().enumerate() {
            let found = self
                .store
                .get(condition.scope.clone(), condition.id.clone())
                .await?
                .map_or(0, |row| row.revision);
            if found != condition.revision {
                return Ok(Some(Failed { index, found }));
            }
        }
        Ok(None)
    }
}

impl Condition {
    fn expect(&self) -> Mutation {
        Mutation::Expect {
            scope: self.scope.clone(),
            id: self.id.clone(),
            revision: (self.revision != 0).then_some(self.revision),
        }
    }
}

/// For a mutation that takes a revision, whether it is a delete.
fn is_delete(mutation: &Mutation) -> Option<bool> {
    match mutation {
        Mutation::Create(_) | Mutation::Replace { .. } => Some(false),
        Mutation::Delete { .. } => Some(true),
        _ => None,
    }
}

fn failed_response(output: &MessageDescriptor, failed: Failed) -> Result<DynamicMessage, ApiError> {
    let mut response = DynamicMessage::new(output.clone());
    let index = i32::try_from(failed.index)
        .map_err(|_| ApiError::internal("more conditions than the request may hold"))?;
    set(&mut response, "succeeded", Value::Bool(false));
    set(&mut response, "failed_condition", Value::I32(index));
    set(&mut response, "found_revision", Value::I64(failed.found));
    Ok(response)
}

/// The request a kind's get or delete takes for the resource `id` (`AgentId`,
/// `ApiResourceDeleteInput`, ...).
fn id_request(method: &Method, id: &str) -> Result<DynamicMessage, ApiError> {
    let mut request = DynamicMessage::new(method.input.clone());
    let field = ID_FIELDS
        .into_iter()
        .find(|field| method.input.get_field_by_name(field).is_some())
        .ok_or_else(|| {
            ApiError::internal(format!("{} takes no resource id", method.input.full_name()))
        })?;
    set_str(&mut request, field, id);
    Ok(request)
}
