use super::*;
use crate::config::LdapSchema;

fn config() -> LdapConfig {
    let text = r#"
urls = ["ldap://dc1"]
bind_dn = "cn=imapgate"
bind_password_file = "pw"
base_dn = "dc=contoso,dc=com"
netbios_domain = "CONTOSO"
[servers]
MBX01 = "mail1"
"#;
    toml::from_str(text).unwrap()
}

fn schema() -> Schema {
    Schema::new(&config(), &["mail1", "mail2"])
}

fn entry(attrs: &[(&str, &[&str])]) -> Entry {
    Entry {
        dn: "cn=John Smith,ou=Staff,dc=contoso,dc=com".into(),
        attrs: attrs
            .iter()
            .map(|(n, vs)| {
                (
                    n.to_string(),
                    vs.iter().map(|v| v.as_bytes().to_vec()).collect(),
                )
            })
            .collect(),
    }
}

#[test]
fn protocol_settings_read_and_flip_only_the_imap4_field() {
    assert_eq!(
        imap4_setting(&["HTTP§1§1§§§§§§", "POP3§0§1"]),
        None,
        "no IMAP4 value"
    );
    assert_eq!(imap4_setting(&[IMAP4_DISABLED]), Some(false));
    assert_eq!(
        imap4_setting(&["imap4§1§1§4§ISO-8859-1§0§1§0§0"]),
        Some(true)
    );
    assert_eq!(
        imap4_setting(&["IMAP4§"]),
        Some(false),
        "garbage fails closed"
    );
    assert_eq!(imap4_setting(&["IMAP4§1", "IMAP4§0"]), Some(false));
    assert_eq!(
        with_imap4(IMAP4_DISABLED, true),
        "IMAP4§1§1§4§ISO-8859-1§0§1§0§0"
    );
    assert_eq!(
        with_imap4("IMAP4§1§1§4§ISO-8859-1§0§1§0§0", false),
        IMAP4_DISABLED
    );
    assert_eq!(with_imap4("IMAP4§1", false), "IMAP4§0");
}

#[test]
fn a_change_touches_one_value_and_nothing_else() {
    let s = schema();
    let none = entry(&[("protocolSettings", &["HTTP§1§1", "POP3§0§1"])]);
    assert!(
        s.imap_enabled(&none),
        "Exchange's default without an IMAP4 value"
    );
    assert!(s.flag_change(&none, true).is_none());
    let mods = s.flag_change(&none, false).unwrap();
    assert_eq!(mods.len(), 1);
    assert!(
        matches!(&mods[0], Mod::Add(a, v) if a == "protocolSettings" && v.contains(IMAP4_DISABLED) && v.len() == 1)
    );
    let off = entry(&[("protocolSettings", &["HTTP§1§1", IMAP4_DISABLED])]);
    assert!(!s.imap_enabled(&off));
    let mods = s.flag_change(&off, true).unwrap();
    assert!(matches!(&mods[0], Mod::Delete(_, v) if v.len() == 1 && v.contains(IMAP4_DISABLED)));
    assert!(
        matches!(&mods[1], Mod::Add(_, v) if v.len() == 1 && v.contains("IMAP4§1§1§4§ISO-8859-1§0§1§0§0"))
    );
}

