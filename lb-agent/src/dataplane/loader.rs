//! Loading the embedded BPF object and attaching its programs to the LAN interface,
//! pinned so that a restarted or upgraded agent takes over without dropping a packet.
//!
//! Under the pin directory (`pinDir`, default `/sys/fs/bpf/xdplb`, on a BPF filesystem):
//!
//! ```text
//! maps/<MAP>                 every map of lb_common::maps
//! layout                     the layout version and capacity of every map (super::layout)
//! links/<interface>/xdp-native  (or xdp-generic)   the XDP program's link
//! links/<interface>/tc       the TC egress program's link (TCX)
//! retired/<MAP>              only while a map's entries are carried into a new map
//! ```
//!
//! * [`load_pinned`] creates the maps, or adopts the pinned ones after checking their
//!   recorded layout and sizes ([`super::adoption`]). A pinned map of another capacity
//!   than configured, or of the previous release's layout, is replaced by a new map
//!   holding its entries ([`super::carry`]): maps cannot be resized or converted in
//!   place. A newer layout than this release knows is refused before anything changes
//!   ([`check_pins`]).
//! * [`attach`] attaches both programs and pins their links, or, when links are pinned
//!   already, swaps the new programs into them with `BPF_LINK_UPDATE`: the interface
//!   never runs without a program.
//! * The TC program is attached with TCX (a BPF link), which needs Linux 6.6 or later.
//! * Pins outlive the agent: after SIGTERM or SIGKILL the programs keep forwarding with
//!   the maps as they were, and the next agent adopts both. Adopted VIPs get their
//!   `VIP_FILTER` slots recounted before anything attaches (`maps::Vips`), so the new
//!   program never filters out a VIP the old agent left behind. [`cleanup`] detaches and
//!   removes everything (uninstall).

use std::{
    ffi::CString,
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use lb_common::maps as names;

pub use super::adoption::check_pins;
use super::{
    adoption::{check_pinned, log_move, map_specs},
    carry,
    layout::LayoutRecord,
};
use crate::model::capacities::Capacities;

/// The object built by `build.rs` from `lb-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the BPF object: {0}")]
    Object(#[from] aya::EbpfError),
    #[error(
        "{} is not on a BPF filesystem: mount one there (`mount -t bpf bpf DIR`) or set `pinDir` under /sys/fs/bpf",
        path.display()
    )]
    NotBpffs { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Pins {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the pinned map {map} ({}) {detail}. The pinned data path keeps running untouched: start the release that pinned it, or recreate the data path with `lb-agent cleanup --config FILE` (this drops every cached flow for a moment) and start the agent again",
        path.display()
    )]
    Incompatible {
        map: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("BPF program {name} is missing from the object")]
    MissingProgram { name: &'static str },
    #[error("BPF map {name} is missing from the object")]
    MissingMap { name: &'static str },
    #[error("the layout record {}: {source}", path.display())]
    Record {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("carrying the entries of the pinned map {map} into its new map: {source}")]
    Carry {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("BPF program {name}'s link: {source}")]
    Link {
        name: &'static str,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning BPF program {name}'s link: {source}")]
    Pin {
        name: &'static str,
        #[source]
        source: aya::pin::PinError,
    },
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

/// The pin directory's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// The layout record ([`super::layout`]).
    pub(super) fn layout(&self) -> PathBuf {
        self.root.join("layout")
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    /// Where a map's previous pin waits while its entries move into a resized map (the
    /// BPF filesystem refuses names with a dot, so a directory of its own).
    pub(super) fn retired(&self) -> PathBuf {
        self.root.join("retired")
    }

    pub(super) fn retired_map(&self, name: &str) -> PathBuf {
        self.retired().join(name)
    }

    fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    fn interface_links(&self, interface: &str) -> PathBuf {
        self.links().join(interface)
    }

    fn xdp_link(&self, interface: &str, mode: XdpMode) -> PathBuf {
        self.interface_links(interface)
            .join(format!("xdp-{}", mode_name(mode)))
    }

    fn tc_link(&self, interface: &str) -> PathBuf {
        self.interface_links(interface).join("tc")
    }
}

/// How XDP runs: `native` in the driver, `generic` in the stack.
pub fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Skb => "generic",
        _ => "native",
    }
}

const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;
/// Where distributions mount the BPF filesystem.
const BPFFS_MOUNT: &str = "/sys/fs/bpf";

pub(super) fn pins_error(path: &Path) -> impl FnOnce(io::Error) -> LoadError + '_ {
    move |source| LoadError::Pins {
        path: path.to_owned(),
        source,
    }
}

