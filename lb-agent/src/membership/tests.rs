//! Members driven over real UDP sockets on loopback addresses (127.77.<test>.<node>),
//! each test with its own addresses so tests run in parallel, on a port of this process
//! so that two runs of the suite at once (two checkouts on one machine) never meet.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::watch, task::JoinHandle, time::timeout};

use super::{driver::MAX_TRANSMISSIONS, *};

/// How long a test waits for an outcome whose timing it does not assert: ample on a
/// loaded machine, and still bounded so that a broken protocol fails the test.
const PATIENCE: Duration = Duration::from_secs(10);
/// Added to protocol bounds: message handling, wake-ups, the test's own polling.
const MARGIN: Duration = Duration::from_millis(100);
/// Node1's suspicion timeout in the tests that cut it off: long enough, even on a loaded
/// machine, for its suspicions to be lost before they would turn into downs.
const SLOW_SUSPICION: Duration = Duration::from_secs(3);

fn key(byte: u8) -> GossipKey {
    GossipKey::new(vec![byte; 32]).expect("long enough")
}

/// The gossip port of every member in this run: one per process id, in 20000..40000.
fn port() -> u16 {
    20_000 + (std::process::id() % 20_000) as u16
}

fn peer(test: u8, node: u8) -> Peer {
    Peer {
        name: format!("node{node}"),
        addr: SocketAddrV4::new(Ipv4Addr::new(127, 77, test, node), port()),
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

/// Starts a member on an address whose previous member just handed over: that member's
/// thread keeps its socket until its next event, as a stopping agent's process does
/// until it exits, so the bind is retried while the address is in use.
async fn start_when_free(settings: Settings) -> Membership {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match Membership::start(settings.clone()).await {
            Ok(membership) => return membership,
            Err(MembershipError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(error) => panic!("rebind: {error:?}"),
        }
    }
}

async fn cluster(test: u8, nodes: u8) -> Vec<Membership> {
    cluster_with(test, nodes, |_| {}).await
}

/// Node1 of three gives up on its peers only after [`SLOW_SUSPICION`].
async fn cluster_with_slow_node1(test: u8) -> Vec<Membership> {
    cluster_with(test, 3, |settings| {
        if settings.local.name == "node1" {
            settings.timing.suspicion = SLOW_SUSPICION;
        }
    })
    .await
}

async fn cluster_with(test: u8, nodes: u8, adjust: impl Fn(&mut Settings)) -> Vec<Membership> {
    let mut members = Vec::new();
    for node in 1..=nodes {
        let mut settings = settings(test, node, nodes, key(1));
        adjust(&mut settings);
        let membership = Membership::start(settings).await.expect("bind on loopback");
        members.push(membership);
    }
    members
}

/// Time this test's runtime could not run on time because the machine was busy with
/// other work, measured by a ticker on the runtime the members run on.
///
/// A chain of protocol steps inside a window (timers firing, datagrams handled) is
/// delayed by at most the stalls in that window, so a duration measured across it is held
/// to its bound once they are taken out: as strict as the bound on an idle machine, and
/// not failing for the machine's load alone.
struct Stalls {
    micros: Arc<AtomicU64>,
    ticker: JoinHandle<()>,
}

impl Stalls {
    const TICK: Duration = Duration::from_millis(5);
    /// Lateness up to this is the timer wheel's granularity, not a stall.
    const JITTER: Duration = Duration::from_millis(2);

    fn start() -> Self {
        let micros = Arc::new(AtomicU64::new(0));
        let total = Arc::clone(&micros);
        let ticker = tokio::spawn(async move {
            loop {
                let asleep = Instant::now();
                tokio::time::sleep(Self::TICK).await;
                let late = asleep.elapsed().saturating_sub(Self::TICK);
                if late > Self::JITTER {
                    total.fetch_add(late.as_micros() as u64, Ordering::Relaxed);
                }
            }
        });
        Self { micros, ticker }
    }

    fn total(&self) -> Duration {
        Duration::from_micros(self.micros.load(Ordering::Relaxed))
    }

    /// `elapsed` less the stalls so far.
    fn discount(&self, elapsed: Duration) -> Duration {
        elapsed.saturating_sub(self.total())
    }
}

impl Drop for Stalls {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

/// Waits until `check` holds for the view, failing after `limit`; returns the time taken.
async fn until(
    view: &mut watch::Receiver<View>,
    limit: Duration,
    what: &str,
    check: impl Fn(&View) -> bool,
) -> Duration {
    let start = Instant::now();
    if timeout(limit, view.wait_for(|view| check(view)))
        .await
        .is_err()
    {
        panic!(
            "timed out after {limit:?} waiting for {what}; the view: {:?}",
            *view.borrow()
        );
    }
    start.elapsed()
}

fn all_up(view: &View) -> bool {
    view.settled && view.members.values().all(|member| member.liveness.is_up())
}

fn all_alive(view: &View) -> bool {
    view.settled
        && view
            .members
            .values()
            .all(|member| member.liveness == Liveness::Alive)
}

/// Every datagram to or from `member` is lost from now on, or no longer.
/// Waits until every member holds `node1` down.
async fn until_node1_down_on(members: &[Membership]) {
    for member in members {
        until(&mut member.view(), PATIENCE, "node1 down", |view| {
            view.liveness("node1") == Liveness::Down
        })
        .await;
    }
}

/// Waits until every member sees every member alive; prints and returns the time since
/// `healed`, less the machine's stalls.
async fn all_alive_after(
    members: &[Membership],
    healed: Instant,
    stalls: &Stalls,
    what: &str,
) -> Duration {
    for member in members {
        until(
            &mut member.view(),
            PATIENCE,
            "everyone alive after the heal",
            all_alive,
        )
        .await;
    }
    let converged = healed.elapsed();
    eprintln!(
        "{what}: every node sees every node alive after {converged:?} (the machine stalled the test for {:?})",
        stalls.total()
    );
    stalls.discount(converged)
}

fn cut_link(member: &Membership, cut: bool) {
    member.link_cut.store(cut, Ordering::Relaxed);
}

fn suspects_a_peer(view: &View) -> bool {
    view.members
        .values()
        .any(|member| member.liveness == Liveness::Suspect)
}

/// Waits until `member`, cut off, suspects a peer and has spent that suspicion's
/// retransmissions on datagrams that were lost, as when a link goes down: nobody will
/// hear of the suspicion, so nobody refutes it.
async fn suspicion_lost(member: &Membership) {
    until(
        &mut member.view(),
        PATIENCE,
        "a peer suspected",
        suspects_a_peer,
    )
    .await;
    let counters = member.counters();
    let spent = counters.send_errors.load(Ordering::Relaxed) + u64::from(MAX_TRANSMISSIONS);
    let started = Instant::now();
    while counters.send_errors.load(Ordering::Relaxed) < spent {
        assert!(started.elapsed() < PATIENCE, "too few datagrams sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails unless `member` still holds a peer under suspicion: the state the healing
/// tests must start from.
fn still_suspecting(member: &Membership) {
    let view = member.view().borrow().clone();
    assert!(
        suspects_a_peer(&view),
        "the suspicion timed out before the link healed: {view:?}"
    );
}

async fn joined(members: &[Membership]) {
    for member in members {
        until(&mut member.view(), PATIENCE, "everyone alive", all_up).await;
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
    let stalls = Stalls::start();
    drop(members.pop());
    let crashed = Instant::now();
    for member in &members {
        until(&mut member.view(), PATIENCE, "node3 down", |view| {
            view.liveness("node3") == Liveness::Down
        })
        .await;
    }
    let slowest = crashed.elapsed();
    let detection = stalls.discount(slowest);
    eprintln!(
        "crash of node3 detected by both peers after {slowest:?} ({detection:?} without the {:?} the machine stalled the test)",
        stalls.total()
    );
    let bound = Timing::default().worst_case_detection(3) + MARGIN;
    assert!(
        detection <= bound,
        "detection took {detection:?}, more than the settings allow ({bound:?})"
    );
    assert!(
        detection < Duration::from_secs(1),
        "detection took {detection:?}"
    );
    let view = members[0].view().borrow().clone();
    assert_eq!(view.down(), ["node3".to_owned()].into());
    assert_eq!(view.liveness("node2"), Liveness::Alive);
}

#[tokio::test]
async fn a_member_that_hands_over_is_known_as_handing_over_at_once_and_a_restart_rejoins() {
    let mut members = cluster(3, 3).await;
    joined(&members).await;
    let leaving = members.pop().expect("three members");
    let stalls = Stalls::start();
    leaving.hand_over().await;
    let left_after = until(&mut members[0].view(), PATIENCE, "node3 left", |view| {
        view.liveness("node3") == Liveness::HandingOver
    })
    .await;
    // The flag travels with the gossip: every peer keeps the node's data path.
    until(&mut members[1].view(), PATIENCE, "node2 saw it", |view| {
        view.liveness("node3") == Liveness::HandingOver
    })
    .await;
    assert!(members[0].view().borrow().down().is_empty());
    eprintln!(
        "handover of node3 seen after {left_after:?} (the machine stalled the test for {:?})",
        stalls.total()
    );
    let left_after = stalls.discount(left_after);
    assert!(left_after < Duration::from_millis(250), "{left_after:?}");
    let before = members[0].view().borrow().members["node3"].generation;
    // The same node starts again: a new boot epoch, so a new member.
    let restarted = start_when_free(settings(3, 3, 3, key(1))).await;
    let back_after = until(&mut members[0].view(), PATIENCE, "node3 back", |view| {
        view.liveness("node3") == Liveness::Alive
    })
    .await;
    eprintln!("restarted node3 alive again after {back_after:?}");
    let after = members[0].view().borrow().members["node3"].generation;
    assert!(after > before, "{after:?} > {before:?}");
    until(
        &mut restarted.view(),
        PATIENCE,
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
    // A leave for a link outage is not a handover: the node's traffic is gone.
    until(&mut members[0].view(), PATIENCE, "node2 left", |view| {
        view.liveness("node2") == Liveness::Down
    })
    .await;
    assert_eq!(members[1].view().borrow().liveness("node2"), Liveness::Down);
    members[1].rejoin().await;
    until(&mut members[0].view(), PATIENCE, "node2 back", |view| {
        view.liveness("node2") == Liveness::Alive
    })
    .await;
    until(&mut members[1].view(), PATIENCE, "node2 rejoined", all_up).await;
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
    until(&mut view, PATIENCE, "settled", |view| view.settled).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(good.view().borrow().liveness("node2"), Liveness::Down);
    assert!(good.counters().wrong_key.load(Ordering::Relaxed) > 0);
    assert!(stranger.counters().wrong_key.load(Ordering::Relaxed) > 0);
    assert_eq!(good.counters().accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn bad_and_unreadable_datagrams_are_dropped_and_counted_by_reason() {
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
    // A release two ahead: the same header layout with another version byte.
    let mut next_version = auth::Sealer::new(key(1), "node2", boot_epoch()).seal(b"x");
    next_version[2] += 1;
    let datagrams = [
        &genuine[..],
        &genuine[..],
        &forged[..],
        &genuine[..10],
        &auth::Sealer::new(key(3), "node2", 1).seal(b"x")[..],
        &stranger.seal(b"x")[..],
        &next_version[..],
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
        ("version", 1),
        ("malformed", 0),
    ];
    let deadline = Instant::now() + PATIENCE;
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
    until(&mut view, PATIENCE, "node2 alive", |view| {
        view.liveness("node2") == Liveness::Alive
    })
    .await;
    assert!(
        !view.borrow().members.contains_key("node3"),
        "not a peer yet"
    );
    first.set_peers(known(&[1, 2, 3])).await;
    until(&mut view, PATIENCE, "node3 alive", |view| {
        view.liveness("node3") == Liveness::Alive
    })
    .await;
    first.set_peers(known(&[1, 2])).await;
    until(&mut view, PATIENCE, "node3 gone", |view| {
        !view.members.contains_key("node3")
    })
    .await;
    drop(others);
}

/// What the agent does when its LAN link goes down and comes back (leave, rejoin), with
/// the node cut off in between: the suspicion it raised just before the cut reached no
/// one, so nobody refuted it, and it must not outlive the rejoin.
#[tokio::test]
async fn a_healed_link_converges_to_all_alive_on_every_node() {
    let members = cluster_with_slow_node1(7).await;
    joined(&members).await;
    let isolated = &members[0];
    cut_link(isolated, true);
    suspicion_lost(isolated).await;
    still_suspecting(isolated);
    // The agent notices that its link is down and leaves.
    isolated.leave().await;
    until_node1_down_on(&members[1..]).await;
    cut_link(isolated, false);
    let stalls = Stalls::start();
    isolated.rejoin().await;
    let healed = Instant::now();
    // Peers up before the outage stay up while their answers are awaited, so the VIP
    // elections on this node do not flip to it meanwhile.
    let rejoined = isolated.view().borrow().clone();
    assert!(
        rejoined
            .members
            .values()
            .all(|member| member.liveness.is_up()),
        "{rejoined:?}"
    );
    let converged = all_alive_after(&members, healed, &stalls, "healed link").await;
    // Join requests and their answers: a round trip.
    assert!(converged < Duration::from_secs(1), "{converged:?}");
}

/// A node cut off without noticing it (no leave): the cluster declares it down while its
/// own suspicions of its peers are still pending (it gives up on peers more slowly than
/// they do on it). Once the cut heals it learns it was declared down and rejoins as a new
/// generation; the suspicions it raised while cut off must not outlive that.
#[tokio::test]
async fn a_healed_partition_converges_to_all_alive_on_every_node() {
    let members = cluster_with_slow_node1(8).await;
    joined(&members).await;
    let isolated = &members[0];
    cut_link(isolated, true);
    suspicion_lost(isolated).await;
    until_node1_down_on(&members[1..]).await;
    still_suspecting(isolated);
    cut_link(isolated, false);
    let stalls = Stalls::start();
    let healed = Instant::now();
    let converged = all_alive_after(&members, healed, &stalls, "healed partition").await;
    // Node1 probes a peer, which answers that node1 is down; node1 rejoins, a round trip.
    // A join request of the next round at the latest.
    let limit = Timing::default().rejoin_interval + MARGIN;
    assert!(converged < limit, "{converged:?}");
}

fn generation(member: &Membership, name: &str) -> Option<u64> {
    member.view().borrow().members[name].generation
}

/// A node cut off long enough that it holds every peer down while they hold it down (a
/// partition of one). On the heal only that node may rejoin as a new generation: its
/// verdicts are stale, and answering a peer with them would make that peer rejoin too,
/// unsettling the side that never lost touch.
#[tokio::test]
async fn a_node_that_held_every_peer_down_rejoins_alone_when_the_partition_heals() {
    let members = cluster(10, 3).await;
    joined(&members).await;
    let isolated = &members[0];
    let others = &members[1..];
    let before: Vec<Option<u64>> = others
        .iter()
        .map(|member| generation(member, &member.view().borrow().local))
        .collect();
    let isolated_before = generation(isolated, "node1");
    cut_link(isolated, true);
    until(&mut isolated.view(), PATIENCE, "every peer down", |view| {
        view.liveness("node2") == Liveness::Down && view.liveness("node3") == Liveness::Down
    })
    .await;
    until_node1_down_on(others).await;
    cut_link(isolated, false);
    let stalls = Stalls::start();
    let healed = Instant::now();
    let converged = all_alive_after(&members, healed, &stalls, "partition of one healed").await;
    let after: Vec<Option<u64>> = others
        .iter()
        .map(|member| generation(member, &member.view().borrow().local))
        .collect();
    assert_eq!(after, before, "a node that never lost touch rejoined");
    assert!(generation(isolated, "node1") > isolated_before);
    for member in others {
        assert_eq!(
            generation(member, "node1"),
            generation(isolated, "node1"),
            "the peers know node1's new generation"
        );
    }
    // A join request of the next round at the latest, then a round trip.
    let limit = Timing::default().rejoin_interval + MARGIN;
    assert!(converged < limit, "{converged:?}");
}
