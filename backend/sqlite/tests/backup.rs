//! Backups and restores of the SQLite store at the crate's level: a copy is the database at
//! one revision and leaves no file behind, a crash's leftover copy goes at the next open, and
//! restore accepts only a database whose migrations are this build's.

use std::path::Path;

use stigmer_sqlite::{RestoreError, SqliteConfig, SqliteStore, restore};
use stigmer_store::{NewResource, Scope, Store};

fn resource(n: usize) -> NewResource {
    let id = format!("agt-{n:04}");
    NewResource {
        scope: Scope::new("Agent", "local"),
        data: format!(r#"{{"metadata":{{"id":"{id}","slug":"a{n}"}}}}"#),
        id,
        slug: format!("a{n}"),
        proto: None,
    }
}

/// Reads the whole copy into `path`.
async fn write_copy(store: &SqliteStore, path: &Path) -> stigmer_store::BackupInfo {
    let mut copy = store.backup().await.expect("backup");
    let info = copy.info().clone();
    let mut bytes = Vec::new();
    loop {
        let chunk = copy.read(4096).await.expect("read");
        if chunk.is_empty() {
            break;
        }
        assert!(chunk.len() <= 4096);
        bytes.extend(chunk);
    }
    assert_eq!(bytes.len() as u64, info.size);
    std::fs::write(path, bytes).expect("write the copy");
    info
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.contains(".backup-") || name.contains(".restore-"))
        .collect()
}

#[tokio::test]
async fn a_backup_is_the_database_at_one_revision_and_leaves_no_file() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("s.db"))).expect("open");
    for n in 0..50 {
        store.create(resource(n)).await.expect("create");
    }
    let mut copy = store.backup().await.expect("backup");
    assert!(
        leftovers(dir.path()).is_empty(),
        "the copy's name is gone as soon as it is open"
    );
    for n in 50..60 {
        store
            .create(resource(n))
            .await
            .expect("create after the backup");
    }
    let info = copy.info().clone();
    assert_eq!(info.revision, 50);
    assert_eq!(info.format, "sqlite");
    assert!(info.schema_version >= 8, "{info:?}");
    let mut bytes = Vec::new();
    loop {
        let chunk = copy.read(1 << 20).await.expect("read");
        if chunk.is_empty() {
            break;
        }
        bytes.extend(chunk);
    }
    drop(copy);
    assert_eq!(bytes.len() as u64, info.size);
    let file = dir.path().join("copy.db");
    std::fs::write(&file, bytes).expect("write");
    let conn = rusqlite::Connection::open(&file).expect("open the copy");
    let (rows, revision): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM resources), (SELECT value FROM store_meta WHERE key = 'revision')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count");
    assert_eq!((rows, revision), (50, 50));
    store.close().await.expect("close");
}

#[tokio::test]
async fn a_copy_left_by_a_crash_goes_at_the_next_open() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("s.db");
    let leftover = dir.path().join("s.db.backup-4242-0.tmp");
    let unrelated = dir.path().join("other.db.backup-4242-0.tmp");
    std::fs::write(&leftover, b"half a copy").expect("write");
    std::fs::write(&unrelated, b"another database's").expect("write");
    let store = SqliteStore::open(&SqliteConfig::new(&db)).expect("open");
    assert!(!leftover.exists());
    assert!(unrelated.exists(), "only this database's copies go");
    store.close().await.expect("close");
}

#[tokio::test]
async fn restore_takes_this_builds_migrations_only_and_reports_what_it_restored() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&SqliteConfig::new(dir.path().join("s.db"))).expect("open");
    for n in 0..5 {
        store.create(resource(n)).await.expect("create");
    }
    store
        .put_setting("master_key_id".into(), "k1".into())
        .await
        .expect("setting");
    let good = dir.path().join("good.db");
    let info = write_copy(&store, &good).await;
    store.close().await.expect("close");

    let target = dir.path().join("restored/s.db");
    let restored = restore(&good, &target, false).expect("restore");
    assert_eq!(restored.revision, info.revision);
    assert_eq!(restored.schema_version, info.schema_version);
    assert_eq!(restored.known_version, info.schema_version);
    assert_eq!(restored.size, info.size);
    assert!(!restored.replaced);
    assert_eq!(restored.settings["master_key_id"], "k1");
    let reopened = SqliteStore::open(&SqliteConfig::new(&target)).expect("open the restored");
    assert_eq!(reopened.log_bounds().await.expect("bounds").current, 5);
    reopened.close().await.expect("close");

    // The same version with another checksum: a migration this build never had.
    let divergent = dir.path().join("divergent.db");
    std::fs::copy(&good, &divergent).expect("copy");
    rusqlite::Connection::open(&divergent)
        .expect("open")
        .execute(
            "UPDATE refinery_schema_history SET checksum = '1' WHERE version = 2",
            [],
        )
        .expect("edit the history");
    let other = dir.path().join("other/s.db");
    match restore(&divergent, &other, false) {
        Err(RestoreError::Divergent { version: 2, .. }) => {}
        other => panic!("restored a divergent history: {other:?}"),
    }
    // An older one (its last migration undone in the history only) is taken: the server
    // migrates it further.
    let older = dir.path().join("older.db");
    std::fs::copy(&good, &older).expect("copy");
    rusqlite::Connection::open(&older)
        .expect("open")
        .execute(
            "DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)",
            [],
        )
        .expect("edit the history");
    let restored = restore(&older, &other, false).expect("an older schema");
    assert_eq!(restored.schema_version, info.schema_version - 1);
    assert!(!other.with_file_name("s.db-wal").exists());
    assert!(leftovers(dir.path()).is_empty());
    assert!(leftovers(other.parent().expect("dir")).is_empty());
}
