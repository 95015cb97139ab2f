//! The admin center's pages, in the Exchange admin center's words: sign in, Recipients >
//! Mailboxes (search, paging, Edit), the mailbox's Mailbox features (Email Connectivity, IMAP4:
//! Enabled / Disabled, Save), Sessions and the audit log.
//!
//! Every form carries the session's CSRF token; every change needs the Recipient Management
//! role, checked here whatever the page showed, and is written to the audit log whether it was
//! done or refused.

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use axum::Extension;
use minijinja::{context, Value};
use serde::{Deserialize, Serialize};

use super::auth::{self, Flash, Signed};
use super::render::{self, Frame};
use super::{administrators, App, Peer};
use crate::admin::audit::{self, Entry};
use crate::admin::users;
use crate::credentials::Secret;
use crate::directory::{mailbox_key, Filter, MailboxView, Page};

/// Mailboxes per page of Recipients > Mailboxes.
pub const PAGE_SIZE: usize = 50;
/// Sessions the Sessions page lists at most.
const MAX_SESSION_ROWS: usize = 500;
/// Audit entries the audit page shows.
const AUDIT_ROWS: usize = 200;
/// The longest search kept.
const MAX_SEARCH: usize = 256;

fn word(enabled: bool) -> &'static str {
    if enabled {
        "Enabled"
    } else {
        "Disabled"
    }
}

/// The name that selects exactly this mailbox in links and forms: GUID, email, UPN,
/// `DOMAIN\account`, alias, display name, in that order of preference.
fn identity_of(v: &MailboxView) -> &str {
    [
        &v.guid,
        &v.email,
        &v.upn,
        &v.domain_account,
        &v.alias,
        &v.name,
        &v.login,
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .map_or("", String::as_str)
}

fn edit_link(identity: &str, features: bool) -> String {
    let mut query = vec![("identity", identity)];
    if features {
        query.push(("section", "features"));
    }
    let query = serde_urlencoded::to_string(&query).unwrap_or_default();
    format!("/mailboxes/edit?{query}")
}

fn who(signed: &Signed) -> String {
    format!("admin:{}", signed.name)
}

fn frame<'a>(app: &App, title: &'a str, area: &'a str, signed: &'a Signed) -> Frame<'a> {
    Frame {
        title,
        area,
        signed: Some(signed),
        flash: app.sessions.take_flash(&signed.token),
        csrf: None,
    }
}

/// A page saying why something was not done, with a way back.
fn refused(
    app: &App,
    status: StatusCode,
    signed: Option<&Signed>,
    problem: String,
    back: &str,
) -> Response {
    let frame = Frame {
        title: "Not done",
        area: "",
        signed,
        flash: Some(Flash::Problem(problem)),
        csrf: None,
    };
    let heading = if status == StatusCode::NOT_FOUND {
        "Not found"
    } else {
        "Not done"
    };
    let values = context! { heading, back, back_label => "Back" };
    app.pages.render(status, "refused.html", frame, values)
}

/// A POST without this session's token: maybe another site's forgery, maybe a page from before
/// signing in again.
fn forged(app: &App, signed: &Signed) -> Response {
    tracing::warn!(admin = %signed.name, "admin center: a form without a valid CSRF token refused");
    refused(
        app,
        StatusCode::FORBIDDEN,
        Some(signed),
        "This form has expired or was not sent by this admin center, so nothing was changed. \
         Open the page again and retry."
            .into(),
        "/mailboxes",
    )
}

