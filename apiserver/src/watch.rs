//! Watch streams: newline-delimited JSON `WatchEvent`s over a chunked HTTP response.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::resources::ResourceInfo;
use super::selector::Selectors;
use super::status::ApiError;
use super::store::{Event, EventType, Store};

/// The revision a bookmark may carry: the current one, if watcher `id` has been handed every
/// event up to it. Every send happens under the store lock, so an empty queue seen under the lock
/// means exactly that.
fn caught_up_rv(store: &Store, id: u64, rx: &mpsc::Receiver<Arc<Event>>) -> Option<u64> {
    let inner = store.lock();
    (rx.is_empty() && inner.has_watcher(id)).then(|| inner.rv())
}

/// Parameters of one watch request.
pub(crate) struct WatchParams {
    /// `None` / `Some(0)`: start with synthetic ADDED events for the current state.
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
}

pub(crate) fn event_line(ty: &str, object: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(object.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(ty.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(object);
    b.put_slice(b"}\n");
    b.freeze()
}

fn bookmark(info: &ResourceInfo, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let obj = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta});
    event_line("BOOKMARK", &serde_json::to_vec(&obj).unwrap_or_default())
}

/// Rewrite `apiVersion` when a CRD object is read through a version other than the one it was
/// stored with (conversion strategy `None`, as upstream).
pub(crate) fn present(info: &ResourceInfo, bytes: Bytes) -> Bytes {
    if info.crd.is_none() {
        return bytes;
    }
    let want = format!("\"apiVersion\":\"{}\"", info.api_version());
    if bytes.windows(want.len()).any(|w| w == want.as_bytes()) {
        return bytes;
    }
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            v["apiVersion"] = json!(info.api_version());
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        }
        Err(_) => bytes,
    }
}

/// What a selector-filtered watcher should see for an event.
fn translate(ev: &Event, sel: &Selectors) -> Option<&'static str> {
    if sel.is_empty() {
        return Some(ev.kind.as_str());
    }
    let old = ev.prev.as_deref().is_some_and(|p| sel.matches_bytes(p));
    match ev.kind {
        EventType::Added => sel.matches_bytes(&ev.object).then_some("ADDED"),
        EventType::Deleted => old.then_some("DELETED"),
        EventType::Modified => match (old, sel.matches_bytes(&ev.object)) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

fn response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// Start a watch. An expired resourceVersion yields an HTTP 200 stream holding one ERROR event
/// with a `410 Expired` Status, as kube-apiserver's watch cache does.
pub(crate) fn start(
    store: Arc<Store>,
    info: Arc<ResourceInfo>,
    namespace: Option<String>,
    sel: Selectors,
    params: WatchParams,
) -> Response {
    let (out_tx, out_rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let from_state = params.send_initial_events || params.since.unwrap_or(0) == 0;
    let registered = {
        let mut inner = store.lock();
        let since = if from_state { None } else { params.since };
        let initial = if from_state {
            inner.range(&info.key, namespace.as_deref(), None, None)
        } else {
            Vec::new()
        };
        let rv = inner.rv();
        inner
            .watch(
                &info.key,
                namespace.as_deref(),
                since,
                store.watch_capacity(),
            )
            .map(|(id, backlog, rx)| (id, backlog, rx, initial, rv))
    };
    let (id, backlog, mut rx, initial, start_rv) = match registered {
        Ok(r) => r,
        Err(too_old) => {
            let status = ApiError::expired(format!(
                "too old resource version: {} ({})",
                too_old.requested, too_old.oldest
            ))
            .to_status();
            let line = event_line("ERROR", &serde_json::to_vec(&status).unwrap_or_default());
            let _ = out_tx.try_send(Ok(line));
            return response(out_rx);
        }
    };
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = out_tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        let deadline = tokio::time::Instant::now() + params.timeout;
        let mut alive = true;
        for (_, obj) in initial {
            if sel.matches_bytes(&obj) && !send(event_line("ADDED", &present(&info, obj))).await {
                alive = false;
                break;
            }
        }
        if alive && params.send_initial_events && params.bookmarks {
            alive = send(bookmark(&info, start_rv, true)).await;
        }
        for ev in backlog {
            if !alive {
                break;
            }
            if let Some(ty) = translate(&ev, &sel) {
                alive = send(event_line(ty, &present(&info, ev.object.clone()))).await;
            }
        }
        // Bookmarks follow kube-apiserver's watch cache: roughly every `bookmark_interval`, and
        // once 2 s before the watch times out, so that a client re-watching from the last
        // bookmark resumes as close to now as possible. Each carries the current revision, and
        // only once this watcher has been sent every event up to it.
        let mut ticker = tokio::time::interval(params.bookmark_interval);
        ticker.tick().await;
        let pre_timeout = deadline.checked_sub(Duration::from_secs(2));
        let mut pre_timeout_due =
            params.bookmarks && pre_timeout.is_some_and(|t| t > tokio::time::Instant::now());
        let pre_timeout = pre_timeout.unwrap_or(deadline);
        while alive {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        if let Some(ty) = translate(&ev, &sel) {
                            alive = send(event_line(ty, &present(&info, ev.object.clone()))).await;
                        }
                    }
                    None => break,
                },
                _ = ticker.tick(), if params.bookmarks => {
                    if let Some(rv) = caught_up_rv(&store, id, &rx) {
                        alive = send(bookmark(&info, rv, false)).await;
                    }
                }
                _ = tokio::time::sleep_until(pre_timeout), if pre_timeout_due => {
                    pre_timeout_due = false;
                    if let Some(rv) = caught_up_rv(&store, id, &rx) {
                        alive = send(bookmark(&info, rv, false)).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => break,
                _ = out_tx.closed() => break,
            }
        }
        store.lock().drop_watcher(id);
    });
    response(out_rx)
}
