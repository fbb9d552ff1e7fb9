//! The CLI against a cloud-mode server: TLS with a private CA, API keys made by the offline
//! `stigmer-server apikey` commands, and the whole round from login to logout.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use common::{Env, free_port, server_binary, stderr};

/// A `stigmer-server --auth apikey` with TLS, on a database holding one owner key of `acme`.
struct CloudServer {
    child: Option<Child>,
    port: u16,
    ca_file: PathBuf,
    db: PathBuf,
    owner_key: String,
    dir: tempfile::TempDir,
}

impl CloudServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let ca_file = dir.path().join("server.crt");
        std::fs::write(&ca_file, certified.cert.pem()).expect("write the certificate");
        std::fs::write(
            dir.path().join("server.key"),
            certified.signing_key.serialize_pem(),
        )
        .expect("write the key");
        let db = dir.path().join("cloud.db");
        let mut server = Self {
            child: None,
            port: free_port(),
            ca_file,
            db,
            owner_key: String::new(),
            dir,
        };
        server.owner_key =
            server.offline(&["apikey", "create", "--org", "acme", "--role", "owner"]);
        server.spawn();
        server
    }

    /// `stigmer-server --db DB ARGS`, which must succeed; its stdout, trimmed.
    fn offline(&self, args: &[&str]) -> String {
        let out = self
            .server_command(args)
            .output()
            .expect("run stigmer-server");
        assert!(
            out.status.success(),
            "stigmer-server {args:?}: {}",
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn server_command(&self, args: &[&str]) -> StdCommand {
        let mut command = StdCommand::new(server_binary());
        command
            .env_clear()
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "warn")
            .arg("--db")
            .arg(&self.db)
            .args(args);
        command
    }

    fn spawn(&mut self) {
        let listen = format!("127.0.0.1:{}", self.port);
        let cert = self.dir.path().join("server.crt");
        let key = self.dir.path().join("server.key");
        let child = self
            .server_command(&["--auth", "apikey", "--listen", &listen])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn stigmer-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(
                Instant::now() < deadline,
                "the server did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = StdCommand::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for CloudServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The CLI as `env`'s user, talking to the configured backend rather than the harness's.
fn cloud(env: &Env, args: &[&str]) -> assert_cmd::Command {
    let mut command = env.cmd(args);
    command.env_remove("STIGMER_ENDPOINT");
    command
}

fn ok(env: &Env, args: &[&str]) -> String {
    let out = cloud(env, args).output().expect("run stigmer");
    assert!(
        out.status.success(),
        "stigmer {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_cli_logs_in_over_tls_works_in_its_org_and_stops_when_the_key_is_revoked() {
    let mut server = CloudServer::start();
    let env = Env::new();
    let endpoint = server.endpoint();
    let ca_file = server.ca_file.to_str().expect("utf-8").to_string();
    let login = [
        "login",
        "--endpoint",
        &endpoint,
        "--ca-file",
        &ca_file,
        "--token-stdin",
    ];

    // A key the server does not know is refused, and nothing is saved.
    let wrong = format!("stk_{}", "A".repeat(43));
    let refused = cloud(&env, &login)
        .write_stdin(format!("{wrong}\n"))
        .output()
        .expect("run stigmer");
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("did not accept the API key"), "{err}");
    assert!(!env.home().join(".stigmer/config.yaml").exists());

    let out = cloud(&env, &login)
        .write_stdin(format!("{}\n", server.owner_key))
        .output()
        .expect("run stigmer");
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("as owner of acme (ida-"), "{said}");
    let path = env.home().join(".stigmer/config.yaml");
    let config = std::fs::read_to_string(&path).expect("config");
    assert!(
        config.contains("type: cloud") && config.contains(&server.owner_key),
        "{config}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the key is readable by its owner only");

    assert!(ok(&env, &["whoami"]).contains("owner of acme (ida-"));
    assert!(ok(&env, &["context", "set", "--org", "acme"]).contains("acme"));
    let manifest = env.write(
        "agent.yaml",
        "kind: Agent\nmetadata: {name: cloud-agent}\nspec: {instructions: Answer every question politely}\n",
    );
    ok(&env, &["apply", "-f", manifest.to_str().expect("utf-8")]);
    let shown = ok(&env, &["get", "agent", "cloud-agent", "-o", "json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("json");
    assert_eq!(shown["metadata"]["org"], "acme");
    let created_by = shown["status"]["audit"]["specAudit"]["createdBy"]["id"]
        .as_str()
        .expect("audit");
    assert!(
        created_by.starts_with("ida-"),
        "the audit names the account: {created_by}"
    );
    assert!(ok(&env, &["list", "agents"]).contains("cloud-agent"));
    watch_sees(&env, "cloud-agent");

    // With the server running, SQLite's lock keeps the offline command out.
    let busy = server
        .server_command(&["apikey", "list"])
        .output()
        .expect("run stigmer-server");
    assert!(!busy.status.success());
    assert!(stderr(&busy).contains("stop it first"), "{}", stderr(&busy));

    server.stop();
    let listed = server.offline(&["apikey", "list"]);
    let key_id = listed
        .lines()
        .find_map(|line| line.split('\t').next().filter(|id| id.starts_with("key-")))
        .expect("the owner's key is listed")
        .to_string();
    assert!(
        !listed.contains(&server.owner_key),
        "list never shows a key"
    );
    server.offline(&["apikey", "revoke", &key_id]);
    server.spawn();

    let out = cloud(&env, &["list", "agents"])
        .output()
        .expect("run stigmer");
    assert!(!out.status.success(), "a revoked key still works");
    let err = stderr(&out);
    assert!(err.contains("missing or invalid API key"), "{err}");

    ok(&env, &["logout"]);
    let config = std::fs::read_to_string(&path).expect("config");
    assert!(
        config.contains("type: local") && !config.contains(&server.owner_key),
        "{config}"
    );
}

/// `stigmer watch agent` shows `name` among its first lines.
fn watch_sees(env: &Env, name: &str) {
    use std::io::BufRead;
    let mut child = env
        .std_cmd(&["watch", "agent"])
        .env_remove("STIGMER_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch line within 20 s");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains(name), "{line}");
}

#[test]
fn apikey_create_refuses_a_bad_org_role_or_expiry_and_prints_only_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("s.db");
    let run = |args: &[&str]| {
        StdCommand::new(server_binary())
            .env_clear()
            .env("HOME", dir.path())
            .arg("--db")
            .arg(&db)
            .args(args)
            .output()
            .expect("run stigmer-server")
    };
    for (args, expected) in [
        (
            vec!["--org", "Not A Slug", "--role", "owner"],
            "not an org slug",
        ),
        (vec!["--org", "acme", "--role", "boss"], "boss"),
        (
            vec![
                "--org",
                "acme",
                "--role",
                "viewer",
                "--expires",
                "2001-01-01T00:00:00Z",
            ],
            "past",
        ),
        (
            vec!["--org", "acme", "--role", "viewer", "--expires", "soon"],
            "RFC 3339",
        ),
    ] {
        let mut full = vec!["apikey", "create"];
        full.extend(args.iter().copied());
        let out = run(&full);
        assert!(!out.status.success(), "{full:?} was accepted");
        let err = stderr(&out);
        assert!(err.contains(expected), "{full:?}: {err}");
    }
    let out = run(&[
        "apikey",
        "create",
        "--org",
        "acme",
        "--role",
        "member",
        "--expires",
        "2099-01-01T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the key on stdout: {stdout}");
    assert!(
        lines[0].starts_with("stk_") && lines[0].len() == 47,
        "{stdout}"
    );
    let listed = String::from_utf8_lossy(&run(&["apikey", "list"]).stdout).into_owned();
    assert!(listed.contains("2099-01-01T00:00:00Z"), "{listed}");
    assert!(
        listed.contains(&lines[0][41..]),
        "the fingerprint is listed: {listed}"
    );
    let out = run(&["apikey", "revoke", "key-nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no API key \"key-nope\""),
        "{}",
        stderr(&out)
    );
}
