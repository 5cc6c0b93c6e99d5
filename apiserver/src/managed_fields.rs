//! `metadata.managedFields`: which manager owns which fields, updated on every write the way
//! kube-apiserver's field manager does it.
//!
//! * An **Update** (create, PUT, merge/JSON/strategic patch) by manager `m` takes the fields it
//!   added or changed: they join `m`'s Update entry and leave every other entry; fields it
//!   removed leave every entry.
//! * An **Apply** by `m` makes the applied configuration's field set `m`'s Apply entry; fields
//!   `m` applied before and no longer applies are removed from the object unless another
//!   manager owns them; changing a field another manager owns is a conflict unless forced,
//!   which moves the field to `m`.
//!
//! Entries are keyed by manager, operation and subresource. An entry's `time` changes only when
//! its operation changed the object, so a repeated identical apply is a no-op.

use serde_json::{json, Map, Value};

use super::defaults::Sub;
use super::field_set::{self, FieldSet, Schema};
use super::resources::ResourceInfo;
use super::status::{ApiError, ApiResult};

/// Who writes, for the managedFields of one request.
#[derive(Clone, Debug)]
pub(crate) struct Manager {
    /// The `fieldManager` parameter, or the client's User-Agent up to the first `/`.
    pub name: String,
    /// Set by server-side apply: the managedFields it computed, written as they are.
    pub applied: Option<Value>,
}

/// The operation of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, op: Operation, sub: &str) -> bool {
        self.manager == manager && self.operation == op && self.subresource == sub
    }

    /// How conflict messages name the entry's manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            match &self.time {
                Some(t) => s.push_str(&format!(" using {} at {t}", self.api_version)),
                None => s.push_str(&format!(" using {}", self.api_version)),
            }
        }
        s
    }
}

fn subresource(sub: Sub) -> &'static str {
    match sub {
        Sub::Main => "",
        Sub::Status => "status",
    }
}

/// Parse `metadata.managedFields`.
pub(crate) fn decode(v: Option<&Value>) -> Result<Vec<Entry>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = v.as_array().ok_or("managedFields must be a list")?;
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let s = |k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let operation = match s("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => return Err(format!("unknown operation {other:?}")),
        };
        if s("fieldsType") != "FieldsV1" {
            return Err(format!("unsupported fieldsType {:?}", s("fieldsType")));
        }
        let set = FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&json!({})))?;
        out.push(Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: e.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        });
    }
    Ok(out)
}

/// The `metadata.managedFields` list, sorted as upstream sorts it (Apply entries first, then
/// by time, manager, apiVersion and subresource).
pub(crate) fn encode(entries: &[Entry]) -> Value {
    let mut sorted: Vec<&Entry> = entries.iter().filter(|e| !e.set.is_empty()).collect();
    sorted.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(
        sorted
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.manager));
                m.insert("operation".into(), json!(e.operation.as_str()));
                m.insert("apiVersion".into(), json!(e.api_version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.subresource));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// Metadata the server sets; never owned by anyone.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "selfLink",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// A copy of `obj` with the fields no manager can own (type meta, server-set metadata) and the
/// fields this write cannot change (status on the main resource of a kind with a `/status`
/// subresource; everything but status on `/status`) removed.
fn ownable(obj: &Value, info: &ResourceInfo, sub: Sub) -> Value {
    let mut v = obj.clone();
    let Some(m) = v.as_object_mut() else {
        return Value::Object(Map::new());
    };
    m.remove("apiVersion");
    m.remove("kind");
    match sub {
        Sub::Main if info.status => {
            m.remove("status");
        }
        Sub::Main => {}
        Sub::Status => m.retain(|k, _| k == "status"),
    }
    if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| !SERVER_META.contains(&k.as_str()));
        if meta.is_empty() {
            m.remove("metadata");
        }
    }
    v
}

/// The merge schema of a resource (`crd_schema`: the custom resource version's structural
/// schema, when it has one).
pub(crate) fn schema_for(info: &ResourceInfo, crd_schema: Option<Value>) -> Schema {
    if info.crd.is_some() {
        Schema::custom(&info.kind, crd_schema)
    } else {
        Schema::builtin(&info.kind)
    }
}

fn set_managed_fields(obj: &mut Value, entries: &[Entry]) {
    let encoded = encode(entries);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if encoded.as_array().is_some_and(Vec::is_empty) {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), encoded);
        }
    }
}

fn managed_fields_of(obj: Option<&Value>) -> Option<&Value> {
    obj?.pointer("/metadata/managedFields")
}

