//! The phases of a push after the session is ready: the upload (the file read in chunks as
//! the device's `tod_buf` ring has room, [`FileSource`]; ring, CRC-16 and handshakes are the
//! stream machine's), the wait for the device's verdict (reconnecting when the device restarts
//! while installing), and several devices at once.

use super::link;
use super::report::{StatusSignals, classify, classify_tod_err, tod_err_is_final};
use super::session::{ALL_IDS, Core, Step, open_one};
use super::{
    ConnectOptions, CtlError, DevicePath, DeviceReport, ManyResult, Progress, PushOptions,
    PushOutcome, Target, Transport, UpdState,
};
use crate::net::NetEvent;
use crate::proto::stream::controller::Progress as StreamProgress;
use crate::proto::stream::{ChunkSink, ChunkSource, SourceRead, status};
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// After a failed transfer, how long to wait for the device to publish why.
const FAILURE_GRACE: Duration = Duration::from_secs(5);
/// Pause between reconnect attempts while waiting for a restarted device.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// Least time between two transfer progress events.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Reads the package file in chunks for the stream writer.
///
/// An empty read is the writer asking whether the data is at its end (when the ring is
/// full): answered by reading one byte ahead, which the next read returns first.
pub(crate) struct FileSource<R> {
    file: R,
    bytes: u64,
    peeked: Option<u8>,
    error: Option<std::io::Error>,
}

impl<R: Read> FileSource<R> {
    pub(crate) fn new(file: R) -> Self {
        Self {
            file,
            bytes: 0,
            peeked: None,
            error: None,
        }
    }

    fn fail(&mut self, e: std::io::Error) -> u8 {
        self.error = Some(e);
        status::READING_FILE_FAILED
    }
}

impl<R: Read> ChunkSource for FileSource<R> {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        if buf.is_empty() {
            if self.peeked.is_some() {
                return Ok(SourceRead::Bytes(0));
            }
            let mut one = [0u8; 1];
            return match self.file.read(&mut one) {
                Ok(0) => Ok(SourceRead::End),
                Ok(_) => {
                    self.peeked = Some(one[0]);
                    Ok(SourceRead::Bytes(0))
                }
                Err(e) => Err(self.fail(e)),
            };
        }
        let mut n = 0;
        if let (Some(b), Some(first)) = (self.peeked, buf.first_mut()) {
            *first = b;
            self.peeked = None;
            n = 1;
        }
        let rest = buf.get_mut(n..).unwrap_or_default();
        match self.file.read(rest) {
            Ok(k) => n += k,
            Err(e) => return Err(self.fail(e)),
        }
        self.bytes += n as u64;
        Ok(if n == 0 {
            SourceRead::End
        } else {
            SourceRead::Bytes(n)
        })
    }
}

/// We never download.
struct NoSink;

impl ChunkSink for NoSink {
    fn open(&mut self, _select: i64) -> Result<(), crate::proto::stream::LocalError> {
        Err(status::NO_ACCESS_RIGHT.into())
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), crate::proto::stream::LocalError> {
        Err(status::NO_ACCESS_RIGHT.into())
    }
    fn close(&mut self, _ok: bool) {}
}

fn file_error(path: &Path) -> impl Fn(std::io::Error) -> CtlError + '_ {
    move |source| CtlError::File {
        path: path.to_owned(),
        source,
    }
}

/// Opens the package file: a readable regular file.
fn open_file(path: &Path) -> Result<(std::fs::File, u64), CtlError> {
    let file = std::fs::File::open(path).map_err(file_error(path))?;
    let meta = file.metadata().map_err(file_error(path))?;
    if !meta.is_file() {
        return Err(CtlError::File {
            path: path.to_owned(),
            source: std::io::Error::other("not a regular file"),
        });
    }
    Ok((file, meta.len()))
}

