//! EndpointSlices: address type and per-endpoint address counts.

use serde_json::{json, Value};

use crate::status::FieldError;

pub(super) fn validate_endpointslice(obj: &Value) -> Vec<FieldError> {
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    let mut errs = Vec::new();
    match obj.get("addressType").and_then(Value::as_str) {
        None => errs.push(FieldError::required("addressType", "")),
        Some(t) if !TYPES.contains(&t) => {
            errs.push(FieldError::not_supported("addressType", json!(t), TYPES))
        }
        _ => {}
    }
    if let Some(eps) = obj.get("endpoints").and_then(Value::as_array) {
        for (i, e) in eps.iter().enumerate() {
            let n = e
                .get("addresses")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            if n == 0 || n > 100 {
                errs.push(FieldError::required(
                    format!("endpoints[{i}].addresses"),
                    "must contain at least 1 and at most 100 addresses",
                ));
            }
        }
    }
    errs
}
