//! The garbage collector and deletion finisher, run as one background task.
//!
//! It reacts to queued items (objects whose ownerReferences or deletion state changed, dependents
//! of removed owners, namespaces whose contents changed) and to timers (ends of Pod grace periods):
//! - background propagation: dependents whose owners are all gone are deleted; dangling owner
//!   references next to live owners are removed;
//! - `foregroundDeletion`: dependents are deleted, then the finalizer is dropped;
//! - `orphan`: the owner reference is removed from every dependent, then the finalizer is dropped;
//! - Pods past their grace period (no finalizers left) are removed, as the kubelet would;
//! - a terminating Namespace deletes its contents and is removed once it is empty.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ops::{self, DeleteOptions};
use super::store::{GcItem, Inner, Store};

/// Run the collector until the task is aborted.
pub(crate) async fn run(store: Arc<Store>) {
    loop {
        let items: Vec<GcItem> = {
            let mut inner = store.lock();
            let now = Instant::now();
            let mut seen = HashSet::new();
            let mut items: Vec<GcItem> = inner
                .gc_queue
                .drain(..)
                .filter(|i| seen.insert(i.clone()))
                .collect();
            let mut due = Vec::new();
            inner.timers.retain(|(when, res, key)| {
                if *when <= now {
                    due.push((res.clone(), key.clone()));
                    false
                } else {
                    true
                }
            });
            items.extend(due);
            items
        };
        for chunk in items.chunks(256) {
            let mut inner = store.lock();
            for (res, key) in chunk {
                process(&mut inner, res, key);
            }
        }
        let next = {
            let inner = store.lock();
            if !inner.gc_queue.is_empty() {
                continue;
            }
            inner.timers.iter().map(|(w, _, _)| *w).min()
        };
        let sleep = next.map_or(Duration::from_secs(3600), |w| {
            w.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            _ = store.gc_notify.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn process(inner: &mut Inner, res: &Arc<str>, key: &Arc<str>) {
    let Some(info) = inner.registry.find_key(res) else {
        return;
    };
    let Some(bytes) = inner.get(res, key) else {
        return;
    };
    let Ok(obj) = serde_json::from_slice::<Value>(&bytes) else {
        return;
    };
    let uid = ops::meta_str(&obj, "uid").to_string();
    if ops::is_deleting(&obj) {
        let fins = ops::finalizers(&obj);
        if &**res == "/namespaces" {
            // Contents are deleted once; a terminating namespace accepts no new content, so
            // later passes only check whether it has become empty.
            if inner.purged_namespaces.insert(key.to_string()) {
                for (r, k) in inner.keys_in_namespace(key) {
                    let Some(ci) = inner.registry.find_key(&r) else {
                        continue;
                    };
                    let (ns, name) = k.split_once('/').unwrap_or(("", &k));
                    let _ = ops::delete(inner, &ci, Some(ns), name, &DeleteOptions::default());
                }
            }
            if !inner.namespace_has_objects(key) && fins.is_empty() {
                inner.purged_namespaces.remove(&**key);
                ops::remove_object(inner, &info, key);
            }
            return;
        }
        if fins.iter().any(|f| f == "foregroundDeletion") {
            let mut waiting = false;
            for (r, k) in inner.dependents_of(&uid) {
                let Some(ci) = inner.registry.find_key(&r) else {
                    continue;
                };
                let Some(db) = inner.get(&r, &k) else {
                    continue;
                };
                waiting = true;
                let dep: Value = serde_json::from_slice(&db).unwrap_or(Value::Null);
                if !ops::is_deleting(&dep) {
                    let (ns, name) = split(&ci.namespaced, &k);
                    let _ = ops::delete(inner, &ci, ns, name, &DeleteOptions::default());
                }
            }
            if waiting {
                // Re-check shortly: dependents may be held by their own finalizers or grace periods.
                inner.timers.push((
                    Instant::now() + Duration::from_millis(200),
                    res.clone(),
                    key.clone(),
                ));
            } else {
                let _ = ops::drop_finalizer(inner, &info, key, "foregroundDeletion");
            }
            return;
        }
        if fins.iter().any(|f| f == "orphan") {
            for (r, k) in inner.dependents_of(&uid) {
                let Some(ci) = inner.registry.find_key(&r) else {
                    continue;
                };
                let Some(db) = inner.get(&r, &k) else {
                    continue;
                };
                let Ok(mut dep) = serde_json::from_slice::<Value>(&db) else {
                    continue;
                };
                let refs: Vec<Value> = owner_refs(&dep)
                    .into_iter()
                    .filter(|o| o.get("uid").and_then(Value::as_str) != Some(&uid))
                    .collect();
                set_owner_refs(&mut dep, refs);
                inner.put(&ci.key, &k, &mut dep);
            }
            let _ = ops::drop_finalizer(inner, &info, key, "orphan");
            return;
        }
        if fins.is_empty() {
            let left = ops::grace_remaining(&obj);
            if left.is_zero() {
                ops::remove_object(inner, &info, key);
            } else {
                inner
                    .timers
                    .push((Instant::now() + left, res.clone(), key.clone()));
            }
        }
        return;
    }
    let refs = owner_refs(&obj);
    if refs.is_empty() {
        return;
    }
    let ns = if info.namespaced {
        key.split_once('/').map(|(ns, _)| ns)
    } else {
        None
    };
    let mut absent = Vec::new();
    let mut owner_foreground = false;
    for r in &refs {
        let api_version = r
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let kind = r.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        let ruid = r.get("uid").and_then(Value::as_str).unwrap_or_default();
        let Some(oi) = inner.registry.find_kind(group, kind) else {
            continue;
        };
        let okey: Arc<str> = if oi.namespaced {
            match ns {
                Some(ns) => format!("{ns}/{name}").into(),
                None => {
                    absent.push(ruid.to_string());
                    continue;
                }
            }
        } else {
            name.into()
        };
        match inner
            .get(&oi.key, &okey)
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        {
            Some(owner) if ops::meta_str(&owner, "uid") == ruid => {
                if ops::is_deleting(&owner)
                    && ops::finalizers(&owner)
                        .iter()
                        .any(|f| f == "foregroundDeletion")
                {
                    owner_foreground = true;
                }
            }
            _ => absent.push(ruid.to_string()),
        }
    }
    let (dns, dname) = split(&info.namespaced, key);
    if absent.len() == refs.len() || owner_foreground {
        let _ = ops::delete(inner, &info, dns, dname, &DeleteOptions::default());
    } else if !absent.is_empty() {
        let mut dep = obj;
        let keep: Vec<Value> = refs
            .into_iter()
            .filter(|o| {
                !absent
                    .iter()
                    .any(|a| Some(a.as_str()) == o.get("uid").and_then(Value::as_str))
            })
            .collect();
        set_owner_refs(&mut dep, keep);
        inner.put(res, key, &mut dep);
    }
}

fn split<'a>(namespaced: &bool, key: &'a str) -> (Option<&'a str>, &'a str) {
    if *namespaced {
        match key.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, key),
        }
    } else {
        (None, key)
    }
}

fn set_owner_refs(obj: &mut Value, refs: Vec<Value>) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if refs.is_empty() {
            m.remove("ownerReferences");
        } else {
            m.insert("ownerReferences".into(), Value::Array(refs));
        }
    }
}
