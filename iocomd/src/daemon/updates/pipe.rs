//! A spool file written by a thread of its own, so that no blocking file I/O (writes,
//! SHA-256, free-space checks, the final fsync) runs on the core task.
//!
//! The core task hands chunks to the thread through a queue of at most [`QUEUE_BYTES`]; the
//! stream reader asks for [`SpoolPipe::room`] first and leaves the rest in the controller's
//! ring (the controller then waits: bounded memory). The size limit is checked here, at once;
//! what only the file can tell (no space, an I/O error) comes back as
//! [`CoreEvent::SpoolFailed`] with the real [`SpoolError`], and the end of the file as
//! [`CoreEvent::Spooled`]. When the queue had been full and drained, the thread sends
//! [`CoreEvent::SpoolReady`] so the stream is polled again. Dropping the pipe without
//! finishing deletes the partial file at once (the thread's writes then go to an unlinked
//! file, which it closes).
//!
//! The same pipe can feed the install helper instead of a file ([`SpoolPipe::start_stream`],
//! [`super::stream`]): the thread then writes the chunks to the helper's pipe, and the end of
//! the transfer comes back as [`CoreEvent::Streamed`].

use super::stream::HelperStream;
use crate::daemon::CoreEvent;
use crate::spool::{SpoolError, SpoolWriter};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// Bytes that may wait in memory for the disk.
pub(crate) const QUEUE_BYTES: usize = 1 << 20;
/// Written chunks' buffers kept for the next chunks (each at most [`SPARE_MAX`] bytes of
/// capacity): a fresh buffer per chunk, allocated on the core task and freed on the
/// writing thread, made the allocator return and refetch the heap top each time (a syscall
/// and page faults per chunk).
const SPARES: usize = 4;
/// Capacity above which a written chunk's buffer is freed rather than kept.
const SPARE_MAX: usize = 256 << 10;

enum Msg {
    Data(Vec<u8>),
    Finish(u16),
}

#[derive(Debug, Default)]
struct Shared {
    queued: AtomicUsize,
    waiting: AtomicBool,
    /// The helper's stream failed: no more room (the helper's answer ends the transfer).
    closed: AtomicBool,
    /// Buffers of written chunks, for reuse (at most [`SPARES`]).
    spares: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Shared {
    /// A buffer holding a copy of `chunk` (a spare one when there is one).
    fn buffer(&self, chunk: &[u8]) -> Vec<u8> {
        let spare = self.spares.lock().ok().and_then(|mut s| s.pop());
        let mut buf = spare.unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(chunk);
        buf
    }

    /// A chunk of update `push` left the queue: its room is back (the core is told when it
    /// waited for it, unless the helper's stream closed) and its buffer kept for reuse.
    fn written(&self, data: Vec<u8>, push: u64, events: &mpsc::Sender<CoreEvent>) {
        self.queued.fetch_sub(data.len(), Ordering::AcqRel);
        self.recycle(data);
        if !self.closed.load(Ordering::Acquire) && self.waiting.swap(false, Ordering::AcqRel) {
            let _ = events.blocking_send(CoreEvent::SpoolReady { push });
        }
    }

    /// Keeps a written chunk's buffer for reuse, if there is room and it is not too big.
    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() <= SPARE_MAX
            && let Ok(mut s) = self.spares.lock()
            && s.len() < SPARES
        {
            s.push(buf);
        }
    }
}

/// The core task's end of a spool file being written.
#[derive(Debug)]
pub(crate) struct SpoolPipe {
    tx: Option<std::sync::mpsc::Sender<Msg>>,
    shared: Arc<Shared>,
    accepted: u64,
    max_size: u64,
    /// What errors name: the partial file, or the helper's stream.
    partial: PathBuf,
    /// A partial file to delete when dropped unfinished (`None` for the helper's stream).
    file: bool,
    finished: bool,
}

impl Drop for SpoolPipe {
    fn drop(&mut self) {
        if !self.finished {
            self.tx = None;
            if self.file {
                let _ = std::fs::remove_file(&self.partial);
            }
        }
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Data(d) => write!(f, "Data({} bytes)", d.len()),
            Msg::Finish(crc) => write!(f, "Finish({crc:#06x})"),
        }
    }
}

