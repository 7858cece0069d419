//! Restart safety of the real `lb-agent` binary in a network namespace: SIGTERM leaves
//! the programs attached and the maps and links pinned, the next agent adopts them (same
//! maps, new programs swapped into the same links), SIGKILL leaves them too, a capacity
//! change moves the resized map's entries (an established flow among them) into a new
//! map, a newer layout is refused without touching the running data path (the reason in
//! `lbctl status`), and `lb-agent cleanup` detaches and removes everything.
//!
//! The pins live on a BPF filesystem mounted for this test alone in a temporary
//! directory: `ip netns exec` remounts /sys for the namespace, so a pin under the host's
//! /sys/fs/bpf would not be visible to the agent, and one it mounted there itself would
//! vanish with its mount namespace. Needs root and the binary
//! (`cargo build --bins`); run with `cargo test -p testbed --test privileged
//! agent_restart::`.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::{
    maps::{HashMap, Map, MapData, MapError, MapInfo, PerCpuArray},
    programs::{SchedClassifier, tc::TcAttachType},
};
use lb_common::{
    layout::{self, RecordEntry, RecordKey},
    maps as names,
    types::{FlowKey, FlowValue, NO_SLOT},
};
use nix::{
    mount::{MntFlags, umount2},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use testbed::{
    lab::{self, wait_for},
    netns::Netns,
};

const INTERFACE: &str = "eth0";
const MAPS: [&str; 19] = [
    names::SERVICES,
    names::SERVICE_SLOTS,
    names::VIPS,
    names::VIP_FILTER,
    names::NODE_RINGS,
    names::POD_RINGS,
    names::BACKENDS,
    names::BACKEND_SLOTS,
    names::NEXT_HOPS,
    names::PEERS,
    names::FLOWS,
    names::REPLY_FLOWS,
    names::CONFIG,
    names::REASON_STATS,
    names::VIP_STATS,
    names::BACKEND_STATS,
    names::ICMP_RATE,
    names::EXPRESS,
    names::EPOCH,
];
const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(10);

/// A BPF filesystem mounted on a temporary directory. On drop, whatever is still pinned
/// is unpinned (detaching programs) and the filesystem unmounted.
struct BpfMount {
    dir: tempfile::TempDir,
}

impl BpfMount {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("xdplb-bpffs-").tempdir()?;
        nix::mount::mount(
            Some("bpf"),
            dir.path(),
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .context("mounting a BPF filesystem")?;
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for BpfMount {
    fn drop(&mut self) {
        // Removing a link's last pin detaches its program; the files go with the mount.
        let _ = remove_tree(self.dir.path());
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            remove_tree(&path)?;
            fs::remove_dir(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// A running agent, killed and reaped on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(netns: &Netns, binary: &Path, config: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = netns
            .command(binary.to_str().context("binary path")?)
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning lb-agent")?;
        Ok(Self {
            child,
            log: log.to_owned(),
        })
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `text`; fails if the agent exits first.
    fn wait_log(&mut self, text: &str) -> anyhow::Result<()> {
        wait_for(&format!("`{text}` in the agent log"), START, || {
            if let Some(status) = self.child.try_wait()? {
                bail!("agent exited ({status}) early:\n{}", self.log());
            }
            Ok(self.log().contains(text).then_some(()))
        })
    }

    fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        kill(Pid::from_raw(self.child.id() as i32), signal)?;
        Ok(())
    }

    fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + STOP;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "agent still running {STOP:?} after the signal:\n{}",
            self.log()
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    netns: Netns,
    bpffs: BpfMount,
    scratch: tempfile::TempDir,
    binary: PathBuf,
}

impl Setup {
    fn new() -> anyhow::Result<Self> {
        let binary = lab::workspace_binary("lb-agent")?;
        let netns = Netns::new("restart")?;
        // The LAN interface and its peer both stay inside the namespace.
        netns.run(&format!(
            "ip link add {INTERFACE} type veth peer name {INTERFACE}p \
             && ip addr add 10.0.0.11/24 dev {INTERFACE} \
             && ip link set {INTERFACE} up && ip link set {INTERFACE}p up"
        ))?;
        let bpffs = BpfMount::new()?;
        let scratch = tempfile::tempdir()?;
        fs::write(scratch.path().join("key"), "restart-test-key-0123456789\n")?;
        Ok(Self {
            netns,
            bpffs,
            scratch,
            binary,
        })
    }

    fn pin_dir(&self) -> PathBuf {
        self.bpffs.path().join("node1")
    }

    /// Writes a configuration (with `extra` appended) and returns its path.
    fn config(&self, name: &str, extra: &str) -> anyhow::Result<PathBuf> {
        let scratch = self.scratch.path();
        let text = format!(
            "node: node1
interface: {INTERFACE}
peers:
  - {{ name: node1, address: 10.0.0.11 }}
  - {{ name: node2, address: 10.0.0.12 }}
services:
  - name: web
    vip: 172.16.200.20
    ports:
      - {{ port: 80, protocol: TCP, targetPort: 8080 }}
    endpoints:
      - {{ address: 10.42.0.7, node: node1 }}
      - {{ address: 10.42.1.5, node: node2 }}
gossip:
  keyFile: {key}
  joinTimeoutMs: 300
pinDir: {pins}
api:
  socket: {socket}
  listen: 127.0.0.1:0
{extra}",
            key = scratch.join("key").display(),
            pins = self.pin_dir().display(),
            socket = scratch.join("agent.sock").display(),
        );
        let path = scratch.join(name);
        fs::write(&path, text)?;
        Ok(path)
    }

    fn start(&self, config: &Path, run: &str) -> anyhow::Result<Agent> {
        Agent::start(
            &self.netns,
            &self.binary,
            config,
            &self.scratch.path().join(format!("agent-{run}.log")),
        )
    }

    /// The id of the XDP program on the interface, if one is attached.
    fn xdp_program(&self) -> anyhow::Result<Option<u32>> {
        self.netns.xdp_program(INTERFACE)
    }

    /// Programs attached to the interface's TC egress hook (TCX).
    fn tc_programs(&self) -> anyhow::Result<usize> {
        let _inside = self.netns.enter()?;
        let (_, programs) = SchedClassifier::query_tcx(INTERFACE, TcAttachType::Egress)?;
        Ok(programs.len())
    }

    /// Kernel ids of the pinned maps, by name.
    fn map_ids(&self) -> anyhow::Result<BTreeMap<&'static str, u32>> {
        MAPS.iter()
            .map(|name| {
                let path = self.pin_dir().join("maps").join(name);
                let info = MapInfo::from_pin(&path)
                    .with_context(|| format!("{} is not pinned", path.display()))?;
                Ok((*name, info.id()))
            })
            .collect()
    }

    /// The file names under the maps pin directory.
    fn map_pins(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.pin_dir().join("maps");
        fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect()
    }

    fn pinned_flows(&self) -> anyhow::Result<HashMap<MapData, FlowKey, FlowValue>> {
        let path = self.pin_dir().join("maps").join(names::FLOWS);
        Ok(HashMap::try_from(Map::from_map_data(MapData::from_pin(
            path,
        )?)?)?)
    }

    /// Leaves `map` as an agent interrupted while resizing it would: pinned only under
    /// `retired/`.
    fn interrupt_resize(&self, map: &str) -> anyhow::Result<()> {
        let current = self.pin_dir().join("maps").join(map);
        let retired = self.pin_dir().join("retired");
        fs::create_dir_all(&retired)?;
        MapData::from_pin(&current)?.pin(retired.join(map))?;
        Ok(fs::remove_file(current)?)
    }

    /// The layout record's entry for `map`.
    fn layout_record(&self) -> anyhow::Result<HashMap<MapData, RecordKey, RecordEntry>> {
        let path = self.pin_dir().join("layout");
        Ok(HashMap::try_from(Map::from_map_data(MapData::from_pin(
            path,
        )?)?)?)
    }

    fn recorded(&self, map: &str) -> anyhow::Result<RecordEntry> {
        Ok(self.layout_record()?.get(&RecordKey::new(map), 0)?)
    }

    /// Records layout `version` for `map`, as the release that pinned it would have.
    fn record_layout(&self, map: &str, version: u32) -> anyhow::Result<()> {
        let mut record = self.layout_record()?;
        let entry = RecordEntry {
            version,
            ..record.get(&RecordKey::new(map), 0)?
        };
        Ok(record.insert(RecordKey::new(map), entry, 0)?)
    }

    /// What `lbctl status` prints about the agent of this setup.
    fn lbctl_status(&self) -> anyhow::Result<String> {
        let lbctl = lab::workspace_binary("lbctl")?;
        let output = self
            .netns
            .command(lbctl.to_str().context("lbctl path")?)
            .arg("--socket")
            .arg(self.scratch.path().join("agent.sock"))
            .arg("status")
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Leaves the pins as release 0.1.0 would: no layout record, and a flow table of
    /// layout 1 (`node`, `pod`, `node_slot`, `pod_slot`) with `max_entries`, holding
    /// `flow`.
    fn as_release_0_1_0(
        &self,
        flow: &(FlowKey, FlowValue),
        max_entries: u32,
    ) -> anyhow::Result<()> {
        fs::remove_file(self.pin_dir().join("layout"))?;
        let path = self.pin_dir().join("maps").join(names::FLOWS);
        fs::remove_file(&path)?;
        let (key, value) = flow;
        let mut flows = HashMap::<MapData, FlowKey, [u32; 4]>::create(max_entries, 0)?;
        flows.insert(
            key,
            [value.node, value.pod, value.node_slot, value.pod_slot],
            0,
        )?;
        flows.pin(&path)?;
        Ok(())
    }

    fn insert_flow(&self, (key, value): (FlowKey, FlowValue)) -> anyhow::Result<()> {
        Ok(self.pinned_flows()?.insert(key, value, 0)?)
    }

    fn flow(&self, key: &FlowKey) -> anyhow::Result<Option<FlowValue>> {
        match self.pinned_flows()?.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn link_pins(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.pin_dir().join("links").join(INTERFACE);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|entry| Ok(entry?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<_>>()?;
        names.sort();
        Ok(names)
    }

    /// Pins and programs are all in place.
    fn assert_attached(&self) -> anyhow::Result<u32> {
        let program = self
            .xdp_program()?
            .context("no XDP program on the interface")?;
        ensure!(
            self.tc_programs()? == 1,
            "the TC egress program is not attached"
        );
        ensure!(
            self.link_pins()? == ["tc", "xdp-native"],
            "link pins: {:?}",
            self.link_pins()?
        );
        Ok(program)
    }
}

/// Adoption reuses every pinned map but the resized flow table.
fn ensure_only_flows_replaced(
    before: &BTreeMap<&'static str, u32>,
    after: &BTreeMap<&'static str, u32>,
) -> anyhow::Result<()> {
    for name in MAPS {
        let same = after[name] == before[name];
        ensure!(
            same == (name != names::FLOWS),
            "{name}: map {} -> {}",
            before[name],
            after[name]
        );
    }
    Ok(())
}

/// A client's connection to the VIP's port 80, as the data path keys it.
fn flow_key() -> FlowKey {
    FlowKey {
        client: u32::from(Ipv4Addr::new(192, 168, 1, 50)).to_be(),
        vip: u32::from(Ipv4Addr::new(172, 16, 200, 20)).to_be(),
        client_port: 40_000u16.to_be(),
        vip_port: 80u16.to_be(),
        proto: 6,
        _pad: 0,
        _pad2: 0,
    }
}

/// The backend node and pod that connection went to.
fn flow_value() -> FlowValue {
    FlowValue {
        node: u32::from(Ipv4Addr::new(10, 0, 0, 12)).to_be(),
        pod: u32::from(Ipv4Addr::new(10, 42, 1, 5)).to_be(),
        node_slot: 1,
        pod_slot: 2,
        service_slot: 3,
    }
}

fn skip_unless_root(test: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        eprintln!("skipping {test}: needs root");
    }
    !root
}

#[test]
fn a_restarted_agent_adopts_the_pinned_data_path_resizes_maps_and_cleanup_removes_it()
-> anyhow::Result<()> {
    if skip_unless_root("agent_restart") {
        return Ok(());
    }
    let setup = Setup::new()?;
    let config = setup.config("node1.yaml", "")?;

    let mut first = setup.start(&config, "first")?;
    first.wait_log("data path attached")?;
    first.wait_log("this node now owns the VIP")?;
    let first_program = setup.assert_attached()?;
    let maps = setup.map_ids()?;

    first.signal(Signal::SIGTERM)?;
    let status = first.wait_exit()?;
    ensure!(status.success(), "SIGTERM exit: {status}\n{}", first.log());
    ensure!(
        first.log().contains("left the gossip cluster"),
        "{}",
        first.log()
    );
    ensure!(
        setup.assert_attached()? == first_program,
        "the program changed while no agent ran"
    );
    ensure!(setup.map_ids()? == maps, "the pinned maps changed");

    // An established connection's entry, then a restart with the flow table doubled:
    // the entry moves into the new, larger map and everything else stays as it was.
    let established = (flow_key(), flow_value());
    setup.insert_flow(established)?;
    let config = setup.config("doubled.yaml", "capacities:\n  flows: 131072\n")?;
    let mut resized = setup.start(&config, "resized")?;
    resized.wait_log("carried the pinned map's entries")?;
    resized.wait_log("adopted the data path")?;
    let resized_program = setup.assert_attached()?;
    ensure!(
        resized_program != first_program,
        "the program was not replaced"
    );
    let flows = setup.pin_dir().join("maps").join(names::FLOWS);
    ensure!(MapInfo::from_pin(&flows)?.max_entries() == 131_072);
    ensure!(
        setup.recorded(names::FLOWS)?
            == RecordEntry {
                version: layout::FLOWS,
                max_entries: 131_072
            },
        "the layout record does not hold the new capacity"
    );
    ensure!(
        setup.flow(&established.0)? == Some(established.1),
        "the established flow did not move into the resized map"
    );
    let after = setup.map_ids()?;
    ensure_only_flows_replaced(&maps, &after)?;
    ensure!(
        setup.map_pins()?.len() == MAPS.len(),
        "pins left behind: {:?}",
        setup.map_pins()?
    );
    resized.signal(Signal::SIGTERM)?;
    ensure!(resized.wait_exit()?.success(), "{}", resized.log());
    let maps = after;
    let first_program = resized_program;

    // As if an agent had stopped between moving the flow table's pin aside and carrying
    // its entries: the next one carries them.
    setup.interrupt_resize(names::FLOWS)?;
    let mut second = setup.start(&config, "second")?;
    second.wait_log("carried the pinned map's entries")?;
    second.wait_log("adopted the pinned maps of a previous agent")?;
    second.wait_log("adopted the data path")?;
    second.wait_log("this node now owns the VIP")?;
    let second_program = setup.assert_attached()?;
    ensure!(
        second_program != first_program,
        "the new agent's program should replace the old one"
    );
    ensure!(
        setup.flow(&established.0)? == Some(established.1),
        "the interrupted carry lost the established flow"
    );
    let after = setup.map_ids()?;
    ensure_only_flows_replaced(&maps, &after)?;
    ensure!(
        !setup.pin_dir().join("retired").exists(),
        "the retired pin stayed"
    );
    let maps = after;

    second.signal(Signal::SIGKILL)?;
    second.wait_exit()?;
    ensure!(setup.assert_attached()? == second_program);
    ensure!(setup.map_ids()? == maps);

    // The pins as release 0.1.0 leaves them: no layout record, and the flow table in
    // layout 1 (16-byte values) holding the established flow. The next agent migrates the
    // maps whose layout changed in place: the flow keeps its backends and names no
    // service slot until its next packet looks its service up.
    setup.as_release_0_1_0(&established, 131_072)?;
    let mut migrated = setup.start(&config, "migrated")?;
    migrated.wait_log("adopted the data path")?;
    for map in [names::FLOWS, names::SERVICES] {
        ensure!(
            migrated.log().lines().any(|line| line
                .contains("migrated the pinned map's entries to this release's layout")
                && line.contains(&format!("map=\"{map}\""))),
            "{map} was not migrated:\n{}",
            migrated.log()
        );
    }
    let (key, value) = established;
    ensure!(
        setup.flow(&key)?
            == Some(FlowValue {
                service_slot: NO_SLOT,
                ..value
            }),
        "the migrated flow lost its backends"
    );
    ensure!(setup.recorded(names::FLOWS)?.version == layout::FLOWS);
    ensure!(setup.recorded(names::SERVICES)?.version == layout::SERVICES);
    let second_program = setup.assert_attached()?;
    let maps = setup.map_ids()?;
    migrated.signal(Signal::SIGTERM)?;
    ensure!(migrated.wait_exit()?.success(), "{}", migrated.log());

    // A newer release's layout of the flow table, as a downgrade finds it: refused with
    // the map named and the reason in `lbctl status`, the running data path left alone.
    setup.record_layout(names::FLOWS, layout::FLOWS + 1)?;
    let mut refused = setup.start(&config, "refused")?;
    refused.wait_log("refusing the pinned data path")?;
    let status = setup.lbctl_status()?;
    ensure!(
        status.contains("REFUSED") && status.contains("FLOWS") && status.contains("newer release"),
        "the refusal is not in `lbctl status`:\n{status}"
    );
    ensure!(setup.assert_attached()? == second_program);
    ensure!(setup.map_ids()? == maps, "a refused agent changed the maps");
    refused.signal(Signal::SIGTERM)?;
    ensure!(
        !refused.wait_exit()?.success(),
        "a refused agent must not exit as if it had run"
    );
    setup.record_layout(names::FLOWS, layout::FLOWS)?;

    // Sizes that contradict the recorded layout: refused the same way.
    let icmp_rate = setup.pin_dir().join("maps").join(names::ICMP_RATE);
    fs::remove_file(&icmp_rate)?;
    PerCpuArray::<MapData, u64>::create(1, 0)?.pin(&icmp_rate)?;
    let mut refused = setup.start(&config, "contradicted")?;
    refused.wait_log("refusing the pinned data path")?;
    ensure!(
        refused.log().contains("ICMP_RATE") && refused.log().contains("8-byte values"),
        "unclear refusal:\n{}",
        refused.log()
    );
    ensure!(setup.assert_attached()? == second_program);
    refused.signal(Signal::SIGTERM)?;
    ensure!(!refused.wait_exit()?.success());

    let cleanup = setup
        .netns
        .command(setup.binary.to_str().context("binary path")?)
        .args(["cleanup", "--config"])
        .arg(&config)
        .output()?;
    ensure!(
        cleanup.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    ensure!(!setup.pin_dir().exists(), "cleanup left the pin directory");
    ensure!(setup.xdp_program()?.is_none(), "XDP is still attached");
    ensure!(setup.tc_programs()? == 0, "TC is still attached");
    Ok(())
}