fn is_bpffs(path: &Path) -> Result<bool, LoadError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|error| pins_error(path)(io::Error::new(io::ErrorKind::InvalidInput, error)))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is a NUL-terminated path and `stat` is large enough for statfs to
    // fill; it is read only after the call succeeded.
    let result = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if result != 0 {
        return Err(pins_error(path)(io::Error::last_os_error()));
    }
    // SAFETY: statfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    Ok(stat.f_type == BPF_FS_MAGIC)
}

/// Mounts a BPF filesystem on `/sys/fs/bpf`, as systemd does on most distributions.
fn mount_bpffs() -> Result<(), LoadError> {
    let target = Path::new(BPFFS_MOUNT);
    let c_target = CString::new(BPFFS_MOUNT).expect("no NUL");
    let c_type = CString::new("bpf").expect("no NUL");
    let c_options = CString::new("mode=0700").expect("no NUL");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let result = unsafe {
        libc::mount(
            c_type.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ptr(),
            0,
            c_options.as_ptr().cast(),
        )
    };
    if result != 0 {
        return Err(pins_error(target)(io::Error::last_os_error()));
    }
    tracing::info!(path = BPFFS_MOUNT, "mounted a BPF filesystem");
    Ok(())
}

/// Refuses, without creating or mounting anything, a pin directory [`load_pinned`] could
/// not prepare: one below a file, or on another filesystem than a BPF one outside
/// `/sys/fs/bpf` (where the agent mounts one).
pub fn check_pin_dir(pins: &PinDir) -> Result<(), LoadError> {
    let root = pins.root();
    let existing = nearest_existing(root);
    if !existing.is_dir() {
        return Err(pins_error(root)(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", existing.display()),
        )));
    }
    if !is_bpffs(existing)? && !mountable(root) {
        return Err(LoadError::NotBpffs {
            path: root.to_owned(),
        });
    }
    Ok(())
}

/// `path` or the nearest of its ancestors that exists.
fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|ancestor| ancestor.exists())
        .unwrap_or(Path::new("/"))
}

/// Whether a BPF filesystem can be mounted for `root`: it lies under `/sys/fs/bpf`.
fn mountable(root: &Path) -> bool {
    let standard = Path::new(BPFFS_MOUNT);
    root.starts_with(standard) && standard.is_dir()
}

/// Creates the pin directory on a BPF filesystem, mounting one on `/sys/fs/bpf` when the
/// directory is meant to be there and nothing is mounted yet.
fn prepare(pins: &PinDir) -> Result<(), LoadError> {
    let root = pins.root();
    if !is_bpffs(nearest_existing(root))? {
        if !mountable(root) {
            return Err(LoadError::NotBpffs {
                path: root.to_owned(),
            });
        }
        mount_bpffs()?;
    }
    for dir in [pins.maps(), pins.links()] {
        fs::create_dir_all(&dir).map_err(pins_error(&dir))?;
    }
    Ok(())
}

/// A loaded object, and whether its maps were adopted from a previous agent.
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Maps that were pinned already (their contents are the previous agent's).
    pub adopted_maps: usize,
}

