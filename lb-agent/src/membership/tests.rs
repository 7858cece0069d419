//! Members driven over real UDP sockets on loopback addresses (127.77.<test>.<node>),
//! each test with its own addresses so tests run in parallel.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::watch, time::timeout};

use super::*;

const PORT: u16 = 17947;

fn key(byte: u8) -> GossipKey {
    GossipKey::new(vec![byte; 32]).expect("long enough")
}

fn peer(test: u8, node: u8) -> Peer {
    Peer {
        name: format!("node{node}"),
        addr: SocketAddrV4::new(Ipv4Addr::new(127, 77, test, node), PORT),
    }
}

fn settings(test: u8, node: u8, nodes: u8, key: GossipKey) -> Settings {
    Settings {
        local: peer(test, node),
        peers: (1..=nodes).map(|other| peer(test, other)).collect(),
        key,
        timing: Timing::default(),
    }
}

async fn cluster(test: u8, nodes: u8) -> Vec<Membership> {
    let mut members = Vec::new();
    for node in 1..=nodes {
        let membership = Membership::start(settings(test, node, nodes, key(1)))
            .await
            .expect("bind on loopback");
        members.push(membership);
    }
    members
}

/// Waits until `check` holds for the view, failing after `limit`; returns the time taken.
async fn until(
    view: &mut watch::Receiver<View>,
    limit: Duration,
    what: &str,
    check: impl Fn(&View) -> bool,
) -> Duration {
    let start = Instant::now();
    timeout(limit, view.wait_for(|view| check(view)))
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
        .expect("membership task alive");
    start.elapsed()
}

fn all_up(view: &View) -> bool {
    view.settled && view.members.values().all(|member| member.liveness.is_up())
}

async fn joined(members: &[Membership]) {
    for member in members {
        until(
            &mut member.view(),
            Duration::from_secs(3),
            "everyone alive",
            all_up,
        )
        .await;
    }
}

#[tokio::test]
async fn three_members_join_and_see_each_other_alive() {
    let members = cluster(1, 3).await;
    joined(&members).await;
    let view = members[0].view().borrow().clone();
    assert_eq!(view.local, "node1");
    assert_eq!(
        view.members.keys().collect::<Vec<_>>(),
        ["node1", "node2", "node3"]
    );
    assert!(view.members["node2"].generation.is_some());
    assert!(view.down().is_empty());
    for member in &members {
        let counters = member.counters();
        assert!(counters.accepted.load(Ordering::Relaxed) > 0);
        assert!(counters.dropped().iter().all(|(_, count)| *count == 0));
    }
}

#[tokio::test]
async fn a_crashed_member_is_declared_down_in_under_a_second() {
    let mut members = cluster(2, 3).await;
    joined(&members).await;
    // Let a few probe rounds pass so the crash does not land right after joining.
    tokio::time::sleep(Duration::from_millis(350)).await;
    drop(members.pop());
    let crashed = Instant::now();
    for member in &members {
        until(
            &mut member.view(),
            Duration::from_secs(3),
            "node3 down",
            |view| view.liveness("node3") == Liveness::Down,
        )
        .await;
    }
    let slowest = crashed.elapsed();
    eprintln!("crash of node3 detected by both peers after {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "detection took {slowest:?}"
    );
    assert!(slowest <= Timing::default().worst_case_detection(3) + Duration::from_millis(100));
    let view = members[0].view().borrow().clone();
    assert_eq!(view.down(), ["node3".to_owned()].into());
    assert_eq!(view.liveness("node2"), Liveness::Alive);
}

#[tokio::test]
async fn a_member_that_leaves_is_down_at_once_and_a_restart_rejoins() {
    let mut members = cluster(3, 3).await;
    joined(&members).await;
    let leaving = members.pop().expect("three members");
    leaving.shutdown().await;
    let left_after = until(
        &mut members[0].view(),
        Duration::from_secs(2),
        "node3 left",
        |view| view.liveness("node3") == Liveness::Down,
    )
    .await;
    eprintln!("graceful leave of node3 seen after {left_after:?}");
    assert!(left_after < Duration::from_millis(250), "{left_after:?}");
    let before = members[0].view().borrow().members["node3"].generation;
    // The same node starts again: a new boot epoch, so a new member.
    let restarted = Membership::start(settings(3, 3, 3, key(1)))
        .await
        .expect("rebind");
    let back_after = until(
        &mut members[0].view(),
        Duration::from_secs(3),
        "node3 back",
        |view| view.liveness("node3") == Liveness::Alive,
    )
    .await;
    eprintln!("restarted node3 alive again after {back_after:?}");
    let after = members[0].view().borrow().members["node3"].generation;
    assert!(after > before, "{after:?} > {before:?}");
    until(
        &mut restarted.view(),
        Duration::from_secs(3),
        "restarted sees all",
        all_up,
    )
    .await;
}