impl SpoolPipe {
    /// Starts the writing thread for update `push`; its events go to `events`.
    pub(crate) fn start(
        writer: SpoolWriter,
        push: u64,
        events: mpsc::Sender<CoreEvent>,
    ) -> Result<Self, SpoolError> {
        let partial = writer.partial_path().to_path_buf();
        let max_size = writer.max_size();
        Self::spawn(
            format!("spool-{push}"),
            partial,
            true,
            max_size,
            move |rx, shared| run(writer, push, rx, shared, &events),
        )
    }

    /// Starts the thread that feeds `stream` (the helper's pipe) for update `push`, taking at
    /// most `max_size` bytes; the end comes back as [`CoreEvent::Streamed`].
    pub(crate) fn start_stream(
        stream: HelperStream,
        max_size: u64,
        push: u64,
        events: mpsc::Sender<CoreEvent>,
    ) -> Result<Self, SpoolError> {
        let label = PathBuf::from(super::stream::LABEL);
        Self::spawn(
            format!("stream-{push}"),
            label,
            false,
            max_size,
            move |rx, shared| run_stream(stream, push, rx, shared, &events),
        )
    }

    /// Starts thread `name` running `body` on the queue; `partial` names the target in
    /// errors (and is deleted when dropped unfinished if `file`).
    fn spawn(
        name: String,
        partial: PathBuf,
        file: bool,
        max_size: u64,
        body: impl FnOnce(std::sync::mpsc::Receiver<Msg>, &Shared) + Send + 'static,
    ) -> Result<Self, SpoolError> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || body(rx, &thread_shared))
            .map_err(|source| SpoolError::Io {
                path: partial.clone(),
                source,
            })?;
        Ok(Self {
            tx: Some(tx),
            shared,
            accepted: 0,
            max_size,
            partial,
            file,
            finished: false,
        })
    }

    /// Bytes accepted so far.
    pub(crate) fn size(&self) -> u64 {
        self.accepted
    }

    /// How many bytes [`SpoolPipe::write`] takes now. At 0 the thread sends
    /// [`CoreEvent::SpoolReady`] once it has made room.
    pub(crate) fn room(&self) -> usize {
        let room = if self.shared.closed.load(Ordering::Acquire) {
            0
        } else {
            QUEUE_BYTES.saturating_sub(self.shared.queued.load(Ordering::Acquire))
        };
        if room == 0 {
            self.shared.waiting.store(true, Ordering::Release);
        }
        room
    }

    /// Queues `chunk` for the file; refuses it (and ends the file) past the size limit.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        let Some(tx) = &self.tx else {
            return Err(SpoolError::Aborted {
                path: self.partial.clone(),
            });
        };
        let total = self.accepted + chunk.len() as u64;
        if total > self.max_size {
            self.tx = None;
            return Err(SpoolError::TooLarge {
                path: self.partial.clone(),
                limit: self.max_size,
            });
        }
        self.shared.queued.fetch_add(chunk.len(), Ordering::AcqRel);
        if tx.send(Msg::Data(self.shared.buffer(chunk))).is_err() {
            // The thread failed and reported why (SpoolFailed); the file is gone.
            self.tx = None;
            return Err(SpoolError::Aborted {
                path: self.partial.clone(),
            });
        }
        self.accepted = total;
        Ok(())
    }

    /// Ends the file: the thread checks `crc`, fsyncs and renames, and sends
    /// [`CoreEvent::Spooled`].
    pub(crate) fn finish(mut self, crc: u16) {
        if let Some(tx) = self.tx.take() {
            self.finished = tx.send(Msg::Finish(crc)).is_ok();
        }
    }

    /// Drops the file (the thread deletes it).
    pub(crate) fn abort(self) {}
}

