//! `stigmer apply` without `-f` (issue 20): a project's program runs with STIGMER_OUT_DIR and
//! the binary protobuf files it writes are applied. The program is a python3 script that
//! copies files this test encoded with stigmer-api's descriptors from FIXTURE_DIR, so the
//! whole protocol runs without an SDK or a Go toolchain (tests/common for the harness).

mod common;

use std::path::PathBuf;

use common::{Env, stderr};
use prost_reflect::{DynamicMessage, ReflectMessage};
use serde_json::{Value, json};

/// Copies every fixture into STIGMER_OUT_DIR, only when run in the project folder; with
/// FAIL set, fails the way a program with a mistake does.
const MAIN_PY: &str = r#"import os, shutil, sys
if not os.path.exists("Stigmer.yaml"):
    sys.exit("not run in the project folder")
if os.environ.get("FAIL"):
    print("Traceback (most recent call last):", file=sys.stderr)
    print("NameError: name 'agnet' is not defined", file=sys.stderr)
    sys.exit(3)
src, out = os.environ["FIXTURE_DIR"], os.environ["STIGMER_OUT_DIR"]
for name in sorted(os.listdir(src)):
    shutil.copy(os.path.join(src, name), os.path.join(out, name))
"#;

const STIGMER_YAML: &str = "name: review-bot\nruntime: python\nmain: main.py\nversion: 0.1.0\ndescription: Reviews pull requests.\n";

/// `message` (proto3 JSON) encoded as the named message of the API.
fn encode(full_name: &str, message: Value) -> Vec<u8> {
    let descriptor = stigmer_api::DESCRIPTOR_POOL
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} in the API"));
    let dynamic = DynamicMessage::deserialize(descriptor, message).expect("valid message");
    encoded(&dynamic)
}

/// Through the bound, as the CLI's tests do not depend on prost itself.
fn encoded<M: ReflectMessage>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

fn skill(name: &str) -> Vec<u8> {
    encode(
        "ai.stigmer.agentic.skill.v1.Skill",
        json!({"metadata": {"name": name},
               "spec": {"skillMd": format!("---\nname: {name}\n---\n# Reviewing\n\nRead the diff first.\n"), "tag": "1.0"}}),
    )
}

fn agent(name: &str, skills: &[&str]) -> Vec<u8> {
    let refs: Vec<Value> = skills
        .iter()
        .map(|slug| json!({"kind": "skill", "slug": slug}))
        .collect();
    encode(
        "ai.stigmer.agentic.agent.v1.Agent",
        json!({"apiVersion": "agentic.stigmer.ai/v1", "kind": "Agent", "metadata": {"name": name},
               "spec": {"instructions": "Review pull requests for bugs.", "skillRefs": refs}}),
    )
}

fn workflow(name: &str) -> Vec<u8> {
    encode(
        "ai.stigmer.agentic.workflow.v1.Workflow",
        json!({"metadata": {"name": name},
               "spec": {"document": {"dsl": "1.0.0", "namespace": "ci", "name": name, "version": "1.0.0"},
                        "tasks": [{"name": "init", "kind": "WORKFLOW_TASK_KIND_SET",
                                   "taskConfig": {"variables": {"x": "1"}}}]}}),
    )
}

/// A project folder under HOME with Stigmer.yaml and main.py, and an empty fixture folder.
struct Project {
    dir: PathBuf,
    fixtures: PathBuf,
}

impl Project {
    fn new(env: &Env) -> Self {
        env.write("review-bot/Stigmer.yaml", STIGMER_YAML);
        env.write("review-bot/main.py", MAIN_PY);
        let fixtures = env.home().join("fixtures");
        std::fs::create_dir_all(&fixtures).expect("fixtures");
        Self {
            dir: env.home().join("review-bot"),
            fixtures,
        }
    }

    fn fixture(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.fixtures.join(name), bytes).expect("write fixture");
    }

    /// A skill, two agents (the first declared in dependencies.json to need the second, the
    /// second referencing the skill) and a workflow that needs the first agent.
    fn full(&self) {
        self.fixture("skill-0.pb", &skill("code-review"));
        self.fixture("agent-0.pb", &agent("lead-reviewer", &[]));
        self.fixture("agent-1.pb", &agent("reviewer", &["code-review"]));
        self.fixture("workflow-0.pb", &workflow("pr-review"));
        self.fixture(
            "dependencies.json",
            br#"{"agent:lead-reviewer": ["agent:reviewer"], "agent:reviewer": ["skill:code-review"],
                 "workflow:pr-review": ["agent:lead-reviewer", "skill:external:security"]}"#,
        );
    }

    /// `stigmer ARGS` run in the project folder.
    fn run(&self, env: &Env, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = env.cmd(args);
        cmd.current_dir(&self.dir)
            .env("FIXTURE_DIR", &self.fixtures);
        for (name, value) in extra {
            cmd.env(name, value);
        }
        cmd.output().expect("run stigmer")
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    stdout(out)
}

fn failed(out: &std::process::Output) -> String {
    assert!(!out.status.success(), "should fail: {}", stdout(out));
    stderr(out)
}

