//! Test helpers: in-memory sinks/sources and a device/controller pair of conf blocks wired
//! back to back through the real sync code.

use super::{ChunkSink, ChunkSource, Direction, SourceRead, StreamSignals};
use crate::proto::info::{conf_exp_block, conf_imp_block};
use crate::proto::mblk::{DataFrame, MBLK_DOWN, MBLK_UP, Mblk};
use crate::proto::pjson::Json;
use crate::proto::signals::layout_from_json;

#[derive(Debug, Default)]
pub struct VecSink {
    pub data: Vec<u8>,
    pub opened: Vec<i64>,
    pub closed: Vec<bool>,
    pub refuse: Option<u8>,
    /// Fail a write once this many bytes have been taken.
    pub fail_after: Option<(usize, u8)>,
    /// Take at most this many bytes per poll (a slow disk).
    pub room_per_poll: Option<usize>,
    /// Bytes taken since the last [`VecSink::room`] call.
    pub taken: usize,
}

impl ChunkSink for VecSink {
    fn open(&mut self, select: i64) -> Result<(), super::LocalError> {
        self.opened.push(select);
        self.data.clear();
        self.refuse.map_or(Ok(()), |c| Err(c.into()))
    }
    fn write(&mut self, chunk: &[u8]) -> Result<(), super::LocalError> {
        if let Some((limit, code)) = self.fail_after
            && self.data.len() + chunk.len() > limit
        {
            return Err(code.into());
        }
        self.data.extend_from_slice(chunk);
        self.taken += chunk.len();
        Ok(())
    }
    fn room(&mut self) -> usize {
        self.taken = 0;
        self.room_per_poll.unwrap_or(usize::MAX)
    }
    fn close(&mut self, ok: bool) {
        self.closed.push(ok);
    }
}

#[derive(Debug, Default)]
pub struct VecSource {
    pub data: Vec<u8>,
    pub pos: usize,
    pub refuse: Option<u8>,
    /// Return `Pending` instead of data.
    pub stall: bool,
    pub opened: Vec<i64>,
}

impl VecSource {
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            data,
            ..Self::default()
        }
    }
}

impl ChunkSource for VecSource {
    fn open(&mut self, select: i64) -> Result<(), u8> {
        self.opened.push(select);
        self.refuse.map_or(Ok(()), Err)
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        if self.stall {
            return Ok(SourceRead::Pending);
        }
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return Ok(SourceRead::End);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(SourceRead::Bytes(n))
    }
}

/// Both ends' copies of conf_exp and conf_imp, bound to each other.
#[derive(Debug)]
pub struct Pair {
    pub dev_exp: Mblk,
    pub dev_imp: Mblk,
    pub ctl_exp: Mblk,
    pub ctl_imp: Mblk,
    pub tod: StreamSignals,
    pub frd: StreamSignals,
    /// Every frame sent, `true` when from the device.
    pub log: Vec<(bool, DataFrame)>,
}

const DEV: u64 = 1;
const CTL: u64 = 2;

impl Pair {
    pub fn new(tod_ring: usize, frd_ring: usize) -> Self {
        let doc = Json::Object(vec![(
            "mblk".into(),
            Json::Array(vec![conf_exp_block(frd_ring), conf_imp_block(tod_ring)]),
        )]);
        let l = layout_from_json(&doc.to_value()).unwrap();
        let (exp_l, imp_l) = (&l[0], &l[1]);
        let mut dev_exp = Mblk::new("conf_exp", 10, MBLK_UP, exp_l.size);
        let mut dev_imp = Mblk::new("conf_imp", 11, MBLK_DOWN, imp_l.size);
        let mut ctl_exp = Mblk::new("conf_exp", 20, MBLK_UP, exp_l.size);
        let mut ctl_imp = Mblk::new("conf_imp", 21, MBLK_DOWN, imp_l.size);
        dev_exp.add_source(DEV, 20);
        ctl_exp.add_target(CTL, 10);
        ctl_imp.add_source(CTL, 11);
        dev_imp.add_target(DEV, 21);
        Self {
            dev_exp,
            dev_imp,
            ctl_exp,
            ctl_imp,
            tod: StreamSignals::resolve(Direction::ToDevice, exp_l, imp_l).unwrap(),
            frd: StreamSignals::resolve(Direction::FromDevice, exp_l, imp_l).unwrap(),
            log: Vec::new(),
        }
    }

    /// Sends every pending change both ways (device first, then controller).
    pub fn sync(&mut self) {
        for f in Self::pump(&mut self.dev_exp, DEV, &mut self.ctl_exp, CTL) {
            self.log.push((true, f));
        }
        for f in Self::pump(&mut self.ctl_imp, CTL, &mut self.dev_imp, DEV) {
            self.log.push((false, f));
        }
    }

    fn pump(from: &mut Mblk, fc: u64, to: &mut Mblk, tc: u64) -> Vec<DataFrame> {
        from.synchronize();
        let mut sent = Vec::new();
        while let Some(f) = from.next_frame(fc, 1392) {
            to.apply_frame(tc, f.addr as usize, f.flags, &f.payload)
                .unwrap();
            sent.push(f);
        }
        sent
    }

    /// The controller loses the device: its conf_exp has no sender any more.
    pub fn drop_controller_side(&mut self) {
        self.ctl_exp.remove_connection(CTL);
        self.dev_imp.remove_connection(DEV);
    }
}
