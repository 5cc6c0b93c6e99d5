//! HTTP routing and the read verbs (get, list, watch) plus dispatch of the write verbs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::apply;
use super::audit;
use super::defaults::Sub;
use super::discovery;
use super::field_validation::WriteCtx;
use super::field_validation::{self, Source};
use super::managed_fields::{self, Manager};
use super::ops::{self, DeleteOptions};
use super::patch::PatchType;
use super::resources::ResourceInfo;
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiError, ApiResult};
use super::store::Store;
use super::table;
use super::watch::{self, present, WatchParams};
use super::ServerConfig;

mod list;

use list::{list, list_body};

/// State shared by all requests.
pub(crate) struct Shared {
    pub store: Arc<Store>,
    pub config: ServerConfig,
    pub addr: std::net::SocketAddr,
    pub metrics: super::metrics::Metrics,
    pub audit: Arc<audit::AuditLog>,
}

/// Largest accepted request body.
const MAX_BODY: usize = 64 << 20;

/// The single entry point: every request lands here and is routed by path.
pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("failed to read the request body: {e}"))
                .into_response()
        }
    };
    let query: HashMap<String, String> = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    tracing::debug!(method = %parts.method, %path, "request");
    let resp = match route(&shared, &parts.method, &path, &parts.headers, &query, body) {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    if shared.audit.enabled() {
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        if let Some(info) = audit::request_info(&parts.method, &path, watch) {
            shared.audit.record(audit::AuditRecord {
                token: audit::bearer_token(&parts.headers),
                user_agent: audit::user_agent(&parts.headers),
                verb: info.verb,
                api_group: info.api_group,
                resource: info.resource,
                subresource: info.subresource,
                namespace: info.namespace,
                name: info.name,
                code: resp.status().as_u16(),
            });
        }
    }
    shared
        .metrics
        .observe(parts.method.as_str(), resp.status().as_u16());
    resp
}

fn json_response(code: u16, body: Bytes) -> Response {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(crate) fn json_value(code: u16, v: &Value) -> Response {
    json_response(code, Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
}

/// A resource request after path parsing.
struct Target {
    info: Arc<ResourceInfo>,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Bytes,
) -> ApiResult<Response> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let registry = shared.store.lock().registry.clone();
    match segs.as_slice() {
        ["version"] => return Ok(json_value(200, &discovery::version())),
        ["metrics"] => {
            return Ok(Response::builder()
                .status(200)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(Body::from(shared.metrics.render(&shared.store)))
                .unwrap_or_else(|_| Response::new(Body::empty())))
        }
        ["healthz"] | ["livez"] | ["readyz"] => {
            return Ok(Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "text/plain")
                .body(Body::from("ok"))
                .unwrap_or_else(|_| Response::new(Body::empty())))
        }
        ["api"] => return Ok(json_value(200, &discovery::api_versions(&shared.addr))),
        ["openapi", "v3"] => return Ok(json_value(200, &discovery::openapi_v3_root(&registry))),
        ["openapi", "v3", gv @ ..] => {
            return discovery::openapi_v3_group_version(&registry, &gv.join("/"))
                .map(|v| json_value(200, &v))
                .ok_or_else(ApiError::no_route)
        }
        ["apis"] => return Ok(json_value(200, &discovery::api_groups(&registry))),
        ["api", "v1"] => {
            return Ok(json_value(
                200,
                &discovery::resource_list(&registry, "", "v1"),
            ))
        }
        ["apis", group] => {
            return discovery::api_group(&registry, group)
                .map(|v| json_value(200, &v))
                .ok_or_else(ApiError::no_route)
        }
        ["apis", group, version] => {
            if !registry
                .all()
                .iter()
                .any(|r| r.group == *group && r.version == *version)
            {
                return Err(ApiError::no_route());
            }
            return Ok(json_value(
                200,
                &discovery::resource_list(&registry, group, version),
            ));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route()),
    };
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let target = parse_target(&registry, group, version, rest).ok_or_else(ApiError::no_route)?;
    let is_watch =
        watch_path || matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    dispatch(shared, method, headers, query, body, target, is_watch)
}

