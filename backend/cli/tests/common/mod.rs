//! The harness of the CLI tests: the real `stigmer` binary against a real `stigmer-server` it
//! starts itself, each test in its own HOME on its own port, with none of the developer's
//! settings.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

/// The developer's settings, which reach neither the CLI nor the daemon it starts.
fn developer_variables() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(var, _)| var)
        .filter(|var| {
            var.to_str()
                .is_some_and(|name| name.starts_with("STIGMER_") || name == "RUST_LOG")
        })
        .collect()
}

/// target/debug/stigmer-server, built once if missing.
pub fn server_binary() -> PathBuf {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// One isolated user: a temp HOME and a port. Stops the daemon it may have started on drop,
/// so a failing test leaves nothing running.
pub struct Env {
    home: tempfile::TempDir,
    pub endpoint: String,
}

impl Env {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().expect("temp HOME"),
            endpoint: format!("127.0.0.1:{}", free_port()),
        }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    /// Writes a cloud configuration, as a login would, without asking any server.
    pub fn cloud_config(&self, endpoint: &str, token: &str, org: &str) {
        let dir = self.home().join(".stigmer");
        std::fs::create_dir_all(&dir).expect("~/.stigmer");
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "backend:\n  type: cloud\n  cloud:\n    endpoint: {endpoint}\n    token: {token}\n    org_id: {org}\n"
            ),
        )
        .expect("write config.yaml");
    }

    /// The CLI with `args`, as this user, with a deadline.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::from_std(self.std_cmd(args));
        cmd.timeout(Duration::from_secs(60));
        cmd
    }

    /// [`Self::cmd`] as a std command, for tests that spawn and wait themselves.
    pub fn std_cmd(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stigmer"));
        for var in developer_variables() {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.home())
            .env("STIGMER_ENDPOINT", &self.endpoint)
            .env("STIGMER_SERVER_BIN", server_binary())
            .current_dir(self.home())
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run stigmer")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
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
    pub fn fails(&self, args: &[&str]) -> (String, String) {
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
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.home().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        std::fs::write(&path, text).expect("write file");
        path
    }

    pub fn pid_file(&self) -> PathBuf {
        self.home().join(".stigmer").join("daemon.pid")
    }

    pub fn json(&self, args: &[&str]) -> Value {
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

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
