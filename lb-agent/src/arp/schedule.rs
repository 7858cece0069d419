//! When to send gratuitous ARP: a burst when a VIP is taken over, and optionally a
//! periodic refresh of every owned VIP so switches whose FDB ages out keep the port.
//!
//! Each VIP has its own [`Settings`]: the node's, or those of its address pool
//! (`AddressPool.spec.announcement.garp` in Kubernetes mode).
//!
//! A VIP kept through a partition was announced on the other side too, by the owner
//! that side elected, so when the partition heals the LAN may have learnt it there. The
//! runtime then asks for every owned VIP to be announced again ([`Owned::reannounce`]):
//! a VIP this node still owns gets no takeover burst otherwise.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::{Duration, Instant},
};

/// Gratuitous ARP timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Rounds sent after the immediate one at takeover.
    pub garp_repeats: u32,
    /// Time between takeover rounds.
    pub garp_interval: Duration,
    /// Re-announce every owned VIP this often; `None` turns it off.
    pub refresh: Option<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            garp_repeats: 3,
            garp_interval: Duration::from_millis(500),
            refresh: None,
        }
    }
}

/// The owned VIPs, each with the settings it is announced with.
pub type OwnedVips = BTreeMap<Ipv4Addr, Settings>;

/// What the announcer follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    pub vips: OwnedVips,
    /// Raised each time every owned VIP is to get a fresh takeover burst, owned before
    /// or not: after membership gained a member, which may be a partition healing.
    pub reannounce: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Schedule {
    vips: BTreeMap<Ipv4Addr, Timers>,
    /// The [`Owned::reannounce`] last acted on.
    reannounce: u64,
}

/// One owned VIP's timers.
#[derive(Debug, Clone, Copy)]
struct Timers {
    settings: Settings,
    /// The takeover rounds still to send, if any.
    burst: Option<Burst>,
    next_refresh: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    due: Instant,
    /// Rounds sent so far; the burst ends after `1 + garp_repeats`.
    sent: u32,
}

impl Timers {
    /// A takeover: a burst due at once, the first refresh one period later.
    fn takeover(settings: Settings, now: Instant) -> Self {
        Self {
            settings,
            burst: Some(Burst { due: now, sent: 0 }),
            next_refresh: settings.refresh.map(|every| now + every),
        }
    }

    /// New settings for a VIP still owned: a burst under way goes on under them (its
    /// next rounds at the new interval, until the new repeats are sent), a changed
    /// refresh period counts from now.
    fn adopt(&mut self, settings: Settings, now: Instant) {
        if settings == self.settings {
            return;
        }
        if self
            .burst
            .is_some_and(|burst| burst.sent > settings.garp_repeats)
        {
            self.burst = None;
        }
        if settings.refresh != self.settings.refresh {
            self.next_refresh = settings.refresh.map(|every| now + every);
        }
        self.settings = settings;
    }

    /// Whether the VIP is to be announced now, advancing the timers.
    fn fire(&mut self, now: Instant) -> bool {
        let mut due = false;
        if let Some(burst) = &mut self.burst
            && burst.due <= now
        {
            due = true;
            burst.sent = burst.sent.saturating_add(1);
            // From now, not from the missed deadline: a stalled thread must not catch up
            // with a volley of back-to-back rounds.
            burst.due = now + self.settings.garp_interval;
            if burst.sent > self.settings.garp_repeats {
                self.burst = None;
            }
        }
        if let (Some(next), Some(every)) = (self.next_refresh, self.settings.refresh)
            && next <= now
        {
            due = true;
            self.next_refresh = Some(now + every);
        }
        due
    }
}

impl Schedule {
    /// Follows `latest`: [`Self::owned_changed`], then a fresh burst for every owned VIP
    /// if a re-announcement was asked for since the last call.
    pub fn follow(&mut self, latest: &Owned, now: Instant) {
        self.owned_changed(&latest.vips, now);
        if latest.reannounce != self.reannounce {
            self.reannounce = latest.reannounce;
            self.restart(now);
        }
    }

    /// Follows the owned VIPs: a burst, due at once, for each VIP in `latest` that was
    /// not owned; timers dropped for VIPs no longer owned; new settings adopted by the
    /// others.
    fn owned_changed(&mut self, latest: &OwnedVips, now: Instant) {
        self.vips.retain(|vip, _| latest.contains_key(vip));
        for (&vip, &settings) in latest {
            self.vips
                .entry(vip)
                .and_modify(|timers| timers.adopt(settings, now))
                .or_insert_with(|| Timers::takeover(settings, now));
        }
    }

    /// Starts a fresh burst, due at once, for every owned VIP: after the link was down or
    /// a partition healed, the LAN may have learnt the VIPs elsewhere.
    pub fn restart(&mut self, now: Instant) {
        for timers in self.vips.values_mut() {
            *timers = Timers::takeover(timers.settings, now);
        }
    }

    /// The VIPs to announce now (each once), advancing their timers.
    pub fn due(&mut self, now: Instant) -> BTreeSet<Ipv4Addr> {
        self.vips
            .iter_mut()
            .filter_map(|(&vip, timers)| timers.fire(now).then_some(vip))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
    const B: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 53);
    const MS: Duration = Duration::from_millis(1);

    fn owned(vips: &[Ipv4Addr], settings: Settings) -> OwnedVips {
        vips.iter().map(|&vip| (vip, settings)).collect()
    }

