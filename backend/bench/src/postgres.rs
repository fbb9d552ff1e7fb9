//! Case 8, PostgreSQL: stigmer-server on a private, durable PostgreSQL cluster (fsync and
//! synchronous_commit on, as the SQLite cases run with synchronous FULL), first one replica,
//! then three replicas of one database behind tonic's balancer. Create, get and list at every
//! concurrency, and the watch lag, for each. [`compare`] then sets the figures against SQLite
//! (case 3) and etcd (case 7) of the same run.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use base64::Engine;
use stigmer_postgres::{PostgresConfig, PostgresStore};
use stigmer_store::Store;
use tempfile::TempDir;
use tokio::process::Command;
use tokio_postgres::NoTls;

use crate::Settings;
use crate::calls::{Call, Target};
use crate::etcd;
use crate::preload::{fill, preload};
use crate::report::{Report, ratio, verdict};
use crate::server::{BenchServer, CpuClock, TreeClock, balanced};
use crate::server_cases::measure_calls;
use crate::stats::{fmt_duration, fmt_rate};
use crate::watch::{WatchPair, measure_all};

/// The calls measured on PostgreSQL.
const CALLS: [Call; 3] = [Call::Create, Call::Get, Call::List];
/// Replicas of the second half of the case.
const REPLICAS: usize = 3;
const ONE: &str = " (postgres)";
const THREE: &str = " (postgres ×3)";

/// Runs the case. With `baselines`, also measures the SQLite get and the etcd put that
/// [`compare`] sets PostgreSQL against, for a run in which cases 3 and 7 do not.
pub async fn run(settings: &Settings, report: &mut Report, baselines: bool) -> Result<()> {
    report.section(&format!(
        "8. PostgreSQL (stigmer-server on a private durable cluster, {} preloaded; 1 replica, \
         then {REPLICAS} on one database)",
        settings.preload
    ));
    let cluster = Cluster::start().await?;
    report.note(&format!("cluster: {}", durability(&cluster.url).await?));
    // Replicas of one database must seal secrets under one key; a PostgreSQL database has
    // no key file beside it, so the key is given to each.
    let key = master_key()?;
    let homes = tempfile::tempdir()?;

    let url = database(&cluster.url, "bench_one", settings.preload, report).await?;
    let server = start_replica(&url, &homes.path().join("one"), &key).await?;
    report.note(&format!("the server says: {}", server.database().await?));
    let target = Target {
        store_floor: false,
        database_cpu: Some(cluster.cpu()?),
        ..Target::server(&server, settings.preload)?
    };
    measure_calls(settings, report, &target, &CALLS, ONE).await?;
    measure_all(settings, report, &WatchPair::one(&server, ONE)?).await?;
    server.stop().await?;

    let url = database(&cluster.url, "bench_three", settings.preload, report).await?;
    let mut replicas = Vec::with_capacity(REPLICAS);
    for n in 0..REPLICAS {
        replicas.push(start_replica(&url, &homes.path().join(format!("r{n}")), &key).await?);
    }
    let pids = replicas
        .iter()
        .map(BenchServer::pid)
        .collect::<Result<Vec<_>>>()?;
    let cpu = CpuClock::of_all(&pids);
    let addrs: Vec<_> = replicas.iter().map(|replica| replica.addr).collect();
    let target = Target {
        channel: balanced(&addrs)?,
        servers: replicas.iter().map(|r| r.channel.clone()).collect(),
        preloaded: settings.preload,
        cpu: cpu.clone(),
        store_floor: false,
        database_cpu: Some(cluster.cpu()?),
        auth: None,
    };
    report.note(&format!(
        "{REPLICAS} replicas, calls spread at random over them (tonic's balancer); srv CPU/op \
         is the sum over the {REPLICAS} processes; writes per commit summed over replicas"
    ));
    measure_calls(settings, report, &target, &CALLS, THREE).await?;
    // The writer on one replica, the watchers on another: every event crosses from one
    // server to the other through the database (NOTIFY, or the poll when one is lost).
    let (writer, watched) = (&replicas[0], &replicas[1]);
    let pair = WatchPair {
        writer: writer.channel.clone(),
        watched: watched.addr,
        cpu,
        label_suffix: " (postgres ×3, cross-replica)".to_string(),
    };
    report.note(
        "cross-replica watch: the writer on replica 1, every watcher on replica 2; srv CPU is \
         the sum over the 3 replicas",
    );
    measure_all(settings, report, &pair).await?;
    for replica in replicas {
        replica.stop().await?;
    }
    cluster.stop().await?;

    if baselines {
        measure_baselines(settings, report).await?;
    }
    Ok(())
}

