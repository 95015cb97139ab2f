//! Pages from the templates compiled into the binary (every value escaped by the engine, as
//! `.html` templates are), and the headers every response carries.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{context, Environment, Value};

use super::auth::{Flash, Signed};

const TEMPLATES: [(&str, &str); 7] = [
    ("refused.html", include_str!("templates/refused.html")),
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("mailboxes.html", include_str!("templates/mailboxes.html")),
    ("edit.html", include_str!("templates/edit.html")),
    ("sessions.html", include_str!("templates/sessions.html")),
    ("audit.html", include_str!("templates/audit.html")),
];

pub const STYLE: &str = include_str!("templates/style.css");

/// No script at all, styles and images from here only, forms posted here only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    pub fn new() -> Pages {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                // Compiled in and covered by the tests: only a broken build gets here.
                tracing::error!(template = name, error = %e, "admin center template does not compile");
            }
        }
        Pages { env }
    }

    /// `template` with `values` and the frame every page has (who is signed in, the once-only
    /// note), with `status`.
    pub fn render(
        &self,
        status: StatusCode,
        template: &str,
        frame: Frame<'_>,
        values: Value,
    ) -> Response {
        let (message, problem) = match frame.flash {
            Some(Flash::Message(m)) => (Some(m), None),
            Some(Flash::Problem(p)) => (None, Some(p)),
            None => (None, None),
        };
        let signed = frame.signed;
        let ctx = context! {
            title => frame.title,
            area => frame.area,
            admin => signed.map(|s| s.name.as_str()),
            role => signed.map(|s| s.role.title()),
            csrf => signed.map(|s| s.csrf.as_str()).or(frame.csrf),
            message,
            problem,
            ..values
        };
        match self.env.get_template(template).and_then(|t| t.render(ctx)) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "cannot render an admin center page");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the admin center could not show this page; its log says why",
                )
                    .into_response()
            }
        }
    }
}

/// What every page shows around its content.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The top navigation's current item: `recipients`, `sessions` or `audit`.
    pub area: &'a str,
    pub signed: Option<&'a Signed>,
    pub flash: Option<Flash>,
    /// The sign-in form's token (signed-in pages use the session's).
    pub csrf: Option<&'a str>,
}

/// Adds the security headers to every response.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    // `no-referrer` would make browsers send `Origin: null` with our own forms.
    set(header::REFERRER_POLICY, "same-origin");
    // No Strict-Transport-Security: there is no plain-HTTP entry point to strip, and HSTS
    // would bind every port of a host name the admin center may share with other services.
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
