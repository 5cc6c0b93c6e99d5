//! Fails when `manifests/crds/` does not match the Rust CRD types.
//! Fix with `cargo run -p svcnet-crds --bin svcnet-crdgen`.

use std::path::PathBuf;

#[test]
fn committed_crd_yaml_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
    let files = crds::render_all().expect("CRDs render");
    assert_eq!(files.len(), 4);
    for (name, text) in files {
        let path = dir.join(&name);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} missing ({e}); run svcnet-crdgen", path.display()));
        assert!(
            on_disk == text,
            "{} is stale; run `cargo run -p svcnet-crds --bin svcnet-crdgen`",
            path.display()
        );
    }
    // Nothing else lives in manifests/crds/ that the generator would not write.
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .expect("manifests/crds exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.ends_with(".yaml") && !crds::render_all().unwrap().iter().any(|(f, _)| f == n)
        })
        .collect();
    extra.sort();
    assert!(
        extra.is_empty(),
        "unexpected files in manifests/crds: {extra:?}"
    );
}

#[test]
fn generated_yaml_parses_back_into_crds() {
    for (name, text) in crds::render_all().unwrap() {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{}.yaml", crd.metadata.name.unwrap()), name);
    }
}
