//! networking.k8s.io/v1 ServiceCIDR and IPAddress: the validation of upstream's
//! `pkg/apis/networking/validation` and the write rules of their registry strategies.
//!
//! * ServiceCIDR: `spec.cidrs` holds one or two canonical CIDRs, of different families when
//!   there are two. On update the existing entries are immutable, but a single-stack
//!   ServiceCIDR may gain a second CIDR (becoming dual-stack). Writes to the main resource
//!   never change `.status`: create drops it, updates keep the stored one (as kube-apiserver
//!   does from 1.36; earlier releases kept whatever the request sent). Status writes keep the
//!   stored spec, labels, annotations, finalizers and ownerReferences and check nothing else:
//!   upstream does not validate the conditions.
//! * IPAddress: the name is an IP address in canonical form, `spec.parentRef` is required (with
//!   `resource` and `name`) and immutable. There is no status.
//!
//! Neither kind carries `metadata.generation` upstream (their strategies never set one).

use serde_json::{json, Map, Value};

use super::ip::{cidr_family, validate_cidr};
use crate::status::FieldError;

const IMMUTABLE: &str = "field is immutable";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The CIDRs of a ServiceCIDR as sent (`None` for an entry that is not a string).
fn cidrs(obj: &Value) -> Vec<Value> {
    obj.pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `validateServiceCIDRSpec`: one or two valid CIDRs, one per family.
pub(super) fn validate_service_cidr_spec(obj: &Value) -> Vec<FieldError> {
    let list = cidrs(obj);
    if list.is_empty() {
        return vec![FieldError::required(
            "spec.cidrs",
            "at least one CIDR required",
        )];
    }
    if list.len() > 2 {
        return vec![FieldError::invalid(
            "spec.cidrs",
            obj.get("spec").cloned().unwrap_or(Value::Null),
            "may only hold up to 2 values",
        )];
    }
    let mut errs = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let field = format!("spec.cidrs[{i}]");
        match c.as_str() {
            Some(s) => errs.extend(validate_cidr(&field, s)),
            None => errs.push(FieldError::invalid(
                field,
                c.clone(),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            )),
        }
    }
    if let [a, b] = list.as_slice() {
        let fa = a.as_str().and_then(cidr_family);
        if fa.is_some() && fa == b.as_str().and_then(cidr_family) {
            errs.push(FieldError::invalid(
                "spec.cidrs",
                Value::Array(list.clone()),
                "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and 2001:db8::/64",
            ));
        }
    }
    errs
}

/// ServiceCIDR create: status is cleared, then the spec is validated.
pub(super) fn create_service_cidr(obj: &mut Value) -> Vec<FieldError> {
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    validate_service_cidr_spec(obj)
}

/// `ValidateServiceCIDRUpdate`: entries keep their values; one CIDR may become two.
pub(super) fn validate_service_cidr_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let (before, after) = (cidrs(old), cidrs(new));
    let immutable =
        |i: usize| FieldError::invalid(format!("spec.cidrs[{i}]"), after[i].clone(), IMMUTABLE);
    match (before.len(), after.len()) {
        (n, m) if n == m => (0..n)
            .filter(|&i| before[i] != after[i])
            .map(immutable)
            .collect(),
        (1, 2) => {
            let mut errs = Vec::new();
            if before[0] != after[0] {
                errs.push(immutable(0));
            }
            errs.extend(validate_service_cidr_spec(new));
            errs
        }
        _ => vec![FieldError::invalid(
            "spec.cidrs",
            Value::Array(after),
            IMMUTABLE,
        )],
    }
}

/// The messages of apimachinery's `IsValidPathSegmentName`.
fn path_segment_messages(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| s.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn ref_str<'a>(r: &'a Map<String, Value>, key: &str) -> &'a str {
    r.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// `validateIPAddressParentReference`: `resource` and `name` are required path segments,
/// `group` (empty for the core group) a DNS subdomain, `namespace` a path segment when set.
fn validate_parent_ref(obj: &Value) -> Vec<FieldError> {
    let Some(r) = obj.pointer("/spec/parentRef").and_then(Value::as_object) else {
        return vec![FieldError::required("spec.parentRef", "")];
    };
    let mut errs = Vec::new();
    let group = ref_str(r, "group");
    if !group.is_empty() {
        if group.len() > 253 {
            errs.push(FieldError::invalid(
                "spec.parentRef.group",
                json!(group),
                "must be no more than 253 characters",
            ));
        }
        if !matches_dns1123_subdomain(group) {
            errs.push(FieldError::invalid(
                "spec.parentRef.group",
                json!(group),
                DNS1123_SUBDOMAIN,
            ));
        }
    }
    for (key, required) in [("resource", true), ("name", true), ("namespace", false)] {
        let v = ref_str(r, key);
        let field = format!("spec.parentRef.{key}");
        if v.is_empty() {
            if required {
                errs.push(FieldError::required(field, ""));
            }
            continue;
        }
        for m in path_segment_messages(v) {
            errs.push(FieldError::invalid(field.clone(), json!(v), m));
        }
    }
    errs
}

