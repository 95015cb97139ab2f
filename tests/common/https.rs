//! A small HTTPS client for the admin center tests: one request per connection (verified
//! against the development CA as `localhost`), a cookie jar as a browser keeps it, forms sent
//! URL-encoded, and the page's CSRF token read from its hidden field.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::ServerName;

use super::dev_connector;

/// One response.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    /// Names lowercased, in order (`set-cookie` may repeat).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        self.field("csrf")
    }

    /// The value of the first form field named `name` (as the page writes it, HTML-escaped).
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).expect("a form with that field") + marker.len();
        let end = self.body[start..].find('"').expect("end of the value") + start;
        self.body[start..end].to_string()
    }

    /// Where a redirect points.
    pub fn location(&self) -> Option<&str> {
        self.header("location")
    }
}

/// A browser's view of one site: its address and its cookies.
pub struct Browser {
    pub addr: SocketAddr,
    /// The loopback address requests come from (the sign-in throttle counts per address).
    pub source: [u8; 4],
    pub cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(addr: SocketAddr) -> Browser {
        Browser {
            addr,
            source: [127, 0, 0, 1],
            cookies: BTreeMap::new(),
        }
    }

    pub fn from_source(addr: SocketAddr, source: [u8; 4]) -> Browser {
        Browser {
            source,
            ..Browser::new(addr)
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.request("GET", path, None, &[]).await
    }

    /// A form posted as a browser posts it (same origin).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).expect("encode form");
        let origin = format!("https://localhost:{}", self.addr.port());
        self.request("POST", path, Some(body), &[("Origin", &origin)])
            .await
    }

    /// Signs in through the form (GET for its token, then POST); the POST's answer.
    pub async fn sign_in(&mut self, name: &str, password: &str) -> Page {
        let form = self.get("/signin").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/signin",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
        .await
    }

    /// Signs in and expects to land on the mailbox list.
    pub async fn signed_in(&mut self, name: &str, password: &str) {
        let page = self.sign_in(name, password).await;
        assert_eq!(
            (page.status, page.location()),
            (303, Some("/mailboxes")),
            "sign-in as {name}: {page:?}"
        );
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<String>,
        extra: &[(&str, &str)],
    ) -> Page {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((self.source, 0).into()).expect("bind source");
        let tcp = socket.connect(self.addr).await.expect("connect");
        let mut tls = dev_connector()
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake with the admin center");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n",
            self.addr.port()
        );
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            head.push_str(&format!("Cookie: {}\r\n", jar.join("; ")));
        }
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        if method == "POST" {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.expect("send");
        tls.write_all(body.as_bytes()).await.expect("send body");
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            tls.read_to_end(&mut raw),
        )
        .await
        .expect("the admin center answers in time");
        let page = parse(&raw);
        for cookie in page.headers_named("set-cookie") {
            let first = cookie.split(';').next().unwrap_or("");
            if let Some((name, value)) = first.split_once('=') {
                if value.is_empty() || cookie.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_string(), value.to_string());
                }
            }
        }
        page
    }
}

fn parse(raw: &[u8]) -> Page {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Page {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
