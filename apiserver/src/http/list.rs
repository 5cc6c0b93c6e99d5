//! The list verb: pages under one resourceVersion with upstream's continue tokens, tables for
//! `kubectl get`, and the list body shared with DELETE of a collection.

use super::*;

/// A continue token, in upstream's format.
#[derive(Serialize, Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, last_key: &str) -> String {
    let tok = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: format!("{last_key}\u{0}"),
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&tok).unwrap_or_default())
}

fn decode_continue(s: &str) -> ApiResult<(u64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion")
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
        .map_err(|_| bad())?;
    let tok: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if tok.v != "meta.k8s.io/v1" {
        return Err(bad());
    }
    Ok((tok.rv, tok.start.trim_end_matches('\u{0}').to_string()))
}

pub(super) fn list_body(
    info: &ResourceInfo,
    rv: u64,
    cont: Option<String>,
    items: &[Bytes],
) -> Bytes {
    let size: usize = items.iter().map(|i| i.len() + 1).sum::<usize>() + 256;
    let mut b = BytesMut::with_capacity(size);
    b.put_slice(b"{\"kind\":\"");
    b.put_slice(info.list_kind().as_bytes());
    b.put_slice(b"\",\"apiVersion\":\"");
    b.put_slice(info.api_version().as_bytes());
    b.put_slice(b"\",\"metadata\":{\"resourceVersion\":\"");
    b.put_slice(rv.to_string().as_bytes());
    b.put_slice(b"\"");
    if let Some(c) = cont {
        b.put_slice(b",\"continue\":\"");
        b.put_slice(c.as_bytes());
        b.put_slice(b"\"");
    }
    b.put_slice(b"},\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_slice(item);
    }
    b.put_slice(b"]}");
    b.freeze()
}

pub(super) fn list(
    store: &Arc<Store>,
    info: &Arc<ResourceInfo>,
    ns: Option<&str>,
    query: &HashMap<String, String>,
    as_table: bool,
) -> ApiResult<Response> {
    let sel = selectors(info, query)?;
    // `limit` is an int64 as upstream: zero or negative means "no limit"; anything that is not
    // an int64 is a 400.
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => None,
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    }
    .and_then(|l| usize::try_from(l).ok())
    .filter(|l| *l > 0);
    let cont = query.get("continue").filter(|c| !c.is_empty());
    let exact = query.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
    let rv_param = query.get("resourceVersion").filter(|v| !v.is_empty());
    // Without selectors only limit+1 objects are needed to know whether there is more.
    let max = if sel.is_empty() {
        limit.map(|l| l.saturating_add(1))
    } else {
        None
    };
    let ns = if info.namespaced { ns } else { None };
    let (snap_rv, candidates) = {
        let inner = store.lock();
        if let Some(c) = cont {
            let (rv, start) = decode_continue(c)?;
            let snap = inner.snapshot_at(&info.key, ns, Some(&start), rv, max).map_err(|_| {
                ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                )
            })?;
            (snap.rv, snap.items)
        } else if let (true, Some(rv)) = (exact, rv_param) {
            let rv = parse_rv(rv)?;
            if rv > inner.rv() {
                return Err(ApiError::too_large_resource_version(rv, inner.rv()));
            }
            let snap = inner
                .snapshot_at(&info.key, ns, None, rv, max)
                .map_err(|t| {
                    ApiError::expired(format!(
                        "too old resource version: {} ({})",
                        t.requested, t.oldest
                    ))
                })?;
            (snap.rv, snap.items)
        } else {
            if let Some(rv) = rv_param {
                // NotOlderThan: a revision this server has not reached yet cannot be served.
                let rv = parse_rv(rv)?;
                if rv > inner.rv() {
                    return Err(ApiError::too_large_resource_version(rv, inner.rv()));
                }
            }
            (inner.rv(), inner.range(&info.key, ns, None, max))
        }
    };
    let mut items = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, bytes) in candidates {
        if !sel.matches_bytes(&bytes) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            more = true;
            break;
        }
        items.push(present(info, bytes));
        last_key = Some(key);
    }
    let cont = match (more, last_key) {
        (true, Some(k)) => Some(encode_continue(snap_rv, &k)),
        _ => None,
    };
    if as_table {
        let values: Vec<Value> = items
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
            .collect();
        let include = query
            .get("includeObject")
            .map(String::as_str)
            .unwrap_or_default();
        return Ok(json_value(
            200,
            &table::render(info, &values, snap_rv, cont.as_deref(), include),
        ));
    }
    Ok(json_response(200, list_body(info, snap_rv, cont, &items)))
}
