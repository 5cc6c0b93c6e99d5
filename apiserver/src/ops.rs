//! The write verbs (create, update, patch, delete) with upstream's metadata semantics:
//! uid/creationTimestamp/generation, optimistic concurrency, finalizers, graceful Pod deletion,
//! propagation policies, namespace lifecycle and CRD registration.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::defaults::{self, Sub};
use super::field_validation::WriteCtx;
use super::field_validation::{self, Source};
use super::managed_fields;
use super::patch::{self, PatchType};
use super::resources::{crd_conflict, crd_resources, Generation, ResourceInfo, StatusWrite};
use super::status::{ApiError, ApiResult, FieldError};
use super::store::{object_key, Inner};

mod delete;

use delete::grace_elapsed;
pub(crate) use delete::{delete, drop_finalizer, grace_remaining, remove_object};

/// RFC 3339 timestamp with second precision, as metav1.Time serializes.
pub(crate) fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj)
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, fins: &[String]) {
    let m = defaults::ensure_object(obj, "metadata");
    if fins.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(fins));
    }
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some_and(|v| !v.is_null())
}

fn parse(bytes: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))
}

/// Options of a DELETE (body `DeleteOptions` merged with query parameters).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub preconditions: Option<Preconditions>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

/// Delete preconditions.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Result of a write: the object bytes and the HTTP code to answer with.
pub(crate) struct Written {
    pub object: Bytes,
    pub code: u16,
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn check_type_meta(info: &ResourceInfo, obj: &Value) -> ApiResult<()> {
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != info.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                info.api_version()
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != info.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                info.kind
            )));
        }
    }
    Ok(())
}

/// A body sent to an object's URL may leave name and namespace out, but must not name others.
pub(crate) fn check_body_names(obj: &Value, ns: Option<&str>, name: &str) -> ApiResult<()> {
    let body_name = meta_str(obj, "name");
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if let Some(ns) = ns {
        let body_ns = meta_str(obj, "namespace");
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    Ok(())
}

fn set_type_meta(info: &ResourceInfo, obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(info.api_version()));
        m.insert("kind".into(), Value::String(info.kind.clone()));
    }
}

fn invalid(info: &ResourceInfo, name: &str, errs: &[FieldError]) -> ApiError {
    ApiError::invalid(&info.group, &info.kind, name, errs)
}

/// The namespace must exist and not be terminating before new objects go into it.
fn check_namespace(inner: &Inner, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<()> {
    let Some(bytes) = inner.get("/namespaces", ns) else {
        return Err(ApiError::not_found("", "namespaces", ns));
    };
    let nsobj = parse(&bytes)?;
    if is_deleting(&nsobj) {
        return Err(ApiError::forbidden(
            &info.group,
            &info.plural,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        ));
    }
    Ok(())
}

/// POST: create an object.
pub(crate) fn create(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    mut obj: Value,
    dry_run: bool,
    ctx: &mut WriteCtx,
) -> ApiResult<Written> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_type_meta(info, &obj)?;
    let m = defaults::ensure_object(&mut obj, "metadata");
    let mut name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let generate = m
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() && generate.is_empty() {
        return Err(invalid(
            info,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        ));
    }
    if info.namespaced {
        let Some(ns) = ns else {
            return Err(ApiError::method_not_allowed());
        };
        match m.get("namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        m.insert("namespace".into(), json!(ns));
    } else {
        m.remove("namespace");
    }
    let ns = if info.namespaced { ns } else { None };
    if name.is_empty() {
        name = defaults::generated_name(info, &generate).unwrap_or_default();
    }
    if name.is_empty() {
        name = format!("{generate}{}", random_suffix());
        for _ in 0..8 {
            if inner.get(&info.key, &object_key(ns, &name)).is_none() {
                break;
            }
            name = format!("{generate}{}", random_suffix());
        }
    }
    if let Some(ns) = ns {
        check_namespace(inner, info, ns, &name)?;
    }
    let m = defaults::ensure_object(&mut obj, "metadata");
    m.insert("name".into(), json!(name));
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    for drop in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "resourceVersion",
        "selfLink",
    ] {
        m.remove(drop);
    }
    if info.generation != Generation::None {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    set_type_meta(info, &mut obj);
    let mut errs = defaults::validate_name(info, &name);
    errs.extend(defaults::validate_meta(&obj));
    errs.extend(defaults::on_create(info, &mut obj));
    if !errs.is_empty() {
        return Err(invalid(info, &name, &errs));
    }
    let schema = managed_fields::schema(inner, info);
    managed_fields::track(
        ctx.manager.as_ref(),
        info,
        &schema,
        Sub::Main,
        None,
        &mut obj,
        &now_rfc3339(),
    );
    let key = object_key(ns, &name);
    if inner.get(&info.key, &key).is_some() {
        return Err(ApiError::already_exists(&info.group, &info.plural, &name));
    }
    if info.plural == "customresourcedefinitions" {
        install_crd(inner, &mut obj, &name, dry_run)?;
    }
    if dry_run {
        return Ok(Written {
            object: Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
            code: 201,
        });
    }
    let object = inner.put(&info.key, &key, &mut obj);
    Ok(Written { object, code: 201 })
}

/// Validate a CRD, fill its status and start serving its kinds.
fn install_crd(inner: &mut Inner, crd: &mut Value, name: &str, dry_run: bool) -> ApiResult<()> {
    let infos = crd_resources(crd).map_err(|errs| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            &errs,
        )
    })?;
    if let Some(err) = crd_conflict(&inner.registry, &infos, name) {
        return Err(err);
    }
    // Keep transition times of conditions that already hold (updates must not churn status).
    let since = |ty: &str| {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
            })
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now_rfc3339()))
    };
    let (names_since, established_since) = (since("NamesAccepted"), since("Established"));
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let stored: Vec<String> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
                .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    crd["status"] = json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": names_since},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": established_since},
        ],
    });
    if !dry_run {
        inner.registry.install_crd(name, infos);
    }
    Ok(())
}

