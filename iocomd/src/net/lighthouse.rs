//! Lighthouse discovery over UDP multicast ([`crate::proto::lighthouse`] has the message and
//! the table): [`announce`] multicasts where we listen; [`discover`] waits for an announcement
//! of a network and transport and returns the address to connect to. A hint only: the
//! connection that follows is authenticated as any other.

use crate::proto::lighthouse::{Announcement, LIGHTHOUSE_IPV4, LIGHTHOUSE_PORT, LighthouseClient};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Time between announcements.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

fn micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Multicasts `a` every `interval` until `shutdown` (counter, random number and time stamp
/// set per message, as the C server does). Send errors are logged and retried.
pub async fn announce(mut a: Announcement, interval: Duration, shutdown: CancellationToken) {
    let socket = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "lighthouse: cannot open a UDP socket; not announcing");
            return;
        }
    };
    let _ = socket.set_multicast_loop_v4(true);
    let to = SocketAddrV4::new(LIGHTHOUSE_IPV4, LIGHTHOUSE_PORT);
    let mut seed = micros_now() | 1;
    loop {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        a.random = (seed >> 16) as u16;
        a.timestamp = micros_now();
        a.counter = a.counter.wrapping_add(1);
        match a.encode() {
            Ok(bytes) => {
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(error = %e, "lighthouse: send failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "lighthouse: not announcing");
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// A UDP socket on the lighthouse port (shared: `SO_REUSEADDR`) in the multicast group.
fn listen_socket() -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, LIGHTHOUSE_PORT)),
    )?;
    let std = std::net::UdpSocket::from(fd);
    std.join_multicast_v4(&LIGHTHOUSE_IPV4, &Ipv4Addr::UNSPECIFIED)?;
    UdpSocket::from_std(std)
}

/// Waits up to `wait` for an announcement of `network` (any for `None`/`*`) with `tls` or
/// plain TCP; returns its address.
pub async fn discover(
    network: Option<&str>,
    tls: bool,
    wait: Duration,
    shutdown: &CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    let socket = listen_socket()?;
    let mut table = LighthouseClient::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 512];
    loop {
        let r = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            r = socket.recv_from(&mut buf) => r,
        };
        let (n, from) = r?;
        let now = Instant::now();
        match table.on_packet(from.ip(), buf.get(..n).unwrap_or_default(), now) {
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(%from, error = %e, "lighthouse: ignored datagram");
                continue;
            }
        }
        if let Some(d) = table.select(network, tls, now) {
            tracing::info!(addr = %d.addr, nickname = %d.nickname, network = %d.network, tls, "lighthouse: found");
            return Ok(Some(d.addr));
        }
    }
}
