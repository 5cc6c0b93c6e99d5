//! `svcnet-crdgen`: writes every svcnet CRD to `manifests/crds/<name>.yaml`.
//!
//! Usage: `svcnet-crdgen [OUT_DIR]` (default: the workspace's `manifests/crds/`), or
//! `svcnet-crdgen --check [OUT_DIR]` to exit 1 when the files on disk differ from the Rust types.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let mut check = false;
    let mut out: Option<PathBuf> = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("usage: svcnet-crdgen [--check] [OUT_DIR]");
                return Ok(());
            }
            other => out = Some(PathBuf::from(other)),
        }
    }
    let dir =
        out.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds"));
    let files = crds::render_all()?;
    if check {
        let mut stale = Vec::new();
        for (name, text) in &files {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        if !stale.is_empty() {
            eprintln!(
                "stale CRD manifests (run svcnet-crdgen): {}",
                stale.join(", ")
            );
            std::process::exit(1);
        }
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in files {
        let path = dir.join(&name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
