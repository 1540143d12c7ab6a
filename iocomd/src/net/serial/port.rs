//! A serial port on tokio: termios through `nix`, readiness through [`AsyncFd`]. No udev, no
//! extra crate (see `docs/architecture.md`, "Serial ports").
//!
//! [`SerialParams`] are the port settings, written like eosal's parameter strings
//! (`ttyUSB0,baud=57600,parity=even`). [`SerialPort::open`] sets what eosal's
//! `osal_serial_open()` sets — raw 8-bit, `CLOCAL|CREAD`, no flow control, no echo, `VTIME` = 0,
//! non-blocking — plus the parity and stop bits asked for, then discards pending input
//! (`tcflush(TCIFLUSH)`). `VMIN` is 1 where eosal has 0 (it polls; we wait for readiness, and an
//! empty read must be `EAGAIN`, not 0). A hung-up port (USB adapter unplugged, pty master
//! closed) reads as end of file or an I/O error.

use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::termios::{
    BaudRate, ControlFlags, FlushArg, InputFlags, LocalFlags, OutputFlags, SetArg,
    SpecialCharacterIndices, cfsetspeed, tcflush, tcgetattr, tcsetattr,
};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The C library's default line speed.
pub const DEFAULT_BAUD: u32 = 115_200;

/// Parity bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit (the default, 8N1).
    #[default]
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

impl Parity {
    /// The name used in parameter strings and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Parity::None => "none",
            Parity::Even => "even",
            Parity::Odd => "odd",
        }
    }

    /// Parses `none`, `even` or `odd`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Parity::None),
            "even" => Some(Parity::Even),
            "odd" => Some(Parity::Odd),
            _ => None,
        }
    }
}

/// Port settings. Data bits are always 8 (IOCOM frames are binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialParams {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// Line speed in baud (one of [`SerialParams::SUPPORTED_BAUDS`]).
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// Stop bits, 1 or 2.
    pub stop_bits: u8,
}

/// Why serial parameters are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// No port name.
    #[error("no serial port given")]
    NoPort,
    /// A baud rate termios does not have.
    #[error("baud rate {0:?} is not supported (use one of 1200 … 4000000, e.g. 115200)")]
    Baud(String),
    /// Not none, even or odd.
    #[error("parity {0:?}: use none, even or odd")]
    Parity(String),
    /// Not 1 or 2.
    #[error("stop bits {0:?}: use 1 or 2")]
    StopBits(String),
    /// An unknown `key=value`.
    #[error("unknown serial parameter {0:?} (known: baud, parity, stopbits)")]
    Unknown(String),
}

impl SerialParams {
    /// Baud rates accepted (termios constants).
    pub const SUPPORTED_BAUDS: [u32; 21] = [
        1200, 1800, 2400, 4800, 9600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 500_000,
        576_000, 921_600, 1_000_000, 1_152_000, 1_500_000, 2_000_000, 2_500_000, 3_000_000,
        4_000_000,
    ];

    /// 115200 8N1 on `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            baud: DEFAULT_BAUD,
            parity: Parity::None,
            stop_bits: 1,
        }
    }

    /// A port name as eosal takes it: a name not starting with `/` gets `/dev/` in front
    /// (`ttyS0` → `/dev/ttyS0`).
    pub fn port_path(name: &str) -> PathBuf {
        if name.starts_with('/') {
            PathBuf::from(name)
        } else {
            Path::new("/dev").join(name)
        }
    }

    /// Parses `PORT[,baud=N][,parity=none|even|odd][,stopbits=1|2]`; the keys may also be
    /// given without the port by callers that know it. Unknown keys are refused.
    pub fn parse(s: &str) -> Result<Self, ParamsError> {
        let mut parts = s.split(',');
        let port = parts.next().map(str::trim).unwrap_or_default();
        if port.is_empty() {
            return Err(ParamsError::NoPort);
        }
        let mut p = Self::new(Self::port_path(port));
        for kv in parts {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            p.set(k.trim(), v.trim())?;
        }
        Ok(p)
    }

    /// Sets one parameter by its parameter-string name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ParamsError> {
        match key {
            "baud" => {
                self.baud = value
                    .parse()
                    .ok()
                    .filter(|b| Self::SUPPORTED_BAUDS.contains(b))
                    .ok_or_else(|| ParamsError::Baud(value.into()))?;
            }
            "parity" => {
                self.parity =
                    Parity::parse(value).ok_or_else(|| ParamsError::Parity(value.into()))?
            }
            "stopbits" => {
                self.stop_bits = match value {
                    "1" => 1,
                    "2" => 2,
                    _ => return Err(ParamsError::StopBits(value.into())),
                }
            }
            _ => return Err(ParamsError::Unknown(key.into())),
        }
        Ok(())
    }

    /// Bytes per second the line carries at most (start, data, parity and stop bits).
    pub fn line_bytes_per_sec(&self) -> f64 {
        let bits = 1 + 8 + u32::from(self.parity != Parity::None) + u32::from(self.stop_bits);
        f64::from(self.baud) / f64::from(bits)
    }
}

impl std::fmt::Display for SerialParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},baud={}", self.path.display(), self.baud)?;
        if self.parity != Parity::None {
            write!(f, ",parity={}", self.parity.as_str())?;
        }
        if self.stop_bits != 1 {
            write!(f, ",stopbits={}", self.stop_bits)?;
        }
        Ok(())
    }
}

