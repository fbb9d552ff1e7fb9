use std::thread::JoinHandle;

use rusqlite::Connection;
use stigmer_store::{StoreError, StoreResult};
use tokio::sync::oneshot;

use crate::config::SqliteConfig;
use crate::errors::OpenError;
use crate::schema::open_reader_connection;

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum ReaderMsg {
    Job(ReadJob),
    Shutdown,
}

/// Read-only connections, each owned by a thread that takes jobs from one shared queue.
pub(crate) struct ReaderPool {
    queue: flume::Sender<ReaderMsg>,
    size: usize,
}

impl ReaderPool {
    pub(crate) fn spawn(
        config: &SqliteConfig,
        threads: &mut Vec<JoinHandle<()>>,
    ) -> Result<Self, OpenError> {
        let size = config.read_connections.max(1);
        let (queue, jobs) = flume::bounded(config.queue_depth);
        for index in 0..size {
            let conn = open_reader_connection(config)?;
            let jobs = jobs.clone();
            let handle = std::thread::Builder::new()
                .name(format!("sqlite-reader-{index}"))
                .spawn(move || run_reader(conn, jobs))
                .map_err(OpenError::Thread)?;
            threads.push(handle);
        }
        Ok(Self { queue, size })
    }

    /// Runs `query` on some reader connection and returns its result.
    pub(crate) async fn run<T, F>(&self, query: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            // The caller may have gone away (cancelled RPC); nothing to do then.
            let _ = reply.send(query(conn));
        });
        self.queue
            .send_async(ReaderMsg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Asks every reader thread to finish the jobs queued before this call, then exit.
    pub(crate) async fn shutdown(&self) {
        for _ in 0..self.size {
            if self.queue.send_async(ReaderMsg::Shutdown).await.is_err() {
                break;
            }
        }
    }
}

fn run_reader(conn: Connection, jobs: flume::Receiver<ReaderMsg>) {
    while let Ok(msg) = jobs.recv() {
        match msg {
            ReaderMsg::Job(job) => job(&conn),
            ReaderMsg::Shutdown => break,
        }
    }
    if let Err((_, err)) = conn.close() {
        tracing::warn!(error = %err, "closing a reader connection failed");
    }
}
