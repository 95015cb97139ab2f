//! The pre-login dialogue driven by bytes alone: what goes in, what comes out, what the driver
//! is asked to do.

use super::*;

fn settings(login_type: LoginType, starttls: bool) -> Settings {
    Settings {
        max_command_size: 1024,
        max_bad_commands: 10,
        max_failed_login_attempts: 4,
        login_type,
        banner: "ready".into(),
        starttls,
        token_mechanisms: Vec::new(),
    }
}

fn plain() -> Dialogue {
    Dialogue::new(settings(LoginType::PlainTextLogin, true), false)
}

/// Feeds `input`, then runs the dialogue until it wants more input or something else done;
/// returns what it sent and that step.
fn exchange(d: &mut Dialogue, input: &[u8]) -> (String, Step) {
    d.feed(input);
    let step = d.step();
    (String::from_utf8_lossy(&d.take_output()).into_owned(), step)
}

fn user_of(step: &Step) -> Option<String> {
    match step {
        Step::Login { credentials: Ok(c) } => Some(c.user().to_string()),
        _ => None,
    }
}

#[test]
fn greeting_and_capabilities_follow_login_type_and_tls() {
    let mut d = Dialogue::new(settings(LoginType::SecureLogin, true), false);
    let (out, step) = exchange(&mut d, b"");
    assert_eq!(
        out,
        "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID STARTTLS LOGINDISABLED] ready\r\n"
    );
    assert!(matches!(step, Step::Read { room: 1024 }));
    let (out, _) = exchange(&mut d, b"a LOGIN u p\r\nb AUTHENTICATE PLAIN AHUAcA==\r\n");
    assert_eq!(
        out,
        "a NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first.\r\n\
         b NO [PRIVACYREQUIRED] Use STARTTLS or the TLS port first.\r\n"
    );
    let records = d.take_records();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.outcome == "privacy_required"));
    assert_eq!(records[0].parameters, "u *****");
    let mut tls = Dialogue::new(settings(LoginType::SecureLogin, false), true);
    let (out, _) = exchange(&mut tls, b"c CAPABILITY\r\n");
    assert!(out.ends_with(
        "* CAPABILITY IMAP4rev1 LITERAL+ ID SASL-IR AUTH=PLAIN AUTH=LOGIN\r\nc OK CAPABILITY completed.\r\n"
    ));
}

#[test]
fn a_login_is_handed_to_the_driver_and_answered() {
    let mut d = plain();
    let (_, step) = exchange(&mut d, b"a LOGIN jsmith {5+}\r\npass1\r\nb NOOP\r\n");
    assert_eq!(user_of(&step).as_deref(), Some("jsmith"));
    d.answer(Answer::AuthFailed);
    let (out, step) = exchange(&mut d, b"");
    assert!(
        out.starts_with("a NO [AUTHENTICATIONFAILED] LOGIN failed.\r\n"),
        "{out}"
    );
    // The command pipelined behind it is answered after it.
    assert!(out.ends_with("b OK NOOP completed.\r\n"), "{out}");
    assert!(matches!(step, Step::Read { .. }));
    let records = d.take_records();
    assert_eq!(records[0].outcome, "auth_failed");
    assert_eq!(records[0].user, "jsmith");
}

#[test]
fn the_fourth_failure_ends_the_session() {
    let mut d = plain();
    exchange(&mut d, b"");
    for i in 0..4 {
        let (_, step) = exchange(&mut d, format!("t{i} LOGIN u p\r\n").as_bytes());
        assert!(matches!(step, Step::Login { .. }));
        d.answer(Answer::AuthFailed);
    }
    let (out, step) = exchange(&mut d, b"");
    assert_eq!(
        out,
        "t3 NO [AUTHENTICATIONFAILED] LOGIN failed.\r\n* BYE Too many failed logins.\r\n"
    );
    assert!(matches!(step, Step::Close));
}

