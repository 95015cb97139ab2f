//! The pre-login decoder's decisions, its LOGIN relaxation and its discarding.

use super::*;

#[test]
fn decisions() {
    assert!(matches!(
        decode(b"a NOOP\r\nb NOOP\r\n", 100),
        Decoded::Command { consumed: 8, .. }
    ));
    assert!(matches!(decode(b"a NOO", 100), Decoded::NeedMore));
    assert!(matches!(
        decode(b"a NOOOOOOOOOOO", 10),
        Decoded::Overlong { tag: Some(_) }
    ));
    assert!(matches!(
        decode(b"a LOGIN {5}\r\n", 100),
        Decoded::Continue { until: 19 }
    ));
    // An empty literal waits for the byte after it.
    assert!(matches!(
        decode(b"a LOGIN {0}\r\n", 100),
        Decoded::Continue { until: 14 }
    ));
    assert!(matches!(
        decode(b"a LOGIN {0}\r\n \"x\"\r\n", 100),
        Decoded::Command { .. }
    ));
    assert!(matches!(
        decode(b"a LOGIN {84}\r\n", 100),
        Decoded::Continue { .. }
    ));
    assert!(matches!(
        decode(b"a LOGIN {85}\r\n", 100),
        Decoded::LiteralTooBig { .. }
    ));
    assert!(matches!(decode(b"a LOGIN {95+}\r\n", 90), Decoded::TooLong));
    assert!(matches!(
        decode(b"a LOGIN {5+}\r\nab", 100),
        Decoded::NeedMore
    ));
    assert!(matches!(
        decode(b"a FROB\r\nb NOOP\r\n", 100),
        Decoded::Bad { consumed: 8, .. }
    ));
    assert!(matches!(decode(b"a FROB", 100), Decoded::NeedMore));
    // Announcements past 32 bits (imap-codec's limit) or 64 bits are literals too.
    assert!(matches!(
        decode(b"a1 LOGIN {18446744073709551616+}\r\n", 100),
        Decoded::TooLong
    ));
    assert!(matches!(
        decode(b"a1 LOGIN {99999999999}\r\n", 100),
        Decoded::LiteralTooBig { tag } if tag == "a1"
    ));
    assert!(matches!(
        decode(b"a FROB {0000000000000000000005+}\r\nb NOOP\r\n", 100),
        Decoded::BadLiteral { .. }
    ));
    assert!(matches!(
        decode(b"a FROB {5}\r\n", 100),
        Decoded::BadLiteral { .. }
    ));
    assert!(matches!(
        decode(b"a LOGIN {3}\r\na\0b x\r\n", 100),
        Decoded::BadLiteral { .. }
    ));
    assert_eq!(
        decode_sasl(b"*\r\n", 100),
        SaslDecoded::Cancel { consumed: 3 }
    );
    assert_eq!(
        decode_sasl(b"!!\r\nx", 100),
        SaslDecoded::Bad { consumed: 4 }
    );
    assert_eq!(
        decode_sasl(b"AGEAYg==\r\n", 100),
        SaslDecoded::Message {
            message: b"\0a\0b".to_vec(),
            consumed: 10
        }
    );
}

fn login_arguments(buf: &[u8]) -> (String, String, usize) {
    match decode(buf, 1000) {
        Decoded::Command { command, consumed } => match command.body {
            imap_codec::imap_types::command::CommandBody::Login { username, password } => (
                String::from_utf8_lossy(username.as_ref()).into_owned(),
                String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                consumed,
            ),
            other => panic!("not a LOGIN: {}", other.name()),
        },
        other => panic!("not a command: {other:?}"),
    }
}

#[test]
fn login_atoms_as_dovecot_reads_them() {
    // Python's imaplib: the user name unquoted.
    let buf = b"a LOGIN EXAMPLE\\user3 \"pass3\"\r\nb NOOP\r\n";
    assert_eq!(
        login_arguments(buf),
        ("EXAMPLE\\user3".into(), "pass3".into(), buf.len() - 8)
    );
    assert_eq!(
        login_arguments(b"a login us%e*r] pa\\ss}\r\n"),
        ("us%e*r]".into(), "pa\\ss}".into(), 24)
    );
    // With literals on either side; the positions are the client's bytes.
    let buf = b"a LOGIN {5+}\r\nab\\cd pa\\ss\r\n";
    assert_eq!(
        login_arguments(buf),
        ("ab\\cd".into(), "pa\\ss".into(), buf.len())
    );
    let head = b"a LOGIN EX\\u {5}\r\n";
    match decode(head, 1000) {
        Decoded::Continue { until } => assert_eq!(until, head.len() + 5 + 1),
        other => panic!("{other:?}"),
    }
    let buf = b"a LOGIN EX\\u {5}\r\nhello\r\n";
    assert_eq!(
        login_arguments(buf),
        ("EX\\u".into(), "hello".into(), buf.len())
    );
    // What Dovecot refuses stays refused.
    for bad in [
        &b"a LOGIN us(er pw\r\n"[..],
        b"a LOGIN us)er pw\r\n",
        b"a LOGIN us\"er pw\r\n",
        b"a LOGIN us\0er pw\r\n",
        b"a LOGIN us\xc3\xa9\\ pw\r\n",
        b"a LOGIN us\rer\\ pw\r\n",
        b"a LOGIN user\\\r\n",
        b"a NOOP x\\y\r\n",
    ] {
        assert!(
            matches!(decode(bad, 1000), Decoded::Bad { .. }),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn an_overlong_command_is_discarded_to_its_end() {
    let max = 1024;
    let mut line = b"a ID (\"x\" \"".to_vec();
    line.resize(max, b'y');
    assert!(matches!(
        decode(&line, max),
        Decoded::Overlong { tag: Some(t) } if t == "a"
    ));
    let mut d = Discard::command(max);
    assert_eq!(d.feed(&line, true), Discarded::NeedMore);
    assert_eq!(d.feed(b"yyy\")", false), Discarded::NeedMore);
    assert_eq!(
        d.feed(b")\r\nb NOOP\r\n", false),
        Discarded::Ended { consumed: 3 }
    );
    // LITERAL+ literals are skipped by count, whatever they hold.
    let mut d = Discard::command(max);
    assert_eq!(
        d.feed(
            b"xx {000000000000000000000000000000005+}\r\n\r\n\r\n",
            false
        ),
        Discarded::NeedMore
    );
    assert_eq!(d.feed(b"x\r\nz", false), Discarded::Ended { consumed: 3 });
    // One over the limit cannot be skipped safely.
    let mut d = Discard::command(max);
    assert_eq!(d.feed(b"x {1025+}\r\n", false), Discarded::Unsyncable);
    let mut d = Discard::command(max);
    assert_eq!(
        d.feed(b"x {18446744073709551616+}\r\n", false),
        Discarded::Unsyncable
    );
    // A synchronizing literal after the limit waits for a `+`: the command ends there.
    let mut d = Discard::command(max);
    assert_eq!(
        d.feed(b"x {5}\r\nb NOOP", false),
        Discarded::Ended { consumed: 7 }
    );
    // ...but one answered before the limit has its data in the stream.
    let mut d = Discard::command(max);
    assert_eq!(d.feed(b"x {5}\r\n\r\n\r\nx y", true), Discarded::NeedMore);
    // SASL responses are lines.
    let mut d = Discard::line();
    assert_eq!(
        d.feed(b"QUFB {5+}\r\nb", false),
        Discarded::Ended { consumed: 11 }
    );
}
