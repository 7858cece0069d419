//! How long the Kubernetes source lets watch events gather before it translates the
//! whole API state again ([`super::source::translate_changes`]).
//!
//! A translation covers every object, so its cost (tens of milliseconds at 1,000
//! Services) is paid per pass, not per event. A single change wants a short window: it
//! is translated at once, and one following it within the window waits for the
//! window's end. A burst (a fresh install, where the IPAM writes one Service status
//! after another and each comes back as a watch event; a relist; a rolling update)
//! wants fewer passes: translating after every few events leaves the agent's one
//! thread too little time for the IPAM's writes and the watches that end the burst.
//! So the window doubles after each window that gathered a burst, up to
//! [`MAX_WINDOW`], and falls back to [`BASE_WINDOW`] as soon as one gathers no more
//! than a change or two.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::sync::Notify;

/// The window while changes come one at a time: keeps one change's latency (window,
/// translation, apply) well under 100 ms.
pub const BASE_WINDOW: Duration = Duration::from_millis(25);
/// The longest window: the most a change within a burst, or the burst's last one,
/// waits before its translation.
pub const MAX_WINDOW: Duration = Duration::from_millis(200);
/// Events within one window (translation included) that make it a burst. Single
/// changes, each translated and applied before the next comes, gather one.
pub const BURST_EVENTS: u64 = 4;

/// The window after one in which `events` watch events arrived.
pub fn next_window(current: Duration, events: u64) -> Duration {
    if events >= BURST_EVENTS {
        (current * 2).clamp(BASE_WINDOW, MAX_WINDOW)
    } else {
        BASE_WINDOW
    }
}

/// Watch events not translated yet: the reflectors record them, the translating task
/// waits for and counts them.
#[derive(Debug, Default)]
pub struct Changes {
    pending: AtomicU64,
    notify: Notify,
}

impl Changes {
    /// One more watch event.
    pub fn record(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// The events recorded since the last call.
    pub fn take(&self) -> u64 {
        self.pending.swap(0, Ordering::Relaxed)
    }

    /// Waits until an event has been recorded since the last wait ended (at once if one
    /// already has).
    pub async fn recorded(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_changes_keep_the_base_window() {
        for events in 0..BURST_EVENTS {
            assert_eq!(next_window(BASE_WINDOW, events), BASE_WINDOW);
        }
    }

    #[test]
    fn a_burst_doubles_the_window_up_to_the_maximum() {
        let mut window = BASE_WINDOW;
        let mut seen = vec![window];
        for _ in 0..10 {
            window = next_window(window, BURST_EVENTS);
            seen.push(window);
        }
        let ms: Vec<u128> = seen.iter().map(Duration::as_millis).collect();
        assert_eq!(&ms[..5], &[25, 50, 100, 200, 200]);
        assert!(seen.iter().all(|window| *window <= MAX_WINDOW));
    }

    #[test]
    fn a_quiet_window_after_a_burst_goes_back_to_the_base() {
        let long = next_window(next_window(BASE_WINDOW, 100), 100);
        assert!(long > BASE_WINDOW);
        assert_eq!(next_window(long, 1), BASE_WINDOW);
        assert_eq!(next_window(MAX_WINDOW, 0), BASE_WINDOW);
    }

    #[tokio::test]
    async fn changes_are_counted_once_and_wake_the_waiter() {
        let changes = Changes::default();
        changes.record();
        changes.record();
        // The permit left by the events: no wait.
        changes.recorded().await;
        assert_eq!(changes.take(), 2);
        assert_eq!(changes.take(), 0);
        let waiting = tokio::time::timeout(Duration::from_millis(20), changes.recorded()).await;
        assert!(waiting.is_err(), "woke without an event");
    }
}
