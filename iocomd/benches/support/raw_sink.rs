//! The raw TCP receiver the push benchmarks compare IOCOM with: it does what the device does
//! with a pushed package apart from the protocol (write the bytes to a file, SHA-256 over
//! them, fsync before it answers), so a ratio measures the protocol and not a receiver that
//! skips the disk.

use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Reads `s` to its end into a new file at `path` (64 KiB reads), hashing as it goes, and
/// makes the file durable. Returns the byte count and the SHA-256.
pub async fn receive_to_file(s: &mut tokio::net::TcpStream, path: &Path) -> (u64, [u8; 32]) {
    let mut f = std::fs::File::create(path).unwrap();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        let k = s.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        f.write_all(&buf[..k]).unwrap();
        n += k as u64;
    }
    // Durable, as the device makes its spool file before it confirms the stream.
    f.sync_all().unwrap();
    (n, sha.finalize().into())
}
