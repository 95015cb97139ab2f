//! Property tests: credential encoding towards a backend (any accepted UTF-8 password round-trips,
//! and no input produces a second command line), and identity resolution (every identity form, in
//! any case, finds its mailbox; other names find none).

use std::path::Path;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::CommandCodec;
use imapgate::backend::encode::{login_command, LoginCaps};
use imapgate::credentials::Credentials;
use imapgate::directory::file;
use proptest::prelude::*;

/// Every combination of what a backend may advertise, with a way to log in.
fn caps() -> impl Strategy<Value = LoginCaps> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(auth_plain, sasl_ir, literal_plus)| {
        LoginCaps {
            auth_plain,
            sasl_ir,
            literal_plus,
            login_disabled: false,
            ..LoginCaps::default()
        }
    })
}

/// Text without NUL, CR or LF (what the gate accepts), with quotes, backslashes, braces, spaces
/// and non-ASCII well represented.
fn secret() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('{'),
            Just('}'),
            Just(' '),
            Just('*'),
            Just('é'),
            Just('✓'),
            Just('\u{7f}'),
            any::<char>().prop_filter("no NUL/CR/LF", |c| !matches!(c, '\0' | '\r' | '\n')),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn credentials_round_trip_as_exactly_one_command(user in secret().prop_filter("user", |u| !u.is_empty() && !u.chars().any(char::is_control)), password in secret(), caps in caps()) {
        let creds = Credentials::password(user.as_bytes(), password.as_bytes()).expect("accepted");
        let fragments = login_command("g1", &creds, caps).expect("a way to log in");
        // Two-step AUTHENTICATE: the command is the first line, the base64 answer comes after `+`.
        let wire = if caps.auth_plain && !caps.sasl_ir { fragments[0].clone() } else { fragments.concat() };
        let (rest, command) = CommandCodec::new().decode(&wire).expect("decodes");
        prop_assert!(rest.is_empty(), "a second command line: {:?}", String::from_utf8_lossy(rest));
        match command.body {
            CommandBody::Login { username, password: p } => {
                prop_assert!(!caps.auth_plain);
                prop_assert_eq!(username.as_ref(), user.as_bytes());
                prop_assert_eq!(p.declassify().as_ref(), password.as_bytes());
            }
            CommandBody::Authenticate { initial_response, .. } => {
                prop_assert!(caps.auth_plain);
                let message = match initial_response {
                    Some(ir) => ir.declassify().to_vec(),
                    None => {
                        // The second fragment is the base64 line sent after the backend's `+`.
                        let line = String::from_utf8(fragments[1].clone()).expect("ascii");
                        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, line.trim_end()).expect("base64")
                    }
                };
                let back = Credentials::from_sasl_plain(&message).expect("decodes");
                prop_assert_eq!(back.user(), user);
                prop_assert_eq!(back.secret().expose(), password.as_bytes());
            }
            other => prop_assert!(false, "unexpected {}", other.name()),
        }
        // Between fragments the backend's `+` is awaited: each but the last ends a literal announcement.
        for f in &fragments[..fragments.len() - 1] {
            let awaits_plus = f.ends_with(b"}\r\n") || (caps.auth_plain && f.ends_with(b"PLAIN\r\n"));
            prop_assert!(awaits_plus, "fragment {:?}", String::from_utf8_lossy(f));
        }
    }

    #[test]
    fn nul_cr_or_lf_never_pass(prefix in secret(), bad in prop_oneof![Just('\0'), Just('\r'), Just('\n')], suffix in secret()) {
        let password = format!("{prefix}{bad}{suffix}");
        prop_assert!(Credentials::password(b"user", password.as_bytes()).is_err());
        let sasl = format!("\0user\0{password}");
        prop_assert!(Credentials::from_sasl_plain(sasl.as_bytes()).is_err());
    }

    #[test]
    fn every_identity_form_in_any_case_finds_its_mailbox(
        names in proptest::collection::btree_set("[a-z][a-z0-9.]{0,8}", 1..12),
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec(any::<bool>(), 32),
    ) {
        let names: Vec<String> = names.into_iter().collect();
        let mut text = String::from("[defaults]\nimap_enabled = true\n");
        for (i, n) in names.iter().enumerate() {
            text.push_str(&format!(
                "\n[[mailbox]]\nname = \"Person {i}\"\nalias = \"{n}\"\nemail = \"{n}@example.com\"\nupn = \"{n}@corp.example.com\"\ndomain_account = \"CORP\\\\{n}\"\nlogin = \"u-{n}\"\nimap_enabled = {}\n",
                i % 2 == 0
            ));
        }
        let d = file::parse(Path::new("m.toml"), &text, &["main"]).expect("valid");
        let i = pick.index(names.len());
        let n = &names[i];
        let mix = |s: &str| -> String {
            s.chars().zip(flips.iter().cycle()).map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c }).collect()
        };
        for form in [n.clone(), format!("{n}@example.com"), format!("{n}@corp.example.com"), format!("corp\\{n}"), format!("CORP/{n}"), format!("u-{n}")] {
            let p = d.policy(&mix(&form));
            prop_assert!(p.is_some(), "{} not found", form);
            let p = p.unwrap_or_else(|| d.default_policy(""));
            let expected = format!("Person {i}");
            prop_assert_eq!(p.mailbox.as_deref(), Some(expected.as_str()), "{}", form);
            prop_assert_eq!(p.imap_enabled, i % 2 == 0);
            // Whatever spelling was typed, the backend hears the mailbox's own login.
            let login = format!("u-{n}");
            prop_assert_eq!(&*p.backend_login, login.as_str());
        }
        let (unknown, other) = (format!("{n}@unknown.example"), format!("other\\{n}"));
        prop_assert!(d.policy(&unknown).is_none());
        prop_assert!(d.policy(&other).is_none());
    }
}
