//! Instructions per metadata-only request (parse the query and `If-None-Match`, resolve,
//! render the JSON and ETag), counted by callgrind: unlike wall time, the counts repeat on
//! a busy machine. Run `benches/callgrind.sh`.
//!
//! Each case is its own `#[inline(never)]` function, so callgrind counts that function
//! alone (`--toggle-collect`), never the setup (building up to 100,000 rules). With
//! `FLEETPACK_INSTRUCTIONS_CASE=<function name>` this binary builds that case's fleet and
//! calls the function `FLEETPACK_INSTRUCTIONS_ITERATIONS` times (default 1000); without it,
//! as under `cargo bench`, it calls every case once as a check and prints one line.

mod fleet;

use std::env;
use std::hint::black_box;

use fleetpack_resolver::RuleSet;

use fleet::{
    FLEET_SIZES, TYPICAL_QUERY, if_none_match, metadata_request, rule_set, typical_known_digests,
};

type Case = fn(&RuleSet, &[&[u8]]) -> usize;

/// (function name, rules, If-None-Match tags, function). `benches/callgrind.sh` lists the same names.
const CASES: [(&str, usize, usize, Case); 6] = [
    (
        "metadata_path_10_rules_0_tags",
        10,
        0,
        metadata_path_10_rules_0_tags,
    ),
    (
        "metadata_path_10_rules_256_tags",
        10,
        256,
        metadata_path_10_rules_256_tags,
    ),
    (
        "metadata_path_1000_rules_0_tags",
        1_000,
        0,
        metadata_path_1000_rules_0_tags,
    ),
    (
        "metadata_path_1000_rules_256_tags",
        1_000,
        256,
        metadata_path_1000_rules_256_tags,
    ),
    (
        "metadata_path_100000_rules_0_tags",
        100_000,
        0,
        metadata_path_100000_rules_0_tags,
    ),
    (
        "metadata_path_100000_rules_256_tags",
        100_000,
        256,
        metadata_path_100000_rules_256_tags,
    ),
];

/// One request; returns the body's length (0 for 304).
#[inline(always)]
fn request(rules: &RuleSet, if_none_match: &[&[u8]], size: usize, tags: usize) -> usize {
    // Besides catching a mixed-up fixture, these checks make each case's body differ, so
    // LLVM cannot merge the cases into one symbol that callgrind would not tell apart.
    assert_eq!(rules.len(), size);
    assert_eq!(if_none_match.is_empty(), tags == 0);
    metadata_request(rules, TYPICAL_QUERY, if_none_match).map_or(0, |body| body.len())
}

#[inline(never)]
fn metadata_path_10_rules_0_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 10, 0)
}

#[inline(never)]
fn metadata_path_10_rules_256_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 10, 256)
}

#[inline(never)]
fn metadata_path_1000_rules_0_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 1_000, 0)
}

#[inline(never)]
fn metadata_path_1000_rules_256_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 1_000, 256)
}

#[inline(never)]
fn metadata_path_100000_rules_0_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 100_000, 0)
}

#[inline(never)]
fn metadata_path_100000_rules_256_tags(rules: &RuleSet, if_none_match: &[&[u8]]) -> usize {
    request(rules, if_none_match, 100_000, 256)
}

/// `If-None-Match` lines of `tags` tags, led by the digests of two binaries the query
/// selects, so that the plan marks those not modified.
fn header(rules: &RuleSet, tags: usize) -> String {
    let known = typical_known_digests(rules);
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    if_none_match(tags, &known)
}

fn lines(header: &str) -> Vec<&[u8]> {
    if header.is_empty() {
        vec![]
    } else {
        vec![header.as_bytes()]
    }
}

fn main() {
    let Ok(name) = env::var("FLEETPACK_INSTRUCTIONS_CASE") else {
        for size in FLEET_SIZES {
            let rules = rule_set(size);
            for (_, _, tags, case) in CASES.iter().filter(|case| case.1 == size) {
                let header = header(&rules, *tags);
                assert!(case(&rules, &lines(&header)) > 0, "a 200 response");
            }
        }
        println!("instructions: every case ran once; benches/callgrind.sh counts them");
        return;
    };
    let iterations: u64 = env::var("FLEETPACK_INSTRUCTIONS_ITERATIONS")
        .map_or(Ok(1000), |text| text.parse())
        .expect("FLEETPACK_INSTRUCTIONS_ITERATIONS is a number");
    let Some(&(_, size, tags, case)) = CASES.iter().find(|(known, ..)| *known == name) else {
        let names: Vec<&str> = CASES.iter().map(|(name, ..)| *name).collect();
        panic!("unknown case `{name}`; one of {names:?}");
    };
    let rules = rule_set(size);
    let header = header(&rules, tags);
    let lines = lines(&header);
    // One request outside the counted function pays one-time costs (the hash maps'
    // random keys, the allocator's first chunks).
    metadata_request(&rules, TYPICAL_QUERY, &lines);
    for _ in 0..iterations {
        black_box(case(black_box(&rules), black_box(&lines)));
    }
    println!("{name}: {iterations} iterations");
}
