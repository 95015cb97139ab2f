//! Bad input before login: each gets a clear reply (`BAD`, `NO`, or `* BYE` and a clean close),
//! never a hang, and never reaches the backend.

mod common;

use std::time::Duration;

use common::fake::Script;
use common::fixtures::{gate_with_fake, FAKE_USERS};

/// What the gate must answer, and whether the session survives it.
struct Case {
    what: &'static str,
    send: Vec<u8>,
    reply: &'static str,
    survives: bool,
}

fn cases() -> Vec<Case> {
    let case = |what, send: &[u8], reply, survives| Case {
        what,
        send: send.to_vec(),
        reply,
        survives,
    };
    vec![
        case(
            "non-UTF-8 bytes",
            b"a LOGIN \xff\xfe pw\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "NUL in a line",
            b"a NOOP\0\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "bare LF",
            b"a NOOP\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "bare CR inside a line",
            b"a NO\rOP\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case("empty line", b"\r\n", "* BAD Command not understood.", true),
        case(
            "no tag",
            b"NOOP\r\n",
            "NOOP BAD Command not understood.",
            true,
        ),
        case(
            "bad tag",
            b"{x NOOP\r\n",
            "* BAD Command not understood.",
            true,
        ),
        case(
            "command after login only",
            b"a SELECT INBOX\r\n",
            "a BAD Command is not valid before login.",
            true,
        ),
        case(
            "unknown command",
            b"a XYZZY\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "LOGIN without password",
            b"a LOGIN user1\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "AUTHENTICATE with bad base64",
            b"a AUTHENTICATE PLAIN %%%\r\n",
            "a BAD Command not understood.",
            true,
        ),
        case(
            "SASL message without password",
            b"a AUTHENTICATE PLAIN AHVzZXIx\r\n",
            "a NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.",
            true,
        ),
        case(
            "SASL with CR LF smuggled in the password",
            b"a AUTHENTICATE PLAIN AHVzZXIxAHBhc3MxDQp4IExPR09VVA==\r\n",
            "a NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.",
            true,
        ),
        case(
            "SASL with a foreign authorization identity",
            b"a AUTHENTICATE PLAIN YWRtaW4AdXNlcjEAcGFzczE=\r\n",
            "a NO [AUTHENTICATIONFAILED] AUTHENTICATE failed.",
            true,
        ),
        case(
            "non-UTF-8 password in a literal",
            b"a LOGIN user1 {2+}\r\n\xff\xfe\r\n",
            "a NO [AUTHENTICATIONFAILED] LOGIN failed.",
            true,
        ),
        case(
            "synchronizing literal over the limit",
            b"a LOGIN user1 {100000}\r\n",
            "a BAD [TOOBIG] Command exceeds the size limit.",
            true,
        ),
        case(
            "literal length beyond 32 bits",
            b"a LOGIN user1 {99999999999}\r\n",
            "a BAD [TOOBIG] Command exceeds the size limit.",
            true,
        ),
        case(
            "LITERAL+ length beyond 64 bits",
            b"a1 LOGIN {18446744073709551616+}\r\nb1 LOGOUT\r\n",
            "* BYE [TOOBIG] Command exceeds the size limit.",
            false,
        ),
        case(
            "bad command with a LITERAL+ literal of 22 digits (leading zeros)",
            b"a FROB {0000000000000000000005+}\r\nb1 LOGOUT\r\n",
            "a BAD Command not understood.",
            false,
        ),
        case(
            "LITERAL+ over the limit",
            b"a LOGIN user1 {100000+}\r\n",
            "* BYE [TOOBIG] Command exceeds the size limit.",
            false,
        ),
        case(
            "line over the limit",
            &[&[b'x'; 11000][..], b"\r\n"].concat(),
            "* BAD [TOOBIG] Command exceeds the size limit.",
            true,
        ),
        case(
            "line over the limit carrying a LITERAL+ literal over the limit",
            &[&b"a ID ("[..], &[b'x'; 11000], b" {20000+}\r\n"].concat(),
            "* BYE [TOOBIG] Command exceeds the size limit.",
            false,
        ),
        case(
            "bad command carrying a literal",
            b"a FROB {3+}\r\nabc\r\n",
            "a BAD Command not understood.",
            false,
        ),
    ]
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_answer() {
    let (fake, gate) = gate_with_fake(Script::default(), FAKE_USERS).await;
    for case in cases() {
        let mut c = gate.greeted().await;
        eprintln!("case: {}", case.what);
        c.send(&case.send).await;
        let got = c
            .try_line(Duration::from_secs(5))
            .await
            .unwrap_or_else(|()| panic!("{}: no answer", case.what));
        assert_eq!(got.as_deref(), Some(case.reply), "{}", case.what);
        if case.survives {
            assert_eq!(
                c.cmd("z", "NOOP").await,
                vec!["z OK NOOP completed."],
                "{}",
                case.what
            );
        } else {
            assert!(
                c.closed_within(Duration::from_secs(2)).await,
                "{}: not closed",
                case.what
            );
        }
    }
    let logins: Vec<String> = fake.commands();
    assert!(
        logins.is_empty(),
        "bad input reached the backend: {logins:?}"
    );
    assert_eq!(gate.handle.usage().connections, 0);
    gate.stop().await;
}
