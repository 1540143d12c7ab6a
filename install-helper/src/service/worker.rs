//! The transaction's two halves outside the D-Bus methods: the progress of the pass that
//! copies and verifies the package while `Install` has not returned yet ([`PassProgress`]),
//! and the worker thread that runs the rest of the transaction and turns its events into
//! `Progress`, `Healthy` and `Finished` signals. Both record the progress in the running
//! transaction (`Status()` shows it) before they signal it.

use std::sync::Arc;

use install_api::{ErrorCode, Phase};
use tokio::sync::mpsc;
use zbus::object_server::SignalEmitter;

use super::{InstallHelper, Shared, StandIn};
use crate::paths::SystemdMode;
use crate::receipt::TxResult;
use crate::stage::meter::{Report, Total};
use crate::txn::{self, Env};
use crate::units::{Systemd, SystemdDbus};

enum Event {
    Progress(Phase, u32, String),
    Healthy(Box<TxResult>),
    Finished(Box<TxResult>),
}

/// Records the progress in the running transaction, then signals it.
async fn report_progress(
    shared: &Shared,
    emitter: &SignalEmitter<'_>,
    txid: &str,
    phase: Phase,
    percent: u32,
    message: &str,
) {
    if let Ok(mut c) = shared.current.lock()
        && let Some(c) = c.as_mut()
        && c.txid == txid
    {
        c.phase = Some(phase);
        c.percent = percent;
        c.message = message.to_owned();
    }
    let _ = InstallHelper::progress(emitter, txid, phase.as_str(), percent, message).await;
}

/// The progress of the copy-and-verify pass of one `Install`: the pass (a blocking thread)
/// sends its [`Report`]s, a task records and signals them as the `verify` phase, in order,
/// before `Install` answers ([`PassProgress::finish`]).
pub(super) struct PassProgress {
    tx: mpsc::UnboundedSender<Report>,
    task: tokio::task::JoinHandle<u32>,
}

impl std::fmt::Debug for PassProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassProgress")
    }
}

impl PassProgress {
    /// Starts the task signalling the pass of transaction `txid`.
    pub(super) fn start(
        shared: Arc<Shared>,
        emitter: SignalEmitter<'static>,
        txid: String,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let task = tokio::spawn(async move {
            let mut overall = Phase::Verify.overall(0);
            let mut sent = None;
            while let Some(r) = rx.recv().await {
                overall = Phase::Verify.overall(r.percent).max(overall);
                // Several percents of the pass may be one overall percent: signalled once,
                // and the end of the pass always.
                if sent == Some(overall) && r.percent < 100 {
                    continue;
                }
                sent = Some(overall);
                let msg = pass_message(&r);
                report_progress(&shared, &emitter, &txid, Phase::Verify, overall, &msg).await;
            }
            overall
        });
        PassProgress { tx, task }
    }

    /// The sender for the pass's reports (moved into the blocking thread).
    pub(super) fn sender(&self) -> mpsc::UnboundedSender<Report> {
        self.tx.clone()
    }

    /// Waits until every report was signalled (the pass's senders are gone); returns the
    /// overall progress the pass ended at, where the transaction's worker goes on.
    pub(super) async fn finish(self) -> u32 {
        drop(self.tx);
        self.task.await.unwrap_or(Phase::Verify.range().0)
    }
}

/// The message of a pass report, e.g. `verifying the package: 12.5 of 200.0 MiB`.
pub(super) fn pass_message(r: &Report) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let done = mib(r.bytes);
    match r.total {
        _ if r.percent >= 100 => format!("checked the package ({done:.1} MiB)"),
        Total::Exact(t) => format!("verifying the package: {done:.1} of {:.1} MiB", mib(t)),
        Total::Advisory(t) => {
            format!(
                "verifying the package: {done:.1} of about {:.1} MiB",
                mib(t)
            )
        }
        Total::Unknown => format!("verifying the package: {done:.1} MiB"),
    }
}

