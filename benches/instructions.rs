//! Instructions per metadata-only request (parse the query and `If-None-Match`, resolve,
//! render the JSON and ETag), counted by callgrind: unlike wall time, the counts repeat on
//! a busy machine. Run `benches/callgrind.sh`.
//!
//! Requests run in the `#[inline(never)]` function `counted`, so callgrind counts it
//! alone (`--toggle-collect`), never the setup (building up to 100,000 rules). With
//! `FLEETPACK_INSTRUCTIONS_RULES` and `FLEETPACK_INSTRUCTIONS_TAGS` set, this binary builds
//! that fleet (with `FLEETPACK_INSTRUCTIONS_HISTORY` releases kept per app and channel,
//! default 1) and header and calls `counted` `FLEETPACK_INSTRUCTIONS_ITERATIONS` times
//! (default 1000); without them, as under `cargo bench`, it runs every fleet size with 0
//! and 256 tags once as a check and prints one line.

mod fleet;

use std::env;
use std::hint::black_box;

use fleetpack_resolver::RuleSet;

use fleet::{
    FLEET_SIZES, TYPICAL_QUERY, header_lines, metadata_request, rule_set, rule_set_with_history,
    typical_if_none_match,
};

/// One request; returns the body's length (0 for 304).
#[inline(never)]
fn counted(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    metadata_request(rules, TYPICAL_QUERY, if_none_match).map_or(0, |body| body.len())
}

fn number(name: &str) -> Option<usize> {
    let text = env::var(name).ok()?;
    Some(
        text.parse()
            .unwrap_or_else(|_| panic!("{name} is `{text}`, not a number")),
    )
}

fn main() {
    let (Some(size), Some(tags)) = (
        number("FLEETPACK_INSTRUCTIONS_RULES"),
        number("FLEETPACK_INSTRUCTIONS_TAGS"),
    ) else {
        for size in FLEET_SIZES {
            let rules = rule_set(size);
            for tags in [0, 256] {
                let header = typical_if_none_match(&rules, tags);
                assert!(
                    counted(&rules, &header_lines(&header)) > 0,
                    "a 200 response"
                );
            }
        }
        println!("instructions: every case ran once; benches/callgrind.sh counts them");
        return;
    };
    let iterations = number("FLEETPACK_INSTRUCTIONS_ITERATIONS").unwrap_or(1000);
    let history = number("FLEETPACK_INSTRUCTIONS_HISTORY").unwrap_or(1);
    let rules = rule_set_with_history(size, history);
    let header = typical_if_none_match(&rules, tags);
    let lines = header_lines(&header);
    // One request outside the counted function pays one-time costs (the hash maps'
    // random keys, the allocator's first chunks).
    metadata_request(&rules, TYPICAL_QUERY, &lines);
    for _ in 0..iterations {
        black_box(counted(black_box(&rules), black_box(&lines)));
    }
    println!("{size} rules, {history} releases each, {tags} tags: {iterations} iterations");
}
