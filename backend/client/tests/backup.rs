//! Export from one database, import into an empty one: the second export is the first.

use serde_json::json;
use stigmer_client::{BackendConfig, BackendType, ClientConfig, LocalConfig, LocalTransport};

fn config(db: &std::path::Path) -> ClientConfig {
    ClientConfig {
        backend: BackendConfig {
            kind: BackendType::Local,
            local: LocalConfig {
                endpoint: String::new(),
                transport: LocalTransport::InProcess,
                database: Some(db.to_path_buf()),
            },
            cloud: None,
        },
    }
}

#[tokio::test]
async fn an_export_imported_into_an_empty_database_exports_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let (first_db, second_db) = (dir.path().join("first.db"), dir.path().join("second.db"));
    let source = stigmer_client::connect(&config(&first_db))
        .await
        .expect("source");
    source
        .apply(
            &json!({"kind": "Agent", "metadata": {"name": "Keeper", "labels": {"a": "b"}},
            "spec": {"instructions": "Keep everything exactly."}}),
        )
        .await
        .expect("agent");
    source
        .apply(&json!({"kind": "Environment", "metadata": {"name": "prod"},
            "spec": {"data": {"TOKEN": {"value": "n0t-in-the-file", "isSecret": true}}}}))
        .await
        .expect("environment");
    let exported = source.export(&[]).await.expect("export");
    source.close().await.expect("close");
    let text = serde_json::to_string(&exported).expect("json");
    assert!(
        !text.contains("n0t-in-the-file"),
        "secrets stay sealed in the export"
    );

    // The same master key opens the sealed secrets in the new database.
    std::fs::copy(
        first_db.with_extension("key"),
        second_db.with_extension("key"),
    )
    .expect("key");
    let target = stigmer_client::connect(&config(&second_db))
        .await
        .expect("target");
    let imported = target.import(&exported).await.expect("import");
    assert_eq!(imported.created, 3, "{imported:?}");
    assert_eq!(target.export(&[]).await.expect("export again"), exported);
    let twice = target.import(&exported).await.expect("import twice");
    assert_eq!((twice.created, twice.updated, twice.unchanged), (0, 0, 3));
    let agent = target.get("agent", "keeper").await.expect("agent by name");
    assert_eq!(agent["metadata"]["id"], exported[0]["metadata"]["id"]);
    target.close().await.expect("close");
}
