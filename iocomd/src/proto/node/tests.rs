//! Unit tests of [`super`].

use super::*;
use crate::proto::frame::FrameFlags;

fn info(id: u32, dev: &str, nr: u32, name: &str, size: u32, flags: u16) -> MblkInfo {
    MblkInfo {
        mblk_id: id,
        device_name: dev.into(),
        device_nr: nr,
        network_name: "cafenet".into(),
        mblk_name: name.into(),
        size,
        flags,
    }
}

fn device_node() -> Node {
    let mut n = Node::new(Role::Device);
    let me = DeviceId::new("gina", AUTO_DEVICE_NR, "*");
    assert_eq!(n.add_block(me.clone(), "exp", MBLK_UP, 44).unwrap(), 0);
    assert_eq!(n.add_block(me.clone(), "imp", MBLK_DOWN, 24).unwrap(), 1);
    n.add_static_block(me, "info", MBLK_UP | MBLK_STATIC, vec![1; 30])
        .unwrap();
    n
}

#[test]
fn device_announces_all_blocks_with_the_adopted_network() {
    let mut n = device_node();
    let infos = n.connect(1, "cafenet", 1392);
    let got: Vec<(u32, &str, u32, &str)> = infos
        .iter()
        .map(|i| {
            (
                i.mblk_id,
                i.mblk_name.as_str(),
                i.size,
                i.network_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (8, "exp", 44, "cafenet"),
            (9, "imp", 24, "cafenet"),
            (10, "info", 30, "cafenet")
        ]
    );
    assert_eq!(infos[2].flags, MBLK_UP | MBLK_STATIC);
}

#[test]
fn device_binds_by_direction_and_translates_8999() {
    let mut n = device_node();
    n.connect(1, "cafenet", 1392);
    // Controller replies: exp (UP) → we send; imp (DOWN) → we receive; 8999 = us.
    let out = n
        .handle(
            1,
            ConnEvent::MblkInfo(info(20, "gina", TO_AUTO_DEVICE_NR, "exp", 44, 0x3A)),
        )
        .unwrap();
    assert_eq!(out.bound, [0]);
    assert!(out.infos.is_empty(), "a device never replies");
    n.handle(
        1,
        ConnEvent::MblkInfo(info(21, "gina", TO_AUTO_DEVICE_NR, "imp", 24, 0x39)),
    )
    .unwrap();
    assert!(n.block(0).unwrap().has_source(1));
    assert!(n.block(1).unwrap().is_target_on(1));
    // Wrong direction, name or network: no binding.
    for i in [
        info(22, "gina", TO_AUTO_DEVICE_NR, "exp", 44, MBLK_DOWN),
        info(23, "gina", 7, "imp", 24, MBLK_DOWN),
        info(24, "other", TO_AUTO_DEVICE_NR, "imp", 24, MBLK_DOWN),
        MblkInfo {
            network_name: "elsewhere".into(),
            ..info(25, "gina", TO_AUTO_DEVICE_NR, "imp", 24, MBLK_DOWN)
        },
    ] {
        assert_eq!(
            n.handle(1, ConnEvent::MblkInfo(i)).unwrap(),
            NodeOutput::default()
        );
    }
    assert_eq!(n.block(0).unwrap().remote_id(1), Some(20));
    // Key frame for exp goes to the controller's id.
    let frames = n.transmit(1, 1392, 10);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].mblk_id, frames[0].flags), (20, 0x12));
}

#[test]
fn device_routes_data_and_rejects_bad_frames() {
    let mut n = device_node();
    n.connect(1, "cafenet", 1392);
    n.handle(
        1,
        ConnEvent::MblkInfo(info(21, "gina", TO_AUTO_DEVICE_NR, "imp", 24, 0x39)),
    )
    .unwrap();
    let data = |addr, payload: Vec<u8>| ConnEvent::Data {
        mblk_id: 9,
        addr,
        flags: FrameFlags::data(false, false, true),
        payload,
    };
    let out = n.handle(1, data(2, vec![5, 6])).unwrap();
    assert_eq!(out.changed, [(1, 2..4)]);
    assert_eq!(&n.block(1).unwrap().data()[..5], [0, 0, 5, 6, 0]);
    assert!(matches!(
        n.handle(1, data(30, vec![1])),
        Err(NodeError::Block { conn: 1, .. })
    ));
    // Unknown id, or a block not received on this connection: ignored.
    let stray = ConnEvent::Data {
        mblk_id: 99,
        addr: 0,
        flags: FrameFlags::data(false, false, true),
        payload: vec![1],
    };
    assert_eq!(n.handle(1, stray).unwrap(), NodeOutput::default());
    assert_eq!(
        n.handle(2, data(0, vec![1])).unwrap(),
        NodeOutput::default()
    );
    n.disconnect(1);
    assert!(!n.block(1).unwrap().has_target());
    assert_eq!(
        n.block(1).unwrap().data()[2],
        5,
        "content survives a disconnect"
    );
}

