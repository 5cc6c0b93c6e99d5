//! Watch fan-out never blocks writers: a watcher that stops reading is closed once its queue
//! fills, while every write still completes and a reading watcher sees everything. Embedded
//! server only (it uses the server's queue size and counters). No root needed.

use std::collections::BTreeSet;
use std::time::Duration;

use apiserver::{ApiServer, ServerConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

/// ~40 MiB of events: more than the stalled connection's queue and socket buffers can absorb.
const N: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_is_dropped_and_writers_never_wait() {
    let server = ApiServer::start(ServerConfig {
        watch_queue: 256,
        ..ServerConfig::default()
    })
    .await
    .expect("server");
    let client = server.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = server.resource_version().to_string();

    // A watcher that never reads its body.
    let stalled = client
        .send(
            http::Request::get(format!(
                "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
            ))
            .body(kube::client::Body::empty())
            .expect("request"),
        )
        .await
        .expect("stalled watch opened");
    // A watcher that keeps reading (kube-runtime's, which also resumes if it is ever cut off).
    let live = watcher::watcher(cms.clone(), watcher::Config::default()).applied_objects();
    let collector = tokio::spawn(async move {
        let mut names = BTreeSet::new();
        futures::pin_mut!(live);
        while names.len() < N {
            match live.next().await {
                Some(Ok(cm)) => {
                    names.insert(cm.metadata.name.unwrap_or_default());
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
        names.len()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.watch_count(), 2);

    let blob = "x".repeat(20_000);
    futures::stream::iter(0..N)
        .map(|i| {
            let cms = cms.clone();
            let blob = blob.clone();
            async move {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(format!("cm-{i}"));
                cm.data = Some([("blob".to_string(), blob)].into());
                cms.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("every write completes despite the stalled watcher");

    let seen = tokio::time::timeout(Duration::from_secs(60), collector)
        .await
        .expect("the reading watcher keeps up")
        .expect("collector task");
    assert_eq!(seen, N);

    // The stalled watch was closed by the server: its body ends (after what was already queued)
    // instead of staying open for the default 30-minute watch timeout.
    let body = tokio::time::timeout(
        Duration::from_secs(30),
        http_body_util::BodyExt::collect(stalled.into_body()),
    )
    .await
    .expect("the stalled watch was closed by the server")
    .expect("stalled body")
    .to_bytes();
    let delivered = body
        .split(|b| *b == b'\n')
        .filter(|l| l.starts_with(b"{\"type\":\"ADDED\""))
        .count();
    assert!(
        delivered < N,
        "the stalled watcher got {delivered} of {N} events before being cut off"
    );
    let metrics = client
        .request_text(
            http::Request::get("/metrics")
                .body(Vec::new())
                .expect("request"),
        )
        .await
        .expect("metrics");
    let closed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("svcnet_apiserver_slow_watchers_closed "))
        .and_then(|v| v.trim().parse().ok())
        .expect("slow_watchers_closed metric");
    assert!(closed >= 1, "{metrics}");
}
