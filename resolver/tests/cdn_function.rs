//! The CloudFront Function (`CacheKeyFunction` in cloudformation/fleetpack.yaml) against
//! the resolver's canonical form (`canonical_request`) on the same generated inputs,
//! compared exactly: tens of thousands of queries, rollout states and `If-None-Match`
//! values made to hit the edges of what the origin accepts.
//! The generator is seeded, so a failure reproduces. The function runs in Node.js
//! through tests/cache_key_function.mjs, taken from the template as deployed.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use fleetpack_resolver::{
    DeviceQuery, MAX_ENTITY_TAGS, MAX_IDENT_LEN, MAX_IF_NONE_MATCH_BYTES, MAX_PARAMETERS,
    MAX_QUERY_BYTES, RolloutState, canonical_request, is_member,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

const SEED: u64 = 20_260_517;
/// Rollout states the queries are spread over, and queries per state.
const STATES: usize = 40;
const QUERIES_PER_STATE: usize = 600;
const IF_NONE_MATCH_VALUES: usize = 24_000;
/// Disagreements shown in full when the test fails.
const SHOWN: usize = 20;

const IDENT: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

/// Names that are prefixes of one another, with endings that sort before `=` (`-`, `.`,
/// digits) or after it (`_`, letters), or that are JavaScript property names.
const TRICKY_NAMES: &[&str] = &[
    "p",
    "p1",
    "p-",
    "p.",
    "p_",
    "pa",
    "p1a",
    "attr",
    "attrp",
    "attrp1",
    "attrp-",
    "attrp.",
    "os1",
    "os.",
    "cpuarch1",
    "cohort1",
    "devicekey1",
    "payloadtype_",
    "9",
    "10",
    "-",
    "_",
    ".",
    "__proto__",
    "constructor",
    "hasOwnProperty",
    "toString",
    "valueOf",
];
const CHANNELS: &[&str] = &["prod", "beta", "nightly", "early_access", "v1.2-rc"];
/// Apps of rollouts: the OS images of the architectures queries mostly send (the first
/// four), apps queries pin, and names of parameters that are not pins (`os`, `attrp`, ...).
const APPS: &[&str] = &[
    "os_armv8",
    "os_armv7",
    "os_x86_64",
    "os_arm_v8.2-a",
    "scoreboard",
    "p",
    "p1",
    "attr",
    "__proto__",
    "constructor",
    "os",
    "cpuarch",
    "devicekey",
    "installed",
    "cohort",
    "payloadtype",
    "attrp",
    "attrgamer",
];
/// The OS images of [`APPS`].
const OS_APPS: &[&str] = APPS.split_at(4).0;
/// Device attributes of rollouts and of queries.
const ATTRIBUTES: &[&str] = &["gamer", "cellular", "camera", "p", "p1", "__proto__"];
const PAYLOADS: &[&str] = &["fullPayload", "metadataOnly"];
const BAD_PAYLOADS: &[&str] = &["full", "tarball", "json"];
/// Endings that make names sharing a prefix: `p`, `p1`, `p-`, `p.`, `p_`, `pa`.
const ENDINGS: &[&str] = &["", "1", "-", ".", "_", "a", "1a", "10"];
/// Characters a name or value may not hold, and percent-encoding, good and bad.
const ODD_TEXT: &[&str] = &[
    " ", "+", "/", "*", ";", ":", "~", "!", "'", "\"", "#", "é", "%41", "%2B", "%2", "%zz", "%",
    "=",
];
const ODD_TAGS: &[&str] = &[
    "\"*\"",
    "W/\"*\"",
    "w/\"abc\"",
    "W/abc",
    "\"a,b\"",
    "\"abc",
    "abc\"",
    "\"a\"b",
    "\"a\" \"b\"",
    "a b",
    "a/b",
    "é",
    "a\u{1}b",
    "a\r\nb",
    "\"a\tb\"",
    "W/ \"a\"",
    "W/\"\"",
    "*a",
    "**",
    "\"\"\"",
    "+",
    "a\u{b}",
];

/// Inputs that share one rollout state, as tests/cache_key_function.mjs evaluates them.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    rollouts: Vec<RolloutState>,
    queries: Vec<String>,
    if_none_match: Vec<String>,
}

