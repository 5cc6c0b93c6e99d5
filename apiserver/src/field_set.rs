//! Field sets as structured-merge-diff models them, for server-side apply and `managedFields`.
//!
//! A field set is a set of paths into an object. A path is a list of elements spelled as in the
//! `FieldsV1` wire format: `f:<field>` (a struct field or map key), `k:<JSON of the key fields>`
//! (an element of an associative list), `v:<JSON value>` (an element of a set) and `i:<index>`.
//! Which lists are associative (and by which keys), sets or atomic comes from [`Schema`]: the
//! `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` / `x-kubernetes-map-type` markers of
//! the real OpenAPI for the built-in kinds, and from the CRD's structural schema for custom
//! resources. Unknown lists are atomic and unknown maps granular, as for a deduced schema.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

mod merge;

pub(crate) use merge::{merge, remove_paths};

/// One path element in its `FieldsV1` spelling.
pub(crate) type Pe = String;
/// A path from the object root.
pub(crate) type Path = Vec<Pe>;

/// A set of paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }
    #[cfg(test)]
    pub fn contains(&self, p: &[Pe]) -> bool {
        self.0.contains(p)
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }
    pub fn union(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&o.0).cloned().collect())
    }
    pub fn difference(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&o.0).cloned().collect())
    }
    pub fn intersection(&self, o: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&o.0).cloned().collect())
    }
    /// Is `p` or any path below it in the set?
    pub fn has_prefix(&self, p: &[Pe]) -> bool {
        self.0
            .range(p.to_vec()..)
            .next()
            .is_some_and(|q| q.starts_with(p))
    }
    /// The `fieldsV1` JSON: nested objects keyed by path elements, where `{}` is a leaf and a
    /// `"."` key marks a path that is a member and also has members below it.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            children: BTreeMap<Pe, Node>,
        }
        fn render(n: &Node) -> Value {
            let mut m = Map::new();
            if n.member && !n.children.is_empty() {
                m.insert(".".into(), Value::Object(Map::new()));
            }
            for (k, c) in &n.children {
                m.insert(k.clone(), render(c));
            }
            Value::Object(m)
        }
        let mut root = Node::default();
        for p in &self.0 {
            let mut n = &mut root;
            for pe in p {
                n = n.children.entry(pe.clone()).or_default();
            }
            n.member = true;
        }
        render(&root)
    }

    /// Parse `fieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) -> Result<(), String> {
            let m = v
                .as_object()
                .ok_or_else(|| format!("expected an object at {}", path_string(path)))?;
            if m.is_empty() && !path.is_empty() {
                out.insert(path.clone());
            }
            for (k, c) in m {
                if k == "." {
                    if !path.is_empty() {
                        out.insert(path.clone());
                    }
                    continue;
                }
                let valid = matches!(k.split_once(':'), Some(("f" | "v" | "k" | "i", _)));
                if !valid {
                    return Err(format!("unexpected path element {k:?}"));
                }
                path.push(k.clone());
                walk(c, path, out)?;
                path.pop();
            }
            Ok(())
        }
        let mut out = FieldSet::default();
        walk(v, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

impl FromIterator<Path> for FieldSet {
    fn from_iter<I: IntoIterator<Item = Path>>(iter: I) -> Self {
        FieldSet(iter.into_iter().collect())
    }
}

/// A path as upstream prints it in conflict messages: `.spec.ports[port=80,protocol="TCP"].name`.
pub(crate) fn path_string(p: &[Pe]) -> String {
    let mut s = String::new();
    for pe in p {
        match pe.split_once(':') {
            Some(("f", name)) => {
                s.push('.');
                s.push_str(name);
            }
            Some(("k", json)) => {
                let fields: Vec<String> = serde_json::from_str::<Map<String, Value>>(json)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_else(|_| vec![json.to_string()]);
                s.push_str(&format!("[{}]", fields.join(",")));
            }
            Some(("v", json)) => s.push_str(&format!("[={json}]")),
            Some(("i", idx)) => s.push_str(&format!("[{idx}]")),
            _ => s.push_str(pe),
        }
    }
    s
}

/// A `f:<field>` path element.
pub(crate) fn field(name: &str) -> Pe {
    format!("f:{name}")
}

/// How a list merges and is owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars; each element is owned separately.
    Set,
    /// An associative list: elements are identified by these key fields.
    Map(Vec<String>),
}