#[test]
fn entries_become_mailboxes_with_every_identity_form() {
    let s = schema();
    let guid: [u8; 16] = [
        0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56,
        0x78,
    ];
    let mut e = entry(&[
        ("displayName", &["John Smith"]),
        ("mailNickname", &["jsmith"]),
        ("proxyAddresses", &["smtp:js@contoso.com", "SMTP:john@contoso.com"]),
        ("userPrincipalName", &["jsmith@corp.contoso.com"]),
        ("sAMAccountName", &["jsmith"]),
        (
            "msExchHomeServerName",
            &["/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn=MBX01"],
        ),
        ("protocolSettings", &[IMAP4_DISABLED]),
    ]);
    e.attrs.push(("objectGUID".into(), vec![guid.to_vec()]));
    let v = s.view(&e);
    assert_eq!(v.name.as_deref(), Some("John Smith"));
    assert_eq!(
        v.email.as_deref(),
        Some("john@contoso.com"),
        "primary SMTP address"
    );
    assert_eq!(v.domain_account.as_deref(), Some("CONTOSO\\jsmith"));
    assert_eq!(
        v.guid.as_deref(),
        Some("12345678-1234-5678-9abc-def012345678")
    );
    assert_eq!(v.login.as_deref(), Some("jsmith"));
    assert_eq!(v.backend, "mail1");
    assert!(!v.imap_enabled);
    assert_eq!(
        guid_bytes("12345678-1234-5678-9abc-def012345678"),
        Some(guid)
    );
    assert_eq!(guid_bytes("12345678123456789abcdef012345678"), None);
    // An unknown server, and none: the fallback backend.
    let other = entry(&[("msExchHomeServerName", &["cn=MBX99"])]);
    assert_eq!(s.view(&other).backend, "mail1");
    assert_eq!(home_server("CN=MBX02,CN=Servers"), Some("MBX02"));
}

#[test]
fn filters_escape_every_value() {
    let s = schema();
    let f = s.login_filter("a*b(c)d\0f").unwrap();
    assert!(f.contains("(mail=a\\2ab\\28c\\29d\\00f)"), "{f}");
    assert!(!f.contains("a*b"), "{f}");
    assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
    let id = s.identity_filter("x\\y)(");
    assert!(id.contains("(displayName=x\\5cy\\29\\28)"), "{id}");
    assert!(ldap3::parse_filter(&id).is_ok(), "{id}");
    assert_eq!(
        s.login_filter("CONTOSO\\jsmith").unwrap(),
        "(&(objectClass=user)(sAMAccountName=jsmith))"
    );
    assert_eq!(s.login_filter("OTHER\\jsmith"), None, "not our domain");
    let id = s.identity_filter("{12345678-1234-5678-9abc-def012345678}");
    assert!(id.contains("(objectGUID=\\78\\56\\34\\12"), "{id}");
    let search = s.list_filter(&Filter {
        search: Some("smi*th".into()),
        imap_enabled: Some(false),
        ..Filter::default()
    });
    assert!(search.contains("(displayName=*smi\\2ath*)"), "{search}");
    assert!(search.ends_with("(protocolSettings=IMAP4§0*))"), "{search}");
    assert!(ldap3::parse_filter(&search).is_ok(), "{search}");
    let enabled = s.list_filter(&Filter {
        imap_enabled: Some(true),
        ..Filter::default()
    });
    assert_eq!(
        enabled,
        "(&(objectClass=user)(!(protocolSettings=IMAP4§0*)))"
    );
}

#[test]
fn a_boolean_attribute_works_too() {
    let mut c = config();
    c.schema = LdapSchema::Custom;
    c.attributes = Some(LdapAttributes {
        display_name: vec!["cn".into()],
        alias: Some("uid".into()),
        email: Some("mail".into()),
        proxy_addresses: None,
        upn: None,
        account: None,
        guid: None,
        server: None,
        imap_enabled: "imapEnabled".into(),
        imap_enabled_format: FlagFormat::Boolean,
    });
    let s = Schema::new(&c, &["mail1"]);
    assert!(!s.imap_enabled(&entry(&[("imapEnabled", &["FALSE"])])));
    assert!(
        !s.imap_enabled(&entry(&[("imapEnabled", &["maybe"])])),
        "fails closed"
    );
    assert!(s.imap_enabled(&entry(&[])));
    let mods = s
        .flag_change(&entry(&[("imapEnabled", &["TRUE"])]), false)
        .unwrap();
    assert!(matches!(&mods[0], Mod::Replace(a, v) if a == "imapEnabled" && v.contains("FALSE")));
    assert_eq!(s.login_filter("OTHER\\x"), None, "no account attribute");
}
