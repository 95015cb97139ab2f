//! What the directory reads out of LDAP messages, parsed without panicking on a malformed
//! message (ldap3's own helpers panic there): a search entry, the Sync State control and the
//! Sync Info message of RFC 4533.

use ldap3::asn1::{parse_tag, StructureTag, PL};
use ldap3::controls::Control;
use ldap3::ResultEntry;

const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// One entry: its DN and its attributes' values (as bytes; `objectGUID` is binary).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub dn: String,
    pub attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl Entry {
    /// The values of attribute `name` (attribute names are case-insensitive).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attrs
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.iter().map(Vec::as_slice))
    }

    /// The values of `name` that are text.
    pub fn strings<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first text value of `name`, if any and not empty.
    pub fn first<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.strings(name).find(|s| !s.is_empty())
    }
}

/// A search result entry (protocol op 4), or `None` when the message is not one or is malformed.
pub fn entry(re: &ResultEntry) -> Option<Entry> {
    let mut parts = re.0.clone().match_id(4)?.expect_constructed()?.into_iter();
    let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
    let mut attrs = Vec::new();
    for attribute in parts.next()?.expect_constructed()? {
        let mut fields = attribute.expect_constructed()?.into_iter();
        let name = String::from_utf8(fields.next()?.expect_primitive()?).ok()?;
        let values = fields
            .next()?
            .expect_constructed()?
            .into_iter()
            .map(StructureTag::expect_primitive)
            .collect::<Option<Vec<_>>>()?;
        attrs.push((name, values));
    }
    Some(Entry { dn, attrs })
}

/// An entry's state in a content synchronization (RFC 4533 Sync State control).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Present,
    Add,
    Modify,
    Delete,
}

/// The Sync State control among `controls`, if one is there and well formed.
pub fn sync_state(controls: &[Control]) -> Option<SyncState> {
    let raw = controls.iter().find(|c| c.1.ctype == SYNC_STATE_OID)?;
    let (_, tag) = parse_tag(raw.1.val.as_deref()?).ok()?;
    let first = tag.expect_constructed()?.into_iter().next()?;
    match first.expect_primitive()?.as_slice() {
        [0] => Some(SyncState::Present),
        [1] => Some(SyncState::Add),
        [2] => Some(SyncState::Modify),
        [3] => Some(SyncState::Delete),
        _ => None,
    }
}

/// What a Sync Info message says that the directory acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncInfo {
    /// The refresh stage is over: what follows are changes as they happen.
    RefreshDone,
    /// Anything else (a new cookie, a refresh still under way, an ID set).
    Other,
}

/// The Sync Info message an intermediate response carries, if it is one.
pub fn sync_info(re: &ResultEntry) -> Option<SyncInfo> {
    // IntermediateResponse ::= [APPLICATION 25] SEQUENCE { [0] name, [1] value }
    let fields = re.0.clone().match_id(25)?.expect_constructed()?;
    let mut name = None;
    let mut value = None;
    for field in fields {
        match field.id {
            0 => name = field.expect_primitive(),
            1 => value = field.expect_primitive(),
            _ => {}
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID.as_bytes()) {
        return None;
    }
    let (_, info) = parse_tag(value?.as_slice()).ok()?;
    match (info.id, info.payload) {
        // refreshDelete [1] / refreshPresent [2]: SEQUENCE { cookie?, refreshDone BOOLEAN
        // DEFAULT TRUE }.
        (1 | 2, PL::C(parts)) => {
            let done = parts
                .into_iter()
                .filter(|p| p.id == 1)
                .filter_map(StructureTag::expect_primitive)
                .all(|b| b.first().copied().unwrap_or(0xff) != 0);
            Some(if done {
                SyncInfo::RefreshDone
            } else {
                SyncInfo::Other
            })
        }
        _ => Some(SyncInfo::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{ASNTag, Boolean, OctetString, Sequence, Tag, TagClass};

    fn octets(b: &[u8]) -> Tag {
        Tag::OctetString(OctetString {
            inner: b.to_vec(),
            ..Default::default()
        })
    }

    fn search_entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> ResultEntry {
        let attrs = attrs
            .iter()
            .map(|(n, vs)| {
                Tag::Sequence(Sequence {
                    inner: vec![
                        octets(n.as_bytes()),
                        Tag::Set(ldap3::asn1::Set {
                            inner: vs.iter().map(|v| octets(v)).collect(),
                            ..Default::default()
                        }),
                    ],
                    ..Default::default()
                })
            })
            .collect();
        let op = Tag::Sequence(Sequence {
            id: 4,
            class: TagClass::Application,
            inner: vec![
                octets(dn.as_bytes()),
                Tag::Sequence(Sequence {
                    inner: attrs,
                    ..Default::default()
                }),
            ],
        });
        ResultEntry::new(op.into_structure())
    }

    #[test]
    fn entries_parse_and_malformed_ones_are_refused() {
        let re = search_entry(
            "cn=John,dc=x",
            &[("mail", &[b"john@x"]), ("objectGUID", &[&[0xff, 0, 1]])],
        );
        let e = entry(&re).unwrap();
        assert_eq!(e.dn, "cn=John,dc=x");
        assert_eq!(e.first("MAIL"), Some("john@x"));
        assert_eq!(e.values("objectguid").next(), Some(&[0xff, 0, 1][..]));
        assert_eq!(e.strings("objectGUID").count(), 0, "not text");
        // Not a search entry, and a truncated one.
        let other = ResultEntry::new(octets(b"x").into_structure());
        assert!(entry(&other).is_none());
        let broken = Tag::Sequence(Sequence {
            id: 4,
            class: TagClass::Application,
            inner: vec![octets(b"cn=a")],
        });
        assert!(entry(&ResultEntry::new(broken.into_structure())).is_none());
    }

    fn intermediate(value: Option<Tag>) -> ResultEntry {
        let mut inner = vec![Tag::OctetString(OctetString {
            id: 0,
            class: TagClass::Context,
            inner: SYNC_INFO_OID.as_bytes().to_vec(),
        })];
        if let Some(v) = value {
            let mut buf = bytes::BytesMut::new();
            ldap3::asn1::write::encode_into(&mut buf, v.into_structure()).unwrap();
            inner.push(Tag::OctetString(OctetString {
                id: 1,
                class: TagClass::Context,
                inner: buf.to_vec(),
            }));
        }
        let op = Tag::Sequence(Sequence {
            id: 25,
            class: TagClass::Application,
            inner,
        });
        ResultEntry::new(op.into_structure())
    }

    #[test]
    fn the_end_of_the_refresh_stage_is_recognized() {
        let done_by_default = Tag::Sequence(Sequence {
            id: 2,
            class: TagClass::Context,
            inner: vec![octets(b"cookie")],
        });
        assert_eq!(
            sync_info(&intermediate(Some(done_by_default))),
            Some(SyncInfo::RefreshDone)
        );
        let not_done = Tag::Sequence(Sequence {
            id: 1,
            class: TagClass::Context,
            inner: vec![Tag::Boolean(Boolean {
                inner: false,
                ..Default::default()
            })],
        });
        assert_eq!(
            sync_info(&intermediate(Some(not_done))),
            Some(SyncInfo::Other)
        );
        assert_eq!(sync_info(&intermediate(None)), None, "no value");
    }
}