/// PUT (main resource or `/status`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn update(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    name: &str,
    mut obj: Value,
    sub: Sub,
    dry_run: bool,
    ctx: &mut WriteCtx,
) -> ApiResult<Written> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    check_type_meta(info, &obj)?;
    check_body_names(&obj, ns, name)?;
    let key = object_key(ns, name);
    let Some(cur) = inner.get(&info.key, &key) else {
        if sub == Sub::Main && info.create_on_update {
            defaults::ensure_object(&mut obj, "metadata").insert("name".into(), json!(name));
            return create(inner, info, ns, obj, dry_run, ctx);
        }
        return Err(ApiError::not_found(&info.group, &info.plural, name));
    };
    let old = parse(&cur)?;
    let want_rv = meta_str(&obj, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(
            &info.group,
            &info.plural,
            name,
            ApiError::MODIFIED,
        ));
    }
    let mut new = match sub {
        Sub::Status => status_write(info, &old, obj),
        Sub::Main => {
            let mut n = obj;
            keep_system_metadata(&old, &mut n);
            if info.status {
                copy_field(&old, &mut n, "status");
            }
            n
        }
    };
    set_type_meta(info, &mut new);
    let mut errs = defaults::validate_meta(&new);
    errs.extend(defaults::on_update(info, &old, &mut new, sub));
    if is_deleting(&old) {
        let old_f = finalizers(&old);
        if finalizers(&new).iter().any(|f| !old_f.contains(f)) {
            errs.push(FieldError::forbidden(
                "metadata.finalizers",
                "no new finalizers can be added if the object is being deleted",
            ));
        }
    }
    if !errs.is_empty() {
        return Err(invalid(info, name, &errs));
    }
    if info.generation != Generation::None && sub == Sub::Main {
        let labels_changed = info.generation == Generation::SpecAndLabels
            && old.pointer("/metadata/labels") != new.pointer("/metadata/labels");
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
                m.remove("apiVersion");
                m.remove("kind");
            }
            v
        };
        if labels_changed || strip(&old) != strip(&new) {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            defaults::ensure_object(&mut new, "metadata").insert("generation".into(), json!(g));
        }
    }
    // resourceVersion is compared as part of metadata: copy the current one so a no-op is detected.
    defaults::ensure_object(&mut new, "metadata").insert(
        "resourceVersion".into(),
        json!(meta_str(&old, "resourceVersion")),
    );
    let schema = managed_fields::schema(inner, info);
    managed_fields::track(
        ctx.manager.as_ref(),
        info,
        &schema,
        sub,
        Some(&old),
        &mut new,
        &now_rfc3339(),
    );
    if info.plural == "customresourcedefinitions" && sub == Sub::Main {
        install_crd(inner, &mut new, name, dry_run)?;
    }
    if new == old {
        return Ok(Written {
            object: cur,
            code: 200,
        });
    }
    if dry_run {
        return Ok(Written {
            object: Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
            code: 200,
        });
    }
    if is_deleting(&new) && finalizers(&new).is_empty() && grace_elapsed(&new) {
        let object = remove_object(inner, info, &key).unwrap_or(cur);
        return Ok(Written { object, code: 200 });
    }
    let object = inner.put(&info.key, &key, &mut new);
    Ok(Written { object, code: 200 })
}

