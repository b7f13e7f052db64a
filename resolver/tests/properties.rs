use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use fleetpack_resolver::{DeviceQuery, IfNoneMatch, Reason, Rule, RuleSet, compare_versions};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

/// The AWS sample's demo fleet.
static DEMO: LazyLock<RuleSet> = LazyLock::new(|| {
    let fleet = [
        ("os_armv8", "beta", "2.0.0", &[][..]),
        ("os_armv8", "prod", "1.1.0", &[]),
        ("os_armv7", "beta", "2.0.0", &[]),
        ("os_armv7", "prod", "1.0.0", &[]),
        ("scoreboard", "beta", "2.0.0", &["gamer"]),
        ("scoreboard", "prod", "1.0.0", &["gamer"]),
        ("videoStreamer", "beta", "0.1.2", &["camera"]),
        ("videoStreamer", "prod", "0.0.1", &["camera", "gamer"]),
        ("modemFW", "prod", "1.0", &["cellular"]),
    ];
    let rules = fleet
        .iter()
        .enumerate()
        .map(|(n, (app, channel, version, attributes))| Rule {
            cpu_arch: app.strip_prefix("os_").map(str::to_owned),
            device_attr: attributes
                .iter()
                .map(|name| ((*name).to_owned(), true))
                .collect::<BTreeMap<_, _>>(),
            ..Rule::new(
                *app,
                *channel,
                *version,
                format!("local://{app}_{version}"),
                format!("{:032x}", n + 1),
            )
        });
    let (set, rejected) = RuleSet::build(rules);
    assert_eq!(rejected, []);
    set
});

fn channel() -> impl Strategy<Value = &'static str> {
    select(vec!["prod", "beta", "nightly"])
}

/// Names paired with random channels, each name at most once.
fn selectors(names: Vec<&'static str>) -> impl Strategy<Value = Vec<(String, String)>> {
    let len = names.len();
    subsequence(names, 0..=len).prop_flat_map(|names| {
        let len = names.len();
        prop::collection::vec(channel(), len).prop_map(move |channels| {
            names
                .iter()
                .zip(channels)
                .map(|(name, channel)| ((*name).to_owned(), channel.to_owned()))
                .collect()
        })
    })
}

/// The parameters of a valid query on the demo fleet, in a canonical order and case.
fn valid_params() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        select(vec!["armv8", "armv7", "x86"]),
        prop::option::of(channel()),
        prop::option::of(select(vec!["fullPayload", "metadataOnly"])),
        selectors(vec![
            "attrGamer",
            "attrCamera",
            "attrCellular",
            "attrUnknown",
        ]),
        selectors(vec![
            "os_armv8",
            "scoreboard",
            "videoStreamer",
            "modemFW",
            "doom",
            "attr",
        ]),
    )
        .prop_map(|(arch, os, payload, attributes, pins)| {
            let mut params = vec![("cpuArch".to_owned(), arch.to_owned())];
            params.extend(os.map(|os| ("os".to_owned(), os.to_owned())));
            params.extend(payload.map(|payload| ("payloadType".to_owned(), payload.to_owned())));
            params.extend(attributes);
            params.extend(pins);
            params
        })
}

fn join(params: &[(String, String)]) -> String {
    let pairs: Vec<String> = params
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    pairs.join("&")
}

fn flip_case(text: &str, flips: &[bool]) -> String {
    text.chars()
        .zip(flips.iter().cycle())
        .map(|(c, &flip)| match (flip, c.is_ascii_lowercase()) {
            (false, _) => c,
            (true, true) => c.to_ascii_uppercase(),
            (true, false) => c.to_ascii_lowercase(),
        })
        .collect()
}

fn version_like() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}(-[0-9A-Za-z]{1,3}(\\.[0-9A-Za-z]{1,3}){0,2})?(\\+[0-9a-z]{1,3})?",
        "[0-9a-z.+-]{0,8}",
        select(vec![
            "1",
            "1.0",
            "1.0.0",
            "1.0.0+b",
            "1.0.0-rc.1",
            "0.9.0",
            "0.10.0",
            "latest"
        ])
        .prop_map(str::to_owned),
    ]
}

fn query_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9%&=._+ /é-]{0,120}",
        prop::collection::vec(
            select(vec!["&", "=", "%", "%4", "%41", "a", "A", "cpuArch=x", "é"]),
            0..700
        )
        .prop_map(|parts| parts.concat()),
    ]
}

fn header_like() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let line = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "[ \t,\"W/*a-fA-F0-9é\u{1}]{0,80}".prop_map(String::into_bytes),
        prop::collection::vec(
            select(vec![",", " ", "\"", "W/\"", "*", "ab", "\t"]),
            0..3000
        )
        .prop_map(|parts| parts.concat().into_bytes()),
    ];
    prop::collection::vec(line, 0..4)
}