/// Does `s` match upstream's DNS-1123 subdomain pattern? The length limit is checked apart, as
/// upstream reports it as an error of its own.
fn matches_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// `ValidateIPAddress` beyond the name (which `validate_name` checks on create).
pub(super) fn validate_ip_address(obj: &Value) -> Vec<FieldError> {
    validate_parent_ref(obj)
}

/// `parentRef` with unset and empty fields treated alike (upstream compares Go structs, where
/// an omitted string is the empty string).
fn normalized_parent_ref(obj: &Value) -> Option<Map<String, Value>> {
    let r = obj.pointer("/spec/parentRef")?.as_object()?;
    Some(
        r.iter()
            .filter(|(_, v)| !v.is_null() && v.as_str() != Some(""))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

/// `ValidateIPAddress` + `ValidateIPAddressUpdate`: the new object must be valid and its
/// `spec.parentRef` the stored one.
pub(super) fn validate_ip_address_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = validate_ip_address(new);
    if normalized_parent_ref(old) != normalized_parent_ref(new) {
        errs.push(FieldError::invalid(
            "spec.parentRef",
            new.pointer("/spec/parentRef")
                .cloned()
                .unwrap_or(Value::Null),
            IMMUTABLE,
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    fn scidr(list: Value) -> Value {
        json!({"metadata": {"name": "c"}, "spec": {"cidrs": list}})
    }

    #[test]
    fn service_cidr_accepts_one_or_two_families() {
        for ok in [
            json!(["10.96.0.0/16"]),
            json!(["2001:db8::/112"]),
            json!(["10.96.0.0/16", "fd00::/108"]),
            json!(["fd00::/108", "10.96.0.0/16"]),
        ] {
            let errs = validate_service_cidr_spec(&scidr(ok.clone()));
            assert!(errs.is_empty(), "{ok}: {:?}", fields(&errs));
        }
    }

    #[test]
    fn service_cidr_count_rules() {
        let none = validate_service_cidr_spec(&json!({"spec": {}}));
        assert_eq!(fields(&none), ["spec.cidrs: at least one CIDR required"]);
        let empty = validate_service_cidr_spec(&scidr(json!([])));
        assert_eq!(fields(&empty), ["spec.cidrs: at least one CIDR required"]);
        let three = validate_service_cidr_spec(&scidr(json!([
            "10.0.0.0/8",
            "fd00::/64",
            "192.168.0.0/16"
        ])));
        assert_eq!(fields(&three), ["spec.cidrs: may only hold up to 2 values"]);
    }

    #[test]
    fn service_cidr_entries_must_be_canonical_and_of_two_families() {
        let errs = validate_service_cidr_spec(&scidr(json!(["10.0.0.1/8", "2001:DB8::/64"])));
        assert_eq!(
            fields(&errs),
            [
                "spec.cidrs[0]: must not have bits set beyond the prefix length",
                r#"spec.cidrs[1]: must be in canonical form ("2001:db8::/64")"#,
            ]
        );
        let same = validate_service_cidr_spec(&scidr(json!(["10.0.0.0/8", "192.168.0.0/16"])));
        assert_eq!(same.len(), 1);
        assert_eq!(same[0].field, "spec.cidrs");
        assert!(same[0]
            .detail
            .starts_with("may specify no more than one IP"));
        let v6 = validate_service_cidr_spec(&scidr(json!(["fd00::/64", "2001:db8::/64"])));
        assert_eq!(v6.len(), 1);
        // An unparsable entry has no family: only its own error is reported.
        let bad = validate_service_cidr_spec(&scidr(json!(["bad", "10.0.0.0/8"])));
        assert_eq!(fields(&bad).len(), 1);
        assert_eq!(bad[0].field, "spec.cidrs[0]");
        let num = validate_service_cidr_spec(&scidr(json!([5])));
        assert_eq!(num[0].field, "spec.cidrs[0]");
    }

    #[test]
    fn service_cidr_create_drops_status() {
        let mut o = scidr(json!(["10.0.0.0/8"]));
        o["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        assert!(create_service_cidr(&mut o).is_empty());
        assert!(o.get("status").is_none());
    }

    #[test]
    fn service_cidr_update_rules() {
        let one = scidr(json!(["10.0.0.0/8"]));
        let two = scidr(json!(["10.0.0.0/8", "fd00::/64"]));
        // Unchanged, or a second family added to a single-stack range.
        assert!(validate_service_cidr_update(&one, &one).is_empty());
        assert!(validate_service_cidr_update(&one, &two).is_empty());
        // Changing an entry, in place or while adding one.
        let changed = validate_service_cidr_update(&one, &scidr(json!(["10.1.0.0/16"])));
        assert_eq!(fields(&changed), ["spec.cidrs[0]: field is immutable"]);
        let moved = validate_service_cidr_update(&one, &scidr(json!(["fd00::/64", "10.0.0.0/8"])));
        assert_eq!(fields(&moved), ["spec.cidrs[0]: field is immutable"]);
        let swapped =
            validate_service_cidr_update(&two, &scidr(json!(["fd00::/64", "10.0.0.0/8"])));
        assert_eq!(swapped.len(), 2);
        // The added entry is validated like a new spec.
        let same_family =
            validate_service_cidr_update(&one, &scidr(json!(["10.0.0.0/8", "11.0.0.0/8"])));
        assert_eq!(same_family.len(), 1);
        assert_eq!(same_family[0].field, "spec.cidrs");
        let bad_new =
            validate_service_cidr_update(&one, &scidr(json!(["10.0.0.0/8", "fd00::1/64"])));
        assert_eq!(bad_new[0].field, "spec.cidrs[1]");
        // Removing an entry, emptying the list, or going from two to more.
        for after in [json!(["10.0.0.0/8"]), json!([])] {
            let errs = validate_service_cidr_update(&two, &scidr(after));
            assert_eq!(fields(&errs), ["spec.cidrs: field is immutable"]);
        }
        let errs = validate_service_cidr_update(&one, &scidr(json!([])));
        assert_eq!(fields(&errs), ["spec.cidrs: field is immutable"]);
    }

    fn ipa(parent: Value) -> Value {
        json!({"metadata": {"name": "10.0.0.1"}, "spec": {"parentRef": parent}})
    }

    #[test]
    fn ip_address_parent_ref_rules() {
        let ok = ipa(
            json!({"group": "", "resource": "services", "namespace": "default", "name": "web"}),
        );
        assert!(validate_ip_address(&ok).is_empty());
        let cluster = ipa(
            json!({"group": "gateway.networking.k8s.io", "resource": "gateways", "name": "gw"}),
        );
        assert!(validate_ip_address(&cluster).is_empty());
        assert_eq!(
            fields(&validate_ip_address(&json!({"spec": {}}))),
            ["spec.parentRef: "]
        );
        assert_eq!(
            fields(&validate_ip_address(&ipa(json!({})))),
            ["spec.parentRef.resource: ", "spec.parentRef.name: "]
        );
        let bad =
            ipa(json!({"group": "Bad_Group", "resource": "a/b", "namespace": "..", "name": "x%y"}));
        assert_eq!(
            fields(&validate_ip_address(&bad)),
            [
                format!("spec.parentRef.group: {DNS1123_SUBDOMAIN}"),
                "spec.parentRef.resource: may not contain '/'".into(),
                "spec.parentRef.name: may not contain '%'".into(),
                "spec.parentRef.namespace: may not be '..'".into(),
            ]
        );
        let long = "a".repeat(254);
        let errs = validate_ip_address(&ipa(json!({"group": long, "resource": "r", "name": "n"})));
        assert_eq!(
            fields(&errs),
            ["spec.parentRef.group: must be no more than 253 characters"]
        );
    }

    #[test]
    fn ip_address_parent_ref_is_immutable() {
        let old = ipa(json!({"resource": "services", "namespace": "default", "name": "web"}));
        let same = ipa(
            json!({"group": "", "resource": "services", "namespace": "default", "name": "web"}),
        );
        assert!(validate_ip_address_update(&old, &same).is_empty());
        let other = ipa(json!({"resource": "services", "namespace": "default", "name": "db"}));
        assert_eq!(
            fields(&validate_ip_address_update(&old, &other)),
            ["spec.parentRef: field is immutable"]
        );
        let dropped = validate_ip_address_update(&old, &json!({"spec": {}}));
        assert_eq!(
            fields(&dropped),
            ["spec.parentRef: ", "spec.parentRef: field is immutable"]
        );
    }
}
