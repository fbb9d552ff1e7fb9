//! Latency samples and the figures drawn from them.

use std::time::Duration;

/// What one timed run did: how many units of work, in how long, and the latency of each call.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Units of work done (calls, or rows for batch inserts).
    pub units: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// CPU time the server process used during the run, when it was measured.
    pub server_cpu: Option<Duration>,
    /// CPU time the bench process (clients, and the store in store cases) used during the run.
    pub client_cpu: Option<Duration>,
    /// CPU time the database server (PostgreSQL's processes) used during the run.
    pub database_cpu: Option<Duration>,
    /// Every call's latency in nanoseconds, sorted, so that runs can be pooled.
    samples: Vec<u64>,
    units_per_call: u64,
}

impl Summary {
    /// Figures from per-call latencies in nanoseconds; each call did `units_per_call` units.
    pub fn from_nanos(mut samples: Vec<u64>, elapsed: Duration, units_per_call: u64) -> Self {
        samples.sort_unstable();
        let calls = u64::try_from(samples.len()).unwrap_or(u64::MAX);
        Self {
            units: calls.saturating_mul(units_per_call),
            elapsed,
            p50: percentile(&samples, 0.50),
            p99: percentile(&samples, 0.99),
            p999: percentile(&samples, 0.999),
            server_cpu: None,
            client_cpu: None,
            database_cpu: None,
            samples,
            units_per_call,
        }
    }

    /// The figures of two runs of the same workload taken as one run: their calls, time and CPU
    /// added up, percentiles over every call of both.
    pub fn pooled(a: &Summary, b: &Summary) -> Self {
        let samples = [a.samples.as_slice(), b.samples.as_slice()].concat();
        let add = |x: Option<Duration>, y: Option<Duration>| Some(x? + y?);
        Self {
            server_cpu: add(a.server_cpu, b.server_cpu),
            client_cpu: add(a.client_cpu, b.client_cpu),
            database_cpu: add(a.database_cpu, b.database_cpu),
            ..Self::from_nanos(samples, a.elapsed + b.elapsed, a.units_per_call)
        }
    }

    /// Server CPU time per unit of work.
    pub fn server_cpu_per_unit(&self) -> Option<Duration> {
        self.per_unit(self.server_cpu)
    }

    /// Bench-process CPU time per unit of work.
    pub fn client_cpu_per_unit(&self) -> Option<Duration> {
        self.per_unit(self.client_cpu)
    }

    /// Database-server CPU time per unit of work.
    pub fn database_cpu_per_unit(&self) -> Option<Duration> {
        self.per_unit(self.database_cpu)
    }

    fn per_unit(&self, total: Option<Duration>) -> Option<Duration> {
        let units = u32::try_from(self.units).ok().filter(|&units| units > 0)?;
        total.map(|cpu| cpu / units)
    }

    /// Units per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.units as f64 / secs
        } else {
            0.0
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted nanosecond samples.
pub fn percentile(sorted: &[u64], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.saturating_sub(1).min(sorted.len() - 1);
    Duration::from_nanos(sorted[index])
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration for people: µs below 10 ms, ms above.
pub fn fmt_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 10_000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.1} ms", micros / 1000.0)
    }
}

/// A rate for people, without a fake precision.
pub fn fmt_rate(rate: f64) -> String {
    if rate >= 100.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// The median throughput of several runs of one workload.
pub fn median_rate(runs: &[Summary]) -> f64 {
    let mut rates: Vec<f64> = runs.iter().map(Summary::rate).collect();
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or(0.0)
}

/// The median server CPU per call of several runs of one workload.
pub fn median_cpu(runs: &[Summary]) -> Option<Duration> {
    let mut cpus: Vec<Duration> = runs
        .iter()
        .filter_map(Summary::server_cpu_per_unit)
        .collect();
    cpus.sort();
    cpus.get(cpus.len() / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_nanos(500));
        assert_eq!(percentile(&samples, 0.99), Duration::from_nanos(990));
        assert_eq!(percentile(&samples, 0.999), Duration::from_nanos(999));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn rate_counts_units() {
        let summary = Summary::from_nanos(vec![1, 2, 3, 4], Duration::from_secs(2), 64);
        assert_eq!(summary.units, 256);
        assert!((summary.rate() - 128.0).abs() < f64::EPSILON);
    }

    #[test]
    fn pooled_runs_add_up_and_share_percentiles() {
        let mut fast = Summary::from_nanos(vec![10; 99], Duration::from_secs(1), 1);
        fast.server_cpu = Some(Duration::from_millis(5));
        let mut slow = Summary::from_nanos(vec![1000; 101], Duration::from_secs(3), 1);
        slow.server_cpu = Some(Duration::from_millis(7));
        let both = Summary::pooled(&fast, &slow);
        assert_eq!(both.units, 200);
        assert!((both.rate() - 50.0).abs() < f64::EPSILON);
        assert_eq!(both.p50, Duration::from_nanos(1000));
        assert_eq!(percentile(&both.samples, 0.49), Duration::from_nanos(10));
        assert_eq!(both.server_cpu, Some(Duration::from_millis(12)));
        assert_eq!(both.client_cpu, None);
    }
}
