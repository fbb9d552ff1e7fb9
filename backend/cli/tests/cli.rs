//! The real `stigmer` binary against a real `stigmer-server` it starts itself, each test in
//! its own HOME on its own port.

mod common;

use common::{Env, free_port, stderr};

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The figures of import's summary line, parsed whole (so "1 created" never matches inside
/// "11 created").
#[derive(Debug)]
struct ImportCounts {
    total: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
}

fn import_counts(out: &str) -> ImportCounts {
    let line = out
        .lines()
        .find(|line| line.starts_with("imported "))
        .unwrap_or_else(|| panic!("no summary line in {out:?}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse().expect("a number"))
        .collect();
    let [total, created, updated, unchanged] = numbers[..] else {
        panic!("unexpected summary line {line:?}");
    };
    ImportCounts {
        total,
        created,
        updated,
        unchanged,
    }
}

fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

const MANIFESTS: &str = r#"apiVersion: agentic.stigmer.ai/v1
kind: Agent
metadata:
  name: Code Reviewer
spec:
  instructions: Review pull requests for bugs and style.
---
apiVersion: agentic.stigmer.ai/v1
kind: Environment
metadata:
  name: dev
spec:
  data:
    LOG_LEVEL:
      value: debug
---
{"apiVersion": "agentic.stigmer.ai/v1", "kind": "McpServer", "metadata": {"name": "files"}, "spec": {"stdio": {"command": "npx"}}}
"#;

#[test]
fn apply_get_list_delete_round_trip() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    let file = file.to_str().expect("utf-8 path");

    let out = env.ok(&["apply", "-f", file]);
    assert_eq!(
        out,
        "agent/code-reviewer created\nenvironment/dev created\nmcpserver/files created\n"
    );
    let out = env.ok(&["apply", "-f", file]);
    assert_eq!(
        out,
        "agent/code-reviewer unchanged\nenvironment/dev unchanged\nmcpserver/files unchanged\n"
    );
    let changed = env.write(
        "stack.yaml",
        &MANIFESTS.replace("bugs and style", "bugs, style and tests"),
    );
    let out = env.ok(&["apply", "-f", changed.to_str().expect("utf-8")]);
    assert!(out.contains("agent/code-reviewer updated"), "{out}");
    assert!(out.contains("environment/dev unchanged"), "{out}");

    // Found across kinds by name, by text with --text, narrowed with -k.
    let found = env.ok(&["find", "REVIEW"]);
    let rows: Vec<Vec<&str>> = found
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["KIND", "NAME", "ID", "MATCHED"], "{found}");
    assert_eq!(rows.len(), 3, "the agent and its default instance: {found}");
    assert_eq!(
        (rows[1][0], rows[1][1], rows[1][2]),
        ("agent", "Code", "Reviewer")
    );
    assert_eq!(rows[1][4], "name", "{found}");
    assert_eq!(rows[2][0], "agentinstance", "{found}");
    let by_text: Value =
        serde_json::from_str(&env.ok(&["find", "debug", "--text", "-o", "json"])).expect("json");
    assert_eq!(by_text.as_array().map(Vec::len), Some(1), "{by_text}");
    assert_eq!(by_text[0]["metadata"]["slug"], "dev");
    assert_eq!(env.ok(&["find", "debug"]), "", "names only without --text");
    assert_eq!(env.ok(&["find", "review", "-k", "environment"]), "");
    let (_, said) = env.fails(&["find", "x"]);
    assert!(said.contains("query"), "names the field: {said}");

    // By name, as a table, and as JSON; then by id with another spelling of the kind.
    let table = env.ok(&["get", "agent", "code-reviewer"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("code-reviewer"), "{table}");
    let agent: Value =
        serde_json::from_str(&env.ok(&["get", "Agents", "Code Reviewer", "-o", "json"]))
            .expect("json");
    let id = agent["metadata"]["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("agt-"), "{id}");
    let by_id: Value =
        serde_json::from_str(&env.ok(&["get", "agt", &id, "-o", "json"])).expect("json");
    assert_eq!(by_id["metadata"]["slug"], "code-reviewer");
    let yaml = env.ok(&["get", "agent", &id, "-o", "yaml"]);
    assert!(yaml.contains("slug: code-reviewer"), "{yaml}");

    let list: Value =
        serde_json::from_str(&env.ok(&["list", "mcpservers", "-o", "json"])).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["metadata"]["slug"], "files");
    let list: Value =
        serde_json::from_str(&env.ok(&["get", "environment", "-o", "json"])).expect("json");
    assert_eq!(list[0]["metadata"]["slug"], "dev");

    assert_eq!(
        env.ok(&["delete", "agent", "code-reviewer"]),
        "agent/code-reviewer deleted\n"
    );
    let out = env.run(&["get", "agent", "code-reviewer"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // delete -f removes what the manifests name; the deleted agent is an error, the rest go.
    let out = env.run(&["delete", "-f", file]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("environment/dev deleted"), "{stdout}");
    assert!(stdout.contains("mcpserver/files deleted"), "{stdout}");
    assert!(stderr(&out).contains("document 1"), "{}", stderr(&out));
    let list: Value =
        serde_json::from_str(&env.ok(&["list", "environments", "-o", "json"])).expect("json");
    assert_eq!(list, serde_json::json!([]));
}

#[test]
fn a_bad_document_is_named_and_the_others_still_apply() {
    let env = Env::new();
    let file = env.write(
        "agents.yaml",
        "kind: Agent\nmetadata: {name: good}\nspec: {instructions: Long enough instructions}\n---\nkind: Agent\nmetadata: {name: bad}\nspec: {instructions: short}\n---\n- not a mapping\n---\nkind: Gizmo\nmetadata: {name: g}\n",
    );
    let out = env.run(&["apply", "-f", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("agents.yaml, document 2, line 7: spec.instructions:"),
        "{err}"
    );
    assert!(err.contains("document 3"), "{err}");
    assert!(err.contains("mapping"), "{err}");
    assert!(err.contains("document 4"), "{err}");
    assert!(err.contains("Gizmo"), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "agent/good created\n");
    assert!(env.ok(&["get", "agent", "good"]).contains("good"));
    assert!(!env.run(&["get", "agent", "bad"]).status.success());
}

#[test]
fn the_daemon_starts_once_on_demand_and_stops() {
    let env = Env::new();
    // Two CLIs at once start one daemon.
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.std_cmd(&["list", "agents", "-o", "json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn stigmer")
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect();
    let mut starts = 0;
    for out in &outputs {
        assert!(out.status.success(), "{}", stderr(out));
        starts += stderr(out)
            .matches("Starting local backend daemon...")
            .count();
    }
    assert_eq!(starts, 1, "exactly one CLI starts the daemon");
    let pid: u32 = std::fs::read_to_string(env.pid_file())
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(pid_alive(pid));
    assert!(env.home().join(".stigmer/logs/daemon.log").is_file());

    // Running again does not start another.
    let out = env.run(&["list", "agents"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("Starting"), "{}", stderr(&out));

    let status = env.ok(&["server", "status"]);
    assert!(status.starts_with("running"), "{status}");
    assert!(status.contains(&pid.to_string()), "{status}");

    let stopped = env.ok(&["server", "stop"]);
    assert!(stopped.contains("stopped"), "{stopped}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still alive");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!env.pid_file().exists());
    // Not running is exit status 3, as systemctl says it, so scripts can test it.
    let out = env.run(&["server", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.starts_with("not running"), "{status}");
    // `server start` starts it explicitly, and stop works again.
    let started = env.ok(&["server", "start"]);
    assert!(started.starts_with("started"), "{started}");
    assert!(env.ok(&["server", "start"]).starts_with("already running"));
    assert!(env.ok(&["server", "stop"]).contains("stopped"));
}

#[test]
fn dry_run_backend_status_set_and_completion() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    let out = env.ok(&["apply", "--dry-run", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(
        out,
        "agent/code-reviewer valid (dry run)\nenvironment/dev valid (dry run)\nmcpserver/files valid (dry run)\n"
    );
    // Nothing was written (and the dry run needed no server).
    assert!(!env.pid_file().exists());
    let list: Value =
        serde_json::from_str(&env.ok(&["list", "agents", "-o", "json"])).expect("json");
    assert_eq!(list, serde_json::json!([]));

    env.ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let status = env.ok(&["backend", "status"]);
    assert!(status.contains("mode:       local"), "{status}");
    assert!(status.contains("reachable:  yes"), "{status}");
    assert!(status.contains(&env.endpoint), "{status}");
    assert!(status.contains("Agent: 1"), "{status}");
    assert!(status.contains("McpServer: 1"), "{status}");
    // The database the server reports, not one read from the config file.
    let served = env.home().join(".stigmer").join("stigmer.db");
    assert!(
        status.contains(&format!("database:   {}", served.display())),
        "{status}"
    );

    env.ok(&["backend", "set", "cloud"]);
    let config = std::fs::read_to_string(env.home().join(".stigmer/config.yaml")).expect("config");
    assert!(config.contains("type: cloud"), "{config}");
    assert!(
        !config.contains(&env.endpoint),
        "env overrides are not saved: {config}"
    );
    let status = env.ok(&["backend", "status"]);
    assert!(status.contains("mode:       cloud"), "{status}");
    env.ok(&["backend", "set", "local"]);
    assert!(env.ok(&["backend", "status"]).contains("mode:       local"));

    let completion = env.ok(&["completion", "bash"]);
    assert!(completion.contains("stigmer"), "{completion}");
}

#[test]
fn login_refuses_an_empty_or_missing_key_before_calling_anyone() {
    let env = Env::new();
    let login = [
        "login",
        "--endpoint",
        "api.example.test:443",
        "--org",
        "acme",
        "--token-stdin",
    ];
    let refused = env.cmd(&login).write_stdin("\n").assert().failure();
    let stderr = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(stderr.contains("--token-stdin read no API key"), "{stderr}");
    let neither = env
        .cmd(&[
            "login",
            "--endpoint",
            "api.example.test:443",
            "--org",
            "acme",
        ])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&neither.get_output().stderr).into_owned();
    assert!(stderr.contains("--token"), "{stderr}");
    assert!(
        !env.home().join(".stigmer/config.yaml").exists(),
        "a refused login saves nothing"
    );
}

#[test]
fn watch_prints_the_snapshot_then_live_changes() {
    use std::io::BufRead;
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    let file = file.to_str().expect("utf-8");
    env.ok(&["apply", "-f", file]);

    let mut child = env
        .std_cmd(&["watch", "mcpserver"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a watch line within 20 s")
    };
    let first = next();
    assert!(first.contains("mcpserver/files mcp-"), "{first}");
    env.ok(&["delete", "mcpserver", "files"]);
    let second = next();
    assert!(second.contains("mcpserver/files"), "{second}");
    assert!(second.to_lowercase().contains("delete"), "{second}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn export_then_import_restores_deleted_resources_with_their_ids() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    env.ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let before: Value =
        serde_json::from_str(&env.ok(&["get", "agent", "code-reviewer", "-o", "json"]))
            .expect("json");
    let dump = env.home().join("dump.yaml");
    let dump = dump.to_str().expect("utf-8");
    env.ok(&["export", "--file", dump]);
    let text = env.ok(&["export", "agents", "mcpserver"]);
    assert!(
        text.contains("kind: Agent") && text.contains("kind: McpServer"),
        "{text}"
    );
    assert!(!text.contains("kind: Environment"), "{text}");

    let again = env.ok(&["import", "-f", dump]);
    let counts = import_counts(&again);
    assert_eq!((counts.created, counts.updated), (0, 0), "{again}");
    assert_eq!(counts.unchanged, counts.total, "{again}");
    env.ok(&["delete", "mcpserver", "files"]);
    let restored = env.ok(&["import", "-f", dump]);
    let counts = import_counts(&restored);
    assert_eq!((counts.created, counts.updated), (1, 0), "{restored}");
    assert_eq!(counts.unchanged, counts.total - 1, "{restored}");
    let after: Value =
        serde_json::from_str(&env.ok(&["get", "agent", "code-reviewer", "-o", "json"]))
            .expect("json");
    assert_eq!(before["metadata"]["id"], after["metadata"]["id"]);
    assert!(env.ok(&["get", "mcpserver", "files"]).contains("files"));
}

/// A resource too large to send (an older server stored it, or a hand edit grew it) is left
/// out of the export, named, and the export fails, but everything else is written.
#[test]
fn export_names_what_it_left_out_and_fails() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    env.ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let agent: Value =
        serde_json::from_str(&env.ok(&["get", "agent", "code-reviewer", "-o", "json"]))
            .expect("json");
    let id = agent["metadata"]["id"].as_str().expect("id");
    let db = rusqlite::Connection::open(env.home().join(".stigmer").join("stigmer.db"))
        .expect("open the daemon's database");
    db.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let grown = db
        .execute(
            "UPDATE resources SET data = json_set(data, '$.spec.description', ?1) WHERE id = ?2",
            rusqlite::params!["x".repeat(11 << 20), id],
        )
        .expect("hand edit");
    assert_eq!(grown, 1);

    let dump = env.home().join("dump.yaml");
    let out = env.run(&["export", "--file", dump.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "an incomplete export fails");
    let err = stderr(&out);
    assert!(err.contains("left out") && err.contains(id), "{err}");
    let text = std::fs::read_to_string(&dump).expect("the rest is written");
    assert!(text.contains("kind: McpServer"), "{text}");
    assert!(!text.contains("kind: Agent\n"), "{text}");
}

#[test]
fn export_wipe_import_export_gives_the_same_file() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    env.ok(&["apply", "-f", file.to_str().expect("utf-8")]);
    let first = env.home().join("first.yaml");
    env.ok(&["export", "--file", first.to_str().expect("utf-8")]);

    // Wipe: stop the daemon and remove the database (the master key file stays, as it must
    // for the sealed secrets in the export to open again).
    env.ok(&["server", "stop"]);
    let db = env.home().join(".stigmer").join("stigmer.db");
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let _ = std::fs::remove_file(path);
    }
    assert!(
        env.ok(&["list", "agents", "-o", "json"]).trim() == "[]",
        "the database is empty"
    );

    let imported = env.ok(&["import", "-f", first.to_str().expect("utf-8")]);
    let counts = import_counts(&imported);
    assert!(counts.total > 0, "{imported}");
    assert_eq!(counts.created, counts.total, "{imported}");
    let second = env.home().join("second.yaml");
    env.ok(&["export", "--file", second.to_str().expect("utf-8")]);
    let (a, b) = (
        std::fs::read_to_string(&first).expect("first"),
        std::fs::read_to_string(&second).expect("second"),
    );
    assert!(!a.is_empty());
    assert_eq!(a, b, "the round trip is lossless");
    let twice = env.ok(&["import", "-f", first.to_str().expect("utf-8")]);
    let counts = import_counts(&twice);
    assert_eq!((counts.created, counts.updated), (0, 0), "{twice}");
    assert_eq!(counts.unchanged, counts.total, "{twice}");
}

/// A closed stdout (`stigmer completion bash | head -1`) ends the CLI quietly: no panic, no
/// exit status 101.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::{BufRead, BufReader};
    let env = Env::new();
    let mut child = env
        .std_cmd(&["completion", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("first line");
    // The reader is dropped here: the pipe is closed with most of the script unread.
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert_ne!(out.status.code(), Some(101), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A token goes in plain text only to this machine: a cloud endpoint without TLS is refused
/// before anything is sent, with what to use instead.
#[test]
fn a_token_is_never_sent_unencrypted_to_another_machine() {
    let env = Env::new();
    env.cloud_config("203.0.113.7:50051", "t0k", "acme");
    // The harness points STIGMER_ENDPOINT at a local port; the saved login must apply here.
    let out = env
        .cmd(&["get", "agents"])
        .env_remove("STIGMER_ENDPOINT")
        .output()
        .expect("run stigmer");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refusing to send the token unencrypted to 203.0.113.7:50051")
            && err.contains("https://"),
        "{err}"
    );
}

/// One rule for the envelope, checked before anything is sent: `kind` is required,
/// `apiVersion` may be left out but, when given, must be agentic.stigmer.ai/v1.
#[test]
fn kind_is_required_and_api_version_optional_but_exact() {
    let env = Env::new();
    let file = env.write(
        "envelope.yaml",
        "kind: Agent\nmetadata: {name: no-version}\nspec: {instructions: Long enough instructions}\n\
         ---\napiVersion: agentic.stigmer.ai/v2\nkind: Agent\nmetadata: {name: wrong-version}\n\
         spec: {instructions: Long enough instructions}\n\
         ---\napiVersion: agentic.stigmer.ai/v1\nmetadata: {name: no-kind}\n",
    );
    let out = env.run(&["apply", "--dry-run", "-f", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "agent/no-version valid (dry run)\n"
    );
    let err = stderr(&out);
    let line = |document: &str| {
        err.lines()
            .find(|line| line.contains(document))
            .unwrap_or_else(|| panic!("no error for {document} in {err}"))
            .to_string()
    };
    assert!(
        line("envelope.yaml, document 2").ends_with(
            ": apiVersion: \"agentic.stigmer.ai/v2\" is not supported; use \
             agentic.stigmer.ai/v1, or leave apiVersion out"
        ),
        "{err}"
    );
    assert!(
        line("envelope.yaml, document 3").ends_with(
            ": kind: missing; every document needs a kind, such as Agent (apiVersion may be \
             left out, and is agentic.stigmer.ai/v1 when given)"
        ),
        "{err}"
    );
    assert!(err.contains("2 of 3 documents failed the check"), "{err}");
}

/// Every mistake of every document in one run, each with its file, document, line and path in
/// the names the manifest uses, saying what is allowed there.
#[test]
fn every_manifest_mistake_is_reported_with_its_line_and_what_is_allowed() {
    let env = Env::new();
    let yaml = env.write(
        "agents.yaml",
        "apiVersion: agentic.stigmer.ai/v1
kind: Agent
metadata:
  name: good
spec:
  instructions: Review pull requests carefully.
---
kind: Agent
metadata:
  name: reviewer
spec:
  instructions: Review pull requests carefully.
  skillRefs:
    - kind: skil
      slugg: x
  mcpServers:
    - name: files
      stdio: {command: npx}
      http: {url: \"https://x.test\"}
  colour: blue
---
kind: Workflow
metadata: {name: deploy}
spec:
  document:
    dsl: 1.0
    namespace: ops
    name: deploy
    version: 2
  tasks:
    - name: wait
      kind: WORKFLOW_TASK_KIND_WAIT
      taskConfig: {seconds: 5}
",
    );
    let json = env.write(
        "more.json",
        "[\n  {\"kind\": \"Environment\", \"metadata\": {\"name\": \"dev\"}},\n  {\"kind\": \"Environment\",\n   \"metadata\": {\"name\": \"prod\", \"lables\": {}}}\n]\n",
    );
    let out = env.run(&[
        "apply",
        "--dry-run",
        "-f",
        yaml.to_str().expect("utf-8"),
        "-f",
        json.to_str().expect("utf-8"),
    ]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "agent/good valid (dry run)\nenvironment/dev valid (dry run)\n"
    );
    let err = stderr(&out);
    let expected = [
        "agents.yaml, document 2, line 14: spec.skillRefs[0].kind: \"skil\" is not allowed; \
         use one of: api_resource_version, iam_policy, ",
        "agents.yaml, document 2, line 15: spec.skillRefs[0].slugg: unknown field; \
         ApiResourceReference has: scope, org, kind, slug, version",
        "agents.yaml, document 2, line 18: spec.mcpServers[0].stdio: spec.mcpServers[0].http \
         is set too; set only one of spec.mcpServers[0].stdio, spec.mcpServers[0].http, \
         spec.mcpServers[0].docker",
        "agents.yaml, document 2, line 20: spec.colour: unknown field; AgentSpec has: \
         description, iconUrl, instructions, mcpServers, skillRefs, subAgents, envSpec",
        "agents.yaml, document 3, line 26: spec.document.dsl: 1.0 is a number, but text is \
         expected here: quote it, as \"1.0\"",
        "agents.yaml, document 3, line 29: spec.document.version: 2 is a number, but text is \
         expected here: quote it, as \"2\"",
        "more.json, document 2, line 4: metadata.lables: unknown field; ApiResourceMetadata \
         has: ",
    ];
    // Each file as it was named (here, absolutely), then the rest as expected, in order;
    // the first use's note on the configuration written comes before them.
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    for (line, want) in lines.iter().zip(expected) {
        let (file, rest) = want.split_once(", ").expect("file, rest");
        let named = format!("error: {}{file}, ", env.home().join("").display());
        assert!(
            line.strip_prefix(&named)
                .is_some_and(|line| line.starts_with(rest)),
            "{line:?} is not {want:?}; all:\n{err}"
        );
    }
    assert!(lines[0].contains(", skill, "), "{}", lines[0]);
    assert_eq!(
        lines.len(),
        expected.len() + 1,
        "one line per mistake and the summary:\n{err}"
    );
    assert!(err.contains("3 of 5 documents failed the check"), "{err}");
}

/// An unreachable server is one line with the endpoint and what to do, not the same connect
/// error once per document.
#[test]
fn apply_to_an_unreachable_server_says_so_once() {
    let env = Env::new();
    let unused = format!("127.0.0.1:{}", free_port());
    env.cloud_config(&unused, "t0k", "acme");
    let file = env.write("stack.yaml", MANIFESTS);
    let out = env
        .cmd(&["apply", "-f", file.to_str().expect("utf-8")])
        .env_remove("STIGMER_ENDPOINT")
        .output()
        .expect("run stigmer");
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|line| !line.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains(&unused) && lines[0].contains("stigmer backend status"),
        "{err}"
    );
}

#[test]
fn apply_atomic_applies_every_document_or_none_and_blames_each_document() {
    let env = Env::new();
    let file = env.write("stack.yaml", MANIFESTS);
    let file = file.to_str().expect("utf-8 path");
    let out = env.ok(&["apply", "--atomic", "-f", file]);
    assert_eq!(
        out,
        "agent/code-reviewer created\nenvironment/dev created\nmcpserver/files created\n"
    );
    let out = env.ok(&["apply", "--atomic", "-f", file]);
    assert!(
        out.lines().all(|line| line.ends_with(" unchanged")),
        "{out}"
    );

    let broken = env.write(
        "broken.yaml",
        "kind: Agent\nmetadata: {name: fine}\nspec: {instructions: Answer every question politely}\n\
         ---\nkind: Agent\nmetadata: {name: terse}\nspec: {instructions: short}\n",
    );
    let (_, err) = env.fails(&["apply", "--atomic", "-f", broken.to_str().expect("utf-8")]);
    assert!(
        err.contains("document 2") && err.contains("spec.instructions"),
        "the mistake is blamed on its document: {err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    let listed = env.ok(&["list", "agents"]);
    assert!(
        !listed.contains("fine"),
        "the good document was not applied: {listed}"
    );
}
