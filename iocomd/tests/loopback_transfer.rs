//! Our controller and our device over real loopback sockets (the protocol issue's acceptance
//! test 3): 1 MiB of random bytes written to select 1 arrives identical over plain TCP and over
//! TLS, and a byte corrupted on the wire is caught by the stream CRC and reported as an error.
//!
//! The device is our `DeviceEndpoint` behind the net driver (tests/ctl_support), the controller
//! is `iocomd::ctl::push`. The device declares a 256 KiB + 1 byte ring (the daemon's default).

mod ctl_support;

use ctl_support::{Spec, pki, random_bytes, start};
use iocomd::ctl::{
    self, ConnectOptions, Credentials, PushOptions, Target, Timeouts, TlsOptions, Transport,
};
use iocomd::proto::frame::{Element, Framing, decode_element, next_frame_nr};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;
const RING: usize = 256 * 1024 + 1;

/// Which build the figures printed below come from (they are information, not assertions).
fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    }
}

fn options() -> ConnectOptions {
    ConnectOptions {
        timeouts: Timeouts {
            connect: Duration::from_secs(30),
            ready: Duration::from_secs(60),
            result: Duration::from_secs(60),
            ..Timeouts::default()
        },
        ..ConnectOptions::default()
    }
}

fn target(addr: SocketAddr) -> Target {
    Target {
        device: "gina3.cafenet".parse().expect("device path"),
        transport: Transport::Connect(addr.to_string()),
    }
}

fn write_package(dir: &tempfile::TempDir, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let data = random_bytes(MIB, seed);
    let path = dir.path().join("random.bin");
    std::fs::write(&path, &data).expect("write package");
    (path, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_over_plain_tcp_arrives_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, data) = write_package(&dir, 0x5eed_0001);
    let dev = start(Spec {
        tod_ring: RING,
        ..Spec::new("gina", 3)
    })
    .await;
    let t0 = Instant::now();
    let out = ctl::push(&PushOptions::new(target(dev.addr), options(), file), |_| {})
        .await
        .expect("push succeeds");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(out.bytes, MIB as u64);
    assert_eq!(out.crc, iocomd::proto::crc::crc16(&data));
    let received = dev.stop().await;
    assert!(received == data, "device received different bytes");
    eprintln!("1 MiB over plain TCP: {secs:.3} s ({})", profile());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_over_tls_with_password_arrives_identical() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, data) = write_package(&dir, 0x5eed_0002);
    let (_pki, cert, key) = pki();
    let dev = start(Spec {
        tod_ring: RING,
        password: Some("s3cret"),
        tls: Some((cert.clone(), key)),
        ..Spec::new("gina", 3)
    })
    .await;
    let opts = ConnectOptions {
        tls: Some(TlsOptions {
            ca: Some(cert),
            server_name: Some("localhost".into()),
            ..TlsOptions::default()
        }),
        credentials: Some(Credentials {
            user: "ctl".into(),
            password: "s3cret".into(),
        }),
        ..options()
    };
    let t0 = Instant::now();
    let out = ctl::push(&PushOptions::new(target(dev.addr), opts, file), |_| {})
        .await
        .expect("push succeeds");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(out.bytes, MIB as u64);
    let received = dev.stop().await;
    assert!(received == data, "device received different bytes");
    eprintln!("1 MiB over TLS: {secs:.3} s ({})", profile());
}

/// Forwards controller→device bytes, flipping one byte in the middle of the first large,
/// uncompressed data frame after `after` bytes; device→controller bytes pass unchanged.
async fn corrupting_proxy(listener: TcpListener, device: SocketAddr, after: usize) {
    let (mut ctl, _) = listener.accept().await.expect("controller connects");
    let mut dev = TcpStream::connect(device).await.expect("device reachable");
    let (mut ctl_r, mut ctl_w) = ctl.split();
    let (mut dev_r, mut dev_w) = dev.split();
    let up = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut forwarded = 0usize;
        let mut handshake_done = false;
        let mut expected_nr = 0u8;
        let mut flipped = false;
        loop {
            let n = match ctl_r.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            // Forward whole elements only, so one can be altered before it leaves.
            let mut at = 0;
            if !handshake_done {
                if buf.len() < 2 || buf.len() < 2 + usize::from(buf[1]) {
                    continue;
                }
                at = 2 + usize::from(buf[1]);
                handshake_done = true;
            }
            while let Ok(Some((el, len))) =
                decode_element(Framing::Socket, &buf[at..], expected_nr, 16384)
            {
                if let Element::Frame(f) = &el {
                    expected_nr = next_frame_nr(f.nr);
                    let big_data = !f.flags.system() && !f.flags.compressed() && len > 1000;
                    if !flipped && big_data && forwarded + at > after {
                        let i = at + len - f.payload.len() / 2;
                        buf[i] ^= 0x5a;
                        flipped = true;
                    }
                }
                at += len;
            }
            if dev_w.write_all(&buf[..at]).await.is_err() {
                break;
            }
            forwarded += at;
            buf.drain(..at);
        }
        let _ = dev_w.shutdown().await;
        flipped
    };
    let down = async {
        let _ = tokio::io::copy(&mut dev_r, &mut ctl_w).await;
        let _ = ctl_w.shutdown().await;
    };
    let (flipped, ()) = tokio::join!(up, down);
    assert!(flipped, "the proxy found a data frame to corrupt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_corrupted_on_the_wire_is_a_crc_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, data) = write_package(&dir, 0x5eed_0003);
    // A plain IOCOM device: no iocomd status signals, so the controller judges by `tod_err`
    // alone, as it would with any C device.
    let dev = start(Spec {
        tod_ring: RING,
        status_signals: false,
        ..Spec::new("gina", 3)
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let proxy_addr = listener.local_addr().expect("proxy addr");
    let proxy = tokio::spawn(corrupting_proxy(listener, dev.addr, 300 * 1024));

    let mut opts = PushOptions::new(target(proxy_addr), options(), file);
    opts.accept_tod_err_only = true;
    let err = ctl::push(&opts, |_| {})
        .await
        .expect_err("a corrupted transfer must not succeed");
    assert_eq!(err.exit_code(), 6, "transfer failure class: {err:?}");
    let text = format!("{err}");
    assert!(
        text.contains("204") || text.to_lowercase().contains("checksum") || text.contains("crc"),
        "the error names the checksum failure: {text}"
    );
    eprintln!("corrupted transfer reported as: {text}");
    let received = dev.stop().await;
    assert!(
        received != data,
        "corrupted bytes were not accepted as the file"
    );
    proxy.await.expect("proxy task");
}
