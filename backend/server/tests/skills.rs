//! Skill push: zip artifacts checked, stored once per SHA-256 inside the database, versions
//! reachable by tag and hash, bytes served back, and everything cleaned up on delete.

mod common;

use std::io::Write;

use common::{TestServer, expect_code, violated_fields};
use sha2::{Digest, Sha256};
use stigmer_api::ai::stigmer::agentic::skill::v1::skill_command_controller_client::SkillCommandControllerClient;
use stigmer_api::ai::stigmer::agentic::skill::v1::skill_query_controller_client::SkillQueryControllerClient;
use stigmer_api::ai::stigmer::agentic::skill::v1::{
    GetArtifactRequest, ListSkillsRequest, PushSkillRequest, Skill, SkillId, SkillState,
};
use stigmer_api::ai::stigmer::commons::apiresource::ApiResourceReference;
use tonic::Code;

fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, content) in files {
        writer
            .start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("entry");
        writer.write_all(content.as_bytes()).expect("write");
    }
    writer.finish().expect("finish").into_inner()
}

fn push(name: &str, artifact: Vec<u8>, tag: &str) -> PushSkillRequest {
    PushSkillRequest {
        name: name.into(),
        artifact,
        tag: tag.into(),
        ..Default::default()
    }
}

fn hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn status(skill: &Skill) -> &stigmer_api::ai::stigmer::agentic::skill::v1::SkillStatus {
    skill.status.as_ref().expect("status")
}

