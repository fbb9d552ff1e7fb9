//! `ResourceService/backup` to a file: the chunks go to a temporary file next to the target
//! (0600: the copy holds every org's resources), whose size and SHA-256 must be what the
//! server announced before it is renamed over the target. A failed backup leaves the target
//! as it was.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use prost_reflect::DynamicMessage;
use sha2::{Digest, Sha256};
use stigmer_core::codec::DynamicCodec;
use tokio::io::AsyncWriteExt;

use crate::resources::backend_method;
use crate::{Client, ClientError};

const BACKUP: &str = "/ai.stigmer.backend.v1.ResourceService/backup";

/// A backup written to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub path: PathBuf,
    /// The revision of the last change it holds.
    pub revision: i64,
    pub size: u64,
    /// The schema version of the database (its last migration).
    pub schema_version: i64,
    /// What the file is: "sqlite", a SQLite database file.
    pub format: String,
    /// The id of the master key its secrets are sealed under: the key file (or
    /// STIGMER_MASTER_KEY) that holds it must go with the backup, which cannot open them alone.
    pub master_key_id: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

impl Client {
    /// A consistent copy of the whole database, taken while the server serves, written to
    /// `path` (replaced only once the copy is complete and checked).
    pub async fn backup(&self, path: &Path) -> Result<Backup, ClientError> {
        let method = backend_method("backup")?;
        let mut grpc = tonic::client::Grpc::new(self.transport())
            .max_decoding_message_size(stigmer_core::MAX_MESSAGE_SIZE);
        grpc.ready()
            .await
            .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let rpc = http::uri::PathAndQuery::from_str(BACKUP)
            .map_err(|err| ClientError::Config(err.to_string()))?;
        let mut stream = grpc
            .server_streaming(
                tonic::Request::new(DynamicMessage::new(method.input())),
                rpc,
                DynamicCodec::new(method.output()),
            )
            .await?
            .into_inner();
        let temp = TempFile::next_to(path);
        let io = |action: &str, err: std::io::Error| {
            ClientError::File(format!("cannot {action} {}: {err}", temp.path.display()))
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp.path)
            .await
            .map_err(|err| io("create", err))?;
        let mut backup = None::<Backup>;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut announced = None;
        while let Some(chunk) = stream.message().await? {
            let data = chunk
                .get_field_by_name("data")
                .and_then(|value| value.as_bytes().cloned())
                .unwrap_or_default();
            backup.get_or_insert_with(|| describe(&chunk, path));
            file.write_all(&data)
                .await
                .map_err(|err| io("write", err))?;
            hasher.update(&data);
            written += data.len() as u64;
            let sha256 = text(&chunk, "sha256");
            if !sha256.is_empty() {
                announced = Some(sha256);
                break;
            }
        }
        let (Some(mut backup), Some(announced)) = (backup, announced) else {
            return Err(ClientError::Damaged(
                "the backup ended before its last chunk; nothing was written".into(),
            ));
        };
        let sha256 = hex::encode(hasher.finalize());
        if written != backup.size || sha256 != announced {
            return Err(ClientError::Damaged(format!(
                "the backup arrived damaged ({written} bytes with SHA-256 {sha256}; the server sent {} bytes with SHA-256 {announced}); nothing was written",
                backup.size
            )));
        }
        file.sync_all().await.map_err(|err| io("flush", err))?;
        drop(file);
        temp.persist(path).await?;
        backup.sha256 = sha256;
        Ok(backup)
    }
}

/// What the first chunk says about the copy.
fn describe(chunk: &DynamicMessage, path: &Path) -> Backup {
    let number = |field: &str| {
        chunk
            .get_field_by_name(field)
            .and_then(|value| value.as_i64())
            .unwrap_or_default()
    };
    Backup {
        path: path.to_path_buf(),
        revision: number("revision"),
        size: u64::try_from(number("size")).unwrap_or_default(),
        schema_version: number("schema_version"),
        format: text(chunk, "format"),
        master_key_id: text(chunk, "master_key_id"),
        sha256: String::new(),
    }
}

fn text(message: &DynamicMessage, field: &str) -> String {
    message
        .get_field_by_name(field)
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The file being written, removed when dropped unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    placed: bool,
}

impl TempFile {
    fn next_to(target: &Path) -> Self {
        let mut name = target.as_os_str().to_owned();
        name.push(format!(".partial-{}", std::process::id()));
        let path = PathBuf::from(name);
        // A leftover of a backup that a process with this pid did not finish.
        let _ = std::fs::remove_file(&path);
        Self {
            path,
            placed: false,
        }
    }

    async fn persist(mut self, target: &Path) -> Result<(), ClientError> {
        tokio::fs::rename(&self.path, target).await.map_err(|err| {
            ClientError::File(format!("cannot write {}: {err}", target.display()))
        })?;
        self.placed = true;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // The rename survives a crash once the directory is on disk.
        if let Ok(dir) = tokio::fs::File::open(dir).await {
            let _ = dir.sync_all().await;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
