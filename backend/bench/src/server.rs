//! The real `stigmer-server` binary, started as a child process on 127.0.0.1:0 with every
//! default setting, and the facts about it the cases report (start to SERVING, RSS). A separate
//! process keeps the load generator's CPU time and memory out of the server's figures.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Longest wait for a starting server to answer SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct BenchServer {
    pub addr: SocketAddr,
    /// One connection; every worker clones it.
    pub channel: Channel,
    /// From spawning the process to the first health check answered SERVING.
    pub start_to_serving: Duration,
    /// `Bearer stk_…` for every call but health checks, in cloud mode ([`Self::start_cloud`]).
    pub auth: Option<AsciiMetadataValue>,
    child: Child,
}

impl BenchServer {
    /// What the server reports of its database (`ResourceService/info`), durability included:
    /// printed with the figures, so they never claim a setting the server did not run with.
    pub async fn database(&self) -> Result<String> {
        let info = stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient::new(
            self.channel.clone(),
        )
        .info(authorized(
            stigmer_api::ai::stigmer::backend::v1::InfoRequest {},
            self.auth.as_ref(),
        ))
        .await?
        .into_inner();
        Ok(info.database)
    }

    /// Starts `stigmer-server` on the SQLite database at `db` (created when missing) with
    /// default settings, so commits are fsynced (synchronous FULL). Its master key file and
    /// log go next to the database.
    pub async fn start(db: &Path) -> Result<Self> {
        let dir = db.parent().context("the database path has no directory")?;
        let key_file = dir.join("master.key");
        Self::start_on(
            db.as_os_str(),
            dir,
            &[("STIGMER_MASTER_KEY_FILE", key_file.as_os_str())],
        )
        .await
    }