fn run(
    mut writer: SpoolWriter,
    push: u64,
    rx: std::sync::mpsc::Receiver<Msg>,
    shared: &Shared,
    events: &mpsc::Sender<CoreEvent>,
) {
    for msg in rx {
        match msg {
            Msg::Data(data) => {
                if let Err(error) = writer.write(&data) {
                    let _ = events.blocking_send(CoreEvent::SpoolFailed { push, error });
                    return;
                }
                shared.written(data, push, events);
            }
            Msg::Finish(crc) => {
                let result = writer.finish(crc);
                let _ = events.blocking_send(CoreEvent::Spooled { push, result });
                return;
            }
        }
    }
    // The pipe was dropped without finishing: the writer's drop deletes the partial file.
}

/// The thread feeding the helper's stream. A write that fails (the helper closed its end:
/// it refused or failed, and its `Install` answer says why) closes the stream and stops
/// taking data; the end is [`CoreEvent::Streamed`], sent before the helper is told the
/// transfer completed, so the core is Installing before `Install` can answer.
fn run_stream(
    mut stream: HelperStream,
    push: u64,
    rx: std::sync::mpsc::Receiver<Msg>,
    shared: &Shared,
    events: &mpsc::Sender<CoreEvent>,
) {
    for msg in rx {
        match msg {
            Msg::Data(data) => {
                if !shared.closed.load(Ordering::Acquire)
                    && let Err(e) = stream.write(&data)
                {
                    tracing::debug!(error = %e, push, "the helper's stream closed");
                    stream.close();
                    shared.closed.store(true, Ordering::Release);
                }
                shared.written(data, push, events);
            }
            Msg::Finish(crc) => {
                let result = stream.check(crc);
                let good = result.is_ok();
                let _ = events.blocking_send(CoreEvent::Streamed { push, result });
                if good {
                    stream.complete();
                }
                return;
            }
        }
    }
    // Dropped without finishing: the stream closes unconfirmed (the helper takes nothing).
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn chunks_arrive_in_order_and_the_file_is_finished_off_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let w = Spool::begin(d.path(), "p", 1 << 20, 0).unwrap();
        let mut pipe = SpoolPipe::start(w, 7, tx).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut crc = crate::proto::crc::Crc16::new();
        for c in data.chunks(3000) {
            assert!(pipe.room() > 0);
            pipe.write(c).unwrap();
            crc.update(c);
        }
        assert_eq!(pipe.size(), data.len() as u64);
        pipe.finish(crc.value());
        let CoreEvent::Spooled { push, result } = rx.recv().await.unwrap() else {
            panic!("expected Spooled");
        };
        let pkg = result.unwrap();
        assert_eq!((push, pkg.size), (7, data.len() as u64));
        assert_eq!(std::fs::read(&pkg.path).unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_size_limit_is_enforced_at_once_and_a_dropped_pipe_deletes_its_file() {
        let d = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(16);
        let w = Spool::begin(d.path(), "p", 10, 0).unwrap();
        let mut pipe = SpoolPipe::start(w, 1, tx.clone()).unwrap();
        pipe.write(b"0123456789").unwrap();
        let e = pipe.write(b"x").unwrap_err();
        assert!(matches!(e, SpoolError::TooLarge { limit: 10, .. }), "{e}");
        assert!(matches!(pipe.write(b"y"), Err(SpoolError::Aborted { .. })));
        drop(pipe);
        let w = Spool::begin(d.path(), "q", 10, 0).unwrap();
        let mut pipe = SpoolPipe::start(w, 2, tx).unwrap();
        pipe.write(b"abc").unwrap();
        pipe.abort();
        assert!(files(d.path()).is_empty(), "left {:?}", files(d.path()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crc_mismatch_comes_back_as_the_spool_result() {
        let d = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let w = Spool::begin(d.path(), "p", 100, 0).unwrap();
        let mut pipe = SpoolPipe::start(w, 3, tx).unwrap();
        pipe.write(b"hello").unwrap();
        pipe.finish(0);
        let CoreEvent::Spooled { result, .. } = rx.recv().await.unwrap() else {
            panic!("expected Spooled");
        };
        assert!(matches!(result, Err(SpoolError::CrcMismatch { .. })));
        assert!(files(d.path()).is_empty());
    }
}
