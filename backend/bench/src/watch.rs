//! Case 5, watch delivery lag: one writer creating Environments, N watchers on
//! ResourceService/watch. The writer puts its send time (nanoseconds since a shared Instant) in
//! spec.description; each watcher computes the lag when the event reaches it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prost::Message;
use stigmer_api::ai::stigmer::agentic::environment::v1::Environment;
use stigmer_api::ai::stigmer::agentic::environment::v1::environment_command_controller_client::EnvironmentCommandControllerClient;
use stigmer_api::ai::stigmer::backend::v1::resource_service_client::ResourceServiceClient;
use stigmer_api::ai::stigmer::backend::v1::{WatchEvent, WatchRequest};
use tokio::sync::watch as signal;
use tokio::task::JoinSet;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::Settings;
use crate::report::Report;
use crate::resources::{KIND, environment};
use crate::server::{BenchServer, CpuClock, connect};
use crate::stats::{Summary, nanos};

/// Numbers the runs of this process.
static RUN: AtomicU64 = AtomicU64::new(0);
/// Watch streams per HTTP/2 connection (servers commonly allow 100-200 streams per connection).
const WATCHERS_PER_CONNECTION: usize = 100;
/// Longest wait, after the writer stops, for the watchers to receive everything.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    report.section("5. watch delivery lag (1 writer, N watchers on ResourceService/watch)");
    for &rate in &settings.watch_rates {
        for &watchers in &settings.watchers {
            let dir = tempfile::tempdir()?;
            let server = BenchServer::start(&dir.path().join("watch.db")).await?;
            let pair = WatchPair::one(&server, "")?;
            measure(settings, report, &pair, watchers, rate).await?;
            server.stop().await?;
        }
    }
    Ok(())
}

/// Where a watch run writes and where it watches: one server, or two replicas of one
/// database (the lag then includes the hand-over between them).
pub struct WatchPair {
    /// The writer's connection.
    pub writer: Channel,
    /// The server the watchers connect to.
    pub watched: SocketAddr,
    /// CPU time of every server that takes part.
    pub cpu: CpuClock,
    /// Appended to the row's label.
    pub label_suffix: String,
}

impl WatchPair {
    /// Writer and watchers on the same server.
    pub fn one(server: &BenchServer, label_suffix: &str) -> Result<Self> {
        Ok(Self {
            writer: server.channel.clone(),
            watched: server.addr,
            cpu: server.cpu_clock()?,
            label_suffix: label_suffix.to_string(),
        })
    }
}

/// Every writer rate and watcher count of `settings` on `pair`, one row each.
pub async fn measure_all(settings: &Settings, report: &mut Report, pair: &WatchPair) -> Result<()> {
    for &rate in &settings.watch_rates {
        for &watchers in &settings.watchers {
            measure(settings, report, pair, watchers, rate).await?;
        }
    }
    Ok(())
}

/// What one watcher saw.
struct Seen {
    lags: Vec<u64>,
    events: u64,
    error: Option<String>,
}

async fn measure(
    settings: &Settings,
    report: &mut Report,
    pair: &WatchPair,
    watchers: usize,
    rate: u32,
) -> Result<()> {
    let epoch = Instant::now();
    let mut writer = EnvironmentCommandControllerClient::new(pair.writer.clone());
    // Runs on one server (PostgreSQL replicas serve several) need names of their own.
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let start_revision = create(&mut writer, epoch, format!("watch-r{run}-start")).await?;
    let streams = open_watchers(pair.watched, watchers, start_revision).await?;
    let cpu = &pair.cpu;
    let cpu_before = cpu.used()?;
    let own_cpu = CpuClock::own();
    let own_before = own_cpu.used()?;
    let (target_tx, target_rx) = signal::channel(0_i64);
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(receive(stream, epoch, target_rx.clone()));
    }
    let (written, last_revision) = write(settings, &mut writer, epoch, rate, run).await?;
    target_tx.send(last_revision)?;
    let seen = collect(&mut tasks).await?;
    let complete = seen
        .iter()
        .filter(|seen| seen.error.is_none() && seen.events == written)
        .count();
    let errors: Vec<String> = seen.iter().filter_map(|s| s.error.clone()).collect();
    let lags: Vec<u64> = seen.into_iter().flat_map(|s| s.lags).collect();
    let mut summary = Summary::from_nanos(lags, epoch.elapsed(), 1);
    summary.server_cpu = Some(cpu.used()?.saturating_sub(cpu_before));
    summary.client_cpu = Some(own_cpu.used()?.saturating_sub(own_before));
    let note = format!(
        "{written} events; {complete}/{watchers} watchers got every event; rate = deliveries/s, CPU per delivery"
    );
    let writer_pace = match rate {
        0 => "writer unpaced".to_string(),
        rate => format!("writer {rate}/s"),
    };
    report.row(
        &format!(
            "watch lag, {watchers} watchers, {writer_pace}{}",
            pair.label_suffix
        ),
        watchers,
        &summary,
        &note,
    );
    if let Some(first) = errors.first() {
        report.note(&format!(
            "{} watchers ended with an error, e.g. {first}",
            errors.len()
        ));
    }
    if complete < watchers {
        // A watch that loses an event is a bug, whatever its lag.
        report.fail(&format!(
            "watch lag, {watchers} watchers, {writer_pace}{}: {} watchers missed events of the \
             {written} written",
            pair.label_suffix,
            watchers - complete
        ));
    }
    Ok(())
}

