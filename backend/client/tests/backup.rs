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
        ..ClientConfig::default()
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
    let exported = source.export(&[]).await.expect("export").resources;
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
    assert_eq!(
        target.export(&[]).await.expect("export again").resources,
        exported
    );
    let twice = target.import(&exported).await.expect("import twice");
    assert_eq!((twice.created, twice.updated, twice.unchanged), (0, 0, 3));
    let agent = target.get("agent", "keeper").await.expect("agent by name");
    assert_eq!(agent["metadata"]["id"], exported[0]["metadata"]["id"]);
    target.close().await.expect("close");
}

fn zip_with_skill(text: &str) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    writer
        .start_file("SKILL.md", zip::write::SimpleFileOptions::default())
        .expect("entry");
    writer.write_all(text.as_bytes()).expect("write");
    writer.finish().expect("finish").into_inner()
}

#[tokio::test]
async fn skill_versions_and_artifacts_travel_with_the_export() {
    use stigmer_api::ai::stigmer::agentic::skill::v1::PushSkillRequest;
    use stigmer_api::ai::stigmer::agentic::skill::v1::skill_command_controller_client::SkillCommandControllerClient;
    let dir = tempfile::tempdir().expect("dir");
    let (first_db, second_db) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let source = stigmer_client::connect(&config(&first_db))
        .await
        .expect("source");
    let mut skills = SkillCommandControllerClient::new(source.transport());
    for (tag, text) in [("v1", "# One\\nfirst body"), ("v2", "# Two\\nsecond body")] {
        skills
            .push(PushSkillRequest {
                name: "helper".into(),
                artifact: zip_with_skill(text),
                tag: tag.into(),
                ..Default::default()
            })
            .await
            .expect("push");
    }
    let exported = source.export(&[]).await.expect("export").resources;
    source.close().await.expect("close");
    let versions = exported[0][stigmer_client::EXPORTED_VERSIONS]
        .as_array()
        .expect("versions");
    assert_eq!(versions.len(), 2);

    std::fs::copy(
        first_db.with_extension("key"),
        second_db.with_extension("key"),
    )
    .expect("key");
    let target = stigmer_client::connect(&config(&second_db))
        .await
        .expect("target");
    target.import(&exported).await.expect("import");
    assert_eq!(
        target.export(&[]).await.expect("export again").resources,
        exported
    );
    let old = target.get("skill", "helper").await.expect("skill");
    assert_eq!(old["spec"]["tag"], "v2");
    target.close().await.expect("close");
}

/// Importing sealed secrets into a server without their key names the resource and says how
/// to supply the key (it used to name only `resources[0].json`).
#[tokio::test]
async fn an_import_without_the_master_key_names_the_resource_and_the_remedy() {
    let dir = tempfile::tempdir().expect("dir");
    let (first_db, second_db) = (dir.path().join("first.db"), dir.path().join("second.db"));
    let source = stigmer_client::connect(&config(&first_db))
        .await
        .expect("source");
    source
        .apply(&json!({"kind": "Environment", "metadata": {"name": "prod"},
            "spec": {"data": {"TOKEN": {"value": "k3pt-sealed", "isSecret": true}}}}))
        .await
        .expect("environment");
    let exported = source.export(&[]).await.expect("export").resources;
    source.close().await.expect("close");
    let target = stigmer_client::connect(&config(&second_db))
        .await
        .expect("target with a key of its own");
    let err = target
        .import(&exported)
        .await
        .expect_err("the secret cannot be opened here")
        .to_string();
    assert!(err.contains("Environment \"prod\""), "{err}");
    assert!(
        err.contains("STIGMER_MASTER_KEY") && err.contains("--master-key-file"),
        "{err}"
    );
    assert!(!err.contains("k3pt-sealed"), "{err}");
}
