//! The map layouts this release changed, and how entries of the previous release's
//! layout become entries of this one's ([`super::carry`] copies them into the new maps
//! before the new programs replace the old ones).
//!
//! * `FLOWS` layout 2 adds the flow's service slot ([`FlowValue::service_slot`]). A flow
//!   of layout 1 keeps its backend node and pod (an established connection stays where
//!   it is) and gets [`NO_SLOT`]: its next packet finds its service through `SERVICES`
//!   once, which records the slot.
//! * `SERVICES` layout 2 gives the padding word a meaning ([`ServiceValue::slot`]).
//!   Layout 1 wrote zero there, which would name slot 0, another service's: it becomes
//!   [`NO_SLOT`] until the agent's first update writes the service's slot.

use lb_common::{
    layout::INITIAL,
    types::{FlowKey, FlowValue, NO_SLOT, ServiceKey, ServiceValue},
};

use super::carry::Migration;

/// Release 0.1.0's layouts of the maps this release changed (layout 1), frozen: taken
/// from lb-common/src/types.rs at tag v0.1.0 and never to be edited.
pub(super) mod initial {
    /// `FLOWS` value, layout 1.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct FlowValue {
        pub node: u32,
        pub pod: u32,
        pub node_slot: u32,
        pub pod_slot: u32,
    }

    /// `SERVICES` value, layout 1.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ServiceValue {
        pub ring_slot: u32,
        pub target_port: u16,
        pub flags: u16,
        pub stats_index: u32,
        pub _pad: u32,
    }

    // SAFETY: both are `#[repr(C)]` integers without implicit padding, so any bit pattern
    // is a valid value.
    unsafe impl aya::Pod for FlowValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServiceValue {}

    const _: () = {
        assert!(size_of::<FlowValue>() == 16);
        assert!(size_of::<ServiceValue>() == 16);
    };
}

/// `FLOWS`, layout 1 to 2.
pub(super) struct FlowsFromInitial;

impl Migration for FlowsFromInitial {
    const FROM: u32 = INITIAL;
    type OldKey = FlowKey;
    type OldValue = initial::FlowValue;
    type Key = FlowKey;
    type Value = FlowValue;

    fn convert(key: FlowKey, old: initial::FlowValue) -> (FlowKey, FlowValue) {
        let value = FlowValue {
            node: old.node,
            pod: old.pod,
            node_slot: old.node_slot,
            pod_slot: old.pod_slot,
            service_slot: NO_SLOT,
        };
        (key, value)
    }
}

/// `SERVICES`, layout 1 to 2.
pub(super) struct ServicesFromInitial;

impl Migration for ServicesFromInitial {
    const FROM: u32 = INITIAL;
    type OldKey = ServiceKey;
    type OldValue = initial::ServiceValue;
    type Key = ServiceKey;
    type Value = ServiceValue;

    fn convert(key: ServiceKey, old: initial::ServiceValue) -> (ServiceKey, ServiceValue) {
        let value = ServiceValue {
            ring_slot: old.ring_slot,
            target_port: old.target_port,
            flags: old.flags,
            stats_index: old.stats_index,
            slot: NO_SLOT,
        };
        (key, value)
    }
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    /// Byte offsets of every field, as release 0.1.0 laid them out.
    #[test]
    fn the_frozen_layouts_are_release_0_1_0s() {
        assert_eq!(
            [
                offset_of!(initial::FlowValue, node),
                offset_of!(initial::FlowValue, pod),
                offset_of!(initial::FlowValue, node_slot),
                offset_of!(initial::FlowValue, pod_slot),
            ],
            [0, 4, 8, 12]
        );
        assert_eq!(
            [
                offset_of!(initial::ServiceValue, ring_slot),
                offset_of!(initial::ServiceValue, target_port),
                offset_of!(initial::ServiceValue, flags),
                offset_of!(initial::ServiceValue, stats_index),
                offset_of!(initial::ServiceValue, _pad),
            ],
            [0, 4, 6, 8, 12]
        );
    }

    #[test]
    fn a_flow_keeps_its_backends_and_looks_its_service_up_once() {
        let key = FlowKey {
            client: 0x6400_000a,
            vip: 0x14c8_10ac,
            client_port: 40_000_u16.to_be(),
            vip_port: 80_u16.to_be(),
            proto: 6,
            _pad: 0,
            _pad2: 0,
        };
        let old = initial::FlowValue {
            node: 0x0d00_000a,
            pod: 0x0502_2a0a,
            node_slot: 3,
            pod_slot: 17,
        };
        let (migrated_key, value) = FlowsFromInitial::convert(key, old);
        assert_eq!(migrated_key, key);
        assert_eq!(value.node, old.node);
        assert_eq!(value.pod, old.pod);
        assert_eq!(value.node_slot, old.node_slot);
        assert_eq!(value.pod_slot, old.pod_slot);
        assert_eq!(value.service_slot, NO_SLOT);
    }

    #[test]
    fn a_service_keeps_its_values_and_names_no_slot() {
        let key = ServiceKey {
            vip: 0x14c8_10ac,
            port: 80_u16.to_be(),
            proto: 6,
            _pad: 0,
        };
        let old = initial::ServiceValue {
            ring_slot: 5,
            target_port: 8080_u16.to_be(),
            flags: 1,
            stats_index: 2,
            _pad: 0,
        };
        let (migrated_key, value) = ServicesFromInitial::convert(key, old);
        assert_eq!(migrated_key, key);
        assert_eq!(value.ring_slot, old.ring_slot);
        assert_eq!(value.target_port, old.target_port);
        assert_eq!(value.flags, old.flags);
        assert_eq!(value.stats_index, old.stats_index);
        assert_eq!(value.slot, NO_SLOT);
    }
}
