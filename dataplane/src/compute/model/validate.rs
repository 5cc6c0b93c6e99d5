//! Validation of what goes into a transaction: names and rule fragments are checked so that no
//! object data can smuggle script syntax (a newline, an unbalanced brace) into `nft -f`.

use super::Op;
use crate::compute::names;
use crate::error::{Error, Result};

/// Validates one element of an `add element` (the checks [`Op::validate`] applies to each).
pub fn validate_element(key: &str, value: Option<&str>) -> Result<()> {
    if key.contains(['{', '}', ',']) {
        return Err(bad("element key", key));
    }
    check_fragment("element key", key)?;
    if let Some(v) = value {
        if v.contains(['{', '}', ',']) {
            return Err(bad("element value", v));
        }
        check_fragment("element value", v)?;
    }
    Ok(())
}

/// Validates a set or map name.
pub fn validate_set_name(name: &str) -> Result<()> {
    check_name("set name", name)
}

fn bad(what: &'static str, value: &str) -> Error {
    Error::InvalidFragment {
        what,
        value: value.to_string(),
    }
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    if names::is_valid_name(name) {
        Ok(())
    } else {
        Err(bad(what, name))
    }
}

fn check_fragment(what: &'static str, s: &str) -> Result<()> {
    // Braces may only appear balanced (anonymous sets inside rules); elements never contain braces.
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return Err(bad(what, s));
        }
    }
    if depth != 0 || !names::is_valid_fragment(s) {
        return Err(bad(what, s));
    }
    Ok(())
}

pub(super) fn validate_op(op: &Op) -> Result<()> {
    match op {
        Op::AddTable { .. } => Ok(()),
        Op::AddChain { name, .. } | Op::FlushChain { name, .. } | Op::DeleteChain { name, .. } => {
            check_name("chain name", name)
        }
        Op::AddRule { chain, rule, .. } => {
            check_name("chain name", chain)?;
            check_fragment("rule", rule)
        }
        Op::AddSet { name, spec, .. } => {
            check_name("set name", name)?;
            check_fragment("set key", &spec.key)?;
            if let Some(v) = &spec.value {
                check_fragment("map value", v)?;
            }
            Ok(())
        }
        Op::FlushSet { name, .. } | Op::DeleteSet { name, .. } => check_name("set name", name),
        Op::AddElements { set, elements, .. } => {
            check_name("set name", set)?;
            for (k, v) in elements {
                validate_element(k, v.as_deref())?;
            }
            Ok(())
        }
        Op::DeleteElements { set, keys, .. } => {
            check_name("set name", set)?;
            for k in keys {
                if k.contains(['{', '}', ',']) {
                    return Err(bad("element key", k));
                }
                check_fragment("element key", k)?;
            }
            Ok(())
        }
    }
}
