//! The closed-loop load driver: N workers, each with its own client, each calling as fast as its
//! previous call returns, until a fixed duration has passed.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::task::JoinSet;

use crate::server::CpuClock;
use crate::stats::{Summary, nanos};

/// Runs `concurrency` workers for `duration`. `make(worker)` builds one worker's call; the call
/// gets the worker's sequence number (0, 1, ...) and does one unit of work of size
/// `units_per_call`. Any failing call fails the run.
pub async fn drive<M, W, F>(
    concurrency: usize,
    duration: Duration,
    units_per_call: u64,
    mut make: M,
) -> Result<Summary>
where
    M: FnMut(usize) -> W,
    W: FnMut(u64) -> F + Send + 'static,
    F: Future<Output = Result<()>> + Send + 'static,
{
    let own_cpu = CpuClock::own();
    let cpu_before = own_cpu.used()?;
    let start = Instant::now();
    let deadline = start + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        workers.spawn(run_worker(make(worker), deadline));
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        samples.extend(done??);
    }
    let mut summary = Summary::from_nanos(samples, start.elapsed(), units_per_call);
    summary.client_cpu = Some(own_cpu.used()?.saturating_sub(cpu_before));
    Ok(summary)
}

async fn run_worker<W, F>(mut call: W, deadline: Instant) -> Result<Vec<u64>>
where
    W: FnMut(u64) -> F,
    F: Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(4096);
    let mut sequence = 0;
    while Instant::now() < deadline {
        let started = Instant::now();
        call(sequence).await?;
        samples.push(nanos(started.elapsed()));
        sequence += 1;
    }
    Ok(samples)
}
