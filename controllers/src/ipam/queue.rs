//! A de-duplicating work queue with client-go's semantics: a key is queued at most once, is never
//! processed by two workers at once, and a key added while it is being processed is processed
//! again afterwards.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};

#[derive(Default)]
struct Inner {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    dirty: HashSet<String>,
}

/// The queue; cheap to clone.
#[derive(Clone, Default)]
pub struct WorkQueue {
    inner: Arc<Mutex<Inner>>,
    notify: Arc<Notify>,
}

impl WorkQueue {
    /// Adds `key` (no-op if already queued; deferred if being processed).
    pub async fn add(&self, key: String) {
        let mut q = self.inner.lock().await;
        if q.active.contains(&key) {
            q.dirty.insert(key);
            return;
        }
        if q.queued.insert(key.clone()) {
            q.queue.push_back(key);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(&self, key: String, delay: Duration) {
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key).await;
        });
    }

    /// Waits for the next key and marks it active; call [`WorkQueue::done`] afterwards.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = self.inner.lock().await;
                if let Some(key) = q.queue.pop_front() {
                    q.queued.remove(&key);
                    q.active.insert(key.clone());
                    let more = !q.queue.is_empty();
                    drop(q);
                    if more {
                        self.notify.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; re-queues it if it was added meanwhile.
    pub async fn done(&self, key: &str) {
        let again = {
            let mut q = self.inner.lock().await;
            q.active.remove(key);
            q.dirty.remove(key)
        };
        if again {
            self.add(key.to_string()).await;
        }
    }

    /// Number of queued (not active) keys.
    pub async fn queued(&self) -> usize {
        self.inner.lock().await.queue.len()
    }

    /// Whether nothing is queued or active.
    pub async fn is_idle(&self) -> bool {
        let q = self.inner.lock().await;
        q.queue.is_empty() && q.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_requeues_keys_added_while_active() {
        let q = WorkQueue::default();
        q.add("a".into()).await;
        q.add("a".into()).await;
        q.add("b".into()).await;
        assert_eq!(q.queued().await, 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        q.add("a".into()).await; // while active → dirty, not queued
        assert_eq!(q.queued().await, 1);
        q.done("a").await;
        assert_eq!(q.queued().await, 2);
        assert_eq!(q.next().await, "b");
        q.done("b").await;
        assert_eq!(q.next().await, "a");
        q.done("a").await;
        assert!(q.is_idle().await);
    }
}
