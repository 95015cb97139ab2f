//! Small facts about IMAP's byte stream that several parts of the gate need without parsing a
//! whole message: where a literal is announced, what a line's tag is, what may be sent as a
//! quoted string. Pure functions, no imports from the rest of the gate.

/// The length of a literal announced at the end of a line (`{N}` or `{N+}`, followed or not by
/// CR, LF or CRLF).
pub fn literal_announced(line: &[u8]) -> Option<u64> {
    literal_announcement(line).map(|(length, _)| length)
}

/// The literal announced at the end of a line: its length and whether it is non-synchronizing
/// (`{N+}`). Any number of digits is an announcement (leading zeros included); a length past
/// what 64 bits hold reads as `u64::MAX`, which every limit refuses.
pub fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let t = line.strip_suffix(b"\n").unwrap_or(line);
    let t = t.strip_suffix(b"\r").unwrap_or(t);
    let t = t.strip_suffix(b"}")?;
    let open = t.iter().rposition(|&b| b == b'{')?;
    let digits = &t[open + 1..];
    let (digits, non_sync) = match digits.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (digits, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    Some((length.unwrap_or(u64::MAX), non_sync))
}

/// The tag of a line, when its first word is a valid tag (up to 64 bytes of ASTRING-CHAR
/// without `+`).
pub fn line_tag(buf: &[u8]) -> Option<String> {
    let end = buf
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let tag = &buf[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    valid.then(|| String::from_utf8_lossy(tag).into_owned())
}

/// True when `value` can be sent as a quoted string: 7-bit text without `"`, `\` or controls.
pub fn quotable(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_and_tags() {
        assert_eq!(literal_announced(b"* 1 FETCH (BODY[] {12}\r\n"), Some(12));
        assert_eq!(literal_announced(b"* OK {x}\r\n"), None);
        assert_eq!(literal_announcement(b"a {05+}"), Some((5, true)));
        assert_eq!(
            literal_announcement(b"a {18446744073709551616}\r\n"),
            Some((u64::MAX, false))
        );
        assert_eq!(line_tag(b"a1 FOO\r\n").as_deref(), Some("a1"));
        assert_eq!(line_tag(b"* FOO\r\n"), None);
        assert_eq!(line_tag(b"a{1 FOO\r\n"), None);
        assert_eq!(line_tag(b"nospace"), None);
        assert!(quotable(b"pw 1") && !quotable(b"p\"w") && !quotable("é".as_bytes()));
    }
}
