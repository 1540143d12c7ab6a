//! `STATUS=` lines for the service manager, sent from a thread of their own.
//!
//! sd_notify writes to a blocking datagram socket: when the reader lags (the kernel queues only
//! `net.unix.max_dgram_qlen` datagrams, 10 by default), a send blocks. The core loop therefore
//! only records the latest status text here; a thread sends it, skipping texts that were
//! replaced before it got to them. READY, STOPPING and WATCHDOG stay direct and rare.

use tokio::sync::watch;

/// Hands status texts to the sending thread (latest wins).
#[derive(Debug)]
pub(crate) struct StatusNotifier {
    tx: watch::Sender<String>,
}

impl StatusNotifier {
    /// Starts the sending thread when a notification socket is configured.
    pub(crate) fn start() -> Self {
        let (tx, mut rx) = watch::channel(String::new());
        if crate::systemd::enabled()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let spawned = std::thread::Builder::new()
                .name("sd-notify".into())
                .spawn(move || {
                    while handle.block_on(rx.changed()).is_ok() {
                        let text = rx.borrow_and_update().clone();
                        let _ = crate::systemd::status(&text);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start the sd-notify thread");
            }
        }
        Self { tx }
    }

    /// Records `text` as the status to send (nothing happens when it did not change).
    pub(crate) fn status(&self, text: String) {
        self.tx.send_if_modified(|cur| {
            if *cur == text {
                false
            } else {
                *cur = text;
                true
            }
        });
    }
}
