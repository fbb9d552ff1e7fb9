//! "A call is answered only after its write is durable": the writer is held at the point where
//! a batch has committed and its callers are not answered yet, and there, for many concurrent
//! writes, no caller of that batch has its answer, the commit counter already counts it, and
//! another connection (as sqlite3 would be) already sees its rows.

mod common;

use common::create;

use std::future::Future;
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use stigmer_sqlite::{AfterCommit, SqliteConfig, SqliteStore};
use stigmer_store::{Store, StoreResult, StoredResource};

const WRITES: usize = 200;
const DEADLINE: Duration = Duration::from_secs(20);

type Write<'a> = Pin<Box<dyn Future<Output = StoreResult<Vec<StoredResource>>> + Send + 'a>>;

/// Rows another connection sees, as the sqlite3 CLI would.
fn rows_seen_from_outside(db: &Path) -> usize {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    conn.query_row("SELECT count(*) FROM resources", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|count| usize::try_from(count).expect("a count"))
    .expect("count")
}

/// Polls every write not answered yet, once, without waiting; returns how many are answered.
/// Unconstrained: tokio's co-operative budget would make a ready answer look pending after
/// 128 polls in one go.
fn poll_answers(
    writes: &mut [Write<'_>],
    answers: &mut [Option<StoreResult<Vec<StoredResource>>>],
) -> usize {
    let mut cx = Context::from_waker(Waker::noop());
    for (write, answer) in writes.iter_mut().zip(answers.iter_mut()) {
        if answer.is_none()
            && let Poll::Ready(result) =
                pin!(tokio::task::unconstrained(write.as_mut())).poll(&mut cx)
        {
            *answer = Some(result);
        }
    }
    answers.iter().filter(|answer| answer.is_some()).count()
}

/// Fails when the writer answers callers before `tx.commit()` (the commit moved after the
/// answers): "another connection sees 0 rows at the commit of the first 1 writes".
#[tokio::test]
async fn no_write_is_answered_before_the_transaction_holding_it_has_committed() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("order.db");
    let (reached, commits) = mpsc::channel::<usize>();
    let (go, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let mut config = SqliteConfig::new(&db);
    // Small batches, so that the writes spread over many commits.
    config.max_batch = 16;
    config.after_commit = Some(AfterCommit::new(move |calls| {
        let _ = reached.send(calls);
        if let Ok(held) = held.lock() {
            let _ = held.recv_timeout(DEADLINE);
        }
    }));
    let store = SqliteStore::open(&config).expect("open");

    let mut writes: Vec<Write<'_>> = (0..WRITES).map(|n| store.transact(create(n))).collect();
    let mut answers: Vec<_> = (0..WRITES).map(|_| None).collect();
    // The first poll queues each write for the writer.
    poll_answers(&mut writes, &mut answers);
    let mut committed = 0;
    while committed < WRITES {
        let batch = commits
            .recv_timeout(DEADLINE)
            .expect("the writer reached the next commit");
        let answered = poll_answers(&mut writes, &mut answers);
        assert_eq!(
            answered, committed,
            "callers answered before the commit of the {batch} writes after the first {committed}"
        );
        committed += batch;
        assert_eq!(
            store.stats().writes,
            committed as u64,
            "the commit counter counts a batch before its callers are answered"
        );
        assert_eq!(
            rows_seen_from_outside(&db),
            committed,
            "another connection sees the rows of the first {committed} writes at their commit"
        );
        go.send(()).expect("the writer waits");
    }
    assert_eq!(committed, WRITES);
    assert!(store.stats().batches > 1, "{:?}", store.stats());

    for (write, answer) in writes.into_iter().zip(answers) {
        let stored = match answer {
            Some(answer) => answer,
            None => write.await,
        }
        .expect("every write succeeds");
        assert_eq!(stored.len(), 1);
    }
    store.close().await.expect("close");
}
