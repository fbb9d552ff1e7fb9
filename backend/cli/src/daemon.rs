//! The local daemon: stigmer-server started detached, with its pid in ~/.stigmer/daemon.pid
//! and its output in ~/.stigmer/logs/daemon.log.

use std::fs::OpenOptions;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use stigmer_client::{BackendType, Client, ClientConfig, LocalTransport};

/// How long a starting daemon has to answer health checks.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long a stopping daemon has to go (its own shutdown grace is 30 s).
const STOP_DEADLINE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(75);

fn stigmer_dir() -> Result<PathBuf> {
    stigmer_client::stigmer_home().ok_or_else(|| anyhow!("no home directory to keep ~/.stigmer in"))
}

pub fn pid_path() -> Result<PathBuf> {
    Ok(stigmer_dir()?.join("daemon.pid"))
}

pub fn log_path() -> Result<PathBuf> {
    Ok(stigmer_dir()?.join("logs").join("daemon.log"))
}

fn lock_path() -> Result<PathBuf> {
    Ok(stigmer_dir()?.join("daemon.lock"))
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Whether commands in this configuration talk to a daemon this CLI may start.
pub fn uses_daemon(config: &ClientConfig) -> bool {
    config.backend.kind == BackendType::Local
        && config.backend.local.transport == LocalTransport::Daemon
}

/// The configuration with local daemon mode, for `stigmer server …` whatever the mode.
pub fn local_daemon_config(config: &ClientConfig) -> ClientConfig {
    let mut local = config.clone();
    local.backend.kind = BackendType::Local;
    local.backend.local.transport = LocalTransport::Daemon;
    local
}

/// Makes sure the daemon answers, starting it if needed. Returns the pid of a daemon this call
/// started. Two CLIs doing this at once start one daemon: check-and-start runs under an
/// exclusive lock on ~/.stigmer/daemon.lock, and health is checked again once it is held.
pub async fn ensure_running(config: &ClientConfig, client: &Client) -> Result<Option<u32>> {
    if answers(client).await? {
        return Ok(None);
    }
    let dir = stigmer_dir()?;
    create_dir(&dir)?;
    let lock_file = lock_path()?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .with_context(|| format!("cannot open {}", lock_file.display()))?;
    let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
        .await
        .context("waiting for the daemon lock")?
        .with_context(|| format!("cannot lock {}", lock_file.display()))?;
    if answers(client).await? {
        return Ok(None);
    }
    eprintln!("Starting local backend daemon...");
    let pid = start(config, client)
        .await
        .context("cannot start the local backend daemon")?;
    drop(lock);
    Ok(Some(pid))
}

/// Whether the daemon answers; an error when something holds the endpoint but does not
/// answer in time, which another daemon on the same port would not cure.
async fn answers(client: &Client) -> Result<bool> {
    client.check_serving().await.with_context(|| {
        format!(
            "the server at {} accepts connections but does not answer health checks",
            client.endpoint()
        )
    })
}

/// Starts the daemon and waits until it answers. The caller holds the lock.
async fn start(config: &ClientConfig, client: &Client) -> Result<u32> {
    let binary = server_binary()?;
    let log = log_path()?;
    if let Some(dir) = log.parent() {
        create_dir(dir)?;
    }
    let log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let endpoint = &config.backend.local.endpoint;
    let mut command = Command::new(&binary);
    command
        .env("STIGMER_LISTEN", listen_address(endpoint))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("cannot share the log file")?)
        .stderr(log_file)
        // Its own process group: Ctrl-C on this CLI must not stop the daemon.
        .process_group(0);
    if let Some(database) = &config.backend.local.database {
        command.env("STIGMER_DB", database);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id();
    let pid_file = pid_path()?;
    std::fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if client.is_serving().await {
            return Ok(pid);
        }
        if let Some(status) = child.try_wait().context("cannot watch the daemon")? {
            let _ = std::fs::remove_file(&pid_file);
            bail!(
                "the daemon exited ({status}) before answering on {endpoint}; see {}",
                log.display()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the daemon (pid {pid}) did not answer on {endpoint} within {} s; see {}",
                START_DEADLINE.as_secs(),
                log.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `--listen` accepts: an IP and port (names are resolved, schemes dropped).
fn listen_address(endpoint: &str) -> String {
    use std::net::ToSocketAddrs;
    let bare = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .trim_end_matches('/');
    match bare.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(address) => address.to_string(),
        None => bare.to_string(),
    }
}

/// STIGMER_SERVER_BIN, else stigmer-server next to this executable, else on PATH.
fn server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STIGMER_SERVER_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    if let Ok(exe) = std::env::current_exe() {
        let beside = exe.with_file_name("stigmer-server");
        if beside.is_file() {
            return Ok(beside);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("stigmer-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "cannot find stigmer-server: install it next to stigmer or on PATH, or set STIGMER_SERVER_BIN"
    )
}

/// The pid in the pid file, if there is one.
pub fn read_pid() -> Result<Option<u32>> {
    let path = pid_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{} does not hold a pid", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Whether a process is alive (a zombie is not).
pub fn is_alive(pid: u32) -> bool {
    let proc_dir = Path::new("/proc");
    if proc_dir.join("self").exists() {
        return match std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")) {
            // "pid (comm) S ...": the state follows the last ')'.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        };
    }
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What `stigmer server stop` found.
pub enum Stopped {
    Stopped(u32),
    NotRunning { stale_pid: Option<u32> },
}

/// SIGTERM to the daemon of the pid file, then waits until it is gone and the endpoint is
/// silent.
pub async fn stop(client: &Client) -> Result<Stopped> {
    let pid_file = pid_path()?;
    let Some(pid) = read_pid()? else {
        if client.is_serving().await {
            bail!(
                "a server answers on {} but there is no {}: it was not started by stigmer; stop it where it runs",
                client.endpoint(),
                pid_file.display()
            );
        }
        return Ok(Stopped::NotRunning { stale_pid: None });
    };
    if !is_alive(pid) {
        let _ = std::fs::remove_file(&pid_file);
        return Ok(Stopped::NotRunning {
            stale_pid: Some(pid),
        });
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .context("cannot run kill")?;
    if !status.success() && is_alive(pid) {
        bail!("kill -TERM {pid} failed ({status})");
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    loop {
        if !is_alive(pid) && !client.is_serving().await {
            let _ = std::fs::remove_file(&pid_file);
            return Ok(Stopped::Stopped(pid));
        }
        if Instant::now() >= deadline {
            bail!(
                "the daemon (pid {pid}) is still running {} s after SIGTERM; see {}",
                STOP_DEADLINE.as_secs(),
                log_path()?.display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_ip_and_port() {
        assert_eq!(listen_address("127.0.0.1:50051"), "127.0.0.1:50051");
        assert_eq!(listen_address("http://127.0.0.1:7/"), "127.0.0.1:7");
    }

    #[test]
    fn this_process_is_alive() {
        assert!(is_alive(std::process::id()));
    }
}
