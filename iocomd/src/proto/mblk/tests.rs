//! Unit tests of [`super`].

use super::*;

fn pair(size: usize) -> (Mblk, Mblk) {
    let mut tx = Mblk::new("imp", 8, MBLK_DOWN, size);
    let mut rx = Mblk::new("imp", 9, MBLK_DOWN, size);
    tx.add_source(1, 9);
    rx.add_target(2, 8);
    (tx, rx)
}

fn pump(tx: &mut Mblk, rx: &mut Mblk, frame: usize) -> Vec<DataFrame> {
    tx.synchronize();
    let mut frames = Vec::new();
    while let Some(f) = tx.next_frame(1, frame) {
        rx.apply_frame(2, f.addr as usize, f.flags, &f.payload)
            .unwrap();
        frames.push(f);
    }
    frames
}

#[test]
fn spec_2_8_worked_example() {
    let (mut tx, mut rx) = pair(24);
    let f = pump(&mut tx, &mut rx, 1392);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].addr, f[0].flags, f[0].payload.clone()),
        (0, 0x12, vec![0, 24])
    );
    tx.write(0, &[3, 0xE8, 3]).unwrap();
    tx.write(4, &[3, 0, 0, 0xC0, 0x3F]).unwrap();
    tx.write(9, &[2, b'h', b'i', 0]).unwrap();
    let f = pump(&mut tx, &mut rx, 1392);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].flags, 0x11);
    assert_eq!(
        f[0].payload,
        [3, 0xE8, 3, 0, 3, 0, 0, 0xC0, 0x3F, 2, b'h', b'i']
    );
    tx.write(1, &[0xE9]).unwrap();
    tx.write(11, b"o").unwrap();
    let f = pump(&mut tx, &mut rx, 1392);
    assert_eq!((f[0].addr, f[0].flags), (1, 0x13));
    assert_eq!(f[0].payload, [1, 1, 9, 1, 6]);
    assert_eq!(rx.data(), tx.data());
}

#[test]
fn nothing_changed_sends_nothing() {
    let (mut tx, mut rx) = pair(24);
    pump(&mut tx, &mut rx, 1392);
    tx.write(5, &[0]).unwrap();
    assert!(pump(&mut tx, &mut rx, 1392).is_empty());
}

#[test]
fn large_snapshot_is_split_and_committed_only_at_the_end() {
    let (mut tx, mut rx) = pair(5000);
    pump(&mut tx, &mut rx, 1392);
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 253 + 1) as u8).collect();
    tx.write(100, &data).unwrap();
    tx.synchronize();
    let mut n = 0;
    while let Some(f) = tx.next_frame(1, 200) {
        assert!(f.payload.len() + socket_header_len(f.mblk_id, f.addr) <= 200);
        rx.apply_frame(2, f.addr as usize, f.flags, &f.payload)
            .unwrap();
        n += 1;
        if f.flags & SYNC_COMPLETE == 0 {
            assert!(
                rx.data()[100..4100].iter().all(|b| *b == 0),
                "no partial commit"
            );
        }
    }
    assert!(n > 20);
    assert_eq!(rx.data(), tx.data());
}

#[test]
fn out_of_range_frames_are_rejected_and_change_nothing() {
    let (_, mut rx) = pair(24);
    assert!(matches!(
        rx.apply_frame(2, 25, 0x10, &[1]),
        Err(MblkError::AddressBeyondBlock { addr: 25, .. })
    ));
    assert!(matches!(
        rx.apply_frame(2, 20, 0x10, &[1, 2, 3, 4, 5]),
        Err(MblkError::Payload { .. })
    ));
    assert!(matches!(
        rx.apply_frame(2, 0, 0x12, &[0, 30]),
        Err(MblkError::Payload { .. })
    ));
    assert_eq!(rx.data(), &[0; 24]);
    assert_eq!(rx.apply_frame(2, 24, 0x10, &[]), Ok(None));
    assert!(matches!(
        rx.write(20, &[1; 5]),
        Err(MblkError::WriteOutOfRange { .. })
    ));
}

#[test]
fn static_block_is_sent_raw_once() {
    let mut info = Mblk::new_static(
        "info",
        12,
        MBLK_UP,
        (0..=255u8).cycle().take(3000).collect(),
    );
    info.add_source(1, 40);
    info.synchronize();
    let mut got = Vec::new();
    let mut last = 0;
    while let Some(f) = info.next_frame(1, 1392) {
        assert_eq!(f.flags & (COMPRESSED | DELTA_ENCODED), 0);
        assert_eq!(f.addr as usize, got.len());
        got.extend_from_slice(&f.payload);
        last = f.flags;
    }
    assert_eq!(last, SYNC_COMPLETE);
    assert_eq!(got, info.data());
    info.synchronize();
    assert!(info.next_frame(1, 1392).is_none());
}

#[test]
fn frames_for_unbound_connections_are_ignored() {
    let (_, mut rx) = pair(24);
    assert_eq!(rx.apply_frame(7, 0, 0x10, &[1]), Ok(None));
    assert_eq!(rx.data()[0], 0);
}

