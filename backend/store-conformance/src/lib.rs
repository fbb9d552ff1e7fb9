//! The conformance suite of [`stigmer_store::Store`]: every behaviour the trait documents (and
//! the server relies on), written once against the trait alone and run unchanged by every
//! backend. A backend's test file is one line:
//!
//! ```ignore
//! stigmer_store_conformance::store_conformance!(MyHarness::new());
//! ```
//!
//! which expands into one `#[tokio::test]` per case (see [`cases`]), so the test crate needs
//! `tokio` (with `macros` and `rt-multi-thread`) among its dev-dependencies.
#![forbid(unsafe_code)]

pub mod cases;
mod support;

use std::sync::Arc;

use async_trait::async_trait;
use stigmer_store::Store;

/// What a case needs from the backend under test. The macro evaluates the harness expression
/// once per case, so a harness may keep per-case state (a temporary directory, a database).
///
/// The cases keep fewer than 500 changes in flight; a store whose live buffer (`subscribe`)
/// holds fewer makes the watch cases fail with `WatchLagged`.
#[async_trait]
pub trait Harness: Send + Sync {
    /// A new, empty store ready for calls: no resources, no change log, revision 0.
    async fn open(&self) -> Arc<dyn Store>;

    /// Replaces the `data` of resource `id`, in the store this harness opened last, behind the
    /// store's back, as an operator repairing a row by hand would: no revision, no change-log
    /// entry. `None` when the backend offers no such access; the one case that uses it then
    /// skips that part, and says so on stderr.
    async fn edit_data_by_hand(&self, id: &str, data: &str) -> Option<()> {
        let _ = (id, data);
        None
    }
}

/// Expands into one `#[tokio::test]` per case of [`cases`], in a module `store_conformance`,
/// each on a fresh harness made by evaluating `$harness`.
#[macro_export]
macro_rules! store_conformance {
    // The one list of cases; the other arms pass it on.
    (@cases $($then:tt)*) => {
        $crate::store_conformance! { $($then)* ;
            create_then_read_by_id_and_slug,
            replace_then_delete,
            slugs_are_unique_per_kind_and_org,
            stale_or_missing_compare_and_swap_fails,
            transact_applies_all_or_none,
            expectations_guard_the_whole_transaction,
            revisions_are_consecutive_and_mirrored_in_data,
            list_pages_in_ascending_id_order,
            list_filters_on_json_values,
            list_proto_only_leaves_data_out_of_cached_rows,
            list_totals,
            find_matches_names_slugs_labels_and_text_within_one_org,
            change_log_filters_by_org_kind_and_id,
            snapshot_reads_at_one_revision,
            watch_sends_a_snapshot_then_live_changes,
            watch_replays_from_a_revision,
            watch_ends_at_its_until_revision,
            watch_misses_nothing_and_repeats_nothing_under_concurrent_writers,
            stopped_watch_names_the_revision_to_resume_from,
            live_changes_carry_only_the_encoding_their_write_stored,
            changes_of_one_write_share_its_transaction_and_commit_time,
            compaction_keeps_the_retained_revisions,
            age_retention_keeps_recent_changes,
            at_revision_answers_from_the_log,
            info_counts_resources_and_writes,
            gauges_count_every_org_and_commits_are_observed,
            artifacts_are_stored_once_by_hash,
            versions_by_hash_and_tag,
            settings_round_trip,
            rewrite_tokens_everywhere_or_nowhere,
            writes_keep_the_cached_encoding,
            uncached_rows_are_found_and_filled_only_while_unchanged,
            calls_after_close_fail_as_closed,
            concurrent_creates_of_one_slug_have_one_winner,
            concurrent_writers_get_distinct_revisions_seen_in_order,
        }
    };
    (@names ; $($case:ident),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
    (@tests $harness:expr ; $($case:ident),* $(,)?) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    $crate::cases::$case(&$harness).await;
                }
            )*
        }
    };
    ($harness:expr) => {
        $crate::store_conformance! { @cases @tests $harness }
    };
}

/// The names of the cases `store_conformance!` runs, in its order.
pub const CASES: &[&str] = store_conformance!(@cases @names);

#[cfg(test)]
mod tests {
    /// A case written but left out of the macro would never run: every `pub async fn` of
    /// `src/cases/` must be in [`super::CASES`], and nothing else.
    #[test]
    fn the_macro_runs_every_case() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cases");
        let mut written = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("src/cases") {
            let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
            written.extend(text.lines().filter_map(|line| {
                let name = line.strip_prefix("pub async fn ")?;
                Some(name[..name.find('(')?].to_string())
            }));
        }
        written.sort();
        let mut run: Vec<String> = super::CASES.iter().map(|s| s.to_string()).collect();
        run.sort();
        assert_eq!(written, run);
    }
}
