//! Serialises read-modify-write calls on one resource within this server.
//!
//! update, apply, delete and updateStatus read a resource, decide, and write it back with a
//! compare-and-swap on its revision. Under contention on one key (a hundred applies of one new
//! slug, dozens of updates of one id without an expected revision) optimistic retries ran out
//! and callers got UNAVAILABLE for writes that could all have succeeded. Waiting for the key
//! instead makes each attempt see the previous writer's result, so the compare-and-swap fails
//! only when something outside these calls (another process, a cascade) changed the row, which
//! the retry loops still absorb.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One lock per key, alive while someone holds or waits for it.
#[derive(Default)]
pub(crate) struct KeyLocks {
    locks: Mutex<Locks>,
}

#[derive(Default)]
struct Locks {
    by_key: HashMap<String, Weak<AsyncMutex<()>>>,
    /// Size at which dead entries are swept next; doubles with the live ones, so sweeping
    /// costs O(1) per insert over time.
    sweep_at: usize,
}

/// Entries kept before the first sweep.
const MIN_SWEEP: usize = 1024;

impl KeyLocks {
    /// Waits until no other call holds `key`; the key is held until the guard is dropped.
    pub(crate) async fn lock(&self, key: String) -> OwnedMutexGuard<()> {
        let lock = self.lock_for(key);
        lock.lock_owned().await
    }

    fn lock_for(&self, key: String) -> Arc<AsyncMutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lock) = locks.by_key.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.by_key.len() >= locks.sweep_at.max(MIN_SWEEP) {
            locks.by_key.retain(|_, lock| lock.strong_count() > 0);
            locks.sweep_at = 2 * locks.by_key.len();
        }
        let lock = Arc::new(AsyncMutex::new(()));
        locks.by_key.insert(key, Arc::downgrade(&lock));
        lock
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_key
            .len()
    }
}

/// The key of a resource by id.
pub(crate) fn id_key(kind: &str, org: &str, id: &str) -> String {
    format!("id\0{kind}\0{org}\0{id}")
}

/// The key of a resource by slug (apply).
pub(crate) fn slug_key(kind: &str, org: &str, slug: &str) -> String {
    format!("slug\0{kind}\0{org}\0{slug}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_held_key_makes_the_next_caller_wait_and_other_keys_do_not() {
        let locks = Arc::new(KeyLocks::default());
        let held = locks.lock("a".into()).await;
        let waiting = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock("a".into()).await })
        };
        // Let the waiter run up to the lock (the test runtime has one thread).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "the waiter got a held key");
        // Another key is free at once.
        drop(locks.lock("b".into()).await);
        drop(held);
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiter gets the key once it is released")
            .expect("task");
    }

    #[tokio::test]
    async fn keys_nobody_holds_are_swept() {
        let locks = KeyLocks::default();
        for n in 0..(3 * MIN_SWEEP) {
            drop(locks.lock(format!("key-{n}")).await);
        }
        assert!(locks.entries() <= MIN_SWEEP, "{}", locks.entries());
    }
}
