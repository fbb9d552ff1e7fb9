//! The store conformance suite against `PostgresStore`: every store a case opens gets a
//! database of its own on the server named by STIGMER_TEST_POSTGRES_URL (run through
//! scripts/with-postgres.sh).

mod common;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use stigmer_store::Store;
use stigmer_store_conformance::Harness;

#[derive(Default)]
struct PostgresHarness {
    /// The databases opened so far; hand edits go to the last.
    opened: Mutex<Vec<String>>,
}

#[async_trait]
impl Harness for PostgresHarness {
    async fn open(&self) -> Arc<dyn Store> {
        let db = common::fresh_database().await;
        self.opened
            .lock()
            .expect("not poisoned")
            .push(db.url.clone());
        db.open().await
    }

    async fn edit_data_by_hand(&self, id: &str, data: &str) -> Option<()> {
        let url = self
            .opened
            .lock()
            .expect("not poisoned")
            .last()
            .cloned()
            .expect("a store was opened");
        // As an operator would in psql: the document alone, no revision, no change-log entry.
        let client = common::connect(&url).await;
        let edited = client
            .execute(
                "UPDATE resources SET data = $2::text::jsonb WHERE id = $1",
                &[&id, &data],
            )
            .await
            .expect("hand edit");
        assert_eq!(edited, 1, "{id} is in the database");
        Some(())
    }
}

stigmer_store_conformance::store_conformance!(PostgresHarness::default());
