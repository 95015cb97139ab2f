//! Everything imapgate parses before login, driven the way the session driver does: commands
//! with literals arriving in chunks under a size limit, AUTHENTICATE continuations, ID
//! parameters, SASL PLAIN decoding, and the encoding of accepted credentials towards a backend,
//! which must decode back (with imap-codec) to exactly one command carrying the same bytes.
#![no_main]

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::CommandCodec;
use imapgate::backend::encode::{login_command, LoginCaps};
use imapgate::credentials::Credentials;
use imapgate::session::boundary::Boundary;
use imapgate::session::input::{
    decode, decode_sasl, id_parameters, Decoded, Discard, Discarded, SaslDecoded,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, input)) = data.split_first() else {
        return;
    };
    let max = 1024 + usize::from(knob) * 37;
    let chunk = 1 + usize::from(knob % 23);
    drive(input, max, chunk);
    if let SaslDecoded::Message { message, .. } = decode_sasl(input, max) {
        check_credentials(Credentials::from_sasl_plain(&message));
    }
    check_credentials(Credentials::from_sasl_plain(input));
    let mut b = Boundary::responses();
    let mut c = Boundary::commands();
    for piece in input.chunks(chunk) {
        b.feed(piece);
        c.feed(piece);
    }
    let _ = (b.at_line_start(), c.is_opaque());
});

/// The pre-login reader: chunks arrive, `decode` says what to do, the buffer stays bounded.
fn drive(input: &[u8], max: usize, chunk: usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut rest = input;
    let mut until: Option<usize> = None;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 1_000_000, "no progress");
        assert!(buf.len() <= max, "buffer over the limit");
        if let Some(u) = until {
            if buf.len() < u {
                if !feed(&mut buf, &mut rest, chunk, max) {
                    return;
                }
                continue;
            }
            until = None;
        }
        match decode(&buf, max) {
            Decoded::Command { command, consumed } => {
                assert!(consumed > 0 && consumed <= buf.len());
                match command.body {
                    CommandBody::Login { username, password } => {
                        check_credentials(Credentials::password(username.as_ref(), password.declassify().as_ref()));
                    }
                    CommandBody::Authenticate { initial_response: Some(ir), .. } => {
                        check_credentials(Credentials::from_sasl_plain(ir.declassify()));
                    }
                    CommandBody::Id { parameters } => {
                        let kept = id_parameters(parameters.unwrap_or_default());
                        assert!(kept.len() <= 30);
                    }
                    _ => {}
                }
                buf.drain(..consumed);
            }
            Decoded::NeedMore => {
                if !feed(&mut buf, &mut rest, chunk, max) {
                    return;
                }
            }
            Decoded::Continue { until: u } => {
                assert!(u > buf.len() && u <= max, "continuation past the limit");
                until = Some(u);
            }
            Decoded::LiteralTooBig { .. } => buf.clear(),
            Decoded::Bad { consumed, .. } => {
                assert!(consumed > 0 && consumed <= buf.len());
                buf.drain(..consumed);
            }
            Decoded::Overlong { .. } => {
                // The driver discards the rest of the command, holding nothing.
                let mut discard = Discard::command(max);
                let mut answered = true;
                loop {
                    match discard.feed(&buf, answered) {
                        Discarded::NeedMore => buf.clear(),
                        Discarded::Ended { consumed } => {
                            assert!(consumed <= buf.len());
                            buf.drain(..consumed);
                            break;
                        }
                        Discarded::Unsyncable => return,
                    }
                    answered = false;
                    if !feed(&mut buf, &mut rest, chunk, max) {
                        return;
                    }
                }
            }
            Decoded::TooLong | Decoded::BadLiteral { .. } => return,
        }
    }
}

fn feed(buf: &mut Vec<u8>, rest: &mut &[u8], chunk: usize, max: usize) -> bool {
    let n = chunk.min(rest.len()).min(max.saturating_sub(buf.len()));
    if n == 0 {
        return false;
    }
    buf.extend_from_slice(&rest[..n]);
    *rest = &rest[n..];
    true
}

/// Accepted credentials, encoded for every kind of backend, decode back to one command with the
/// same user name and password, consuming every byte.
fn check_credentials(creds: Result<Credentials, imapgate::credentials::CredentialError>) {
    let Ok(creds) = creds else { return };
    for bits in 0..16u8 {
        let caps = LoginCaps {
            auth_plain: bits & 1 != 0,
            sasl_ir: bits & 2 != 0,
            literal_plus: bits & 4 != 0,
            login_disabled: bits & 8 != 0,
        };
        let Some(fragments) = login_command("g1", &creds, caps) else {
            assert!(caps.login_disabled && !caps.auth_plain);
            continue;
        };
        if caps.auth_plain {
            // The base64 line(s) carry no byte of the credentials in clear.
            for f in &fragments {
                assert!(f.ends_with(b"\r\n") && !f[..f.len() - 2].contains(&b'\n'));
            }
            continue;
        }
        let wire: Vec<u8> = fragments.concat();
        let (rest, command) = CommandCodec::new().decode(&wire).expect("encoded LOGIN decodes");
        assert!(rest.is_empty(), "one command, nothing after it");
        match command.body {
            CommandBody::Login { username, password } => {
                assert_eq!(username.as_ref(), creds.user().as_bytes());
                assert_eq!(password.declassify().as_ref(), creds.secret().expose());
            }
            other => panic!("not a LOGIN: {}", other.name()),
        }
    }
}