#[test]
fn controller_creates_blocks_and_replies() {
    let mut n = Node::new(Role::Controller);
    assert!(n.connect(5, "cafenet", 1392).is_empty());
    let out = n
        .handle(
            5,
            ConnEvent::MblkInfo(info(12, "gina", 3, "conf_imp", 279, 0x09)),
        )
        .unwrap();
    assert_eq!(out.bound, [0]);
    let reply = &out.infos[0];
    assert_eq!((reply.mblk_id, reply.size, reply.device_nr), (8, 279, 3));
    assert_eq!(reply.flags, MBLK_DOWN | MBLK_ALLOW_RESIZE | MBLK_DYNAMIC);
    assert!(n.block(0).unwrap().has_source(5));
    let out = n
        .handle(
            5,
            ConnEvent::MblkInfo(info(14, "gina", 3, "info", 1060, 0x42)),
        )
        .unwrap();
    assert_eq!(
        out.infos[0].flags & MBLK_STATIC,
        0,
        "our info copy is ordinary"
    );
    assert!(n.block(1).unwrap().is_target_on(5));
    // The same info again binds nothing new.
    let again = n
        .handle(
            5,
            ConnEvent::MblkInfo(info(14, "gina", 3, "info", 1060, 0x42)),
        )
        .unwrap();
    assert_eq!(again, NodeOutput::default());
    // A larger size grows a resizable block.
    n.handle(
        5,
        ConnEvent::MblkInfo(info(14, "gina", 3, "info", 2000, 0x42)),
    )
    .unwrap();
    assert_eq!(n.block(1).unwrap().size(), 2000);
    assert_eq!(
        n.find("info", Some(&DeviceId::new("gina", 3, "cafenet"))),
        Some(1)
    );
}

#[test]
fn ids_stay_below_32768_and_names_fit() {
    let mut n = Node::new(Role::Device);
    let me = DeviceId::new("d", 1, "n");
    assert!(matches!(
        n.add_block(me.clone(), "a_name_of_16_chr", MBLK_UP, 24),
        Err(NodeError::BadName(_))
    ));
    n.next_id = MBLK_ID_LIMIT - 1;
    assert_eq!(n.add_block(me.clone(), "last", MBLK_UP, 24).unwrap(), 0);
    assert_eq!(n.block(0).unwrap().id(), 32767);
    assert_eq!(
        n.add_block(me, "more", MBLK_UP, 24),
        Err(NodeError::OutOfIds)
    );
}

#[test]
fn device_paths() {
    let p = DevicePath::parse("gina3.cafenet").unwrap();
    assert_eq!(
        (p.name.as_str(), p.nr, p.network.as_deref()),
        ("gina", Some(3), Some("cafenet"))
    );
    assert!(p.matches(&DeviceId::new("gina", 3, "cafenet")));
    assert!(!p.matches(&DeviceId::new("gina", 4, "cafenet")));
    assert!(!p.matches(&DeviceId::new("gina", 3, "other")));
    let p = DevicePath::parse("iocomd").unwrap();
    assert_eq!((p.nr, p.network.as_deref()), (None, None));
    assert!(p.matches(&DeviceId::new("iocomd", 9001, "x")));
    for bad in [
        "",
        "12",
        ".net",
        "gina.",
        "a_name_that_is_too_long1.x",
        "g99999999999",
    ] {
        assert_eq!(DevicePath::parse(bad), None, "{bad}");
    }
}

#[test]
fn huge_peer_blocks_are_refused() {
    let mut n = Node::new(Role::Controller);
    n.connect(5, "cafenet", 1392);
    let huge = info(12, "gina", 3, "dexp", u32::MAX, MBLK_UP);
    assert!(matches!(
        n.handle(5, ConnEvent::MblkInfo(huge)),
        Err(NodeError::TooLarge { conn: 5, .. })
    ));
    assert!(n.is_empty());
}

#[test]
fn pair_mut_gives_two_blocks_in_order() {
    let mut n = device_node();
    let (a, b) = n.pair_mut(1, 0).unwrap();
    assert_eq!((a.name(), b.name()), ("imp", "exp"));
    assert!(n.pair_mut(1, 1).is_none());
    assert!(n.pair_mut(0, 7).is_none());
}

#[test]
fn a_change_made_while_a_snapshot_is_in_flight_goes_out_in_the_same_call() {
    let mut n = device_node();
    n.connect(1, "cafenet", 1392);
    n.handle(
        1,
        ConnEvent::MblkInfo(info(20, "gina", TO_AUTO_DEVICE_NR, "exp", 44, 0x3A)),
    )
    .unwrap();
    assert_eq!(n.transmit(1, 1392, 10).len(), 1, "key frame");
    let syncs = |f: &[DataFrame]| f.iter().filter(|f| f.flags & 0x10 != 0).count();
    // Snapshot A: 40 changed bytes in frames of at most 30 bytes → several frames.
    let a: Vec<u8> = (1..=40).collect();
    n.block_mut(0).unwrap().write(2, &a).unwrap();
    let first = n.transmit(1, 30, 1);
    assert_eq!((first.len(), syncs(&first)), (1, 0));
    assert!(n.has_pending(1));
    // Change B while A is still being sent: the call that ends A starts and sends B.
    n.block_mut(0).unwrap().write(43, &[9]).unwrap();
    let rest = n.transmit(1, 30, 100);
    assert_eq!(syncs(&rest), 2, "A's end and all of B: {rest:?}");
    assert!(!n.has_pending(1));
    assert_eq!(rest.last().unwrap().addr, 43);
    // Nothing changed since: nothing more to send.
    assert!(n.transmit(1, 30, 100).is_empty());
}
