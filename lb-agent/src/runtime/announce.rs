//! What the ARP announcer is told: the VIPs this node owns, and when to announce all of
//! them again.
//!
//! During a partition each side elects its own owner of a VIP, and both announce it.
//! When the partition heals one of them keeps it; unless that owner announces it again,
//! the LAN (clients' ARP caches, switches' FDBs) keeps the MAC the other side announced
//! until the entry is re-checked, about 10 s for a Linux client. A heal shows only as
//! membership gaining members: a peer up again or with a new generation (it rejoined
//! after being declared down), or this node rejoining. The rejoining node's view is
//! unsettled for a few milliseconds, which empties and then refills its owned set (and
//! so starts takeover bursts), but the loop reads only the latest view and the announcer
//! only the latest set, so the re-announcement must not depend on either catching that
//! moment: on every gain, every owner announces all its VIPs again. A node that lost a VIP at the heal only stops
//! answering for it (its remaining timers for it are dropped): ARP has no withdrawal,
//! and the owner's burst overwrites what the LAN learnt from it.

use std::collections::BTreeSet;

use tokio::sync::watch;

use crate::{arp, membership::View};

/// The members of `after` that are up and were not in `before`: absent, not up, or up
/// as another generation (restarted, or rejoined after being declared down, which
/// `before` may never have shown). This node counts too, when it rejoined.
pub fn gained(before: &View, after: &View) -> BTreeSet<String> {
    after
        .members
        .iter()
        .filter(|(_, now)| now.liveness.is_up())
        .filter(|(name, now)| {
            before.members.get(*name).is_none_or(|then| {
                !then.liveness.is_up()
                    || matches!((then.generation, now.generation), (Some(then), Some(now)) if then != now)
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Hands `vips` to the announcer, asking for all of them to be announced again if
/// `reannounce`. Returns whether the set of VIPs changed.
///
/// A request goes out with an empty set too: a rejoin empties the set while its view is
/// unsettled and refills it milliseconds later, and the announcer, which reads only the
/// latest set, may see neither the empty one nor any change, only the request.
pub fn publish(owned: &watch::Sender<arp::Owned>, vips: arp::OwnedVips, reannounce: bool) -> bool {
    let mut vips_changed = false;
    owned.send_if_modified(|current| {
        vips_changed = !current.vips.keys().eq(vips.keys());
        let changed = current.vips != vips || reannounce;
        current.vips = vips;
        current.reannounce += u64::from(reannounce);
        changed
    });
    vips_changed
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, SocketAddrV4},
        time::SystemTime,
    };

    use super::*;
    use crate::{election::Liveness, membership::MemberView};

    const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);

    /// A settled view from `local` of `node1`, `node2`, ... in turn, each with its
    /// liveness and generation.
    fn view(local: &str, members: &[(Liveness, Option<u64>)]) -> View {
        let members = members
            .iter()
            .enumerate()
            .map(|(index, &(liveness, generation))| {
                let name = format!("node{}", index + 1);
                let member = MemberView {
                    address: SocketAddrV4::new(Ipv4Addr::new(192, 168, 8, 11 + index as u8), 7947),
                    liveness,
                    incarnation: 0,
                    generation,
                    since: SystemTime::UNIX_EPOCH,
                };
                (name, member)
            })
            .collect();
        View {
            local: local.to_owned(),
            members,
            settled: true,
        }
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    use Liveness::{Alive, Down, HandingOver, Suspect};

    #[test]
    fn a_heal_seen_by_the_majority_gains_the_cut_off_node() {
        let split = view(
            "node2",
            &[(Down, Some(1)), (Alive, Some(2)), (Alive, Some(3))],
        );
        // Declared down, node1 rejoined as a new generation.
        let healed = view(
            "node2",
            &[(Alive, Some(4)), (Alive, Some(2)), (Alive, Some(3))],
        );
        assert_eq!(gained(&split, &healed), names(&["node1"]));
    }

    #[test]
    fn a_heal_seen_by_the_cut_off_node_gains_without_its_unsettled_moment() {
        let alone = view(
            "node1",
            &[(Alive, Some(1)), (Down, Some(2)), (Down, Some(3))],
        );
        // The rejoin's unsettled view lasted 3 ms and was never read: the next view read
        // is settled again, with node1's new generation and its peers back.
        let healed = view(
            "node1",
            &[(Alive, Some(4)), (Alive, Some(2)), (Alive, Some(3))],
        );
        assert_eq!(gained(&alone, &healed), names(&["node1", "node2", "node3"]));
        // A rejoin that kept every peer (a short link flap) still shows by the generation.
        let all = view("node1", &[(Alive, Some(1)), (Alive, Some(2))]);
        let rejoined = view("node1", &[(Alive, Some(4)), (Alive, Some(2))]);
        assert_eq!(gained(&all, &rejoined), names(&["node1"]));
    }

    #[test]
    fn suspicion_losses_and_handovers_gain_nothing_but_a_new_agent_does() {
        let all = view("node1", &[(Alive, Some(1)), (Alive, Some(2))]);
        let suspect = view("node1", &[(Alive, Some(1)), (Suspect, Some(2))]);
        let down = view("node1", &[(Alive, Some(1)), (Down, Some(2))]);
        let handing_over = view("node1", &[(Alive, Some(1)), (HandingOver, Some(2))]);
        let replaced = view("node1", &[(Alive, Some(1)), (Alive, Some(5))]);
        assert!(gained(&all, &all).is_empty());
        assert!(gained(&all, &suspect).is_empty());
        assert!(gained(&suspect, &all).is_empty());
        assert!(gained(&all, &down).is_empty());
        assert!(gained(&all, &handing_over).is_empty());
        assert_eq!(gained(&handing_over, &replaced), names(&["node2"]));
        // A node never heard from (no generation) coming up joins.
        let unknown = view("node1", &[(Alive, Some(1)), (Down, None)]);
        assert_eq!(gained(&unknown, &all), names(&["node2"]));
    }

    #[test]
    fn a_reannouncement_reaches_the_announcer_even_when_the_vips_stay_the_same() {
        let settings = arp::Settings::default();
        let vips = arp::OwnedVips::from([(VIP, settings)]);
        let (owned, mut announcer) = watch::channel(arp::Owned::default());
        assert!(publish(&owned, vips.clone(), false));
        announcer.borrow_and_update();
        // Unchanged, nothing asked: the announcer is not woken.
        assert!(!publish(&owned, vips.clone(), false));
        assert!(!announcer.has_changed().unwrap());
        // Unchanged, but membership gained a member: a new request with the same VIPs.
        assert!(!publish(&owned, vips.clone(), true));
        assert!(announcer.has_changed().unwrap());
        let seen = announcer.borrow_and_update().clone();
        assert_eq!(
            seen,
            arp::Owned {
                vips: vips.clone(),
                reannounce: 1
            }
        );
        // A rejoin: its unsettled view (nothing owned, new generation) asks, and the
        // settled one right after it refills the set. An announcer that reads only the
        // last of them still sees the request.
        assert!(publish(&owned, arp::OwnedVips::new(), true));
        assert!(publish(&owned, vips.clone(), false));
        let seen = announcer.borrow_and_update().clone();
        assert_eq!(
            seen,
            arp::Owned {
                vips,
                reannounce: 2
            }
        );
    }
}
