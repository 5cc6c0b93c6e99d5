//! DELETE with upstream's semantics: grace periods (Pods), finalizers, and the propagation
//! policies (Orphan, Background, Foreground) with the garbage-collector finalizers they imply.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::{
    finalizers, invalid, is_deleting, meta_str, parse, set_finalizers, DeleteOptions, Written,
};
use crate::defaults;
use crate::resources::ResourceInfo;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::store::{object_key, Inner};

/// When a deletion with `grace` seconds falls due: `now + grace` as an RFC 3339 timestamp,
/// rounded up to the second (metav1.Time has second precision; rounding up keeps the object for
/// at least the full grace period), and the monotonic instant for the server's timer. A grace
/// period beyond what either clock can represent is refused instead of overflowing.
fn deletion_deadline(grace: i64) -> ApiResult<(String, Instant)> {
    use chrono::{Datelike, Timelike};
    let too_large = || {
        ApiError::bad_request(format!(
            "gracePeriodSeconds {grace} is too large: the deletion deadline is out of range"
        ))
    };
    let secs = u64::try_from(grace.max(0)).map_err(|_| too_large())?;
    let timer = Instant::now()
        .checked_add(Duration::from_secs(secs))
        .ok_or_else(too_large)?;
    let when = chrono::Duration::try_seconds(grace)
        .and_then(|d| Utc::now().checked_add_signed(d))
        .ok_or_else(too_large)?;
    let when = if when.nanosecond() > 0 {
        when.checked_add_signed(chrono::Duration::nanoseconds(
            1_000_000_000 - i64::from(when.nanosecond()),
        ))
        .ok_or_else(too_large)?
    } else {
        when
    };
    if when.year_ce().1 > 9999 {
        // RFC 3339 (and metav1.Time) has four-digit years.
        return Err(too_large());
    }
    Ok((when.to_rfc3339_opts(SecondsFormat::Secs, true), timer))
}

pub(super) fn grace_elapsed(obj: &Value) -> bool {
    let ts = meta_str(obj, "deletionTimestamp");
    match chrono::DateTime::parse_from_rfc3339(ts) {
        Ok(t) => t.with_timezone(&Utc) <= Utc::now(),
        Err(_) => true,
    }
}

/// Time until the deletion timestamp (zero when passed).
pub(crate) fn grace_remaining(obj: &Value) -> Duration {
    let ts = meta_str(obj, "deletionTimestamp");
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .and_then(|t| (t.with_timezone(&Utc) - Utc::now()).to_std().ok())
        .unwrap_or(Duration::ZERO)
}

/// Remove an object for good, with the side effects of the kind (CRD → stop serving its kinds).
pub(crate) fn remove_object(
    inner: &mut Inner,
    info: &ResourceInfo,
    key: &Arc<str>,
) -> Option<Bytes> {
    let out = inner.remove(&info.key, key)?;
    if info.plural == "customresourcedefinitions" {
        let served: Vec<_> = inner
            .registry
            .all()
            .iter()
            .filter(|r| r.crd.as_deref() == Some(&**key))
            .cloned()
            .collect();
        inner.registry.remove_crd(key);
        if let Some(r) = served.first() {
            inner.drop_table(&r.key);
        }
    }
    Some(out)
}

