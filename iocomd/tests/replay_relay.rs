//! Replays the traces made through iocafe's `frank` server (i, j) and trace b's automatically
//! numbered gina into our controller core:
//! - i: our controller, given frank's frames to the reference controller, finds
//!   `gina9001.cafenet` among the 11 devices' blocks frank advertises, binds only gina's, and
//!   writes test4k.bin through frank with exactly the reference controller's `conf_imp` frames;
//! - j: the blocks of two ginas (automatic 9001 and fixed 7) next to frank's and the accounts
//!   devices are listed; `gina` alone is ambiguous, `gina7.cafenet` is not;
//! - b: a stock gina sends number 0 + unique id; we call it `gina9001` and answer its blocks
//!   with 8999 as the reference controller did.
//!
//! Frames go in as connection events (the connection machine is covered by the other trace
//! tests). Frank addresses its data frames with the reference controller's block ids; they are
//! translated to ours through the two controllers' info replies (same device, block and
//! network), and frames for blocks we did not bind are dropped, as frank would not send them.

mod trace_support;

use iocomd::proto::auth::AuthFrame;
use iocomd::proto::compress::decode_into;
use iocomd::proto::conn::{ConnEvent, PeerIdentity};
use iocomd::proto::crc::crc16;
use iocomd::proto::endpoint::ControllerEndpoint;
use iocomd::proto::frame::FrameFlags;
use iocomd::proto::mblk::DataFrame;
use iocomd::proto::node::{DeviceId, DevicePath};
use iocomd::proto::stream::controller::Progress;
use iocomd::proto::stream::{ChunkSink, ChunkSource, LocalError, SourceRead};
use iocomd::proto::sysframe::{MblkInfo, SystemFrame};
use std::time::{Duration, Instant};
use trace_support::{TimedFrame, file, frames};

const CONN: u64 = 1;

struct Source(Vec<u8>, usize);

impl ChunkSource for Source {
    fn open(&mut self, _select: i64) -> Result<(), u8> {
        Ok(())
    }
    fn read(&mut self, buf: &mut [u8]) -> Result<SourceRead, u8> {
        let rest = &self.0[self.1..];
        if rest.is_empty() {
            return Ok(SourceRead::End);
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.1 += n;
        Ok(SourceRead::Bytes(n))
    }
}

struct NoSink;

impl ChunkSink for NoSink {
    fn open(&mut self, _select: i64) -> Result<(), LocalError> {
        Err(186.into())
    }
    fn write(&mut self, _chunk: &[u8]) -> Result<(), LocalError> {
        Err(186.into())
    }
    fn close(&mut self, _ok: bool) {}
}

fn authenticated(a: &AuthFrame, our_network: &str) -> ConnEvent {
    ConnEvent::Authenticated {
        peer: PeerIdentity {
            user_name: a.user_name.clone(),
            device_nr: a.device_nr,
            unique_id: a.unique_id,
            network_name: a.network_name.clone(),
            password_hash: String::new(),
            flags: a.flags,
            frame_size: a.frame_size,
            assigned_nr: None,
        },
        framing: iocomd::proto::frame::Framing::Socket,
        send_frame_size: a.frame_size.min(1392),
        network_name: our_network.to_owned(),
    }
}

/// Same device and block, as the two controllers' info frames name them (8999 in a reply
/// means the automatically numbered peer, who announced 9000).
fn same_block(peer: &MblkInfo, reply: &MblkInfo) -> bool {
    let nr = |n| if n == 8999 { 9000 } else { n };
    peer.mblk_name == reply.mblk_name
        && peer.device_name == reply.device_name
        && peer.network_name == reply.network_name
        && nr(peer.device_nr) == nr(reply.device_nr)
}

/// Feeds one trace's peer→controller frames into `ep`: returns our data frames (sent at the
/// reference controller's send moments) and the reference controller's info replies.
struct Replay {
    ep: ControllerEndpoint,
    peer_infos: Vec<MblkInfo>,
    ref_replies: Vec<MblkInfo>,
    our_replies: Vec<MblkInfo>,
    sent: Vec<DataFrame>,
    dropped: usize,
}

impl Replay {
    fn new(ep: ControllerEndpoint) -> Self {
        Self {
            ep,
            peer_infos: Vec::new(),
            ref_replies: Vec::new(),
            our_replies: Vec::new(),
            sent: Vec::new(),
            dropped: 0,
        }
    }

    /// Our id of the block the reference controller calls `ref_id`.
    fn our_id(&self, ref_id: u32) -> Option<u32> {
        let reply = self.ref_replies.iter().find(|r| r.mblk_id == ref_id)?;
        let info = self.peer_infos.iter().find(|p| same_block(p, reply))?;
        let (key, _) = self.ep.node().info_key(CONN, info);
        let ix = self.ep.node().find(&info.mblk_name, Some(&key))?;
        Some(self.ep.node().block(ix)?.id())
    }