pub(crate) async fn push(
    opts: &PushOptions,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<PushOutcome, CtlError> {
    let (file, total) = open_file(&opts.file)?;
    let (links, rx) = open_one(&opts.target, &opts.connect).await?;
    let r = push_on(opts, (rx, ALL_IDS), file, total, &mut progress).await;
    links.close().await;
    r
}

async fn push_on(
    opts: &PushOptions,
    (rx, ids): (mpsc::Receiver<NetEvent>, std::ops::Range<u32>),
    file: std::fs::File,
    total: u64,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<PushOutcome, CtlError> {
    let t0 = Instant::now();
    let mut core = Core::new(&opts.target.device, rx, ids, progress);
    let before = core
        .first_ready(&opts.target, &opts.connect, !opts.accept_tod_err_only)
        .await?;
    if let Some(state) = before.state.filter(|s| *s != UpdState::Idle) {
        return Err(CtlError::Device {
            device: core.name.clone(),
            class: super::FailureClass::Busy,
            report: Box::new(DeviceReport {
                message: Some(format!("the device is {} another update", state.label())),
                ..before
            }),
        });
    }
    core.ep
        .start_upload(opts.select)
        .map_err(|e| CtlError::NotReady {
            device: core.name.clone(),
            reason: e.to_string(),
        })?;
    let ring = core.ring();
    (core.progress)(Progress::Started {
        total,
        ring,
        installed_version: before.installed_version.clone(),
    });
    // Transfer.
    let t_transfer = Instant::now();
    let mut source = FileSource::new(file);
    let mut last_emit = Instant::now();
    let mut last_bytes = 0;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let result = core
        .run_until(far, "transferring", Duration::ZERO, |c, now| {
            let p =
                c.ep.poll_transfer(now, &mut source, &mut NoSink)
                    .map_err(|e| CtlError::NotReady {
                        device: c.name.clone(),
                        reason: e.to_string(),
                    })?;
            // Refused at the start (the device set a failure code instead of RUNNING): stop
            // waiting for the stream timeout.
            if source.bytes == 0 && new_refusal(&before, c.ep.device_status()) {
                c.ep.abort();
            }
            if source.bytes != last_bytes && now.duration_since(last_emit) >= PROGRESS_EVERY {
                last_bytes = source.bytes;
                last_emit = now;
                (c.progress)(Progress::Transfer {
                    bytes: source.bytes,
                    total,
                });
            }
            Ok(match p {
                StreamProgress::Running => Step::Wait,
                done => Step::Done(done),
            })
        })
        .await
        .map_err(|e| interrupted(e, source.bytes, total))?;
    if let Some(e) = source.error.take() {
        return Err(file_error(&opts.file)(e));
    }
    let transfer_secs = t_transfer.elapsed().as_secs_f64();
    let (bytes, crc) = match result {
        StreamProgress::Completed { bytes, crc, .. } => {
            (core.progress)(Progress::Transfer { bytes, total });
            (core.progress)(Progress::Transferred { bytes, crc });
            (bytes, crc)
        }
        StreamProgress::Failed(e) => {
            let at_start = source.bytes == 0;
            return Err(failed_transfer(&mut core, &before, &e.to_string(), at_start).await);
        }
        StreamProgress::Running => return Err(CtlError::Internal("transfer still running".into())),
    };
    let report = wait_result(&mut core, opts, &before).await?;
    Ok(PushOutcome {
        device: core.shown_name(),
        bytes,
        crc,
        transfer_secs,
        total_secs: t0.elapsed().as_secs_f64(),
        report,
    })
}

/// Watches the device while it verifies and installs: state changes become progress events,
/// the final report ends the wait.
struct Watch<'b> {
    before: &'b DeviceReport,
    last: Option<(Option<UpdState>, Option<u8>)>,
}

impl Watch<'_> {
    fn step(
        &mut self,
        c: &mut Core<'_>,
        reconnected: bool,
    ) -> Result<Step<DeviceReport>, CtlError> {
        let r = c.report();
        let shown = (r.state, r.progress);
        // Progress in order: a lower percentage of the state already shown (a signal that
        // lagged behind) is not shown.
        let behind = self
            .last
            .is_some_and(|(s, p)| s == r.state && r.progress < p);
        if r.state.is_some_and(shown_after_transfer) && Some(shown) != self.last && !behind {
            self.last = Some(shown);
            (c.progress)(Progress::Device {
                state: r.state.unwrap_or(UpdState::Idle),
                percent: r.progress,
            });
        }
        verdict(c, self.before, r, reconnected)
    }
}