/// DELETE one object. Returns the object (its final state if removed, or its state with
/// deletionTimestamp if deletion now waits on finalizers or a grace period).
pub(crate) fn delete(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
) -> ApiResult<Written> {
    let key = object_key(ns, name);
    let Some(cur) = inner.get(&info.key, &key) else {
        return Err(ApiError::not_found(&info.group, &info.plural, name));
    };
    let mut obj = parse(&cur)?;
    if let Some(p) = &opts.preconditions {
        if let Some(uid) = p.uid.as_deref().filter(|u| !u.is_empty()) {
            let have = meta_str(&obj, "uid");
            if uid != have {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                ));
            }
        }
        if let Some(rv) = p.resource_version.as_deref().filter(|u| !u.is_empty()) {
            let have = meta_str(&obj, "resourceVersion");
            if rv != have {
                return Err(ApiError::conflict(
                    &info.group,
                    &info.plural,
                    name,
                    &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"),
                ));
            }
        }
    }
    let policy = match (opts.propagation_policy.as_deref(), opts.orphan_dependents) {
        (Some(p), _) => p.to_string(),
        (None, Some(true)) => "Orphan".into(),
        (None, Some(false)) => "Foreground".into(),
        (None, None) => "Background".into(),
    };
    if !matches!(policy.as_str(), "Background" | "Foreground" | "Orphan") {
        return Err(invalid(
            info,
            name,
            &[FieldError::not_supported(
                "propagationPolicy",
                json!(policy),
                &["Background", "Foreground", "Orphan"],
            )],
        ));
    }
    let dry_run = !opts.dry_run.is_empty();
    let is_pod = info.group.is_empty() && info.plural == "pods";
    let grace = if is_pod {
        let requested = opts
            .grace_period_seconds
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0);
        let unscheduled = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty();
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if unscheduled || phase == "Succeeded" || phase == "Failed" {
            0
        } else {
            requested
        }
    } else {
        0
    };
    if is_deleting(&obj) {
        // Already terminating: only a shorter grace period changes anything.
        let current = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if is_pod && grace < current && !dry_run {
            let (stamp, due) = deletion_deadline(grace)?;
            let m = defaults::ensure_object(&mut obj, "metadata");
            m.insert("deletionTimestamp".into(), json!(stamp));
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if grace == 0 && finalizers(&obj).is_empty() {
                let object = remove_object(inner, info, &key).unwrap_or(cur);
                return Ok(Written { object, code: 200 });
            }
            let object = inner.put(&info.key, &key, &mut obj);
            inner.timers.push((due, info.key.clone(), key));
            return Ok(Written { object, code: 200 });
        }
        return Ok(Written {
            object: cur,
            code: 200,
        });
    }
    let mut fins = finalizers(&obj);
    let extra = match policy.as_str() {
        "Foreground" => Some("foregroundDeletion"),
        "Orphan" => Some("orphan"),
        _ => None,
    };
    if let Some(f) = extra {
        if !fins.iter().any(|x| x == f) {
            fins.push(f.to_string());
        }
    }
    let is_namespace = info.group.is_empty() && info.plural == "namespaces";
    if fins.is_empty() && grace == 0 && !is_namespace {
        if dry_run {
            return Ok(Written {
                object: cur,
                code: 200,
            });
        }
        let object = remove_object(inner, info, &key).unwrap_or(cur);
        return Ok(Written { object, code: 200 });
    }
    set_finalizers(&mut obj, &fins);
    let (stamp, due) = deletion_deadline(grace)?;
    let m = defaults::ensure_object(&mut obj, "metadata");
    m.insert("deletionTimestamp".into(), json!(stamp));
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if is_namespace {
        defaults::ensure_object(&mut obj, "status").insert("phase".into(), json!("Terminating"));
    }
    if dry_run {
        return Ok(Written {
            object: Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
            code: 200,
        });
    }
    let object = inner.put(&info.key, &key, &mut obj);
    if grace > 0 {
        inner.timers.push((due, info.key.clone(), key));
    }
    // Upstream answers 202 only when the caller explicitly asked for cascading via orphanDependents=false.
    let code = if opts.orphan_dependents == Some(false) {
        202
    } else {
        200
    };
    Ok(Written { object, code })
}

/// Remove `finalizer` from an object being deleted (used by the garbage collector).
pub(crate) fn drop_finalizer(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    key: &Arc<str>,
    finalizer: &str,
) -> ApiResult<()> {
    let Some(cur) = inner.get(&info.key, key) else {
        return Ok(());
    };
    let mut obj = parse(&cur)?;
    let fins: Vec<String> = finalizers(&obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    set_finalizers(&mut obj, &fins);
    if fins.is_empty() && grace_elapsed(&obj) {
        remove_object(inner, info, key);
    } else {
        inner.put(&info.key, key, &mut obj);
    }
    Ok(())
}
