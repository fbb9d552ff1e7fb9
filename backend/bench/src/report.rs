//! The printed table: one line per measured case, printed as soon as it is measured, plus the
//! floors later lines are compared against.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::stats::{Summary, fmt_duration, fmt_rate};

/// Floors measured so far, to print ratios against.
#[derive(Debug, Default)]
pub struct Floors {
    /// Store batch inserts of 64, rows/s.
    pub store_batch: Option<Summary>,
}

/// A row's throughput and p99, looked up by [`Report::figure`].
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Units per second.
    pub rate: f64,
    pub p99: Duration,
    /// Per unit of work.
    pub server_cpu: Option<Duration>,
    pub database_cpu: Option<Duration>,
}

impl Figure {
    /// "srv CPU/op 58 µs + PostgreSQL 40 µs", or the server's alone.
    pub fn cpu(&self) -> String {
        let show = |cpu: Option<Duration>| cpu.map_or_else(|| "-".to_string(), fmt_duration);
        match self.database_cpu {
            Some(database) => format!(
                "srv CPU/op {} + PostgreSQL {}",
                show(self.server_cpu),
                fmt_duration(database)
            ),
            None => format!("srv CPU/op {}", show(self.server_cpu)),
        }
    }
}

/// Everything printed (markdown: a heading and a table per case, notes as list items), kept
/// for the JSON results file.
#[derive(Debug, Default)]
pub struct Report {
    pub floors: Floors,
    section: String,
    /// Whether the last line printed was a table line, so a row can continue the table.
    in_table: bool,
    rows: Vec<Value>,
    notes: Vec<Value>,
    /// Cases whose result is wrong, not just slow: the run fails at the end.
    failures: Vec<String>,
}

impl Report {
    pub fn section(&mut self, title: &str) {
        println!();
        println!("### {title}");
        self.section = title.to_string();
        self.in_table = false;
    }

    fn table_header(&mut self) {
        if self.in_table {
            return;
        }
        println!();
        println!(
            "| {:<42} | {:>8} | {:>12} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | note |",
            "case", "inflight", "ops/s", "p50", "p99", "p99.9", "srv CPU/op", "own CPU/op"
        );
        println!(
            "|{:-<44}|{:->9}:|{:->13}:|{:->11}:|{:->11}:|{:->11}:|{:->11}:|{:->11}:|---|",
            "", "", "", "", "", "", "", ""
        );
        self.in_table = true;
    }

    /// One line of figures.
    pub fn row(&mut self, case: &str, in_flight: usize, summary: &Summary, note: &str) {
        let cpu = summary.server_cpu_per_unit();
        let own_cpu = summary.client_cpu_per_unit();
        let show = |cpu: Option<Duration>| cpu.map_or_else(|| "-".to_string(), fmt_duration);
        self.table_header();
        println!(
            "| {:<42} | {:>8} | {:>12} | {:>10} | {:>10} | {:>10} | {:>10} | {:>10} | {note} |",
            case,
            in_flight,
            fmt_rate(summary.rate()),
            fmt_duration(summary.p50),
            fmt_duration(summary.p99),
            fmt_duration(summary.p999),
            show(cpu),
            show(own_cpu),
        );
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        self.rows.push(json!({
            "section": self.section,
            "case": case,
            "in_flight": in_flight,
            "ops_per_sec": summary.rate(),
            "units": summary.units,
            "elapsed_secs": summary.elapsed.as_secs_f64(),
            "p50_us": micros(summary.p50),
            "p99_us": micros(summary.p99),
            "p999_us": micros(summary.p999),
            "server_cpu_us_per_op": cpu.map(micros),
            "bench_cpu_us_per_op": own_cpu.map(micros),
            "database_cpu_us_per_op": summary.database_cpu_per_unit().map(micros),
            "note": note,
        }));
    }

    /// A line of text that is not a measurement (a fact, or why a case was skipped).
    /// Records a wrong result (a lost event, say): printed now, and the run fails when done.
    pub fn fail(&mut self, text: &str) {
        self.note(&format!("FAILED: {text}"));
        self.failures.push(text.to_string());
    }

    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    pub fn note(&mut self, text: &str) {
        if self.in_table {
            println!();
            self.in_table = false;
        }
        println!("- {text}");
        self.notes
            .push(json!({ "section": self.section, "note": text }));
    }

    /// The figures of the first row printed so far with this label and concurrency, for
    /// ratios between cases of one run.
    pub fn figure(&self, case: &str, in_flight: usize) -> Option<Figure> {
        let row = self.rows.iter().find(|row| {
            row["case"].as_str() == Some(case)
                && row["in_flight"].as_u64() == Some(in_flight as u64)
        })?;
        let micros = |key: &str| {
            row[key]
                .as_f64()
                .map(|us| Duration::from_secs_f64(us / 1e6))
        };
        Some(Figure {
            rate: row["ops_per_sec"].as_f64()?,
            p99: micros("p99_us")?,
            server_cpu: micros("server_cpu_us_per_op"),
            database_cpu: micros("database_cpu_us_per_op"),
        })
    }

    /// Writes every row and note to `path` as JSON, creating its directory.
    pub fn write_json(&self, path: &Path, header: Value) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let document = json!({ "run": header, "rows": self.rows, "notes": self.notes });
        std::fs::write(path, serde_json::to_string_pretty(&document)?)?;
        Ok(())
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

/// "0.81× gRPC floor (58.2k/s), p99 1.40× floor p99" against a floor run paired with `summary`.
pub fn vs_grpc_floor(summary: &Summary, floor: &Summary) -> String {
    format!(
        "{:.2}× gRPC floor ({}/s), p99 {:.2}× floor p99",
        ratio(summary.rate(), floor.rate()),
        fmt_rate(floor.rate()),
        ratio(summary.p99.as_secs_f64(), floor.p99.as_secs_f64())
    )
}

pub fn ratio(value: f64, base: f64) -> f64 {
    if base > 0.0 { value / base } else { 0.0 }
}

/// Whether a target was met, in words.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}