/// Set `new`'s managedFields for a write of `new` over `old` (`None` for a create).
///
/// Without a manager (the server's own writes) the old entries are kept. A request that sends
/// its own non-empty `managedFields` replaces the entries (`[{}]` clears them); otherwise the
/// live entries are the base. Entries that cannot be computed (the object does not fit its
/// list keys) are dropped, as upstream drops them, rather than failing the write.
pub(crate) fn track(
    manager: Option<&Manager>,
    info: &ResourceInfo,
    schema: &Schema,
    sub: Sub,
    old: Option<&Value>,
    new: &mut Value,
    now: &str,
) {
    let old_mf = managed_fields_of(old).cloned();
    let Some(manager) = manager else {
        match old_mf {
            Some(mf) => {
                if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.insert("managedFields".into(), mf);
                }
            }
            None => set_managed_fields(new, &[]),
        }
        return;
    };
    if let Some(applied) = &manager.applied {
        if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("managedFields".into(), applied.clone());
        }
        if applied.as_array().is_some_and(Vec::is_empty) {
            set_managed_fields(new, &[]);
        }
        return;
    }
    let requested = managed_fields_of(Some(new))
        .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        .filter(|v| Some(*v) != old_mf.as_ref())
        .cloned();
    let base = match requested {
        Some(r) if r == json!([{}]) => {
            set_managed_fields(new, &[]);
            return;
        }
        Some(r) => decode(Some(&r)).or_else(|_| decode(old_mf.as_ref())),
        None => decode(old_mf.as_ref()),
    };
    let empty = json!({});
    let before = ownable(old.unwrap_or(&empty), info, sub);
    let after = ownable(new, info, sub);
    let result = base.and_then(|entries| {
        let cmp = field_set::compare(&before, &after, schema)?;
        Ok(record_update(entries, &cmp, &manager.name, info, sub, now))
    });
    match result {
        Ok(entries) => set_managed_fields(new, &entries),
        Err(e) => {
            tracing::debug!(error = %e, "managedFields dropped: object does not fit its schema");
            set_managed_fields(new, &[]);
        }
    }
}

/// The Update rule: changed fields move to the updater, removed fields leave everyone.
fn record_update(
    mut entries: Vec<Entry>,
    cmp: &field_set::Comparison,
    manager: &str,
    info: &ResourceInfo,
    sub: Sub,
    now: &str,
) -> Vec<Entry> {
    let taken = cmp.added.union(&cmp.modified);
    for e in &mut entries {
        e.set = e.set.difference(&taken).difference(&cmp.removed);
    }
    let sub_name = subresource(sub);
    match entries
        .iter_mut()
        .find(|e| e.is(manager, Operation::Update, sub_name))
    {
        Some(e) => {
            e.set = e.set.union(&taken);
            e.api_version = info.api_version();
            if !taken.is_empty() {
                e.time = Some(now.to_string());
            }
        }
        None if !taken.is_empty() => entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Update,
            api_version: info.api_version(),
            time: Some(now.to_string()),
            subresource: sub_name.to_string(),
            set: taken,
        }),
        None => {}
    }
    entries.retain(|e| !e.set.is_empty());
    entries
}

/// What an apply produced.
pub(crate) struct Applied {
    /// The object after the apply (its managedFields not yet set).
    pub object: Value,
    /// The new `metadata.managedFields`.
    pub managed_fields: Value,
}

/// The start of an apply error about a configuration that does not fit the schema (the
/// caller words the rest with the object's name).
pub(crate) const TYPED_PATCH_ERROR: &str = "typed patch object: ";

