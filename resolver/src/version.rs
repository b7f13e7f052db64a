//! The order of release versions, which decides between two rules that both match.
//!
//! Invariant: the order is total and consistent, so the chosen rule never depends on the
//! order rules were listed in.

use std::cmp::Ordering;

/// Orders two version strings: semantic-version order when both parse as semantic
/// versions, lexical order when neither does, and a semantic version above any text that
/// is not one (so the order is total and the choice never depends on which was seen first).
///
/// Missing minor and patch numbers count as zero: `1.0` equals `1.0.0` in rank, and two
/// versions of equal rank are then ordered lexically.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_semantic(a), parse_semantic(b)) {
        (Some(x), Some(y)) => x.cmp_precedence(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

fn parse_semantic(text: &str) -> Option<semver::Version> {
    let core_end = text.find(['-', '+']).unwrap_or(text.len());
    let padding = match text[..core_end].matches('.').count() {
        0 => ".0.0",
        1 => ".0",
        _ => "",
    };
    let padded = format!("{}{padding}{}", &text[..core_end], &text[core_end..]);
    semver::Version::parse(&padded).ok()
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering::{Equal, Greater, Less};

    use super::*;

    fn assert_order(a: &str, b: &str, expected: Ordering) {
        assert_eq!(compare_versions(a, b), expected, "{a} vs {b}");
        assert_eq!(compare_versions(b, a), expected.reverse(), "{b} vs {a}");
    }

    #[test]
    fn semantic_versions_compare_numerically_not_lexically() {
        assert_order("0.10.0", "0.9.0", Greater);
        assert_order("1.10.0", "1.9.9", Greater);
        assert_order("2.0.0", "1.99.99", Greater);
        assert_order("0.0.10", "0.0.2", Greater);
    }

    #[test]
    fn missing_minor_and_patch_count_as_zero() {
        assert_order("1.1", "1.0.9", Greater);
        assert_order("0.10", "0.9", Greater);
        assert_order("2", "1.9.9", Greater);
        assert_order("1", "1.0.1", Less);
    }

    #[test]
    fn versions_of_equal_rank_are_ordered_lexically() {
        assert_order("1.0", "1.0.0", Less);
        assert_order("1", "1.0", Less);
        assert_order("1.0.0+build", "1.0.0", Greater);
        assert_order("1.0.0+b", "1.0.0+a", Greater);
    }

    #[test]
    fn pre_release_ranks_below_its_release() {
        assert_order("1.0.0-rc.1", "1.0.0", Less);
        assert_order("1.0-beta", "1.0", Less);
        assert_order("1.0.0-alpha", "1.0.0-beta", Less);
        assert_order("1.0.0-rc.2", "1.0.0-rc.10", Less);
        assert_order("1.0.0-rc.1", "0.9.9", Greater);
    }

    #[test]
    fn build_metadata_does_not_raise_the_rank() {
        assert_order("1.0.0+zzz", "1.0.1", Less);
        assert_order("1.0+build-1", "0.9.9", Greater);
        assert_order("1.0+build-1", "1.0.1", Less);
    }

    #[test]
    fn a_semantic_version_ranks_above_any_other_text() {
        assert_order("0.0.0", "latest", Greater);
        assert_order("0.0.1", "1.2.3.4", Greater);
        assert_order("1.0.0", "v2.0.0", Greater);
        assert_order("1.0.0", "01.0.0", Greater);
        assert_order("0.0.0", "99999999999999999999.0.0", Greater);
    }

    #[test]
    fn text_that_is_not_a_semantic_version_compares_lexically() {
        assert_order("beta", "alpha", Greater);
        assert_order("1.2.3.4", "1.2.3.5", Less);
        assert_order("1.2.3.10", "1.2.3.9", Less);
        assert_order("", "a", Less);
    }

    #[test]
    fn only_equal_strings_compare_equal() {
        for version in ["1.0", "1.0.0", "1.0.0-rc.1+b", "latest", ""] {
            assert_eq!(compare_versions(version, version), Equal, "{version}");
        }
    }
}
