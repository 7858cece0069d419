//! Who a member is in the gossip: its node name (one member per node), where it listens,
//! and a generation that starts at the agent's boot epoch, so a restarted agent is a new
//! member that wins over the identity of its previous run.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The node name from the configuration.
    pub name: String,
    /// The gossip socket.
    pub addr: SocketAddrV4,
    /// Boot epoch (microseconds since the Unix epoch), plus one per renewal.
    pub generation: u64,
    /// Set on the identity a stopping agent leaves as: its data path stays pinned and
    /// keeps serving until the next agent rejoins, so peers keep its endpoints.
    pub handing_over: bool,
}

impl foca::Identity for Identity {
    type Addr = String;

    /// A member the cluster declared down (a partition, a long pause) comes back at
    /// once as the next generation instead of staying out.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            generation: self.generation + 1,
            handing_over: false,
            ..self.clone()
        })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    /// Within a generation, the handing-over identity wins: it is that run's last word.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.handing_over) > (adversary.generation, adversary.handing_over)
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity as _;

    use super::*;

    #[test]
    fn a_renewed_or_restarted_identity_wins_over_the_old_one() {
        let old = Identity {
            name: "node1".into(),
            addr: "10.0.0.11:7947".parse().expect("addr"),
            generation: 100,
            handing_over: false,
        };
        let renewed = old.renew().expect("renewable");
        assert_eq!(renewed.addr(), old.addr());
        assert!(renewed.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&renewed));
        let restarted = Identity {
            generation: 5_000,
            ..old.clone()
        };
        assert!(restarted.win_addr_conflict(&renewed));
        let handing_over = Identity {
            handing_over: true,
            ..restarted.clone()
        };
        assert!(handing_over.win_addr_conflict(&restarted));
        assert!(!restarted.win_addr_conflict(&handing_over));
        let next_run = Identity {
            generation: 5_001,
            ..restarted
        };
        assert!(next_run.win_addr_conflict(&handing_over));
        assert!(!handing_over.renew().expect("renewable").handing_over);
    }
}
