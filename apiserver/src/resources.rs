//! The resource registry: which group/version/resources the server serves, built-in and from CRDs.

use std::sync::Arc;

use serde_json::Value;

use super::status::{ApiError, FieldError};

/// Storage key of a resource: `"<group>/<plural>"` (`"/pods"` for core). All served versions of a
/// resource share one table.
pub(crate) type ResKey = Arc<str>;

/// How a resource maintains `metadata.generation` (each kind's registry strategy upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Generation {
    /// Never set (Services, Namespaces, Nodes, Endpoints, ConfigMaps, Leases, Events, ...).
    None,
    /// 1 on create, bumped when anything outside metadata and status changes (Pods, CRDs and
    /// custom resources).
    Spec,
    /// As `Spec`, and label changes bump it too (EndpointSlices: consumers watch the
    /// generation to notice a slice moving between Services).
    SpecAndLabels,
}

/// What a write to the `/status` subresource may change (each kind's status strategy upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatusWrite {
    /// Only `.spec` is reset to the stored value: labels and annotations sent to `/status` are
    /// kept (Services, Namespaces, Nodes).
    KeepsMetadata,
    /// As `KeepsMetadata`, and `ownerReferences` are reset too (Pods: old kubelets corrupted them
    /// through `/status`, which broke garbage collection).
    KeepsMetadataButOwners,
    /// `.spec`, labels, annotations and ownerReferences are reset (CustomResourceDefinitions).
    SpecAndObjectMeta,
    /// As `SpecAndObjectMeta`, and finalizers are reset too (upstream's
    /// `ResetObjectMetaForStatus`: ServiceCIDRs).
    SpecAndMetaForStatus,
    /// Everything but `.status` comes from the stored object (custom resources).
    StatusOnly,
}

/// Everything the server knows about one served group/version/resource.
#[derive(Clone, Debug)]
pub(crate) struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Serves a `/status` subresource; main-resource writes never change `.status`.
    pub status: bool,
    /// How `metadata.generation` is maintained.
    pub generation: Generation,
    /// What a write to `/status` may change besides `.status`.
    pub status_write: StatusWrite,
    /// A PUT to a missing object creates it (upstream `AllowCreateOnUpdate`).
    pub create_on_update: bool,
    /// Strategic merge patch is accepted (built-in types only, as upstream).
    pub strategic: bool,
    pub short_names: Vec<&'static str>,
    /// Name of the CRD that defines this resource.
    pub crd: Option<String>,
    pub key: ResKey,
}

