//! A package streamed while it is being received (`Install` with the `stream-end` meta key,
//! [`install_api::meta::STREAM_END`]): the package fd is a pipe the sender feeds as the bytes
//! arrive, so the copy and the verification pass run during the transfer, and a second fd
//! tells how the transfer ended.
//!
//! The end of the pipe alone cannot tell a completed transfer from an interrupted one (the
//! sender's connection dropped, the stream's CRC did not match): both close it. So once the
//! pipe ended, the helper reads the end fd: only `complete <bytes>\n`, with `<bytes>` what the
//! pipe carried, confirms it. Anything else — the fd closed without it, other text, another
//! count, nothing within [`CONFIRM_WAIT`] — is [`Unconfirmed`]: the copy is deleted and the
//! call fails (`bad-request`) without a transaction result, whatever the pass found, because
//! the bytes it judged are not the package that was sent.
//!
//! A verifier that refused early (a bad archive, a refused content entry) does not end the
//! pass: the rest of the stream is still read (bounded by the size limit), so that a refusal
//! is only reported for a transfer the sender completed.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long the sender may take to say how the stream ended, once the pipe ended.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// The longest confirmation read (`complete ` and a 20-digit count and a newline fit).
const MAX_CONFIRM: usize = 64;

/// The sender's end-of-stream fd.
#[derive(Debug)]
pub struct StreamEnd {
    file: File,
    wait: Duration,
}

/// Why a streamed package is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the package stream ended after {received} bytes without the sender's completion ({reason}); \
     the transfer was interrupted or failed its check"
)]
pub struct Unconfirmed {
    /// Bytes the pipe carried.
    pub received: u64,
    /// What the end fd held instead.
    pub reason: String,
}

impl StreamEnd {
    /// The end fd `file`, waited for at most [`CONFIRM_WAIT`].
    pub fn new(file: File) -> Self {
        Self::with_wait(file, CONFIRM_WAIT)
    }

    /// The end fd `file`, waited for at most `wait` (tests).
    pub fn with_wait(file: File, wait: Duration) -> Self {
        StreamEnd { file, wait }
    }

    /// Reads the confirmation; `Ok` only for `complete <received>\n`.
    pub fn confirm(mut self, received: u64) -> Result<(), Unconfirmed> {
        let fail = |reason: String| Unconfirmed { received, reason };
        let text = self.read_all().map_err(fail)?;
        let expected = format!("complete {received}\n");
        if text == expected.as_bytes() {
            return Ok(());
        }
        Err(fail(if text.is_empty() {
            "its end fd closed without a word".into()
        } else {
            format!("it said {:?}", String::from_utf8_lossy(&text))
        }))
    }

    /// Everything written to the end fd until its writer closes it, within `wait` and at
    /// most [`MAX_CONFIRM`] bytes.
    fn read_all(&mut self) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + self.wait;
        let mut text = Vec::new();
        let mut buf = [0u8; MAX_CONFIRM];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no word within {:?}", self.wait));
            }
            // Rounded up: a wait of less than a millisecond still waits.
            let ms = u16::try_from(left.as_millis() + 1).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("its end fd cannot be polled: {e}")),
            }
            match self.file.read(&mut buf) {
                Ok(0) => return Ok(text),
                Ok(n) => {
                    text.extend_from_slice(&buf[..n]);
                    if text.len() > MAX_CONFIRM {
                        return Err(format!("more than {MAX_CONFIRM} bytes on its end fd"));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(format!("its end fd cannot be read: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn end(words: &[u8], close: bool) -> (StreamEnd, Option<std::io::PipeWriter>) {
        let (r, mut w) = std::io::pipe().unwrap();
        w.write_all(words).unwrap();
        let e = StreamEnd::with_wait(
            File::from(std::os::fd::OwnedFd::from(r)),
            Duration::from_millis(200),
        );
        (e, (!close).then_some(w))
    }

    #[test]
    fn only_the_exact_count_confirms() {
        assert_eq!(end(b"complete 42\n", true).0.confirm(42), Ok(()));
        let e = end(b"complete 41\n", true).0.confirm(42).unwrap_err();
        assert_eq!(e.received, 42);
        assert!(e.reason.contains("complete 41"), "{e}");
        let e = end(b"complete 42", true).0.confirm(42).unwrap_err();
        assert!(e.reason.contains("said"), "{e}");
    }

    #[test]
    fn a_closed_end_or_silence_or_chatter_is_unconfirmed() {
        let e = end(b"", true).0.confirm(7).unwrap_err();
        assert!(e.reason.contains("without a word"), "{e}");
        assert!(e.to_string().contains("after 7 bytes"), "{e}");
        let (silent, _keep_open) = end(b"", false);
        let t = Instant::now();
        let e = silent.confirm(7).unwrap_err();
        assert!(e.reason.contains("no word within"), "{e}");
        assert!(t.elapsed() >= Duration::from_millis(200));
        let e = end(&[b'x'; 100], true).0.confirm(7).unwrap_err();
        assert!(e.reason.contains("more than 64"), "{e}");
    }
}
