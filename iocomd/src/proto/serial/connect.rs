//! The serial connect sequence (transport spec §1.7), sans-I/O: single control characters that
//! synchronise both ends of a UART before frames flow.
//!
//! ```text
//!  client (device, like gina)                server (controller, like the Python EndPoint)
//!                                 ◀── F9     new: DISCONNECT, then AwaitConnect
//!  new: FD ──▶                                AwaitConnect   ── FD ──▶ send FC, AwaitConfirm
//!  AwaitConnectReply ── FC ──▶ send FB        AwaitConfirm   ── FB ──▶ send FA, Connected
//!  AwaitConfirmReply ── FA ──▶ Connected                     ── other ─▶ AwaitConnect
//!  no FC for 300 ms, or no FA for 1 s ──▶ send FD again (the owner clears its input first,
//!                                            as C's state 1)
//! ```
//!
//! Bytes are taken one at a time, whatever the read chunks: the C code's "last byte of the read"
//! rules depend on how a UART driver happens to split the input, which no peer relies on. The
//! server has no timer (C: it waits forever); the client repeats `FD` every
//! [`CONNECT_PERIOD`]. Bytes after the completing `FB`/`FA` belong to the connection (the C
//! server writes `FA`, its first ACK and its authentication frame in one pass), so
//! [`SerialConnect::handle_input`] returns how many bytes it consumed.

use super::{CONFIRM, CONFIRM_REPLY, CONNECT, CONNECT_REPLY, DISCONNECT};
use crate::proto::conn::Side;
use std::time::{Duration, Instant};

/// The client repeats its connect request after this long without a reply
/// (`IOC_SERIAL_CONNECT_PERIOD_MS`).
pub const CONNECT_PERIOD: Duration = Duration::from_millis(300);

/// How long the client waits for `FA` after its `FB` before it starts over. The C client
/// waits [`CONNECT_PERIOD`] here too; a server answers `FB` at once, so the wait only matters
/// when the reply is late (a loaded controller, a slow radio link). Starting over then is
/// costly: the server is already connected, takes the new `FD` for a frame-number error and
/// both ends must resynchronise. Waiting longer changes no byte on the line.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(1);

/// Where the connect sequence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStep {
    /// Client: `FD` sent, waiting for `FC`.
    AwaitConnectReply,
    /// Client: `FB` sent, waiting for `FA`.
    AwaitConfirmReply,
    /// Server: `F9` sent (or a sequence broke off), waiting for `FD`.
    AwaitConnect,
    /// Server: `FC` sent, waiting for `FB`.
    AwaitConfirm,
    /// Both ends are connected; frames follow.
    Connected,
}

/// One run of the connect sequence on an open port.
#[derive(Debug, Clone)]
pub struct SerialConnect {
    side: Side,
    step: ConnectStep,
    since: Instant,
    out: Vec<u8>,
    restarts: u32,
}

impl SerialConnect {
    /// Starts the sequence at `now`: the client queues `FD`, the server `F9`.
    pub fn new(side: Side, now: Instant) -> Self {
        let (step, first) = match side {
            Side::Client => (ConnectStep::AwaitConnectReply, CONNECT),
            Side::Server => (ConnectStep::AwaitConnect, DISCONNECT),
        };
        Self {
            side,
            step,
            since: now,
            out: vec![first],
            restarts: 0,
        }
    }

    /// The current step.
    pub fn step(&self) -> ConnectStep {
        self.step
    }

    /// True once both ends are connected.
    pub fn is_connected(&self) -> bool {
        self.step == ConnectStep::Connected
    }

