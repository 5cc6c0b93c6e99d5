//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch
//! for the built-in types (merge keys and directives as in `k8s.io/apimachinery/.../strategicpatch`).

use serde_json::{Map, Value};

use super::status::{ApiError, ApiResult};

/// Supported patch content types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
}

impl PatchType {
    /// From the request's Content-Type (apply patches are routed to `apply` before this).
    pub fn from_content_type(ct: &str) -> ApiResult<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+cbor" => Err(ApiError::unsupported_media_type(
                "CBOR is not supported by this server (svcnet embedded apiserver); send the applied configuration as application/apply-patch+yaml",
            )),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// Apply a patch to `doc`. `kind` selects the strategic merge schema.
pub(crate) fn apply(doc: &mut Value, kind: &str, ty: PatchType, patch: &[u8]) -> ApiResult<()> {
    match ty {
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(doc, &p);
            Ok(())
        }
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(doc, &p).map_err(|e| {
                let mut err = ApiError::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ));
                err.code = 422;
                err.reason = "Invalid";
                err
            })
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(patch).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            if !p.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic_merge(doc, &p, kind, "")
        }
    }
}

/// How a list field merges under strategic merge patch.
#[derive(Debug, PartialEq)]
enum ListStrategy {
    /// Replace the whole list (the default for lists without a patch strategy).
    Atomic,
    /// Merge elements by this key (the field's `patchMergeKey`).
    MergeKey(&'static str),
    /// A set of primitives.
    Set,
}

/// The strategic-merge schema of the built-in kinds, by kind and dotted field path.
fn list_strategy(kind: &str, path: &str) -> ListStrategy {
    use ListStrategy::*;
    match path {
        ".metadata.ownerReferences" => return MergeKey("uid"),
        ".metadata.finalizers" => return Set,
        _ => {}
    }
    let pod_spec = |p: &str| -> Option<ListStrategy> {
        Some(match p {
            ".containers" | ".initContainers" | ".ephemeralContainers" => MergeKey("name"),
            ".containers.ports" | ".initContainers.ports" => MergeKey("containerPort"),
            ".containers.env" | ".initContainers.env" => MergeKey("name"),
            ".containers.volumeMounts" | ".initContainers.volumeMounts" => MergeKey("mountPath"),
            ".containers.volumeDevices" | ".initContainers.volumeDevices" => MergeKey("devicePath"),
            ".containers.resizePolicy" => Atomic,
            ".volumes" | ".imagePullSecrets" | ".resourceClaims" | ".schedulingGates" => {
                MergeKey("name")
            }
            ".hostAliases" => MergeKey("ip"),
            ".topologySpreadConstraints" => MergeKey("topologyKey"),
            _ => return None,
        })
    };
    match kind {
        "Pod" => {
            if let Some(rest) = path.strip_prefix(".spec") {
                if let Some(s) = pod_spec(rest) {
                    return s;
                }
            }
            match path {
                ".status.conditions" => MergeKey("type"),
                ".status.podIPs" | ".status.hostIPs" => MergeKey("ip"),
                _ => Atomic,
            }
        }
        "Service" => match path {
            ".spec.ports" => MergeKey("port"),
            ".status.conditions" => MergeKey("type"),
            _ => Atomic,
        },
        "Node" => match path {
            ".status.conditions" | ".status.addresses" => MergeKey("type"),
            ".spec.podCIDRs" => Set,
            _ => Atomic,
        },
        "Namespace" | "ServiceCIDR" => match path {
            ".status.conditions" => MergeKey("type"),
            _ => Atomic,
        },
        _ => Atomic,
    }
}

/// The value of a merge key in a list element.
fn key_value<'a>(elem: &'a Value, key: &str) -> Option<&'a Value> {
    elem.get(key)
}

/// Does list element `current` match patch element `patch`? Strategic merge compares the one
/// `patchMergeKey` of the list (a Service port's `port`, not its protocol): a patch element
/// merges into the first element with the same key, as kube-apiserver does.
fn same_element(current: &Value, patch: &Value, key: &str) -> bool {
    key_value(current, key).is_some() && key_value(current, key) == key_value(patch, key)
}

/// Apply a strategic merge patch object to `doc` at `path`.
fn strategic_merge(doc: &mut Value, patch: &Value, kind: &str, path: &str) -> ApiResult<()> {
    let Some(pm) = patch.as_object() else {
        *doc = patch.clone();
        return Ok(());
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *doc = Value::Object(strip_directives(pm));
        return Ok(());
    }
    if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
        *doc = Value::Object(Map::new());
        return Ok(());
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let dm = doc.as_object_mut().expect("made an object above");
    if let Some(retain) = pm.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        dm.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in pm {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                dm.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let sub = format!("{path}.{k}");
        match v {
            Value::Null => {
                dm.remove(k);
            }
            Value::Object(_) => {
                let target = dm.entry(k.clone()).or_insert(Value::Null);
                if v.get("$patch").and_then(Value::as_str) == Some("delete") {
                    dm.remove(k);
                } else {
                    strategic_merge(target, v, kind, &sub)?;
                }
            }
            Value::Array(items) => {
                let strategy = list_strategy(kind, &sub);
                let current = dm
                    .get(k)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let merged = merge_list(current, items, &strategy, kind, &sub)?;
                dm.insert(k.clone(), Value::Array(merged));
            }
            other => {
                dm.insert(k.clone(), other.clone());
            }
        }
    }
    // Apply $setElementOrder/<field> directives after merging.
    for (k, order) in pm {
        if let (Some(field), Some(order)) = (k.strip_prefix("$setElementOrder/"), order.as_array())
        {
            let strategy = list_strategy(kind, &format!("{path}.{field}"));
            if let Some(list) = dm.get_mut(field).and_then(Value::as_array_mut) {
                reorder(list, order, &strategy);
            }
        }
    }
    Ok(())
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn reorder(list: &mut [Value], order: &[Value], strategy: &ListStrategy) {
    let pos = |x: &Value| -> usize {
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::MergeKey(key) => same_element(o, x, key),
                _ => o == x,
            })
            .unwrap_or(usize::MAX)
    };
    // Stable sort keeps elements not mentioned in the order after the mentioned ones.
    list.sort_by_key(|x| pos(x));
}