impl ResourceInfo {
    #[allow(clippy::too_many_arguments)]
    fn builtin(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
        generation: Generation,
        create_on_update: bool,
        short_names: &[&'static str],
    ) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            status,
            generation,
            status_write: match kind {
                "Pod" => StatusWrite::KeepsMetadataButOwners,
                "CustomResourceDefinition" => StatusWrite::SpecAndObjectMeta,
                "ServiceCIDR" => StatusWrite::SpecAndMetaForStatus,
                _ => StatusWrite::KeepsMetadata,
            },
            create_on_update,
            strategic: true,
            short_names: short_names.to_vec(),
            crd: None,
            key: format!("{group}/{plural}").into(),
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList` etc.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// All served resources.
#[derive(Clone, Debug)]
pub(crate) struct Registry {
    resources: Vec<Arc<ResourceInfo>>,
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Self {
        let b = ResourceInfo::builtin;
        let resources = vec![
            b(
                "",
                "v1",
                "Namespace",
                "namespaces",
                false,
                true,
                Generation::None,
                false,
                &["ns"],
            ),
            b(
                "",
                "v1",
                "Node",
                "nodes",
                false,
                true,
                Generation::None,
                false,
                &["no"],
            ),
            b(
                "",
                "v1",
                "Pod",
                "pods",
                true,
                true,
                Generation::Spec,
                false,
                &["po"],
            ),
            b(
                "",
                "v1",
                "Service",
                "services",
                true,
                true,
                Generation::None,
                true,
                &["svc"],
            ),
            b(
                "",
                "v1",
                "Endpoints",
                "endpoints",
                true,
                false,
                Generation::None,
                true,
                &["ep"],
            ),
            b(
                "",
                "v1",
                "Event",
                "events",
                true,
                false,
                Generation::None,
                true,
                &["ev"],
            ),
            b(
                "",
                "v1",
                "ConfigMap",
                "configmaps",
                true,
                false,
                Generation::None,
                false,
                &["cm"],
            ),
            b(
                "",
                "v1",
                "ServiceAccount",
                "serviceaccounts",
                true,
                false,
                Generation::None,
                false,
                &["sa"],
            ),
            b(
                "discovery.k8s.io",
                "v1",
                "EndpointSlice",
                "endpointslices",
                true,
                false,
                Generation::SpecAndLabels,
                true,
                &[],
            ),
            b(
                "coordination.k8s.io",
                "v1",
                "Lease",
                "leases",
                true,
                false,
                Generation::None,
                true,
                &[],
            ),
            b(
                "events.k8s.io",
                "v1",
                "Event",
                "events",
                true,
                false,
                Generation::None,
                true,
                &["ev"],
            ),
            b(
                "networking.k8s.io",
                "v1",
                "ServiceCIDR",
                "servicecidrs",
                false,
                true,
                Generation::None,
                false,
                &[],
            ),
            b(
                "networking.k8s.io",
                "v1",
                "IPAddress",
                "ipaddresses",
                false,
                false,
                Generation::None,
                false,
                &[],
            ),
            b(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
                Generation::Spec,
                false,
                &["crd", "crds"],
            ),
        ];
        Self {
            resources: resources.into_iter().map(Arc::new).collect(),
        }
    }

    /// The resource served at `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    /// Any served version of `group` with this kind (used to resolve ownerReferences).
    pub fn find_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// Any served version of the table `key`.
    pub fn find_key(&self, key: &str) -> Option<Arc<ResourceInfo>> {
        self.resources.iter().find(|r| &*r.key == key).cloned()
    }

    /// All served resources.
    pub fn all(&self) -> &[Arc<ResourceInfo>] {
        &self.resources
    }

    /// Groups in registration order, each with its versions (first = preferred).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Serve the kinds of a CRD (replacing what it served before).
    pub fn install_crd(&mut self, crd_name: &str, infos: Vec<ResourceInfo>) {
        self.remove_crd(crd_name);
        self.resources.extend(infos.into_iter().map(Arc::new));
    }

    /// Stop serving the kinds of a CRD.
    pub fn remove_crd(&mut self, crd_name: &str) {
        self.resources
            .retain(|r| r.crd.as_deref() != Some(crd_name));
    }
}

/// Validate a CRD object and derive the resources it serves.
pub(crate) fn crd_resources(crd: &Value) -> Result<Vec<ResourceInfo>, Vec<FieldError>> {
    let mut errs = Vec::new();
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if kind.is_empty() {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            Value::String(name.into()),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    let scope = spec
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if scope != "Namespaced" && scope != "Cluster" {
        errs.push(FieldError::not_supported(
            "spec.scope",
            Value::String(scope.into()),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::required(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    let storage_count = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool).unwrap_or(false))
        .count();
    if !versions.is_empty() && storage_count != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            Value::Null,
            "must have exactly one version marked as storage version",
        ));
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let singular = spec
        .pointer("/names/singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let key: ResKey = format!("{group}/{plural}").into();
    let mut out = Vec::new();
    // Storage version first, so discovery lists it as preferred.
    let mut ordered = versions.clone();
    ordered.sort_by_key(|v| !v.get("storage").and_then(Value::as_bool).unwrap_or(false));
    for v in ordered {
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        let version = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let status = v.pointer("/subresources/status").is_some();
        out.push(ResourceInfo {
            group: group.clone(),
            version,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: singular.clone(),
            namespaced: scope == "Namespaced",
            status,
            generation: Generation::Spec,
            status_write: StatusWrite::StatusOnly,
            create_on_update: false,
            strategic: false,
            short_names: Vec::new(),
            crd: Some(name.to_string()),
            key: key.clone(),
        });
    }
    Ok(out)
}

/// `ApiError` for a CRD whose names clash with something already served.
pub(crate) fn crd_conflict(
    reg: &Registry,
    infos: &[ResourceInfo],
    crd_name: &str,
) -> Option<ApiError> {
    for info in infos {
        if let Some(existing) = reg.find(&info.group, &info.version, &info.plural) {
            if existing.crd.as_deref() != Some(crd_name) {
                return Some(ApiError::invalid(
                    "apiextensions.k8s.io",
                    "CustomResourceDefinition",
                    crd_name,
                    &[FieldError::invalid(
                        "spec.names.plural",
                        Value::String(info.plural.clone()),
                        "is already in use",
                    )],
                ));
            }
        }
    }
    None
}
