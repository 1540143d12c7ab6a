//! The tasks that keep the daemon's link to the install helper: forwarding its signals to the
//! core loop, reading its status without holding up the loop (a helper that is recovering an
//! interrupted install may take minutes to answer, and connections are served meanwhile), and
//! connecting again — respawning a helper that was our child — when the link went away.

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
        read_status(client.clone(), tx.clone()).await;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = forward(client, signals, tx) => {}
        }
        return;
    }
}