fn baud_rate(baud: u32) -> Option<BaudRate> {
    use BaudRate as B;
    Some(match baud {
        1200 => B::B1200,
        1800 => B::B1800,
        2400 => B::B2400,
        4800 => B::B4800,
        9600 => B::B9600,
        19_200 => B::B19200,
        38_400 => B::B38400,
        57_600 => B::B57600,
        115_200 => B::B115200,
        230_400 => B::B230400,
        460_800 => B::B460800,
        500_000 => B::B500000,
        576_000 => B::B576000,
        921_600 => B::B921600,
        1_000_000 => B::B1000000,
        1_152_000 => B::B1152000,
        1_500_000 => B::B1500000,
        2_000_000 => B::B2000000,
        2_500_000 => B::B2500000,
        3_000_000 => B::B3000000,
        4_000_000 => B::B4000000,
        _ => return None,
    })
}

/// An open serial port. Reads and writes never block the runtime.
#[derive(Debug)]
pub struct SerialPort {
    fd: AsyncFd<OwnedFd>,
    path: PathBuf,
}

/// Registers the port with the runtime's reactor.
#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `AsyncFd::register` requires that the descriptor stays open and is not replaced
    // while registered. The `OwnedFd` is moved into the `AsyncFd`, which owns it until it is
    // dropped (and deregisters before closing); nothing else holds the descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from(e)
}

impl SerialPort {
    /// Opens and configures the port (see the module documentation).
    pub fn open(p: &SerialParams) -> io::Result<Self> {
        let speed = baud_rate(p.baud).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                ParamsError::Baud(p.baud.to_string()),
            )
        })?;
        let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = open(&p.path, flags, Mode::empty()).map_err(nix_err)?;
        let mut t = tcgetattr(&fd).map_err(nix_err)?;
        t.input_flags = InputFlags::IGNPAR;
        if p.parity != Parity::None {
            t.input_flags = InputFlags::INPCK;
        }
        t.output_flags = OutputFlags::empty();
        t.local_flags = LocalFlags::empty();
        let mut c = ControlFlags::CLOCAL | ControlFlags::CREAD | ControlFlags::CS8;
        match p.parity {
            Parity::None => {}
            Parity::Even => c |= ControlFlags::PARENB,
            Parity::Odd => c |= ControlFlags::PARENB | ControlFlags::PARODD,
        }
        if p.stop_bits == 2 {
            c |= ControlFlags::CSTOPB;
        }
        t.control_flags = c;
        // eosal polls with VMIN = 0, where an empty read returns 0. Here readiness comes from
        // epoll: with VMIN = 1 and O_NONBLOCK an empty read is EAGAIN, and 0 means hang-up.
        t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        cfsetspeed(&mut t, speed).map_err(nix_err)?;
        tcsetattr(&fd, SetArg::TCSANOW, &t).map_err(nix_err)?;
        tcflush(&fd, FlushArg::TCIFLUSH).map_err(nix_err)?;
        Ok(Self {
            fd: register(fd)?,
            path: p.path.clone(),
        })
    }

    /// The device path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Discards received bytes not read yet.
    pub fn discard_input(&self) -> io::Result<()> {
        tcflush(self.fd.get_ref(), FlushArg::TCIFLUSH).map_err(nix_err)
    }
}

impl AsyncRead for SerialPort {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(nix_err)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for SerialPort {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(nix_err)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are in the kernel's queue; waiting for the UART to drain them
        // (tcdrain) would block the thread.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_strings_like_eosal() {
        let p = SerialParams::parse("ttyUSB0,baud=57600,parity=even").unwrap();
        assert_eq!(p.path, Path::new("/dev/ttyUSB0"));
        assert_eq!((p.baud, p.parity, p.stop_bits), (57_600, Parity::Even, 1));
        assert_eq!(p.to_string(), "/dev/ttyUSB0,baud=57600,parity=even");
        let d = SerialParams::parse("/tmp/x/tty,stopbits=2").unwrap();
        assert_eq!(
            (d.path.as_path(), d.baud),
            (Path::new("/tmp/x/tty"), 115_200)
        );
        assert_eq!(d.stop_bits, 2);
        assert_eq!(SerialParams::parse(""), Err(ParamsError::NoPort));
        assert_eq!(
            SerialParams::parse("ttyS0,baud=12345"),
            Err(ParamsError::Baud("12345".into()))
        );
        assert_eq!(
            SerialParams::parse("ttyS0,parity=mark"),
            Err(ParamsError::Parity("mark".into()))
        );
        assert_eq!(
            SerialParams::parse("ttyS0,stopbits=3"),
            Err(ParamsError::StopBits("3".into()))
        );
        assert_eq!(
            SerialParams::parse("ttyS0,flow=rtscts"),
            Err(ParamsError::Unknown("flow".into()))
        );
        for b in SerialParams::SUPPORTED_BAUDS {
            assert!(baud_rate(b).is_some(), "{b}");
        }
    }

    #[test]
    fn line_rate_of_8n1_at_115200_is_11520_bytes_per_second() {
        let p = SerialParams::new("/dev/ttyS0");
        assert!((p.line_bytes_per_sec() - 11_520.0).abs() < 1e-9);
        let e = SerialParams::parse("ttyS0,parity=odd,stopbits=2").unwrap();
        assert!((e.line_bytes_per_sec() - 115_200.0 / 12.0).abs() < 1e-9);
    }

    #[test]
    fn opening_a_missing_port_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let e = SerialPort::open(&SerialParams::new(dir.path().join("ttyNone"))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
