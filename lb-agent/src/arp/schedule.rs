//! When to send gratuitous ARP: a burst when a VIP is taken over, and optionally a
//! periodic refresh of every owned VIP so switches whose FDB ages out keep the port.

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

#[derive(Debug)]
pub(crate) struct Schedule {
    settings: Settings,
    /// Takeover rounds still to send per VIP.
    bursts: BTreeMap<Ipv4Addr, Burst>,
    next_refresh: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    due: Instant,
    rounds_left: u32,
}

impl Schedule {
    pub fn new(settings: Settings, now: Instant) -> Self {
        Self {
            settings,
            bursts: BTreeMap::new(),
            next_refresh: settings.refresh.map(|every| now + every),
        }
    }

    /// Starts a burst, due at once, for each VIP in `latest` but not in `previous`, and
    /// cancels the bursts of VIPs no longer owned.
    pub fn owned_changed(
        &mut self,
        previous: &BTreeSet<Ipv4Addr>,
        latest: &BTreeSet<Ipv4Addr>,
        now: Instant,
    ) {
        self.bursts.retain(|vip, _| latest.contains(vip));
        for &vip in latest.difference(previous) {
            let burst = Burst {
                due: now,
                rounds_left: self.settings.garp_repeats.saturating_add(1),
            };
            self.bursts.insert(vip, burst);
        }
    }

    /// Starts a fresh burst, due at once, for every VIP in `owned`: after the link was down,
    /// what was due meanwhile was lost and the LAN may have learnt the VIPs elsewhere.
    pub fn restart(&mut self, owned: &BTreeSet<Ipv4Addr>, now: Instant) {
        self.owned_changed(&BTreeSet::new(), owned, now);
    }

    /// The VIPs to announce now (each once), advancing their timers.
    pub fn due(&mut self, owned: &BTreeSet<Ipv4Addr>, now: Instant) -> BTreeSet<Ipv4Addr> {
        let mut due = BTreeSet::new();
        let interval = self.settings.garp_interval;
        self.bursts.retain(|&vip, burst| {
            if burst.due > now {
                return true;
            }
            due.insert(vip);
            burst.rounds_left -= 1;
            // From now, not from the missed deadline: a stalled thread must not catch up
            // with a volley of back-to-back rounds.
            burst.due = now + interval;
            burst.rounds_left > 0
        });
        if let (Some(next), Some(every)) = (self.next_refresh, self.settings.refresh)
            && next <= now
        {
            due.extend(owned);
            self.next_refresh = Some(now + every);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 20);
    const B: Ipv4Addr = Ipv4Addr::new(172, 16, 200, 53);
    const MS: Duration = Duration::from_millis(1);

    fn set(vips: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
        vips.iter().copied().collect()
    }

    /// Runs the schedule in 10 ms steps up to `until_ms`; returns when each VIP was due.
    fn timeline(
        schedule: &mut Schedule,
        owned: &BTreeSet<Ipv4Addr>,
        start: Instant,
        until_ms: u64,
    ) -> Vec<(u64, Ipv4Addr)> {
        let mut sent = Vec::new();
        for ms in (0..=until_ms).step_by(10) {
            for vip in schedule.due(owned, start + MS * ms as u32) {
                sent.push((ms, vip));
            }
        }
        sent
    }

    #[test]
    fn takeover_sends_at_once_then_repeats_at_the_interval() {
        let start = Instant::now();
        let mut schedule = Schedule::new(Settings::default(), start);
        let owned = set(&[A]);
        schedule.owned_changed(&set(&[]), &owned, start);
        let sent = timeline(&mut schedule, &owned, start, 3000);
        assert_eq!(sent, [(0, A), (500, A), (1000, A), (1500, A)]);
    }

    #[test]
    fn vips_already_owned_get_no_new_burst_and_lost_ones_are_cancelled() {
        let start = Instant::now();
        let mut schedule = Schedule::new(Settings::default(), start);
        schedule.owned_changed(&set(&[]), &set(&[A]), start);
        assert_eq!(schedule.due(&set(&[A]), start), set(&[A]));
        let later = start + MS * 100;
        schedule.owned_changed(&set(&[A]), &set(&[B]), later);
        let sent = timeline(&mut schedule, &set(&[B]), later, 3000);
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
        let mut schedule = Schedule::new(settings, start);
        let owned = set(&[A, B]);
        schedule.owned_changed(&set(&[]), &owned, start);
        let sent = timeline(&mut schedule, &owned, start, 2500);
        assert_eq!(
            sent,
            [(0, A), (0, B), (1000, A), (1000, B), (2000, A), (2000, B)]
        );
    }

    #[test]
    fn a_restart_sends_a_whole_burst_again_for_every_owned_vip() {
        let start = Instant::now();
        let mut schedule = Schedule::new(Settings::default(), start);
        schedule.owned_changed(&set(&[]), &set(&[A]), start);
        // A's burst is over by 1.5 s; B became owned and is half-way through its burst.
        let owned = set(&[A, B]);
        timeline(&mut schedule, &set(&[A]), start, 1600);
        let b_owned = start + MS * 1600;
        schedule.owned_changed(&set(&[A]), &owned, b_owned);
        timeline(&mut schedule, &owned, b_owned, 600);
        let back = start + MS * 3000;
        schedule.restart(&owned, back);
        let sent = timeline(&mut schedule, &owned, back, 3000);
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
    fn no_refresh_means_silence_after_the_burst() {
        let start = Instant::now();
        let mut schedule = Schedule::new(Settings::default(), start);
        let owned = set(&[A]);
        schedule.owned_changed(&set(&[]), &owned, start);
        let sent = timeline(&mut schedule, &owned, start, 10_000);
        assert_eq!(sent.len(), 4);
        assert!(sent.iter().all(|&(ms, _)| ms <= 1500));
    }
}