#[tokio::test]
async fn leave_and_rejoin_keep_the_handle_usable() {
    let members = cluster(4, 2).await;
    joined(&members).await;
    members[1].leave().await;
    until(
        &mut members[0].view(),
        Duration::from_secs(2),
        "node2 left",
        |view| view.liveness("node2") == Liveness::Down,
    )
    .await;
    assert_eq!(members[1].view().borrow().liveness("node2"), Liveness::Down);
    members[1].rejoin().await;
    until(
        &mut members[0].view(),
        Duration::from_secs(3),
        "node2 back",
        |view| view.liveness("node2") == Liveness::Alive,
    )
    .await;
    until(
        &mut members[1].view(),
        Duration::from_secs(3),
        "node2 rejoined",
        all_up,
    )
    .await;
}

#[tokio::test]
async fn a_member_with_another_key_never_joins_and_is_counted() {
    let good = Membership::start(settings(5, 1, 2, key(1)))
        .await
        .expect("bind");
    let stranger = Membership::start(settings(5, 2, 2, key(2)))
        .await
        .expect("bind");
    let mut view = good.view();
    until(&mut view, Duration::from_secs(3), "settled", |view| {
        view.settled
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(good.view().borrow().liveness("node2"), Liveness::Down);
    assert!(good.counters().wrong_key.load(Ordering::Relaxed) > 0);
    assert!(stranger.counters().wrong_key.load(Ordering::Relaxed) > 0);
    assert_eq!(good.counters().accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn forged_truncated_replayed_and_unknown_datagrams_are_dropped_and_counted() {
    // node1 lists node2 as a peer; this test plays node2 with a raw socket.
    let member = Membership::start(settings(6, 1, 2, key(1)))
        .await
        .expect("bind");
    let target = peer(6, 1).addr;
    let impostor = UdpSocket::bind(peer(6, 2).addr).await.expect("bind node2");
    let mut sealer = auth::Sealer::new(key(1), "node2", boot_epoch());
    let genuine = sealer.seal(b"not a SWIM message");
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    let mut stranger = auth::Sealer::new(key(1), "node7", 1);
    let datagrams = [
        &genuine[..],
        &genuine[..],
        &forged[..],
        &genuine[..10],
        &auth::Sealer::new(key(3), "node2", 1).seal(b"x")[..],
        &stranger.seal(b"x")[..],
    ];
    for datagram in datagrams {
        impostor.send_to(datagram, target).await.expect("send");
    }
    let counters = member.counters();
    let expected = [
        ("unknown_sender", 2),
        ("replayed", 1),
        ("forged", 1),
        ("truncated", 1),
        ("wrong_key", 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let dropped = counters.dropped();
        let count = |label| {
            dropped
                .iter()
                .find(|(name, _)| *name == label)
                .map(|(_, n)| *n)
        };
        if expected
            .iter()
            .all(|(label, want)| count(*label) == Some(*want))
        {
            break;
        }
        assert!(Instant::now() < deadline, "counters: {dropped:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counters.accepted.load(Ordering::Relaxed), 0);
    assert_eq!(member.view().borrow().liveness("node2"), Liveness::Down);
}

#[test]
fn worst_case_detection_follows_the_settings() {
    let timing = Timing::default();
    assert_eq!(timing.worst_case_detection(3), Duration::from_millis(800));
    assert_eq!(timing.worst_case_detection(2), Duration::from_millis(600));
    assert!(timing.worst_case_detection(3) < Duration::from_secs(1));
}

#[test]
fn static_views_have_everyone_alive() {
    let view = View::all_alive("node1", &[peer(9, 1), peer(9, 2)]);
    assert!(view.settled);
    assert!(view.down().is_empty());
    assert_eq!(view.liveness("node2"), Liveness::Alive);
    assert_eq!(view.liveness("node9"), Liveness::Down);
}

#[tokio::test]
async fn a_new_peer_list_admits_new_nodes_and_drops_removed_ones() {
    let known = |nodes: &[u8]| nodes.iter().map(|&node| peer(20, node)).collect::<Vec<_>>();
    let first = Membership::start(Settings {
        peers: known(&[1, 2]),
        ..settings(20, 1, 2, key(1))
    })
    .await
    .expect("bind node1");
    let others = [
        Membership::start(settings(20, 2, 3, key(1)))
            .await
            .expect("bind node2"),
        Membership::start(settings(20, 3, 3, key(1)))
            .await
            .expect("bind node3"),
    ];
    let mut view = first.view();
    until(&mut view, Duration::from_secs(3), "node2 alive", |view| {
        view.liveness("node2") == Liveness::Alive
    })
    .await;
    assert!(
        !view.borrow().members.contains_key("node3"),
        "not a peer yet"
    );
    first.set_peers(known(&[1, 2, 3])).await;
    until(&mut view, Duration::from_secs(3), "node3 alive", |view| {
        view.liveness("node3") == Liveness::Alive
    })
    .await;
    first.set_peers(known(&[1, 2])).await;
    until(&mut view, Duration::from_secs(3), "node3 gone", |view| {
        !view.members.contains_key("node3")
    })
    .await;
    drop(others);
}
