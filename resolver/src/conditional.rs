//! The device's `If-None-Match`: what it already has, parsed once per request.
//!
//! Invariant: tags are kept unquoted, in lowercase, sorted and without duplicates, so a
//! lookup is a binary search and equal headers compare equal however they were spelled.

use std::ops::Range;

use crate::format::ETag;
use crate::ident::excerpt;

/// Longest `If-None-Match` accepted, in bytes, over all its header lines.
pub const MAX_IF_NONE_MATCH_BYTES: usize = 8192;
/// Most entity tags accepted in `If-None-Match`.
pub const MAX_ENTITY_TAGS: usize = 256;

/// The device's `If-None-Match`: digests of binaries it already has, entity tags of
/// responses it has cached, or `*`.
///
/// Accepts what devices and caches send: a comma-separated list with optional
/// whitespace, quoted (`"abc"`), bare (`abc`) or weak (`W/"abc"`) tags, and empty
/// elements (the AWS sample's clients end the list with a comma). Tags are compared
/// weakly (RFC 9110, section 13.1.2) and ignoring letter case, since they are hex digests.
#[derive(Debug, Clone, Default)]
pub struct IfNoneMatch {
    any: bool,
    /// The opaque tags in lowercase, one after another: one allocation for up to 256
    /// tags instead of one each.
    text: String,
    /// Where each tag is in `text`, sorted by the tags' text, without duplicates.
    spans: Vec<TagSpan>,
}

/// One tag's place in `IfNoneMatch::text`, and its first eight bytes as a number, which
/// orders most pairs of tags (digests are random) without reading the text.
#[derive(Debug, Clone, Copy)]
struct TagSpan {
    prefix: u64,
    start: u16,
    end: u16,
}

impl TagSpan {
    fn new(text: &[u8], start: usize) -> Self {
        // Both fit: the whole header is at most MAX_IF_NONE_MATCH_BYTES.
        let narrow = |at: usize| u16::try_from(at).expect("If-None-Match length is checked");
        TagSpan {
            prefix: prefix(&text[start..]),
            start: narrow(start),
            end: narrow(text.len()),
        }
    }

    fn range(&self) -> Range<usize> {
        usize::from(self.start)..usize::from(self.end)
    }

    fn of<'t>(&self, text: &'t [u8]) -> &'t [u8] {
        &text[self.range()]
    }
}

/// The first eight bytes, big-endian, padded with zeros: numbers compare as the bytes
/// would, since no tag holds a zero byte.
pub(crate) fn prefix(tag: &[u8]) -> u64 {
    let mut first = [0; 8];
    let len = tag.len().min(8);
    first[..len].copy_from_slice(&tag[..len]);
    u64::from_be_bytes(first)
}

impl PartialEq for IfNoneMatch {
    fn eq(&self, other: &Self) -> bool {
        self.any == other.any && self.tags().eq(other.tags())
    }
}

impl Eq for IfNoneMatch {}

/// Why an `If-None-Match` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionalError {
    #[error(
        "If-None-Match is {len} bytes long; send at most {MAX_IF_NONE_MATCH_BYTES} bytes (up to 248 MD5 digests separated by commas)"
    )]
    TooLong { len: usize },
    #[error(
        "If-None-Match lists more than {MAX_ENTITY_TAGS} entity tags; send at most {MAX_ENTITY_TAGS}"
    )]
    TooManyTags,
    #[error(
        "If-None-Match is malformed near `{near}`: send a comma-separated list of digests or entity tags, such as `\"<md5>\", <md5>`"
    )]
    Malformed { near: String },
}

