//! The stream sink of the core loop: opens a push (refusing it when not allowed or busy) and
//! writes received chunks into the spool, noting why it refused or failed.

use super::update::Update;
use crate::config::Settings;
use crate::proto::stream::{ChunkSink, ChunkSource, SourceRead};
use crate::spool::{Spool, SpoolError};
use crate::status::{DaemonCode, tod_err};
use std::time::Instant;

/// What the stream sink noted while it was called from inside the reader.
#[derive(Debug)]
pub(super) enum Note {
    Refused(DaemonCode, String),
    WriteFailed(DaemonCode, String),
}

pub(super) struct PushSink<'a> {
    pub(super) conn: u64,
    pub(super) may_push: bool,
    pub(super) update: &'a mut Update,
    pub(super) settings: &'a Settings,
    pub(super) pushes: &'a mut u64,
    pub(super) note: Option<Note>,
    pub(super) now: Instant,
}

impl ChunkSink for PushSink<'_> {
    fn open(&mut self, select: i64) -> Result<(), u8> {
        if select != 1 {
            self.note = Some(Note::Refused(
                DaemonCode::BadSelect,
                format!("stream select {select} is not supported (1 = program)"),
            ));
            return Err(tod_err::REJECTED);
        }
        if !self.may_push {
            self.note = Some(Note::Refused(
                DaemonCode::NotAuthorized,
                "pushes need an authenticated TLS connection".into(),
            ));
            return Err(tod_err::NO_ACCESS_RIGHT);
        }
        if !matches!(self.update, Update::Idle) {
            self.note = Some(Note::Refused(
                DaemonCode::Busy,
                "another package is being received or installed".into(),
            ));
            return Err(tod_err::BUSY);
        }
        let sp = &self.settings.spool;
        let writer = match Spool::begin(&sp.dir, "push", sp.max_package_size, sp.min_free_space) {
            Ok(w) => w,
            Err(e) => {
                let code = match &e {
                    SpoolError::NoSpace { .. } => DaemonCode::NoSpace,
                    _ => DaemonCode::SpoolError,
                };
                self.note = Some(Note::Refused(code, e.to_string()));
                return Err(tod_err::WRITING_FILE_FAILED);
            }
        };
        *self.pushes += 1;
        match self
            .update
            .start(self.conn, Box::new(writer), *self.pushes, self.now)
        {
            Ok(()) => Ok(()),
            Err((_, w)) => {
                w.abort();
                Err(tod_err::BUSY)
            }
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), u8> {
        let Update::Receiving { conn, writer, .. } = &mut *self.update else {
            return Err(tod_err::WRITING_FILE_FAILED);
        };
        if *conn != self.conn {
            return Err(tod_err::WRITING_FILE_FAILED);
        }
        writer.write(chunk).map_err(|e| {
            let (code, t) = match &e {
                SpoolError::TooLarge { .. } => (DaemonCode::TooLarge, tod_err::TOO_LARGE),
                SpoolError::NoSpace { .. } => (DaemonCode::NoSpace, tod_err::WRITING_FILE_FAILED),
                _ => (DaemonCode::SpoolError, tod_err::WRITING_FILE_FAILED),
            };
            self.note = Some(Note::WriteFailed(code, e.to_string()));
            t
        })
    }

    fn close(&mut self, _ok: bool) {
        // The reader's event (Completed/Failed) decides what happens to the spool file.
    }
}

pub(super) struct NoSource;

impl ChunkSource for NoSource {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Err(tod_err::REJECTED)
    }
    fn read(&mut self, _buf: &mut [u8]) -> Result<SourceRead, u8> {
        Ok(SourceRead::End)
    }
}
