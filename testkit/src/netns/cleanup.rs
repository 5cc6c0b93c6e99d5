//! Removing what crashed runs left behind.

use std::path::Path;

use super::error::Result;
use super::exec::{delete_netns, list_netns};
use super::plan::owner_pid;

/// The namespace prefix [`super::TopologyBuilder`] uses unless told otherwise.
pub const DEFAULT_PREFIX: &str = "svn";

/// Whether a process with this pid exists.
fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Which of `names` are leftovers: they carry `prefix`, and the pid encoded in them is not
/// running (and is not us). Pure, given `alive`.
pub fn stale_names(prefix: &str, names: &[String], alive: impl Fn(u32) -> bool) -> Vec<String> {
    let me = std::process::id();
    names
        .iter()
        .filter(|n| owner_pid(prefix, n).is_some_and(|pid| pid != me && !alive(pid)))
        .cloned()
        .collect()
}

/// Deletes namespaces named `<prefix>-<pid>-…` whose creating process is dead, killing any
/// process still inside them (e.g. a proxy or echo server orphaned by a SIGKILLed test).
/// Returns the names it removed. Namespaces of live processes are never touched, so this is
/// safe while other tests run. (A recycled pid only delays the cleanup until that pid dies.)
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let stale = stale_names(prefix, &list_netns()?, pid_alive);
    for ns in &stale {
        tracing::info!(ns, "removing stale network namespace");
        delete_netns(ns)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_owners_with_our_prefix_are_stale() {
        let me = std::process::id();
        let names: Vec<String> = [
            "svn-1-aa-lan".to_string(),
            "svn-2-bb-node1".to_string(),
            format!("svn-{me}-cc-node1"),
            "other-1-aa-lan".to_string(),
            "svn-x-lan".to_string(),
            "cni-1234".to_string(),
        ]
        .into();
        let stale = stale_names("svn", &names, |pid| pid == 2);
        assert_eq!(stale, vec!["svn-1-aa-lan".to_string()]);
    }
}
