//! Skills from the CLI, executions by name, manifests carrying server-owned fields, and apply
//! order: the real `stigmer` binary against a real `stigmer-server` it starts itself, each
//! test in its own HOME on its own port (tests/common).

mod common;

use common::Env;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The sha256 of a push line `skill/NAME OUTCOME (tag T, sha256 HEX)`.
fn sha_of(line: &str) -> String {
    let sha = line
        .split("sha256 ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(")\n").or_else(|| rest.strip_suffix(')')))
        .unwrap_or_else(|| panic!("no sha256 in {line:?}"));
    assert_eq!(sha.len(), 64, "{line}");
    assert!(sha.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
    sha.to_string()
}

/// Sets every file under `dir` to `time`, as a fresh checkout or copy would.
fn touch_all(dir: &Path, time: SystemTime) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            touch_all(&path, time);
        } else {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(time))
                .expect("set mtime");
        }
    }
}

const PDF_SKILL: &str = "---\nname: pdf-tools\ndescription: Read and split PDF files.\nmetadata:\n  version: \"1.0\"\n---\n# PDF tools\n\nRun scripts/extract.sh FILE to get the text of a PDF.\n";

fn pdf_skill(env: &Env) -> PathBuf {
    let skill_md = env.write("pdf-tools/SKILL.md", PDF_SKILL);
    let script = env.write(
        "pdf-tools/scripts/extract.sh",
        "#!/bin/sh\npdftotext \"$1\" -\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    env.write("pdf-tools/reference/forms.md", "# Forms\n\nFill them in.\n");
    skill_md.parent().expect("skill dir").to_path_buf()
}

/// Issue 14, item 3: a Skill is pushed from its directory, by `skill push`, by `apply -f DIR`
/// and by a manifest naming the directory; identical content is "unchanged" whatever the
/// files' times; `get skill` shows the versions; an Agent can then reference it.
#[test]
fn skills_are_pushed_from_a_directory_and_identical_content_is_unchanged() {
    let env = Env::new();
    let dir = pdf_skill(&env);

    let first = env.ok(&["skill", "push", "pdf-tools"]);
    assert!(
        first.starts_with("skill/pdf-tools created (tag 1.0, sha256 "),
        "{first}"
    );
    let sha1 = sha_of(&first);

    // Same content, other modification times: the same archive, so nothing changes.
    touch_all(
        &dir,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    );
    let again = env.ok(&["skill", "push", "pdf-tools"]);
    assert_eq!(
        again,
        format!("skill/pdf-tools unchanged (tag 1.0, sha256 {sha1})\n")
    );
    let applied = env.ok(&["apply", "-f", dir.to_str().expect("utf-8")]);
    assert_eq!(
        applied,
        format!("skill/pdf-tools unchanged (tag 1.0, sha256 {sha1})\n")
    );
    // A manifest names the folder relative to itself, not to the working directory.
    let manifest = env.write(
        "manifests/skill.yaml",
        "apiVersion: agentic.stigmer.ai/v1\nkind: Skill\nmetadata:\n  name: pdf-tools\nspec:\n  path: ../pdf-tools\n",
    );
    let applied = env.ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    assert_eq!(
        applied,
        format!("skill/pdf-tools unchanged (tag 1.0, sha256 {sha1})\n")
    );

    // New content and a new version: updated, with another hash.
    env.write(
        "pdf-tools/SKILL.md",
        &PDF_SKILL
            .replace("\"1.0\"", "\"1.1\"")
            .replace("a PDF.", "a PDF, page by page."),
    );
    let second = env.ok(&["skill", "push", "pdf-tools"]);
    assert!(
        second.starts_with("skill/pdf-tools updated (tag 1.1, sha256 "),
        "{second}"
    );
    let sha2 = sha_of(&second);
    assert_ne!(sha1, sha2);

    let shown = env.ok(&["get", "skill", "pdf-tools"]);
    assert!(shown.contains("pdf-tools"), "{shown}");
    let old = shown
        .lines()
        .find(|l| l.contains(&sha1))
        .unwrap_or_else(|| panic!("no version {sha1} in {shown}"));
    let new = shown
        .lines()
        .find(|l| l.contains(&sha2))
        .unwrap_or_else(|| panic!("no version {sha2} in {shown}"));
    assert!(old.contains("1.0") && !old.starts_with('*'), "{shown}");
    assert!(new.contains("1.1") && new.starts_with('*'), "{shown}");
    let skill = env.json(&["get", "skill", "pdf-tools", "-o", "json"]);
    assert_eq!(skill["status"]["versionHash"], sha2.as_str());

    // What every Agent that references a skill needed.
    let agent = env.write(
        "agent.yaml",
        "kind: Agent\nmetadata: {name: reader}\nspec:\n  instructions: Read the PDFs you are given.\n  skillRefs: [{kind: skill, slug: pdf-tools}]\n",
    );
    assert_eq!(
        env.ok(&["apply", "-f", agent.to_str().expect("utf-8")]),
        "agent/reader created\n"
    );

    // A folder without SKILL.md is refused before anything is sent.
    env.write("not-a-skill/README.md", "hello\n");
    let (_, err) = env.fails(&["skill", "push", "not-a-skill"]);
    assert!(err.contains("SKILL.md"), "{err}");
}

/// Issue 14, item 8: executions and sessions are found by the name the CLI prints, re-applying
/// reports "unchanged" for every kind, and kind lists offer only what works.
#[test]
fn executions_are_reachable_by_name_and_reapplying_is_unchanged() {
    let env = Env::new();
    let agent = env.write(
        "agent.yaml",
        "kind: Agent\nmetadata: {name: code-reviewer}\nspec: {instructions: Review pull requests for bugs.}\n",
    );
    env.ok(&["apply", "-f", agent.to_str().expect("utf-8")]);
    let agent_id = env.json(&["get", "agent", "code-reviewer", "-o", "json"])["metadata"]["id"]
        .as_str()
        .expect("agent id")
        .to_string();
    let instance_id = env.json(&[
        "get",
        "agentinstance",
        "code-reviewer-default",
        "-o",
        "json",
    ])["metadata"]["id"]
        .as_str()
        .expect("instance id")
        .to_string();
    let runs = env.write(
        "runs.yaml",
        &format!(
            "kind: Session\nmetadata: {{name: triage}}\nspec: {{agentInstanceId: {instance_id}, subject: Triage}}\n---\nkind: AgentExecution\nmetadata: {{name: review-pr-42}}\nspec: {{agentId: {agent_id}, message: Review PR 42}}\n"
        ),
    );
    let runs = runs.to_str().expect("utf-8");
    assert_eq!(
        env.ok(&["apply", "-f", runs]),
        "session/triage created\nagentexecution/review-pr-42 created\n"
    );
    assert_eq!(
        env.ok(&["apply", "-f", runs]),
        "session/triage unchanged\nagentexecution/review-pr-42 unchanged\n"
    );

    let execution = env.json(&["get", "agentexecution", "review-pr-42", "-o", "json"]);
    assert_eq!(execution["metadata"]["slug"], "review-pr-42");
    assert_eq!(execution["spec"]["agentId"], agent_id.as_str());
    let table = env.ok(&["get", "agentexecutions"]);
    assert!(table.contains("review-pr-42"), "{table}");
    let session = env.json(&["get", "session", "triage", "-o", "json"]);
    assert_eq!(session["spec"]["subject"], "Triage");

    // A changed execution manifest updates what may change.
    let changed = env.write(
        "runs.yaml",
        &std::fs::read_to_string(runs)
            .expect("read")
            .replace("Review PR 42", "Review PR 42 again"),
    );
    let out = env.ok(&["apply", "-f", changed.to_str().expect("utf-8")]);
    assert_eq!(
        out,
        "session/triage unchanged\nagentexecution/review-pr-42 updated\n"
    );

    assert_eq!(
        env.ok(&["delete", "agentexecution", "review-pr-42"]),
        "agentexecution/review-pr-42 deleted\n"
    );
    let (_, err) = env.fails(&["get", "agentexecution", "review-pr-42"]);
    assert!(err.contains("not found"), "{err}");

    // ExecutionContexts have no list: not offered for listing, and `get` says what works.
    let (_, err) = env.fails(&["get", "executioncontexts"]);
    assert!(err.contains("cannot be listed"), "{err}");
    assert!(err.contains("stigmer get executioncontext NAME"), "{err}");
    let help = env.ok(&["list", "--help"]);
    assert!(help.contains("agentexecution"), "{help}");
    assert!(!help.contains("executioncontext"), "{help}");
    let (_, err) = env.fails(&["list", "executioncontexts"]);
    assert!(err.contains("agentexecution"), "{err}");
    let completion = env.ok(&["completion", "bash"]);
    assert!(completion.contains("agentexecution"), "{completion}");
}

/// Issue 14, item 9: `get -o yaml` output applies after a delete and on another server; on
/// the same, existing resource its revision still guards against lost updates.
#[test]
fn get_yaml_output_applies_after_a_delete_and_on_a_fresh_server() {
    let env = Env::new();
    let manifest = env.write(
        "agent.yaml",
        "kind: Agent\nmetadata: {name: code-reviewer, labels: {team: web}}\nspec: {instructions: Review pull requests for bugs.}\n",
    );
    env.ok(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    let yaml = env.ok(&["get", "agent", "code-reviewer", "-o", "yaml"]);
    assert!(
        yaml.contains("revision:") && yaml.contains("id: agt-"),
        "{yaml}"
    );
    let saved = env.write("saved.yaml", &yaml);
    let saved = saved.to_str().expect("utf-8");
    assert_eq!(
        env.ok(&["apply", "-f", saved]),
        "agent/code-reviewer unchanged\n"
    );

    env.ok(&["delete", "agent", "code-reviewer"]);
    assert_eq!(
        env.ok(&["apply", "-f", saved]),
        "agent/code-reviewer created\n"
    );
    let restored = env.json(&["get", "agent", "code-reviewer", "-o", "json"]);
    assert_eq!(restored["metadata"]["labels"]["team"], "web");

    let fresh = Env::new();
    let copy = fresh.write("saved.yaml", &yaml);
    assert_eq!(
        fresh.ok(&["apply", "-f", copy.to_str().expect("utf-8")]),
        "agent/code-reviewer created\n"
    );

    // The resource exists and changed since: the carried revision is stale, and says so.
    let current = env.ok(&["get", "agent", "code-reviewer", "-o", "yaml"]);
    let current = env.write("current.yaml", &current);
    env.ok(&[
        "apply",
        "-f",
        &env
            .write(
                "edit.yaml",
                "kind: Agent\nmetadata: {name: code-reviewer}\nspec: {instructions: Review pull requests for style.}\n",
            )
            .display()
            .to_string(),
    ]);
    let (_, err) = env.fails(&["apply", "-f", current.to_str().expect("utf-8")]);
    assert!(err.contains("has changed"), "{err}");

    let help = env.ok(&["apply", "--help"]);
    assert!(help.contains("metadata.revision"), "{help}");
}

/// Issue 14, item 10: a directory applies in dependency order whatever the file names, and a
/// reference to something that failed names the document that failed.
#[test]
fn apply_orders_by_dependency_and_names_failed_providers() {
    let env = Env::new();
    env.write(
        "stack/a-agent.yaml",
        "kind: Agent\nmetadata: {name: helper-agent}\nspec:\n  instructions: Help with everything asked.\n  skillRefs: [{kind: skill, slug: helper}]\n",
    );
    env.write(
        "stack/b-environment.yaml",
        "kind: Environment\nmetadata: {name: dev}\nspec: {data: {LOG_LEVEL: {value: debug}}}\n",
    );
    env.write(
        "stack/c-skill.yaml",
        "kind: Skill\nmetadata: {name: helper}\nspec: {path: ./helper}\n",
    );
    env.write("stack/helper/SKILL.md", "---\nname: helper\n---\nHelp.\n");
    let out = env.ok(&["apply", "-f", "stack"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[2], "agent/helper-agent created", "{out}");
    assert!(
        lines[..2]
            .iter()
            .any(|l| l.starts_with("skill/helper created")),
        "{out}"
    );
    assert!(lines[..2].contains(&"environment/dev created"), "{out}");

    // The skill fails; the agent that needs it says which document would have provided it.
    env.write(
        "broken/agents.yaml",
        "kind: Agent\nmetadata: {name: broken-agent}\nspec:\n  instructions: Help with everything asked.\n  skillRefs:\n  - {kind: skill, slug: helper}\n  - {kind: skill, slug: broken-skill}\n---\nkind: Agent\nmetadata: {name: lost-agent}\nspec:\n  instructions: Help with everything asked.\n  skillRefs: [{kind: skill, slug: ghost}]\n",
    );
    env.write(
        "broken/skills.yaml",
        "kind: Skill\nmetadata: {name: broken-skill}\nspec: {path: ./nowhere}\n",
    );
    let (stdout, err) = env.fails(&["apply", "-f", "broken"]);
    assert_eq!(stdout, "", "{stdout}");
    let skills = Path::new("broken").join("skills.yaml");
    assert!(
        err.contains(&format!(
            "spec.skillRefs[1] names skill \"broken-skill\", provided by {}, document 1, which failed: ",
            skills.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("spec.skillRefs[0] names skill \"ghost\", which no document given provides"),
        "{err}"
    );
    assert!(!err.contains("\"helper\", provided"), "{err}");
}
