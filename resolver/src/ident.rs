//! The one character set for names and values that come from outside: device query
//! parameters and the app and channel of a rule.

/// Longest name or value accepted in a device query, and longest app or channel name in a rule.
pub const MAX_IDENT_LEN: usize = 64;

/// Whether `text` is a valid name or value: 1 to [`MAX_IDENT_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`. Only such text ever reaches a lookup, a file name or a log line.
pub fn is_ident(text: &str) -> bool {
    is_ident_bytes(text.as_bytes())
}

pub(crate) fn is_ident_bytes(text: &[u8]) -> bool {
    !text.is_empty() && text.len() <= MAX_IDENT_LEN && text.iter().all(|&b| is_ident_byte(b))
}

pub(crate) fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Shortens untrusted text for an error message, so a message never echoes kilobytes.
pub(crate) fn excerpt(text: &str) -> String {
    const LIMIT: usize = 64;
    match text.char_indices().nth(LIMIT) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}
