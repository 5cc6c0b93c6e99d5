//! One watch per kind (and label selector) per process, shared by every controller in it.
//!
//! [`Watches::subscribe`] hands a controller a stream of [`Change`]s (`Apply`, `Delete`, and
//! `Relist` for a complete list) converted to its own cached type; all subscribers of a kind
//! share one kube-runtime watcher. Objects reach subscribers
//! with `managedFields` removed (no controller reads them), and each subscriber converts (and so
//! strips) them further before anything is cached.
//!
//! A subscriber must see a complete list first. The shared watcher therefore starts, or starts
//! over, a moment after the last subscription ([`SETTLE`]): the controllers of a process
//! subscribe together at start and get one list between them; a controller that subscribes
//! later (it restarted after a failure) makes the watcher list again, and every subscriber
//! handles that as the re-list it would get after a `410 Gone`. A subscription ends when its
//! receiver (or the task returned with it) is dropped; the watchers stop with [`Watches`].

use std::any::Any;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::index::Change;

/// How long a shared watcher waits after a subscription before it lists.
pub const SETTLE: Duration = Duration::from_millis(100);

/// The shared watchers of a process (or of one controller run on its own).
pub struct Watches {
    client: Client,
    /// Each hub twice: as `Any`, to get it back typed, and as [`AnyHub`], to stop it.
    #[allow(clippy::type_complexity)]
    hubs: Mutex<HashMap<(std::any::TypeId, String), (Arc<dyn Any + Send + Sync>, Arc<dyn AnyHub>)>>,
}

trait AnyHub: Send + Sync {
    fn stop(&self);
}

/// What the shared watcher sends each subscriber: kube-runtime's events, objects one by one,
/// so that a re-list is never buffered as full objects (each subscriber converts every object
/// as it arrives and buffers only its own stripped view).
enum Event<K> {
    /// A (re)list begins.
    Init,
    /// One object of the list.
    InitApply(K),
    /// The list is complete.
    InitDone,
    /// Added or modified.
    Apply(K),
    /// Deleted.
    Delete(K),
}

impl<K: Clone> Event<K> {
    fn copy(&self) -> Self {
        match self {
            Event::Init => Event::Init,
            Event::InitApply(o) => Event::InitApply(o.clone()),
            Event::InitDone => Event::InitDone,
            Event::Apply(o) => Event::Apply(o.clone()),
            Event::Delete(o) => Event::Delete(o.clone()),
        }
    }
}

struct Hub<K> {
    api: Api<K>,
    labels: String,
    subscribers: Mutex<Vec<mpsc::Sender<Event<K>>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// These locks guard plain inserts and swaps: a panic elsewhere cannot leave them inconsistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K> AnyHub for Hub<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    fn stop(&self) {
        if let Some(t) = lock(&self.task).take() {
            t.abort();
        }
    }
}

impl<K> Hub<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// (Re)starts the watcher after [`SETTLE`], so that every subscriber gets a fresh list.
    fn restart(self: &Arc<Self>) {
        let hub = self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(SETTLE).await;
            hub.watch().await;
        });
        if let Some(old) = lock(&self.task).replace(task) {
            old.abort();
        }
    }

    async fn watch(&self) {
        let mut cfg = watcher::Config::default();
        if !self.labels.is_empty() {
            cfg = cfg.labels(&self.labels);
        }
        let mut stream = watcher(self.api.clone(), cfg).default_backoff().boxed();
        while let Some(ev) = stream.next().await {
            let ev = match ev {
                Ok(watcher::Event::Apply(o)) => Event::Apply(strip(o)),
                Ok(watcher::Event::Delete(o)) => Event::Delete(strip(o)),
                Ok(watcher::Event::Init) => Event::Init,
                Ok(watcher::Event::InitApply(o)) => Event::InitApply(strip(o)),
                Ok(watcher::Event::InitDone) => Event::InitDone,
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying with backoff");
                    continue;
                }
            };
            self.send(ev).await;
        }
    }

    /// Sends `ev` to every subscriber, dropping those that went away.
    async fn send(&self, ev: Event<K>) {
        let subscribers: Vec<_> = lock(&self.subscribers).clone();
        let mut gone = false;
        for tx in &subscribers {
            gone |= tx.send(ev.copy()).await.is_err();
        }
        if gone {
            lock(&self.subscribers).retain(|tx| !tx.is_closed());
        }
    }
}

fn strip<K: Resource>(mut o: K) -> K {
    o.meta_mut().managed_fields = None;
    o
}

impl Watches {
    /// Watchers on `client`; none runs before the first subscription.
    pub fn new(client: Client) -> Self {
        Watches {
            client,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// Subscribes to every `K` (cluster-wide) matching the label selector `labels` (`""`: all),
    /// converted with `convert`. Returns the change stream and the task converting into it, the
    /// pair [`crate::driver::Feed::new`] takes.
    pub fn subscribe<K, T>(
        &self,
        labels: &str,
        convert: impl Fn(K) -> T + Send + 'static,
    ) -> (mpsc::Receiver<Change<T>>, JoinHandle<()>)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        T: Send + 'static,
    {
        let hub = self.hub::<K>(labels);
        let (raw_tx, mut raw_rx) = mpsc::channel::<Event<K>>(1024);
        lock(&hub.subscribers).push(raw_tx);
        hub.restart();
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            let mut list: Vec<T> = Vec::new();
            while let Some(ev) = raw_rx.recv().await {
                let c = match ev {
                    Event::Init => {
                        list.clear();
                        continue;
                    }
                    Event::InitApply(o) => {
                        list.push(convert(o));
                        continue;
                    }
                    Event::InitDone => Change::Relist(std::mem::take(&mut list)),
                    Event::Apply(o) => Change::Apply(convert(o)),
                    Event::Delete(o) => Change::Delete(convert(o)),
                };
                if tx.send(c).await.is_err() {
                    return;
                }
            }
        });
        (rx, task)
    }

    fn hub<K>(&self, labels: &str) -> Arc<Hub<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let key = (std::any::TypeId::of::<K>(), labels.to_string());
        let mut hubs = lock(&self.hubs);
        if let Some(existing) = hubs.get(&key) {
            if let Ok(hub) = Arc::downcast::<Hub<K>>(existing.0.clone()) {
                return hub;
            }
        }
        let hub = Arc::new(Hub::<K> {
            api: Api::all(self.client.clone()),
            labels: labels.to_string(),
            subscribers: Mutex::new(Vec::new()),
            task: Mutex::new(None),
        });
        hubs.insert(key, (hub.clone(), hub.clone()));
        hub
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        for (_, hub) in lock(&self.hubs).values() {
            hub.stop();
        }
    }
}
