//! `[oauth] mode = "introspect"`: the gate checks a bearer token itself before any backend sees
//! it, with RFC 7662 token introspection: a POST of the token to `introspection_url` (client
//! credentials as HTTP Basic, an https endpoint's certificate verified), whose JSON answer says
//! whether the token is active, until when (`exp`), and for whom (`username_claim`, then `sub`).
//! Verdicts are kept `cache_ttl` (never past the token's `exp`), keyed by the token's SHA-256,
//! so the token itself is never a key, a log field or a cache entry. An endpoint that cannot
//! answer is an error, never a yes.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::config::OAuthConfig;
use crate::credentials::Secret;

/// The longest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// What the endpoint said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Active, for this user.
    Active { user: String },
    /// Inactive, expired, unknown, or naming no user.
    Refused,
}

#[derive(Clone)]
struct Cached {
    verdict: Verdict,
    until: Instant,
}

pub struct Introspector {
    host: String,
    port: u16,
    path: String,
    tls: Option<TlsConnector>,
    /// `Basic base64(client_id:secret)`, when a client is configured.
    authorization: Option<Secret>,
    claims: Vec<String>,
    cache: moka::future::Cache<[u8; 32], Cached>,
    cache_ttl: Duration,
    timeout: Duration,
}

impl Introspector {
    pub fn new(config: &OAuthConfig) -> Result<Introspector, String> {
        let url = config
            .introspection_url
            .as_deref()
            .ok_or("introspection_url is needed with mode = \"introspect\"")?;
        let uri: hyper::Uri = url.parse().map_err(|e| format!("introspection_url: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("introspection_url must be http:// or https://".into()),
        };
        let host = uri
            .host()
            .ok_or("introspection_url has no host")?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        let tls = if https {
            Some(TlsConnector::from(
                crate::tls::client_config(config.ca.as_deref()).map_err(|e| e.to_string())?,
            ))
        } else {
            None
        };
        let authorization = match (&config.client_id, &config.client_secret_file) {
            (Some(id), Some(file)) => {
                let text = std::fs::read(file)
                    .map_err(|e| format!("client_secret_file {}: {e}", file.display()))?;
                let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
                let secret = first.strip_suffix(b"\r").unwrap_or(first);
                let mut pair = id.as_bytes().to_vec();
                pair.push(b':');
                pair.extend_from_slice(secret);
                use base64::Engine;
                let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
                pair.fill(0);
                Some(Secret::new(format!("Basic {encoded}").into_bytes()))
            }
            (None, None) => None,
            _ => return Err("client_id and client_secret_file go together".into()),
        };
        let mut claims = vec![config.username_claim.clone()];
        if config.username_claim != "sub" {
            claims.push("sub".into());
        }
        Ok(Introspector {
            host,
            port,
            path,
            tls,
            authorization,
            claims,
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.cache_ttl.max(Duration::from_millis(1)))
                .build(),
            cache_ttl: config.cache_ttl,
            timeout: config.timeout,
        })
    }

    /// The verdict on `token` (cached); an error when the endpoint could not say.
    pub async fn check(&self, token: &Secret) -> Result<Verdict, String> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.expose());
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        if let Some(hit) = self.cache.get(&key).await {
            if hit.until > Instant::now() {
                return Ok(hit.verdict);
            }
        }
        let answer = tokio::time::timeout(self.timeout, self.ask(token))
            .await
            .map_err(|_| format!("introspection: no answer within {:?}", self.timeout))??;
        let (verdict, expires) = self.read(&answer)?;
        let until = Instant::now() + expires.map_or(self.cache_ttl, |e| e.min(self.cache_ttl));
        self.cache
            .insert(
                key,
                Cached {
                    verdict: verdict.clone(),
                    until,
                },
            )
            .await;
        Ok(verdict)
    }

    async fn ask(&self, token: &Secret) -> Result<Bytes, String> {
        let failed = |what: &str, e: &dyn std::fmt::Display| format!("introspection: {what}: {e}");
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| failed("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn crate::stream::AsyncIo> = match &self.tls {
            Some(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| failed("server name", &e))?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| failed("TLS", &e))?,
                )
            }
            None => Box::new(tcp),
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| failed("HTTP", &e))?;
        let driver = tokio::spawn(connection);
        let token_text = std::str::from_utf8(token.expose()).map_err(|e| failed("token", &e))?;
        let form = serde_urlencoded::to_string([
            ("token", token_text),
            ("token_type_hint", "access_token"),
        ])
        .map_err(|e| failed("form", &e))?;
        let mut request = hyper::Request::post(self.path.as_str())
            .header(HOST, format!("{}:{}", self.host, self.port))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(auth) = &self.authorization {
            let value = hyper::header::HeaderValue::from_bytes(auth.expose())
                .map_err(|e| failed("client credentials", &e))?;
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(form.into_bytes())))
            .map_err(|e| failed("request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed("request", &e))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| failed("answer", &e))?
            .to_bytes();
        driver.abort();
        if !status.is_success() {
            return Err(format!("introspection: the endpoint answered {status}"));
        }
        Ok(body)
    }

    /// The verdict in an answer, and how long the token has left (`exp`).
    fn read(&self, answer: &[u8]) -> Result<(Verdict, Option<Duration>), String> {
        let json: serde_json::Value = serde_json::from_slice(answer)
            .map_err(|e| format!("introspection: the answer is not JSON: {e}"))?;
        if json.get("active").and_then(serde_json::Value::as_bool) != Some(true) {
            return Ok((Verdict::Refused, None));
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let left = match json.get("exp").and_then(serde_json::Value::as_u64) {
            Some(exp) if exp <= now => return Ok((Verdict::Refused, None)),
            Some(exp) => Some(Duration::from_secs(exp - now)),
            None => None,
        };
        let user = self
            .claims
            .iter()
            .find_map(|c| json.get(c).and_then(serde_json::Value::as_str))
            .filter(|u| !u.is_empty());
        Ok(match user {
            Some(user) => (
                Verdict::Active {
                    user: user.to_string(),
                },
                left,
            ),
            None => (Verdict::Refused, None),
        })
    }
}

/// The introspector in force, when `[oauth] mode = "introspect"`.
pub type Shared = Option<Arc<Introspector>>;