/// Tags of every length around eight bytes, many sharing their first eight, in mixed case.
fn tag_lists() -> impl Strategy<Value = Vec<String>> {
    let tag = ("(0123456789|ABCDEFab|abcdefAB)?", "[0-9a-fA-F._-]{0,10}")
        .prop_map(|(shared, rest)| shared + &rest)
        .prop_filter("not empty", |tag| !tag.is_empty());
    prop::collection::vec(tag, 0..40)
}

proptest! {
    #[test]
    fn listed_tags_come_out_lowercase_sorted_once_and_are_found(
        listed in tag_lists(),
        probes in tag_lists(),
    ) {
        let header = listed.iter().map(|tag| format!("\"{tag}\"")).collect::<Vec<_>>().join(", ");
        let parsed = IfNoneMatch::parse([header.as_bytes()]).expect("a valid If-None-Match");
        let model: BTreeSet<String> = listed.iter().map(|tag| tag.to_ascii_lowercase()).collect();
        prop_assert!(parsed.tags().eq(model.iter().map(String::as_str)), "{:?}", parsed);
        for tag in listed.iter().chain(&probes) {
            prop_assert_eq!(parsed.has_digest(tag), model.contains(&tag.to_ascii_lowercase()), "{}", tag);
        }
    }

    #[test]
    fn query_parsing_never_panics(raw in query_like()) {
        let _ = DeviceQuery::parse(&raw);
    }

    #[test]
    fn if_none_match_parsing_never_panics(lines in header_like()) {
        let _ = IfNoneMatch::parse(lines.iter().map(Vec::as_slice));
    }

    #[test]
    fn query_and_selection_ignore_parameter_order_and_letter_case(
        (params, shuffled) in valid_params().prop_flat_map(|params| (Just(params.clone()), Just(params).prop_shuffle())),
        flips in prop::collection::vec(any::<bool>(), 1..64),
    ) {
        let canonical = DeviceQuery::parse(&join(&params)).expect("a valid query");
        let varied: Vec<(String, String)> = shuffled
            .iter()
            .map(|(name, value)| (flip_case(name, &flips), flip_case(value, &flips[flips.len() / 2..])))
            .collect();
        let variant = DeviceQuery::parse(&join(&varied)).expect("a valid query");
        prop_assert_eq!(&canonical, &variant);
        prop_assert_eq!(DEMO.resolve(&canonical), DEMO.resolve(&variant));
    }

    #[test]
    fn every_selected_rule_is_justified_by_the_query(params in valid_params()) {
        let query = DeviceQuery::parse(&join(&params)).expect("a valid query");
        let Ok(selection) = DEMO.resolve(&query) else {
            return Ok(());
        };
        let apps: Vec<String> = selection.items.iter().map(|item| item.rule.app.to_ascii_lowercase()).collect();
        let os_first = usize::from(apps.first() == Some(&query.os_app()));
        prop_assert!(apps[os_first..].is_sorted_by(|a, b| a < b), "{:?}", apps);
        prop_assert!(!apps[os_first..].contains(&query.os_app()));
        for item in &selection.items {
            let app = item.rule.app.to_ascii_lowercase();
            let channel = item.rule.channel.as_str();
            let pin = query.pins().iter().find(|pin| pin.name == app);
            match item.reason {
                Reason::Pin => prop_assert_eq!(pin.map(|pin| pin.channel.as_str()), Some(channel)),
                Reason::Attribute => {
                    prop_assert!(pin.is_none());
                    prop_assert!(query.attributes().iter().any(|attribute| attribute.channel == channel
                        && item.rule.device_attr.get(&attribute.name) == Some(&true)));
                }
                Reason::Os => {
                    prop_assert!(pin.is_none());
                    prop_assert_eq!(&app, &query.os_app());
                    prop_assert_eq!(channel, query.os_channel());
                }
            }
        }
    }

    #[test]
    fn version_order_is_antisymmetric(a in version_like(), b in version_like()) {
        prop_assert_eq!(compare_versions(&a, &b), compare_versions(&b, &a).reverse());
        prop_assert_eq!(compare_versions(&a, &b) == Ordering::Equal, a == b);
    }

    #[test]
    fn version_order_is_transitive(a in version_like(), b in version_like(), c in version_like()) {
        // Some ordering of any three forms a chain, so every case checks something.
        for (x, y, z) in [(&a, &b, &c), (&a, &c, &b), (&b, &a, &c), (&b, &c, &a), (&c, &a, &b), (&c, &b, &a)] {
            if compare_versions(x, y).is_le() && compare_versions(y, z).is_le() {
                prop_assert!(compare_versions(x, z).is_le(), "{} <= {} <= {}", x, y, z);
            }
        }
    }

    #[test]
    fn sorting_by_version_order_is_consistent(mut versions in prop::collection::vec(version_like(), 0..16)) {
        versions.sort_by(|a, b| compare_versions(a, b));
        for (i, a) in versions.iter().enumerate() {
            for b in &versions[i + 1..] {
                prop_assert!(compare_versions(a, b).is_le(), "{} before {}", a, b);
            }
        }
    }
}
