//! The PROXY protocol header (HAProxy's, v1 text or v2 binary) that a load balancer in
//! `[imap4] proxy_protocol_from` sends before anything else: the client's real address.
//!
//! The header is read exactly, never past its end, so what follows it (a TLS ClientHello, a
//! pipelined command) stays in the socket for whoever reads next; the `ppp` crate parses it.
//! A v2 `LOCAL` header or a v1 `UNKNOWN` one (the balancer's own health check) keeps the
//! balancer's address.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first 12 bytes of a v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The shortest v1 header, `PROXY UNKNOWN\r\n`: read at once before looking further.
const V1_SHORTEST: usize = 15;
/// The longest v1 header (the specification's figure).
const V1_LONGEST: usize = 107;
/// The longest v2 header accepted (addresses plus the TLVs a balancer adds).
const V2_LONGEST: usize = 4096;

/// Why a connection from a balancer was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// True when `bytes` begin like a PROXY protocol header (v1 or v2): sent by a client that is
/// not a trusted balancer, it is refused.
pub fn looks_like_header(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PROXY ") || bytes.starts_with(V2_SIGNATURE)
}

/// Reads one header from a balancer's connection: when the whole header is already there (the
/// usual case: a balancer sends it in one segment) it is taken in one read after a peek;
/// otherwise byte-exact reads as [`read`].
pub async fn read_tcp(
    tcp: &mut tokio::net::TcpStream,
    balancer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut ahead = [0u8; 512];
    let n = tcp.peek(&mut ahead).await?;
    let Some(len) = complete_length(&ahead[..n]) else {
        return read(tcp, balancer).await;
    };
    let mut header = vec![0u8; len];
    tcp.read_exact(&mut header).await?;
    if header.starts_with(V2_SIGNATURE) {
        v2(&header, balancer)
    } else {
        v1(&header, balancer)
    }
}

/// The length of the header at the start of `bytes`, when all of it is there.
fn complete_length(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(V2_SIGNATURE) && bytes.len() >= 16 {
        let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
        return (len <= bytes.len()).then_some(len);
    }
    if bytes.starts_with(b"PROXY ") {
        let end = memchr::memmem::find(&bytes[..bytes.len().min(V1_LONGEST)], b"\r\n")?;
        return Some(end + 2);
    }
    None
}

/// Reads one header from `io`; the client's address it names, or `balancer` when it names none.
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    balancer: SocketAddr,
) -> Result<SocketAddr, HeaderError> {
    let mut buf = vec![0u8; V1_SHORTEST];
    io.read_exact(&mut buf).await.map_err(eof_is_missing)?;
    if buf.starts_with(V2_SIGNATURE) {
        // Signature, version/command, family/protocol, then the length of the rest.
        buf.resize(16, 0);
        io.read_exact(&mut buf[V1_SHORTEST..])
            .await
            .map_err(eof_is_missing)?;
        let rest = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if 16 + rest > V2_LONGEST {
            return Err(HeaderError::TooLong(V2_LONGEST));
        }
        buf.resize(16 + rest, 0);
        io.read_exact(&mut buf[16..])
            .await
            .map_err(eof_is_missing)?;
        return v2(&buf, balancer);
    }
    if !buf.starts_with(b"PROXY ") {
        return Err(HeaderError::Missing);
    }
    while !buf.ends_with(b"\r\n") {
        if buf.len() >= V1_LONGEST {
            return Err(HeaderError::TooLong(V1_LONGEST));
        }
        // One byte at a time: a v1 header is short, and nothing after it may be taken.
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await.map_err(eof_is_missing)?;
        buf.push(byte[0]);
    }
    v1(&buf, balancer)
}

fn eof_is_missing(e: std::io::Error) -> HeaderError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        HeaderError::Missing
    } else {
        HeaderError::Io(e)
    }
}

fn v2(bytes: &[u8], balancer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    use ppp::v2::{Addresses, Command, Header};
    let header = Header::try_from(bytes).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    if header.command == Command::Local {
        return Ok(balancer);
    }
    Ok(match header.addresses {
        Addresses::IPv4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::IPv6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unspecified | Addresses::Unix(_) => balancer,
    })
}