/// Server-side apply of `config` by `manager` onto `live` (an empty object when the object
/// does not exist yet).
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    info: &ResourceInfo,
    schema: &Schema,
    sub: Sub,
    now: &str,
) -> ApiResult<Applied> {
    let invalid = |e: String| {
        let mut err = ApiError::internal("");
        err.code = 422;
        err.reason = "Invalid";
        err.message = format!("{TYPED_PATCH_ERROR}{e}");
        err
    };
    let mut entries = decode(managed_fields_of(Some(live))).unwrap_or_default();
    let sub_name = subresource(sub);
    let config = ownable(config, info, sub);
    let applied_set = field_set::to_set(&config, schema).map_err(invalid)?;
    let mut live_doc = live.clone();
    if let Some(meta) = live_doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let mut merged = field_set::merge(&live_doc, &config, schema).map_err(invalid)?;
    let last_set = entries
        .iter()
        .find(|e| e.is(manager, Operation::Apply, sub_name))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    // Fields this manager applied before and dropped now go, unless someone still owns them
    // (or something below them).
    let others_owned = entries
        .iter()
        .filter(|e| !e.is(manager, Operation::Apply, sub_name))
        .fold(applied_set.clone(), |acc, e| acc.union(&e.set));
    let dropped: FieldSet = last_set
        .difference(&others_owned)
        .iter()
        .filter(|p| !others_owned.has_prefix(p))
        .cloned()
        .collect();
    field_set::remove_paths(&mut merged, &dropped, schema);

    let cmp = field_set::compare(
        &ownable(&live_doc, info, sub),
        &ownable(&merged, info, sub),
        schema,
    )
    .map_err(invalid)?;
    let changed = cmp.added.union(&cmp.modified);
    let mut conflicts: Vec<(String, String)> = Vec::new();
    for e in entries
        .iter_mut()
        .filter(|e| !e.is(manager, Operation::Apply, sub_name))
    {
        let clash = e.set.intersection(&changed);
        if !clash.is_empty() {
            if force {
                e.set = e.set.difference(&clash);
            } else {
                let who = e.describe();
                conflicts.extend(
                    clash
                        .iter()
                        .map(|p| (who.clone(), field_set::path_string(p))),
                );
            }
        }
        e.set = e.set.difference(&cmp.removed);
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }
    let previous_time = entries
        .iter()
        .find(|e| e.is(manager, Operation::Apply, sub_name))
        .and_then(|e| e.time.clone());
    entries.retain(|e| !e.is(manager, Operation::Apply, sub_name));
    let time = if cmp.is_same() && previous_time.is_some() {
        previous_time
    } else {
        Some(now.to_string())
    };
    entries.push(Entry {
        manager: manager.to_string(),
        operation: Operation::Apply,
        api_version: info.api_version(),
        time,
        subresource: sub_name.to_string(),
        set: applied_set,
    });
    entries.retain(|e| !e.set.is_empty());
    Ok(Applied {
        object: merged,
        managed_fields: encode(&entries),
    })
}

