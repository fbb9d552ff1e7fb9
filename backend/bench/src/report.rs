//! The printed table: one line per measured case, printed as soon as it is measured, plus the
//! floors later lines are compared against.

use std::collections::BTreeMap;

use crate::stats::{Summary, fmt_duration, fmt_rate};

/// Floors measured so far, to print ratios against.
#[derive(Debug, Default)]
pub struct Floors {
    /// grpc.health.v1 Check, by requests in flight.
    pub grpc: BTreeMap<usize, Summary>,
    /// Store batch inserts of 64, rows/s.
    pub store_batch: Option<Summary>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub floors: Floors,
}

impl Report {
    pub fn section(&self, title: &str) {
        println!();
        println!("== {title}");
        println!(
            "{:<34} {:>8} {:>12} {:>10} {:>10} {:>10}  note",
            "case", "inflight", "ops/s", "p50", "p99", "p99.9"
        );
    }

    /// One line of figures.
    pub fn row(&self, case: &str, in_flight: usize, summary: &Summary, note: &str) {
        println!(
            "{:<34} {:>8} {:>12} {:>10} {:>10} {:>10}  {note}",
            case,
            in_flight,
            fmt_rate(summary.rate()),
            fmt_duration(summary.p50),
            fmt_duration(summary.p99),
            fmt_duration(summary.p999),
        );
    }

    /// A line of text that is not a measurement (a fact, or why a case was skipped).
    pub fn note(&self, text: &str) {
        println!("  {text}");
    }

    /// "0.81× floor, p99 1.4× floor" against the gRPC floor at the same concurrency.
    pub fn vs_grpc_floor(&self, in_flight: usize, summary: &Summary) -> String {
        match self.floors.grpc.get(&in_flight) {
            Some(floor) => format!(
                "{:.2}× gRPC floor, p99 {:.2}× floor p99",
                ratio(summary.rate(), floor.rate()),
                ratio(summary.p99.as_secs_f64(), floor.p99.as_secs_f64())
            ),
            None => String::new(),
        }
    }

    /// "0.42× store batch floor" against the batch-insert rows/s.
    pub fn vs_store_floor(&self, summary: &Summary) -> String {
        match &self.floors.store_batch {
            Some(floor) => format!(
                "{:.2}× store batch-64 floor",
                ratio(summary.rate(), floor.rate())
            ),
            None => String::new(),
        }
    }
}

pub fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 { value / base } else { 0.0 }
}
