//! Fuzz target: arbitrary bytes → the whole request path (`Handler::handle`, UDP and TCP).
//!
//! Run (cargo-fuzz needs nightly flags):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run request -- -max_total_time=600`
//!
//! Asserts: nothing panics; every response decodes, answers the request's id, and a UDP
//! response fits the size the request allows (512 bytes without EDNS, at most 4096 with it).
#![no_main]

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock, RwLock};

use dns::answer::{Config, PodMode};
use dns::forward::{ForwardConfig, Forwarder};
use dns::index::{Endpoint, EndpointSlice, Index, Port, Service, ServiceKind};
use dns::metrics::Metrics;
use dns::server::{Handler, Proto};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fn handler() -> &'static (Handler, tokio::runtime::Runtime) {
    static H: OnceLock<(Handler, tokio::runtime::Runtime)> = OnceLock::new();
    H.get_or_init(|| {
        let mut idx = Index::new();
        idx.reset_namespaces(vec!["ns".to_string()]);
        let http = Port {
            name: "http".into(),
            protocol: "TCP".into(),
            port: 80,
        };
        idx.apply_service(Service {
            namespace: "ns".into(),
            name: "web".into(),
            kind: ServiceKind::ClusterIp(vec![
                "10.96.0.10".parse().unwrap(),
                "fd00::10".parse().unwrap(),
            ]),
            ports: vec![http.clone()],
            publish_not_ready: false,
        });
        idx.apply_service(Service {
            namespace: "ns".into(),
            name: "db".into(),
            kind: ServiceKind::Headless,
            ports: vec![http.clone()],
            publish_not_ready: false,
        });
        idx.apply_service(Service {
            namespace: "ns".into(),
            name: "alias".into(),
            kind: ServiceKind::ExternalName("web.ns.svc.cluster.local".into()),
            ports: vec![],
            publish_not_ready: false,
        });
        let endpoints = (1..=60u8)
            .map(|i| Endpoint {
                addresses: vec![format!("10.1.0.{i}").parse().unwrap()],
                ready: Some(i % 7 != 0),
                serving: None,
                terminating: None,
                hostname: (i % 3 == 0).then(|| format!("db-{i}")),
                node_name: None,
            })
            .collect();
        idx.apply_slice(EndpointSlice {
            namespace: "ns".into(),
            name: "db-1".into(),
            service: "db".into(),
            ports: vec![http],
            endpoints,
        });
        // No upstream: forwarded names fail at once (SERVFAIL) instead of waiting on a network.
        let forwarder = Forwarder::new(ForwardConfig::new(vec![]), Metrics::unregistered("fuzz"));
        let h = Handler::new(
            Arc::new(RwLock::new(idx)),
            Config::new("cluster.local", 5, PodMode::Insecure).unwrap(),
            forwarder,
            Metrics::unregistered("fuzz"),
            Arc::new(AtomicBool::new(true)),
            dns::server::DEFAULT_ANSWER_CACHE,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        (h, rt)
    })
}

fuzz_target!(|data: &[u8]| {
    let (h, rt) = handler();
    let peer: SocketAddr = "127.0.0.1:5353".parse().unwrap();
    for proto in [Proto::Udp, Proto::Tcp] {
        let Some(resp) = rt.block_on(h.handle(data, proto, peer)) else {
            continue;
        };
        let msg = Message::from_vec(&resp).expect("every response decodes");
        assert_eq!(&resp[..2], &data[..2], "the id is echoed");
        if proto == Proto::Udp {
            let limit = match Message::from_vec(data).ok().and_then(|m| m.edns) {
                Some(edns) => usize::from(edns.max_payload().clamp(512, 4096)),
                None => 512,
            };
            assert!(resp.len() <= limit, "{} > {limit}", resp.len());
        }
        drop(msg);
    }
});
