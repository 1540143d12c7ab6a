//! Fuzz the connection state machine with arbitrary input in every role and side.
#![no_main]

use iocomd::proto::conn::{ConnConfig, Connection, LocalIdentity, Role, Side};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 {
        Role::Device
    } else {
        Role::Controller
    };
    let side = if mode & 2 == 0 {
        Side::Client
    } else {
        Side::Server
    };
    let ident = LocalIdentity {
        device_name: "gina".into(),
        device_nr: 3,
        network_name: "cafenet".into(),
        unique_id: None,
        password: "pw".into(),
    };
    let mut cfg = ConnConfig::new(role, side, ident);
    cfg.secure = mode & 4 != 0;
    let t = Instant::now();
    let mut c = Connection::new(cfg, t);
    let mut out = Vec::new();
    let chunk = usize::from(mode >> 3).max(1);
    for (i, part) in rest.chunks(chunk).enumerate() {
        let now = t + Duration::from_millis(i as u64 * 300);
        let _ = c.handle_input(part, now);
        c.handle_timeout(now);
        out.clear();
        c.poll_transmit(now, &mut out);
        while c.poll_event().is_some() {}
    }
});
