//! The controller runtime shared by the EndpointSlice, Endpoints and mirroring controllers.
//!
//! A controller is configuration ([`Spec`]), the watches that feed its caches ([`Feed`]: a
//! change stream and a fold that applies each change and queues the keys it affects), the keys
//! to queue once every cache is synced, and a pure-then-apply `sync` of one key. [`run`] owns
//! the rest, the same way for each of them:
//!
//! * the cache-sync gate: workers start only after every watch has delivered its first
//!   complete list, then every initial key is queued;
//! * `workers` concurrent workers over one [`WorkQueue`] (a key is never synced twice at once);
//! * errors: [`Error::Stale`] (the cache does not show our own last write yet) is retried after
//!   [`Spec::stale_retry`] or with backoff, anything else with per-key exponential backoff
//!   until the queue gives up; sync outcomes and queue depth go to [`ControllerMetrics`];
//! * readiness ([`Spec::ready`]) from the sync gate until the controller stops, and shutdown:
//!   the watches and workers are aborted when `shutdown` resolves or a watch ends.

use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use runtime::admin::ReadyFlag;
use runtime::queue::{Backoff, WorkQueue};
use tokio::sync::{mpsc, watch};

use crate::apply::EventSink;
use crate::index::{Change, TaskGuard};
use crate::metrics::ControllerMetrics;
use crate::{Error, Result};

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What varies between controllers, besides their watches and sync.
pub struct Spec<K> {
    /// Name in logs (`endpointslice`, `endpoints`, `endpointslicemirroring`).
    pub name: &'static str,
    /// Concurrent workers.
    pub workers: usize,
    /// The controller's queue (its keys are added by the folds, too).
    pub queue: WorkQueue<K>,
    /// Sync outcomes, durations and queue depth.
    pub metrics: ControllerMetrics,
    /// Reported ready from the cache-sync gate until the controller stops.
    pub ready: Option<ReadyFlag>,
    /// A stale-cache retry after this delay (the watch event the sync waits for usually queues
    /// the key earlier); `None`: with the queue's backoff.
    pub stale_retry: Option<Duration>,
}

/// What a controller's configuration tells the runtime before anything starts.
pub trait Settings {
    /// The Events' reporting component (e.g. `svcnet-endpointslice-controller`).
    const COMPONENT: &'static str;
    /// Retry backoff of the controller's work queue.
    const BACKOFF: Backoff;
    /// Checks every value a flag can set.
    fn validate(&self) -> Result<()>;
    /// The Events' reporting instance (pod name).
    fn instance(&self) -> Option<String>;
}

/// Validates `cfg`, then builds what every controller needs before its context: its work queue
/// (with the controller's backoff) and its Event sink.
pub fn prepare<K, S>(
    client: &Client,
    cfg: &S,
    metrics: &ControllerMetrics,
) -> Result<(WorkQueue<K>, EventSink)>
where
    K: Clone + Eq + Hash + Ord + Send + 'static,
    S: Settings,
{
    cfg.validate()?;
    let queue = WorkQueue::new(S::BACKOFF);
    let events = EventSink::new(
        client.clone(),
        S::COMPONENT,
        cfg.instance(),
        metrics.clone(),
    );
    Ok((queue, events))
}

/// Counts the watches that have delivered their first complete list.
#[derive(Clone)]
pub struct SyncGate(Arc<watch::Sender<usize>>);

impl Default for SyncGate {
    fn default() -> Self {
        SyncGate(Arc::new(watch::channel(0).0))
    }
}

/// One watched kind: the task producing its changes and the future folding them.
pub struct Feed {
    task: tokio::task::JoinHandle<()>,
    fold: BoxFuture,
}

impl Feed {
    /// Folds every change of `watch` (a receiver and the task feeding it, as
    /// [`crate::watches::Watches::subscribe`] returns them) with `fold` on the
    /// controller's context `ctx`, and reports the first complete list to `gate`.
    pub fn new<C, T, F, Fut>(
        watch: (mpsc::Receiver<Change<T>>, tokio::task::JoinHandle<()>),
        gate: &SyncGate,
        ctx: &Arc<C>,
        fold: F,
    ) -> Self
    where
        C: Send + Sync + 'static,
        T: Send + 'static,
        F: Fn(Arc<C>, Change<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let ctx = ctx.clone();
        let (mut rx, task) = watch;
        let gate = gate.clone();
        let fold = Box::pin(async move {
            let mut synced = false;
            while let Some(change) = rx.recv().await {
                let relist = matches!(change, Change::Relist(_));
                fold(ctx.clone(), change).await;
                if relist && !synced {
                    synced = true;
                    gate.0.send_modify(|n| *n += 1);
                }
            }
        });
        Feed { task, fold }
    }
}

