//! A small work queue with upstream workqueue semantics: a key is queued at
//! most once, never processed by two workers at once (a key that changes while
//! being processed is re-queued when it is done), delayed adds keep the
//! earliest deadline, and failures back off exponentially per key.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

struct Inner<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    delayed: BinaryHeap<Reverse<(Instant, u64, K)>>,
    deadline: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    seq: u64,
    shutdown: bool,
}

/// Per-key exponential backoff settings.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First retry delay.
    pub base: Duration,
    /// Cap.
    pub max: Duration,
    /// Give up (forget the key) after this many consecutive failures.
    pub max_retries: u32,
}

/// The work queue; cheap to clone.
pub struct WorkQueue<K> {
    inner: Arc<Mutex<Inner<K>>>,
    ready: Arc<Notify>,
    timer: Arc<Notify>,
    backoff: Backoff,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            inner: self.inner.clone(),
            ready: self.ready.clone(),
            timer: self.timer.clone(),
            backoff: self.backoff,
        }
    }
}

impl<K: Clone + Eq + Hash + Ord + Send + 'static> WorkQueue<K> {
    /// A queue; call [`WorkQueue::spawn_timer`] once to run delayed adds.
    pub fn new(backoff: Backoff) -> Self {
        WorkQueue {
            inner: Arc::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BinaryHeap::new(),
                deadline: HashMap::new(),
                failures: HashMap::new(),
                seq: 0,
                shutdown: false,
            })),
            ready: Arc::new(Notify::new()),
            timer: Arc::new(Notify::new()),
            backoff,
        }
    }

    fn add_locked(inner: &mut Inner<K>, key: K) -> bool {
        if inner.processing.contains(&key) {
            inner.dirty.insert(key);
            return false;
        }
        if inner.queued.insert(key.clone()) {
            inner.queue.push_back(key);
            return true;
        }
        false
    }

    /// Queues `key` now.
    pub async fn add(&self, key: K) {
        let mut g = self.inner.lock().await;
        if Self::add_locked(&mut g, key) {
            drop(g);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay` (immediately when zero). An earlier pending
    /// deadline for the same key wins.
    pub async fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key).await;
        }
        let at = Instant::now() + delay;
        let mut g = self.inner.lock().await;
        if g.deadline.get(&key).is_some_and(|d| *d <= at) {
            return;
        }
        g.deadline.insert(key.clone(), at);
        g.seq += 1;
        let seq = g.seq;
        g.delayed.push(Reverse((at, seq, key)));
        drop(g);
        self.timer.notify_one();
    }

    /// Re-queues a failed key with backoff; returns false when it was dropped
    /// after too many retries.
    pub async fn add_rate_limited(&self, key: K) -> bool {
        let n = {
            let mut g = self.inner.lock().await;
            let n = g.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if n > self.backoff.max_retries {
            self.forget(&key).await;
            return false;
        }
        let exp = self.backoff.base.saturating_mul(1u32 << (n - 1).min(20));
        self.add_after(key, exp.min(self.backoff.max)).await;
        true
    }

    /// Clears the failure count of `key`.
    pub async fn forget(&self, key: &K) {
        self.inner.lock().await.failures.remove(key);
    }

    /// Waits for the next key; `None` after shutdown.
    pub async fn get(&self) -> Option<K> {
        loop {
            {
                let mut g = self.inner.lock().await;
                if g.shutdown {
                    return None;
                }
                if let Some(k) = g.queue.pop_front() {
                    g.queued.remove(&k);
                    g.processing.insert(k.clone());
                    if !g.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return Some(k);
                }
            }
            self.ready.notified().await;
        }
    }

    /// Marks `key` done; re-queues it if it was added meanwhile.
    pub async fn done(&self, key: &K) {
        let mut g = self.inner.lock().await;
        g.processing.remove(key);
        if g.dirty.remove(key) && Self::add_locked(&mut g, key.clone()) {
            drop(g);
            self.ready.notify_one();
        }
    }

    /// Stops workers and the timer.
    pub async fn shutdown(&self) {
        self.inner.lock().await.shutdown = true;
        self.ready.notify_waiters();
        self.timer.notify_waiters();
    }

    /// Number of keys waiting (not delayed).
    pub async fn len(&self) -> usize {
        self.inner.lock().await.queue.len()
    }

    /// Whether no key is waiting.
    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }

    /// Runs delayed adds on a task of its own until shutdown.
    pub fn spawn_timer(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.clone().run_timer())
    }

    /// Runs delayed adds until shutdown (for callers that own their tasks, e.g. a `JoinSet`).
    pub async fn run_timer(self) {
        let q = self;
        {
            loop {
                let next = {
                    let mut g = q.inner.lock().await;
                    if g.shutdown {
                        return;
                    }
                    let now = Instant::now();
                    let mut fired = false;
                    while let Some(Reverse((at, _, _))) = g.delayed.peek() {
                        if *at > now {
                            break;
                        }
                        let Some(Reverse((at, _, key))) = g.delayed.pop() else {
                            break;
                        };
                        if g.deadline.get(&key) == Some(&at) {
                            g.deadline.remove(&key);
                            fired |= Self::add_locked(&mut g, key);
                        }
                    }
                    if fired {
                        q.ready.notify_one();
                    }
                    g.delayed.peek().map(|Reverse((at, _, _))| *at)
                };
                match next {
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => {}
                            _ = q.timer.notified() => {}
                        }
                    }
                    None => q.timer.notified().await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> WorkQueue<String> {
        WorkQueue::new(Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_secs(1),
            max_retries: 2,
        })
    }

    #[tokio::test]
    async fn dedupes_and_requeues_dirty_keys() {
        let q = q();
        q.add("a".into()).await;
        q.add("a".into()).await;
        assert_eq!(q.len().await, 1);
        let k = q.get().await.expect("key");
        q.add("a".into()).await; // while processing
        assert_eq!(q.len().await, 0);
        q.done(&k).await;
        assert_eq!(q.len().await, 1);
    }

    /// Paused (virtual) time: the delays are exact, whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn delayed_adds_and_backoff() {
        let q = q();
        let _t = q.spawn_timer();
        q.add_after("a".into(), Duration::from_millis(50)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(q.len().await, 0);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(q.len().await, 1);
        let k = q.get().await.expect("key");
        q.done(&k).await;
        assert!(q.add_rate_limited(k.clone()).await);
        assert!(q.add_rate_limited(k.clone()).await);
        assert!(
            !q.add_rate_limited(k.clone()).await,
            "dropped after max retries"
        );
        q.shutdown().await;
        assert_eq!(q.get().await, None);
    }
}
