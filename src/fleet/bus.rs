//! Messages between the gates of a fleet, on Redis channels:
//!
//! - `imapgate:changes`: a directory change made through a gate (`mailbox set`, the admin
//!   center, a reload). Every other gate forgets the mailbox (everything for a reload) and closes
//!   its sessions if it is now disabled.
//! - `imapgate:requests`: `imapgate sessions --fleet` and `imapgate kick --fleet`. Each gate
//!   answers in the request's reply hash (a field per node); the asking gate waits for as many
//!   answers as the publish reached, at most [`ANSWER_WAIT`].
//!
//! The subscriber reconnects by itself; after a loss it applies a change of everything, since
//! changes made meanwhile were not heard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::Fleet;
use crate::registry::SessionView;

const CHANGES: &str = "imapgate:changes";
const REQUESTS: &str = "imapgate:requests";
/// How long a request waits for the other gates' answers.
pub const ANSWER_WAIT: Duration = Duration::from_millis(1500);

#[derive(Debug, Serialize, Deserialize)]
struct ChangeMessage {
    node: String,
    /// The mailbox's key; none: everything (a reload).
    mailbox: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RequestMessage {
    node: String,
    id: String,
    #[serde(flatten)]
    request: Request,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "lowercase")]
pub enum Request {
    /// Every gate's open sessions.
    Sessions,
    /// Close the sessions of the mailbox `identity` names, on every gate.
    Kick { identity: String },
}

/// A session of some gate of the fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FleetSession {
    pub node: String,
    #[serde(flatten)]
    pub session: SessionView,
}

/// What the bus asks of this gate (the composition root implements it).
#[async_trait]
pub trait Member: Send + Sync {
    /// A change made through another gate: forget `mailbox` (everything when `None`) and close
    /// the sessions of mailboxes now disabled.
    async fn changed(&self, mailbox: Option<String>);
    fn sessions(&self) -> Vec<SessionView>;
    /// Closes the sessions of the mailbox `identity` names; how many.
    async fn kick(&self, identity: &str) -> usize;
}

impl Fleet {
    /// Tells the other gates about a change (in a task; a change is never held up by Redis).
    pub fn publish_change(&self, mailbox: Option<&str>) {
        let Some(mut conn) = self.bus_connection() else {
            return;
        };
        let message = ChangeMessage {
            node: self.node.clone(),
            mailbox: mailbox.map(String::from),
        };
        let Ok(text) = serde_json::to_string(&message) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    redis::cmd("PUBLISH")
                        .arg(CHANGES)
                        .arg(text)
                        .query_async::<i64>(&mut conn),
                )
                .await;
            });
        }
    }

    /// Asks every gate (this one included) and gathers the answers: node -> answer (JSON).
    pub async fn ask(&self, request: Request) -> Result<BTreeMap<String, String>, String> {
        let mut conn = self
            .bus_connection()
            .ok_or("Redis is unreachable: the fleet cannot be asked")?;
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).map_err(|e| e.to_string())?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let message = RequestMessage {
            node: self.node.clone(),
            id: id.clone(),
            request,
        };
        let text = serde_json::to_string(&message).map_err(|e| e.to_string())?;
        let reached: i64 = redis::cmd("PUBLISH")
            .arg(REQUESTS)
            .arg(text)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        if reached == 0 {
            return Err(
                "no gate hears the fleet's channels yet (this one included): try again".into(),
            );
        }
        let key = reply_key(&id);
        let started = Instant::now();
        loop {
            let answered: i64 = redis::cmd("HLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            if answered >= reached || started.elapsed() >= ANSWER_WAIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let answers: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let _ = redis::cmd("DEL")
            .arg(&key)
            .query_async::<i64>(&mut conn)
            .await;
        Ok(answers)
    }
}

fn reply_key(id: &str) -> String {
    format!("imapgate:reply:{id}")
}

/// Follows the channels until aborted, applying changes and answering requests.
pub async fn listen(fleet: Arc<Fleet>, member: Arc<dyn Member>) {
    let mut retry = Duration::from_millis(500);
    let mut lost = false;
    loop {
        let subscribed = async {
            let mut pubsub = fleet.client().get_async_pubsub().await?;
            pubsub.subscribe(&[CHANGES, REQUESTS]).await?;
            redis::RedisResult::Ok(pubsub)
        };
        let mut pubsub = match tokio::time::timeout(Duration::from_secs(3), subscribed).await {
            Ok(Ok(p)) => p,
            _ => {
                lost = true;
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        retry = Duration::from_millis(500);
        fleet.set_listening(true);
        if lost {
            // Changes made while this gate was not listening were not heard.
            member.changed(None).await;
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let payload = message.get_payload_bytes().to_vec();
            match message.get_channel_name() {
                CHANGES => {
                    if let Ok(change) = serde_json::from_slice::<ChangeMessage>(&payload) {
                        if change.node != fleet.node {
                            tracing::info!(from = %change.node, mailbox = change.mailbox.as_deref().unwrap_or("(all)"), "fleet: change made through another gate");
                            member.changed(change.mailbox).await;
                        }
                    }
                }
                REQUESTS => {
                    if let Ok(request) = serde_json::from_slice::<RequestMessage>(&payload) {
                        answer(&fleet, &*member, request).await;
                    }
                }
                _ => {}
            }
        }
        lost = true;
        fleet.set_listening(false);
        tracing::warn!(node = %fleet.node, "fleet: lost the Redis channels; resubscribing");
    }
}

async fn answer(fleet: &Fleet, member: &dyn Member, request: RequestMessage) {
    let text = match &request.request {
        Request::Sessions => serde_json::to_string(&member.sessions()),
        Request::Kick { identity } => {
            let closed = member.kick(identity).await;
            tracing::info!(from = %request.node, identity = %identity, closed, "fleet: sessions closed at another gate's request");
            serde_json::to_string(&closed)
        }
    };
    let (Ok(text), Some(mut conn)) = (text, fleet.bus_connection()) else {
        return;
    };
    let key = reply_key(&request.id);
    let _ = redis::pipe()
        .hset(&key, &fleet.node, text)
        .ignore()
        .expire(&key, 30)
        .ignore()
        .query_async::<()>(&mut conn)
        .await;
}
