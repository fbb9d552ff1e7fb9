//! "One process owns a database file at a time" (`<db>.lock`): a second open of a database in
//! use is refused with an error naming the lock file and the owner's pid, and writes nothing.

mod common;

use common::create;

use std::path::{Path, PathBuf};

use stigmer_sqlite::{OpenError, SqliteConfig, SqliteStore};
use stigmer_store::Store;

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// The database and WAL files byte for byte, the rows and the revision.
fn state(db: &Path) -> (Vec<u8>, Vec<u8>, i64, i64) {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open read-only");
    let rows = conn
        .query_row("SELECT count(*) FROM resources", [], |row| row.get(0))
        .expect("count");
    let revision = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'revision'",
            [],
            |row| row.get(0),
        )
        .expect("revision");
    drop(conn);
    (
        std::fs::read(db).expect("db"),
        std::fs::read(with_suffix(db, "-wal")).unwrap_or_default(),
        rows,
        revision,
    )
}

/// Fails when `schema::lock` takes no lock: "a second store opened a database in use"; and
/// when the lock file does not hold the owner's pid: "owner: None".
#[tokio::test]
async fn a_second_open_is_refused_naming_the_lock_and_the_owner_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("owned.db");
    let lock = with_suffix(&db, ".lock");
    let config = SqliteConfig::new(&db);
    let owner = SqliteStore::open(&config).expect("open");
    for n in 0..3 {
        owner.transact(create(n)).await.expect("write");
    }
    let before = state(&db);
    assert_eq!((before.2, before.3), (3, 3));

    let refused = match SqliteStore::open(&config) {
        Ok(_) => panic!("a second store opened a database in use"),
        Err(err) => err,
    };
    let message = refused.to_string();
    match refused {
        OpenError::InUse {
            lock: named,
            owner: pid,
            ..
        } => {
            assert_eq!(named, lock);
            assert_eq!(pid, Some(std::process::id()), "owner: {pid:?}");
        }
        other => panic!("not InUse: {other}"),
    }
    assert!(
        message.contains(&lock.display().to_string())
            && message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(
        state(&db) == before,
        "the refused open changed the database"
    );
    let recorded = std::fs::read_to_string(&lock).expect("lock file");
    assert_eq!(recorded.trim(), std::process::id().to_string());

    // The owner still writes, and once it closes the database is free.
    owner
        .transact(create(3))
        .await
        .expect("the owner writes on");
    owner.close().await.expect("close");
    let next = SqliteStore::open(&config).expect("free once the owner closed");
    next.close().await.expect("close");
}