/// The function's rewrites of one group's inputs: a query, or `None` for "forwarded as
/// sent"; the `installed=` list an `If-None-Match` moved into, or `None` for "the header
/// stays as sent".
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rewrites {
    queries: Vec<Option<String>>,
    if_none_match: Vec<Option<String>>,
}

fn function_rewrites(groups: &[Group]) -> Vec<Rewrites> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the resolver is in the workspace");
    let mut inputs = tempfile::NamedTempFile::new().expect("a temporary file");
    let json = serde_json::to_vec(groups).expect("inputs as JSON");
    inputs.write_all(&json).expect("inputs written");
    let output = Command::new("node")
        .arg(workspace.join("tests/cache_key_function.mjs"))
        .arg(workspace.join("cloudformation/fleetpack.yaml"))
        .arg("--evaluate")
        .arg(inputs.path())
        .output()
        .unwrap_or_else(|error| panic!("cannot run node ({error}); install Node.js"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "node failed: {stderr}");
    let rewrites: Vec<Rewrites> =
        serde_json::from_slice(&output.stdout).expect("the function's rewrites as JSON");
    assert_eq!(rewrites.len(), groups.len());
    for (group, rewrites) in groups.iter().zip(&rewrites) {
        assert_eq!(rewrites.queries.len(), group.queries.len());
        assert_eq!(rewrites.if_none_match.len(), group.if_none_match.len());
    }
    rewrites
}

/// Fails listing the disagreements, each with its input and both outputs.
fn assert_no_disagreement(what: &str, inputs: usize, disagreements: &[String]) {
    assert!(
        disagreements.is_empty(),
        "the function and the resolver disagree on {} of {inputs} {what}; the first {}:\n{}",
        disagreements.len(),
        SHOWN.min(disagreements.len()),
        disagreements[..SHOWN.min(disagreements.len())].join("\n")
    );
}

fn disagreement(
    input: &str,
    rollouts: &[RolloutState],
    resolver: &Option<String>,
    function: &Option<String>,
) -> String {
    let state = serde_json::to_string(rollouts).expect("a state as JSON");
    format!(
        "input {input:?} with rollouts {state}:\n  resolver {resolver:?}\n  function {function:?}"
    )
}

#[test]
fn function_and_resolver_agree_on_generated_queries() {
    let mut choices = Choices::new(SEED);
    let groups: Vec<Group> = (0..STATES)
        .map(|n| {
            // The first state has no rollout in progress.
            let rollouts = if n == 0 {
                Vec::new()
            } else {
                rollout_state(&mut choices)
            };
            let queries = (0..QUERIES_PER_STATE)
                .map(|_| query(&mut choices, &rollouts))
                .collect();
            Group {
                rollouts,
                queries,
                if_none_match: Vec::new(),
            }
        })
        .collect();
    let mut disagreements = Vec::new();
    let mut keys = KeyOutcomes::default();
    for (group, rewrites) in groups.iter().zip(function_rewrites(&groups)) {
        for (raw, function) in group.queries.iter().zip(&rewrites.queries) {
            let resolver = canonical_request(raw, None, &group.rollouts).map(|moved| moved.query);
            if resolver != *function {
                disagreements.push(disagreement(raw, &group.rollouts, &resolver, function));
            }
            keys.count(raw, &group.rollouts, &resolver);
        }
    }
    assert_no_disagreement("queries", STATES * QUERIES_PER_STATE, &disagreements);
    // The generated keys took every way through the rollouts, often enough.
    let KeyOutcomes {
        listed,
        left_out,
        forwarded,
    } = keys;
    assert!(
        listed >= 400 && left_out >= 2000 && forwarded >= 80,
        "{keys:?}"
    );
}

/// What became of the accepted queries with a device key.
#[derive(Debug, Default)]
struct KeyOutcomes {
    /// Rewritten with the rollouts the device is in that the query can select.
    listed: usize,
    /// Rewritten without some rollout the device is in, one the query cannot select.
    left_out: usize,
    /// Forwarded as sent: more such rollouts than a `cohort` value holds, or too long.
    forwarded: usize,
}