const WAITING_RESULT: &str = "waiting for the device's result";

/// Whether a device state is worth showing once the device confirmed the end of the stream:
/// its `receiving` (the status signals lag behind the stream's end) is over already.
fn shown_after_transfer(state: UpdState) -> bool {
    state != UpdState::Receiving
}

/// A connection that closed in the middle of the transfer (the device shut down or restarted,
/// or the network broke) interrupted the transfer: exit 6, not a connection failure.
fn interrupted(e: CtlError, bytes: u64, total: u64) -> CtlError {
    match e {
        CtlError::Dropped { device, reason } => CtlError::Transfer {
            device,
            reason: format!("interrupted after {bytes} of {total} bytes: {reason}"),
        },
        e => e,
    }
}

/// Waits up to the result timeout for the device's verdict on this push. When the device drops
/// the connection meanwhile (e.g. iocomd updated itself and restarted) and we connected to it,
/// reconnects and reads the result it publishes after the restart.
async fn wait_result(
    core: &mut Core<'_>,
    opts: &PushOptions,
    before: &DeviceReport,
) -> Result<DeviceReport, CtlError> {
    let waited = opts.connect.timeouts.result;
    let deadline = Instant::now() + waited;
    let mut watch = Watch { before, last: None };
    let first = core
        .run_until(deadline, WAITING_RESULT, waited, |c, _| {
            watch.step(c, false)
        })
        .await;
    let reason = match (first, &opts.target.transport) {
        (Err(CtlError::Dropped { reason, .. }), t) if t.is_direct() => reason,
        (r, _) => return r,
    };
    (core.progress)(Progress::Reconnecting { reason });
    loop {
        if Instant::now() >= deadline {
            return Err(CtlError::Timeout {
                device: core.name.clone(),
                what: WAITING_RESULT,
                waited,
            });
        }
        let (links, rx) = match open_one(&opts.target, &opts.connect).await {
            Ok(l) => l,
            Err(CtlError::Connect { .. }) => {
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        core.reset(rx);
        let r = match core.ready(deadline, waited, true).await {
            Ok(_) => {
                core.run_until(deadline, WAITING_RESULT, waited, |c, _| watch.step(c, true))
                    .await
            }
            Err(e) => Err(e),
        };
        links.close().await;
        match r {
            Err(CtlError::Dropped { .. }) => tokio::time::sleep(RECONNECT_DELAY).await,
            r => return r,
        }
    }
}

/// The final verdict once the device published one for this push.
///
/// After a reconnect the stream (and its `tod_err`) belongs to the old connection: the result
/// is `upd_seq` changed, the device idle and a non-empty `upd_code`.
fn verdict(
    c: &Core<'_>,
    before: &DeviceReport,
    r: DeviceReport,
    reconnected: bool,
) -> Result<Step<DeviceReport>, CtlError> {
    let with_status = c.status.as_ref().is_some_and(StatusSignals::present);
    if with_status {
        if r.seq.is_none() || r.seq == before.seq {
            return Ok(Step::Wait);
        }
        let code = r.code.clone().unwrap_or_default();
        if reconnected && (code.is_empty() || r.state != Some(UpdState::Idle)) {
            return Ok(Step::Wait);
        }
        return match classify(&code, r.result) {
            None if reconnected || r.tod_err == Some(status::COMPLETED) => Ok(Step::Done(r)),
            // "ok" but the stream verdict is not there yet: wait for it.
            None if !r.tod_err.is_some_and(tod_err_is_final) => Ok(Step::Wait),
            None => Err(CtlError::Device {
                device: c.name.clone(),
                class: classify_tod_err(r.tod_err.unwrap_or(0))
                    .unwrap_or(super::FailureClass::InstallFailed),
                report: Box::new(r),
            }),
            Some(class) => Err(CtlError::Device {
                device: c.name.clone(),
                class,
                report: Box::new(r),
            }),
        };
    }
    match r.tod_err {
        Some(t) if tod_err_is_final(t) => match classify_tod_err(t) {
            None => Ok(Step::Done(r)),
            Some(class) => Err(CtlError::Device {
                device: c.name.clone(),
                class,
                report: Box::new(r),
            }),
        },
        _ => Ok(Step::Wait),
    }
}

/// A failure code in `tod_err` that was not there before the push: the device refused it
/// without (yet) publishing a result.
fn new_refusal(before: &DeviceReport, tod_err: Option<u8>) -> bool {
    tod_err.is_some_and(|t| tod_err_is_final(t) && t != status::COMPLETED)
        && tod_err != before.tod_err
}

/// The class of a refusal seen only in `tod_err`. At the start of the stream (no byte sent)
/// "no access right" means the device does not take pushes from us (iocomd: plain TCP not
/// allowed, or no account), which is the authentication class.
fn refusal_class(tod_err: Option<u8>, at_start: bool) -> Option<super::FailureClass> {
    match tod_err {
        Some(crate::status::tod_err::NO_ACCESS_RIGHT) if at_start => {
            Some(super::FailureClass::Auth)
        }
        t => t.and_then(classify_tod_err),
    }
}

/// After a failed transfer: the device's reason if it publishes one soon, else a transfer error.
async fn failed_transfer(
    core: &mut Core<'_>,
    before: &DeviceReport,
    reason: &str,
    at_start: bool,
) -> CtlError {
    let new_result = |c: &Core<'_>, r: &DeviceReport| {
        c.status.as_ref().is_some_and(StatusSignals::present)
            && r.seq.is_some()
            && r.seq != before.seq
    };
    let new_refusal = |r: &DeviceReport| new_refusal(before, r.tod_err);
    let r = core
        .run_until(Instant::now() + FAILURE_GRACE, "", FAILURE_GRACE, |c, _| {
            let r = c.report();
            Ok(if new_result(c, &r) || new_refusal(&r) {
                Step::Done(r)
            } else {
                Step::Wait
            })
        })
        .await;
    match r {
        Ok(mut r) => {
            let class = if new_result(core, &r) {
                classify(r.code.as_deref().unwrap_or_default(), r.result)
            } else {
                // Code, number and message still describe an earlier result.
                r.code = None;
                r.result = None;
                r.message = Some(format!(
                    "the device refused the stream{} (tod_err {})",
                    if at_start { " at its start" } else { "" },
                    r.tod_err.unwrap_or(0)
                ));
                refusal_class(r.tod_err, at_start)
            };
            CtlError::Device {
                device: core.name.clone(),
                class: class.unwrap_or(super::FailureClass::Transfer),
                report: Box::new(r),
            }
        }
        Err(CtlError::Timeout { .. }) => CtlError::Transfer {
            device: core.name.clone(),
            reason: reason.to_owned(),
        },
        Err(e) => e,
    }
}

pub(crate) async fn push_many(
    targets: &[Target],
    connect: &ConnectOptions,
    file: &Path,
    mut progress: impl FnMut(usize, Progress) + Send,
) -> Vec<ManyResult> {
    let pairs: Vec<(DevicePath, Transport)> = targets
        .iter()
        .map(|t| (t.device.clone(), t.transport.clone()))
        .collect();
    let mut results: Vec<Option<Result<PushOutcome, CtlError>>> =
        targets.iter().map(|_| None).collect();
    let mut files = Vec::new();
    for _ in targets {
        match open_file(file) {
            Ok(f) => files.push(f),
            Err(e) => {
                let (kind, msg) = match &e {
                    CtlError::File { source, .. } => (source.kind(), source.to_string()),
                    other => (std::io::ErrorKind::Other, other.to_string()),
                };
                return targets
                    .iter()
                    .map(|t| ManyResult {
                        device: t.device.clone(),
                        result: Err(CtlError::File {
                            path: file.to_owned(),
                            source: std::io::Error::new(kind, msg.clone()),
                        }),
                    })
                    .collect();
            }
        }
    }
    let (links, rxs) = link::open(&pairs, connect).await;
    let (ptx, mut prx) = mpsc::unbounded_channel::<(usize, Progress)>();
    let mut set = tokio::task::JoinSet::new();
    for (i, ((rx, target), (f, total))) in rxs.into_iter().zip(targets).zip(files).enumerate() {
        let rx = match rx {
            Ok(rx) => rx,
            Err(e) => {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(Err(e));
                }
                continue;
            }
        };
        let opts = PushOptions::new(target.clone(), connect.clone(), file.to_owned());
        let ptx = ptx.clone();
        set.spawn(async move {
            let mut cb = move |p| {
                let _ = ptx.send((i, p));
            };
            (i, push_on(&opts, rx, f, total, &mut cb).await)
        });
    }
    drop(ptx);
    loop {
        tokio::select! {
            Some((i, p)) = prx.recv() => progress(i, p),
            r = set.join_next() => match r {
                Some(Ok((i, r))) => {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                }
                Some(Err(e)) => tracing::error!(error = %e, "push task failed"),
                None => break,
            },
        }
    }
    while let Ok((i, p)) = prx.try_recv() {
        progress(i, p);
    }
    links.close().await;
    targets
        .iter()
        .zip(results)
        .map(|(t, r)| ManyResult {
            device: t.device.clone(),
            result: r.unwrap_or_else(|| Err(CtlError::Internal("push task failed".into()))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_source_answers_the_end_question_without_losing_bytes() {
        let data: Vec<u8> = (0..10u8).collect();
        let mut src = FileSource::new(&data[..]);
        let mut buf = [0u8; 4];
        assert_eq!(src.read(&mut buf), Ok(SourceRead::Bytes(4)));
        // "At the end?" — no: the peeked byte comes first in the next read.
        assert_eq!(src.read(&mut []), Ok(SourceRead::Bytes(0)));
        assert_eq!(src.read(&mut []), Ok(SourceRead::Bytes(0)));
        let mut rest = [0u8; 16];
        assert_eq!(src.read(&mut rest), Ok(SourceRead::Bytes(6)));
        assert_eq!(&rest[..6], &data[4..]);
        assert_eq!(src.read(&mut []), Ok(SourceRead::End));
        assert_eq!(src.read(&mut rest), Ok(SourceRead::End));
        assert_eq!(src.bytes, 10);
    }

    #[test]
    fn after_the_transfer_receiving_is_not_shown_and_a_drop_during_it_is_interrupted() {
        assert!(!shown_after_transfer(UpdState::Receiving));
        assert!(shown_after_transfer(UpdState::Verifying));
        assert!(shown_after_transfer(UpdState::Idle));
        let e = interrupted(
            CtlError::Dropped {
                device: "gina3.cafenet".into(),
                reason: "the peer closed the connection".into(),
            },
            10,
            20,
        );
        assert_eq!(e.exit_code(), 6);
        assert!(
            e.to_string().contains("interrupted after 10 of 20 bytes"),
            "{e}"
        );
        let e = interrupted(CtlError::Usage("x".into()), 0, 1);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn file_source_read_errors_are_kept() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let mut src = FileSource::new(Broken);
        assert_eq!(src.read(&mut [0u8; 8]), Err(status::READING_FILE_FAILED));
        assert_eq!(src.error.unwrap().to_string(), "disk on fire");
    }
}
