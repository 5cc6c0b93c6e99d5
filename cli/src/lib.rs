//! The `svcnet` command's library: [`demo`], README's main job (embedded API server, the
//! controller, a two-node network-namespace cluster with svcnet-proxy, example Services and a
//! report). The `svcnet apiserver` subcommand lives in `svcnet-apiserver`.

pub mod demo;