impl KeyOutcomes {
    fn count(&mut self, raw: &str, rollouts: &[RolloutState], canonical: &Option<String>) {
        let Some(key) = DeviceQuery::parse(raw)
            .ok()
            .and_then(|query| query.device_key().map(str::to_owned))
        else {
            return;
        };
        let Some(canonical) = canonical else {
            // Percent-encoding is forwarded whatever the key.
            self.forwarded += usize::from(!raw.contains('%'));
            return;
        };
        let listed = DeviceQuery::parse(canonical)
            .expect("a rewritten query is accepted")
            .cohorts()
            .len();
        let mut memberships: Vec<&str> = rollouts
            .iter()
            .filter(|rollout| is_member(&rollout.id, &key, rollout.percent))
            .map(|rollout| rollout.id.as_str())
            .collect();
        memberships.sort_unstable();
        memberships.dedup();
        self.listed += usize::from(listed > 0);
        self.left_out += usize::from(listed < memberships.len());
    }
}

#[test]
fn function_and_resolver_agree_on_generated_if_none_match() {
    let mut choices = Choices::new(SEED + 1);
    let group = Group {
        rollouts: Vec::new(),
        queries: Vec::new(),
        if_none_match: (0..IF_NONE_MATCH_VALUES)
            .map(|_| if_none_match(&mut choices))
            .collect(),
    };
    let rewrites = function_rewrites(std::slice::from_ref(&group));
    let disagreements: Vec<String> = group
        .if_none_match
        .iter()
        .zip(&rewrites[0].if_none_match)
        .filter_map(|(value, function)| {
            let resolver = moved_list(value);
            (resolver != *function).then(|| disagreement(value, &[], &resolver, function))
        })
        .collect();
    assert_no_disagreement("If-None-Match values", IF_NONE_MATCH_VALUES, &disagreements);
}

/// The `installed=` list the resolver moves `value` into, for the query the function
/// evaluates headers with; `None` when the header stays.
fn moved_list(value: &str) -> Option<String> {
    let moved = canonical_request("cpuArch=armv8", Some(value), &[]).expect("an accepted query");
    let query = DeviceQuery::parse(&moved.query).expect("accepted");
    let list = query.installed().map(str::to_owned);
    assert_eq!(list.is_some(), moved.drops_if_none_match, "{value:?}");
    list
}

/// The function's cohorts against `is_member` itself, not the resolver's use of it: a
/// gamer's armv8 query on prod lists the OS and scoreboard rollouts it is in, never the
/// armv7 one.
#[test]
fn function_cohorts_are_the_rollout_memberships() {
    const SELECTED: usize = 2;
    let mut choices = Choices::new(SEED + 2);
    let keys: Vec<String> = (0..10_000).map(|_| device_key(&mut choices)).collect();
    let groups: Vec<Group> = [1, 10, 50]
        .into_iter()
        .map(|percent| Group {
            rollouts: [
                ("os_armv8", &[][..]),
                ("scoreboard", &["gamer"][..]),
                ("os_armv7", &[][..]),
            ]
            .into_iter()
            .map(|(app, attributes)| RolloutState {
                id: choices.text(HEX, 8),
                percent,
                app: app.to_owned(),
                channel: "prod".to_owned(),
                attributes: attributes.iter().map(|&name| name.to_owned()).collect(),
            })
            .collect(),
            queries: keys
                .iter()
                .map(|key| format!("cpuArch=armv8&attrGamer=prod&deviceKey={key}"))
                .collect(),
            if_none_match: Vec::new(),
        })
        .collect();
    for (group, rewrites) in groups.iter().zip(function_rewrites(&groups)) {
        let mut members = [0; 3];
        let mut disagreements = Vec::new();
        for (key, function) in keys.iter().zip(&rewrites.queries) {
            let mut cohorts = Vec::new();
            for (at, (rollout, count)) in group.rollouts.iter().zip(&mut members).enumerate() {
                if is_member(&rollout.id, key, rollout.percent) {
                    *count += 1;
                    if at < SELECTED {
                        cohorts.push(rollout.id.as_str());
                    }
                }
            }
            cohorts.sort_unstable();
            let expected = if cohorts.is_empty() {
                "attrgamer=prod&cpuarch=armv8&installed=".to_owned()
            } else {
                format!(
                    "attrgamer=prod&cohort={}&cpuarch=armv8&installed=",
                    cohorts.join(".")
                )
            };
            if function.as_ref() != Some(&expected) {
                let expected = Some(expected);
                disagreements.push(disagreement(key, &group.rollouts, &expected, function));
            }
        }
        let percent = group.rollouts[0].percent;
        assert_no_disagreement(&format!("keys at {percent}%"), keys.len(), &disagreements);
        assert!(
            members.iter().all(|&count| 0 < count && count < keys.len()),
            "{percent}%: members {members:?}"
        );
    }
}

