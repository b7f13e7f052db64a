//! `Range` and `If-Range` (RFC 9110, sections 14.2 and 13.1.5) for packages whose
//! length is known.

/// What a request asks of a representation of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole body: no `Range`, one that is ignored, or several ranges.
    Full,
    /// Bytes `first..=last`.
    Partial { first: u64, last: u64 },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Evaluates `Range` against a body of `len` bytes whose strong ETag is `etag` (quoted,
/// as sent). `If-Range` must equal that ETag exactly; anything else (another tag, a weak
/// one, a date, since packages have no Last-Modified) asks for the whole body. A `Range`
/// this does not understand is ignored, as RFC 9110 allows. Several ranges get the whole
/// body rather than a multipart answer, which device clients rarely read.
pub fn evaluate(
    range: Option<&[u8]>,
    if_range: Option<&[u8]>,
    etag: &[u8],
    len: u64,
) -> RangeRequest {
    let Some(range) = range else {
        return RangeRequest::Full;
    };
    if if_range.is_some_and(|if_range| if_range != etag) {
        return RangeRequest::Full;
    }
    let Some(spec) = std::str::from_utf8(range)
        .ok()
        .and_then(|text| text.trim().split_once('='))
        .filter(|(unit, _)| unit.trim().eq_ignore_ascii_case("bytes"))
        .map(|(_, spec)| spec.trim())
    else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |text: &str| {
        let text = text.trim();
        (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<u64>().ok())
            .flatten()
    };
    match (start.trim(), end.trim()) {
        ("", suffix) => match number(suffix) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(suffix) => RangeRequest::Partial {
                first: len.saturating_sub(suffix),
                last: len - 1,
            },
        },
        (start, end) => {
            let Some(first) = number(start) else {
                return RangeRequest::Full;
            };
            let last = if end.is_empty() {
                u64::MAX
            } else {
                match number(end) {
                    Some(last) if last >= first => last,
                    _ => return RangeRequest::Full,
                }
            };
            if first >= len {
                RangeRequest::Unsatisfiable
            } else {
                RangeRequest::Partial {
                    first,
                    last: last.min(len - 1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Full, Partial, Unsatisfiable};
    use super::*;

    const ETAG: &[u8] = b"\"0123456789abcdef0123456789abcdef\"";

    fn range(text: &str) -> RangeRequest {
        evaluate(Some(text.as_bytes()), None, ETAG, 1000)
    }

    #[test]
    fn byte_ranges_of_every_form() {
        assert_eq!(range("bytes=0-0"), Partial { first: 0, last: 0 });
        assert_eq!(
            range("bytes=10-19"),
            Partial {
                first: 10,
                last: 19
            }
        );
        assert_eq!(
            range("bytes=990-5000"),
            Partial {
                first: 990,
                last: 999
            }
        );
        assert_eq!(
            range("bytes=500-"),
            Partial {
                first: 500,
                last: 999
            }
        );
        assert_eq!(
            range("bytes=-1"),
            Partial {
                first: 999,
                last: 999
            }
        );
        assert_eq!(
            range("bytes=-5000"),
            Partial {
                first: 0,
                last: 999
            }
        );
        assert_eq!(range("Bytes = 1 - 2"), Partial { first: 1, last: 2 });
    }

    #[test]
    fn ranges_past_the_end_are_unsatisfiable() {
        assert_eq!(range("bytes=1000-"), Unsatisfiable);
        assert_eq!(range("bytes=1000-1001"), Unsatisfiable);
        assert_eq!(range("bytes=-0"), Unsatisfiable);
        assert_eq!(evaluate(Some(b"bytes=-5"), None, ETAG, 0), Unsatisfiable);
    }

    #[test]
    fn ranges_not_understood_or_several_give_the_whole_body() {
        for text in [
            "bytes=x-y",
            "items=0-1",
            "bytes=5-1",
            "bytes=0-1,5-9",
            "bytes=+1-2",
            "bytes=",
            "bytes=-",
            "0-1",
        ] {
            assert_eq!(range(text), Full, "{text}");
        }
        assert_eq!(evaluate(None, Some(ETAG), ETAG, 1000), Full);
        assert_eq!(evaluate(Some(&[0xff, b'=']), None, ETAG, 1000), Full);
    }

    #[test]
    fn if_range_must_be_the_current_etag_exactly() {
        let current = evaluate(Some(b"bytes=0-9"), Some(ETAG), ETAG, 1000);
        assert_eq!(current, Partial { first: 0, last: 9 });
        let weak = format!("W/{}", String::from_utf8_lossy(ETAG));
        for other in [
            weak.as_str(),
            "\"00000000000000000000000000000000\"",
            "Tue, 01 Jan 2030 00:00:00 GMT",
        ] {
            let evaluated = evaluate(Some(b"bytes=0-9"), Some(other.as_bytes()), ETAG, 1000);
            assert_eq!(evaluated, Full, "{other}");
        }
    }
}
