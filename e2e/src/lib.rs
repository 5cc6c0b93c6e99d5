//! svcnet's end-to-end suites live in `tests/`; this library is empty on purpose.
//!
//! The suites use the test kit (`svcnet-testkit`: API backends, network namespaces, svcnet-echo),
//! the embedded server (`svcnet-apiserver`) and the crates under test. Binaries of other packages
//! (`svcnet`, `svcnet-controller`, `svcnet-proxy`, `svcnet-echo`) are found with
//! `testkit::netns::bins::locate`, so build them first: `cargo build --workspace --bins`.
