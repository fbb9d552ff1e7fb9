//! The execution lifecycle of AgentExecution and WorkflowExecution: phases that only move
//! forward (PENDING → IN_PROGRESS → COMPLETED | FAILED | CANCELLED, or PENDING → CANCELLED),
//! and subscribe, which follows one execution through the change feed until it ends.

use std::sync::Arc;
use std::time::SystemTime;

use prost_reflect::{DynamicMessage, ReflectMessage, Value};
use stigmer_store::{
    ChangeFilter, ChangeType, Mutation, Scope, StoreError, WatchItem, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::KindInfo;
use crate::controller::{Controller, MAX_ATTEMPTS, new_row};
use crate::error::ApiError;
use crate::feed::EventStream;
use crate::fields::{child, get_i32, get_str, set, set_str};
use crate::resource::{Caller, same_content, set_revision, stamp_audit};
use crate::validation::check;

const PENDING: i32 = 1;
const IN_PROGRESS: i32 = 2;
const COMPLETED: i32 = 3;
const FAILED: i32 = 4;
const CANCELLED: i32 = 5;

fn is_terminal(phase: i32) -> bool {
    matches!(phase, COMPLETED | FAILED | CANCELLED)
}

/// Whether an execution may go from `from` to `to`. Staying in a live phase is a progress
/// report (new messages, tool calls) and is allowed.
fn may_move(from: i32, to: i32) -> bool {
    matches!(
        (from, to),
        (PENDING, PENDING | IN_PROGRESS | CANCELLED)
            | (IN_PROGRESS, IN_PROGRESS | COMPLETED | FAILED | CANCELLED)
    )
}

fn phase_of(execution: &DynamicMessage) -> i32 {
    child(execution, "status")
        .map(|status| get_i32(&status, "phase"))
        .unwrap_or_default()
}

/// The enum value name of a phase, for messages ("EXECUTION_COMPLETED").
fn phase_name(execution: &DynamicMessage, phase: i32) -> String {
    child(execution, "status")
        .and_then(|status| status.descriptor().get_field_by_name("phase"))
        .and_then(|field| field.kind().as_enum().and_then(|e| e.get_value(phase)))
        .map_or_else(|| phase.to_string(), |value| value.name().to_string())
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Controller {
    pub(crate) async fn update_status(
        &self,
        kind: &KindInfo,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<DynamicMessage, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let id = get_str(&request, "execution_id");
        let reported = child(&request, "status")
            .ok_or_else(|| ApiError::invalid_field("status update", "status", "is required"))?;
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        let _key = self
            .key_locks
            .lock(crate::key_locks::id_key(&kind.name, &scope.org, &id))
            .await;
        for _ in 0..MAX_ATTEMPTS {
            let (row, stored) = self.load(kind, &scope, &id, 0).await?;
            let updated = self.next_status(&stored, &reported, caller)?;
            if same_content(&stored, &updated) {
                return Ok(stored);
            }
            let mut mutations = vec![Mutation::Replace {
                resource: new_row(kind, &updated)?,
                expected_revision: row.revision,
            }];
            if is_terminal(phase_of(&updated)) {
                // Just-in-time secrets live only while their execution runs.
                mutations.extend(
                    self.children_deleted_with(&kind.name, &caller.org, &id)
                        .await?,
                );
            }
            match self.store.transact(mutations).await {
                Ok(rows) => {
                    let mut updated = updated;
                    if let Some(row) = rows.first() {
                        set_revision(&mut updated, row.revision);
                    }
                    return Ok(updated);
                }
                // Someone else moved it meanwhile: judge the transition again from there.
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(ApiError::Unavailable(format!(
            "{} {id} is being updated by many writers at once; retry",
            kind.name
        )))
    }

    /// The execution with its status replaced by the reported one, if the phase may move so.
    fn next_status(
        &self,
        stored: &DynamicMessage,
        reported: &DynamicMessage,
        caller: &Caller,
    ) -> Result<DynamicMessage, ApiError> {
        let from = phase_of(stored);
        let requested = get_i32(reported, "phase");
        let to = if requested == 0 { from } else { requested };
        if is_terminal(from) {
            return Err(ApiError::FailedPrecondition(format!(
                "the execution is {}, a final phase: it never changes again (asked for {})",
                phase_name(stored, from),
                phase_name(stored, to)
            )));
        }
        if !may_move(from, to) {
            return Err(ApiError::FailedPrecondition(format!(
                "an execution cannot go from {} to {}; allowed: PENDING → IN_PROGRESS → COMPLETED | FAILED | CANCELLED, or PENDING → CANCELLED",
                phase_name(stored, from),
                phase_name(stored, to)
            )));
        }
        let old_status = child(stored, "status");
        let mut status = reported.clone();
        set(&mut status, "phase", Value::EnumNumber(to));
        // Server-owned parts of the status survive whatever the runner sends.
        for field in ["audit", "callback_token", "started_at", "completed_at"] {
            let old = old_status
                .as_ref()
                .and_then(|s| s.get_field_by_name(field).map(|v| v.into_owned()));
            let sent_empty = !status.has_field_by_name(field);
            if let (Some(old), true) = (old, sent_empty || field == "audit") {
                set(&mut status, field, old);
            }
        }
        if to == IN_PROGRESS && get_str(&status, "started_at").is_empty() {
            set_str(&mut status, "started_at", rfc3339_now());
        }
        if is_terminal(to) && get_str(&status, "completed_at").is_empty() {
            set_str(&mut status, "completed_at", rfc3339_now());
        }
        let mut updated = stored.clone();
        set(&mut updated, "status", Value::Message(status));
        stamp_audit(
            &mut updated,
            &["status_audit"],
            false,
            caller,
            SystemTime::now(),
            "status_updated",
        );
        Ok(updated)
    }

    /// The execution now, then each change of it, until it reaches a final phase or is deleted.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        kind: &Arc<KindInfo>,
        caller: &Caller,
        request: DynamicMessage,
    ) -> Result<EventStream, ApiError> {
        check(&self.validator, &request, Vec::new())?;
        let id = ["value", "execution_id"]
            .iter()
            .map(|field| get_str(&request, field))
            .find(|id| !id.is_empty())
            .unwrap_or_default();
        let scope = Scope::new(kind.name.clone(), caller.org.clone());
        if self.store.get(scope, id.clone()).await?.is_none() {
            return Err(ApiError::NotFound {
                kind: kind.name.clone(),
                id,
            });
        }
        let items = stigmer_store::watch(
            Arc::clone(&self.store),
            WatchOptions {
                filter: ChangeFilter {
                    org: caller.org.clone(),
                    kind: Some(kind.name.clone()),
                    id: Some(id),
                },
                since_revision: 0,
                until_revision: None,
                page_size: 1,
                queued_per_watcher: 64,
                stop: Some(self.shutdown.signal()),
            },
        );
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_until_final(
            Arc::clone(self),
            Arc::clone(kind),
            items,
            tx,
        ));
        Ok(Box::pin(
            ReceiverStream::new(rx).map(|item| item.map(crate::codec::Reply::from)),
        ))
    }
}

async fn forward_until_final(
    app: Arc<Controller>,
    kind: Arc<KindInfo>,
    mut items: mpsc::Receiver<Result<WatchItem, StoreError>>,
    tx: mpsc::Sender<Result<DynamicMessage, tonic::Status>>,
) {
    while let Some(item) = items.recv().await {
        let (data, revision) = match item {
            Ok(WatchItem::Snapshot { resource, .. }) => (resource.data, resource.revision),
            Ok(WatchItem::Change(change)) if change.change_type == ChangeType::Deleted => return,
            Ok(WatchItem::Change(change)) => (change.data.clone(), change.revision),
            Err(err) => {
                let _ = tx.send(Err(ApiError::from(err).into())).await;
                return;
            }
        };
        let execution = match crate::json::from_json(&kind.message, &data) {
            Ok(mut execution) => {
                set_revision(&mut execution, revision);
                app.secrets.redact(&mut execution);
                execution
            }
            Err(err) => {
                let _ = tx.send(Err(err.into())).await;
                return;
            }
        };
        let done = is_terminal(phase_of(&execution));
        if tx.send(Ok(execution)).await.is_err() || done {
            return;
        }
    }
}
