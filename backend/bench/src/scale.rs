//! Case 6, scale: get, list and create with many resources preloaded through the store, the
//! process RSS (the server runs in this process) and the time from start to SERVING on the
//! preloaded database.

use anyhow::Result;

use crate::Settings;
use crate::calls::{Call, Target};
use crate::preload::preload;
use crate::report::Report;
use crate::server::{BenchServer, fmt_kib};
use crate::server_cases::measure_calls;
use crate::stats::fmt_duration;

pub async fn run(settings: &Settings, report: &mut Report) -> Result<()> {
    for &rows in &settings.scale {
        report.section(&format!("6. scale: {rows} Environments preloaded"));
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("scale.db");
        let loading = preload(&db, rows).await?;
        let db_bytes = std::fs::metadata(&db)?.len();
        let server = BenchServer::start(&db).await?;
        let rss_start = server.rss()?;
        report.note(&format!(
            "preload {rows} rows: {} ({:.1} MiB file); start to SERVING: {}; server RSS after start: {}",
            fmt_duration(loading),
            db_bytes as f64 / (1024.0 * 1024.0),
            fmt_duration(server.start_to_serving),
            fmt_kib(rss_start.now_kib),
        ));
        let target = Target::server(&server, rows)?;
        let suffix = format!(" @{}", short(rows));
        let calls = [Call::Get, Call::List, Call::Create];
        measure_calls(settings, report, &target, &calls, &suffix).await?;
        let rss_end = server.rss()?;
        report.note(&format!(
            "server RSS after the calls: {} (peak {})",
            fmt_kib(rss_end.now_kib),
            fmt_kib(rss_end.peak_kib)
        ));
        server.stop().await?;
    }
    Ok(())
}

/// "10k", "100k", "1M".
fn short(rows: usize) -> String {
    match rows {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
