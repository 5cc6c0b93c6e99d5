//! `?fieldValidation=Strict|Warn|Ignore`: unknown and duplicate fields in the objects of
//! create, update and patch requests for the built-in kinds.
//!
//! A field is unknown when the kind's typed model (k8s-openapi, the same OpenAPI upstream
//! decodes with) has no such field: the object is decoded into the typed model, encoded again,
//! and every non-null field that did not survive is unknown. Unknown fields are never stored.
//! `Strict` refuses the request with upstream's `strict decoding error: …` message, `Warn`
//! (upstream's default when the parameter is absent) answers with one `Warning: 299` header per
//! field, `Ignore` drops them silently. Custom resources are not checked (no pruning of custom
//! resources on this server).

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::Value;

use super::resources::ResourceInfo;
use super::status::{ApiError, ApiResult, FieldError};

/// The validation mode of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Ignore,
    Warn,
    Strict,
}

impl Mode {
    /// From the `fieldValidation` query parameter (absent → `Warn`).
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("") | Some("Warn") => Ok(Mode::Warn),
            Some("Strict") => Ok(Mode::Strict),
            Some("Ignore") => Ok(Mode::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            ))),
        }
    }
}

/// Where the object being checked came from, for the wording of a `Strict` refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The body of a create or update.
    Body,
    /// The result of applying a patch.
    Patch,
}

fn roundtrip<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// The object as the typed model of its kind keeps it, or `None` when the kind has no typed
/// model here or the object does not decode (wrong value types are left to validation).
fn typed_copy(info: &ResourceInfo, obj: &Value) -> Option<Value> {
    use k8s_openapi::api::{coordination, core, discovery, events, networking};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
    if info.crd.is_some() {
        return None;
    }
    let mut v = obj.clone();
    let m = v.as_object_mut()?;
    m.insert("apiVersion".into(), Value::String(info.api_version()));
    m.insert("kind".into(), Value::String(info.kind.clone()));
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => roundtrip::<core::v1::Namespace>(&v),
        ("", "Node") => roundtrip::<core::v1::Node>(&v),
        ("", "Pod") => roundtrip::<core::v1::Pod>(&v),
        ("", "Service") => roundtrip::<core::v1::Service>(&v),
        ("", "Endpoints") => roundtrip::<core::v1::Endpoints>(&v),
        ("", "Event") => roundtrip::<core::v1::Event>(&v),
        ("", "ConfigMap") => roundtrip::<core::v1::ConfigMap>(&v),
        ("", "ServiceAccount") => roundtrip::<core::v1::ServiceAccount>(&v),
        ("discovery.k8s.io", "EndpointSlice") => roundtrip::<discovery::v1::EndpointSlice>(&v),
        ("coordination.k8s.io", "Lease") => roundtrip::<coordination::v1::Lease>(&v),
        ("events.k8s.io", "Event") => roundtrip::<events::v1::Event>(&v),
        ("networking.k8s.io", "ServiceCIDR") => roundtrip::<networking::v1::ServiceCIDR>(&v),
        ("networking.k8s.io", "IPAddress") => roundtrip::<networking::v1::IPAddress>(&v),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            roundtrip::<apiextensions::v1::CustomResourceDefinition>(&v)
        }
        _ => None,
    }
}

/// One unknown field: its upstream spelling (`spec.ports[0].foo`) and its JSON pointer.
struct Unknown {
    path: String,
    pointer: String,
}

fn find_unknown(input: &Value, typed: &Value, path: &str, pointer: &str, out: &mut Vec<Unknown>) {
    match (input, typed) {
        (Value::Object(im), Value::Object(tm)) => {
            for (k, v) in im {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let ptr = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                match tm.get(k) {
                    Some(t) => find_unknown(v, t, &p, &ptr, out),
                    None if !v.is_null() => out.push(Unknown {
                        path: p,
                        pointer: ptr,
                    }),
                    None => {}
                }
            }
        }
        (Value::Array(ia), Value::Array(ta)) => {
            for (i, (iv, tv)) in ia.iter().zip(ta).enumerate() {
                find_unknown(
                    iv,
                    tv,
                    &format!("{path}[{i}]"),
                    &format!("{pointer}/{i}"),
                    out,
                );
            }
        }
        _ => {}
    }
}

/// Fields of an applied configuration that the kind's schema does not declare, spelled as
/// structured-merge-diff spells paths (`.spec.foo`). Apply refuses them whatever the
/// validation mode, as upstream does.
pub(crate) fn undeclared_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(typed) = typed_copy(info, obj) {
        find_unknown(obj, &typed, "", "", &mut unknown);
    }
    unknown
        .into_iter()
        .map(|u| format!(".{}", u.path))
        .collect()
}

/// The paths of repeated keys in a JSON document (`metadata.name`), empty if it is not JSON.
pub(crate) fn duplicate_fields(body: &[u8]) -> Vec<String> {
    struct Walk<'a> {
        path: String,
        out: &'a mut Vec<String>,
    }
    impl<'de> DeserializeSeed<'de> for Walk<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Walk<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            loop {
                let child = Walk {
                    path: format!("{}[{i}]", self.path),
                    out: &mut *self.out,
                };
                if seq.next_element_seed(child)?.is_none() {
                    return Ok(());
                }
                i += 1;
            }
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(k) = map.next_key::<String>()? {
                let p = if self.path.is_empty() {
                    k.clone()
                } else {
                    format!("{}.{k}", self.path)
                };
                if !seen.insert(k) {
                    self.out.push(p.clone());
                }
                map.next_value_seed(Walk {
                    path: p,
                    out: &mut *self.out,
                })?;
            }
            Ok(())
        }
    }
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    if (Walk {
        path: String::new(),
        out: &mut out,
    })
    .deserialize(&mut de)
    .is_err()
    {
        return Vec::new();
    }
    out
}

