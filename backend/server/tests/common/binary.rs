//! The real `stigmer-server` binary as a child process, started as a user would, with its
//! JSON log lines collected.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// Longest wait for the binary to start, exit or log a line.
pub const DEADLINE: Duration = Duration::from_secs(60);
pub const BINARY: &str = env!("CARGO_BIN_EXE_stigmer-server");

/// A process's log as it writes it to stderr: one JSON value a line.
pub struct Log {
    lines: tokio::sync::mpsc::UnboundedReceiver<Result<serde_json::Value, String>>,
}

impl Log {
    /// Reads `stderr` in a task of its own. A line that is not JSON is handed on as an error
    /// rather than panicking there, where no test would notice: whoever reads it fails.
    pub fn read(stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Self {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx
                    .send(serde_json::from_str(&line).map_err(|_| line))
                    .is_err()
                {
                    break;
                }
            }
        });
        Self { lines }
    }

    /// The next line, `None` once the process closed stderr; panics at a line that is not JSON.
    pub async fn next(&mut self) -> Option<serde_json::Value> {
        match self.lines.recv().await? {
            Ok(line) => Some(line),
            Err(line) => panic!("log line is not JSON: {line}"),
        }
    }

    /// The next line matching `predicate`.
    pub async fn line(
        &mut self,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        tokio::time::timeout(DEADLINE, async {
            loop {
                let line = self.next().await.expect("log line");
                if predicate(&line) {
                    return line;
                }
            }
        })
        .await
        .expect("log line in time")
    }

    /// Every line until the process closes stderr.
    pub async fn drain(mut self) -> Vec<serde_json::Value> {
        let mut logged = Vec::new();
        while let Some(line) = tokio::time::timeout(DEADLINE, self.next())
            .await
            .expect("stderr closed in time")
        {
            logged.push(line);
        }
        logged
    }
}

/// Fails when the reader panics in its own task on a line that is not JSON (as it did): the
/// test then only sees the log end early, "test did not panic as expected".
/// The real binary, started as a user would, with its log lines collected.
pub struct Binary {
    pub child: Child,
    pub log: Log,
    pub address: String,
    /// What the server logged before it said it was serving.
    pub before_serving: Vec<serde_json::Value>,
}

impl Binary {
    pub async fn start(home: &Path, db: Option<&Path>) -> Self {
        Self::start_logging(home, db, "info").await
    }

    pub async fn start_logging(home: &Path, db: Option<&Path>, filter: &str) -> Self {
        Self::spawn(Self::configure(Command::new(BINARY), home, db, filter)).await
    }

    /// `command` (the binary, or a shell that execs it) set up as a user would start it: a
    /// private HOME, a free port on 127.0.0.1, JSON log lines on stderr.
    pub fn configure(
        mut command: Command,
        home: &Path,
        db: Option<&Path>,
        filter: &str,
    ) -> Command {
        command
            .env_clear()
            .env("HOME", home)
            .env("STIGMER_LISTEN", "127.0.0.1:0")
            .env("STIGMER_LOG_FORMAT", "json")
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(db) = db {
            command.env("STIGMER_DB", db);
        }
        command
    }

    /// Spawns `command` and waits until the server says where it serves.
    pub async fn spawn(command: Command) -> Self {
        match Self::try_spawn(command).await {
            Ok(binary) => binary,
            Err(logged) => panic!("server exited before serving: {logged:#?}"),
        }
    }

    /// [`Self::spawn`], or every line the server logged when it exits before serving.
    pub async fn try_spawn(mut command: Command) -> Result<Self, Vec<serde_json::Value>> {
        let mut child = command.spawn().expect("spawn stigmer-server");
        let mut log = Log::read(child.stderr.take().expect("stderr"));
        let mut logged = Vec::new();
        let address = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = log.next().await {
                if line["fields"]["message"] == "serving gRPC" {
                    return Some(
                        line["fields"]["address"]
                            .as_str()
                            .expect("address")
                            .to_string(),
                    );
                }
                logged.push(line);
            }
            None
        })
        .await
        .expect("server started or exited in time");
        match address {
            Some(address) => Ok(Self {
                child,
                log,
                address,
                before_serving: logged,
            }),
            None => Err(logged),
        }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    pub async fn wait(self) -> std::process::ExitStatus {
        Self::wait_child(self.child).await
    }

    pub async fn wait_child(mut child: Child) -> std::process::ExitStatus {
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("server exited in time")
            .expect("wait")
    }

    /// The next log line matching `predicate`.
    pub async fn log_line(
        &mut self,
        predicate: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.log.line(predicate).await
    }
}
