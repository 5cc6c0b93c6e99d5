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
/// Also removes the per-namespace configuration directories (`/etc/netns/<name>`, where
/// [`super::Topology::set_resolv_conf`] writes) of dead owners, whether or not their namespace
/// still exists.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let stale = stale_names(prefix, &list_netns()?, pid_alive);
    for ns in &stale {
        tracing::info!(ns, "removing stale network namespace");
        delete_netns(ns)?;
    }
    for dir in sweep_config_dirs(Path::new(NETNS_ETC), prefix, pid_alive) {
        tracing::info!(dir = %dir.display(), "removed stale namespace configuration");
    }
    Ok(stale)
}

/// Where `ip netns exec` finds per-namespace files to bind-mount over `/etc`.
pub const NETNS_ETC: &str = "/etc/netns";

/// Removes the directories under `base` named like namespaces of dead owners; returns them.
/// A missing `base` or an entry that cannot be removed is skipped (the next sweep retries).
pub fn sweep_config_dirs(
    base: &Path,
    prefix: &str,
    alive: impl Fn(u32) -> bool,
) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    stale_names(prefix, &names, alive)
        .into_iter()
        .map(|n| base.join(n))
        .filter(|dir| match std::fs::remove_dir_all(dir) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(dir = %dir.display(), %err, "cannot remove stale namespace configuration");
                false
            }
        })
        .collect()
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

    #[test]
    fn config_dirs_of_dead_owners_are_swept_and_others_kept() {
        let base = std::env::temp_dir().join(format!("svn-sweep-{}", std::process::id()));
        let me = std::process::id();
        for d in ["svn-1-aa-cli", "svn-2-bb-cli", "other-1-x"] {
            std::fs::create_dir_all(base.join(d)).expect("mkdir");
            std::fs::write(base.join(d).join("resolv.conf"), "nameserver 10.96.0.10\n")
                .expect("write");
        }
        std::fs::create_dir_all(base.join(format!("svn-{me}-cc-cli"))).expect("mkdir");
        let removed = sweep_config_dirs(&base, "svn", |pid| pid == 2);
        assert_eq!(removed, vec![base.join("svn-1-aa-cli")]);
        assert!(!base.join("svn-1-aa-cli").exists());
        for kept in [
            "svn-2-bb-cli".to_string(),
            "other-1-x".into(),
            format!("svn-{me}-cc-cli"),
        ] {
            assert!(base.join(&kept).exists(), "{kept}");
        }
        std::fs::remove_dir_all(&base).expect("cleanup");
        assert!(
            sweep_config_dirs(&base, "svn", |_| false).is_empty(),
            "missing base"
        );
    }
}
