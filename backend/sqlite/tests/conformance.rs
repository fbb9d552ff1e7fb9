//! The store conformance suite against `SqliteStore`: every case on a database of its own in a
//! temporary directory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stigmer_sqlite::{SqliteConfig, SqliteStore};
use stigmer_store::Store;
use stigmer_store_conformance::Harness;

struct SqliteHarness {
    dir: tempfile::TempDir,
    /// The databases opened so far; hand edits go to the last.
    opened: Mutex<Vec<PathBuf>>,
}

impl SqliteHarness {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temporary directory"),
            opened: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Harness for SqliteHarness {
    async fn open(&self) -> Arc<dyn Store> {
        let path = {
            let mut opened = self.opened.lock().expect("not poisoned");
            let path = self.dir.path().join(format!("store-{}.db", opened.len()));
            opened.push(path.clone());
            path
        };
        Arc::new(SqliteStore::open(&SqliteConfig::new(path)).expect("open a new database"))
    }

    async fn edit_data_by_hand(&self, id: &str, data: &str) -> Option<()> {
        let path = self
            .opened
            .lock()
            .expect("not poisoned")
            .last()
            .cloned()
            .expect("a store was opened");
        let conn = rusqlite::Connection::open(path).expect("open as the sqlite3 CLI would");
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .expect("busy timeout");
        let edited = conn
            .execute(
                "UPDATE resources SET data = ?2 WHERE id = ?1",
                rusqlite::params![id, data],
            )
            .expect("hand edit");
        assert_eq!(edited, 1, "{id} is in the database");
        Some(())
    }
}

stigmer_store_conformance::store_conformance!(SqliteHarness::new());
