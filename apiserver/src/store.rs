//! The object store: one global resourceVersion, compact per-resource tables of serialized JSON,
//! a bounded event history and the watcher fan-out.
//!
//! Everything lives behind one `std::sync::Mutex` that is never held across an `.await`.
//! Writers deliver events to watchers with `try_send`; a watcher whose channel is full is dropped
//! (its HTTP stream ends after draining what it already has, and the client re-watches or relists).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::resources::{Registry, ResKey};

/// Watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to watchers.
#[derive(Debug)]
pub(crate) struct Event {
    pub rv: u64,
    pub res: ResKey,
    pub key: Arc<str>,
    pub kind: EventType,
    /// State after the change (for DELETED: the final state, carrying the deletion revision).
    pub object: Bytes,
    /// State before the change.
    pub prev: Option<Bytes>,
}

impl Event {
    /// Namespace part of the key, if namespaced.
    pub fn namespace(&self) -> Option<&str> {
        self.key.split_once('/').map(|(ns, _)| ns)
    }
}

/// Storage key of an object within its table: `"<namespace>/<name>"` or `"<name>"`.
pub(crate) fn object_key(namespace: Option<&str>, name: &str) -> Arc<str> {
    match namespace {
        Some(ns) => format!("{ns}/{name}").into(),
        None => name.into(),
    }
}

struct WatcherSlot {
    id: u64,
    res: ResKey,
    namespace: Option<String>,
    tx: mpsc::Sender<Arc<Event>>,
}

/// Work for the garbage collector: re-examine this object.
pub(crate) type GcItem = (ResKey, Arc<str>);

/// Store contents; only reachable through [`Store::lock`].
pub(crate) struct Inner {
    rv: u64,
    tables: HashMap<ResKey, BTreeMap<Arc<str>, Bytes>>,
    pub registry: Registry,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// Every event with `rv > compacted` is still in `history`.
    compacted: u64,
    watchers: Vec<WatcherSlot>,
    next_watcher: u64,
    /// owner uid → dependents (objects whose ownerReferences name it).
    dependents: HashMap<String, HashSet<GcItem>>,
    /// Objects the garbage collector should look at.
    pub gc_queue: VecDeque<GcItem>,
    /// Watchers closed because their queue was full.
    slow_closed: u64,
    /// Terminating namespaces whose contents have been deleted already.
    pub purged_namespaces: HashSet<String>,
    /// Objects to look at again when their grace period ends.
    pub timers: Vec<(Instant, ResKey, Arc<str>)>,
}

/// The shared store.
pub(crate) struct Store {
    inner: Mutex<Inner>,
    /// Wakes the garbage collector.
    pub gc_notify: Notify,
    watch_capacity: usize,
}

#[derive(Deserialize)]
struct OwnersOnly {
    #[serde(default)]
    metadata: OwnersMeta,
}
#[derive(Deserialize, Default)]
struct OwnersMeta {
    #[serde(default, rename = "ownerReferences")]
    owner_references: Vec<OwnerUid>,
}
#[derive(Deserialize)]
struct OwnerUid {
    #[serde(default)]
    uid: String,
}

fn owner_uids_of_value(v: &Value) -> Vec<String> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn owner_uids_of_bytes(b: &[u8]) -> Vec<String> {
    serde_json::from_slice::<OwnersOnly>(b)
        .map(|o| {
            o.metadata
                .owner_references
                .into_iter()
                .map(|r| r.uid)
                .collect()
        })
        .unwrap_or_default()
}

/// A consistent view of one resource at some revision, used by paginated and exact lists.
pub(crate) struct Snapshot {
    pub rv: u64,
    /// (key, object) pairs in key order, after `start`, restricted to the namespace.
    pub items: Vec<(Arc<str>, Bytes)>,
}

/// Why a historical read failed.
#[derive(Debug)]
pub(crate) struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

