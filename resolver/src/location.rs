//! Where a binary is stored, taken from a rule's url.
//!
//! Invariant: every [`ObjectLocation`] key is safe both as an S3 key and as a path below
//! a data directory, so a store can use it without checking it again.

use crate::ident::excerpt;

/// Longest object key accepted, in bytes (S3's limit).
const MAX_KEY_LEN: usize = 1024;

/// Where a binary lives, taken from a rule's `url`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectLocation {
    /// The S3 bucket for `s3://` urls; `None` for `local://`.
    pub bucket: Option<String>,
    /// The object key: `/`-separated segments of `A-Z a-z 0-9 . _ + -`, none of them `.`
    /// or `..`, so it is safe both as an S3 key and as a path below a data directory.
    pub key: String,
}

/// A url that names no usable object location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("url `{url}` is not usable: {reason}")]
pub struct BadUrl {
    pub url: String,
    pub reason: &'static str,
}

impl ObjectLocation {
    /// Parses `s3://<bucket>/<key>` or `local://<key>`.
    pub fn parse(url: &str) -> Result<Self, BadUrl> {
        let bad = |reason| BadUrl {
            url: excerpt(url),
            reason,
        };
        let (bucket, key) = if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or_else(|| bad("an s3:// url needs a bucket and a key"))?;
            if !is_bucket_name(bucket) {
                return Err(bad("the bucket name is not a valid S3 bucket name"));
            }
            (Some(bucket.to_owned()), key)
        } else if let Some(key) = url.strip_prefix("local://") {
            (None, key)
        } else {
            return Err(bad("it must start with s3:// or local://"));
        };
        if !is_safe_key(key) {
            return Err(bad(
                "the key must be '/'-separated segments of A-Z, a-z, 0-9, '.', '_', '+' and '-', none of them '.' or '..'",
            ));
        }
        Ok(ObjectLocation {
            bucket,
            key: key.to_owned(),
        })
    }

    /// The url that names this location.
    pub fn url(&self) -> String {
        match &self.bucket {
            Some(bucket) => format!("s3://{bucket}/{}", self.key),
            None => format!("local://{}", self.key),
        }
    }
}

/// Whether `name` is usable as an S3 bucket name: 3 to 63 of `a-z 0-9 . -`.
pub fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
}

fn is_safe_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_url(url: &str) -> BadUrl {
        ObjectLocation::parse(url).expect_err("an unusable url")
    }

    #[test]
    fn s3_and_local_urls_give_their_object_location() {
        for (url, bucket, key) in [
            ("s3://bucket/key", Some("bucket"), "key"),
            ("s3://b-ucket/a/b/c", Some("b-ucket"), "a/b/c"),
            (
                "s3://my.bucket-1/os_armv8_1.1.0+b",
                Some("my.bucket-1"),
                "os_armv8_1.1.0+b",
            ),
            ("local://k", None, "k"),
            ("local://apps/os_armv8_1.1.0", None, "apps/os_armv8_1.1.0"),
            ("local://a/..b/c..", None, "a/..b/c.."),
        ] {
            let location = ObjectLocation::parse(url).expect("a usable url");
            assert_eq!(
                location,
                ObjectLocation {
                    bucket: bucket.map(str::to_owned),
                    key: key.to_owned()
                },
                "{url}"
            );
            assert_eq!(location.url(), url);
        }
    }

    #[test]
    fn urls_that_could_escape_or_are_not_ours_are_rejected() {
        for (url, reason) in [
            ("file:///etc/passwd", "it must start with s3:// or local://"),
            (
                "https://example.com/k",
                "it must start with s3:// or local://",
            ),
            ("S3://bucket/k", "it must start with s3:// or local://"),
            ("s3://bucket", "an s3:// url needs a bucket and a key"),
            (
                "s3://UPPER/k",
                "the bucket name is not a valid S3 bucket name",
            ),
            ("s3://ab/k", "the bucket name is not a valid S3 bucket name"),
            ("s3:///k", "the bucket name is not a valid S3 bucket name"),
            (
                "s3://bu_cket/k",
                "the bucket name is not a valid S3 bucket name",
            ),
        ] {
            assert_eq!(
                bad_url(url),
                BadUrl {
                    url: url.to_owned(),
                    reason
                },
                "{url}"
            );
        }
        for url in [
            "s3://bucket/../x",
            "s3://bucket/",
            "s3://bucket/a/./b",
            "s3://bucket/a%2Fb",
            "local://a//b",
            "local:///abs",
            "local://..",
            "local://a/..",
            "local://a/",
            "local://",
            "local://a\\b",
            "local://a b",
            "local://é",
        ] {
            assert!(bad_url(url).reason.starts_with("the key must be"), "{url}");
        }
        let long_key = format!("local://{}", "k".repeat(1025));
        assert_eq!(bad_url(&long_key).url, excerpt(&long_key));
        assert!(ObjectLocation::parse(&format!("local://{}", "k".repeat(1024))).is_ok());
    }

    #[test]
    fn bad_url_names_the_url_and_the_reason() {
        assert_eq!(
            bad_url("s3://UPPER/k").to_string(),
            "url `s3://UPPER/k` is not usable: the bucket name is not a valid S3 bucket name"
        );
    }
}