/// Loads the object with `capacities`, its maps pinned under `pins` (reusing pinned ones
/// after checking they fit), and passes both programs through the verifier.
pub fn load_pinned(capacities: &Capacities, pins: &PinDir) -> Result<Loaded, LoadError> {
    prepare(pins)?;
    let specs = map_specs(capacities);
    let mut record = LayoutRecord::open_or_create(pins)?;
    let plan = check_pinned(pins, &specs, Some(&record))?;
    // Recorded before the object creates them, so an interrupted start knows them.
    for spec in &plan.unpinned {
        record.set(pins, spec.name, spec.layout, spec.max_entries)?;
    }
    for planned in &plan.moves {
        log_move(planned);
        carry::retire(pins, planned)?;
    }
    let mut loader = configured_loader(capacities);
    let paths: Vec<(&'static str, PathBuf)> = specs
        .iter()
        .map(|spec| (spec.name, pins.map(spec.name)))
        .collect();
    for (name, path) in &paths {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = load_programs(loader)?;
    carry::carry_retired(pins, &plan.moves, &mut ebpf, &mut record)?;
    // Adopted maps of release 0.1.0 have no entry yet.
    for spec in &specs {
        record.set(pins, spec.name, spec.layout, spec.max_entries)?;
    }
    Ok(Loaded {
        ebpf,
        adopted_maps: plan.fitting + plan.moves.len(),
    })
}

/// Loads the object with `capacities`, without pinning anything (the maps live as long
/// as the returned object; for tests).
pub fn load(capacities: &Capacities) -> Result<Ebpf, LoadError> {
    load_programs(configured_loader(capacities))
}

fn load_programs(mut loader: EbpfLoader<'_>) -> Result<Ebpf, LoadError> {
    let mut ebpf = loader.load(OBJECT)?;
    xdp_program(&mut ebpf)?
        .load()
        .map_err(program_error(names::XDP_PROGRAM))?;
    tc_program(&mut ebpf)?
        .load()
        .map_err(program_error(names::TC_PROGRAM))?;
    Ok(ebpf)
}

fn configured_loader<'a>(capacities: &Capacities) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader
        .map_max_entries(names::SERVICES, capacities.service_ports)
        .map_max_entries(names::SERVICE_SLOTS, capacities.service_ports)
        .map_max_entries(names::VIPS, capacities.vips)
        .map_max_entries(names::VIP_STATS, capacities.vips)
        .map_max_entries(names::NODE_RINGS, capacities.ring_slots())
        .map_max_entries(names::POD_RINGS, capacities.ring_slots())
        .map_max_entries(names::BACKENDS, capacities.backends)
        .map_max_entries(names::BACKEND_SLOTS, capacities.backends)
        .map_max_entries(names::NEXT_HOPS, capacities.backends)
        .map_max_entries(names::BACKEND_STATS, capacities.backends)
        .map_max_entries(names::FLOWS, capacities.flows)
        .map_max_entries(names::REPLY_FLOWS, capacities.reply_flows);
    loader
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

/// How a program got onto the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Took {
    /// A new link was created and pinned.
    Attached,
    /// The pinned link of a previous agent now runs this agent's program.
    Replaced,
}

/// Both programs on one interface, through pinned links that outlive the agent.
#[derive(Debug)]
pub struct Attachment {
    pub xdp_mode: XdpMode,
    pub xdp: Took,
    pub tc: Took,
}

fn link_error(name: &'static str) -> impl FnOnce(aya::programs::links::LinkError) -> LoadError {
    move |source| LoadError::Link { name, source }
}

/// The pinned XDP link of `interface` and its mode, if there is one.
fn pinned_xdp(pins: &PinDir, interface: &str) -> Option<(PathBuf, XdpMode)> {
    [XdpMode::Driver, XdpMode::Skb]
        .into_iter()
        .map(|mode| (pins.xdp_link(interface, mode), mode))
        .find(|(path, _)| path.exists())
}

/// The mode of the XDP program pinned on `interface` (`native`, `generic`), if any.
pub fn pinned_xdp_mode(pins: &PinDir, interface: &str) -> Option<&'static str> {
    pinned_xdp(pins, interface).map(|(_, mode)| mode_name(mode))
}

