//! The `tod_buf` ring iocomd declares per connection: the configured one (`stream.buffer_size`)
//! to a streaming controller (it announces 16 KiB frames, as iocomctl does), a small one
//! (`COMPAT_TOD_RING`, 4 KiB + 1) to a controller announcing the reference's 1392-byte frames
//! (ispy and every stock C controller), whose memory window draws one label per 16 bytes of
//! every block. Both push through their ring.

mod daemon_support;

use daemon_support::{Ctl, Daemon, Source, pseudo_random};
use iocomd::proto::frame::{MAX_FRAME_SIZE, SOCKET_FRAME_SIZE};
use iocomd::proto::info::COMPAT_TOD_RING;
use iocomd::proto::stream::controller::Progress;

/// The declared ring, the bytes of block data the device offers (every block it announced)
/// and the labels ispy's memory window draws for them (one per 16 bytes).
fn offered(c: &Ctl) -> (usize, usize, usize) {
    let info = c.ep.peer_info().unwrap().as_ref().unwrap();
    let ring = info.signal("conf_imp", "tod_buf").unwrap().n;
    let sizes: Vec<usize> = (0..c.ep.node().len())
        .filter_map(|ix| c.ep.node().block(ix))
        .map(|b| b.size())
        .collect();
    let bytes = sizes.iter().sum();
    let labels = sizes.iter().map(|s| s.div_ceil(16)).sum();
    (ring, bytes, labels)
}

async fn push_through(c: &mut Ctl, len: usize) {
    let data = pseudo_random(len, 7);
    let mut src = Source {
        data: data.clone(),
        pos: 0,
        hold_at: None,
    };
    let p = c.upload(&mut src, None).await.unwrap();
    assert!(
        matches!(p, Progress::Completed { bytes, .. } if bytes == len as u64),
        "{p:?}"
    );
    // Random bytes are no package: the daemon refuses them once received; wait for that
    // result so the update slot is free for the next controller.
    assert!(c.wait_final_tod_err().await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_controller_gets_the_small_ring_and_ours_the_configured_one() {
    let d = Daemon::start(|s| s.stream_buffer_size = 256 << 10).await;

    let mut ours = Ctl::connect_sized(d.addr, "gina", None, MAX_FRAME_SIZE).await;
    ours.wait_ready().await;
    let (ring, bytes, labels) = offered(&ours);
    eprintln!("streaming controller: tod_buf {ring}, {bytes} B of blocks, {labels} labels");
    assert_eq!(ring, 256 << 10);
    assert!(bytes > ring && labels > ring / 16, "{bytes} {labels}");
    push_through(&mut ours, 600_000).await;
    ours.disconnect();

    let mut stock = Ctl::connect_sized(d.addr, "gina", None, SOCKET_FRAME_SIZE).await;
    stock.wait_ready().await;
    let (ring, bytes, labels) = offered(&stock);
    eprintln!("1392-byte controller: tod_buf {ring}, {bytes} B of blocks, {labels} labels");
    assert_eq!(ring, COMPAT_TOD_RING);
    // Every block but the ring is the same (the status block with its 1 KiB message and
    // package list the biggest); the whole offer stays under 8 KiB, under 500 labels.
    assert!(bytes < 8 << 10 && labels < 500, "{bytes} {labels}");
    push_through(&mut stock, 60_000).await;
    stock.disconnect();
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_ring_below_the_small_one_is_kept_for_everyone() {
    let d = Daemon::start(|s| s.stream_buffer_size = 1025).await;
    let mut stock = Ctl::connect_sized(d.addr, "gina", None, SOCKET_FRAME_SIZE).await;
    stock.wait_ready().await;
    assert_eq!(offered(&stock).0, 1025);
    stock.disconnect();
    let mut ours = Ctl::connect_sized(d.addr, "gina", None, MAX_FRAME_SIZE).await;
    ours.wait_ready().await;
    assert_eq!(offered(&ours).0, 1025);
    ours.disconnect();
    d.stop().await;
}
