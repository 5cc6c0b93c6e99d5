//! Server-side apply, `metadata.managedFields` and `fieldValidation`.
//!
//! Written against the harness only, so it runs unchanged on the embedded server (default) and
//! on etcd + kube-apiserver (`KUBEBUILDER_ASSETS`). Assertions are on the documented contract
//! (who owns which field, what a conflict names, what is removed), not on details where
//! kube-apiserver versions differ; where the 1.24 control plane differs from current upstream,
//! the test is gated on the server version and says why.
//!
//! One file (one test binary) on purpose: the harness starts one control plane per test binary
//! and a real kube-apiserver takes 10–15 s to start.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use serde_json::{json, Value};
use testkit::harness::{self, TestEnv};

const T: Duration = Duration::from_secs(20);

/// A raw request's (code, headers, JSON body).
async fn raw(client: &Client, req: http::Request<Vec<u8>>) -> (u16, http::HeaderMap, Value) {
    let resp = client
        .send(req.map(kube::client::Body::from))
        .await
        .expect("transport");
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("body")
        .to_bytes();
    (
        code,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// `PATCH` with an apply body (JSON is YAML) to `path` plus `query`.
async fn apply_raw(client: &Client, path: &str, query: &str, body: Value) -> (u16, Value) {
    let req = http::Request::patch(format!("{path}?{query}"))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let (code, _, body) = raw(client, req).await;
    (code, body)
}

fn cm_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{name}")
}

/// An applied ConfigMap; empty `labels` are left out (an empty map is a field of its own that
/// the applier would own, and kube-apiserver does not store it).
fn cm_config(name: &str, labels: Value, data: Value) -> Value {
    let mut meta = json!({"name": name});
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        meta["labels"] = labels;
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})
}

/// The managedFields entry of `manager` with `operation`, if any.
fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj.pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

/// Does `manager`'s entry with `operation` own the field at this `fieldsV1` pointer?
fn owns(obj: &Value, manager: &str, operation: &str, pointer: &str) -> bool {
    entry(obj, manager, operation)
        .and_then(|e| e["fieldsV1"].pointer(pointer))
        .is_some()
}