    fn step(&mut self, f: &TimedFrame, network: &str) {
        let fr = &f.frame;
        if f.dir == "C2D" {
            match SystemFrame::from_frame(fr) {
                Ok(SystemFrame::MblkInfo(i)) => self.ref_replies.push(i),
                _ if fr.flags.system() => {}
                _ => {
                    // The reference controller sent data here: so do we.
                    self.sent.extend(self.ep.transmit(CONN, 1392, usize::MAX));
                }
            }
            return;
        }
        let ev = if fr.flags.system() {
            match SystemFrame::from_frame(fr).unwrap() {
                SystemFrame::Auth(a) => authenticated(&a, network),
                SystemFrame::MblkInfo(i) => {
                    self.peer_infos.push(i.clone());
                    ConnEvent::MblkInfo(i)
                }
                other => panic!("unexpected {other:?}"),
            }
        } else {
            let Some(id) = self.our_id(fr.mblk_id) else {
                self.dropped += 1;
                return;
            };
            ConnEvent::Data {
                mblk_id: id,
                addr: fr.addr,
                flags: FrameFlags::from_bits(fr.flags.bits()),
                payload: fr.payload.clone(),
            }
        };
        let out = self.ep.handle(CONN, ev).unwrap();
        self.our_replies.extend(out.infos);
    }
}

fn path(s: &str) -> DevicePath {
    DevicePath::parse(s).unwrap()
}

fn names(ds: &[DeviceId]) -> Vec<String> {
    ds.iter()
        .map(|d| format!("{}{}.{}", d.name, d.nr, d.network))
        .collect()
}

#[test]
fn trace_i_our_controller_writes_through_frank_like_the_reference() {
    let name = "i-frank-relay-write-4k.ctl-frank.txt";
    let data = file("test4k.bin");
    let mut r = Replay::new(ControllerEndpoint::for_path(path("gina9001.cafenet")));
    let mut source = Source(data.clone(), 0);
    let base = Instant::now();
    let (mut started, mut result) = (false, None);
    for f in frames(name) {
        r.step(&f, "cafenet");
        let now = base + Duration::from_secs_f64(f.t);
        if !started && r.ep.ready() {
            r.ep.start_upload(1).unwrap();
            started = true;
        }
        if started && result.is_none() {
            let p = r.ep.poll_transfer(now, &mut source, &mut NoSink).unwrap();
            if p != Progress::Running {
                result = Some(p);
            }
        }
    }
    assert_eq!(
        result,
        Some(Progress::Completed {
            bytes: 4096,
            crc: crc16(&data),
            device_err: Some(6)
        })
    );
    // Frank advertised frank's own, the accounts devices' and gina's blocks; we bound gina's
    // 7 only, and answered each of them once.
    let adv = names(r.ep.advertised());
    assert!(adv.contains(&"gina9001.cafenet".to_owned()), "{adv:?}");
    assert!(adv.iter().any(|a| a.starts_with("frank")), "{adv:?}");
    assert!(adv.contains(&"accounts2.asteroidnet".to_owned()), "{adv:?}");
    assert_eq!(r.our_replies.len(), 7, "{:?}", r.our_replies);
    assert!(
        r.our_replies
            .iter()
            .all(|i| i.device_name == "gina" && i.device_nr == 9001 && i.network_name == "cafenet")
    );
    assert!(r.dropped > 0, "frames for blocks we did not bind were seen");
    // Our conf_imp frames to frank's copy of gina's conf_imp equal the reference controller's.
    let imp = r
        .peer_infos
        .iter()
        .find(|i| i.device_name == "gina" && i.mblk_name == "conf_imp")
        .unwrap()
        .mblk_id;
    let ours: Vec<&DataFrame> = r.sent.iter().filter(|f| f.mblk_id == imp).collect();
    let theirs: Vec<DataFrame> = frames(name)
        .into_iter()
        .filter(|f| f.dir == "C2D" && !f.frame.flags.system() && f.frame.mblk_id == imp)
        .map(|f| DataFrame {
            mblk_id: f.frame.mblk_id,
            addr: f.frame.addr,
            flags: f.frame.flags.bits(),
            payload: f.frame.payload,
        })
        .collect();
    // The reference controller asked for bidirectional blocks (auth flag 0x80), so its
    // frames end each snapshot with a trailer past the block; we do not, and frank would send
    // us plain frames. Compare what frank's copy of conf_imp goes through: the same states.
    let size = 279;
    let (ours, theirs) = (snapshots(&ours, size), snapshots(&theirs, size));
    assert!(theirs.len() > 4096 / 256, "{}", theirs.len());
    assert_eq!(ours.len(), theirs.len());
    // Same commands, select, CRC and heads, state by state (bytes 0..12: tod_cmd, tod_select,
    // tod_cs, tod_head with their state bytes), and the same data between the heads.
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a[..12], b[..12], "conf_imp state {i}");
    }
    assert_eq!(ring_data(&ours), data);
    assert_eq!(ring_data(&theirs), data);
}