/// Creates one Environment stamped with the send time; returns its revision.
async fn create(
    writer: &mut EnvironmentCommandControllerClient<Channel>,
    epoch: Instant,
    name: String,
) -> Result<i64> {
    let sent = nanos(epoch.elapsed());
    let created = writer
        .create(environment(name, sent.to_string()))
        .await?
        .into_inner();
    created
        .metadata
        .map(|metadata| metadata.revision)
        .context("a created Environment came back without metadata")
}

/// Opens `count` watches from `since_revision`, spread over connections of their own.
async fn open_watchers(
    addr: SocketAddr,
    count: usize,
    since_revision: i64,
) -> Result<Vec<Streaming<WatchEvent>>> {
    let mut channels = Vec::new();
    for _ in 0..count.div_ceil(WATCHERS_PER_CONNECTION) {
        channels.push(connect(addr).await?);
    }
    let mut streams = Vec::with_capacity(count);
    for watcher in 0..count {
        let channel = channels[watcher / WATCHERS_PER_CONNECTION].clone();
        let stream = ResourceServiceClient::new(channel)
            .watch(WatchRequest {
                kind: KIND.into(),
                since_revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        streams.push(stream);
    }
    Ok(streams)
}

/// Sequential creates for the case's duration, paced when a rate is set. Returns how many were
/// written and the last revision.
async fn write(
    settings: &Settings,
    writer: &mut EnvironmentCommandControllerClient<Channel>,
    epoch: Instant,
    rate: u32,
    run: u64,
) -> Result<(u64, i64)> {
    let deadline = Instant::now() + settings.duration;
    let mut pace = (rate > 0).then(|| {
        let mut every = tokio::time::interval(Duration::from_secs(1) / rate);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every
    });
    let (mut written, mut last) = (0, 0);
    while Instant::now() < deadline {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        last = create(writer, epoch, format!("watch-r{run}-{written}")).await?;
        written += 1;
    }
    Ok((written, last))
}

/// Receives events until the last written revision (once known) has arrived.
async fn receive(
    mut stream: Streaming<WatchEvent>,
    epoch: Instant,
    mut target: signal::Receiver<i64>,
) -> Seen {
    let mut seen = Seen {
        lags: Vec::new(),
        events: 0,
        error: None,
    };
    let mut last = 0;
    loop {
        let wanted = *target.borrow_and_update();
        if wanted > 0 && last >= wanted {
            return seen;
        }
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(event)) => {
                    last = event.revision;
                    seen.events += 1;
                    if let Some(sent) = sent_nanos(&event) {
                        seen.lags.push(nanos(epoch.elapsed()).saturating_sub(sent));
                    }
                }
                Ok(None) => return seen,
                Err(status) => {
                    seen.error = Some(format!("{}: {}", status.code(), status.message()));
                    return seen;
                }
            },
            changed = target.changed() => if changed.is_err() { return seen },
        }
    }
}

/// The writer's send time carried in the event's Environment.
fn sent_nanos(event: &WatchEvent) -> Option<u64> {
    let any = event.resource.as_ref()?;
    let resource = Environment::decode(any.value.as_slice()).ok()?;
    resource.spec?.description.parse().ok()
}

async fn collect(tasks: &mut JoinSet<Seen>) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(done) = tasks.join_next().await {
            seen.push(done?);
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result?,
        Err(_) => {
            tasks.abort_all();
            seen.extend((0..tasks.len()).map(|_| Seen {
                lags: Vec::new(),
                events: 0,
                error: Some(format!(
                    "not done {DRAIN_TIMEOUT:?} after the writer stopped"
                )),
            }));
        }
    }
    Ok(seen)
}
