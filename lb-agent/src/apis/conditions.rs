//! `metav1.Condition`s the agent writes on Services and AddressPools. A condition's
//! `lastTransitionTime` moves only when its status does, and a status equal to the
//! current one up to that time is not written again.

use k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};

/// A condition to write, before its transition time is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub type_: &'static str,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Wanted {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    fn status_text(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }

    /// Whether `current` already says this (whatever its times).
    pub fn matches(&self, current: &Condition, generation: Option<i64>) -> bool {
        current.type_ == self.type_
            && current.status == self.status_text()
            && current.reason == self.reason
            && current.message == self.message
            && current.observed_generation == generation
    }

    /// The condition, keeping the transition time of `existing` (same type) when the
    /// status did not change.
    pub fn build(&self, existing: &[Condition], generation: Option<i64>) -> Condition {
        let kept = existing
            .iter()
            .find(|condition| {
                condition.type_ == self.type_ && condition.status == self.status_text()
            })
            .map(|condition| condition.last_transition_time.clone());
        Condition {
            type_: self.type_.to_owned(),
            status: self.status_text().to_owned(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation: generation,
            last_transition_time: kept.unwrap_or_else(|| Time(Timestamp::now())),
        }
    }
}

/// Whether every wanted condition is already in `existing`.
pub fn all_match(wanted: &[Wanted], existing: &[Condition], generation: Option<i64>) -> bool {
    wanted.iter().all(|want| {
        existing
            .iter()
            .any(|condition| want.matches(condition, generation))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let first = Wanted::new("Ready", true, "Serving", "ok").build(&[], Some(1));
        let old = Time(Timestamp::from_second(1_700_000_000).expect("time"));
        let existing = vec![Condition {
            last_transition_time: old.clone(),
            ..first
        }];
        let same = Wanted::new("Ready", true, "Serving", "now 3 free").build(&existing, Some(2));
        assert_eq!(same.last_transition_time, old);
        let flipped = Wanted::new("Ready", false, "Invalid", "bad").build(&existing, Some(2));
        assert_ne!(flipped.last_transition_time, old);
        assert!(all_match(
            &[Wanted::new("Ready", true, "Serving", "ok")],
            &existing,
            Some(1)
        ));
        assert!(!all_match(
            &[Wanted::new("Ready", true, "Serving", "ok")],
            &existing,
            Some(2)
        ));
    }
}