/// Swaps `program` into the link pinned at `path`; on failure (the interface was
/// recreated, so the link is defunct) the stale pin is removed and `None` returned.
fn replace<L, P>(path: &Path, name: &'static str, program: &mut P) -> Result<Option<()>, LoadError>
where
    L: TryFrom<FdLink, Error = aya::programs::links::LinkError>,
    P: ReplaceLink<L>,
{
    let pinned = PinnedLink::from_pin(path).map_err(link_error(name))?;
    let link = L::try_from(FdLink::from(pinned)).map_err(link_error(name))?;
    match program.replace(link) {
        Ok(()) => Ok(Some(())),
        Err(error) => {
            tracing::warn!(program = name, path = %path.display(), %error, "the pinned link cannot take the new program; attaching afresh");
            fs::remove_file(path).map_err(pins_error(path))?;
            Ok(None)
        }
    }
}

/// A program whose pinned link can be given a new program atomically.
trait ReplaceLink<L> {
    fn replace(&mut self, link: L) -> Result<(), ProgramError>;
}

impl ReplaceLink<XdpLink> for Xdp {
    fn replace(&mut self, link: XdpLink) -> Result<(), ProgramError> {
        let id = self.attach_to_link(link)?;
        // The pin keeps the link; the program's copy must not detach it on drop.
        drop(self.take_link(id)?);
        Ok(())
    }
}

impl ReplaceLink<SchedClassifierLink> for SchedClassifier {
    fn replace(&mut self, link: SchedClassifierLink) -> Result<(), ProgramError> {
        let id = self.attach_to_link(link)?;
        drop(self.take_link(id)?);
        Ok(())
    }
}

fn pin_link(link: FdLink, path: &Path, name: &'static str) -> Result<(), LoadError> {
    link.pin(path)
        .map_err(|source| LoadError::Pin { name, source })?;
    Ok(())
}

fn attach_xdp(
    ebpf: &mut Ebpf,
    interface: &str,
    pins: &PinDir,
) -> Result<(XdpMode, Took), LoadError> {
    let name = names::XDP_PROGRAM;
    let xdp = xdp_program(ebpf)?;
    if let Some((path, mode)) = pinned_xdp(pins, interface)
        && replace::<XdpLink, _>(&path, name, xdp)?.is_some()
    {
        return Ok((mode, Took::Replaced));
    }
    let (id, mode) = match xdp.attach(interface, XdpMode::Driver) {
        Ok(id) => (id, XdpMode::Driver),
        Err(native) => {
            tracing::warn!(%interface, error = %native, "native XDP unavailable, using generic mode");
            let id = xdp
                .attach(interface, XdpMode::Skb)
                .map_err(program_error(name))?;
            (id, XdpMode::Skb)
        }
    };
    let link = xdp.take_link(id).map_err(program_error(name))?;
    let link = FdLink::try_from(link).map_err(link_error(name))?;
    pin_link(link, &pins.xdp_link(interface, mode), name)?;
    Ok((mode, Took::Attached))
}

fn attach_tc(ebpf: &mut Ebpf, interface: &str, pins: &PinDir) -> Result<Took, LoadError> {
    let name = names::TC_PROGRAM;
    let tc = tc_program(ebpf)?;
    let path = pins.tc_link(interface);
    if path.exists() && replace::<SchedClassifierLink, _>(&path, name, tc)?.is_some() {
        return Ok(Took::Replaced);
    }
    let id = tc
        .attach(interface, TcAttachType::Egress)
        .map_err(program_error(name))?;
    let link = tc.take_link(id).map_err(program_error(name))?;
    let link = FdLink::try_from(link).map_err(link_error(name))?;
    pin_link(link, &path, name)?;
    Ok(Took::Attached)
}

/// Puts XDP (native mode, generic if the driver lacks XDP) and TC egress on `interface`
/// through pinned links, replacing the programs of links a previous agent pinned. Links
/// pinned for other interfaces (the configured interface changed) are detached.
pub fn attach(ebpf: &mut Ebpf, interface: &str, pins: &PinDir) -> Result<Attachment, LoadError> {
    let dir = pins.interface_links(interface);
    fs::create_dir_all(&dir).map_err(pins_error(&dir))?;
    let (xdp_mode, xdp) = attach_xdp(ebpf, interface, pins)?;
    let tc = attach_tc(ebpf, interface, pins)?;
    remove_links(pins, |other| other != interface)?;
    Ok(Attachment { xdp_mode, xdp, tc })
}

/// Removes the link pins of every interface `which` selects: unpinning the last
/// reference detaches the program.
fn remove_links(pins: &PinDir, which: impl Fn(&str) -> bool) -> Result<usize, LoadError> {
    let mut removed = 0;
    for dir in entries(&pins.links())? {
        let interface = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        if !interface.as_deref().is_some_and(&which) {
            continue;
        }
        for link in entries(&dir)? {
            fs::remove_file(&link).map_err(pins_error(&link))?;
            removed += 1;
        }
        fs::remove_dir(&dir).map_err(pins_error(&dir))?;
        tracing::info!(
            interface = interface.as_deref().unwrap_or_default(),
            "detached the programs"
        );
    }
    Ok(removed)
}

/// The entries of `dir`, none if it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    match fs::read_dir(dir) {
        Ok(listing) => listing
            .map(|entry| entry.map(|entry| entry.path()).map_err(pins_error(dir)))
            .collect(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(pins_error(dir)(error)),
    }
}

/// What [`cleanup`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub links: usize,
    pub maps: usize,
}

/// Detaches the programs and removes every pin under `pins` (uninstall). Run it while no
/// agent uses the directory: a running agent would keep its maps but lose its links.
pub fn cleanup(pins: &PinDir) -> Result<Removed, LoadError> {
    let links = remove_links(pins, |_| true)?;
    let mut maps = 0;
    let record = Some(pins.layout()).filter(|path| path.exists());
    for map in entries(&pins.maps())?
        .into_iter()
        .chain(entries(&pins.retired())?)
        .chain(record)
    {
        fs::remove_file(&map).map_err(pins_error(&map))?;
        maps += 1;
    }
    for dir in [
        pins.links(),
        pins.maps(),
        pins.retired(),
        pins.root().to_owned(),
    ] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(pins_error(&dir)(error)),
        }
    }
    Ok(Removed { links, maps })
}
