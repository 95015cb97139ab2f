//! OAuth 2.0 for the tests: a token introspection endpoint (RFC 7662) on loopback, a real HTTP
//! server (axum) on a thread of its own, issuing and checking tokens; and a Dovecot whose
//! oauth2 passdb asks it (`scripts/throwaway-dovecot.sh` with `OAUTH_INTROSPECTION_URL`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::dovecot::Dovecot;

/// What the endpoint knows of a token.
#[derive(Clone, Debug)]
pub struct Grant {
    pub username: String,
    pub active: bool,
    /// `exp`, seconds since the epoch, when the answer carries one.
    pub exp: Option<u64>,
}

pub struct Issuer {
    pub url: String,
    tokens: Arc<Mutex<HashMap<String, Grant>>>,
    next: Mutex<u64>,
    /// Introspections asked, by token.
    asked: Arc<Mutex<HashMap<String, usize>>>,
}

/// The client the gate's tests configure (`client_id`, and its secret's file content).
pub const CLIENT: (&str, &str) = ("imapgate", "client-secret-for-tests");

impl Issuer {
    /// A new token for `username`; `active = false` for one that expired or was revoked.
    pub fn issue(&self, username: &str, active: bool) -> String {
        self.issue_until(username, active, None)
    }

    /// A new token whose answer says `exp` (an endpoint may call a token active past it).
    pub fn issue_until(&self, username: &str, active: bool, exp: Option<u64>) -> String {
        let mut next = self.next.lock().expect("lock");
        *next += 1;
        let token = format!("tok-{}-{}", *next, std::process::id());
        self.tokens.lock().expect("lock").insert(
            token.clone(),
            Grant {
                username: username.to_string(),
                active,
                exp,
            },
        );
        token
    }

    /// How many times `token` was introspected.
    pub fn asked(&self, token: &str) -> usize {
        self.asked
            .lock()
            .expect("lock")
            .get(token)
            .copied()
            .unwrap_or(0)
    }
}

static ISSUER: OnceLock<Issuer> = OnceLock::new();
static DOVECOT: OnceLock<Option<Dovecot>> = OnceLock::new();

/// The binary's introspection endpoint.
pub fn issuer() -> &'static Issuer {
    ISSUER.get_or_init(|| {
        let tokens: Arc<Mutex<HashMap<String, Grant>>> = Arc::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!(
            "http://127.0.0.1:{}/introspect",
            listener.local_addr().expect("addr").port()
        );
        let shared = tokens.clone();
        let asked: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let counted = asked.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use axum::routing::post;
                let app = axum::Router::new().route(
                    "/introspect",
                    post(
                        move |headers: axum::http::HeaderMap,
                              form: axum::Form<HashMap<String, String>>| {
                            // A client that authenticates must be the tests' one (Dovecot does not).
                            use base64::Engine;
                            let expected = format!(
                                "Basic {}",
                                base64::engine::general_purpose::STANDARD
                                    .encode(format!("{}:{}", CLIENT.0, CLIENT.1))
                            );
                            let authorized = headers
                                .get(axum::http::header::AUTHORIZATION)
                                .is_none_or(|v| v.as_bytes() == expected.as_bytes());
                            let token = form.get("token").cloned().unwrap_or_default();
                            *counted
                                .lock()
                                .expect("lock")
                                .entry(token.clone())
                                .or_insert(0) += 1;
                            let known = shared.lock().expect("lock").get(&token).cloned();
                            let known = known.filter(|_| authorized);
                            async move {
                                let body = match known {
                                    Some(g) if g.active => serde_json::json!({
                                        "active": true,
                                        "username": g.username,
                                        "exp": g.exp,
                                    }),
                                    _ => serde_json::json!({ "active": false }),
                                };
                                (
                                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                                    body.to_string(),
                                )
                            }
                        },
                    ),
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        Issuer {
            url,
            tokens,
            next: Mutex::new(0),
            asked,
        }
    })
}

/// A Dovecot that checks tokens with [`issuer`], or `None` (the test returns) without Dovecot
/// outside CI.
pub fn dovecot() -> Option<&'static Dovecot> {
    DOVECOT
        .get_or_init(|| {
            if !super::installed(&["dovecot"], "dovecot-imapd") {
                return None;
            }
            let url = issuer().url.clone();
            Some(super::dovecot::start(&[("OAUTH_INTROSPECTION_URL", url)]))
        })
        .as_ref()
}