#[test]
fn a_logged_in_client_keeps_what_it_pipelined() {
    let mut d = plain();
    exchange(&mut d, b"");
    let (_, step) = exchange(
        &mut d,
        b"a AUTHENTICATE PLAIN AHVzZXIxAHBhc3Mx\r\nb SELECT INBOX\r\n",
    );
    assert_eq!(user_of(&step).as_deref(), Some("user1"));
    d.answer(Answer::LoggedIn {
        prelude: b"* OK [ALERT] hi\r\n".to_vec(),
        ok_text: "[CAPABILITY IMAP4rev1 IDLE] Logged in".into(),
    });
    let (out, step) = exchange(&mut d, b"");
    assert_eq!(
        out,
        "* OK [ALERT] hi\r\na OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"
    );
    assert!(matches!(step, Step::LoggedIn));
    assert_eq!(d.take_pending(), b"b SELECT INBOX\r\n");
}

#[test]
fn authenticate_without_initial_response_waits_for_it() {
    let mut d = plain();
    exchange(&mut d, b"");
    let (out, step) = exchange(&mut d, b"a AUTHENTICATE PLAIN\r\n");
    assert_eq!(out, "+ \r\n");
    assert!(matches!(step, Step::Read { .. }));
    let (_, step) = exchange(&mut d, b"AHVzZXIxAHBhc3Mx\r\n");
    assert_eq!(user_of(&step).as_deref(), Some("user1"));
    d.answer(Answer::Unavailable);
    let (out, _) = exchange(&mut d, b"b AUTHENTICATE PLAIN\r\n*\r\n");
    assert_eq!(
        out,
        "a NO [UNAVAILABLE] The mailbox server is not available; try again later.\r\n+ \r\nb BAD AUTHENTICATE cancelled.\r\n"
    );
}

#[test]
fn a_synchronizing_literal_gets_its_continuation_within_the_limit_only() {
    let mut d = plain();
    exchange(&mut d, b"");
    let (out, step) = exchange(&mut d, b"a LOGIN user1 {5}\r\n");
    assert_eq!(out, "+ Ready for literal data\r\n");
    assert!(matches!(step, Step::Read { .. }));
    let (_, step) = exchange(&mut d, b"pass1\r\n");
    assert_eq!(user_of(&step).as_deref(), Some("user1"));
    d.answer(Answer::Limit);
    let (out, _) = exchange(&mut d, b"b LOGIN user1 {5000}\r\n");
    assert_eq!(
        out,
        "a NO [LIMIT] Too many connections for this mailbox.\r\nb BAD [TOOBIG] Command exceeds the size limit.\r\n"
    );
}

#[test]
fn starttls_throws_away_what_was_pipelined_behind_it() {
    let mut d = plain();
    exchange(&mut d, b"");
    let (out, step) = exchange(&mut d, b"a STARTTLS\r\nb LOGIN user1 pass1\r\n");
    assert_eq!(out, "a OK Begin TLS negotiation now.\r\n");
    assert!(matches!(step, Step::StartTls));
    assert_eq!(d.discarded_before_tls(), 21);
    d.tls_started();
    let (out, step) = exchange(&mut d, b"c STARTTLS\r\n");
    assert_eq!(out, "c BAD STARTTLS is not available here.\r\n");
    assert!(matches!(step, Step::Read { .. }));
}

#[test]
fn an_overlong_line_is_answered_and_the_next_command_runs() {
    let mut d = plain();
    exchange(&mut d, b"");
    let mut line = b"a ID (\"x\" \"".to_vec();
    line.resize(1500, b'y');
    line.extend_from_slice(b"\")\r\nb NOOP\r\n");
    let mut out = String::new();
    let mut rest: &[u8] = &line;
    loop {
        let step = d.step();
        out.push_str(&String::from_utf8_lossy(&d.take_output()));
        match step {
            Step::Read { room } if !rest.is_empty() => {
                let n = room.min(rest.len());
                d.feed(&rest[..n]);
                rest = &rest[n..];
            }
            _ => break,
        }
    }
    assert_eq!(
        out,
        "a BAD [TOOBIG] Command exceeds the size limit.\r\nb OK NOOP completed.\r\n"
    );
}

