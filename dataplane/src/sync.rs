//! Driving syncs: [`proxier`] turns changed Services into one transaction and falls back to full
//! syncs after failures; [`daemon`] is `svcnet-proxy run` (watches, the bounded-frequency sync
//! loop, health and metrics servers).

pub mod daemon;
pub mod proxier;