/// The SQLite get (as case 3 measures it) and the etcd put (as case 7 does), under the labels
/// [`compare`] looks up.
async fn measure_baselines(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("8. baselines for the PostgreSQL ratios (cases 3 and 7 did not run)");
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("baseline.db");
    preload(&db, settings.preload).await?;
    let server = BenchServer::start(&db).await?;
    report.note(&format!("the server says: {}", server.database().await?));
    let target = Target::server(&server, settings.preload)?;
    measure_calls(settings, report, &target, &[Call::Get], "").await?;
    server.stop().await?;
    etcd::puts(settings, report).await
}

/// Ratio lines of PostgreSQL against SQLite and etcd, from figures of this run: printed at
/// the end, since etcd runs after PostgreSQL.
pub fn compare(settings: &Settings, report: &mut Report) {
    report.section("8. PostgreSQL against SQLite and etcd (figures of this run)");
    let get = Call::Get.label();
    let create = Call::Create.label();
    for &in_flight in &settings.concurrency {
        let one = report.figure(&format!("{get}{ONE}"), in_flight);
        let three = report.figure(&format!("{get}{THREE}"), in_flight);
        let line = match (report.figure(get, in_flight), one) {
            (Some(sqlite), Some(one)) => {
                let r = ratio(one.rate, sqlite.rate);
                format!(
                    "get by id at {in_flight} in flight: PostgreSQL {}/s ({}) = {r:.2}× \
                     SQLite's {}/s ({}){}; target ≥ 0.5×: {}",
                    fmt_rate(one.rate),
                    one.cpu(),
                    fmt_rate(sqlite.rate),
                    sqlite.cpu(),
                    three.map_or_else(String::new, |three| format!(
                        " ({REPLICAS} replicas: {}/s = {:.2}×)",
                        fmt_rate(three.rate),
                        ratio(three.rate, sqlite.rate)
                    )),
                    verdict(r >= 0.5)
                )
            }
            _ => format!("get by id at {in_flight} in flight: no SQLite or PostgreSQL figure"),
        };
        report.note(&line);
    }
    if !etcd::installed() {
        report.note(
            "durable create vs etcd put: no ratio, etcd is not installed (no etcd binary on \
             PATH; `make bench-peers` installs it)",
        );
        return;
    }
    for &in_flight in &settings.concurrency {
        let three = report.figure(&format!("{create}{THREE}"), in_flight);
        let one = report.figure(&format!("{create}{ONE}"), in_flight);
        let line = match (report.figure(etcd::PUT, in_flight), three) {
            (Some(etcd), Some(three)) => {
                let r = ratio(three.rate, etcd.rate);
                format!(
                    "durable create at {in_flight} in flight: {REPLICAS} replicas {}/s ({}) = \
                     {r:.2}× etcd put {}/s ({}), p99 {} vs {}{}; target ≥ 1×: {}",
                    fmt_rate(three.rate),
                    three.cpu(),
                    fmt_rate(etcd.rate),
                    etcd.cpu(),
                    fmt_duration(three.p99),
                    fmt_duration(etcd.p99),
                    one.map_or_else(String::new, |one| format!(
                        " (1 replica: {}/s = {:.2}×)",
                        fmt_rate(one.rate),
                        ratio(one.rate, etcd.rate)
                    )),
                    verdict(r >= 1.0)
                )
            }
            _ => format!("durable create at {in_flight} in flight: no etcd or PostgreSQL figure"),
        };
        report.note(&line);
    }
}

/// A stigmer-server replica on the database at `url`, with its own home and the shared key.
async fn start_replica(url: &str, home: &Path, key: &str) -> Result<BenchServer> {
    std::fs::create_dir_all(home)?;
    BenchServer::start_on(
        OsStr::new(url),
        home,
        &[("STIGMER_MASTER_KEY", OsStr::new(key))],
    )
    .await
}