async fn get_json(client: &Client, path: &str) -> Value {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let (code, _, body) = raw(client, req).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

#[tokio::test]
async fn apply_creates_and_reapply_is_a_no_op() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-create").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let config = cm_config("cfg", json!({"app": "a"}), json!({"k": "v"}));
    let (code, created) = apply_raw(&c, &path, "fieldManager=mgr-a", config.clone()).await;
    assert_eq!(code, 201, "apply on a missing object creates it: {created}");
    assert_eq!(created["data"]["k"], "v");
    let e = entry(&created, "mgr-a", "Apply").expect("an Apply entry for mgr-a");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    assert!(e.get("subresource").is_none());
    assert_eq!(
        e["fieldsV1"],
        json!({"f:data": {"f:k": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
    );
    assert_eq!(
        created["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the applier: {created}"
    );

    let (code, again) = apply_raw(&c, &path, "fieldManager=mgr-a", config).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "an identical apply changes nothing"
    );
    assert_eq!(
        again["metadata"]["managedFields"],
        created["metadata"]["managedFields"]
    );
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn apply_removes_fields_it_no_longer_applies() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-remove").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let (code, _) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-a",
        cm_config(
            "cfg",
            json!({"a": "1", "b": "2"}),
            json!({"x": "1", "y": "2"}),
        ),
    )
    .await;
    assert_eq!(code, 201);
    let (code, out) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-a",
        cm_config("cfg", json!({"a": "1"}), json!({"x": "1"})),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(out["data"], json!({"x": "1"}));
    assert!(!owns(&out, "mgr-a", "Apply", "/f:data/f:y"));
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn managers_share_fields_conflict_and_force() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-share").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let (code, _) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-a",
        cm_config("cfg", json!({}), json!({"shared": "s", "a-only": "a"})),
    )
    .await;
    assert_eq!(code, 201);
    // The same value applied by a second manager: no conflict, both own the field.
    let (code, shared) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-b",
        cm_config("cfg", json!({}), json!({"shared": "s"})),
    )
    .await;
    assert_eq!(code, 200, "{shared}");
    assert!(owns(&shared, "mgr-a", "Apply", "/f:data/f:shared"));
    assert!(owns(&shared, "mgr-b", "Apply", "/f:data/f:shared"));
    // mgr-a stops applying the shared field: mgr-b still owns it, so it stays.
    let (code, out) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-a",
        cm_config("cfg", json!({}), json!({"a-only": "a"})),
    )
    .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"]["shared"], "s");
    assert!(!owns(&out, "mgr-a", "Apply", "/f:data/f:shared"));

    // A different value for a field mgr-a owns is a conflict naming mgr-a and the field.
    let (code, status) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-b",
        cm_config("cfg", json!({}), json!({"shared": "s", "a-only": "b"})),
    )
    .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        r#"Apply failed with 1 conflict: conflict with "mgr-a": .data.a-only"#
    );
    let cause = &status["details"]["causes"][0];
    assert_eq!(cause["reason"], "FieldManagerConflict");
    assert_eq!(cause["message"], r#"conflict with "mgr-a""#);
    assert_eq!(cause["field"], ".data.a-only");
    let unchanged = get_json(&c, &path).await;
    assert_eq!(
        unchanged["data"]["a-only"], "a",
        "a refused apply changes nothing"
    );

    // force=true takes the field.
    let (code, forced) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-b&force=true",
        cm_config("cfg", json!({}), json!({"shared": "s", "a-only": "b"})),
    )
    .await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["data"]["a-only"], "b");
    assert!(owns(&forced, "mgr-b", "Apply", "/f:data/f:a-only"));
    assert!(!owns(&forced, "mgr-a", "Apply", "/f:data/f:a-only"));
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_force_needs_apply() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-opts").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let (code, status) = apply_raw(&c, &path, "", cm_config("cfg", json!({}), json!({}))).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("fieldManager: Required value")),
        "{status}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns.name());
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}})).unwrap(),
    )
    .await
    .unwrap();
    let req = http::Request::patch(format!("{path}?force=true"))
        .header("Content-Type", "application/merge-patch+json")
        .body(br#"{"data": {"k": "v"}}"#.to_vec())
        .unwrap();
    let (code, _, status) = raw(&c, req).await;
    assert_eq!(code, 422, "force on a merge patch: {status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("force: Forbidden")),
        "{status}"
    );
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn update_after_apply_gets_an_update_entry() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-update").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let (code, _) = apply_raw(
        &c,
        &path,
        "fieldManager=mgr-a",
        cm_config("cfg", json!({}), json!({"x": "1", "y": "1"})),
    )
    .await;
    assert_eq!(code, 201);
    // A kubectl-edit style change: a merge patch by another manager.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns.name());
    let pp = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch(
        "cfg",
        &pp,
        &Patch::Merge(json!({"data": {"x": "2", "z": "3"}})),
    )
    .await
    .unwrap();
    let out = get_json(&c, &path).await;
    let e = entry(&out, "kubectl-edit", "Update").expect("an Update entry");
    assert_eq!(e["apiVersion"], "v1");
    assert!(e["time"].is_string());
    assert!(owns(&out, "kubectl-edit", "Update", "/f:data/f:x"));
    assert!(owns(&out, "kubectl-edit", "Update", "/f:data/f:z"));
    assert!(
        !owns(&out, "kubectl-edit", "Update", "/f:data/f:y"),
        "untouched fields stay with the applier"
    );
    assert!(
        !owns(&out, "mgr-a", "Apply", "/f:data/f:x"),
        "the updater took x"
    );
    assert!(owns(&out, "mgr-a", "Apply", "/f:data/f:y"));
    // A PUT by a third manager records its own entry.
    let mut current = cms.get("cfg").await.unwrap();
    current
        .data
        .get_or_insert_with(Default::default)
        .insert("w".into(), "4".into());
    let pp = PostParams {
        field_manager: Some("replacer".into()),
        ..Default::default()
    };
    cms.replace("cfg", &pp, &current).await.unwrap();
    let out = get_json(&c, &path).await;
    assert!(owns(&out, "replacer", "Update", "/f:data/f:w"));
    assert!(owns(&out, "kubectl-edit", "Update", "/f:data/f:z"));
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn service_ports_merge_by_port_and_protocol() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-ports").await.unwrap();
    let c = env.client();
    let svcs: Api<Service> = Api::namespaced(c.clone(), ns.name());
    let cfg = |ports: Value| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": ports}})
    };
    svcs.patch(
        "web",
        &PatchParams::apply("ports-a"),
        &Patch::Apply(cfg(
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
        )),
    )
    .await
    .unwrap();
    let dns = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                     "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}});
    let out = svcs
        .patch("web", &PatchParams::apply("ports-b"), &Patch::Apply(dns))
        .await
        .unwrap();
    let ports = out.spec.unwrap().ports.unwrap();
    let mut keys: Vec<(i32, String)> = ports
        .iter()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_default()))
        .collect();
    keys.sort();
    assert_eq!(keys, vec![(53, "UDP".into()), (80, "TCP".into())]);
    let obj = get_json(
        &c,
        &format!("/api/v1/namespaces/{}/services/web", ns.name()),
    )
    .await;
    assert!(owns(
        &obj,
        "ports-a",
        "Apply",
        r#"/f:spec/f:ports/k:{"port":80,"protocol":"TCP"}/f:targetPort"#
    ));
    assert!(owns(
        &obj,
        "ports-b",
        "Apply",
        r#"/f:spec/f:ports/k:{"port":53,"protocol":"UDP"}/f:name"#
    ));
    // ports-a changing ports-b's element conflicts on that element's field.
    let e = svcs
        .patch(
            "web",
            &PatchParams::apply("ports-a"),
            &Patch::Apply(cfg(json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "domain", "port": 53, "protocol": "UDP"},
            ]))),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = e else {
        panic!("expected an API error, got {e:?}");
    };
    assert_eq!(status.code, 409);
    assert!(
        status
            .message
            .contains(r#"conflict with "ports-b": .spec.ports[port=53,protocol="UDP"].name"#),
        "{}",
        status.message
    );
    // kube-rs' forced apply takes it.
    let out = svcs
        .patch(
            "web",
            &PatchParams::apply("ports-a").force(),
            &Patch::Apply(cfg(json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "domain", "port": 53, "protocol": "UDP"},
            ]))),
        )
        .await
        .unwrap();
    let names: Vec<String> = out
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .filter_map(|p| p.name.clone())
        .collect();
    assert!(names.contains(&"domain".to_string()), "{names:?}");
    ns.cleanup(T).await.unwrap();
}

