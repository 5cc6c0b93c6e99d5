//! An opt-in, in-memory request audit: one [`AuditRecord`] per resource request, with the
//! request mapped to its RBAC attributes the way kube-apiserver's request-info resolver does.
//!
//! The server authenticates nobody, so the identity of a record is whatever the client sent:
//! its `User-Agent` and the bearer token of its kubeconfig (`users[].user.token`). Tests that
//! run several clients against one server give each a distinct token to tell their requests
//! apart.

use std::sync::Mutex;

use http::{HeaderMap, Method};

/// One audited resource request, in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuditRecord {
    /// The bearer token sent in `Authorization: Bearer <token>`, if any.
    pub token: Option<String>,
    /// The `User-Agent` header, if any.
    pub user_agent: Option<String>,
    /// The RBAC verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection` (see [`rbac_verb`]).
    pub verb: String,
    /// API group (`""` for core).
    pub api_group: String,
    /// Plural resource name (`services`).
    pub resource: String,
    /// Subresource (`status`), if any.
    pub subresource: Option<String>,
    /// Namespace of the request path, if any.
    pub namespace: Option<String>,
    /// Object name of the request path, if any.
    pub name: Option<String>,
    /// HTTP status code of the response.
    pub code: u16,
}

/// The RBAC verb of a resource request, as kube-apiserver derives it: GET on an object → `get`,
/// on a collection → `list`, with `?watch=true` or a `/watch/` path → `watch`; POST → `create`;
/// PUT → `update`; PATCH → `patch`; DELETE on an object → `delete`, on a collection →
/// `deletecollection`. Other methods map to their lower-cased name.
pub fn rbac_verb(method: &Method, has_name: bool, is_watch: bool) -> String {
    let verb = match *method {
        Method::GET | Method::HEAD if is_watch => "watch",
        Method::GET | Method::HEAD if has_name => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if has_name => "delete",
        Method::DELETE => "deletecollection",
        ref other => return other.as_str().to_ascii_lowercase(),
    };
    verb.to_string()
}

/// The RBAC attributes of a request path (without identity and response code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// Resolves a request like kube-apiserver's `RequestInfoFactory`: `None` for non-resource
/// paths (`/version`, `/api`, `/apis/<group>/<version>`, `/metrics`, …).
pub(crate) fn request_info(method: &Method, path: &str, watch_param: bool) -> Option<RequestInfo> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (watch_path, mut rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    if rest.is_empty() {
        return None;
    }
    let mut namespace = None;
    if rest[0] == "namespaces" && rest.len() >= 2 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest = &rest[2..];
        }
    }
    let resource = rest[0].to_string();
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    let verb = if watch_path {
        "watch".to_string()
    } else {
        rbac_verb(method, name.is_some(), watch_param && name.is_none())
    };
    Some(RequestInfo {
        verb,
        api_group: group.to_string(),
        resource,
        subresource,
        namespace,
        name,
    })
}

/// The bearer token of an `Authorization` header, if it carries one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// The `User-Agent` header, if present and valid UTF-8.
pub(crate) fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The audit log: off until [`AuditLog::enable`] is called.
#[derive(Default)]
pub(crate) struct AuditLog {
    records: Mutex<Option<Vec<AuditRecord>>>,
}

impl AuditLog {
    /// Start recording (keeps what was recorded so far if already on).
    pub fn enable(&self) {
        let mut g = self.records.lock().unwrap_or_else(|p| p.into_inner());
        g.get_or_insert_with(Vec::new);
    }

    /// Whether recording is on (lets the caller skip building a record).
    pub fn enabled(&self) -> bool {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Append a record when recording is on.
    pub fn record(&self, rec: AuditRecord) {
        if let Some(v) = self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            v.push(rec);
        }
    }

    /// Everything recorded so far, in arrival order (empty when recording is off).
    pub fn snapshot(&self) -> Vec<AuditRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_the_request_info_resolver() {
        assert_eq!(rbac_verb(&Method::GET, true, false), "get");
        assert_eq!(rbac_verb(&Method::GET, false, false), "list");
        assert_eq!(rbac_verb(&Method::GET, false, true), "watch");
        assert_eq!(rbac_verb(&Method::POST, false, false), "create");
        assert_eq!(rbac_verb(&Method::PUT, true, false), "update");
        assert_eq!(rbac_verb(&Method::PATCH, true, false), "patch");
        assert_eq!(rbac_verb(&Method::DELETE, true, false), "delete");
        assert_eq!(rbac_verb(&Method::DELETE, false, false), "deletecollection");
    }

    #[test]
    fn paths_resolve_like_upstream() {
        let i =
            request_info(&Method::GET, "/api/v1/namespaces/a/services", true).expect("resource");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str()),
            ("watch", "services")
        );
        assert_eq!(i.namespace.as_deref(), Some("a"));
        let i = request_info(
            &Method::PUT,
            "/apis/svcnet.io/v1alpha1/loadbalancerippools/p/status",
            false,
        )
        .expect("resource");
        assert_eq!(i.api_group, "svcnet.io");
        assert_eq!(i.name.as_deref(), Some("p"));
        assert_eq!(i.subresource.as_deref(), Some("status"));
        assert_eq!(i.verb, "update");
        let i = request_info(&Method::GET, "/api/v1/namespaces/a", false).expect("resource");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str()),
            ("get", "namespaces")
        );
        assert_eq!(i.name.as_deref(), Some("a"));
        let i =
            request_info(&Method::PUT, "/api/v1/namespaces/a/finalize", false).expect("resource");
        assert_eq!(i.subresource.as_deref(), Some("finalize"));
        let i =
            request_info(&Method::DELETE, "/api/v1/namespaces/a/pods", false).expect("resource");
        assert_eq!(i.verb, "deletecollection");
        let i = request_info(&Method::GET, "/api/v1/watch/pods", false).expect("resource");
        assert_eq!(i.verb, "watch");
        assert_eq!(
            request_info(&Method::GET, "/apis/svcnet.io/v1alpha1", false),
            None
        );
        assert_eq!(request_info(&Method::GET, "/version", false), None);
    }

    #[test]
    fn bearer_tokens_are_extracted() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h).as_deref(), Some("abc"));
        h.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn records_only_when_enabled() {
        let log = AuditLog::default();
        let rec = AuditRecord {
            token: None,
            user_agent: None,
            verb: "get".into(),
            api_group: String::new(),
            resource: "pods".into(),
            subresource: None,
            namespace: Some("default".into()),
            name: Some("p".into()),
            code: 200,
        };
        log.record(rec.clone());
        assert!(log.snapshot().is_empty());
        log.enable();
        log.record(rec.clone());
        assert_eq!(log.snapshot(), vec![rec]);
    }
}