/// Metadata the server owns: an update keeps the stored values whatever the request sent.
fn keep_system_metadata(old: &Value, new: &mut Value) {
    let old_meta = meta(old).cloned().unwrap_or_default();
    let m = defaults::ensure_object(new, "metadata");
    for keep in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match old_meta.get(keep) {
            Some(v) => m.insert(keep.into(), v.clone()),
            None => m.remove(keep),
        };
    }
    m.remove("selfLink");
}

/// Set `to.<field>` to `from.<field>`, removing it when `from` has none.
fn copy_field(from: &Value, to: &mut Value, field: &str) {
    match from.get(field) {
        Some(v) if !v.is_null() => to[field] = v.clone(),
        _ => {
            if let Some(o) = to.as_object_mut() {
                o.remove(field);
            }
        }
    }
}

/// The object a write to `/status` stores: what the request sent, with the fields the kind's
/// status strategy protects reset to their stored values.
fn status_write(info: &ResourceInfo, old: &Value, sent: Value) -> Value {
    if info.status_write == StatusWrite::StatusOnly {
        let mut n = old.clone();
        copy_field(&sent, &mut n, "status");
        return n;
    }
    let mut n = sent;
    keep_system_metadata(old, &mut n);
    copy_field(old, &mut n, "spec");
    let protected: &[&str] = match info.status_write {
        StatusWrite::KeepsMetadataButOwners => &["ownerReferences"],
        StatusWrite::SpecAndObjectMeta => &["labels", "annotations", "ownerReferences"],
        StatusWrite::SpecAndMetaForStatus => {
            &["labels", "annotations", "ownerReferences", "finalizers"]
        }
        StatusWrite::KeepsMetadata | StatusWrite::StatusOnly => &[],
    };
    if let (Some(old_meta), Some(new_meta)) = (
        old.get("metadata"),
        n.get_mut("metadata").filter(|m| m.is_object()),
    ) {
        for field in protected {
            copy_field(old_meta, new_meta, field);
        }
    }
    n
}

/// PATCH (main resource or `/status`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    name: &str,
    ty: PatchType,
    body: &[u8],
    sub: Sub,
    dry_run: bool,
    ctx: &mut WriteCtx,
) -> ApiResult<Written> {
    if ty == PatchType::Strategic && !info.strategic {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (strategic merge patch is not supported for {})",
            info.kind
        )));
    }
    let key = object_key(ns, name);
    let Some(cur) = inner.get(&info.key, &key) else {
        return Err(ApiError::not_found(&info.group, &info.plural, name));
    };
    let mut doc = parse(&cur)?;
    let before_rv = meta_str(&doc, "resourceVersion").to_string();
    patch::apply(&mut doc, &info.kind, ty, body)?;
    let duplicates = std::mem::take(&mut ctx.patch_duplicates);
    field_validation::check(ctx, info, &mut doc, &duplicates, Source::Patch)?;
    // A patch may carry a resourceVersion precondition; if it does not, it applies to the current one.
    if meta_str(&doc, "resourceVersion").is_empty() {
        defaults::ensure_object(&mut doc, "metadata")
            .insert("resourceVersion".into(), json!(before_rv));
    }
    if sub == Sub::Main && info.status {
        // Patches to the main resource never change status.
        let old: Value = parse(&cur)?;
        match old.get("status") {
            Some(s) => doc["status"] = s.clone(),
            None => {
                if let Some(m) = doc.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    update(inner, info, ns, name, doc, sub, dry_run, ctx)
}
