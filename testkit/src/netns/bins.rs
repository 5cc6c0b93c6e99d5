//! Finding the workspace's binaries (`svcnet-echo`, `svcnet-proxy`, …) from a test or the demo.
//!
//! * Inside this crate's own tests and benches, prefer `env!("CARGO_BIN_EXE_svcnet-echo")`:
//!   Cargo builds the binary before the test and hands over its exact path.
//! * Everywhere else (tests of other crates, the `svcnet demo` binary) call [`locate`]. It tries,
//!   in order: the environment variable `SVCNET_E2E_BIN_<NAME>` (upper case, `-` → `_`, e.g.
//!   `SVCNET_E2E_BIN_SVCNET_PROXY`), then the directory of the running executable, then its
//!   parent when that directory is `deps/` (test binaries live in `target/<profile>/deps/`, the
//!   workspace's binaries in `target/<profile>/`). The binary must have been built already:
//!   `cargo build --bins --workspace` (a workspace-wide `cargo test`/`nextest run` does this).

use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// The environment variable that overrides the location of binary `name`.
pub fn env_var(name: &str) -> String {
    format!(
        "SVCNET_E2E_BIN_{}",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

/// Candidate paths for `name` next to the executable at `exe`.
pub fn candidates(exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.parent() {
        out.push(dir.join(name));
        if dir.file_name().is_some_and(|d| d == "deps") {
            if let Some(profile_dir) = dir.parent() {
                out.push(profile_dir.join(name));
            }
        }
    }
    out
}

/// Finds the workspace binary `name` (see the module docs for the search order).
pub fn locate(name: &str) -> Result<PathBuf> {
    let var = env_var(name);
    let mut tried = Vec::new();
    if let Some(p) = std::env::var_os(&var) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the running executable", e))?;
    for p in candidates(&exe, name) {
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    Err(Error::BinaryNotFound {
        name: name.to_string(),
        tried,
        env: var,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_next_to_the_exe_and_above_deps() {
        let c = candidates(
            Path::new("/w/target/debug/deps/netns_harness-abc"),
            "svcnet-proxy",
        );
        assert_eq!(
            c,
            vec![
                PathBuf::from("/w/target/debug/deps/svcnet-proxy"),
                PathBuf::from("/w/target/debug/svcnet-proxy")
            ]
        );
        let c = candidates(Path::new("/w/target/release/svcnet"), "svcnet-echo");
        assert_eq!(c, vec![PathBuf::from("/w/target/release/svcnet-echo")]);
        assert_eq!(env_var("svcnet-proxy"), "SVCNET_E2E_BIN_SVCNET_PROXY");
    }
}