/// The merge schema of one kind.
#[derive(Clone, Debug)]
pub(crate) struct Schema {
    kind: String,
    /// The `openAPIV3Schema` of a custom resource's version.
    custom: Option<Value>,
}

impl Schema {
    /// A built-in kind.
    pub fn builtin(kind: &str) -> Self {
        Self {
            kind: kind.to_string(),
            custom: None,
        }
    }

    /// A custom resource with its structural schema (if the CRD declares one).
    pub fn custom(kind: &str, schema: Option<Value>) -> Self {
        Self {
            kind: kind.to_string(),
            custom: Some(schema.unwrap_or(Value::Null)),
        }
    }

    /// The schema node of a custom resource at a dotted field path (list levels are implied).
    fn custom_node(&self, path: &str) -> Option<&Value> {
        let mut node = self.custom.as_ref()?;
        for seg in path.split('.').filter(|s| !s.is_empty()) {
            if node.get("type").and_then(Value::as_str) == Some("array") {
                node = node.get("items")?;
            }
            node = match node.pointer(&format!(
                "/properties/{}",
                seg.replace('~', "~0").replace('/', "~1")
            )) {
                Some(n) => n,
                None => node.get("additionalProperties").filter(|a| a.is_object())?,
            };
        }
        Some(node)
    }

    /// The list type of the list at a dotted field path such as `.spec.ports`.
    pub fn list_type(&self, path: &str) -> ListType {
        use ListType::*;
        let keys = |k: &[&str]| Map(k.iter().map(|s| s.to_string()).collect());
        match path {
            ".metadata.ownerReferences" => return keys(&["uid"]),
            ".metadata.finalizers" => return Set,
            _ if path.starts_with(".metadata.") => return Atomic,
            _ => {}
        }
        if self.custom.is_some() {
            let Some(node) = self.custom_node(path) else {
                return Atomic;
            };
            return match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => Set,
                Some("map") => Map(node
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|ks| {
                        ks.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()),
                _ => Atomic,
            };
        }
        let pod_spec = |p: &str| -> Option<ListType> {
            let container = |c: &str| -> Option<ListType> {
                Some(match c {
                    "" => keys(&["name"]),
                    ".ports" => keys(&["containerPort", "protocol"]),
                    ".env" => keys(&["name"]),
                    ".volumeMounts" => keys(&["mountPath"]),
                    ".volumeDevices" => keys(&["devicePath"]),
                    ".resizePolicy" => keys(&["resourceName"]),
                    _ => return None,
                })
            };
            for list in [".containers", ".initContainers", ".ephemeralContainers"] {
                if let Some(rest) = p.strip_prefix(list) {
                    if rest.is_empty() || rest.starts_with('.') {
                        return container(rest);
                    }
                }
            }
            Some(match p {
                ".volumes" | ".imagePullSecrets" | ".resourceClaims" | ".schedulingGates" => {
                    keys(&["name"])
                }
                ".hostAliases" => keys(&["ip"]),
                ".topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
                _ => return None,
            })
        };
        match (self.kind.as_str(), path) {
            ("Pod", p) if p.starts_with(".spec.") => {
                p.strip_prefix(".spec").and_then(pod_spec).unwrap_or(Atomic)
            }
            ("Pod", ".status.conditions") => keys(&["type"]),
            ("Pod", ".status.podIPs" | ".status.hostIPs") => keys(&["ip"]),
            ("Service", ".spec.ports") => keys(&["port", "protocol"]),
            (
                "Service" | "Namespace" | "CustomResourceDefinition" | "ServiceCIDR",
                ".status.conditions",
            ) => keys(&["type"]),
            ("Node", ".status.conditions" | ".status.addresses") => keys(&["type"]),
            ("Node", ".spec.podCIDRs") => Set,
            _ => Atomic,
        }
    }

    /// Is the object at this path replaced and owned as a whole (`x-kubernetes-map-type: atomic`)?
    pub fn atomic_map(&self, path: &str) -> bool {
        if self.custom.is_some() {
            return self
                .custom_node(path)
                .and_then(|n| n.get("x-kubernetes-map-type"))
                .and_then(Value::as_str)
                == Some("atomic");
        }
        matches!(
            (self.kind.as_str(), path),
            ("Service", ".spec.selector") | ("Pod", ".spec.nodeSelector")
        )
    }

