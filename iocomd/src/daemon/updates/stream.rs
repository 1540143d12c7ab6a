//! The streamed hand-over: a push goes to the install helper while it is received, so the
//! helper's copy and verification pass run during the transfer instead of after it.
//!
//! When the helper lists [`install_api::FEATURE_STREAM_END`] (and no earlier stream's
//! `Install` is still unanswered), a push opens two pipes and calls `Install` at once with
//! the read end of the first (the package) and of the second (meta
//! [`install_api::meta::STREAM_END`]). The spool's thread ([`super::pipe`]) writes every chunk
//! to the package pipe (the helper's reading is the backpressure: the queue fills and the
//! controller waits) and computes the stream's CRC. At the end:
//!
//! ```text
//! CRC matches   → Streamed(Ok) to the core (Receiving → Spooling → Installing), then the
//!                 package pipe closes and `complete <bytes>\n` goes on the end pipe; the
//!                 helper's `Install` answers with its txid as for a spooled file
//! CRC differs   → Streamed(Err crc-mismatch) is the result; both pipes close unconfirmed
//! dropped, timed out, refused early, shut down
//!               → both pipes close unconfirmed
//! ```
//! The helper takes nothing from an unconfirmed stream (its `Install` fails `bad-request`,
//! no result, no receipt); that answer arrives for an update that already ended and is
//! ignored. A helper that stops reading (it refused the package before its end: busy, no
//! space for its copy, too large) fails the write; the thread closes the stream and the
//! transfer waits for the helper's answer, which ends it with the helper's code.
//!
//! Nothing is written to the spool directory for a streamed push: the helper's copy is the
//! only one (the spool's SHA-256 and fsync are gone with it). A package from another source
//! (a fleet download) is still a spooled file.