impl IfNoneMatch {
    /// Parses every `If-None-Match` header line of a request, in order.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, ConditionalError> {
        let mut tags = Tags::default();
        let mut len = 0;
        for line in lines {
            len += line.len();
            if len > MAX_IF_NONE_MATCH_BYTES {
                return Err(ConditionalError::TooLong { len });
            }
            tags.text.reserve(line.len());
            tags.parse_line(line)?;
        }
        let Tags {
            any,
            text,
            mut spans,
        } = tags;
        spans.sort_unstable_by(|a, b| {
            a.prefix
                .cmp(&b.prefix)
                .then_with(|| a.of(&text).cmp(b.of(&text)))
        });
        spans.dedup_by(|a, b| a.of(&text) == b.of(&text));
        Ok(IfNoneMatch {
            any,
            text: String::from_utf8(text).expect("tags are checked to be ASCII"),
            spans,
        })
    }

    /// Whether the header holds the wildcard `*`.
    pub fn matches_any(&self) -> bool {
        self.any
    }

    /// The listed tags, unquoted, in lowercase, sorted and without duplicates.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &str> {
        self.spans.iter().map(|span| &self.text[span.range()])
    }

    /// Each listed tag with its first eight bytes as [`prefix`] computes them.
    pub(crate) fn tags_by_prefix(&self) -> impl Iterator<Item = (u64, &str)> {
        self.spans
            .iter()
            .map(|span| (span.prefix, &self.text[span.range()]))
    }

    /// Whether the header was absent or empty.
    pub fn is_empty(&self) -> bool {
        !self.any && self.spans.is_empty()
    }

    /// Whether the device listed this digest (hex, any letter case).
    pub fn has_digest(&self, hex: &str) -> bool {
        // Most devices list nothing; they need no lowercase copy.
        !self.spans.is_empty() && self.has_tag(hex.to_ascii_lowercase().as_bytes())
    }

    /// Whether the header matches a response with this entity tag: `*` or the tag itself.
    pub fn matches(&self, etag: &ETag) -> bool {
        self.any || self.has_tag(etag.opaque().as_bytes())
    }

    fn has_tag(&self, lowercase: &[u8]) -> bool {
        let text = self.text.as_bytes();
        let wanted = prefix(lowercase);
        self.spans
            .binary_search_by(|span| {
                span.prefix
                    .cmp(&wanted)
                    .then_with(|| span.of(text).cmp(lowercase))
            })
            .is_ok()
    }
}

/// The tags of a header while its lines are read, in the order sent.
#[derive(Default)]
struct Tags {
    any: bool,
    text: Vec<u8>,
    spans: Vec<TagSpan>,
}

