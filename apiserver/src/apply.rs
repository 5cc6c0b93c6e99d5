//! Server-side apply requests: `PATCH` with `Content-Type: application/apply-patch+yaml`.
//!
//! The body is the manager's applied configuration (YAML or JSON) with `apiVersion` and
//! `kind`; `?fieldManager=` is required and `?force=true` takes conflicting fields. Applying to
//! a missing object creates it. The merge, ownership and conflict rules live in
//! [`super::managed_fields::apply`]; the result is stored through the ordinary update/create
//! path (defaults, validation, no-op detection).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::defaults::Sub;
use super::field_validation;
use super::field_validation::WriteCtx;
use super::managed_fields::{self, Manager};
use super::ops::{self, meta_str, Written};
use super::resources::ResourceInfo;
use super::status::{ApiError, ApiResult, FieldError};
use super::store::{object_key, Inner};

/// The media type of an apply patch.
pub(crate) fn is_apply(content_type: &str) -> bool {
    content_type.split(';').next().unwrap_or_default().trim() == "application/apply-patch+yaml"
}

fn patch_options_invalid(errs: &[FieldError]) -> ApiError {
    ApiError::invalid("meta.k8s.io", "PatchOptions", "", errs)
}

/// `force` is an apply-only option (upstream refuses it on other patches).
pub(crate) fn check_not_forced(query: &HashMap<String, String>) -> ApiResult<()> {
    match query.get("force").map(String::as_str) {
        None | Some("" | "false") => Ok(()),
        Some(_) => Err(patch_options_invalid(&[FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        )])),
    }
}

/// Handle one apply request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    inner: &mut Inner,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    name: &str,
    body: &[u8],
    sub: Sub,
    query: &HashMap<String, String>,
    ctx: &mut WriteCtx,
) -> ApiResult<Written> {
    let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => managed_fields::manager_name(Some(m), "")?,
        None => {
            return Err(patch_options_invalid(&[FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )]))
        }
    };
    let force = match query.get("force").map(String::as_str) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid value for force: {other:?}"
            )))
        }
    };
    let dry_run = query.get("dryRun").is_some_and(|v| !v.is_empty());
    let config: Value = serde_yaml::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    check_config(info, &config, ns, name)?;
    let undeclared = field_validation::undeclared_fields(info, &config);
    if !undeclared.is_empty() {
        // Upstream answers 500 here; it is the client's configuration that is wrong.
        let list: Vec<String> = undeclared
            .iter()
            .map(|p| format!("{p}: field not declared in schema"))
            .collect();
        return Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}): {}",
            object_ref(info, &config),
            list.join(", ")
        )));
    }

    let key = object_key(ns, name);
    let live = match inner.get(&info.key, &key) {
        Some(b) => Some(
            serde_json::from_slice::<Value>(&b)
                .map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))?,
        ),
        None if sub == Sub::Status => {
            return Err(ApiError::not_found(&info.group, &info.plural, name))
        }
        None => None,
    };
    let want_rv = meta_str(&config, "resourceVersion");
    if !want_rv.is_empty() {
        let have = live.as_ref().map(|l| meta_str(l, "resourceVersion"));
        if have != Some(want_rv) {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                name,
                ApiError::MODIFIED,
            ));
        }
    }
    let empty = {
        let mut meta = json!({"name": name});
        if let Some(ns) = ns.filter(|_| info.namespaced) {
            meta["namespace"] = json!(ns);
        }
        json!({"apiVersion": info.api_version(), "kind": info.kind, "metadata": meta})
    };
    let schema = managed_fields::schema(inner, info);
    let applied = managed_fields::apply(
        live.as_ref().unwrap_or(&empty),
        &config,
        &manager,
        force,
        info,
        &schema,
        sub,
        &ops::now_rfc3339(),
    )
    .map_err(|mut e| {
        if let Some(detail) = e.message.strip_prefix(managed_fields::TYPED_PATCH_ERROR) {
            e.message = format!(
                "failed to create typed patch object ({}): {detail}",
                object_ref(info, &config)
            );
        }
        e
    })?;
    ctx.manager = Some(Manager {
        name: manager,
        applied: Some(applied.managed_fields),
    });
    if live.is_some() {
        ops::update(inner, info, ns, name, applied.object, sub, dry_run, ctx)
    } else {
        ops::create(inner, info, ns, applied.object, dry_run, ctx)
    }
}

/// The applied configuration must name this kind, this object and no managedFields.
fn check_config(
    info: &ResourceInfo,
    config: &Value,
    ns: Option<&str>,
    name: &str,
) -> ApiResult<()> {
    let av = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = config
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if av != info.api_version() {
        return Err(ApiError::bad_request(format!(
            "Incorrect version specified in apply patch. Specified patch version: {av}, expected: {}",
            info.api_version()
        )));
    }
    if kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            info.kind
        )));
    }
    ops::check_body_names(config, ns, name)?;
    if managed_fields::has_managed_fields(config) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

/// How upstream names an applied object in errors: `namespace/name; group/version, Kind=Kind`
/// (namespace and name as the configuration gives them).
fn object_ref(info: &ResourceInfo, config: &Value) -> String {
    format!(
        "{}/{}; {}/{}, Kind={}",
        meta_str(config, "namespace"),
        meta_str(config, "name"),
        info.group,
        info.version,
        info.kind
    )
}