    /// Runs the schedule in 10 ms steps up to `until_ms`; returns when each VIP was due.
    fn timeline(schedule: &mut Schedule, start: Instant, until_ms: u64) -> Vec<(u64, Ipv4Addr)> {
        let mut sent = Vec::new();
        for ms in (0..=until_ms).step_by(10) {
            for vip in schedule.due(start + MS * ms as u32) {
                sent.push((ms, vip));
            }
        }
        sent
    }

    /// The times (ms) at which `of` was announced.
    fn times(sent: &[(u64, Ipv4Addr)], of: Ipv4Addr) -> Vec<u64> {
        sent.iter()
            .filter(|(_, vip)| *vip == of)
            .map(|(ms, _)| *ms)
            .collect()
    }

    #[test]
    fn takeover_sends_at_once_then_repeats_at_the_interval() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        let sent = timeline(&mut schedule, start, 3000);
        assert_eq!(sent, [(0, A), (500, A), (1000, A), (1500, A)]);
    }

    #[test]
    fn vips_already_owned_get_no_new_burst_and_lost_ones_are_cancelled() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        assert_eq!(schedule.due(start), BTreeSet::from([A]));
        let later = start + MS * 100;
        schedule.owned_changed(&owned(&[B], Settings::default()), later);
        let sent = timeline(&mut schedule, later, 3000);
        assert_eq!(sent.iter().filter(|(_, vip)| *vip == A).count(), 0);
        assert_eq!(sent.iter().filter(|(_, vip)| *vip == B).count(), 4);
    }

    #[test]
    fn refresh_announces_every_owned_vip_periodically() {
        let start = Instant::now();
        let settings = Settings {
            garp_repeats: 0,
            garp_interval: MS * 500,
            refresh: Some(MS * 1000),
        };
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A, B], settings), start);
        let sent = timeline(&mut schedule, start, 2500);
        assert_eq!(
            sent,
            [(0, A), (0, B), (1000, A), (1000, B), (2000, A), (2000, B)]
        );
    }

    #[test]
    fn a_restart_sends_a_whole_burst_again_for_every_owned_vip() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        // A's burst is over by 1.5 s; B became owned and is half-way through its burst.
        timeline(&mut schedule, start, 1600);
        let b_owned = start + MS * 1600;
        schedule.owned_changed(&owned(&[A, B], Settings::default()), b_owned);
        timeline(&mut schedule, b_owned, 600);
        let back = start + MS * 3000;
        schedule.restart(back);
        let sent = timeline(&mut schedule, back, 3000);
        assert_eq!(
            sent,
            [
                (0, A),
                (0, B),
                (500, A),
                (500, B),
                (1000, A),
                (1000, B),
                (1500, A),
                (1500, B)
            ]
        );
    }

    #[test]
    fn a_reannouncement_bursts_every_owned_vip_again_and_only_once() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        let mut latest = Owned {
            vips: owned(&[A], Settings::default()),
            reannounce: 0,
        };
        schedule.follow(&latest, start);
        // A's takeover burst is long over when the partition heals, B still owned as well.
        timeline(&mut schedule, start, 2000);
        let healed = start + MS * 5000;
        latest.vips = owned(&[A, B], Settings::default());
        latest.reannounce += 1;
        schedule.follow(&latest, healed);
        let sent = timeline(&mut schedule, healed, 3000);
        assert_eq!(times(&sent, A), [0, 500, 1000, 1500]);
        assert_eq!(times(&sent, B), [0, 500, 1000, 1500]);
        // The same request seen again (any later change of the set) starts nothing.
        let later = healed + MS * 4000;
        latest.vips = owned(&[A], Settings::default());
        schedule.follow(&latest, later);
        assert_eq!(timeline(&mut schedule, later, 3000), []);
    }

    #[test]
    fn no_refresh_means_silence_after_the_burst() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        let sent = timeline(&mut schedule, start, 10_000);
        assert_eq!(sent.len(), 4);
        assert!(sent.iter().all(|&(ms, _)| ms <= 1500));
    }

    #[test]
    fn each_vip_follows_its_own_settings() {
        let start = Instant::now();
        let pool = Settings {
            garp_repeats: 1,
            garp_interval: MS * 200,
            refresh: Some(MS * 2000),
        };
        let mut latest = owned(&[A], Settings::default());
        latest.insert(B, pool);
        let mut schedule = Schedule::default();
        schedule.owned_changed(&latest, start);
        let sent = timeline(&mut schedule, start, 4500);
        assert_eq!(times(&sent, A), [0, 500, 1000, 1500]);
        assert_eq!(times(&sent, B), [0, 200, 2000, 4000]);
    }

    #[test]
    fn new_settings_for_an_owned_vip_apply_without_a_new_burst() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        timeline(&mut schedule, start, 600);
        // Two rounds went out (0 and 500 ms); the pool's settings come in: two rounds
        // remain, the next one still due at 1000 ms, then at the pool's interval.
        let changed = start + MS * 700;
        let pool = Settings {
            garp_repeats: 3,
            garp_interval: MS * 200,
            refresh: Some(MS * 1000),
        };
        schedule.owned_changed(&owned(&[A], pool), changed);
        let sent = timeline(&mut schedule, changed, 2500);
        let times: Vec<u64> = sent.iter().map(|(ms, _)| *ms).collect();
        assert_eq!(times, [300, 500, 1000, 2000]);
        // Fewer repeats than already sent: the burst is over at once.
        let mut schedule = Schedule::default();
        schedule.owned_changed(&owned(&[A], Settings::default()), start);
        timeline(&mut schedule, start, 600);
        let quiet = Settings {
            garp_repeats: 1,
            refresh: None,
            ..pool
        };
        schedule.owned_changed(&owned(&[A], quiet), changed);
        assert_eq!(timeline(&mut schedule, changed, 5000), []);
    }
}