impl Tags {
    fn parse_line(&mut self, line: &[u8]) -> Result<(), ConditionalError> {
        let malformed = |at: usize| ConditionalError::Malformed {
            near: excerpt(&String::from_utf8_lossy(&line[at..])),
        };
        let mut at = 0;
        loop {
            while at < line.len() && matches!(line[at], b' ' | b'\t' | b',') {
                at += 1;
            }
            if at == line.len() {
                return Ok(());
            }
            let start = at;
            let tag = if line[at..].starts_with(b"W/\"") || line[at] == b'"' {
                let open = if line[at] == b'"' { at + 1 } else { at + 3 };
                let close = line[open..]
                    .iter()
                    .position(|&b| b == b'"')
                    .map(|offset| open + offset)
                    .ok_or_else(|| malformed(start))?;
                at = close + 1;
                &line[open..close]
            } else {
                while at < line.len() && !matches!(line[at], b' ' | b'\t' | b',' | b'"') {
                    at += 1;
                }
                &line[start..at]
            };
            if !tag.iter().all(|&b| b.is_ascii_graphic() && b != b'"') {
                return Err(malformed(start));
            }
            while at < line.len() && matches!(line[at], b' ' | b'\t') {
                at += 1;
            }
            if at < line.len() && line[at] != b',' {
                return Err(malformed(start));
            }
            // Only a bare `*` is the wildcard; `"*"` and `W/"*"` are entity tags (RFC 9110, 13.1.2).
            if tag == b"*" && line[start] == b'*' {
                self.any = true;
            } else if !tag.is_empty() {
                if self.spans.len() == MAX_ENTITY_TAGS {
                    return Err(ConditionalError::TooManyTags);
                }
                let start = self.text.len();
                self.text.extend_from_slice(tag);
                self.text[start..].make_ascii_lowercase();
                self.spans.push(TagSpan::new(&self.text, start));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn parse(lines: &[&str]) -> Result<IfNoneMatch, ConditionalError> {
        IfNoneMatch::parse(lines.iter().map(|line| line.as_bytes()))
    }

    fn parsed(lines: &[&str]) -> IfNoneMatch {
        parse(lines).expect("a valid If-None-Match")
    }

    fn tags(lines: &[&str]) -> Vec<String> {
        let parsed = parsed(lines);
        assert!(!parsed.any, "{lines:?} is not `*`");
        parsed.tags().map(str::to_owned).collect()
    }

    fn malformed(line: &[u8]) -> String {
        match IfNoneMatch::parse([line]) {
            Err(ConditionalError::Malformed { near }) => near,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    /// An entity tag as a plan derives one; only its form matters here.
    fn demo_etag() -> ETag {
        ETag::from_sha256(&Sha256::digest("a response").into())
    }

    #[test]
    fn absent_or_blank_header_is_empty() {
        assert!(parsed(&[]).is_empty());
        assert!(parsed(&[""]).is_empty());
        assert!(parsed(&[" , ,\t,"]).is_empty());
        assert!(parsed(&["\"\""]).is_empty());
    }

    #[test]
    fn quoted_and_bare_tags_are_both_accepted() {
        assert_eq!(tags(&["\"abc\", def,\"0a\""]), ["0a", "abc", "def"]);
    }

    #[test]
    fn weak_tag_compares_by_its_opaque_part() {
        let parsed = parsed(&["W/\"abc\""]);
        assert!(parsed.tags().eq(["abc"]));
        assert!(parsed.has_digest("abc"));
        assert!(!parsed.has_digest("w/\"abc\""));
    }

    #[test]
    fn whitespace_and_tabs_around_tags_are_ignored() {
        assert_eq!(tags(&[" \t\"a\"\t ,  b \t,\tW/\"c\" "]), ["a", "b", "c"]);
    }

    #[test]
    fn empty_list_elements_are_skipped() {
        assert_eq!(tags(&[",a,,b,"]), ["a", "b"]);
        assert_eq!(tags(&[",,, a , , b ,,"]), ["a", "b"]);
    }

    #[test]
    fn hex_digests_compare_ignoring_case() {
        let upper = parsed(&["0123456789ABCDEF0123456789ABCDEF"]);
        assert!(upper.has_digest("0123456789abcdef0123456789abcdef"));
        assert!(upper.has_digest("0123456789ABCDEF0123456789abcdef"));
        assert!(!upper.has_digest("0123456789abcdef0123456789abcdee"));
        let lower = parsed(&["\"abcdef\""]);
        assert!(lower.has_digest("ABCDEF"));
    }

    #[test]
    fn tags_are_sorted_and_deduplicated() {
        assert_eq!(tags(&["b, a, B, \"a\", W/\"A\""]), ["a", "b"]);
    }

    #[test]
    fn star_matches_any_entity_tag() {
        let any = parsed(&["*"]);
        assert!(any.any);
        assert!(!any.is_empty());
        assert!(any.matches(&demo_etag()));
        assert!(!any.has_digest("abc"));
        assert!(parsed(&[" abc , * "]).matches(&demo_etag()));
    }

    #[test]
    fn quoted_star_is_an_ordinary_tag() {
        for line in ["\"*\"", "W/\"*\""] {
            let parsed = parsed(&[line]);
            assert!(!parsed.any, "{line}");
            assert!(parsed.tags().eq(["*"]), "{line}");
            assert!(!parsed.matches(&demo_etag()), "{line}");
        }
    }

    #[test]
    fn several_header_lines_are_combined() {
        assert_eq!(
            tags(&["a, b", "\"c\"", "", "W/\"d\","]),
            ["a", "b", "c", "d"]
        );
        assert!(parsed(&["a", "*"]).any);
    }

    #[test]
    fn up_to_256_tags_are_accepted() {
        let list: Vec<String> = (0..MAX_ENTITY_TAGS).map(|n| format!("{n:x}")).collect();
        assert_eq!(tags(&[&list.join(",")]).len(), 256);
        let (first, second) = list.split_at(100);
        assert_eq!(tags(&[&first.join(","), &second.join(",")]).len(), 256);
    }

    #[test]
    fn more_than_256_tags_are_rejected() {
        let list: Vec<String> = (0..=MAX_ENTITY_TAGS).map(|n| format!("{n:x}")).collect();
        assert_eq!(
            parse(&[&list.join(",")]),
            Err(ConditionalError::TooManyTags)
        );
        let (first, second) = list.split_at(200);
        assert_eq!(
            parse(&[&first.join(","), &second.join(",")]),
            Err(ConditionalError::TooManyTags)
        );
    }

    #[test]
    fn header_of_8192_bytes_is_accepted() {
        let line = format!("a{}", " ".repeat(MAX_IF_NONE_MATCH_BYTES - 1));
        assert_eq!(tags(&[&line]), ["a"]);
        let half = format!("b{}", " ".repeat(4095));
        assert_eq!(tags(&[&half, &half]), ["b"]);
    }

    #[test]
    fn header_over_8192_bytes_is_rejected() {
        let line = format!("a{}", " ".repeat(MAX_IF_NONE_MATCH_BYTES));
        assert_eq!(
            parse(&[&line]),
            Err(ConditionalError::TooLong { len: 8193 })
        );
        let half = "a".repeat(4096);
        let more = "b".repeat(4097);
        assert_eq!(
            parse(&[&half, &more]),
            Err(ConditionalError::TooLong { len: 8193 })
        );
    }

    #[test]
    fn unterminated_quote_is_malformed() {
        assert_eq!(malformed(b"a, \"abc"), "\"abc");
        assert_eq!(malformed(b"W/\"abc"), "W/\"abc");
    }

    #[test]
    fn text_after_a_tag_without_a_comma_is_malformed() {
        assert_eq!(malformed(b"\"a\"b"), "\"a\"b");
        assert_eq!(malformed(b"a\"b\""), "a\"b\"");
        assert_eq!(malformed(b"a b"), "a b");
        assert_eq!(malformed(b"\"a\" \"b\""), "\"a\" \"b\"");
    }

    #[test]
    fn control_characters_are_malformed() {
        assert_eq!(malformed(b"a\x01b"), "a\u{1}b");
        assert_eq!(malformed(b"\"a\tb\""), "\"a\tb\"");
        assert_eq!(malformed(b"a\x7f"), "a\u{7f}");
        assert_eq!(malformed(b"a\r\n"), "a\r\n");
        assert_eq!(malformed(b"\x00"), "\u{0}");
    }

    #[test]
    fn non_ascii_is_malformed() {
        assert_eq!(malformed("x, é".as_bytes()), "é");
        assert_eq!(malformed("\"é\"".as_bytes()), "\"é\"");
        assert_eq!(malformed(b"\xff\xfe"), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn errors_say_where_and_what_to_send() {
        assert_eq!(
            parse(&["ok, \"broken"]).expect_err("malformed").to_string(),
            "If-None-Match is malformed near `\"broken`: send a comma-separated list of digests or entity tags, such as `\"<md5>\", <md5>`"
        );
        assert_eq!(
            ConditionalError::TooLong { len: 9000 }.to_string(),
            "If-None-Match is 9000 bytes long; send at most 8192 bytes (up to 248 MD5 digests separated by commas)"
        );
        assert_eq!(
            ConditionalError::TooManyTags.to_string(),
            "If-None-Match lists more than 256 entity tags; send at most 256"
        );
    }

    #[test]
    fn the_length_limit_holds_the_number_of_digests_its_message_names() {
        let md5s = |count: usize| vec!["d41d8cd98f00b204e9800998ecf8427e"; count].join(",");
        assert_eq!(tags(&[&md5s(248)]).len(), 1, "248 digests fit");
        assert_eq!(
            parse(&[&md5s(249)]),
            Err(ConditionalError::TooLong { len: 249 * 33 - 1 })
        );
    }

    #[test]
    fn matches_its_entity_tag_in_any_form() {
        let etag = demo_etag();
        let opaque = etag.opaque();
        for line in [
            etag.to_string(),
            format!("W/{etag}"),
            opaque.to_owned(),
            opaque.to_ascii_uppercase(),
            format!("abc, {etag}, def"),
        ] {
            assert!(parsed(&[&line]).matches(&etag), "{line}");
        }
        for line in ["abc", "", &opaque[1..], &format!("\"{opaque}0\"")] {
            assert!(!parsed(&[line]).matches(&etag), "{line}");
        }
    }
}
