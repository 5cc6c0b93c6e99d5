//! Effects on the kernel: nftables transactions through `nft -f -` or in-process libnftables
//! ([`nft`], [`libnft`]) and removal of stale UDP/SCTP conntrack entries ([`conntrack`]).

pub mod conntrack;
pub mod fake_nft;
pub mod libnft;
pub mod nft;