fn merge_list(
    mut current: Vec<Value>,
    patch: &[Value],
    strategy: &ListStrategy,
    kind: &str,
    path: &str,
) -> ApiResult<Vec<Value>> {
    match strategy {
        ListStrategy::Atomic => Ok(patch
            .iter()
            .filter(|v| v.get("$patch").is_none())
            .map(|v| match v {
                Value::Object(m) => Value::Object(strip_directives(m)),
                other => other.clone(),
            })
            .collect()),
        ListStrategy::Set => {
            for v in patch {
                if !current.contains(v) {
                    current.push(v.clone());
                }
            }
            Ok(current)
        }
        ListStrategy::MergeKey(key) => {
            if patch
                .iter()
                .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Ok(patch
                    .iter()
                    .filter(|e| e.get("$patch").is_none())
                    .filter_map(|e| e.as_object().map(|m| Value::Object(strip_directives(m))))
                    .collect());
            }
            for elem in patch {
                if !elem.is_object() {
                    return Err(ApiError::bad_request(format!(
                        "strategic merge patch: list {path} expects objects with merge key {key:?}"
                    )));
                }
                if elem.get(*key).is_none() {
                    return Err(ApiError::bad_request(format!(
                        "map: {elem} does not contain declared merge key: {key}"
                    )));
                }
                if elem.get("$patch").and_then(Value::as_str) == Some("delete") {
                    current.retain(|c| !same_element(c, elem, key));
                    continue;
                }
                match current.iter_mut().find(|c| same_element(c, elem, key)) {
                    Some(existing) => strategic_merge(existing, elem, kind, path)?,
                    None => {
                        let mut fresh = Value::Object(Map::new());
                        strategic_merge(&mut fresh, elem, kind, path)?;
                        current.push(fresh);
                    }
                }
            }
            Ok(current)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, doc: Value, patch: Value) -> Value {
        let mut d = doc;
        apply(
            &mut d,
            kind,
            PatchType::Strategic,
            patch.to_string().as_bytes(),
        )
        .unwrap();
        d
    }

    #[test]
    fn service_ports_merge_by_port_alone() {
        // Two ports share the number: the patch element merges into the first one with that
        // port whatever protocol it names (validation then rejects the duplicate UDP/53).
        let doc = json!({"spec": {"ports": [{"port": 53, "protocol": "TCP", "name": "t"}, {"port": 53, "protocol": "UDP", "name": "u"}]}});
        let out = smp(
            "Service",
            doc,
            json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]}}),
        );
        assert_eq!(out["spec"]["ports"][0]["protocol"], "UDP");
        assert_eq!(out["spec"]["ports"][0]["targetPort"], 5353);
        assert!(out["spec"]["ports"][1].get("targetPort").is_none());
        // `$patch: delete` removes every element with the key.
        let out = smp(
            "Service",
            out,
            json!({"spec": {"ports": [{"port": 53, "$patch": "delete"}]}}),
        );
        assert_eq!(out["spec"]["ports"], json!([]));
    }

    #[test]
    fn container_ports_merge_by_container_port() {
        let doc = json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 53, "protocol": "TCP"}]}]}});
        let out = smp(
            "Pod",
            doc,
            json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}}),
        );
        assert_eq!(
            out["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 53, "protocol": "UDP"}])
        );
    }

    #[test]
    fn kubectl_style_patches_match_on_port_only() {
        let doc = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        let out = smp(
            "Service",
            doc,
            json!({"spec": {"ports": [{"port": 53, "targetPort": 5353}]}}),
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["ports"][1]["targetPort"], 5353);
        let out = smp(
            "Service",
            out,
            json!({"spec": {"ports": [{"$patch": "delete", "port": 53}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn pod_conditions_and_containers() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        let out = smp(
            "Pod",
            doc,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "True"}]},
                   "spec": {"containers": [{"name": "a", "image": "y"}]}}),
        );
        assert_eq!(out["status"]["conditions"][0]["status"], "True");
        assert_eq!(out["status"]["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(out["spec"]["containers"][0]["image"], "y");
    }

    #[test]
    fn directives() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}, "spec": {"selector": {"a": "1"}}});
        let out = smp(
            "Service",
            doc,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null}},
                   "spec": {"selector": {"$patch": "replace", "b": "2"}}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"y": "2"}));
        assert_eq!(out["spec"]["selector"], json!({"b": "2"}));
    }

    #[test]
    fn json_patch_and_merge() {
        let mut d = json!({"a": {"b": 1}});
        apply(
            &mut d,
            "X",
            PatchType::Json,
            br#"[{"op":"add","path":"/a/c","value":2}]"#,
        )
        .unwrap();
        apply(&mut d, "X", PatchType::Merge, br#"{"a":{"b":null}}"#).unwrap();
        assert_eq!(d, json!({"a": {"c": 2}}));
        assert!(apply(
            &mut d,
            "X",
            PatchType::Json,
            br#"[{"op":"test","path":"/a/c","value":3}]"#
        )
        .is_err());
        assert!(PatchType::from_content_type("application/apply-patch+cbor").is_err());
    }
}
