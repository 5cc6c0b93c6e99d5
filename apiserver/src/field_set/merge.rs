//! Server-side apply's merge of an applied configuration into the live object, and removal of
//! the fields a manager no longer applies.

use super::*;

/// Merge an applied configuration into the live object: the configuration's values win,
/// granular maps and non-atomic lists merge element by element, atomic ones are replaced.
/// A `null` in the configuration removes the field.
pub(crate) fn merge(live: &Value, config: &Value, schema: &Schema) -> Result<Value, String> {
    fn walk(l: Option<&Value>, r: &Value, schema: &Schema, spath: &str) -> Result<Value, String> {
        match (l, r) {
            (Some(Value::Object(lm)), Value::Object(rm))
                if spath.is_empty() || !schema.atomic_map(spath) =>
            {
                let mut out = lm.clone();
                for (k, rv) in rm {
                    if rv.is_null() {
                        out.remove(k);
                        continue;
                    }
                    let merged = walk(lm.get(k), rv, schema, &format!("{spath}.{k}"))?;
                    out.insert(k.clone(), merged);
                }
                Ok(Value::Object(out))
            }
            (Some(Value::Array(la)), Value::Array(ra)) => {
                let lt = schema.list_type(spath);
                if lt == ListType::Atomic {
                    return Ok(strip_nulls(r));
                }
                let li = index_items(&lt, la, spath, false)?;
                let ri = index_items(&lt, ra, spath, true)?;
                let mut out = Vec::with_capacity(li.len().max(ri.len()));
                for (lv, rv) in merged_order(&li, &ri) {
                    out.push(match (lv, rv) {
                        (Some(a), Some(b)) if lt != ListType::Set => {
                            walk(Some(a), b, schema, spath)?
                        }
                        (_, Some(b)) => strip_nulls(b),
                        (Some(a), None) => a.clone(),
                        (None, None) => continue,
                    });
                }
                Ok(Value::Array(out))
            }
            _ => Ok(strip_nulls(r)),
        }
    }
    walk(Some(live), config, schema, "")
}

/// The order of a merged list (structured-merge-diff's rule): elements only in the live list
/// keep their place, elements of the configuration follow the configuration's order, and
/// elements in both appear where the configuration puts them relative to each other.
fn merged_order<'a>(
    l: &[(Pe, &'a Value)],
    r: &[(Pe, &'a Value)],
) -> Vec<(Option<&'a Value>, Option<&'a Value>)> {
    let lmap: BTreeMap<&Pe, &Value> = l.iter().map(|(p, v)| (p, *v)).collect();
    let rmap: BTreeMap<&Pe, &Value> = r.iter().map(|(p, v)| (p, *v)).collect();
    let shared: Vec<&Pe> = r
        .iter()
        .map(|(p, _)| p)
        .filter(|p| lmap.contains_key(p))
        .collect();
    let mut next_shared = 0;
    let mut out = Vec::with_capacity(l.len().max(r.len()));
    let (mut i, mut j) = (0, 0);
    while i < l.len() || j < r.len() {
        if i < l.len() && j < r.len() && l[i].0 == r[j].0 {
            out.push((Some(l[i].1), Some(r[j].1)));
            i += 1;
            j += 1;
            next_shared += 1;
            continue;
        }
        if i < l.len() {
            let pe = &l[i].0;
            if !rmap.contains_key(pe) {
                out.push((Some(l[i].1), None));
                i += 1;
                continue;
            }
            // A shared element that is not the next one in the configuration's order, or one
            // the configuration already placed: it is emitted from the configuration's side.
            if shared.get(next_shared) != Some(&pe) || j >= r.len() {
                i += 1;
                continue;
            }
        }
        if j < r.len() {
            let pe = &r[j].0;
            out.push((lmap.get(pe).copied(), Some(r[j].1)));
            if shared.get(next_shared) == Some(&pe) {
                next_shared += 1;
            }
            j += 1;
        }
    }
    out
}

/// `v` without `null` map values (a `null` in an applied configuration means "absent").
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Remove every path of `set` from `v` (a list element path removes the element).
pub(crate) fn remove_paths(v: &mut Value, set: &FieldSet, schema: &Schema) {
    fn remove(v: &mut Value, p: &[Pe], schema: &Schema, spath: &str) {
        let Some((pe, rest)) = p.split_first() else {
            return;
        };
        if let Some(name) = pe.strip_prefix("f:") {
            let Some(m) = v.as_object_mut() else {
                return;
            };
            if rest.is_empty() {
                m.remove(name);
            } else if let Some(child) = m.get_mut(name) {
                remove(child, rest, schema, &format!("{spath}.{name}"));
            }
            return;
        }
        let Some(items) = v.as_array_mut() else {
            return;
        };
        let lt = schema.list_type(spath);
        let pos = if let Some(idx) = pe.strip_prefix("i:") {
            idx.parse::<usize>().ok().filter(|i| *i < items.len())
        } else {
            items
                .iter()
                .position(|it| item_pe(&lt, it, spath).is_ok_and(|q| &q == pe))
        };
        if let Some(pos) = pos {
            if rest.is_empty() {
                items.remove(pos);
            } else {
                remove(&mut items[pos], rest, schema, spath);
            }
        }
    }
    // A path below another removed path goes with it (removing it first could change the
    // key of the element that holds it).
    for p in set.iter() {
        if (1..p.len()).any(|n| set.0.contains(&p[..n])) {
            continue;
        }
        remove(v, p, schema, "");
    }
}