use super::{Finished, Outcome, Updates};
use crate::daemon::CoreEvent;
use crate::daemon::update::Update;
use crate::helper_client::HelperClient;
use crate::proto::crc::Crc16;
use crate::spool::SpoolError;
use std::io::{PipeWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::pipe::SpoolPipe;

/// What stream errors name instead of a file.
pub(crate) const LABEL: &str = "the install helper's stream";

/// The package pipe's capacity (the default unprivileged maximum).
const PIPE_BYTES: i32 = 1 << 20;

/// The writing ends of a streamed push, with the CRC and count of what went through.
#[derive(Debug)]
pub(crate) struct HelperStream {
    data: Option<PipeWriter>,
    end: Option<PipeWriter>,
    crc: Crc16,
    bytes: u64,
}

impl HelperStream {
    /// Writes `chunk` to the package pipe (blocking while the helper catches up).
    pub(crate) fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let Some(data) = self.data.as_mut() else {
            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        };
        data.write_all(chunk)?;
        self.crc.update(chunk);
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Whether the bytes written have the sender's `crc`: `Ok(bytes)`.
    pub(crate) fn check(&self, crc: u16) -> Result<u64, SpoolError> {
        let actual = self.crc.value();
        if actual != crc {
            return Err(SpoolError::CrcMismatch {
                path: PathBuf::from(LABEL),
                expected: crc,
                actual,
            });
        }
        Ok(self.bytes)
    }

    /// Ends the package pipe, then confirms every byte on the end pipe.
    pub(crate) fn complete(mut self) {
        self.data = None;
        if let Some(mut end) = self.end.take()
            && let Err(e) = end.write_all(format!("complete {}\n", self.bytes).as_bytes())
        {
            tracing::debug!(error = %e, "the helper's end pipe closed before the confirmation");
        }
    }

    /// Closes both pipes unconfirmed.
    pub(crate) fn close(&mut self) {
        self.data = None;
        self.end = None;
    }
}

/// Two pipes (package, end) and the helper-side read ends.
fn pipes() -> std::io::Result<(HelperStream, std::io::PipeReader, std::io::PipeReader)> {
    let (data_r, data_w) = std::io::pipe()?;
    let (end_r, end_w) = std::io::pipe()?;
    // A larger pipe: fewer wake-ups of both sides (the default 64 KiB also works).
    let _ = nix::fcntl::fcntl(&data_w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    let stream = HelperStream {
        data: Some(data_w),
        end: Some(end_w),
        crc: Crc16::new(),
        bytes: 0,
    };
    Ok((stream, data_r, end_r))
}

impl Updates {
    /// The helper to stream push to, if it takes streams and no stream's `Install` is
    /// unanswered (a new call would find the helper busy finishing it).
    pub(super) fn stream_helper(&self) -> Option<Arc<HelperClient>> {
        let h = self.helper.as_ref()?;
        let may = self.settings.spool.stream_to_helper && self.helper_ready;
        (may && self.helper_streams && self.stream_call.is_none()).then(|| h.clone())
    }

    /// Opens the streamed hand-over of push `push` from `origin` and calls `Install`.
    pub(super) fn start_stream(
        &mut self,
        helper: Arc<HelperClient>,
        push: u64,
        origin: String,
    ) -> Result<SpoolPipe, SpoolError> {
        let io = |source| SpoolError::Io {
            path: PathBuf::from(LABEL),
            source,
        };
        let (stream, data_r, end_r) = pipes().map_err(io)?;
        let pipe = SpoolPipe::start_stream(
            stream,
            self.settings.spool.max_package_size,
            push,
            self.tx.clone(),
        )?;
        self.stream_call = Some(push);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let result = helper.install_stream(&data_r, &end_r, &origin).await;
            drop((data_r, end_r));
            let _ = tx.send(CoreEvent::InstallCall { push, result }).await;
        });
        Ok(pipe)
    }

    /// The streamed push `push` ended on our side: `Ok(bytes)` when its CRC matched
    /// (Spooling → Installing; the helper answers next), the failure otherwise.
    pub(crate) fn on_streamed(
        &mut self,
        push: u64,
        result: Result<u64, SpoolError>,
    ) -> Option<Finished> {
        if self.machine.push() != Some(push) || !matches!(self.machine, Update::Spooling { .. }) {
            self.refused("streamed", super::Rejection::NotApplicable);
            return None;
        }
        match result {
            Ok(bytes) => {
                self.span
                    .in_scope(|| tracing::info!(size = bytes, "package received and streamed"));
                if let Err(why) = self.machine.spooled() {
                    self.refused("streamed", why);
                }
                None
            }
            Err(e) => self.finish(None, Outcome::daemon(e.code(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_completed_stream_carries_every_byte_then_the_count_on_its_end_pipe() {
        let (mut s, mut data_r, mut end_r) = pipes().unwrap();
        s.write(b"hello ").unwrap();
        s.write(b"world").unwrap();
        let crc = crate::proto::crc::crc16(b"hello world");
        assert_eq!(s.check(crc).unwrap(), 11);
        let e = s.check(crc ^ 1).unwrap_err();
        assert!(matches!(e, SpoolError::CrcMismatch { .. }), "{e}");
        s.complete();
        let (mut data, mut end) = (String::new(), String::new());
        data_r.read_to_string(&mut data).unwrap();
        end_r.read_to_string(&mut end).unwrap();
        assert_eq!(
            (data.as_str(), end.as_str()),
            ("hello world", "complete 11\n")
        );
    }

    #[test]
    fn a_closed_stream_ends_both_pipes_without_a_word_and_refuses_writes() {
        let (mut s, mut data_r, mut end_r) = pipes().unwrap();
        s.write(b"abc").unwrap();
        s.close();
        assert_eq!(
            s.write(b"d").unwrap_err().kind(),
            std::io::ErrorKind::BrokenPipe
        );
        let (mut data, mut end) = (String::new(), String::new());
        data_r.read_to_string(&mut data).unwrap();
        end_r.read_to_string(&mut end).unwrap();
        assert_eq!((data.as_str(), end.as_str()), ("abc", ""));
    }

    #[test]
    fn a_write_to_a_helper_that_closed_its_end_fails_instead_of_blocking() {
        let (mut s, data_r, _end_r) = pipes().unwrap();
        drop(data_r);
        let e = s.write(&[0u8; 4096]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_stream_end_for_no_update_or_another_push_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        std::mem::forget(rx);
        let mut u = Updates::new(crate::config::Settings::demo(d.path()), None, tx);
        assert!(u.on_streamed(1, Ok(5)).is_none());
        assert!(matches!(u.machine, Update::Idle));
        assert_eq!(u.seq, 0);
        // No helper, or one that does not take streams: pushes are spooled.
        assert!(u.stream_helper().is_none());
    }
}