    /// Is the object at this path a map with arbitrary keys (labels, annotations, ConfigMap
    /// data) rather than a struct? Upstream's Go structs always exist (zero-valued) on the
    /// old side of a comparison, so only maps are themselves recorded when an update adds them.
    fn free_map(&self, path: &str) -> bool {
        if self.custom.is_some() && !path.starts_with(".metadata.") {
            return self.custom_node(path).is_some_and(|n| {
                n.get("additionalProperties").is_some_and(Value::is_object)
                    && n.get("properties").is_none()
            });
        }
        let last = path.rsplit('.').next().unwrap_or_default();
        matches!(
            last,
            "labels"
                | "annotations"
                | "data"
                | "binaryData"
                | "capacity"
                | "allocatable"
                | "limits"
                | "requests"
                | "matchLabels"
        )
    }
}

/// The path element of a list item.
fn item_pe(lt: &ListType, item: &Value, path: &str) -> Result<Pe, String> {
    match lt {
        ListType::Map(keys) => {
            let obj = item.as_object().ok_or_else(|| {
                format!("{path}: associative list with keys has an element that is not a map")
            })?;
            let mut k = Map::new();
            let mut sorted: Vec<&String> = keys.iter().collect();
            sorted.sort();
            for key in sorted {
                match obj.get(key) {
                    Some(v) if !v.is_null() => {
                        k.insert(key.clone(), v.clone());
                    }
                    // Upstream defaults a port's protocol before keying the list.
                    _ if key == "protocol" => {
                        k.insert(key.clone(), Value::String("TCP".into()));
                    }
                    _ => {
                        return Err(format!(
                            "{path}: associative list with keys has an element that omits key field {key:?} (and doesn't have default value)"
                        ))
                    }
                }
            }
            Ok(format!("k:{}", Value::Object(k)))
        }
        ListType::Set => {
            if item.is_object() || item.is_array() {
                return Err(format!("{path}: set elements must be scalars"));
            }
            Ok(format!("v:{item}"))
        }
        ListType::Atomic => Err(format!("{path}: atomic lists have no element paths")),
    }
}

