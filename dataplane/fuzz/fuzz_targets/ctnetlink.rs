//! Fuzz target: arbitrary bytes as a read from the ctnetlink socket → `apply::ctnetlink::parse`.
//!
//! Run from `dataplane/`: `RUSTC_BOOTSTRAP=1 cargo fuzz run ctnetlink -- -max_total_time=600`.
//! Seeds: `python3 make_seeds.py` writes them to `corpus/ctnetlink/`.
//!
//! Asserts: nothing panics; every flow parsed has both tuples of one address family; and a flow
//! written back as a message parses to itself, as does the delete request naming it (its
//! original tuple).
#![no_main]

use dataplane::apply::ctnetlink::{delete_request, flow_message, parse, Reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(replies) = parse(data) else {
        return;
    };
    for r in replies {
        let Reply::Flow(f) = r else { continue };
        assert_eq!(f.orig.src.is_ipv4(), f.orig.dst.is_ipv4(), "mixed original tuple");
        assert_eq!(f.reply.src.is_ipv4(), f.reply.dst.is_ipv4(), "mixed reply tuple");
        if f.orig.src.is_ipv4() != f.reply.src.is_ipv4() {
            continue;
        }
        let mut buf = Vec::new();
        flow_message(&mut buf, &f, 1);
        assert_eq!(parse(&buf).expect("own message parses"), vec![Reply::Flow(f)]);
        let mut del = Vec::new();
        delete_request(&mut del, &f, 2);
        assert!(parse(&del).is_ok(), "own delete request parses");
    }
});
