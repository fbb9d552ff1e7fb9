//! Many callers at once: one winner per slug, distinct revisions, live changes in order.

use std::collections::BTreeSet;
use std::sync::Arc;

use stigmer_store::StoreError;

use crate::Harness;
use crate::support::{ORG, agent, current_revision, in_org, scope, within};

/// 100 concurrent creates of one slug (each with its own id): exactly one succeeds, every
/// other fails with `AlreadyExists`, and only the winner is stored, logged and counted.
pub async fn concurrent_creates_of_one_slug_have_one_winner(harness: &dyn Harness) {
    const RACERS: usize = 100;
    let store = harness.open().await;
    let tasks: Vec<_> = (0..RACERS)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .create(agent(&format!("agt-{n:03}"), "contested"))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match within("a racing create", task).await.expect("task") {
            Ok(row) => winners.push(row),
            Err(StoreError::AlreadyExists { slug, .. }) => {
                assert_eq!(slug, "contested");
                refused += 1;
            }
            Err(err) => panic!("a losing create must give AlreadyExists, got {err:?}"),
        }
    }
    assert_eq!((winners.len(), refused), (1, RACERS - 1), "one winner");
    let winner = &winners[0];
    assert_eq!(winner.revision, 1);
    assert_eq!(
        store
            .get_by_slug(scope(), "contested".into())
            .await
            .expect("get_by_slug")
            .as_ref(),
        Some(winner)
    );
    assert_eq!(
        current_revision(store.as_ref()).await,
        1,
        "losers take no revision"
    );
    let log = store.changes(in_org(ORG), 0, 1000).await.expect("changes");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].id, winner.id);
    assert_eq!(
        store.info(ORG.into()).await.expect("info").counts,
        [("Agent".to_string(), 1)]
    );
    store.close().await.expect("close");
}

/// Writers in many tasks get distinct revisions with no gap, each task's in the order it
/// wrote, and every `subscribe` receiver sees every change once, in strictly increasing
/// revision order.
pub async fn concurrent_writers_get_distinct_revisions_seen_in_order(harness: &dyn Harness) {
    const WRITERS: usize = 8;
    const WRITES: usize = 25;
    const TOTAL: usize = WRITERS * WRITES;
    let store = harness.open().await;
    let mut first = store.subscribe();
    let mut second = store.subscribe();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                let mut last = None;
                for n in 0..WRITES {
                    let id = format!("agt-{writer}-{}", n / 2);
                    let row = match last.take() {
                        // Every other write replaces the resource created just before.
                        Some(revision) if n % 2 == 1 => {
                            store.replace(agent(&id, &id), revision).await
                        }
                        _ => store.create(agent(&id, &id)).await,
                    }
                    .expect("write");
                    revisions.push(row.revision);
                    last = Some(row.revision);
                }
                revisions
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let revisions = within("a writer", task).await.expect("task");
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "one task's writes take increasing revisions: {revisions:?}"
        );
        all.extend(revisions);
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), TOTAL, "every write its own revision");
    assert_eq!(
        distinct.into_iter().collect::<Vec<_>>(),
        (1..=TOTAL as i64).collect::<Vec<_>>(),
        "no gap"
    );
    for receiver in [&mut first, &mut second] {
        let mut seen = Vec::new();
        while seen.len() < TOTAL {
            let change = within("a published change", receiver.recv())
                .await
                .expect("every change is published, none lagged");
            seen.push(change.revision);
        }
        assert_eq!(
            seen,
            (1..=TOTAL as i64).collect::<Vec<_>>(),
            "published once each, in revision order"
        );
    }
    store.close().await.expect("close");
}
