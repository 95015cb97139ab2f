//! LOGIN arguments as Dovecot reads them: atoms with characters IMAP's grammar keeps out of
//! atoms (`\`, `%`, `*`, `]`, `}`), which Python's imaplib sends unquoted.

/// `LOGIN` with atoms that IMAP's grammar refuses but Dovecot accepts, rewritten with those
/// atoms quoted; `None` when the buffer does not start with such a LOGIN, or nothing needs
/// rewriting. Atoms here are runs of printable ASCII without `(`, `)`, `"` or `{` (what Dovecot
/// reads as an atom); CR, LF, NUL, other controls and 8-bit bytes stay refused. Quoted strings
/// and literals among the arguments are copied as they are.
pub fn relax_login(buf: &[u8]) -> Option<Vec<u8>> {
    let sp = memchr::memchr(b' ', buf)?;
    let command = buf.get(sp + 1..sp + 7)?;
    if !command.eq_ignore_ascii_case(b"LOGIN ") {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + 8);
    out.extend_from_slice(&buf[..sp + 7]);
    let mut rest = &buf[sp + 7..];
    let mut changed = false;
    for argument in 0..2 {
        if argument == 1 {
            rest = rest.strip_prefix(b" ")?;
            out.push(b' ');
        }
        match rest.first()? {
            b'"' => {
                let end = quoted_end(rest)?;
                out.extend_from_slice(&rest[..end]);
                rest = &rest[end..];
            }
            b'{' => {
                let lf = memchr::memchr(b'\n', rest)?;
                let (length, _) = crate::wire::literal_announcement(&rest[..lf])?;
                let end = usize::try_from(length)
                    .ok()
                    .and_then(|l| l.checked_add(lf + 1))
                    .filter(|&end| end <= rest.len());
                match end {
                    Some(end) => {
                        out.extend_from_slice(&rest[..end]);
                        rest = &rest[end..];
                    }
                    // The literal's data has not all arrived: what follows is not looked at.
                    None => {
                        out.extend_from_slice(rest);
                        return changed.then_some(out);
                    }
                }
            }
            _ => {
                let len = rest
                    .iter()
                    .position(|&b| !is_relaxed_atom_char(b))
                    .unwrap_or(rest.len());
                if len == 0 {
                    return None;
                }
                let atom = &rest[..len];
                if atom.iter().all(|&b| is_astring_char(b)) {
                    out.extend_from_slice(atom);
                } else {
                    out.push(b'"');
                    for &b in atom {
                        if b == b'\\' {
                            out.push(b'\\');
                        }
                        out.push(b);
                    }
                    out.push(b'"');
                    changed = true;
                }
                rest = &rest[len..];
            }
        }
    }
    out.extend_from_slice(rest);
    changed.then_some(out)
}

/// An atom character as Dovecot reads LOGIN arguments.
fn is_relaxed_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !matches!(b, b'(' | b')' | b'"' | b'{')
}

/// A character IMAP's grammar allows in an unquoted astring.
fn is_astring_char(b: u8) -> bool {
    is_relaxed_atom_char(b) && !matches!(b, b'%' | b'*' | b'\\')
}

/// Length of the quoted string at the start of `s`, quotes included.
fn quoted_end(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}