#[test]
fn bad_commands_are_answered_until_too_many() {
    let mut d = plain();
    exchange(&mut d, b"");
    let (out, _) = exchange(&mut d, b"a SELECT INBOX\r\nb FROB\r\n");
    assert_eq!(
        out,
        "a BAD Command is not valid before login.\r\nb BAD Command not understood.\r\n"
    );
    let (out, step) = exchange(&mut d, &b"c FROB\r\n".repeat(8));
    assert!(out.ends_with("c BAD Command not understood.\r\n* BYE Too many invalid commands.\r\n"));
    assert!(matches!(step, Step::Close));
    let mut d = plain();
    exchange(&mut d, b"");
    let (out, step) = exchange(&mut d, b"z LOGOUT\r\n");
    assert_eq!(out, "* BYE Logging out.\r\nz OK LOGOUT completed.\r\n");
    assert!(matches!(step, Step::Close));
}

#[test]
fn deadlines_and_shutdown_say_bye() {
    let mut d = plain();
    exchange(&mut d, b"");
    d.timed_out();
    let (out, step) = exchange(&mut d, b"");
    assert_eq!(out, "* BYE Timed out waiting for login.\r\n");
    assert!(matches!(step, Step::Close));
    let mut d = plain();
    exchange(&mut d, b"");
    d.shutting_down();
    assert_eq!(
        exchange(&mut d, b"").0,
        "* BYE [UNAVAILABLE] Server shutting down.\r\n"
    );
}

#[test]
fn a_proxy_header_from_a_client_ends_the_session() {
    for header in [
        &b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 143\r\n"[..],
        &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"[..],
    ] {
        let mut d = plain();
        let _ = exchange(&mut d, b"");
        let (out, step) = exchange(&mut d, header);
        assert!(out.starts_with("* BYE PROXY protocol header"), "{out}");
        assert!(matches!(step, Step::Close), "{step:?}");
    }
    // The same words later are only a bad command.
    let mut d = plain();
    let (out, step) = exchange(&mut d, b"a NOOP\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    assert!(!out.contains("BYE"), "{out}");
    assert!(!matches!(step, Step::Close));
}

#[test]
fn authenticate_login_asks_for_the_user_then_the_password() {
    let mut d = plain();
    let _ = exchange(&mut d, b"");
    let (out, _) = exchange(&mut d, b"a AUTHENTICATE LOGIN\r\n");
    assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
    let (out, _) = exchange(&mut d, b"YW5u\r\n");
    assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
    let (_, step) = exchange(&mut d, b"czNjcmV0\r\n");
    assert_eq!(user_of(&step).as_deref(), Some("ann"));
    let Step::Login { credentials: Ok(c) } = step else {
        panic!("{step:?}")
    };
    assert_eq!(c.secret().expose(), b"s3cret");
    // SASL-IR: the user name in the command, then only the password.
    let mut d = plain();
    let _ = exchange(&mut d, b"");
    let (out, _) = exchange(&mut d, b"b AUTHENTICATE LOGIN Ym9i\r\n");
    assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
    let (_, step) = exchange(&mut d, b"cHc=\r\n");
    assert_eq!(user_of(&step).as_deref(), Some("bob"));
    // Cancelled at the password, and bad base64.
    let mut d = plain();
    let _ = exchange(&mut d, b"");
    let _ = exchange(&mut d, b"c AUTHENTICATE LOGIN Ym9i\r\n");
    let (out, _) = exchange(&mut d, b"*\r\n");
    assert_eq!(out, "c BAD AUTHENTICATE cancelled.\r\n");
    let _ = exchange(&mut d, b"d AUTHENTICATE LOGIN\r\n");
    let (out, _) = exchange(&mut d, b"!!!\r\n");
    assert_eq!(out, "d BAD Invalid base64 in AUTHENTICATE.\r\n");
    // secure-login before TLS: as LOGIN and PLAIN.
    let mut d = Dialogue::new(settings(LoginType::SecureLogin, true), false);
    let _ = exchange(&mut d, b"");
    let (out, _) = exchange(&mut d, b"e AUTHENTICATE LOGIN\r\n");
    assert!(out.starts_with("e NO [PRIVACYREQUIRED]"), "{out}");
}
