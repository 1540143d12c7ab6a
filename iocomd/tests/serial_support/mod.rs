//! A serial line made of two pseudo-terminal pairs and a relay between their master ends, as
//! the reference traces were captured: the device opens one slave (through a symlink, so that
//! the "adapter" can be unplugged and plugged in again under the same name), the controller
//! the other. The relay can pace bytes like a real UART (a pty ignores the baud rate), stall,
//! corrupt one byte, hold the client's confirm, inject garbage, and unplug (close both
//! pairs: the ports hang up).
#![allow(dead_code)]

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One pty pair; the relay keeps the slave open too, so the master never reads EIO while the
/// port's user is away.
struct Pty {
    master: OwnedFd,
    _slave: OwnedFd,
    path: PathBuf,
}

fn open_pty() -> Pty {
    let r = openpty(None, None).unwrap();
    let mut t = tcgetattr(&r.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&r.slave, SetArg::TCSANOW, &t).unwrap();
    fcntl(&r.master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let path = nix::unistd::ttyname(&r.slave).unwrap();
    Pty {
        master: r.master,
        _slave: r.slave,
        path,
    }
}

/// What the relay is told to do.
#[derive(Debug, Default)]
pub struct Control {
    /// Stop reading (bytes wait in the pty buffers).
    pub stalled: AtomicBool,
    /// Flip bit 0 of the byte with this 1-based index of the controller → device direction
    /// (0: never).
    pub corrupt_c2d: AtomicU64,
    /// Hold the first chunk of the device → controller direction that carries `FB` (the
    /// client's confirm) this many milliseconds before relaying it (0: never): to the client,
    /// the server's reply comes that much later.
    pub hold_confirm_ms: AtomicU64,
    /// Bytes relayed controller → device and device → controller.
    pub c2d: AtomicU64,
    pub d2c: AtomicU64,
    /// The relay threads end.
    stop: AtomicBool,
}

/// A relay between two pty pairs.
struct Relay {
    threads: Vec<JoinHandle<()>>,
    control: Arc<Control>,
    ptys: Arc<(Pty, Pty)>,
}

/// Writes `data` to a non-blocking fd, waiting while it is full; false if stopped.
fn write_all(fd: &OwnedFd, mut data: &[u8], stop: &AtomicBool) -> bool {
    while !data.is_empty() {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        match nix::unistd::write(fd.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => return false,
        }
    }
    true
}

/// Copies `from`'s master to `to`'s master until stopped; `rate` in bytes per second paces
/// delivery in slices of at most 8 bytes (0.7 ms at 115200 baud).
fn pump(ptys: Arc<(Pty, Pty)>, c2d: bool, rate: Option<f64>, ctl: Arc<Control>) {
    let (from, to) = if c2d {
        (&ptys.1.master, &ptys.0.master)
    } else {
        (&ptys.0.master, &ptys.1.master)
    };
    let count = if c2d { &ctl.c2d } else { &ctl.d2c };
    let mut buf = [0u8; 4096];
    let mut line_free = Instant::now();
    while !ctl.stop.load(Ordering::SeqCst) {
        if ctl.stalled.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let n = match nix::unistd::read(from.as_fd(), &mut buf) {
            Ok(0) | Err(_) => {
                std::thread::sleep(Duration::from_micros(300));
                continue;
            }
            Ok(n) => n,
        };
        let data = &mut buf[..n];
        let before = count.fetch_add(n as u64, Ordering::SeqCst);
        if c2d {
            let at = ctl.corrupt_c2d.load(Ordering::SeqCst);
            if at > before && at <= before + n as u64 {
                data[(at - before - 1) as usize] ^= 0x01;
                ctl.corrupt_c2d.store(0, Ordering::SeqCst);
            }
        } else {
            let hold = ctl.hold_confirm_ms.load(Ordering::SeqCst);
            if hold > 0 && data.contains(&0xFB) {
                ctl.hold_confirm_ms.store(0, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(hold));
            }
        }
        match rate {
            None => {
                if !write_all(to, data, &ctl.stop) {
                    return;
                }
            }
            Some(r) => {
                let now = Instant::now();
                if line_free < now {
                    line_free = now;
                }
                for slice in data.chunks(8) {
                    // The last bit of the slice leaves the wire at `line_free`.
                    line_free += Duration::from_secs_f64(slice.len() as f64 / r);
                    let wait = line_free.saturating_duration_since(Instant::now());
                    std::thread::sleep(wait);
                    if !write_all(to, slice, &ctl.stop) {
                        return;
                    }
                }
            }
        }
    }
}

impl Relay {
    fn start(rate: Option<f64>, control: Arc<Control>) -> Relay {
        control.stop.store(false, Ordering::SeqCst);
        let ptys = Arc::new((open_pty(), open_pty()));
        let threads = [true, false]
            .into_iter()
            .map(|c2d| {
                let (p, c) = (ptys.clone(), control.clone());
                std::thread::spawn(move || pump(p, c2d, rate, c))
            })
            .collect();
        Relay {
            threads,
            control,
            ptys,
        }
    }

    fn stop(self) {
        self.control.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        // Dropping the last reference closes masters and slaves: the ports hang up.
    }
}

/// The line: `device_port` and `ctl_port` are stable paths (symlinks) to the pty slaves.
pub struct Line {
    dir: tempfile::TempDir,
    pub device_port: PathBuf,
    pub ctl_port: PathBuf,
    pub control: Arc<Control>,
    rate: Option<f64>,
    relay: Mutex<Option<Relay>>,
}

fn link(target: &Path, at: &Path) {
    let _ = std::fs::remove_file(at);
    std::os::unix::fs::symlink(target, at).unwrap();
}

impl Line {
    /// A line at memory speed (`rate` None) or paced to `rate` bytes per second.
    pub fn new(rate: Option<f64>) -> Line {
        let dir = tempfile::tempdir().unwrap();
        let line = Line {
            device_port: dir.path().join("ttyDEV"),
            ctl_port: dir.path().join("ttyCTL"),
            dir,
            control: Arc::new(Control::default()),
            rate,
            relay: Mutex::new(None),
        };
        line.plug();
        line
    }

    /// New pty pairs, symlinks pointed at them, relay running.
    pub fn plug(&self) {
        let relay = Relay::start(self.rate, self.control.clone());
        link(&relay.ptys.0.path, &self.device_port);
        link(&relay.ptys.1.path, &self.ctl_port);
        *self.relay.lock().unwrap() = Some(relay);
    }

    /// Closes both pty pairs (the device's port hangs up, like an unplugged USB adapter) and
    /// removes the device's port name.
    pub fn unplug(&self) {
        if let Some(r) = self.relay.lock().unwrap().take() {
            r.stop();
        }
        let _ = std::fs::remove_file(&self.device_port);
    }

    /// Writes `bytes` into the device's port as if they came down the line.
    pub fn inject_to_device(&self, bytes: &[u8]) {
        let g = self.relay.lock().unwrap();
        let r = g.as_ref().unwrap();
        assert!(write_all(&r.ptys.0.master, bytes, &AtomicBool::new(false)));
    }

    pub fn c2d(&self) -> u64 {
        self.control.c2d.load(Ordering::SeqCst)
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.unplug();
    }
}