/// The bytes a tod ring (conf_imp: tod_head at 7, tod_buf at 12, 257 bytes) carried, read
/// between consecutive heads.
fn ring_data(states: &[Vec<u8>]) -> Vec<u8> {
    let n = 257;
    let head = |s: &[u8]| i32::from_le_bytes(s[8..12].try_into().unwrap()) as usize;
    let mut out = Vec::new();
    let mut prev = 0;
    for s in states {
        let h = head(s);
        let mut p = prev;
        while p != h {
            out.push(s[13 + p]);
            p = (p + 1) % n;
        }
        prev = h;
    }
    out
}

/// The states of a `size`-byte block a receiver goes through, one per completed snapshot.
fn snapshots(frames: &[impl std::borrow::Borrow<DataFrame>], size: usize) -> Vec<Vec<u8>> {
    let mut mirror = vec![0u8; size];
    let mut out = Vec::new();
    for f in frames {
        let f = f.borrow();
        if let Some(dst) = mirror.get_mut(f.addr as usize..).filter(|d| !d.is_empty()) {
            decode_into(&f.payload, f.flags & 3, dst).unwrap();
        }
        if f.flags & 0x10 != 0 {
            out.push(mirror.clone());
        }
    }
    out
}

#[test]
fn trace_j_two_ginas_behind_frank_are_listed_and_told_apart() {
    let name = "j-frank-two-devices-idle.txt";
    let trace = frames(name);
    let mut all = Replay::new(ControllerEndpoint::all());
    let mut alone = Replay::new(ControllerEndpoint::for_path(path("gina")));
    let mut seven = Replay::new(ControllerEndpoint::for_path(path("gina7.cafenet")));
    for f in &trace {
        all.step(f, "cafenet");
        alone.step(f, "cafenet");
        seven.step(f, "cafenet");
    }
    let adv = names(all.ep.advertised());
    assert_eq!(adv.len(), 5, "{adv:?}");
    for want in [
        "accounts1.cafenet",
        "accounts2.asteroidnet",
        "gina9001.cafenet",
        "gina7.cafenet",
    ] {
        assert!(adv.contains(&want.to_owned()), "{want} in {adv:?}");
    }
    // Frank's own number is automatic: we gave it ours (it sent its unique id).
    let frank = all
        .ep
        .advertised()
        .iter()
        .find(|d| d.name == "frank")
        .unwrap();
    assert!(frank.nr > 9000, "{frank:?}");
    // 27 blocks, all bound; both ginas' info blocks arrived and decode.
    assert_eq!(all.our_replies.len(), 27);
    for d in all.ep.advertised().iter().filter(|d| d.name == "gina") {
        let info = all.ep.info_of(d).expect("gina info");
        assert!(info.signal("conf_imp", "tod_buf").is_some());
    }
    // `gina` alone matches both; `gina7.cafenet` one, whose 7 blocks are the only ones bound.
    assert_eq!(alone.ep.candidates().len(), 2);
    assert_eq!(seven.ep.candidates().len(), 1);
    assert_eq!(seven.our_replies.len(), 7);
    assert!(seven.our_replies.iter().all(|i| i.device_nr == 7));
    assert!(
        seven.ep.ready(),
        "gina7's conf blocks are bound and connected"
    );
}

#[test]
fn trace_b_stock_gina_is_gina9001_and_answered_with_8999() {
    let name = "b-listen-program-write-4k.txt";
    let trace = frames(name);
    let mut r = Replay::new(ControllerEndpoint::for_path(path("gina9001.iocafenet")));
    for f in &trace {
        r.step(f, "iocafenet");
    }
    assert_eq!(names(r.ep.advertised()), ["gina9001.iocafenet"]);
    assert!(r.ep.ready());
    // Our replies name the blocks as the reference controller's did: 8999, same names.
    assert_eq!(r.our_replies.len(), 7);
    assert_eq!(r.ref_replies.len(), 7);
    r.our_replies.sort_by(|a, b| a.mblk_name.cmp(&b.mblk_name));
    r.ref_replies.sort_by(|a, b| a.mblk_name.cmp(&b.mblk_name));
    for (ours, theirs) in r.our_replies.iter().zip(&r.ref_replies) {
        assert_eq!(
            (
                &ours.device_name,
                ours.device_nr,
                &ours.network_name,
                &ours.mblk_name
            ),
            (
                &theirs.device_name,
                theirs.device_nr,
                &theirs.network_name,
                &theirs.mblk_name
            )
        );
        assert_eq!(ours.device_nr, 8999);
    }
    // The same device under the number 0 or 9000 it sent is not addressable.
    let r0 = Replay::new(ControllerEndpoint::for_path(path("gina9002.iocafenet")));
    let mut r0 = r0;
    for f in &trace {
        r0.step(f, "iocafenet");
    }
    assert!(r0.ep.device().is_none() && !r0.ep.ready());
}