impl Store {
    pub fn new(history_limit: usize, watch_capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                tables: HashMap::new(),
                registry: Registry::builtin(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted: 1,
                watchers: Vec::new(),
                next_watcher: 1,
                dependents: HashMap::new(),
                gc_queue: VecDeque::new(),
                timers: Vec::new(),
                slow_closed: 0,
                purged_namespaces: HashSet::new(),
            }),
            gc_notify: Notify::new(),
            watch_capacity: watch_capacity.max(1),
        }
    }

    /// Lock the store. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every mutation is applied
        // before any fallible step that could panic), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Capacity of each watcher's channel.
    pub fn watch_capacity(&self) -> usize {
        self.watch_capacity
    }
}

impl Inner {
    /// The current global resourceVersion.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// Get an object.
    pub fn get(&self, res: &str, key: &str) -> Option<Bytes> {
        self.tables.get(res).and_then(|t| t.get(key)).cloned()
    }

    /// Number of objects of a resource.
    pub fn count(&self, res: &str) -> usize {
        self.tables.get(res).map_or(0, BTreeMap::len)
    }

    /// Keys of every object in a namespace (for namespace deletion), across resources.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<GcItem> {
        let mut out = Vec::new();
        let prefix = format!("{ns}/");
        for (res, table) in &self.tables {
            let namespaced = self.registry.find_key(res).is_some_and(|r| r.namespaced);
            if !namespaced {
                continue;
            }
            for (k, _) in
                table.range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            {
                if !k.starts_with(&prefix) {
                    break;
                }
                out.push((res.clone(), k.clone()));
            }
        }
        out
    }

    /// Whether any namespaced object is left in `ns`.
    pub fn namespace_has_objects(&self, ns: &str) -> bool {
        let prefix = format!("{ns}/");
        self.tables.iter().any(|(res, table)| {
            self.registry.find_key(res).is_some_and(|r| r.namespaced)
                && table
                    .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                    .next()
                    .is_some_and(|(k, _)| k.starts_with(&prefix))
        })
    }

    /// All keys of a resource table (for dropping a CRD's objects).
    pub fn keys(&self, res: &str) -> Vec<Arc<str>> {
        self.tables
            .get(res)
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Dependents of an owner uid.
    pub fn dependents_of(&self, uid: &str) -> Vec<GcItem> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Store `value` (assigning the next resourceVersion) and emit ADDED/MODIFIED.
    pub fn put(&mut self, res: &ResKey, key: &Arc<str>, value: &mut Value) -> Bytes {
        let rv = self.next_rv();
        set_rv(value, rv);
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let table = self.tables.entry(res.clone()).or_default();
        let prev = table.insert(key.clone(), bytes.clone());
        let old_owners = prev.as_deref().map(owner_uids_of_bytes).unwrap_or_default();
        let new_owners = owner_uids_of_value(value);
        self.reindex_owners(res, key, &old_owners, &new_owners);
        if !new_owners.is_empty() || value.pointer("/metadata/deletionTimestamp").is_some() {
            self.gc_queue.push_back((res.clone(), key.clone()));
        }
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Event {
            rv,
            res: res.clone(),
            key: key.clone(),
            kind,
            object: bytes.clone(),
            prev,
        });
        bytes
    }

    /// Remove an object (assigning the deletion revision) and emit DELETED with its final state.
    pub fn remove(&mut self, res: &ResKey, key: &Arc<str>) -> Option<Bytes> {
        let prev = self.tables.get_mut(res)?.remove(key)?;
        let rv = self.next_rv();
        let mut value: Value = serde_json::from_slice(&prev).unwrap_or(Value::Null);
        set_rv(&mut value, rv);
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let old_owners = owner_uids_of_value(&value);
        self.reindex_owners(res, key, &old_owners, &[]);
        if let Some(uid) = value.pointer("/metadata/uid").and_then(Value::as_str) {
            if let Some(deps) = self.dependents.get(uid) {
                let deps: Vec<GcItem> = deps.iter().cloned().collect();
                self.gc_queue.extend(deps);
            }
        }
        // Let a terminating namespace re-check whether it is empty.
        if let Some((ns, _)) = key.split_once('/') {
            self.gc_queue.push_back(("/namespaces".into(), ns.into()));
        }
        self.record(Event {
            rv,
            res: res.clone(),
            key: key.clone(),
            kind: EventType::Deleted,
            object: bytes.clone(),
            prev: Some(prev),
        });
        Some(bytes)
    }

    fn reindex_owners(&mut self, res: &ResKey, key: &Arc<str>, old: &[String], new: &[String]) {
        for uid in old {
            if !new.contains(uid) {
                if let Some(set) = self.dependents.get_mut(uid) {
                    set.remove(&(res.clone(), key.clone()));
                    if set.is_empty() {
                        self.dependents.remove(uid);
                    }
                }
            }
        }
        for uid in new {
            self.dependents
                .entry(uid.clone())
                .or_default()
                .insert((res.clone(), key.clone()));
        }
    }

    fn record(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        let ns = ev.namespace().map(str::to_string);
        let mut slow = 0;
        self.watchers.retain(|w| {
            if w.res != ev.res {
                return true;
            }
            if let Some(want) = &w.namespace {
                if ns.as_deref() != Some(want.as_str()) {
                    return true;
                }
            }
            match w.tx.try_send(ev.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::info!(watcher = w.id, res = %w.res, "watcher fell behind; closing it");
                    slow += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        self.slow_closed += slow;
        self.history.push_back(ev);
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
    }

    /// Drop the whole history: a watch or continue token from any resourceVersion issued so far
    /// now gets `410 Expired`. The revision is bumped (without an object change) so that a fresh
    /// list returns a resourceVersion that can be watched from.
    pub fn compact(&mut self) {
        self.history.clear();
        self.rv += 1;
        self.compacted = self.rv;
    }

    /// Close every open watch (their streams end; clients re-watch).
    pub fn close_all_watches(&mut self) {
        self.watchers.clear();
    }

    /// Watchers closed so far because they fell behind.
    pub fn slow_watchers_closed(&self) -> u64 {
        self.slow_closed
    }

    /// (resource key, object count) of every table.
    pub fn table_sizes(&self) -> Vec<(String, usize)> {
        self.tables
            .iter()
            .map(|(k, t)| (k.to_string(), t.len()))
            .collect()
    }

    /// Number of open watches.
    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Register a watcher. With `since = Some(rv)`, also returns the retained events after `rv`
    /// (or `TooOld`); the watcher then sees every later event exactly once.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &mut self,
        res: &ResKey,
        namespace: Option<&str>,
        since: Option<u64>,
        capacity: usize,
    ) -> Result<(u64, Vec<Arc<Event>>, mpsc::Receiver<Arc<Event>>), TooOld> {
        let backlog = match since {
            Some(rv) => {
                if rv < self.compacted {
                    return Err(TooOld {
                        requested: rv,
                        oldest: self.compacted,
                    });
                }
                self.history
                    .iter()
                    .filter(|e| {
                        e.rv > rv
                            && e.res == *res
                            && namespace.is_none_or(|ns| e.namespace() == Some(ns))
                    })
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        let (tx, rx) = mpsc::channel(capacity);
        let id = self.next_watcher;
        self.next_watcher += 1;
        self.watchers.push(WatcherSlot {
            id,
            res: res.clone(),
            namespace: namespace.map(str::to_string),
            tx,
        });
        Ok((id, backlog, rx))
    }

    /// Current objects of a resource (optionally one namespace) with keys after `start`.
    pub fn range(
        &self,
        res: &str,
        namespace: Option<&str>,
        start: Option<&str>,
        max: Option<usize>,
    ) -> Vec<(Arc<str>, Bytes)> {
        let Some(table) = self.tables.get(res) else {
            return Vec::new();
        };
        let prefix = namespace.map(|ns| format!("{ns}/"));
        let lower: Bound<&str> = match (start, prefix.as_deref()) {
            (Some(s), _) => Bound::Excluded(s),
            (None, Some(p)) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for (k, v) in table.range::<str, _>((lower, Bound::Unbounded)) {
            if let Some(p) = &prefix {
                if !k.starts_with(p.as_str()) {
                    if k.as_ref() > p.as_str() {
                        break;
                    }
                    continue;
                }
            }
            if max.is_some_and(|m| out.len() >= m) {
                break;
            }
            out.push((k.clone(), v.clone()));
        }
        out
    }

    /// The objects of a resource as they were at revision `at` (keys after `start`).
    pub fn snapshot_at(
        &self,
        res: &str,
        namespace: Option<&str>,
        start: Option<&str>,
        at: u64,
        max: Option<usize>,
    ) -> Result<Snapshot, TooOld> {
        if at >= self.rv {
            return Ok(Snapshot {
                rv: self.rv,
                items: self.range(res, namespace, start, max),
            });
        }
        if at < self.compacted {
            return Err(TooOld {
                requested: at,
                oldest: self.compacted,
            });
        }
        // Undo every later change: the first event after `at` for a key holds its state at `at`.
        let mut overrides: BTreeMap<Arc<str>, Option<Bytes>> = BTreeMap::new();
        for e in self.history.iter().filter(|e| e.rv > at && &*e.res == res) {
            if namespace.is_some_and(|ns| e.namespace() != Some(ns)) {
                continue;
            }
            if start.is_some_and(|s| &*e.key <= s) {
                continue;
            }
            overrides
                .entry(e.key.clone())
                .or_insert_with(|| e.prev.clone());
        }
        // Overrides can only remove as many entries as they hold, so this many current ones suffice.
        let current = self.range(
            res,
            namespace,
            start,
            max.map(|m| m.saturating_add(overrides.len())),
        );
        let mut merged: BTreeMap<Arc<str>, Bytes> = current.into_iter().collect();
        for (k, v) in overrides {
            match v {
                Some(b) => {
                    merged.insert(k, b);
                }
                None => {
                    merged.remove(&k);
                }
            }
        }
        let mut items: Vec<(Arc<str>, Bytes)> = merged.into_iter().collect();
        if let Some(m) = max {
            items.truncate(m);
        }
        Ok(Snapshot { rv: at, items })
    }

    /// Is watcher `id` still registered?
    pub fn has_watcher(&self, id: u64) -> bool {
        self.watchers.iter().any(|w| w.id == id)
    }

    /// Remove watcher `id`.
    pub fn drop_watcher(&mut self, id: u64) {
        self.watchers.retain(|w| w.id != id);
    }

    /// Drop a whole table (after its CRD is gone), emitting DELETED for each object.
    pub fn drop_table(&mut self, res: &ResKey) {
        for k in self.keys(res) {
            self.remove(res, &k);
        }
        self.tables.remove(res);
    }
}

/// Set `metadata.resourceVersion`.
pub(crate) fn set_rv(value: &mut Value, rv: u64) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(name: &str, v: i64) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"}, "v": v})
    }

    #[test]
    fn snapshot_reconstructs_past_state() {
        let store = Store::new(100, 10);
        let mut s = store.lock();
        let res: ResKey = "/pods".into();
        let (a, b, c) = (
            object_key(Some("ns"), "a"),
            object_key(Some("ns"), "b"),
            object_key(Some("ns"), "c"),
        );
        s.put(&res, &a, &mut obj("a", 1));
        s.put(&res, &b, &mut obj("b", 1));
        let at = s.rv();
        s.put(&res, &b, &mut obj("b", 2));
        s.put(&res, &c, &mut obj("c", 1));
        s.remove(&res, &a);
        let snap = s.snapshot_at(&res, Some("ns"), None, at, None).unwrap();
        let got: Vec<(String, i64)> = snap
            .items
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::from_slice::<Value>(v).unwrap()["v"]
                        .as_i64()
                        .unwrap(),
                )
            })
            .collect();
        assert_eq!(got, vec![("ns/a".to_string(), 1), ("ns/b".to_string(), 1)]);
        s.compact();
        assert!(s.snapshot_at(&res, Some("ns"), None, at, None).is_err());
    }

    #[test]
    fn slow_watcher_is_dropped_not_blocking() {
        let store = Store::new(100, 2);
        let mut s = store.lock();
        let res: ResKey = "/pods".into();
        let (_id, _, _rx) = s.watch(&res, None, None, 2).unwrap();
        for i in 0..5 {
            let k = object_key(Some("ns"), &format!("p{i}"));
            s.put(&res, &k, &mut obj("p", i));
        }
        assert_eq!(s.watcher_count(), 0);
    }
}
