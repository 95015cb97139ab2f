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
}

pub struct Issuer {
    pub url: String,
    tokens: Arc<Mutex<HashMap<String, Grant>>>,
    next: Mutex<u64>,
}

impl Issuer {
    /// A new token for `username`; `active = false` for one that expired or was revoked.
    pub fn issue(&self, username: &str, active: bool) -> String {
        let mut next = self.next.lock().expect("lock");
        *next += 1;
        let token = format!("tok-{}-{}", *next, std::process::id());
        self.tokens.lock().expect("lock").insert(
            token.clone(),
            Grant {
                username: username.to_string(),
                active,
            },
        );
        token
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
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use axum::routing::post;
                let app = axum::Router::new().route(
                    "/introspect",
                    post(move |form: axum::Form<HashMap<String, String>>| {
                        let known = form
                            .get("token")
                            .and_then(|t| shared.lock().expect("lock").get(t).cloned());
                        async move {
                            let body = match known {
                                Some(g) if g.active => serde_json::json!({
                                    "active": true,
                                    "username": g.username,
                                }),
                                _ => serde_json::json!({ "active": false }),
                            };
                            (
                                [(axum::http::header::CONTENT_TYPE, "application/json")],
                                body.to_string(),
                            )
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        Issuer {
            url,
            tokens,
            next: Mutex::new(0),
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
