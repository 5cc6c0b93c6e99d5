//! The embedded server's `/metrics` endpoint (embedded server only). No root needed.

use apiserver::{ApiServer, ServerConfig};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::Api;

#[tokio::test]
async fn metrics_report_requests_objects_and_watches() {
    let server = ApiServer::start(ServerConfig::default())
        .await
        .expect("server");
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("m".into());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    assert!(cms.get("missing").await.is_err());
    let text = client
        .request_text(
            http::Request::get("/metrics")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("metrics");
    assert!(
        text.contains(r#"svcnet_apiserver_requests_total{method="POST",code="201"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"svcnet_apiserver_requests_total{method="GET",code="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"svcnet_apiserver_objects{resource="/configmaps"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"svcnet_apiserver_objects{resource="/namespaces"} 4"#),
        "{text}"
    );
    assert!(text.contains("svcnet_apiserver_open_watches 0"), "{text}");
    assert!(
        text.contains(&format!(
            "svcnet_apiserver_resource_version {}",
            server.resource_version()
        )),
        "{text}"
    );
}