/// A seeded source of the generators' choices.
struct Choices(ChaCha8Rng);

impl Choices {
    fn new(seed: u64) -> Self {
        Choices(ChaCha8Rng::seed_from_u64(seed))
    }

    /// A number in `0..bound` (the bias of the modulo is of no matter here).
    fn below(&mut self, bound: usize) -> usize {
        (self.0.next_u64() % bound as u64) as usize
    }

    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn text(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len).map(|_| char::from(self.pick(alphabet))).collect()
    }

    /// `text` as sent, or with every letter in a random case.
    fn any_case(&mut self, text: &str) -> String {
        if self.chance(50) {
            return text.to_owned();
        }
        text.chars()
            .map(|c| {
                if self.chance(50) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for at in (1..items.len()).rev() {
            items.swap(at, self.below(at + 1));
        }
    }
}

fn rollout_state(choices: &mut Choices) -> Vec<RolloutState> {
    // A crowded state has many rollouts far on, all of the app and channel that
    // `cpuArch=armv8` selects: most devices there are in more rollouts their query can
    // select than a `cohort` value holds. Elsewhere half the rollouts are of an OS image
    // on prod, which most queries of its architecture select, half of any app and channel.
    let crowded = choices.chance(25);
    let (count, lowest) = if crowded {
        (choices.pick(&[8, 12, 20]), 80)
    } else {
        (choices.pick(&[1, 2, 3, 5, 8, 12, 20]), 1)
    };
    let mut state: Vec<RolloutState> = (0..count)
        .map(|_| {
            let mut attributes: Vec<String> = (0..choices.below(3))
                .map(|_| choices.pick(ATTRIBUTES).to_owned())
                .collect();
            attributes.sort_unstable();
            attributes.dedup();
            let (app, channel) = if crowded {
                ("os_armv8", "prod")
            } else if choices.chance(50) {
                (choices.pick(OS_APPS), "prod")
            } else {
                (choices.pick(APPS), choices.pick(CHANNELS))
            };
            RolloutState {
                id: choices.text(HEX, 8),
                percent: choices.between(lowest, 99) as u8,
                app: app.to_owned(),
                channel: channel.to_owned(),
                attributes,
            }
        })
        .collect();
    if choices.chance(10) {
        let again = state[choices.below(count)].clone();
        state.push(again);
    }
    state
}

fn query(choices: &mut Choices, rollouts: &[RolloutState]) -> String {
    let mut params = match choices.below(10) {
        0 => near_the_length_limit(choices),
        1 => near_the_parameter_limit(choices),
        _ => ordinary_parameters(choices, rollouts),
    };
    if choices.chance(5) && !params.is_empty() {
        let sent = &params[choices.below(params.len())];
        let name = sent.split('=').next().unwrap_or_default().to_owned();
        let again = format!("{}={}", choices.any_case(&name), channel(choices));
        params.push(again);
    }
    choices.shuffle(&mut params);
    with_empty_segments(choices, &params)
}

fn ordinary_parameters(choices: &mut Choices, rollouts: &[RolloutState]) -> Vec<String> {
    let mut params = Vec::new();
    if choices.chance(92) {
        params.push(cpu_arch(choices));
    }
    for _ in 0..choices.below(8) {
        let param = parameter(choices);
        push_new_name(&mut params, param);
    }
    if !rollouts.is_empty() && choices.chance(40) {
        let rollout = &rollouts[choices.below(rollouts.len())];
        let param = aimed_parameter(choices, rollout);
        push_new_name(&mut params, param);
    }
    if choices.chance(20) {
        let base = choices.pick(&["p", "attrP", "os", "cpuArch", "cohort", "deviceKey"]);
        for _ in 0..choices.between(2, 4) {
            let name = format!("{base}{}", choices.pick(ENDINGS));
            let param = format!("{}={}", choices.any_case(&name), channel(choices));
            push_new_name(&mut params, param);
        }
    }
    params
}

/// A pin of the rollout's app or one of its attributes, mostly on the rollout's channel:
/// a parameter that selects it, unless its name is one the origin reads otherwise.
fn aimed_parameter(choices: &mut Choices, rollout: &RolloutState) -> String {
    let name = if rollout.attributes.is_empty() || choices.chance(50) {
        rollout.app.clone()
    } else {
        let attribute = &rollout.attributes[choices.below(rollout.attributes.len())];
        format!("attr{attribute}")
    };
    let channel = if choices.chance(80) {
        choices.any_case(&rollout.channel)
    } else {
        channel(choices)
    };
    format!("{}={channel}", choices.any_case(&name))
}

/// Adds `param` unless its name is there already (repeats are made on purpose only).
fn push_new_name(params: &mut Vec<String>, param: String) {
    let name = |param: &str| {
        param
            .split('=')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let new = name(&param);
    if !params.iter().any(|sent| name(sent) == new) {
        params.push(param);
    }
}

/// Parameters of `target` bytes in all (as the limit counts them), around the limit.
fn near_the_length_limit(choices: &mut Choices) -> Vec<String> {
    let target = choices.between(MAX_QUERY_BYTES - 24, MAX_QUERY_BYTES + 24);
    let mut params = vec![cpu_arch(choices)];
    for _ in 0..choices.below(3) {
        let param = parameter(choices);
        push_new_name(&mut params, param);
    }
    loop {
        let used: usize = params.iter().map(|param| param.len() + 1).sum();
        let Some(left) = target.checked_sub(used).filter(|&left| left >= 3) else {
            return params;
        };
        // Fillers of 75 bytes while a last parameter of 3 bytes or more still fits.
        if left >= 75 + 1 + 3 {
            let filler = format!("attrFill{:02}", params.len());
            params.push(format!("{filler}={}", choices.text(IDENT, MAX_IDENT_LEN)));
        } else {
            let name_len = (left - 1) / 2;
            let name = choices.text(LOWER, name_len);
            params.push(format!(
                "{name}={}",
                choices.text(IDENT, left - 1 - name_len)
            ));
            return params;
        }
    }
}

fn near_the_parameter_limit(choices: &mut Choices) -> Vec<String> {
    let count = choices.between(MAX_PARAMETERS - 2, MAX_PARAMETERS + 2);
    let mut params = vec![cpu_arch(choices)];
    if choices.chance(30) {
        params.push(format!("deviceKey={}", device_key(choices)));
    }
    while params.len() < count {
        let name = format!("{}{}", choices.pick(&["p", "attrP"]), params.len());
        params.push(format!("{}={}", choices.any_case(&name), channel(choices)));
    }
    params
}

/// The parameters joined by `&`, with empty segments here and there: now and then
/// thousands of them.
fn with_empty_segments(choices: &mut Choices, params: &[String]) -> String {
    let mut raw = empty_segments(choices);
    for (at, param) in params.iter().enumerate() {
        if at > 0 {
            raw.push('&');
            raw.push_str(&empty_segments(choices));
        }
        raw.push_str(param);
    }
    raw.push_str(&empty_segments(choices));
    raw
}

fn empty_segments(choices: &mut Choices) -> String {
    let count = match choices.below(100) {
        0..75 => 0,
        75..97 => choices.between(1, 3),
        _ => choices.between(500, 5000),
    };
    "&".repeat(count)
}

fn cpu_arch(choices: &mut Choices) -> String {
    let value = if choices.chance(80) {
        choices
            .pick(&["armv8", "armv7", "x86_64", "arm_v8.2-a"])
            .to_owned()
    } else {
        ident(choices)
    };
    format!(
        "{}={}",
        choices.any_case("cpuArch"),
        choices.any_case(&value)
    )
}

fn parameter(choices: &mut Choices) -> String {
    let (name, value) = match choices.below(100) {
        0..10 => ("os".to_owned(), channel(choices)),
        10..18 => {
            let payloads = if choices.chance(80) {
                PAYLOADS
            } else {
                BAD_PAYLOADS
            };
            let payload = choices.pick(payloads);
            ("payloadType".to_owned(), choices.any_case(payload))
        }
        18..36 => {
            let attribute = if choices.chance(50) {
                choices.pick(ATTRIBUTES).to_owned()
            } else {
                ident(choices)
            };
            (format!("attr{attribute}"), channel(choices))
        }
        36..56 => (choices.pick(TRICKY_NAMES).to_owned(), channel(choices)),
        56..71 => ("deviceKey".to_owned(), device_key_as_sent(choices)),
        71..81 => ("cohort".to_owned(), cohort(choices)),
        81..88 => return odd_parameter(choices),
        88..95 => (choices.pick(APPS).to_owned(), channel(choices)),
        95..98 => ("installed".to_owned(), installed_list(choices)),
        _ => (ident(choices), channel(choices)),
    };
    format!("{}={value}", choices.any_case(&name))
}

/// A parameter the origin refuses, mostly.
fn odd_parameter(choices: &mut Choices) -> String {
    let name = choices.pick(&["os", "p", "attrGamer", "deviceKey", "cohort", "cpuArch"]);
    let odd = choices.pick(ODD_TEXT);
    match choices.below(8) {
        0 => name.to_owned(),
        1 => format!("{name}="),
        2 => format!("={}", channel(choices)),
        3 => format!("{name}={}{odd}{}", channel(choices), channel(choices)),
        4 => format!("{name}{odd}={}", channel(choices)),
        5 => format!("{name}={odd}"),
        6 => format!("{name}={}", choices.text(IDENT, MAX_IDENT_LEN + 1)),
        _ => format!(
            "{}={}",
            choices.text(LOWER, MAX_IDENT_LEN + 1),
            channel(choices)
        ),
    }
}

/// An `installed=` list as a device might send it: digests in any case, repeated, with
/// empty elements; now and then near the limits of tags, tag length and bytes, or with a
/// character a query may not hold.
fn installed_list(choices: &mut Choices) -> String {
    let (count, len) = match choices.below(12) {
        0 => (
            choices.between(MAX_ENTITY_TAGS - 2, MAX_ENTITY_TAGS + 2),
            16,
        ),
        1 => (choices.between(124, 128), MAX_IDENT_LEN),
        2 => (1, MAX_IDENT_LEN + choices.below(2)),
        _ => (choices.below(6), 32),
    };
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..count {
        let tag = match choices.below(20) {
            0 => String::new(),
            1 if !tags.is_empty() => tags[choices.below(tags.len())].clone(),
            2 => choices.pick(ODD_TEXT).to_owned(),
            _ => choices.text(HEX, len),
        };
        tags.push(choices.any_case(&tag));
    }
    tags.join(",")
}

fn channel(choices: &mut Choices) -> String {
    let value = if choices.chance(70) {
        choices.pick(CHANNELS).to_owned()
    } else {
        ident(choices)
    };
    choices.any_case(&value)
}

/// 1 to 64 identifier characters, mostly short.
fn ident(choices: &mut Choices) -> String {
    let len = if choices.chance(80) {
        choices.between(1, 12)
    } else {
        choices.between(1, MAX_IDENT_LEN)
    };
    choices.text(IDENT, len)
}

/// A key as devices make them: 1 to 64 identifier characters, letter case and all.
fn device_key(choices: &mut Choices) -> String {
    let len = if choices.chance(80) {
        choices.between(8, 32)
    } else {
        choices.between(1, MAX_IDENT_LEN)
    };
    choices.text(IDENT, len)
}

/// A device key, or now and then one the origin refuses.
fn device_key_as_sent(choices: &mut Choices) -> String {
    match choices.below(20) {
        0 => choices.text(IDENT, MAX_IDENT_LEN + 1),
        1 => format!("{}{}", device_key(choices), choices.pick(ODD_TEXT)),
        _ => device_key(choices),
    }
}

/// A `cohort` value: mostly 1 to 7 rollout ids in any case and order, some repeated;
/// else too many ids, ids of the wrong length or digits, or empty ones.
fn cohort(choices: &mut Choices) -> String {
    let count = if choices.chance(90) {
        choices.between(1, 7)
    } else {
        8
    };
    let mut ids: Vec<String> = (0..count).map(|_| choices.text(HEX, 8)).collect();
    if choices.chance(20) {
        ids[0] = ids[count - 1].clone();
    }
    if choices.chance(15) {
        let at = choices.below(count);
        ids[at] = match choices.below(4) {
            0 => choices.text(HEX, 7),
            1 => choices.text(HEX, 9),
            2 => format!("{}g", choices.text(HEX, 7)),
            _ => String::new(),
        };
    }
    choices.any_case(&ids.join("."))
}

fn if_none_match(choices: &mut Choices) -> String {
    match choices.below(12) {
        0 => many_tags(choices),
        1 => near_the_byte_limit(choices),
        _ => few_tags(choices),
    }
}

fn few_tags(choices: &mut Choices) -> String {
    let mut tags: Vec<String> = Vec::new();
    let mut elements = Vec::new();
    for _ in 0..choices.below(9) {
        let element = match choices.below(100) {
            0..40 => new_tag(choices, &mut tags, 32),
            40..52 => {
                let len = choices.between(1, 12);
                new_tag(choices, &mut tags, len)
            }
            // The same tag again, in another case and form.
            52..66 if !tags.is_empty() => {
                let tag = tags[choices.below(tags.len())].clone();
                let recased = choices.any_case(&tag);
                wrapped(choices, &recased)
            }
            66..76 => "*".to_owned(),
            76..84 => String::new(),
            84..88 => "\"\"".to_owned(),
            _ => choices.pick(ODD_TAGS).to_owned(),
        };
        elements.push(element);
    }
    joined_tags(choices, &elements)
}

/// A new tag of `len` hex digits (or identifier characters, when short), quoted, bare or weak.
fn new_tag(choices: &mut Choices, tags: &mut Vec<String>, len: usize) -> String {
    let tag = match len {
        32 => choices.text(HEX, len),
        _ => choices.text(IDENT, len),
    };
    let recased = choices.any_case(&tag);
    tags.push(tag);
    wrapped(choices, &recased)
}

fn wrapped(choices: &mut Choices, tag: &str) -> String {
    match choices.below(3) {
        0 => tag.to_owned(),
        1 => format!("\"{tag}\""),
        _ => format!("W/\"{tag}\""),
    }
}

/// Elements joined by commas, with spaces and tabs around them and empty elements.
fn joined_tags(choices: &mut Choices, elements: &[String]) -> String {
    let mut value = whitespace(choices);
    for (at, element) in elements.iter().enumerate() {
        if at > 0 {
            value.push_str(&whitespace(choices));
            value.push_str(&",".repeat(choices.pick(&[1, 1, 1, 2, 3])));
            value.push_str(&whitespace(choices));
        }
        value.push_str(element);
    }
    if choices.chance(20) {
        value.push(',');
    }
    value.push_str(&whitespace(choices));
    value
}

fn whitespace(choices: &mut Choices) -> String {
    choices
        .pick(&["", "", "", " ", "  ", "\t", " \t "])
        .to_owned()
}

/// Around the limit of 256 tags, with a few repeated (the limit counts them) and `*`
/// (which it does not).
fn many_tags(choices: &mut Choices) -> String {
    let count = choices.between(MAX_ENTITY_TAGS - 4, MAX_ENTITY_TAGS + 12);
    let mut tags: Vec<String> = Vec::new();
    let elements: Vec<String> = (0..count)
        .map(|_| match choices.below(50) {
            0 => "*".to_owned(),
            1..5 if !tags.is_empty() => tags[choices.below(tags.len())].to_ascii_uppercase(),
            _ => new_tag(choices, &mut tags, 16),
        })
        .collect();
    joined_tags(choices, &elements)
}

/// MD5 digests padded with spaces to a length around the limit of 8 KiB.
fn near_the_byte_limit(choices: &mut Choices) -> String {
    let target = choices.between(MAX_IF_NONE_MATCH_BYTES - 16, MAX_IF_NONE_MATCH_BYTES + 16);
    let quoted = choices.chance(50);
    let mut value = String::new();
    loop {
        let digest = choices.text(HEX, 32);
        let tag = if quoted {
            format!("\"{digest}\"")
        } else {
            digest
        };
        if value.len() + 1 + tag.len() > target {
            break;
        }
        if !value.is_empty() {
            value.push(',');
        }
        value.push_str(&tag);
    }
    let padding = " ".repeat(target - value.len());
    if choices.chance(50) {
        format!("{padding}{value}")
    } else {
        value + &padding
    }
}