/// A master key as STIGMER_MASTER_KEY takes it: base64 of 32 random bytes.
fn master_key() -> Result<String> {
    let mut bytes = [0_u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Creates the database `name` on the cluster, fills it with `count` Environments through the
/// store (which applies the schema first) and returns its URL.
async fn database(cluster: &str, name: &str, count: usize, report: &mut Report) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(cluster, NoTls)
        .await
        .context("connecting to the bench cluster")?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .with_context(|| format!("CREATE DATABASE {name}"))?;
    drop(client);
    connection.await??;
    let (base, _) = cluster
        .rsplit_once('/')
        .context("the cluster URL names no database")?;
    let url = format!("{base}/{name}");
    let started = Instant::now();
    let store = PostgresStore::open(&PostgresConfig::new(url.clone())).await?;
    fill(&store, count).await?;
    store.close().await?;
    report.note(&format!(
        "database {name}: {count} Environments preloaded through the store in {}",
        fmt_duration(started.elapsed())
    ));
    Ok(url)
}

/// The cluster's durability settings, checked: the figures must be those of commits that
/// survive a crash, like SQLite's synchronous FULL and etcd's.
async fn durability(url: &str) -> Result<String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .context("connecting to the bench cluster")?;
    let connection = tokio::spawn(connection);
    let mut settings = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "wal_sync_method",
        "shared_buffers",
    ] {
        let row = client.query_one(&format!("SHOW {name}"), &[]).await?;
        let value: String = row.try_get(0)?;
        settings.push((name, value));
    }
    drop(client);
    connection.await??;
    for (name, value) in &settings {
        if matches!(*name, "fsync" | "synchronous_commit") && value != "on" {
            bail!("the bench cluster runs with {name}={value}: its commits are not durable");
        }
    }
    Ok(settings
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// A private PostgreSQL cluster made by scripts/postgres.sh in a temporary directory, stopped
/// when dropped, so that a failing case does not leave a server running.
struct Cluster {
    /// Superuser URL.
    url: String,
    dir: TempDir,
    running: bool,
}

impl Cluster {
    /// Starts a cluster (installing PostgreSQL when it is missing) and returns it.
    async fn start() -> Result<Self> {
        // Under /tmp, whatever TMPDIR says: the cluster runs as the postgres user (when we are
        // root), which must reach its directory, and a home directory seldom lets it.
        let dir = tempfile::Builder::new()
            .prefix("stigmer-bench-pg-")
            .tempdir_in("/tmp")?;
        let output = script()
            .arg("start")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .output()
            .await
            .context("running scripts/postgres.sh")?;
        if !output.status.success() {
            bail!(
                "scripts/postgres.sh start failed ({}), see its messages above",
                output.status
            );
        }
        let url = String::from_utf8(output.stdout)?.trim().to_string();
        if !url.starts_with("postgres://") {
            bail!("scripts/postgres.sh start printed no URL");
        }
        Ok(Self {
            url,
            dir,
            running: true,
        })
    }

    /// The CPU time of the cluster's processes: the postmaster and the backends it forked.
    fn cpu(&self) -> Result<TreeClock> {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let postmaster = std::fs::read_to_string(&pid_file)?
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no pid in {}", pid_file.display()))?;
        Ok(TreeClock::of(postmaster))
    }

    /// Stops the cluster; its directory goes when dropped.
    async fn stop(mut self) -> Result<()> {
        self.running = false;
        let status = script().arg("stop").arg(self.dir.path()).status().await?;
        if !status.success() {
            bail!("scripts/postgres.sh stop failed ({status})");
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Blocking here is fine: the case has failed and nothing else is measured meanwhile.
        let stopped = std::process::Command::new(script_path())
            .arg("stop")
            .arg(self.dir.path())
            .env_remove("STIGMER_POSTGRES_THROWAWAY")
            .stdin(Stdio::null())
            .status();
        if !matches!(stopped, Ok(status) if status.success()) {
            eprintln!(
                "stigmer-bench: could not stop the PostgreSQL cluster in {}: stop it with \
                 scripts/postgres.sh stop DIR",
                self.dir.path().display()
            );
        }
    }
}

/// scripts/postgres.sh of this repository.
fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/postgres.sh")
}

fn script() -> Command {
    let mut command = Command::new(script_path());
    // A throwaway cluster does not fsync: never the one measured here.
    command
        .env_remove("STIGMER_POSTGRES_THROWAWAY")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    command
}
