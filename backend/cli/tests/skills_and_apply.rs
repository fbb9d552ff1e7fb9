//! Skills from the CLI, executions by name, manifests carrying server-owned fields, and apply
//! order: the real `stigmer` binary against a real `stigmer-server` it starts itself, each
//! test in its own HOME on its own port. The harness is a copy of the one in cli.rs.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

/// target/debug/stigmer-server, built once if missing.
fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("target/debug")
                .to_path_buf();
            let binary = dir.join("stigmer-server");
            if !binary.is_file() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = std::process::Command::new(cargo)
                    .args(["build", "-p", "stigmer-server"])
                    .status()
                    .expect("run cargo build -p stigmer-server");
                assert!(status.success(), "cargo build -p stigmer-server failed");
            }
            assert!(binary.is_file(), "{} is missing", binary.display());
            binary
        })
        .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One isolated user: a temp HOME and a port. Stops the daemon it may have started on drop,
/// so a failing test leaves nothing running.
struct Env {
    home: tempfile::TempDir,
    endpoint: String,
}

impl Env {
    fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("temp HOME"),
            endpoint: format!("127.0.0.1:{}", free_port()),
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stigmer"));
        // The developer's settings reach neither the CLI nor the daemon it starts.
        for (var, _) in std::env::vars_os() {
            if var
                .to_str()
                .is_some_and(|name| name.starts_with("STIGMER_") || name == "RUST_LOG")
            {
                cmd.env_remove(var);
            }
        }
        cmd.env("HOME", self.home())
            .env("STIGMER_ENDPOINT", &self.endpoint)
            .env("STIGMER_SERVER_BIN", server_binary())
            .current_dir(self.home())
            .args(args)
            .timeout(Duration::from_secs(60));
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run stigmer")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "stigmer {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stdout and stderr.
    fn fails(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "stigmer {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    }

    /// Writes `text` to `name` under HOME, creating folders as needed.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    fn pid_file(&self) -> PathBuf {
        self.home().join(".stigmer").join("daemon.pid")
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.pid_file().exists() {
            let _ = self.cmd(&["server", "stop"]).output();
        }
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
