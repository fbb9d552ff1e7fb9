//! Issue 20 on the CLI's side: the configuration file (first use, the keys other documents
//! use, unknown keys), call deadlines and keepalive against a server that never answers, and
//! the migration commands of seed 001 (`export --all`, `import < file`, a failed import).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{Env, stderr};
use serde_json::Value;

const FIRST_USE: &str = "Using local backend (organization: local)";

fn config_path(env: &Env) -> std::path::PathBuf {
    env.home().join(".stigmer").join("config.yaml")
}

#[test]
fn the_first_use_writes_the_defaults_once_and_says_so_on_stderr_only() {
    let env = Env::new();
    let out = env.run(&["list", "agents", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // stdout is data: exactly the JSON, nothing about the configuration.
    let list: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON alone");
    assert_eq!(list, serde_json::json!([]));
    assert!(stderr(&out).contains(FIRST_USE), "{}", stderr(&out));

    let path = config_path(&env);
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read_to_string(&path).expect("read");
    for key in ["type: local", "endpoint: 127.0.0.1:50051", "timeout: 30s"] {
        assert!(written.contains(key), "{written}");
    }

    let out = env.run(&["list", "agents", "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains(FIRST_USE), "{}", stderr(&out));

    // A file the user wrote is never replaced.
    let mine = format!("{written}# mine\n");
    std::fs::write(&path, &mine).expect("edit");
    env.ok(&["list", "agents"]);
    assert_eq!(std::fs::read_to_string(&path).expect("read"), mine);
}

#[test]
fn the_other_documents_keys_are_honoured_and_unknown_ones_named() {
    let env = Env::new();
    let db = env.home().join("seed-001.db");
    let path = env.write(
        ".stigmer/config.yaml",
        &format!(
            "backend:\n  type: local\n  local:\n    transport: in-process\n    db_path: {}\n    llm:\n      provider: ollama\n",
            db.display()
        ),
    );
    let out = env.run(&["backend", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains(&db.display().to_string()), "{status}");
    assert!(db.is_file(), "db_path names the database");
    let warning = format!(
        "warning: {}: unknown key backend.local.llm is ignored",
        path.display()
    );
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    assert!(!status.contains("unknown key"), "{status}");

    let data_dir = env.home().join("data");
    env.write(
        ".stigmer/config.yaml",
        &format!(
            "backend:\n  local:\n    transport: in-process\n    data_dir: {}\n",
            data_dir.display()
        ),
    );
    env.ok(&["list", "agents"]);
    assert!(
        data_dir.join("stigmer.db").is_file(),
        "data_dir holds stigmer.db"
    );

    env.write(
        ".stigmer/config.yaml",
        "backend:\n  type: cloud\n  cloud:\n    endpoint: 127.0.0.1:9\n    organization: acme\n",
    );
    let status = env.ok(&["backend", "status"]);
    assert!(status.contains("org:        acme"), "{status}");

    env.write(
        ".stigmer/config.yaml",
        "backend:\n  type: cloud\n  cloud:\n    endpoint: 127.0.0.1:9\n    org_id: acme\n    env_id: env-prod\n",
    );
    let (_, err) = env.fails(&["list", "agents"]);
    assert!(err.contains("backend.cloud.env_id"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// An HTTP/2 peer that completes the handshake and then answers nothing: no response, no
/// ping. Returns its address; its threads end with the test process.
fn silent_http2_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for connection in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = hold_silently(connection);
            });
        }
    });
    address
}

/// Reads the client preface and every frame; acknowledges SETTINGS, so that the connection
/// is established by the book, and nothing else.
fn hold_silently(mut connection: TcpStream) -> std::io::Result<()> {
    const SETTINGS: u8 = 4;
    const ACK: u8 = 1;
    let mut preface = [0; 24];
    connection.read_exact(&mut preface)?;
    connection.write_all(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0])?;
    loop {
        let mut header = [0; 9];
        connection.read_exact(&mut header)?;
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let mut payload = vec![0; length as usize];
        connection.read_exact(&mut payload)?;
        if header[3] == SETTINGS && header[4] & ACK == 0 {
            connection.write_all(&[0, 0, 0, SETTINGS, ACK, 0, 0, 0, 0])?;
        }
    }
}

/// Runs the CLI against `endpoint` and returns (success, stderr, how long it took).
fn run_against(env: &Env, endpoint: &str, args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = env
        .cmd(args)
        .env("STIGMER_ENDPOINT", endpoint)
        .output()
        .expect("run stigmer");
    (out.status.success(), stderr(&out), started.elapsed())
}

#[test]
fn a_server_that_never_answers_ends_the_call_at_the_deadline() {
    let silent = silent_http2_server();

    // Local mode: the health check before any call has the deadline too, and a daemon that
    // holds the port without answering is not mistaken for none.
    let env = Env::new();
    let (ok, err, took) = run_against(&env, &silent, &["--timeout", "1s", "list", "agents"]);
    assert!(!ok, "{err}");
    assert!(err.contains("no answer within 1s"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert!(err.contains("does not answer"), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}: {err}");

    // Cloud mode: the call itself; the deadline from the file this time.
    let env = Env::new();
    env.write(
        ".stigmer/config.yaml",
        &format!("backend:\n  type: cloud\n  cloud:\n    endpoint: {silent}\ntimeout: 2s\n"),
    );
    let (ok, err, took) = run_against(&env, &silent, &["get", "agents"]);
    assert!(!ok, "{err}");
    assert!(err.contains("no answer within 2s"), "{err}");
    assert!(
        err.contains("(the call deadline: raise it with --timeout"),
        "{err}"
    );
    assert!(err.contains("`timeout: 2m` in "), "{err}");
    assert!(took < Duration::from_secs(20), "{took:?}: {err}");
}

#[test]
fn a_watch_over_a_dead_path_ends_when_keepalive_pings_go_unanswered() {
    let silent = silent_http2_server();
    let env = Env::new();
    // Watches have no deadline; only the pings can tell this peer is gone.
    env.write(
        ".stigmer/config.yaml",
        &format!("backend:\n  type: cloud\n  cloud:\n    endpoint: {silent}\nkeepalive: 1s\n"),
    );
    let (ok, err, took) = run_against(&env, &silent, &["watch", "agents"]);
    assert!(!ok, "{err}");
    assert!(err.contains("keep-alive timed out"), "{err}");
    assert!(took < Duration::from_secs(30), "{took:?}: {err}");
}

/// `count` agents as an export writes them, the `bad`th of them in another org.
fn agents_export(count: usize, bad: Option<usize>) -> String {
    (0..count)
        .map(|i| {
            let org = if Some(i) == bad { "elsewhere" } else { "local" };
            format!(
                "apiVersion: agentic.stigmer.ai/v1\nkind: Agent\nmetadata:\n  id: agt-import-{i:04}\n  name: agent-{i:04}\n  slug: agent-{i:04}\n  org: {org}\nspec:\n  instructions: Review pull requests number {i}.\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn a_failed_import_says_how_far_it_got_and_the_same_import_finishes_it() {
    let env = Env::new();
    let file = env.write("export.yaml", &agents_export(250, Some(230)));
    let file_name = file.to_str().expect("utf-8");

    let out = env.run(&["import", "-f", file_name]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        "imported 200 resources: 200 created, 0 updated, 0 unchanged\n"
    );
    let err = stderr(&out);
    for part in [
        "the import stopped after 200 of 250 resources",
        "Agent/agent-0200 (agt-import-0200",
        "export.yaml, document 201)",
        "the 49 after it were not imported",
        "run the same import again",
        "idempotent",
        "belongs to org \"elsewhere\"",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
    let exported: Value =
        serde_json::from_str(&env.ok(&["export", "agents", "-o", "json"])).expect("export JSON");
    assert_eq!(exported.as_array().map(Vec::len), Some(200));

    // Fixed, and given on stdin as seed 001 does: the first 200 come back unchanged.
    let fixed = agents_export(250, None);
    let out = env
        .cmd(&["import"])
        .write_stdin(fixed)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "imported 250 resources: 50 created, 0 updated, 200 unchanged\n"
    );
}

#[test]
fn export_all_is_every_kind_and_import_reads_stdin() {
    let env = Env::new();
    let file = env.write("export.yaml", &agents_export(3, None));
    env.ok(&["import", "-f", file.to_str().expect("utf-8")]);
    let all = env.ok(&["export", "--all"]);
    assert_eq!(all, env.ok(&["export"]));
    assert_eq!(all.matches("kind: Agent").count(), 3, "{all}");
    let (_, err) = env.fails(&["export", "--all", "agents"]);
    assert!(err.contains("--all"), "{err}");

    let other = Env::new();
    let out = other
        .cmd(&["import"])
        .write_stdin(all.clone())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(other.ok(&["export", "--all"]), all);
}