fn v1(bytes: &[u8], balancer: SocketAddr) -> Result<SocketAddr, HeaderError> {
    use ppp::v1::{Addresses, Header};
    let header = Header::try_from(bytes).map_err(|e| HeaderError::Malformed(e.to_string()))?;
    Ok(match header.addresses {
        Addresses::Tcp4(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Tcp6(a) => SocketAddr::from((a.source_address, a.source_port)),
        Addresses::Unknown => balancer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BALANCER: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5)),
        40000,
    );

    async fn parse(bytes: &[u8]) -> (Result<SocketAddr, HeaderError>, Vec<u8>) {
        let mut io = bytes;
        let r = read(&mut io, BALANCER).await;
        (r, io.to_vec())
    }

    fn v2_tcp4(src: [u8; 4], port: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x21, 0x11]);
        h.extend(((12 + tlvs.len()) as u16).to_be_bytes());
        h.extend(src);
        h.extend([10, 0, 0, 1]);
        h.extend(port.to_be_bytes());
        h.extend(143u16.to_be_bytes());
        h.extend(tlvs);
        h
    }

    #[tokio::test]
    async fn v1_and_v2_give_the_client_and_leave_what_follows() {
        let (r, rest) = parse(b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 143\r\na001 NOOP\r\n").await;
        assert_eq!(r.unwrap(), "192.0.2.7:51000".parse().unwrap());
        assert_eq!(rest, b"a001 NOOP\r\n");
        let (r, _) = parse(b"PROXY TCP6 2001:db8::9 2001:db8::1 51000 993\r\n").await;
        assert_eq!(r.unwrap(), "[2001:db8::9]:51000".parse().unwrap());
        let (r, rest) = parse(b"PROXY UNKNOWN\r\n").await;
        assert_eq!((r.unwrap(), rest.len()), (BALANCER, 0));
        let mut h = v2_tcp4([198, 51, 100, 4], 60000, &[0x04, 0, 1, 0]);
        h.extend_from_slice(b"\x16\x03\x01");
        let (r, rest) = parse(&h).await;
        assert_eq!(r.unwrap(), "198.51.100.4:60000".parse().unwrap());
        assert_eq!(rest, b"\x16\x03\x01", "the TLS record after it stays");
        // LOCAL: the balancer's own check.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).await.0.unwrap(), BALANCER);
    }

    #[tokio::test]
    async fn a_whole_header_is_taken_in_one_read_and_the_rest_stays() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, client) in [
            (v2_tcp4([203, 0, 113, 9], 4000, &[]), "203.0.113.9:4000"),
            (
                b"PROXY TCP4 203.0.113.8 10.0.0.1 4001 143\r\n".to_vec(),
                "203.0.113.8:4001",
            ),
        ] {
            let mut bytes = sent.clone();
            bytes.extend_from_slice(b"a NOOP\r\n");
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                c.write_all(&bytes).await.unwrap();
                c
            });
            let (mut tcp, _) = listener.accept().await.unwrap();
            let _client_side = writer.await.unwrap();
            // Let the whole segment arrive, as from a balancer.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert_eq!(
                read_tcp(&mut tcp, BALANCER).await.unwrap(),
                client.parse::<SocketAddr>().unwrap()
            );
            let mut rest = [0u8; 8];
            tcp.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"a NOOP\r\n");
        }
        assert_eq!(complete_length(b"PROXY TCP4 1.2.3.4"), None);
        assert_eq!(complete_length(&v2_tcp4([1, 2, 3, 4], 1, &[])[..20]), None);
    }

    #[tokio::test]
    async fn anything_else_is_refused() {
        assert!(matches!(
            parse(b"a001 LOGIN user pass\r\n").await.0,
            Err(HeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4").await.0,
            Err(HeaderError::Missing)
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 and a very long line that never ends ..........................................................................\r\n").await.0,
            Err(HeaderError::TooLong(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP4 999.1.1.1 10.0.0.1 1 2\r\n").await.0,
            Err(HeaderError::Malformed(_))
        ));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&huge).await.0, Err(HeaderError::TooLong(_))));
        assert!(looks_like_header(b"PROXY TCP4 ..."));
        assert!(looks_like_header(&v2_tcp4([1, 2, 3, 4], 1, &[])));
        assert!(!looks_like_header(b"a PROXY"));
    }
}
