//! ResourceService/backup: the store's consistent copy of the whole database, streamed in
//! chunks. The first chunk says what the copy is (revision, size, schema version, format,
//! master key id); the last one carries the SHA-256 of all of them, computed as they go.
//! A client that goes away ends the copy, whose temporary file the store then removes.

use prost::bytes::Bytes;
use prost_reflect::{DynamicMessage, MessageDescriptor, Value};
use sha2::{Digest, Sha256};
use stigmer_store::{BackupCopy, BackupInfo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::codec::Reply;
use crate::controller::Controller;
use crate::error::ApiError;
use crate::feed::EventStream;
use crate::fields::{set, set_str};

/// Bytes per chunk: 1 MiB, well under the message size limit.
const CHUNK: usize = 1024 * 1024;
/// Chunks read ahead of a slow client.
const READ_AHEAD: usize = 2;

impl Controller {
    pub(crate) async fn backup(&self, output: MessageDescriptor) -> Result<EventStream, ApiError> {
        let copy = self.store.backup().await?;
        let master_key_id = self.keyring.current_id().to_string();
        let (sender, receiver) = mpsc::channel(READ_AHEAD);
        tokio::spawn(async move {
            if let Err(err) = send_copy(copy, &output, master_key_id, &sender).await {
                let _ = sender.send(Err(tonic::Status::from(err))).await;
            }
        });
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

type Sender = mpsc::Sender<Result<Reply, tonic::Status>>;

/// Sends every chunk of `copy`; returns early, without error, when the client has gone.
async fn send_copy(
    mut copy: Box<dyn BackupCopy>,
    output: &MessageDescriptor,
    master_key_id: String,
    sender: &Sender,
) -> Result<(), ApiError> {
    let info = copy.info().clone();
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut first = true;
    loop {
        let data = copy.read(CHUNK).await?;
        if data.is_empty() && sent < info.size {
            return Err(ApiError::internal(format!(
                "the backup copy ended after {sent} of its {} bytes",
                info.size
            )));
        }
        sent += data.len() as u64;
        // Hashing a MiB takes milliseconds: not on the runtime's threads.
        let (next, data) = tokio::task::spawn_blocking(move || {
            hasher.update(&data);
            (hasher, data)
        })
        .await
        .map_err(ApiError::internal)?;
        hasher = next;
        let mut chunk = DynamicMessage::new(output.clone());
        set(&mut chunk, "data", Value::Bytes(Bytes::from(data)));
        if std::mem::take(&mut first) {
            describe(&mut chunk, &info, &master_key_id);
        }
        let last = sent >= info.size;
        if last {
            set_str(
                &mut chunk,
                "sha256",
                hex::encode(std::mem::take(&mut hasher).finalize()),
            );
        }
        if sender.send(Ok(Reply::Message(chunk))).await.is_err() || last {
            return Ok(());
        }
    }
}

fn describe(chunk: &mut DynamicMessage, info: &BackupInfo, master_key_id: &str) {
    set(chunk, "revision", Value::I64(info.revision));
    set(
        chunk,
        "size",
        Value::I64(i64::try_from(info.size).unwrap_or(i64::MAX)),
    );
    set(chunk, "schema_version", Value::I64(info.schema_version));
    set_str(chunk, "format", info.format);
    set_str(chunk, "master_key_id", master_key_id);
}