fn reference(slug: &str, version: &str) -> ApiResourceReference {
    ApiResourceReference {
        slug: slug.into(),
        version: version.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn pushes_make_versions_reachable_by_tag_and_hash() {
    let server = TestServer::start().await;
    let mut command = SkillCommandControllerClient::new(server.channel.clone());
    let mut query = SkillQueryControllerClient::new(server.channel.clone());
    let v1 = zip_of(&[
        ("SKILL.md", "# Triage\nSort incoming issues."),
        ("prompts/a.txt", "a"),
    ]);
    let first = command
        .push(push("Issue Triage", v1.clone(), "v1"))
        .await
        .expect("push v1")
        .into_inner();
    let meta = first.metadata.as_ref().expect("metadata");
    assert!(meta.id.starts_with("skl-"));
    assert_eq!(meta.slug, "issue-triage");
    assert_eq!(status(&first).version_hash, hash(&v1));
    assert_eq!(
        status(&first).artifact_storage_key,
        format!("{}.zip", hash(&v1))
    );
    assert_eq!(status(&first).state(), SkillState::Ready);
    assert_eq!(
        first.spec.as_ref().expect("spec").skill_md,
        "# Triage\nSort incoming issues."
    );

    let same = command
        .push(push("Issue Triage", v1.clone(), "v1"))
        .await
        .expect("same push")
        .into_inner();
    assert_eq!(
        same.metadata.as_ref().expect("metadata").revision,
        meta.revision,
        "unchanged"
    );

    let v2 = zip_of(&[("SKILL.md", "# Triage v2\nSort and label issues.")]);
    let second = command
        .push(push("Issue Triage", v2.clone(), "v2"))
        .await
        .expect("push v2")
        .into_inner();
    assert_eq!(
        second.metadata.as_ref().expect("metadata").id,
        meta.id,
        "same skill, new version"
    );

    let newest = query
        .get_by_reference(reference("issue-triage", ""))
        .await
        .expect("newest")
        .into_inner();
    assert_eq!(status(&newest).version_hash, hash(&v2));
    let latest = query
        .get_by_reference(reference("issue-triage", "latest"))
        .await
        .expect("latest")
        .into_inner();
    assert_eq!(latest, newest);
    let by_tag = query
        .get_by_reference(reference("issue-triage", "v1"))
        .await
        .expect("v1 by tag")
        .into_inner();
    assert_eq!(status(&by_tag).version_hash, hash(&v1));
    assert_eq!(
        by_tag.spec.as_ref().expect("spec").skill_md,
        "# Triage\nSort incoming issues."
    );
    let by_hash = query
        .get_by_reference(reference("issue-triage", &hash(&v1)))
        .await
        .expect("v1 by hash")
        .into_inner();
    assert_eq!(by_hash, by_tag);
    expect_code(
        query
            .get_by_reference(reference("issue-triage", "v9"))
            .await,
        Code::NotFound,
    );

    let bytes = query
        .get_artifact(GetArtifactRequest {
            artifact_storage_key: format!("{}.zip", hash(&v1)),
        })
        .await
        .expect("artifact")
        .into_inner()
        .artifact;
    assert_eq!(bytes, v1);
    expect_code(
        query
            .get_artifact(GetArtifactRequest {
                artifact_storage_key: "../../etc/passwd".into(),
            })
            .await,
        Code::InvalidArgument,
    );

    let listed = query
        .list(ListSkillsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.items.len(), 1);
}

#[tokio::test]
async fn artifacts_are_stored_once_and_removed_with_their_last_skill() {
    let server = TestServer::start().await;
    let mut command = SkillCommandControllerClient::new(server.channel.clone());
    let artifact = zip_of(&[("SKILL.md", "# Shared\nOne body, two names.")]);
    let a = command
        .push(push("first", artifact.clone(), ""))
        .await
        .expect("first")
        .into_inner();
    command
        .push(push("second", artifact.clone(), ""))
        .await
        .expect("second");
    let copies = |server: &TestServer| -> i64 {
        server
            .sqlite()
            .query_row(
                "SELECT count(*) FROM artifacts WHERE hash = ?1",
                [hash(&artifact)],
                |row| row.get(0),
            )
            .expect("count")
    };
    assert_eq!(copies(&server), 1, "content-addressed");
    command
        .delete(SkillId {
            value: a.metadata.as_ref().expect("metadata").id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete first");
    assert_eq!(copies(&server), 1, "still needed by the second skill");
    let second = SkillQueryControllerClient::new(server.channel.clone())
        .get_by_reference(reference("second", ""))
        .await
        .expect("second")
        .into_inner();
    command
        .delete(SkillId {
            value: second.metadata.as_ref().expect("metadata").id.clone(),
            ..Default::default()
        })
        .await
        .expect("delete second");
    assert_eq!(copies(&server), 0, "no version needs it any more");
}

#[tokio::test]
async fn bad_artifacts_are_refused_with_what_is_wrong() {
    let server = TestServer::start().await;
    let mut command = SkillCommandControllerClient::new(server.channel.clone());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not a zip at all".to_vec(), "not a zip archive"),
        (zip_of(&[("README.md", "# no skill here")]), "SKILL.md"),
        (
            zip_of(&[("SKILL.md", "# ok"), ("../escape.txt", "x")]),
            "..",
        ),
        (zip_of(&[("nested/SKILL.md", "# in a folder")]), "folder"),
        (vec![0u8; 9 * 1024 * 1024], "limit"),
    ];
    for (artifact, expected) in cases {
        let status = expect_code(
            command.push(push("bad", artifact, "")).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["artifact".to_string()]);
        assert!(
            status.message().contains(expected),
            "{expected:?} not in {}",
            status.message()
        );
    }
    let status = expect_code(
        command
            .push(push("", zip_of(&[("SKILL.md", "# x")]), "bad tag!"))
            .await,
        Code::InvalidArgument,
    );
    let fields = violated_fields(&status);
    assert!(
        fields.contains(&"name".to_string()) && fields.contains(&"tag".to_string()),
        "{fields:?}"
    );
    let count: i64 = server
        .sqlite()
        .query_row("SELECT count(*) FROM artifacts", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 0, "nothing stored");
}

/// A zip inside the skill, under an archive's name or disguised as text, would carry files
/// that none of the artifact checks saw.
#[tokio::test]
async fn nested_archives_are_refused_by_name_and_by_content() {
    let server = TestServer::start().await;
    let mut command = SkillCommandControllerClient::new(server.channel.clone());
    let inner = zip_of(&[("../../escape.sh", "echo out")]);
    let cases = [
        ("scripts/tools.zip", "is a .zip archive"),
        ("scripts/tools.txt", "is a zip archive"),
    ];
    for (path, expected) in cases {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        writer.start_file("SKILL.md", options).expect("entry");
        writer.write_all(b"# Tools\nUse the tools.").expect("write");
        writer.start_file(path, options).expect("entry");
        writer.write_all(&inner).expect("write");
        let artifact = writer.finish().expect("finish").into_inner();

        let status = expect_code(
            command.push(push("tools", artifact, "")).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["artifact".to_string()]);
        let message = status.message();
        assert!(
            message.contains(&format!("{path:?} {expected}")),
            "{message}"
        );
    }
    let count: i64 = server
        .sqlite()
        .query_row("SELECT count(*) FROM artifacts", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 0, "nothing stored");
}