#[test]
fn progressive_target_commits_each_frame_and_says_what_is_still_arriving() {
    let mut rx = Mblk::new("imp", 9, MBLK_DOWN, 64);
    rx.add_target(2, 8);
    rx.set_progressive(true);
    assert_eq!(rx.incomplete_from(), None);
    // Plain frame at 0 without SYNC_COMPLETE: committed at once; bytes from 4 may still change.
    assert_eq!(
        rx.apply_frame(2, 0, 0x00, &[1, 2, 3, 4]).unwrap(),
        Some(0..4)
    );
    assert_eq!(&rx.data()[..6], [1, 2, 3, 4, 0, 0]);
    assert_eq!(rx.incomplete_from(), Some(4));
    // Delta-encoded last frame (0x11): 5 - 0 and 6 - 0 at 4..6; the snapshot is complete.
    assert_eq!(rx.apply_frame(2, 4, 0x11, &[5, 6]).unwrap(), Some(4..6));
    assert_eq!(&rx.data()[..7], [1, 2, 3, 4, 5, 6, 0]);
    assert_eq!(rx.incomplete_from(), None);
    // A frame changing nothing still moves the mark.
    assert_eq!(rx.apply_frame(2, 0, 0x00, &[1, 2, 3]).unwrap(), None);
    assert_eq!(rx.incomplete_from(), Some(3));
}

#[test]
fn a_plain_target_commits_only_complete_snapshots_and_never_reports_one_arriving() {
    let mut rx = Mblk::new("imp", 9, MBLK_DOWN, 64);
    rx.add_target(2, 8);
    assert_eq!(rx.apply_frame(2, 0, 0x00, &[1, 2, 3, 4]).unwrap(), None);
    assert_eq!(&rx.data()[..4], [0, 0, 0, 0]);
    assert_eq!(rx.incomplete_from(), None);
    assert_eq!(rx.apply_frame(2, 4, 0x10, &[5]).unwrap(), Some(0..5));
    assert_eq!(&rx.data()[..5], [1, 2, 3, 4, 5]);
}

/// A head written at the start and ring bytes far into a 64 KiB block, as a stream writer
/// changes `conf_imp`.
fn head_and_ring(tx: &mut Mblk) -> Vec<u8> {
    let ring: Vec<u8> = (0..3000u32).map(|i| (i * 13 % 251 + 1) as u8).collect();
    tx.write(1, &[7, 0, 0, 1]).unwrap();
    tx.write(60_000, &ring).unwrap();
    ring
}

#[test]
fn a_split_snapshot_leaves_out_the_unchanged_bytes_and_commits_at_its_end() {
    let (mut tx, mut rx) = pair(64 << 10);
    tx.set_split_snapshots(1, true);
    pump(&mut tx, &mut rx, 16384);
    head_and_ring(&mut tx);
    tx.synchronize();
    let mut frames = Vec::new();
    while let Some(f) = tx.next_frame(1, 16384) {
        // Committed only with the snapshot's last frame, like an unsplit one.
        let committed = rx
            .apply_frame(2, f.addr as usize, f.flags, &f.payload)
            .unwrap();
        assert_eq!(committed.is_some(), f.flags & SYNC_COMPLETE != 0);
        frames.push(f);
    }
    let shape: Vec<(u32, bool)> = frames
        .iter()
        .map(|f| (f.addr, f.flags & SYNC_COMPLETE != 0))
        .collect();
    assert_eq!(shape, [(1, false), (60_000, true)]);
    let sent: usize = frames.iter().map(|f| f.payload.len()).sum();
    assert!(sent <= 4 + 3000 + 16, "{sent} payload bytes");
    assert_eq!(rx.data(), tx.data());
}

#[test]
fn an_unsplit_snapshot_covers_the_unchanged_bytes_as_the_c_library_does() {
    let (mut tx, mut rx) = pair(64 << 10);
    pump(&mut tx, &mut rx, 16384);
    head_and_ring(&mut tx);
    let frames = pump(&mut tx, &mut rx, 16384);
    // One range from the head to the ring bytes: its first frame starts at the head and the
    // unchanged bytes go as compressed zero deltas.
    assert_eq!(frames.first().map(|f| f.addr), Some(1));
    let mut end = 1;
    for f in &frames {
        assert_eq!(f.addr, end, "contiguous frames");
        let covered = compress::decode_into(&f.payload, f.flags, &mut vec![0; 64 << 10]).unwrap();
        end += covered as u32;
    }
    assert_eq!(end, 63_000);
    assert_eq!(rx.data(), tx.data());
}

#[test]
fn split_ranges_coalesce_near_ones_and_stay_few() {
    let mut c = Changed::default();
    c.add(100, 110, true);
    c.add(120, 130, true);
    assert_eq!(c.0, [(100, 130)]);
    c.add(50_000, 50_010, true);
    c.add(0, 3, true);
    assert_eq!(c.0, [(0, 130), (50_000, 50_010)]);
    // Overlapping and out of order.
    c.add(49_000, 60_000, true);
    assert_eq!(c.0, [(0, 130), (49_000, 60_000)]);
    for k in 1..=5 {
        c.add(k * 100_000, k * 100_000 + 1, true);
    }
    assert_eq!(c.0.len(), MAX_SPLIT_RANGES);
    // The closest neighbours were merged: everything is still covered.
    assert_eq!(c.0.first().map(|r| r.0), Some(0));
    assert_eq!(c.0.last(), Some(&(500_000, 500_001)));
    assert!(c.0.windows(2).all(|w| w[0].1 < w[1].0), "{:?}", c.0);
    // Unsplit: always one range from the first to the last change.
    let mut one = Changed::default();
    one.add(500, 600, false);
    one.add(10, 20, false);
    one.add(900, 901, false);
    assert_eq!(one.0, [(10, 901)]);
    assert_eq!(one.take(), [(10, 901)]);
    assert!(one.0.is_empty());
}