/// Check `obj` (and the duplicate keys found in its raw body) under the request's mode:
/// refuse (`Strict`), or drop the unknown fields and record warnings (`Warn`) or not (`Ignore`).
pub(crate) fn check(
    ctx: &mut WriteCtx,
    info: &ResourceInfo,
    obj: &mut Value,
    duplicates: &[String],
    source: Source,
) -> ApiResult<()> {
    let mut unknown = Vec::new();
    if let Some(typed) = typed_copy(info, obj) {
        find_unknown(obj, &typed, "", "", &mut unknown);
    }
    let mut problems: Vec<String> = unknown
        .iter()
        .map(|u| format!("unknown field {:?}", u.path))
        .collect();
    problems.extend(duplicates.iter().map(|d| format!("duplicate field {d:?}")));
    if problems.is_empty() {
        return Ok(());
    }
    match ctx.validation {
        Mode::Strict => {
            let detail = format!("strict decoding error: {}", problems.join(", "));
            return Err(match source {
                Source::Body => ApiError::bad_request(format!(
                    "{kind} in version {version:?} cannot be handled as a {kind}: {detail}",
                    kind = info.kind,
                    version = info.version
                )),
                // Upstream reports a patched object that does not decode as an invalid
                // `patch` value: the patched object, then the decoding error.
                Source::Patch => ApiError::invalid(
                    "",
                    "",
                    "",
                    &[FieldError::invalid(
                        "patch",
                        Value::String(obj.to_string()),
                        detail,
                    )],
                ),
            });
        }
        Mode::Warn => ctx.warnings.extend(problems),
        Mode::Ignore => {}
    }
    // Deepest first, so removing one field never shifts the pointer of another.
    unknown.sort_by_key(|u| std::cmp::Reverse(u.pointer.len()));
    for u in &unknown {
        if let Some((parent, key)) = u.pointer.rsplit_once('/') {
            let key = key.replace("~1", "/").replace("~0", "~");
            if let Some(m) = obj.pointer_mut(parent).and_then(Value::as_object_mut) {
                m.remove(&key);
            }
        }
    }
    Ok(())
}

/// The value of a `Warning` response header for one warning.
pub(crate) fn warning_header(text: &str) -> String {
    format!("299 - {text:?}")
}

/// The per-request context of a write: who writes (for managedFields), how unknown fields
/// are handled, and the warnings to send back.
#[derive(Debug)]
pub(crate) struct WriteCtx {
    pub manager: Option<super::managed_fields::Manager>,
    pub validation: Mode,
    pub warnings: Vec<String>,
    /// Repeated keys found in the raw body of a patch, reported with the patched object.
    pub patch_duplicates: Vec<String>,
}

impl WriteCtx {
    /// A write the server makes on its own behalf (no managedFields entry, no validation).
    pub fn internal() -> Self {
        Self {
            manager: None,
            validation: Mode::Ignore,
            warnings: Vec::new(),
            patch_duplicates: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    fn ctx(mode: Mode) -> WriteCtx {
        let mut c = WriteCtx::internal();
        c.validation = mode;
        c
    }

    #[test]
    fn unknown_fields_by_mode() {
        let info = Registry::builtin().find("", "v1", "services").unwrap();
        let obj = json!({"metadata": {"name": "s", "bogus": 1}, "spec": {"foo": "x", "ports": [{"port": 80, "bar": true}], "type": "ClusterIP"}});
        let mut strict = obj.clone();
        let err = check(
            &mut ctx(Mode::Strict),
            &info,
            &mut strict,
            &[],
            Source::Body,
        )
        .unwrap_err();
        assert_eq!(err.code, 400);
        assert_eq!(
            err.message,
            r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "metadata.bogus", unknown field "spec.foo", unknown field "spec.ports[0].bar""#
        );
        let mut warned = obj.clone();
        let mut c = ctx(Mode::Warn);
        check(
            &mut c,
            &info,
            &mut warned,
            &["metadata.name".into()],
            Source::Patch,
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 4);
        assert_eq!(c.warnings[3], r#"duplicate field "metadata.name""#);
        assert_eq!(
            warned,
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], "type": "ClusterIP"}})
        );
        let mut ignored = obj;
        let mut c = ctx(Mode::Ignore);
        check(&mut c, &info, &mut ignored, &[], Source::Body).unwrap();
        assert!(c.warnings.is_empty());
        assert_eq!(ignored, warned);
    }

    #[test]
    fn duplicates_in_raw_json() {
        let body = br#"{"metadata": {"name": "a", "name": "b"}, "spec": {"ports": [{"port": 1, "port": 2}]}}"#;
        assert_eq!(
            duplicate_fields(body),
            vec![
                "metadata.name".to_string(),
                "spec.ports[0].port".to_string()
            ]
        );
        assert!(duplicate_fields(b"not json").is_empty());
    }

    #[test]
    fn modes_and_headers() {
        assert_eq!(Mode::parse(None).unwrap(), Mode::Warn);
        assert_eq!(Mode::parse(Some("Strict")).unwrap(), Mode::Strict);
        assert_eq!(Mode::parse(Some("strict")).unwrap_err().code, 400);
        assert_eq!(
            warning_header(r#"unknown field "spec.foo""#),
            r#"299 - "unknown field \"spec.foo\"""#
        );
    }
}
