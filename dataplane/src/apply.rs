//! Effects on the kernel: nftables transactions through `nft -f -` or in-process libnftables
//! ([`nft`], [`libnft`]) and removal of stale UDP conntrack entries ([`conntrack`]) over
//! ctnetlink ([`ctnetlink`] messages, [`conntrack_socket`] I/O).

pub mod conntrack;
pub mod conntrack_socket;
pub mod ctnetlink;
pub mod fake_nft;
pub mod libnft;
pub mod nft;
