//! The tasks that keep the daemon's link to the install helper: forwarding its signals to the
//! core loop, reading its status without holding up the loop (a helper that is recovering an
//! interrupted install may take minutes to answer, and connections are served meanwhile), and
//! connecting again — respawning a helper that was our child — when the link went away.
//!
//! A helper on a bus is D-Bus activated and exits when idle, so the instance answering may
//! change under one link; a new instance may have a new policy (a changed configuration, an
//! updated helper). [`follow_owner`] follows its well-known name and the core reads the policy
//! of every new instance again ([`read_policy`]). Only a new owner is followed, not the name
//! going away: reading then would activate a helper at once, and it would never stay exited.
//! Until a new instance starts, the last policy read stays in force for the early refusal. A
//! peer-to-peer helper (our child) has no bus name: its policy is read when the link
//! (re)connects, with its status.

use super::CoreEvent;
use crate::config::HelperConnection;
use crate::helper_client::HelperClient;
use futures_util::{Stream, StreamExt};
use install_api::HelperSignal;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The first wait before connecting again; it doubles up to [`RECONNECT_MAX`].
pub const RECONNECT_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Subscribes to the helper's signals (before anything is sent to it, so none is missed).
pub(crate) async fn subscribe(
    h: &HelperClient,
) -> Option<impl Stream<Item = HelperSignal> + Send + Unpin + 'static> {
    match h.events().await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to the helper's signals");
            None
        }
    }
}

/// Forwards the helper's signals to the core; [`CoreEvent::HelperGone`] when they end or the
/// connection to the helper closed (a peer-to-peer helper that died).
pub(crate) async fn forward(
    h: Arc<HelperClient>,
    mut signals: impl Stream<Item = HelperSignal> + Send + Unpin + 'static,
    tx: mpsc::Sender<CoreEvent>,
) {
    loop {
        tokio::select! {
            ev = signals.next() => match ev {
                Some(ev) => if tx.send(CoreEvent::Helper(ev)).await.is_err() { return },
                None => break,
            },
            _ = h.closed() => break,
        }
    }
    let _ = tx.send(CoreEvent::HelperGone(h)).await;
}

/// Reads the helper's `Status()` and hands it to the core ([`CoreEvent::HelperStatus`]).
pub(crate) async fn read_status(h: Arc<HelperClient>, tx: mpsc::Sender<CoreEvent>) {
    let r = h.status().await;
    let _ = tx.send(CoreEvent::HelperStatus(Box::new(r))).await;
}

/// Connects to the helper again (spawning a new child for [`HelperConnection::Spawn`]) with
/// backoff until it works or `stop` is cancelled; then hands the link to the core
/// ([`CoreEvent::HelperBack`]), reads its status and forwards its signals until it goes away.
pub(crate) async fn reconnect(
    how: HelperConnection,
    tx: mpsc::Sender<CoreEvent>,
    stop: CancellationToken,
) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).clamp(RECONNECT_FIRST, RECONNECT_MAX);
        let client = tokio::select! {
            _ = stop.cancelled() => return,
            r = HelperClient::connect(&how) => r,
        };
        let client = match client {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "the install helper is still unavailable");
                continue;
            }
        };
        let Some(signals) = subscribe(&client).await else {
            continue;
        };
        tracing::info!(pid = ?client.child_pid(), "connected to the install helper again");
        if tx
            .send(CoreEvent::HelperBack(client.clone()))
            .await
            .is_err()
        {
            return;
        }
        let _owner = subscribe_owner(&client)
            .await
            .map(|c| AbortOnDrop(tokio::spawn(follow_owner(client.clone(), c, tx.clone()))));
        read_status(client.clone(), tx.clone()).await;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = forward(client, signals, tx) => {}
        }
        return;
    }
}

/// Subscribes to the changes of the owner of the helper's bus name (before its status is
/// read, so no new instance goes unnoticed); `None` for a peer-to-peer helper.
pub(crate) async fn subscribe_owner(
    h: &HelperClient,
) -> Option<impl Stream<Item = Option<String>> + Send + Unpin + 'static> {
    match h.owner_changes().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot follow the install helper's bus name");
            None
        }
    }
}

/// Tells the core every change of the owner of the helper's bus name
/// ([`CoreEvent::HelperOwner`]) until the changes end or the core stops.
pub(crate) async fn follow_owner(
    h: Arc<HelperClient>,
    mut changes: impl Stream<Item = Option<String>> + Send + Unpin + 'static,
    tx: mpsc::Sender<CoreEvent>,
) {
    while let Some(owner) = changes.next().await {
        let ev = CoreEvent::HelperOwner {
            helper: h.clone(),
            owner,
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}

/// Reads the policy and features of the helper instance now answering
/// ([`CoreEvent::HelperPolicy`]).
pub(crate) async fn read_policy(h: Arc<HelperClient>, tx: mpsc::Sender<CoreEvent>) {
    let r = h.status().await;
    let _ = tx.send(CoreEvent::HelperPolicy(Box::new(r))).await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