/// The elements of a non-atomic list, keyed by path element (first occurrence wins; a
/// repeated key is reported when `strict`).
fn index_items<'a>(
    lt: &ListType,
    items: &'a [Value],
    path: &str,
    strict: bool,
) -> Result<Vec<(Pe, &'a Value)>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pe = item_pe(lt, item, path)?;
        if !seen.insert(pe.clone()) {
            if strict {
                return Err(format!(
                    "{path}: duplicate entries for key {}",
                    path_string(&[pe])
                ));
            }
            continue;
        }
        out.push((pe, item));
    }
    Ok(out)
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Every leaf and list element `v` sets: the fields a manager owns after applying `v`.
/// Duplicate keys in associative lists are errors (as for an applied configuration).
pub(crate) fn to_set(v: &Value, schema: &Schema) -> Result<FieldSet, String> {
    fn walk(
        v: &Value,
        schema: &Schema,
        path: &mut Path,
        spath: &str,
        out: &mut FieldSet,
    ) -> Result<(), String> {
        match v {
            Value::Object(m) => {
                if !path.is_empty() && schema.atomic_map(spath) {
                    out.insert(path.clone());
                    return Ok(());
                }
                for (k, child) in m {
                    path.push(field(k));
                    walk(child, schema, path, &format!("{spath}.{k}"), out)?;
                    if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                        out.insert(path.clone());
                    }
                    path.pop();
                }
            }
            Value::Array(items) => {
                let lt = schema.list_type(spath);
                if lt == ListType::Atomic {
                    out.insert(path.clone());
                    return Ok(());
                }
                for (pe, item) in index_items(&lt, items, spath, true)? {
                    path.push(pe);
                    if item.is_object() {
                        walk(item, schema, path, spath, out)?;
                    }
                    out.insert(path.clone());
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
        Ok(())
    }
    let mut out = FieldSet::default();
    walk(v, schema, &mut Vec::new(), "", &mut out)?;
    Ok(out)
}

/// The difference between two versions of an object.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compare `old` with `new` leaf by leaf (atomic lists and maps are leaves); list elements and
/// maps that appear or disappear as a whole are recorded themselves too.
pub(crate) fn compare(old: &Value, new: &Value, schema: &Schema) -> Result<Comparison, String> {
    fn walk(
        l: Option<&Value>,
        r: Option<&Value>,
        schema: &Schema,
        path: &mut Path,
        spath: &str,
        is_item: bool,
        c: &mut Comparison,
    ) -> Result<(), String> {
        let both_empty = l.is_none_or(is_empty_value) && r.is_none_or(is_empty_value);
        let shape = |v: Option<&Value>| match v {
            Some(Value::Object(_)) => 1,
            Some(Value::Array(_)) => 2,
            Some(_) => 3,
            None => 0,
        };
        let (ls, rs) = (shape(l), shape(r));
        let kind = if rs != 0 { rs } else { ls };
        let leaf = both_empty
            || kind == 3
            || (ls != 0 && rs != 0 && ls != rs)
            || (kind == 1 && !path.is_empty() && schema.atomic_map(spath))
            || (kind == 2 && schema.list_type(spath) == ListType::Atomic);
        if leaf {
            if path.is_empty() {
                return Ok(());
            }
            match (l, r) {
                (None, Some(_)) => c.added.insert(path.clone()),
                (Some(_), None) => c.removed.insert(path.clone()),
                (Some(a), Some(b)) if a != b => c.modified.insert(path.clone()),
                _ => {}
            }
            return Ok(());
        }
        if kind == 1 {
            let empty = Map::new();
            let lm = l.and_then(Value::as_object).unwrap_or(&empty);
            let rm = r.and_then(Value::as_object).unwrap_or(&empty);
            let keys: BTreeSet<&String> = lm.keys().chain(rm.keys()).collect();
            for k in keys {
                path.push(field(k));
                walk(
                    lm.get(k),
                    rm.get(k),
                    schema,
                    path,
                    &format!("{spath}.{k}"),
                    false,
                    c,
                )?;
                path.pop();
            }
            if !path.is_empty() && (is_item || schema.free_map(spath)) {
                record_whole(l, r, path, c);
            }
        } else {
            let lt = schema.list_type(spath);
            let none: Vec<Value> = Vec::new();
            let la = l.and_then(Value::as_array).unwrap_or(&none);
            let ra = r.and_then(Value::as_array).unwrap_or(&none);
            let li: BTreeMap<Pe, &Value> =
                index_items(&lt, la, spath, false)?.into_iter().collect();
            let ri: BTreeMap<Pe, &Value> =
                index_items(&lt, ra, spath, false)?.into_iter().collect();
            let pes: BTreeSet<&Pe> = li.keys().chain(ri.keys()).collect();
            for pe in pes {
                path.push(pe.clone());
                let (a, b) = (li.get(pe).copied(), ri.get(pe).copied());
                if lt == ListType::Set {
                    record_whole(a, b, path, c);
                } else {
                    walk(a, b, schema, path, spath, true, c)?;
                }
                path.pop();
            }
            record_whole(l, r, path, c);
        }
        Ok(())
    }
    fn record_whole(l: Option<&Value>, r: Option<&Value>, path: &Path, c: &mut Comparison) {
        match (l, r) {
            (None, Some(_)) => c.added.insert(path.clone()),
            (Some(_), None) => c.removed.insert(path.clone()),
            _ => {}
        }
    }
    let mut c = Comparison::default();
    walk(
        Some(old),
        Some(new),
        schema,
        &mut Vec::new(),
        "",
        false,
        &mut c,
    )?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(s: &FieldSet) -> Vec<String> {
        s.iter().map(|p| path_string(p)).collect()
    }

    #[test]
    fn service_ports_are_keyed_by_port_and_protocol() {
        let schema = Schema::builtin("Service");
        let set = to_set(
            &json!({"spec": {"ports": [{"port": 80, "name": "http"}], "selector": {"app": "x"}}}),
            &schema,
        )
        .unwrap();
        assert_eq!(
            paths(&set),
            vec![
                r#".spec.ports[port=80,protocol="TCP"]"#,
                r#".spec.ports[port=80,protocol="TCP"].name"#,
                r#".spec.ports[port=80,protocol="TCP"].port"#,
                ".spec.selector",
            ]
        );
        assert_eq!(
            set.to_fields_v1(),
            json!({"f:spec": {"f:ports": {r#"k:{"port":80,"protocol":"TCP"}"#: {".": {}, "f:name": {}, "f:port": {}}}, "f:selector": {}}})
        );
    }

    #[test]
    fn fields_v1_round_trips() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}, "f:finalizers": {"v:\"x\"": {}}}, "f:spec": {"f:type": {}}});
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.contains(&[field("metadata"), field("labels")]));
        assert!(FieldSet::from_fields_v1(&json!({"x:y": {}})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    }

    #[test]
    fn duplicate_and_keyless_elements_are_errors() {
        let schema = Schema::builtin("Pod");
        let dup = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
        assert!(to_set(&dup, &schema)
            .unwrap_err()
            .contains("duplicate entries"));
        let keyless = json!({"spec": {"containers": [{"image": "x"}]}});
        assert!(to_set(&keyless, &schema)
            .unwrap_err()
            .contains("omits key field \"name\""));
    }

    #[test]
    fn compare_records_leaves_and_whole_elements() {
        let schema = Schema::builtin("Service");
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let new = json!({"metadata": {"labels": {"a": "2"}, "annotations": {"n": "v"}}, "spec": {"ports": [{"port": 81, "protocol": "TCP"}]}});
        let c = compare(&old, &new, &schema).unwrap();
        assert_eq!(paths(&c.modified), vec![".metadata.labels.a"]);
        assert_eq!(
            paths(&c.added),
            vec![
                ".metadata.annotations",
                ".metadata.annotations.n",
                r#".spec.ports[port=81,protocol="TCP"]"#,
                r#".spec.ports[port=81,protocol="TCP"].port"#,
                r#".spec.ports[port=81,protocol="TCP"].protocol"#,
            ]
        );
        assert_eq!(
            paths(&c.removed),
            vec![
                r#".spec.ports[port=80,protocol="TCP"]"#,
                r#".spec.ports[port=80,protocol="TCP"].port"#,
                r#".spec.ports[port=80,protocol="TCP"].protocol"#,
                ".spec.type",
            ]
        );
        assert!(compare(&new, &new, &schema).unwrap().is_same());
    }

    #[test]
    fn merge_keeps_live_elements_and_replaces_atomic_values() {
        let schema = Schema::builtin("Service");
        let live = json!({"spec": {"selector": {"a": "1", "b": "2"}, "ports": [{"port": 80, "protocol": "TCP", "name": "x"}, {"port": 90, "protocol": "TCP"}]}});
        let config = json!({"spec": {"selector": {"c": "3"}, "ports": [{"port": 91}, {"port": 80, "targetPort": 8080}], "type": null}});
        let out = merge(&live, &config, &schema).unwrap();
        assert_eq!(out["spec"]["selector"], json!({"c": "3"}));
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 91}, {"port": 80, "protocol": "TCP", "name": "x", "targetPort": 8080}, {"port": 90, "protocol": "TCP"}])
        );
        assert!(out["spec"].get("type").is_none());
    }

    #[test]
    fn merged_order_follows_the_configuration_for_shared_elements() {
        let schema = Schema::builtin("Node");
        let live = json!({"spec": {"podCIDRs": ["a", "b", "c"]}});
        let out = merge(
            &live,
            &json!({"spec": {"podCIDRs": ["c", "a", "d"]}}),
            &schema,
        )
        .unwrap();
        assert_eq!(out["spec"]["podCIDRs"], json!(["b", "c", "a", "d"]));
    }

    #[test]
    fn remove_paths_drops_fields_and_elements() {
        let schema = Schema::builtin("Service");
        let mut v = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
        let set: FieldSet = [
            vec![field("metadata"), field("labels"), field("b")],
            vec![
                field("spec"),
                field("ports"),
                r#"k:{"port":81,"protocol":"TCP"}"#.to_string(),
            ],
            vec![
                field("spec"),
                field("ports"),
                r#"k:{"port":81,"protocol":"TCP"}"#.to_string(),
                field("port"),
            ],
        ]
        .into_iter()
        .collect();
        remove_paths(&mut v, &set, &schema);
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}})
        );
    }

    #[test]
    fn custom_schema_markers() {
        let schema = Schema::custom(
            "Widget",
            Some(
                json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"], "items": {"type": "object"}},
                    "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                    "sel": {"type": "object", "x-kubernetes-map-type": "atomic"},
                    "plain": {"type": "array", "items": {"type": "string"}}
                }}}}),
            ),
        );
        assert_eq!(
            schema.list_type(".spec.items"),
            ListType::Map(vec!["id".into()])
        );
        assert_eq!(schema.list_type(".spec.tags"), ListType::Set);
        assert_eq!(schema.list_type(".spec.plain"), ListType::Atomic);
        assert!(schema.atomic_map(".spec.sel"));
        assert_eq!(schema.list_type(".metadata.finalizers"), ListType::Set);
    }
}