/// The sign-in page with a fresh form token (also in its own cookie: double submit).
pub(super) fn signin_page(app: &App, status: StatusCode, problem: &str) -> Response {
    let Some(token) = auth::random_token() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no randomness available").into_response();
    };
    let frame = Frame {
        title: "Sign in",
        area: "",
        signed: None,
        flash: (!problem.is_empty()).then(|| Flash::Problem(problem.to_string())),
        csrf: Some(&token),
    };
    let page = app.pages.render(status, "signin.html", frame, context! {});
    let cookie = auth::set_cookie(auth::SIGNIN_COOKIE, &token, "/");
    ([(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn signin_form(State(app): State<App>, headers: HeaderMap) -> Response {
    let idle = app.gate.admin_web().map(|w| w.idle_timeout);
    let signed_in = auth::cookie(&headers, auth::SESSION_COOKIE)
        .zip(idle)
        .is_some_and(|(token, idle)| app.sessions.get(token, idle).is_some());
    if signed_in {
        return Redirect::to("/mailboxes").into_response();
    }
    signin_page(&app, StatusCode::OK, "")
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SigninForm {
    csrf: String,
    name: String,
    password: String,
}

pub async fn signin(
    State(app): State<App>,
    Extension(Peer(peer)): Extension<Peer>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    let SigninForm {
        csrf,
        name,
        password,
    } = form;
    let password = Secret::new(password.into_bytes());
    let expected = auth::cookie(&headers, auth::SIGNIN_COOKIE).unwrap_or("");
    if !auth::same_token(expected, &csrf) {
        return signin_page(
            &app,
            StatusCode::FORBIDDEN,
            "This sign-in form has expired or was not sent by this admin center. Sign in again.",
        );
    }
    if let Some(wait) = app.throttle.wait(peer.ip(), &name) {
        return throttled(&app, peer, wait);
    }
    let admins = match administrators(app.gate.as_ref()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "admin center: cannot read the administrators");
            return signin_page(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is unavailable: the administrators file cannot be read (see the gate's log).",
            );
        }
    };
    let found = {
        let Ok(_permit) = app.verifying.acquire().await else {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        };
        // Again after the wait: a burst of tries sent at once must not all pass the check
        // made before the first of them failed.
        if let Some(wait) = app.throttle.wait(peer.ip(), &name) {
            return throttled(&app, peer, wait);
        }
        let who = name.clone();
        let found =
            tokio::task::spawn_blocking(move || users::verify(&admins, &who, password.expose()))
                .await
                .ok()
                .flatten();
        // Counted before the slot is given back, so the next try in line sees it.
        if found.is_none() {
            app.throttle.failed(peer.ip(), &name);
        }
        found
    };
    let Some(admin) = found else {
        // No name: a password typed into the name box must not reach the log.
        tracing::warn!(client = %peer, "admin center: sign-in failed");
        return signin_page(
            &app,
            StatusCode::FORBIDDEN,
            "The user name or password isn't correct. Try again.",
        );
    };
    app.throttle.succeeded(peer.ip(), &name);
    let idle = app
        .gate
        .admin_web()
        .map_or(std::time::Duration::ZERO, |w| w.idle_timeout);
    // A session this browser already had ends: one sign-in, one session.
    if let Some(old) = auth::cookie(&headers, auth::SESSION_COOKIE) {
        app.sessions.remove(old);
    }
    let Some(signed) = app
        .sessions
        .create(&admin.name, admin.role, &admin.password_hash, idle)
    else {
        return signin_page(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many administrators are signed in. Try again later.",
        );
    };
    tracing::info!(admin = %admin.name, role = admin.role.as_str(), client = %peer, "admin center: signed in");
    // Two cookies: `AppendHeaders`, as an array of headers would keep only the last.
    let headers = AppendHeaders([
        (
            header::SET_COOKIE,
            auth::set_cookie(auth::SESSION_COOKIE, &signed.token, "/"),
        ),
        (
            header::SET_COOKIE,
            auth::clear_cookie(auth::SIGNIN_COOKIE, "/"),
        ),
    ]);
    (headers, Redirect::to("/mailboxes")).into_response()
}

fn throttled(app: &App, peer: std::net::SocketAddr, wait: std::time::Duration) -> Response {
    tracing::warn!(client = %peer, "admin center: sign-in refused, too many failures");
    let seconds = wait.as_secs().max(1);
    let page = signin_page(
        app,
        StatusCode::TOO_MANY_REQUESTS,
        &format!("Too many failed sign-ins. Try again in {seconds} seconds."),
    );
    ([(header::RETRY_AFTER, seconds.to_string())], page).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn signout(
    State(app): State<App>,
    signed: Signed,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !auth::same_token(&signed.csrf, &form.csrf) {
        return forged(&app, &signed);
    }
    app.sessions.remove(&signed.token);
    tracing::info!(admin = %signed.name, "admin center: signed out");
    let cookie = auth::clear_cookie(auth::SESSION_COOKIE, "/");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/signin")).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ListQuery {
    search: String,
    page: String,
}

#[derive(Serialize)]
struct Row<'a> {
    identity: &'a str,
    display_name: &'a str,
    email: &'a str,
    imap4: &'static str,
}

pub async fn mailboxes(
    State(app): State<App>,
    signed: Signed,
    Query(query): Query<ListQuery>,
) -> Response {
    let search: String = query.search.trim().chars().take(MAX_SEARCH).collect();
    let wanted: usize = query.page.trim().parse().unwrap_or(0);
    let filter = Filter {
        search: (!search.is_empty()).then(|| search.clone()),
        ..Filter::default()
    };
    let mut listing = app.gate.list(&filter, page_at(wanted)).await;
    let mut page = wanted;
    // Past the last page (the list shrank): show the last one.
    if let Ok(l) = &listing {
        let last = pages(l.total) - 1;
        if page > last {
            page = last;
            listing = app.gate.list(&filter, page_at(page)).await;
        }
    }
    let listing = match listing {
        Ok(l) => l,
        Err(e) => {
            return refused(
                &app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&signed),
                format!("The directory cannot be read: {e}"),
                "/mailboxes",
            )
        }
    };
    let rows: Vec<Row> = listing
        .mailboxes
        .iter()
        .map(|m| Row {
            identity: identity_of(m),
            display_name: m.name.as_deref().unwrap_or_else(|| m.label()),
            email: m.email.as_deref().unwrap_or(""),
            imap4: word(m.imap_enabled),
        })
        .collect();
    let values = context! {
        search,
        total => listing.total,
        page,
        pages => pages(listing.total),
        mailboxes => Value::from_serialize(&rows),
    };
    let frame = frame(&app, "Mailboxes", "recipients", &signed);
    app.pages
        .render(StatusCode::OK, "mailboxes.html", frame, values)
}

fn page_at(page: usize) -> Page {
    Page {
        offset: page.saturating_mul(PAGE_SIZE),
        limit: PAGE_SIZE,
    }
}

fn pages(total: usize) -> usize {
    total.div_ceil(PAGE_SIZE).max(1)
}

/// The one mailbox `identity` names, or the page saying why not.
async fn one_mailbox(app: &App, signed: &Signed, identity: &str) -> Result<MailboxView, Response> {
    if identity.trim().is_empty() {
        return Err(refused(
            app,
            StatusCode::BAD_REQUEST,
            Some(signed),
            "Select a mailbox first.".into(),
            "/mailboxes",
        ));
    }
    let filter = Filter {
        identity: Some(identity.to_string()),
        ..Filter::default()
    };
    let listing = app
        .gate
        .list(
            &filter,
            Page {
                offset: 0,
                limit: 2,
            },
        )
        .await
        .map_err(|e| {
            refused(
                app,
                StatusCode::SERVICE_UNAVAILABLE,
                Some(signed),
                format!("The directory cannot be read: {e}"),
                "/mailboxes",
            )
        })?;
    match (listing.total, listing.mailboxes.into_iter().next()) {
        (1, Some(m)) => Ok(m),
        (0, _) | (_, None) => Err(refused(
            app,
            StatusCode::NOT_FOUND,
            Some(signed),
            format!("No mailbox matches \u{201c}{identity}\u{201d}."),
            "/mailboxes",
        )),
        (n, _) => Err(refused(
            app,
            StatusCode::CONFLICT,
            Some(signed),
            format!("\u{201c}{identity}\u{201d} matches {n} mailboxes; select one in the list."),
            "/mailboxes",
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EditQuery {
    identity: String,
    section: String,
    imap4: String,
}

pub async fn edit(
    State(app): State<App>,
    signed: Signed,
    Query(query): Query<EditQuery>,
) -> Response {
    let mailbox = match one_mailbox(&app, &signed, &query.identity).await {
        Ok(m) => m,
        Err(page) => return page,
    };
    let current = if mailbox.imap_enabled {
        "enabled"
    } else {
        "disabled"
    };
    let pending = match query.imap4.as_str() {
        "enabled" | "disabled" => query.imap4.as_str(),
        _ => current,
    };
    let section = if query.section == "features" {
        "features"
    } else {
        "general"
    };
    let display_name = mailbox
        .name
        .clone()
        .unwrap_or_else(|| mailbox.label().into());
    let values = context! {
        mailbox => context! {
            identity => identity_of(&mailbox),
            display_name,
            alias => mailbox.alias,
            email => mailbox.email,
            upn => mailbox.upn,
            domain_account => mailbox.domain_account,
            backend => mailbox.backend,
        },
        section,
        current,
        pending,
        can_change => signed.role.can_change(),
    };
    let frame = frame(&app, "Edit mailbox", "recipients", &signed);
    app.pages.render(StatusCode::OK, "edit.html", frame, values)
}

/// A change the role does not allow: refused, and audited as refused.
async fn not_allowed(
    app: &App,
    signed: &Signed,
    what: &str,
    mailbox: &str,
    back: &str,
) -> Response {
    audit::write(
        app.gate.audit_log(),
        Entry::now(
            &who(signed),
            what,
            mailbox,
            "",
            "",
            "refused: the role cannot change anything",
        ),
    )
    .await;
    tracing::warn!(admin = %signed.name, what, "admin center: change refused by role");
    refused(
        app,
        StatusCode::FORBIDDEN,
        Some(signed),
        format!(
            "Your role, {}, can view but not change anything, so nothing was changed.",
            signed.role.title()
        ),
        back,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct FeaturesForm {
    csrf: String,
    identity: String,
    imap4: String,
}

/// Save in Mailbox features: the same change as `imapgate mailbox set`, in force at once.
pub async fn save_features(
    State(app): State<App>,
    signed: Signed,
    Form(form): Form<FeaturesForm>,
) -> Response {
    if !auth::same_token(&signed.csrf, &form.csrf) {
        return forged(&app, &signed);
    }
    let back = edit_link(&form.identity, true);
    if !signed.role.can_change() {
        return not_allowed(&app, &signed, "set-imap4", &form.identity, &back).await;
    }
    let enabled = match form.imap4.as_str() {
        "enabled" => true,
        "disabled" => false,
        _ => {
            return refused(
                &app,
                StatusCode::BAD_REQUEST,
                Some(&signed),
                "IMAP4 can only be Enabled or Disabled.".into(),
                &back,
            )
        }
    };
    let (gate, sessions) = (app.gate.clone(), app.sessions.clone());
    let (who, identity, token) = (who(&signed), form.identity.clone(), signed.token.clone());
    // The change and its audit line run to their end even if the browser goes away meanwhile
    // (a dropped request must not leave a change half applied or unaudited).
    let done = tokio::spawn(async move {
        let log = gate.audit_log();
        let (entry, flash, to) = match gate.set_imap_enabled(&identity, enabled).await {
            Ok(report) => {
                let label = report.mailbox.label().to_string();
                let (old, outcome, message) = if report.changed {
                    let closed = report.sessions_closed;
                    let message = format!(
                        "Saved: IMAP4 {} for {label}, in force now; {}.",
                        word(enabled),
                        match closed {
                            1 => "1 session closed".to_string(),
                            n => format!("{n} sessions closed"),
                        }
                    );
                    let outcome = format!("in force now; {closed} session(s) closed");
                    (word(!enabled), outcome, message)
                } else {
                    let message = format!(
                        "IMAP4 was already {} for {label}; nothing changed.",
                        word(enabled)
                    );
                    (word(enabled), "unchanged".to_string(), message)
                };
                (
                    Entry::now(&who, "set-imap4", &label, old, word(enabled), &outcome),
                    Flash::Message(message),
                    edit_link(identity_of(&report.mailbox), true),
                )
            }
            Err(e) => (
                Entry::now(
                    &who,
                    "set-imap4",
                    &identity,
                    "",
                    word(enabled),
                    &format!("failed: {e}"),
                ),
                Flash::Problem(format!("Not saved: {e}")),
                edit_link(&identity, true),
            ),
        };
        audit::write(log, entry).await;
        sessions.set_flash(&token, flash);
        to
    });
    match done.await {
        Ok(to) => Redirect::to(&to).into_response(),
        Err(_) => refused(
            &app,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(&signed),
            "The change failed inside the gate; its log says why.".into(),
            &back,
        ),
    }
}

#[derive(Serialize)]
struct SessionRow {
    mailbox: String,
    user: String,
    client: String,
    backend: String,
    since: String,
    /// The mailbox's key (backend and backend login): what closing its sessions names.
    key: String,
}

pub async fn sessions(State(app): State<App>, signed: Signed) -> Response {
    let mut all = app.gate.sessions();
    all.sort_by(|a, b| (&a.mailbox, a.since).cmp(&(&b.mailbox, b.since)));
    let total = all.len();
    let rows: Vec<SessionRow> = all
        .into_iter()
        .take(MAX_SESSION_ROWS)
        .map(|s| SessionRow {
            key: mailbox_key(&s.backend, &s.backend_login),
            mailbox: s.mailbox.unwrap_or_else(|| "(not in the directory)".into()),
            user: s.user,
            client: s.client,
            backend: s.backend,
            since: humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.since),
            )
            .to_string(),
        })
        .collect();
    let values = context! {
        sessions => Value::from_serialize(&rows),
        total,
        can_change => signed.role.can_change(),
    };
    let frame = frame(&app, "Sessions", "sessions", &signed);
    app.pages
        .render(StatusCode::OK, "sessions.html", frame, values)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CloseForm {
    csrf: String,
    key: String,
}

pub async fn close_sessions(
    State(app): State<App>,
    signed: Signed,
    Form(form): Form<CloseForm>,
) -> Response {
    if !auth::same_token(&signed.csrf, &form.csrf) {
        return forged(&app, &signed);
    }

    // What the audit and the note call it: the mailbox (or user) of a session with that key.
    let label = app
        .gate
        .sessions()
        .into_iter()
        .find(|s| mailbox_key(&s.backend, &s.backend_login) == form.key)
        .map(|s| s.mailbox.unwrap_or(s.user));
    if !signed.role.can_change() {
        let named = label.as_deref().unwrap_or(&form.key);
        return not_allowed(&app, &signed, "close-sessions", named, "/sessions").await;
    }
    let Some(label) = label else {
        app.sessions.set_flash(
            &signed.token,
            Flash::Problem("Those sessions are closed already.".into()),
        );
        return Redirect::to("/sessions").into_response();
    };
    let (gate, who, key) = (app.gate.clone(), who(&signed), form.key.clone());
    // Closed and audited to the end even if the browser goes away.
    let closed = tokio::spawn(async move {
        let closed = gate.close_mailbox_sessions(&key);
        let outcome = format!("{closed} session(s) closed");
        let entry = Entry::now(&who, "close-sessions", &label, "", "", &outcome);
        audit::write(gate.audit_log(), entry).await;
        format!("{label}: {outcome}.")
    })
    .await;
    let flash = match closed {
        Ok(message) => Flash::Message(message),
        Err(_) => Flash::Problem("Not done: the gate failed; its log says why.".into()),
    };
    app.sessions.set_flash(&signed.token, flash);
    Redirect::to("/sessions").into_response()
}

pub async fn audit(State(app): State<App>, signed: Signed) -> Response {
    let path = app.gate.audit_log();
    let configured = path.is_some();
    let entries = match path {
        Some(path) => {
            match tokio::task::spawn_blocking(move || audit::read_latest(&path, AUDIT_ROWS)).await {
                Ok(Ok(entries)) => entries,
                Ok(Err(e)) => {
                    return refused(
                        &app,
                        StatusCode::SERVICE_UNAVAILABLE,
                        Some(&signed),
                        format!("The audit log cannot be read: {e}"),
                        "/mailboxes",
                    )
                }
                Err(_) => Vec::new(),
            }
        }
        None => Vec::new(),
    };
    let values = context! {
        entries => Value::from_serialize(&entries),
        configured,
    };
    let frame = frame(&app, "Auditing", "audit", &signed);
    app.pages
        .render(StatusCode::OK, "audit.html", frame, values)
}

pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        render::STYLE,
    )
        .into_response()
}

pub async fn not_found(State(app): State<App>) -> Response {
    refused(
        &app,
        StatusCode::NOT_FOUND,
        None,
        "There is no such page.".into(),
        "/mailboxes",
    )
}