#[test]
fn apply_runs_the_project_and_applies_what_it_wrote_in_dependency_order() {
    let env = Env::new();
    let project = Project::new(&env);
    project.full();
    // Left by an earlier run of a program that declared it: never applied again.
    let out_dir = project.dir.join(".stigmer");
    std::fs::create_dir_all(&out_dir).expect(".stigmer");
    std::fs::write(out_dir.join("agent-9.pb"), agent("stale-agent", &[])).expect("stale");
    std::fs::write(out_dir.join("notes.txt"), "mine").expect("notes");

    let out = project.run(&env, &["apply"], &[]);
    let lines: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("skill/code-review created (tag 1.0, sha256 "),
        "{lines:?}"
    );
    assert_eq!(
        &lines[1..],
        [
            "agent/reviewer created",
            "agent/lead-reviewer created",
            "workflow/pr-review created"
        ]
    );
    assert!(stderr(&out).contains("Running review-bot (python, version 0.1.0)"));

    let agent = env.json(&["get", "agent", "reviewer", "-o", "json"]);
    assert_eq!(agent["spec"]["skillRefs"][0]["slug"], "code-review");
    env.ok(&["get", "workflow", "pr-review"]);
    env.ok(&["get", "skill", "code-review"]);
    let (_, err) = env.fails(&["get", "agent", "stale-agent"]);
    assert!(err.contains("stale-agent"), "{err}");
    assert!(!out_dir.join("agent-9.pb").exists());
    assert!(
        out_dir.join("notes.txt").exists(),
        "only SDK outputs are cleaned"
    );

    // The same program again changes nothing.
    let again = ok(&project.run(&env, &["apply"], &[]));
    assert!(again.contains("agent/reviewer unchanged"), "{again}");
    assert!(again.contains("workflow/pr-review unchanged"), "{again}");
}

#[test]
fn a_dry_run_checks_the_project_and_changes_nothing() {
    let env = Env::new();
    let project = Project::new(&env);
    project.full();
    let dir = project.dir.to_str().expect("utf-8").to_string();
    let mut cmd = env.cmd(&["apply", "--dry-run", "--project", &dir]);
    cmd.env("FIXTURE_DIR", &project.fixtures);
    let out = cmd.output().expect("run stigmer");
    let printed = ok(&out);
    assert!(
        printed.contains("agent/lead-reviewer valid (dry run)"),
        "{printed}"
    );
    assert!(
        printed.contains("skill/code-review valid (dry run"),
        "{printed}"
    );
    assert!(!env.pid_file().exists(), "a dry run starts no server");
    let listed = env.ok(&["list", "agents"]);
    assert!(!listed.contains("reviewer"), "{listed}");
}

#[test]
fn a_failing_program_is_reported_with_its_status_and_stderr() {
    let env = Env::new();
    let project = Project::new(&env);
    project.full();
    let err = failed(&project.run(&env, &["apply"], &[("FAIL", "1")]));
    assert!(
        err.contains("`python3 main.py` failed with exit status 3"),
        "{err}"
    );
    assert!(
        err.contains("NameError: name 'agnet' is not defined"),
        "{err}"
    );
    assert!(!env.pid_file().exists(), "nothing is applied: {err}");
}

#[test]
fn a_program_that_writes_nothing_is_reported() {
    let env = Env::new();
    let project = Project::new(&env);
    let err = failed(&project.run(&env, &["apply"], &[]));
    assert!(
        err.contains("the program wrote no .pb files to STIGMER_OUT_DIR"),
        "{err}"
    );
    assert!(err.contains("agent-N.pb"), "{err}");

    // A file that is not the message its name says is named, and nothing is applied.
    project.fixture("agent-0.pb", &[0xff, 0xff]);
    let err = failed(&project.run(&env, &["apply", "--dry-run"], &[]));
    assert!(
        err.contains("agent-0.pb: not a binary ai.stigmer.agentic.agent.v1.Agent message"),
        "{err}"
    );
}

#[test]
fn unknown_runtimes_missing_toolchains_and_missing_projects_are_named() {
    let env = Env::new();
    let project = Project::new(&env);
    project.full();

    env.write(
        "review-bot/Stigmer.yaml",
        "name: review-bot\nruntime: cobol\nmain: main.py\n",
    );
    let err = failed(&project.run(&env, &["apply"], &[]));
    assert!(err.contains("runtime: unknown runtime \"cobol\""), "{err}");

    // A PATH without go: the toolchain is named with how to install it.
    env.write(
        "review-bot/Stigmer.yaml",
        "name: review-bot\nruntime: go\nmain: main.py\n",
    );
    let empty = env.home().join("empty-bin");
    std::fs::create_dir_all(&empty).expect("empty bin");
    let path = empty.to_str().expect("utf-8");
    let err = failed(&project.run(&env, &["apply"], &[("PATH", path)]));
    assert!(
        err.contains("the go runtime needs `go`, which is not on PATH: install Go"),
        "{err}"
    );

    let err = failed(&env.run(&["apply"]));
    assert!(err.contains("Stigmer.yaml not found"), "{err}");
}

#[test]
fn org_is_refused_on_the_local_backend_but_local() {
    let env = Env::new();
    let project = Project::new(&env);
    project.full();
    let err = failed(&project.run(&env, &["apply", "--dry-run", "--org", "acme"], &[]));
    assert!(
        err.contains("the local backend works in the organization `local`"),
        "{err}"
    );
    ok(&project.run(&env, &["apply", "--dry-run", "--org", "local"], &[]));
}