    /// Starts `stigmer-server` in cloud mode on the SQLite database at `db`, otherwise as
    /// [`Self::start`] does: TLS with a self-signed certificate for localhost (made here, and
    /// the only one the client trusts), `--auth apikey`, and an owner key of org `local` (the
    /// preloaded resources' org) made beforehand with `stigmer-server apikey create`.
    pub async fn start_cloud(db: &Path) -> Result<Self> {
        let dir = db.parent().context("the database path has no directory")?;
        let key_file = dir.join("master.key");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
        let (cert, tls_key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem())?;
        std::fs::write(&tls_key, certified.signing_key.serialize_pem())?;
        let master = [("STIGMER_MASTER_KEY_FILE", key_file.as_os_str())];
        let key = server_command(db.as_os_str(), dir, &master)?
            .args(["apikey", "create", "--role", "owner", "--org"])
            .arg(crate::resources::ORG)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running stigmer-server apikey create")?;
        if !key.status.success() {
            bail!(
                "stigmer-server apikey create failed ({}): {}",
                key.status,
                String::from_utf8_lossy(&key.stderr).trim()
            );
        }
        let key = String::from_utf8(key.stdout)?;
        let env = [
            master[0],
            ("STIGMER_AUTH", OsStr::new("apikey")),
            ("STIGMER_TLS_CERT", cert.as_os_str()),
            ("STIGMER_TLS_KEY", tls_key.as_os_str()),
        ];
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(certified.cert.pem()))
            .domain_name("localhost");
        let mut server = Self::launch(db.as_os_str(), dir, &env, Some(tls)).await?;
        server.auth = Some(format!("Bearer {}", key.trim()).parse()?);
        Ok(server)
    }

    /// Starts `stigmer-server` with `--db` set to `db` (a SQLite path or a `postgres://` URL),
    /// `home` as its HOME and only the variables in `env` beyond that.
    pub async fn start_on(db: &OsStr, home: &Path, env: &[(&str, &OsStr)]) -> Result<Self> {
        Self::launch(db, home, env, None).await
    }

    /// [`Self::start_on`], connecting over TLS with `tls` when given.
    async fn launch(
        db: &OsStr,
        home: &Path,
        env: &[(&str, &OsStr)],
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self> {
        let started = Instant::now();
        let mut command = server_command(db, home, env)?;
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().context("starting stigmer-server")?;
        let addr = announced_address(&mut child).await?;
        let channel = match tls {
            None => connect(addr).await?,
            Some(tls) => connect_tls(addr, tls).await?,
        };
        wait_serving(&channel, started).await?;
        Ok(Self {
            addr,
            channel,
            start_to_serving: started.elapsed(),
            auth: None,
            child,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> Result<u32> {
        self.child.id().context("the server has exited")
    }

    /// Reads the server's CPU time.
    pub fn cpu_clock(&self) -> Result<CpuClock> {
        Ok(CpuClock::of(self.pid()?))
    }

    /// The server's resident set size and its peak, from `/proc/<pid>/status`.
    pub fn rss(&self) -> Result<Rss> {
        let pid = self.child.id().context("the server has exited")?;
        Rss::of(&format!("/proc/{pid}/status"))
    }

    /// Stops the server the way Ctrl-C does and waits until it has closed its database.
    pub async fn stop(mut self) -> Result<()> {
        let pid = self.child.id().context("the server has exited")?;
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -INT {pid} failed");
        }
        let exit = self.child.wait().await?;
        if !exit.success() {
            bail!("stigmer-server exited with {exit}");
        }
        Ok(())
    }
}

/// `stigmer-server` with `db` as its database, `home` as its HOME and only the variables in
/// `env` beyond that.
fn server_command(db: &OsStr, home: &Path, env: &[(&str, &OsStr)]) -> Result<Command> {
    let mut command = Command::new(server_binary()?);
    command
        // Only what is set here: a STIGMER_* variable in the shell (synchronous=normal, say)
        // would change what is measured.
        .env_clear()
        // Through the environment rather than argv, where a PostgreSQL URL's password would
        // show in `ps`.
        .env("STIGMER_DB", db)
        .env("HOME", home)
        .envs(env.iter().copied());
    Ok(command)
}

/// `message` as a request, with the `authorization` header `auth` when there is one.
pub fn authorized<T>(message: T, auth: Option<&AsciiMetadataValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(auth) = auth {
        request.metadata_mut().insert("authorization", auth.clone());
    }
    request
}

/// `stigmer-server` beside this binary (cargo builds both into the same target directory), or
/// the path in STIGMER_SERVER_BIN.
fn server_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("STIGMER_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::current_exe()?.with_file_name("stigmer-server");
    if !path.exists() {
        bail!(
            "{} is missing: build it with `cargo build -p stigmer-server` in the same profile \
             (make bench does), or set STIGMER_SERVER_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// Reads the server's log until it names the address it listens on, then keeps draining the
/// log in the background so the pipe never fills.
async fn announced_address(child: &mut Child) -> Result<SocketAddr> {
    let stderr = child.stderr.take().context("no stderr pipe")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .context("the server did not announce its address in time")??;
        let Some(line) = line else {
            bail!("stigmer-server exited before serving");
        };
        if let Some(addr) = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("address="))
        {
            break addr
                .parse()
                .with_context(|| format!("address in {line:?}"))?;
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(addr)
}

/// A new HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Channel> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))
}

/// A new HTTP/2 connection over TLS to `addr`, trusting what `tls` says.
async fn connect_tls(addr: SocketAddr, tls: ClientTlsConfig) -> Result<Channel> {
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting over TLS to {addr}"))
}

/// One channel over several servers (replicas of one database), one HTTP/2 connection each.
/// tonic's balancer is tower's power of two choices, but its connections all report the same
/// load, so each call goes to an endpoint picked at random: calls spread evenly, not by how
/// busy a replica is.
pub fn balanced(addrs: &[SocketAddr]) -> Result<Channel> {
    let endpoints = addrs
        .iter()
        .map(|addr| {
            Ok(Endpoint::from_shared(format!("http://{addr}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Channel::balance_list(endpoints.into_iter()))
}

/// Asks grpc.health.v1 until it answers SERVING.
async fn wait_serving(channel: &Channel, started: Instant) -> Result<()> {
    let mut health = HealthClient::new(channel.clone());
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if let Ok(response) = answer
            && response.get_ref().status == ServingStatus::Serving as i32
        {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("the server did not answer SERVING within {START_TIMEOUT:?}");
        }
        tokio::task::yield_now().await;
    }
}

/// CPU time (user + system, every thread) some processes have used together, from
/// `/proc/<pid>/stat`: one server, or every replica of a cluster, whose work per call is the sum.
#[derive(Debug, Clone)]
pub struct CpuClock {
    pids: Arc<[u32]>,
}

impl CpuClock {
    /// Linux reports these times in USER_HZ ticks, 100 per second on every mainstream kernel.
    const TICKS_PER_SEC: u64 = 100;

    /// This process (the load generator).
    pub fn own() -> Self {
        Self::of(std::process::id())
    }

    /// Another process, by pid.
    pub fn of(pid: u32) -> Self {
        Self::of_all(&[pid])
    }

    /// Several processes, summed.
    pub fn of_all(pids: &[u32]) -> Self {
        Self {
            pids: Arc::from(pids),
        }
    }

    pub fn used(&self) -> Result<Duration> {
        self.pids.iter().map(|&pid| Self::used_by(pid)).sum()
    }

    fn used_by(pid: u32) -> Result<Duration> {
        Ok(ProcStat::of(pid)?.cpu)
    }
}

/// CPU time of a process and its children: a PostgreSQL cluster, whose postmaster forks a
/// backend for every connection. Children that exit between two readings take their time
/// with them; the pools keep their connections, so few do during a run.
#[derive(Debug, Clone, Copy)]
pub struct TreeClock {
    parent: u32,
}

impl TreeClock {
    pub fn of(parent: u32) -> Self {
        Self { parent }
    }

    pub fn used(&self) -> Result<Duration> {
        let mut total = ProcStat::of(self.parent)?.cpu;
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            // A process may end between listing and reading: it is simply not counted.
            if let Ok(stat) = ProcStat::of(pid)
                && stat.parent == self.parent
            {
                total += stat.cpu;
            }
        }
        Ok(total)
    }
}

/// What the bench reads of `/proc/<pid>/stat`.
struct ProcStat {
    parent: u32,
    /// User + system time, every thread.
    cpu: Duration,
}

impl ProcStat {
    fn of(pid: u32) -> Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // The command name (field 2) may hold spaces; count fields after its closing paren.
        let after_name = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .context("unexpected /proc/<pid>/stat")?;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // Field 3 (state) is the first after the name: ppid (4) is at 1, utime and stime
        // (14 and 15) at 11 and 12.
        let number = |index: usize| -> Result<u64> {
            fields
                .get(index)
                .and_then(|field| field.parse().ok())
                .context("a field missing from /proc/<pid>/stat")
        };
        let ticks = number(11)? + number(12)?;
        Ok(Self {
            parent: u32::try_from(number(1)?)?,
            cpu: Duration::from_millis(ticks * 1000 / CpuClock::TICKS_PER_SEC),
        })
    }
}

/// Resident set size and its peak (VmRSS and VmHWM), in KiB.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    pub now_kib: u64,
    pub peak_kib: u64,
}

impl Rss {
    fn of(status_path: &str) -> Result<Self> {
        let status = std::fs::read_to_string(status_path)?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .with_context(|| format!("no {name} in {status_path}"))
        };
        Ok(Self {
            now_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

/// "41.2 MiB".
pub fn fmt_kib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