impl InstallHelper {
    /// Runs the transaction on `taken` on a worker thread; its progress starts at `start`
    /// (where the copy-and-verify pass ended), its events become signals.
    pub(super) fn start_worker(
        &self,
        txid: String,
        taken: crate::stage::Taken,
        emitter: SignalEmitter<'static>,
        start: u32,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let shared = self.shared.clone();
        let rt = tokio::runtime::Handle::current();
        let worker_tx = tx.clone();
        let worker_txid = txid.clone();
        std::thread::spawn(move || {
            // The previous transaction may still be settling (after its `Finished`).
            let _gate = shared.gate.lock().unwrap_or_else(|e| e.into_inner());
            let settings = shared.settings.clone();
            let mut real;
            let mut stand_in;
            let mut systemd: Option<&mut dyn Systemd> = None;
            let mut connect_error = None;
            if let Some(StandIn(make)) = &shared.stand_in {
                stand_in = make();
                systemd = Some(stand_in.as_mut());
            } else if settings.systemd == SystemdMode::SystemBus {
                match SystemdDbus::connect(rt) {
                    Ok(s) => {
                        real = s;
                        systemd = Some(&mut real);
                    }
                    Err(e) => connect_error = Some(e.to_string()),
                }
            }
            // Overall progress only moves forward, whatever a phase reports.
            let mut overall = start;
            let mut progress = |phase: Phase, within: u32, msg: &str| {
                overall = phase.overall(within).max(overall);
                let _ = worker_tx.send(Event::Progress(phase, overall, msg.into()));
            };
            let (result, sync) = if let Some(e) = connect_error {
                // Without systemd we cannot restart or gate: refuse before touching anything.
                let _ = std::fs::remove_file(&taken.path);
                let mut env = Env {
                    settings: &settings,
                    systemd: None,
                    progress: &mut progress,
                    healthy: None,
                };
                let r = txn::finish(
                    &mut env,
                    TxResult::new(
                        &worker_txid,
                        ErrorCode::Internal,
                        format!("cannot reach systemd: {e}"),
                    ),
                );
                (r, None)
            } else {
                let healthy_tx = worker_tx.clone();
                let mut healthy = |r: &TxResult| {
                    let _ = healthy_tx.send(Event::Healthy(Box::new(r.clone())));
                };
                let mut env = Env {
                    settings: &settings,
                    systemd,
                    progress: &mut progress,
                    healthy: Some(&mut healthy),
                };
                txn::run_deferred(&mut env, shared.verifier.as_ref(), &worker_txid, taken)
            };
            let _ = worker_tx.send(Event::Finished(Box::new(result)));
            // The cached package becomes durable after the result (the gate is still held).
            if let Some(s) = sync {
                s.complete();
            }
        });
        drop(tx);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Progress(phase, pct, msg) => {
                        report_progress(&shared, &emitter, &txid, phase, pct, &msg).await;
                    }
                    Event::Healthy(r) => {
                        let until = r.probation_until.unwrap_or_default();
                        if let Ok(mut c) = shared.current.lock()
                            && let Some(c) = c.as_mut()
                        {
                            c.probation_until = Some(until);
                            c.message = r.message.clone();
                        }
                        let _ = InstallHelper::healthy(&emitter, &txid, until, &r.to_json()).await;
                    }
                    Event::Finished(r) => {
                        if let Ok(mut t) = shared.last_activity.lock() {
                            *t = std::time::Instant::now();
                        }
                        if let Ok(mut c) = shared.current.lock() {
                            *c = None;
                        }
                        let _ = InstallHelper::finished(
                            &emitter,
                            &txid,
                            r.code.as_str(),
                            &r.message,
                            &r.to_json(),
                        )
                        .await;
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_messages_name_the_bytes_and_the_total() {
        let r = |percent, bytes, total| {
            pass_message(&Report {
                percent,
                bytes,
                total,
            })
        };
        assert_eq!(
            r(25, 50 << 20, Total::Exact(200 << 20)),
            "verifying the package: 50.0 of 200.0 MiB"
        );
        assert_eq!(
            r(99, 3 << 20, Total::Advisory(2 << 20)),
            "verifying the package: 3.0 of about 2.0 MiB"
        );
        assert_eq!(
            r(100, 3 << 19, Total::Exact(3 << 19)),
            "checked the package (1.5 MiB)"
        );
    }
}
