//! Loading the embedded BPF object and attaching its programs to the LAN interface.

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode, tc::SchedClassifierLinkId,
        xdp::XdpLinkId,
    },
};
use lb_common::maps as names;

/// The object built by `build.rs` from `lb-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

/// Map capacities chosen at load time (the kernel side only has defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Services with their own Maglev rings.
    pub services: u32,
    /// `(vip, port, proto)` entries.
    pub service_ports: u32,
    pub vips: u32,
    pub backends: u32,
    pub flows: u32,
    pub reply_flows: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            services: names::MAX_SERVICES_DEFAULT,
            service_ports: names::MAX_SERVICE_PORTS_DEFAULT,
            vips: names::MAX_VIPS_DEFAULT,
            backends: names::MAX_BACKENDS_DEFAULT,
            flows: names::MAX_FLOWS_DEFAULT,
            reply_flows: names::MAX_REPLY_FLOWS_DEFAULT,
        }
    }
}

impl Capacities {
    /// Ring slots: one per service plus spares for atomic table switches.
    pub fn ring_slots(&self) -> u32 {
        self.services + names::RING_SPARE_SLOTS
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the BPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error("BPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

fn program_error(name: &'static str) -> impl FnOnce(ProgramError) -> LoadError {
    move |source| LoadError::Program { name, source }
}

/// Loads the object with `capacities` and passes both programs through the verifier.
pub fn load(capacities: &Capacities) -> Result<Ebpf, LoadError> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::SERVICES, capacities.service_ports)
        .map_max_entries(names::VIPS, capacities.vips)
        .map_max_entries(names::VIP_STATS, capacities.vips)
        .map_max_entries(names::NODE_RINGS, capacities.ring_slots())
        .map_max_entries(names::POD_RINGS, capacities.ring_slots())
        .map_max_entries(names::BACKENDS, capacities.backends)
        .map_max_entries(names::BACKEND_STATS, capacities.backends)
        .map_max_entries(names::FLOWS, capacities.flows)
        .map_max_entries(names::REPLY_FLOWS, capacities.reply_flows);
    let mut ebpf = loader.load(OBJECT)?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(program_error(names::XDP_PROGRAM))?;
    tc_program(&mut ebpf)?
        .load()
        .map_err(program_error(names::TC_PROGRAM))?;
    Ok(ebpf)
}

/// The XDP program, e.g. for `test_run`.
pub fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let name = names::XDP_PROGRAM;
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram { name })?
        .try_into()
        .map_err(program_error(name))
}

/// The TC egress classifier, e.g. for `test_run`.
pub fn tc_program(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, LoadError> {
    let name = names::TC_PROGRAM;
    ebpf.program_mut(name)
        .ok_or(LoadError::MissingProgram { name })?
        .try_into()
        .map_err(program_error(name))
}

/// Both programs attached to one interface; detached when the `Ebpf` is dropped.
#[derive(Debug)]
pub struct Attachment {
    pub xdp: XdpLinkId,
    pub xdp_mode: XdpMode,
    pub tc: SchedClassifierLinkId,
}

/// Attaches XDP (native mode, generic if the driver lacks XDP) and TC egress to `interface`.
pub fn attach(ebpf: &mut Ebpf, interface: &str) -> Result<Attachment, LoadError> {
    let xdp = xdp_program(ebpf)?;
    let (xdp, xdp_mode) = match xdp.attach(interface, XdpMode::Driver) {
        Ok(link) => (link, XdpMode::Driver),
        Err(native) => {
            tracing::warn!(%interface, error = %native, "native XDP unavailable, using generic mode");
            let link = xdp
                .attach(interface, XdpMode::Skb)
                .map_err(program_error(names::XDP_PROGRAM))?;
            (link, XdpMode::Skb)
        }
    };
    let tc = tc_program(ebpf)?
        .attach(interface, TcAttachType::Egress)
        .map_err(program_error(names::TC_PROGRAM))?;
    Ok(Attachment { xdp, xdp_mode, tc })
}