/// Runs a controller until `shutdown` resolves (see the module docs); `Err` when a watch ended.
/// `initial_keys` and `sync` get the controller's context `ctx`.
pub async fn run<C, K, I, IFut, S, SFut>(
    spec: Spec<K>,
    ctx: Arc<C>,
    feeds: Vec<Feed>,
    gate: SyncGate,
    initial_keys: I,
    sync: S,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()>
where
    C: Send + Sync + 'static,
    K: Clone + Eq + Hash + Ord + Display + Send + Sync + 'static,
    I: FnOnce(Arc<C>) -> IFut,
    IFut: Future<Output = Vec<K>>,
    S: Fn(Arc<C>, K) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Result<()>> + Send + 'static,
{
    let mut guard = TaskGuard::default();
    guard.0.push(spec.queue.spawn_timer());
    let watches = feeds.len();
    let mut folds = Vec::with_capacity(watches);
    for f in feeds {
        guard.0.push(f.task);
        folds.push(f.fold);
    }
    let folding = futures::future::join_all(folds);
    tokio::pin!(folding);
    tokio::pin!(shutdown);
    let mut synced = gate.0.subscribe();
    tokio::select! {
        _ = &mut shutdown => return stop(&spec, guard, Ok(())).await,
        _ = &mut folding => return stop(&spec, guard, Err(watch_ended(spec.name))).await,
        // (The guard `wait_for` returns is not Send: drop it inside.)
        _ = async { drop(synced.wait_for(|n| *n >= watches).await) } => {}
    }
    tracing::info!(controller = spec.name, "caches synced; starting workers");
    for k in initial_keys(ctx.clone()).await {
        spec.queue.add(k).await;
    }
    let sync = Arc::new(sync);
    for _ in 0..spec.workers.max(1) {
        guard.0.push(tokio::spawn(worker(
            spec.name,
            spec.queue.clone(),
            spec.metrics.clone(),
            spec.stale_retry,
            ctx.clone(),
            sync.clone(),
        )));
    }
    if let Some(r) = &spec.ready {
        r.set_ready(true);
    }
    let res = tokio::select! {
        _ = &mut shutdown => Ok(()),
        _ = &mut folding => Err(watch_ended(spec.name)),
    };
    stop(&spec, guard, res).await
}

fn watch_ended(name: &str) -> Error {
    Error::Retry(format!("{name} controller: a watch ended"))
}

async fn stop<K>(spec: &Spec<K>, guard: TaskGuard, res: Result<()>) -> Result<()>
where
    K: Clone + Eq + Hash + Ord + Send + 'static,
{
    if let Some(r) = &spec.ready {
        r.set_ready(false);
    }
    spec.queue.shutdown().await;
    drop(guard);
    res
}

async fn worker<C, K, S, SFut>(
    name: &'static str,
    queue: WorkQueue<K>,
    metrics: ControllerMetrics,
    stale_retry: Option<Duration>,
    ctx: Arc<C>,
    sync: Arc<S>,
) where
    K: Clone + Eq + Hash + Ord + Display + Send + Sync + 'static,
    S: Fn(Arc<C>, K) -> SFut + Send + Sync + 'static,
    SFut: Future<Output = Result<()>> + Send + 'static,
{
    while let Some(key) = queue.get().await {
        let started = Instant::now();
        let res = sync(ctx.clone(), key.clone()).await;
        let took = started.elapsed();
        match res {
            Ok(()) => {
                metrics.sync("success", took);
                queue.forget(&key).await;
            }
            Err(e @ Error::Stale(_)) => {
                metrics.sync("stale", took);
                tracing::trace!(controller = name, %key, error = %e, "cache not caught up; retrying");
                match stale_retry {
                    Some(delay) => queue.add_after(key.clone(), delay).await,
                    None => {
                        queue.add_rate_limited(key.clone()).await;
                    }
                }
            }
            Err(e) => {
                metrics.sync("error", took);
                if queue.add_rate_limited(key.clone()).await {
                    tracing::debug!(controller = name, %key, error = %e, "sync failed; retrying");
                } else {
                    tracing::warn!(controller = name, %key, error = %e, "giving up on this key after repeated failures");
                }
            }
        }
        queue.done(&key).await;
        metrics.queue_depth.set(queue.len().await as i64);
    }
}