async fn discover(client: &Client, gvk: &GroupVersionKind) -> ApiResource {
    for _ in 0..100 {
        if let Ok((ar, _)) = kube::discovery::pinned_kind(client, gvk).await {
            return ar;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{gvk:?} never became discoverable");
}

#[tokio::test]
async fn apply_to_custom_resources_and_status() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-crd").await.unwrap();
    let c = env.client();
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd_name = "appliers.ssa.svcnet.io";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": crd_name},
        "spec": {
            "group": "ssa.svcnet.io",
            "scope": "Namespaced",
            "names": {"plural": "appliers", "singular": "applier", "kind": "Applier", "listKind": "ApplierList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "size": {"type": "integer"},
                        "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                                  "items": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}, "value": {"type": "string"}}}},
                    }},
                    "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
                }}},
            }],
        },
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ar = discover(&c, &GroupVersionKind::gvk("ssa.svcnet.io", "v1", "Applier")).await;
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), ns.name(), &ar);
    let cfg = |spec: Value| json!({"apiVersion": "ssa.svcnet.io/v1", "kind": "Applier", "metadata": {"name": "x"}, "spec": spec, "status": {"ready": true}});
    // The CRD's list-map-keys make `items` associative: two managers' elements merge.
    let mut created = None;
    for _ in 0..50 {
        match api
            .patch(
                "x",
                &PatchParams::apply("crd-a"),
                &Patch::Apply(cfg(
                    json!({"size": 1, "items": [{"id": "a", "value": "1"}]}),
                )),
            )
            .await
        {
            Ok(o) => {
                created = Some(o);
                break;
            }
            // A just-created CRD may take a moment to serve writes on a real apiserver.
            Err(kube::Error::Api(s)) if s.code == 404 => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("apply: {e:?}"),
        }
    }
    let created = created.expect("the custom resource was created");
    assert!(
        created.data.get("status").is_none(),
        "apply to the main resource ignores status"
    );
    let out = api
        .patch(
            "x",
            &PatchParams::apply("crd-b"),
            &Patch::Apply(json!({"apiVersion": "ssa.svcnet.io/v1", "kind": "Applier", "metadata": {"name": "x"},
                                 "spec": {"items": [{"id": "b", "value": "2"}]}})),
        )
        .await
        .unwrap();
    let ids: Vec<&str> = out.data["spec"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
    // Status through the subresource, by its own manager.
    let st = api
        .patch_status(
            "x",
            &PatchParams::apply("status-mgr"),
            &Patch::Apply(json!({"apiVersion": "ssa.svcnet.io/v1", "kind": "Applier", "metadata": {"name": "x"},
                                 "status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["ready"], true);
    assert_eq!(st.data["spec"]["size"], 1);
    let obj = serde_json::to_value(&st).unwrap();
    let e = entry(&obj, "status-mgr", "Apply").expect("a status Apply entry");
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({"f:status": {"f:ready": {}}}));
    assert!(owns(
        &obj,
        "crd-a",
        "Apply",
        r#"/f:spec/f:items/k:{"id":"a"}/f:value"#
    ));
    assert!(!owns(&obj, "crd-a", "Apply", "/f:status"));
    // crd-a dropping its element removes it; crd-b's stays.
    let out = api
        .patch(
            "x",
            &PatchParams::apply("crd-a"),
            &Patch::Apply(cfg(json!({"size": 1}))),
        )
        .await
        .unwrap();
    assert_eq!(
        out.data["spec"]["items"],
        json!([{"id": "b", "value": "2"}])
    );
    crds.delete(crd_name, &DeleteParams::default())
        .await
        .unwrap();
    harness::wait_for(
        &crds,
        crd_name,
        Duration::from_secs(60),
        |c: Option<&CustomResourceDefinition>| c.is_none(),
    )
    .await
    .unwrap();
    ns.cleanup(T).await.unwrap();
}

/// POST a Service with an unknown `spec.foo` (and optionally a repeated key) under `query`.
async fn post_svc(
    client: &Client,
    ns: &str,
    name: &str,
    query: &str,
    dup: bool,
) -> (u16, http::HeaderMap, Value) {
    let body = format!(
        r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"{}}},
            "spec": {{"foo": "bar", "ports": [{{"port": 80}}]}}}}"#,
        if dup {
            r#", "labels": {"a": "1"}, "labels": {"a": "2"}"#
        } else {
            ""
        }
    );
    let req = http::Request::post(format!("/api/v1/namespaces/{ns}/services?{query}"))
        .header("Content-Type", "application/json")
        .body(body.into_bytes())
        .unwrap();
    raw(client, req).await
}

fn warnings(h: &http::HeaderMap) -> Vec<String> {
    h.get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-validation").await.unwrap();
    let c = env.client();
    let (code, _, status) =
        post_svc(&c, ns.name(), "strict", "fieldValidation=Strict", false).await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["reason"], "BadRequest");
    // Field paths in strict decoding errors and warnings are current upstream's; the 1.24
    // alpha named only the last path element (`unknown field "foo"`).
    let full_paths = env.server_at_least(25).await;
    let (spec_foo, meta_labels) = if full_paths {
        ("spec.foo", "metadata.labels")
    } else {
        ("foo", "labels")
    };
    assert_eq!(
        status["message"],
        format!(
            r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "{spec_foo}""#
        )
    );

    let (code, headers, created) =
        post_svc(&c, ns.name(), "warn", "fieldValidation=Warn", false).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        warnings(&headers),
        vec![format!(r#"299 - "unknown field \"{spec_foo}\"""#)]
    );
    assert!(
        created["spec"].get("foo").is_none(),
        "unknown fields are dropped"
    );

    let (code, headers, created) =
        post_svc(&c, ns.name(), "ignore", "fieldValidation=Ignore", false).await;
    assert_eq!(code, 201, "{created}");
    assert!(warnings(&headers).is_empty(), "{:?}", warnings(&headers));
    assert!(created["spec"].get("foo").is_none());

    // Duplicate keys: refused under Strict, a warning under Warn (the last value wins).
    let (code, _, status) =
        post_svc(&c, ns.name(), "dup-strict", "fieldValidation=Strict", true).await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!(r#"duplicate field "{meta_labels}""#))),
        "{status}"
    );
    let (code, headers, created) =
        post_svc(&c, ns.name(), "dup-warn", "fieldValidation=Warn", true).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        warnings(&headers).contains(&format!(r#"299 - "duplicate field \"{meta_labels}\"""#)),
        "{:?}",
        warnings(&headers)
    );
    assert_eq!(created["metadata"]["labels"]["a"], "2");

    // A merge patch that adds an unknown field, under Strict.
    let req = http::Request::patch(format!(
        "/api/v1/namespaces/{}/services/warn?fieldValidation=Strict",
        ns.name()
    ))
    .header("Content-Type", "application/merge-patch+json")
    .body(br#"{"spec": {"foo": "bar"}}"#.to_vec())
    .unwrap();
    let (code, _, status) = raw(&c, req).await;
    // Upstream reports it as an invalid `patch` value (the patched object, then the error).
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!(
                r#"strict decoding error: unknown field "{spec_foo}""#
            ))),
        "{status}"
    );

    // A repeated key in a merge patch body, under Warn: a warning, the last value wins.
    let req = http::Request::patch(format!(
        "/api/v1/namespaces/{}/services/warn?fieldValidation=Warn",
        ns.name()
    ))
    .header("Content-Type", "application/merge-patch+json")
    .body(br#"{"metadata": {"labels": {"x": "1", "x": "2"}}}"#.to_vec())
    .unwrap();
    let (code, headers, patched) = raw(&c, req).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"]["labels"]["x"], "2");
    let dup = if full_paths { "metadata.labels.x" } else { "x" };
    assert_eq!(
        warnings(&headers),
        vec![format!(r#"299 - "duplicate field \"{dup}\"""#)]
    );
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn field_validation_defaults_to_warn() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-default").await.unwrap();
    let (code, headers, created) = post_svc(&env.client(), ns.name(), "plain", "", false).await;
    assert_eq!(code, 201, "{created}");
    assert!(
        created["spec"].get("foo").is_none(),
        "unknown fields are dropped"
    );
    // The creator's Update entry (no fieldManager, no User-Agent): list and element paths are
    // recorded themselves too, and defaulted fields count as the creator's.
    let e = entry(&created, "unknown", "Update").expect("an Update entry for the creator");
    let ports = &e["fieldsV1"]["f:spec"]["f:ports"];
    assert_eq!(ports["."], json!({}), "{e}");
    assert_eq!(
        ports[r#"k:{"port":80,"protocol":"TCP"}"#]["."],
        json!({}),
        "{e}"
    );
    assert!(e["fieldsV1"]["f:spec"].get("f:type").is_some(), "{e}");
    // Without the parameter the server warns (upstream's default since the feature arrived;
    // the 1.24 alpha names only the last path element).
    let spec_foo = if env.server_at_least(25).await {
        "spec.foo"
    } else {
        "foo"
    };
    assert_eq!(
        warnings(&headers),
        vec![format!(r#"299 - "unknown field \"{spec_foo}\"""#)]
    );
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn apply_refuses_undeclared_fields_and_missing_type() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-undeclared").await.unwrap();
    let c = env.client();
    let path = format!("/api/v1/namespaces/{}/services/p", ns.name());
    let cfg = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "p"},
                     "spec": {"foo": "x", "ports": [{"port": 80}]}});
    // Apply checks the configuration against the schema whatever fieldValidation says.
    for q in ["fieldManager=m", "fieldManager=m&fieldValidation=Ignore"] {
        let (code, status) = apply_raw(&c, &path, q, cfg.clone()).await;
        // kube-apiserver answers 500 InternalError; the embedded server 400 BadRequest.
        assert_eq!(code, if env.is_embedded() { 400 } else { 500 }, "{status}");
        assert_eq!(
            status["message"],
            "failed to create typed patch object (/p; /v1, Kind=Service): .spec.foo: field not declared in schema"
        );
    }
    let (code, status) = apply_raw(
        &c,
        &path,
        "fieldManager=m",
        json!({"metadata": {"name": "p"}, "spec": {}}),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(
        status["message"],
        "Incorrect version specified in apply patch. Specified patch version: , expected: v1"
    );
    let svcs: Api<Service> = Api::namespaced(c.clone(), ns.name());
    assert!(
        svcs.get_opt("p").await.unwrap().is_none(),
        "nothing was created"
    );
    ns.cleanup(T).await.unwrap();
}

#[tokio::test]
async fn apply_dry_run_and_resource_version_precondition() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("ssa-dry").await.unwrap();
    let c = env.client();
    let path = cm_path(ns.name(), "cfg");
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns.name());
    let (code, out) = apply_raw(
        &c,
        &path,
        "fieldManager=m&dryRun=All",
        cm_config("cfg", json!({}), json!({"k": "v"})),
    )
    .await;
    assert_eq!(code, 201, "{out}");
    assert_eq!(out["data"]["k"], "v");
    assert!(
        cms.get_opt("cfg").await.unwrap().is_none(),
        "a dry run stores nothing"
    );
    let (code, created) = apply_raw(
        &c,
        &path,
        "fieldManager=m",
        cm_config("cfg", json!({}), json!({"k": "v"})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    // An applied resourceVersion is a precondition.
    let mut stale = cm_config("cfg", json!({}), json!({"k": "w"}));
    stale["metadata"]["resourceVersion"] = json!("1");
    let (code, status) = apply_raw(&c, &path, "fieldManager=m", stale).await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    let mut current = cm_config("cfg", json!({}), json!({"k": "w"}));
    current["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let (code, out) = apply_raw(&c, &path, "fieldManager=m", current).await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["data"]["k"], "w");
    ns.cleanup(T).await.unwrap();
}
