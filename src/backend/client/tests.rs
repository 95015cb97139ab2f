//! How the client reads what a server says.

use super::*;

#[test]
fn messages_are_classified_and_their_text_kept() {
    let k = |raw: &[u8]| classify(raw, "t").unwrap();
    assert_eq!(k(b"+ go\r\n"), Kind::Continuation);
    assert_eq!(
        k(b"ig1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n"),
        Kind::Tagged {
            tag: "ig1".into(),
            status: StatusOf::Ok,
            code: Some("CAPABILITY".into()),
            capabilities: Some(vec!["IMAP4rev1".into(), "IDLE".into()]),
        }
    );
    assert!(matches!(
        k(b"ig2 NO [UNAVAILABLE] try later\r\n"),
        Kind::Tagged { status: StatusOf::No, code: Some(c), .. } if c == "UNAVAILABLE"
    ));
    assert!(matches!(
        k(b"ig3 BAD what?\r\n"),
        Kind::Tagged {
            status: StatusOf::Bad,
            ..
        }
    ));
    assert_eq!(
        k(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"),
        Kind::Capabilities(vec!["IMAP4rev1".into(), "AUTH=PLAIN".into()])
    );
    assert_eq!(k(b"* ID (\"name\" \"x\")\r\n"), Kind::Id);
    assert_eq!(k(b"* OK [ALERT] hi\r\n"), Kind::Untagged);
    assert_eq!(k(b"* XWHATEVER {3}\r\nabc\r\n"), Kind::Untagged);
    assert!(classify(b"garbage\r\n", "t").is_err());
    let m = Message {
        kind: Kind::Untagged,
        raw: b"ig1 OK [CAPABILITY IMAP4rev1] Logged in\r\n".to_vec(),
    };
    assert_eq!(m.status_text(), "[CAPABILITY IMAP4rev1] Logged in");
}