/// `409 Conflict` listing each conflicting field and its manager, as upstream words it.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(who, path)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": path})
        })
        .collect();
    let message = if let [(who, path)] = conflicts {
        format!("Apply failed with 1 conflict: conflict with {who}: {path}")
    } else {
        let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (who, path) in conflicts {
            by_manager.entry(who).or_default().push(path);
        }
        let lines: Vec<String> = by_manager
            .iter()
            .map(|(who, paths)| {
                let list: Vec<String> = paths.iter().map(|p| format!("- {p}")).collect();
                format!("conflicts with {who}:\n{}", list.join("\n"))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut err = ApiError::internal("");
    err.code = 409;
    err.reason = "Conflict";
    err.message = message;
    err.details = Some(json!({"causes": causes}));
    err
}

/// Does an applied configuration set `metadata.managedFields` (which apply refuses)?
pub(crate) fn has_managed_fields(obj: &Value) -> bool {
    obj.pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
}

/// The manager of a request: `fieldManager`, else the User-Agent up to its first `/` (as
/// upstream derives it). Longer than 128 characters is invalid.
pub(crate) fn manager_name(field_manager: Option<&str>, user_agent: &str) -> ApiResult<String> {
    let name = match field_manager {
        Some(m) => m.to_string(),
        None => match user_agent.split('/').next().unwrap_or_default() {
            // kube-apiserver's name for requests without a User-Agent.
            "" => "unknown".to_string(),
            prefix => prefix.chars().take(128).collect(),
        },
    };
    if name.chars().count() > 128 {
        return Err(ApiError::invalid(
            "meta.k8s.io",
            "PatchOptions",
            "",
            &[super::status::FieldError::invalid(
                "fieldManager",
                json!(name),
                "must be no more than 128 characters",
            )],
        ));
    }
    Ok(name)
}

/// The merge schema of a resource, reading a custom resource's structural schema from its CRD.
pub(crate) fn schema(inner: &super::store::Inner, info: &ResourceInfo) -> Schema {
    let Some(crd_name) = info.crd.as_deref() else {
        return Schema::builtin(&info.kind);
    };
    let crd = inner
        .get("apiextensions.k8s.io/customresourcedefinitions", crd_name)
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let version_schema = crd.as_ref().and_then(|c| {
        c.pointer("/spec/versions")?
            .as_array()?
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(info.version.as_str()))?
            .pointer("/schema/openAPIV3Schema")
            .cloned()
    });
    schema_for(info, version_schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    fn svc_info() -> std::sync::Arc<ResourceInfo> {
        Registry::builtin().find("", "v1", "services").unwrap()
    }

    fn fields(mf: &Value, manager: &str, op: &str) -> Option<Value> {
        mf.as_array()?
            .iter()
            .find(|e| e["manager"] == manager && e["operation"] == op)
            .map(|e| e["fieldsV1"].clone())
    }

    fn apply_as(live: &Value, config: Value, manager: &str, force: bool) -> ApiResult<Value> {
        let info = svc_info();
        let schema = Schema::builtin("Service");
        let out = apply(
            live,
            &config,
            manager,
            force,
            &info,
            &schema,
            Sub::Main,
            "2024-01-01T00:00:00Z",
        )?;
        let mut obj = out.object;
        obj["metadata"]["managedFields"] = out.managed_fields;
        Ok(obj)
    }

    #[test]
    fn apply_owns_removes_and_conflicts() {
        let live = json!({"metadata": {"name": "s"}});
        let a = apply_as(
            &live,
            json!({"metadata": {"labels": {"x": "1", "y": "2"}}, "spec": {"type": "ClusterIP"}}),
            "a",
            false,
        )
        .unwrap();
        assert_eq!(
            fields(&a["metadata"]["managedFields"], "a", "Apply").unwrap(),
            json!({"f:metadata": {"f:labels": {"f:x": {}, "f:y": {}}}, "f:spec": {"f:type": {}}})
        );
        // b shares x with the same value: no conflict, both own it.
        let b = apply_as(&a, json!({"metadata": {"labels": {"x": "1"}}}), "b", false).unwrap();
        assert!(fields(&b["metadata"]["managedFields"], "b", "Apply").is_some());
        // a drops x and y: y goes, x stays because b owns it.
        let a2 = apply_as(&b, json!({"spec": {"type": "ClusterIP"}}), "a", false).unwrap();
        assert_eq!(a2["metadata"]["labels"], json!({"x": "1"}));
        // b changing a's field conflicts, naming a and the field.
        let err = apply_as(&a2, json!({"spec": {"type": "NodePort"}}), "b", false).unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            r#"Apply failed with 1 conflict: conflict with "a": .spec.type"#
        );
        assert_eq!(
            err.details.as_ref().unwrap()["causes"][0]["field"],
            ".spec.type"
        );
        // Forced, b takes the field from a.
        let forced = apply_as(&a2, json!({"spec": {"type": "NodePort"}}), "b", true).unwrap();
        assert_eq!(forced["spec"]["type"], "NodePort");
        assert!(fields(&forced["metadata"]["managedFields"], "a", "Apply").is_none());
    }

    #[test]
    fn update_takes_changed_fields_from_appliers() {
        let info = svc_info();
        let schema = Schema::builtin("Service");
        let old = apply_as(
            &json!({"metadata": {"name": "s"}}),
            json!({"spec": {"type": "ClusterIP", "sessionAffinity": "None"}}),
            "a",
            false,
        )
        .unwrap();
        let mut new = old.clone();
        new["spec"]["type"] = json!("NodePort");
        let m = Manager {
            name: "kubectl".into(),
            applied: None,
        };
        track(
            Some(&m),
            &info,
            &schema,
            Sub::Main,
            Some(&old),
            &mut new,
            "2024-01-02T00:00:00Z",
        );
        let mf = &new["metadata"]["managedFields"];
        assert_eq!(
            fields(mf, "kubectl", "Update").unwrap(),
            json!({"f:spec": {"f:type": {}}})
        );
        assert_eq!(
            fields(mf, "a", "Apply").unwrap(),
            json!({"f:spec": {"f:sessionAffinity": {}}})
        );
        // Apply entries sort before Update entries.
        assert_eq!(mf[0]["operation"], "Apply");
        // A request carrying [{}] clears the entries.
        let mut cleared = new.clone();
        cleared["metadata"]["managedFields"] = json!([{}]);
        track(
            Some(&m),
            &info,
            &schema,
            Sub::Main,
            Some(&new),
            &mut cleared,
            "2024-01-03T00:00:00Z",
        );
        assert!(cleared["metadata"].get("managedFields").is_none());
    }

    #[test]
    fn reapply_keeps_the_time() {
        let live = json!({"metadata": {"name": "s"}});
        let a = apply_as(&live, json!({"spec": {"type": "ClusterIP"}}), "a", false).unwrap();
        let info = svc_info();
        let schema = Schema::builtin("Service");
        let again = apply(
            &a,
            &json!({"spec": {"type": "ClusterIP"}}),
            "a",
            false,
            &info,
            &schema,
            Sub::Main,
            "2030-01-01T00:00:00Z",
        )
        .unwrap();
        assert_eq!(again.managed_fields, a["metadata"]["managedFields"]);
    }
}