    /// How often the client has repeated its connect request.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Takes received bytes. Returns `Some(n)` when the sequence completed with the `n`-th
    /// byte: `data[n..]` is the start of the connection's byte stream. Once connected, every
    /// call returns `Some(0)`.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Option<usize> {
        if self.is_connected() {
            return Some(0);
        }
        for (i, &b) in data.iter().enumerate() {
            if self.take(b, now) {
                return Some(i + 1);
            }
        }
        None
    }

    /// One byte; true when it completed the sequence.
    fn take(&mut self, b: u8, now: Instant) -> bool {
        match (self.step, b) {
            (ConnectStep::AwaitConnectReply, CONNECT_REPLY) => {
                self.out.push(CONFIRM);
                self.step = ConnectStep::AwaitConfirmReply;
                self.since = now;
            }
            (ConnectStep::AwaitConfirmReply, CONFIRM_REPLY) => {
                self.step = ConnectStep::Connected;
            }
            // The client ignores anything else and waits for its timer.
            (ConnectStep::AwaitConnectReply | ConnectStep::AwaitConfirmReply, _) => {}
            (ConnectStep::AwaitConnect | ConnectStep::AwaitConfirm, CONNECT) => {
                self.out.push(CONNECT_REPLY);
                self.step = ConnectStep::AwaitConfirm;
            }
            (ConnectStep::AwaitConfirm, CONFIRM) => {
                self.out.push(CONFIRM_REPLY);
                self.step = ConnectStep::Connected;
            }
            (ConnectStep::AwaitConfirm, _) => self.step = ConnectStep::AwaitConnect,
            (ConnectStep::AwaitConnect, _) => {}
            (ConnectStep::Connected, _) => return true,
        }
        self.step == ConnectStep::Connected
    }

    /// Appends the control characters to write; true if any.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        let any = !self.out.is_empty();
        out.append(&mut self.out);
        any
    }

    /// When the client starts over without a reply ([`CONNECT_PERIOD`] for `FC`,
    /// [`CONFIRM_WAIT`] for `FA`); `None` for the server and once connected.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.side, self.step) {
            (Side::Client, ConnectStep::AwaitConnectReply) => Some(self.since + CONNECT_PERIOD),
            (Side::Client, ConnectStep::AwaitConfirmReply) => Some(self.since + CONFIRM_WAIT),
            _ => None,
        }
    }

    /// Applies the connect period. Returns true when the client restarted the sequence (queued
    /// `FD` again); its owner should then discard unread input, as the C client does.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.poll_timeout() {
            Some(t) if now >= t => {
                self.step = ConnectStep::AwaitConnectReply;
                self.since = now;
                self.out.clear();
                self.out.push(CONNECT);
                self.restarts = self.restarts.saturating_add(1);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(c: &mut SerialConnect) -> Vec<u8> {
        let mut v = Vec::new();
        c.poll_transmit(&mut v);
        v
    }

    #[test]
    fn server_sequence_of_trace_s1() {
        let t0 = Instant::now();
        let mut s = SerialConnect::new(Side::Server, t0);
        assert_eq!(out(&mut s), [0xF9]);
        assert_eq!(s.step(), ConnectStep::AwaitConnect);
        assert_eq!(s.poll_timeout(), None, "the server has no timer");
        assert_eq!(s.handle_input(&[0xFD], t0), None);
        assert_eq!(out(&mut s), [0xFC]);
        assert_eq!(s.step(), ConnectStep::AwaitConfirm);
        assert_eq!(s.handle_input(&[0xFB, 0xFF, 0x1D], t0), Some(1));
        assert_eq!(out(&mut s), [0xFA]);
        assert!(s.is_connected());
        assert_eq!(s.handle_input(&[0xFB], t0), Some(0));
    }

    #[test]
    fn client_sequence_of_trace_s1() {
        let t0 = Instant::now();
        let mut c = SerialConnect::new(Side::Client, t0);
        assert_eq!(out(&mut c), [0xFD]);
        // A stale F9 from the server's start is ignored.
        assert_eq!(c.handle_input(&[0xF9], t0), None);
        assert_eq!(c.handle_input(&[0xFC], t0), None);
        assert_eq!(out(&mut c), [0xFB]);
        assert_eq!(c.step(), ConnectStep::AwaitConfirmReply);
        // FA, the server's first ACK and its auth frame arrive in one chunk.
        assert_eq!(c.handle_input(&[0xFA, 0xFF, 0x00, 0x00, 0x00], t0), Some(1));
        assert!(c.is_connected());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn client_repeats_connect_after_the_period() {
        let t0 = Instant::now();
        let mut c = SerialConnect::new(Side::Client, t0);
        out(&mut c);
        assert_eq!(c.poll_timeout(), Some(t0 + CONNECT_PERIOD));
        assert!(!c.handle_timeout(t0 + CONNECT_PERIOD - Duration::from_millis(1)));
        assert!(c.handle_timeout(t0 + CONNECT_PERIOD));
        assert_eq!(out(&mut c), [0xFD]);
        assert_eq!(c.restarts(), 1);
        // After FC the timer restarts with the longer wait for FA; a wrong byte while
        // waiting is ignored and the wait runs out.
        let t1 = t0 + CONNECT_PERIOD;
        c.handle_input(&[0xFC], t1);
        out(&mut c);
        assert_eq!(c.handle_input(&[0x42], t1), None);
        assert_eq!(c.poll_timeout(), Some(t1 + CONFIRM_WAIT));
        assert!(!c.handle_timeout(t1 + CONNECT_PERIOD));
        assert!(out(&mut c).is_empty(), "no FD while FA may still come");
        assert!(c.handle_timeout(t1 + CONFIRM_WAIT));
        assert_eq!(c.step(), ConnectStep::AwaitConnectReply);
        assert_eq!(out(&mut c), [0xFD]);
    }

    #[test]
    fn a_late_confirm_reply_still_connects_the_client() {
        // The server's FA comes 600 ms after FB (a loaded controller). The C client would have
        // started over at 300 ms and sent FD to a server that is already connected.
        let t0 = Instant::now();
        let mut c = SerialConnect::new(Side::Client, t0);
        out(&mut c);
        c.handle_input(&[0xFC], t0);
        assert_eq!(out(&mut c), [0xFB]);
        let late = t0 + Duration::from_millis(600);
        assert!(!c.handle_timeout(late));
        assert!(out(&mut c).is_empty());
        assert_eq!(c.handle_input(&[0xFA, 0xFF], late), Some(1));
        assert!(c.is_connected());
        assert_eq!(c.restarts(), 0);
    }

    #[test]
    fn server_falls_back_on_a_wrong_confirm_and_accepts_a_repeated_connect() {
        let t0 = Instant::now();
        let mut s = SerialConnect::new(Side::Server, t0);
        out(&mut s);
        // Garbage before the connect request is ignored.
        assert_eq!(s.handle_input(&[0x00, 0x13, 0xFD], t0), None);
        assert_eq!(out(&mut s), [0xFC]);
        assert_eq!(s.handle_input(&[0x13], t0), None);
        assert_eq!(s.step(), ConnectStep::AwaitConnect);
        assert!(out(&mut s).is_empty());
        // The client's timer sent FD again; the server answers again, even while it waited
        // for the confirm.
        s.handle_input(&[0xFD], t0);
        s.handle_input(&[0xFD], t0);
        assert_eq!(out(&mut s), [0xFC, 0xFC]);
        assert_eq!(s.handle_input(&[0xFB], t0), Some(1));
        assert_eq!(out(&mut s), [0xFA]);
    }

    #[test]
    fn both_ends_connect_through_each_other() {
        let t0 = Instant::now();
        let mut c = SerialConnect::new(Side::Client, t0);
        let mut s = SerialConnect::new(Side::Server, t0);
        // The server's F9 reaches the client, the client's first FD is lost (the C server
        // clears its input after F9), the client repeats it.
        let f9 = out(&mut s);
        let _lost = out(&mut c);
        assert_eq!(c.handle_input(&f9, t0), None);
        let t1 = t0 + CONNECT_PERIOD;
        assert!(c.handle_timeout(t1));
        for _ in 0..3 {
            let to_s = out(&mut c);
            s.handle_input(&to_s, t1);
            let to_c = out(&mut s);
            c.handle_input(&to_c, t1);
        }
        assert!(c.is_connected() && s.is_connected());
    }
}
