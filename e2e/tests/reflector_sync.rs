//! A kube-runtime watcher + reflector over 10,000 Pods stays exactly in sync with the server
//! while Pods are created, changed and deleted, through forced watch closures and a forced
//! `410 Expired` (which makes the watcher relist). The forcing uses the embedded server's test
//! hooks; on other backends the test still checks sync under churn but cannot force those.
//! No root needed. Takes some seconds (10,000 creates).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use testkit::harness::{self, TestEnv};

const PODS: usize = 10_000;

async fn create_pods(api: &Api<Pod>, names: impl Iterator<Item = String>) {
    futures::stream::iter(names)
        .map(|n| {
            let api = api.clone();
            async move {
                let p = harness::pod(&n, "node-a", &[("app", "sync"), ("gen", "0")]);
                api.create(&PostParams::default(), &p).await.map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating pods");
}

/// Server truth: name → resourceVersion, via a paginated list.
async fn truth(api: &Api<Pod>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lp = ListParams::default().limit(1000);
    loop {
        let page = api.list(&lp).await.expect("list");
        for p in page.items {
            out.insert(
                p.metadata.name.unwrap(),
                p.metadata.resource_version.unwrap(),
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => return out,
        }
    }
}

fn cached(store: &reflector::Store<Pod>) -> BTreeMap<String, String> {
    store
        .state()
        .iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap(),
                p.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect()
}

/// One round of churn: creates, label updates and deletes.
async fn churn(api: &Api<Pod>, round: usize) {
    create_pods(api, (0..100).map(|i| format!("extra-{round}-{i}"))).await;
    futures::stream::iter(0..150)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("pod-{}", (round * 997 + i * 61) % PODS);
                let patch = json!({"metadata": {"labels": {"gen": format!("{round}")}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("updating pods");
    for i in 0..50 {
        let name = format!("extra-{round}-{i}");
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        api.delete(&name, &dp).await.expect("deleting pod");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_stays_in_sync_through_closures_and_410() {
    let env = TestEnv::start().await.unwrap();
    let ns = env.namespace("reflector").await.unwrap();
    let api: Api<Pod> = Api::namespaced(env.client(), ns.name());
    create_pods(&api, (0..PODS).map(|i| format!("pod-{i}"))).await;

    let (reader, writer) = reflector::store();
    let relists = Arc::new(AtomicUsize::new(0));
    let r = relists.clone();
    let stream = watcher(api.clone(), watcher::Config::default())
        .inspect_ok(move |e| {
            if matches!(e, watcher::Event::Init) {
                r.fetch_add(1, Ordering::SeqCst);
            }
        })
        .reflect(writer)
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "watcher error (retried)");
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(120), reader.wait_until_ready())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reader.len(), PODS);
    assert_eq!(relists.load(Ordering::SeqCst), 1);

    for round in 1..=5 {
        let writer = {
            let api = api.clone();
            tokio::spawn(async move { churn(&api, round).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(server) = env.server() {
            if round == 4 {
                // Forced 410: history gone and the watch cut; resuming fails, the watcher relists.
                server.expire_watches();
            } else {
                server.close_all_watches();
            }
        }
        writer.await.unwrap();
    }

    let want = truth(&api).await;
    assert_eq!(want.len(), PODS + 5 * 50);
    let mut last_diff = 0;
    let synced = harness::wait_until(
        "the reflector to match the server",
        Duration::from_secs(60),
        || {
            let got = cached(&reader);
            last_diff = got.len().abs_diff(want.len())
                + got.iter().filter(|(k, v)| want.get(*k) != Some(*v)).count();
            async move { last_diff == 0 }
        },
    )
    .await;
    assert!(
        synced.is_ok(),
        "reflector out of sync: {last_diff} differences"
    );
    assert_eq!(cached(&reader), want, "exact names and resourceVersions");
    if env.is_embedded() {
        assert!(
            relists.load(Ordering::SeqCst) >= 2,
            "the forced 410 made the watcher relist"
        );
    }
    task.abort();
}