fn parse_target(
    reg: &super::resources::Registry,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Option<Target> {
    let s = |x: &&str| x.to_string();
    // namespaces/{ns}/{plural}[/{name}[/{sub}]]
    if let ["namespaces", ns, plural, tail @ ..] = rest {
        let is_ns_sub =
            group.is_empty() && tail.is_empty() && matches!(*plural, "status" | "finalize");
        if !is_ns_sub {
            let info = reg.find(group, version, plural)?;
            if !info.namespaced || tail.len() > 2 {
                return None;
            }
            return Some(Target {
                info,
                ns: Some(ns.to_string()),
                name: tail.first().map(s),
                sub: tail.get(1).map(s),
            });
        }
    }
    let (plural, tail) = rest.split_first()?;
    let info = reg.find(group, version, plural)?;
    if tail.len() > 2 {
        return None;
    }
    Some(Target {
        info,
        ns: None,
        name: tail.first().map(s),
        sub: tail.get(1).map(s),
    })
}

fn dry_run(query: &HashMap<String, String>) -> bool {
    query.get("dryRun").is_some_and(|v| !v.is_empty())
}

fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if ct.contains("yaml") {
        return serde_yaml::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")));
    }
    if ct.contains("protobuf") || ct.contains("cbor") {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {ct:?})"
        )));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn selectors(info: &ResourceInfo, query: &HashMap<String, String>) -> ApiResult<Selectors> {
    Ok(Selectors {
        labels: LabelSelector::parse(
            query
                .get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?,
        fields: FieldSelector::parse(
            query
                .get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
            &info.group,
            &info.plural,
        )?,
    })
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn dispatch(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Bytes,
    t: Target,
    is_watch: bool,
) -> ApiResult<Response> {
    let info = t.info.clone();
    let ns = t.ns.as_deref();
    let store = &shared.store;
    let sub = match t.sub.as_deref() {
        None => Sub::Main,
        Some("status") if info.status => Sub::Status,
        Some(_) => return Err(ApiError::no_route()),
    };
    let written = |w: ApiResult<ops::Written>, ctx: WriteCtx| -> ApiResult<Response> {
        store.gc_notify.notify_one();
        let w = w?;
        let mut resp = json_response(w.code, present(&info, w.object));
        for text in &ctx.warnings {
            if let Ok(v) = http::HeaderValue::from_str(&field_validation::warning_header(text)) {
                resp.headers_mut().append(http::header::WARNING, v);
            }
        }
        Ok(resp)
    };
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, None) if is_watch => {
            let sel = selectors(&info, query)?;
            let since = match query.get("resourceVersion").map(String::as_str) {
                None | Some("") => None,
                Some(rv) => Some(parse_rv(rv)?),
            };
            let timeout = query
                .get("timeoutSeconds")
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(shared.config.default_watch_timeout, Duration::from_secs);
            let params = WatchParams {
                since,
                bookmarks: matches!(
                    query.get("allowWatchBookmarks").map(String::as_str),
                    Some("true" | "1")
                ),
                send_initial_events: matches!(
                    query.get("sendInitialEvents").map(String::as_str),
                    Some("true" | "1")
                ),
                timeout,
                bookmark_interval: shared.config.bookmark_interval,
            };
            Ok(watch::start(store.clone(), info, t.ns.clone(), sel, params))
        }
        (Method::GET, None) => list(store, &info, ns, query, table_accept(headers)),
        (Method::GET, Some(name)) => {
            let key = super::store::object_key(if info.namespaced { ns } else { None }, name);
            let (obj, rv) = {
                let inner = store.lock();
                (inner.get(&info.key, &key), inner.rv())
            };
            match obj {
                Some(b) if table_accept(headers) => {
                    let v: Value =
                        serde_json::from_slice(&present(&info, b)).unwrap_or(Value::Null);
                    let include = query
                        .get("includeObject")
                        .map(String::as_str)
                        .unwrap_or_default();
                    Ok(json_value(
                        200,
                        &table::render(&info, &[v], rv, None, include),
                    ))
                }
                Some(b) => Ok(json_response(200, present(&info, b))),
                None => Err(ApiError::not_found(&info.group, &info.plural, name)),
            }
        }
        (Method::POST, None) => {
            let mut ctx = write_ctx(headers, query)?;
            let mut obj = decode_body(headers, &body)?;
            let dups = field_validation::duplicate_fields(&body);
            field_validation::check(&mut ctx, &info, &mut obj, &dups, Source::Body)?;
            let w = ops::create(&mut store.lock(), &info, ns, obj, dry_run(query), &mut ctx);
            written(w, ctx)
        }
        (Method::PUT, Some(name)) => {
            let mut ctx = write_ctx(headers, query)?;
            let mut obj = decode_body(headers, &body)?;
            let dups = field_validation::duplicate_fields(&body);
            field_validation::check(&mut ctx, &info, &mut obj, &dups, Source::Body)?;
            let w = ops::update(
                &mut store.lock(),
                &info,
                ns,
                name,
                obj,
                sub,
                dry_run(query),
                &mut ctx,
            );
            written(w, ctx)
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let mut ctx = write_ctx(headers, query)?;
            if apply::is_apply(ct) {
                let w = apply::apply(
                    &mut store.lock(),
                    &info,
                    ns,
                    name,
                    &body,
                    sub,
                    query,
                    &mut ctx,
                );
                return written(w, ctx);
            }
            apply::check_not_forced(query)?;
            ctx.patch_duplicates = field_validation::duplicate_fields(&body);
            let ty = PatchType::from_content_type(ct)?;
            let w = ops::patch(
                &mut store.lock(),
                &info,
                ns,
                name,
                ty,
                &body,
                sub,
                dry_run(query),
                &mut ctx,
            );
            written(w, ctx)
        }
        (Method::DELETE, Some(name)) if sub == Sub::Main => {
            let opts = delete_options(query, &body)?;
            written(
                ops::delete(&mut store.lock(), &info, ns, name, &opts),
                WriteCtx::internal(),
            )
        }
        (Method::DELETE, None) => delete_collection(shared, &info, ns, query, &body),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The manager and validation mode of a write request.
fn write_ctx(headers: &HeaderMap, query: &HashMap<String, String>) -> ApiResult<WriteCtx> {
    let user_agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let name =
        managed_fields::manager_name(query.get("fieldManager").map(String::as_str), user_agent)?;
    Ok(WriteCtx {
        manager: Some(Manager {
            name,
            applied: None,
        }),
        validation: field_validation::Mode::parse(
            query.get("fieldValidation").map(String::as_str),
        )?,
        warnings: Vec::new(),
        patch_duplicates: Vec::new(),
    })
}

fn table_accept(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(table::wants_table)
}

fn delete_options(query: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(g) = query.get("gracePeriodSeconds") {
        opts.grace_period_seconds = Some(
            g.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))?,
        );
    }
    if let Some(p) = query.get("propagationPolicy") {
        opts.propagation_policy = Some(p.clone());
    }
    if let Some(o) = query.get("orphanDependents") {
        opts.orphan_dependents = Some(o == "true");
    }
    if let Some(d) = query.get("dryRun") {
        opts.dry_run = vec![d.clone()];
    }
    Ok(opts)
}

fn delete_collection(
    shared: &Arc<Shared>,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    body: &[u8],
) -> ApiResult<Response> {
    let sel = selectors(info, query)?;
    let opts = delete_options(query, body)?;
    let candidates = shared.store.lock().range(&info.key, ns, None, None);
    let mut items = Vec::new();
    for (key, bytes) in candidates {
        if !sel.matches_bytes(&bytes) {
            continue;
        }
        let (ons, name) = match key.split_once('/') {
            Some((n, name)) if info.namespaced => (Some(n), name),
            _ => (None, &*key),
        };
        let r = ops::delete(&mut shared.store.lock(), info, ons, name, &opts);
        match r {
            Ok(w) => items.push(present(info, w.object)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    shared.store.gc_notify.notify_one();
    let rv = shared.store.lock().rv();
    Ok(json_response(200, list_body(info, rv, None, &items)))
}
