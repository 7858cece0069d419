//! A test double of the runtime behind the local API, over the real state of
//! `examples/standalone.yaml`, and the API servers running on it.

use std::{
    collections::{BTreeMap, HashMap},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use lb_agent::{
    api::{http::HttpServer, socket::SocketServer},
    config,
    dataplane::maps::MapsError,
    explain::Query,
    model::{Inputs, Protocol, State, desired_state},
    status::{
        AgentStatus, ArpStatus, BackendCounters, CandidateStatus, Explanation, FlowList,
        GossipStatus, MapsView, MemberState, MemberStatus, Ownership, ProviderError,
        StatusProvider, View, VipCounters,
    },
    telemetry::Telemetry,
};
use lb_common::{
    reasons,
    types::{FlowKey, FlowValue},
};

pub const WEB: &str = "172.16.200.20";
pub const DNS: &str = "172.16.200.53";
/// Makes the provider panic, to check the server survives it.
pub const PANIC_PORT: u16 = 666;

pub fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("test address")
}

/// Live counters a test can change between requests.
#[derive(Debug, Default)]
pub struct Maps {
    pub web_packets: AtomicU64,
    pub loaded: AtomicBool,
    /// The flow cache, a hash map as in the kernel.
    pub flows: HashMap<FlowKey, FlowValue>,
}

fn raw(address: &str) -> u32 {
    u32::from_ne_bytes(ip(address).octets())
}

impl MapsView for Maps {
    fn vip_counters(&self, vip: Ipv4Addr) -> Result<Option<VipCounters>, MapsError> {
        Ok((vip == ip(WEB)).then(|| VipCounters {
            packets: self.web_packets.load(Ordering::Relaxed),
            bytes: 640_000,
            encapsulated: 6_000,
            delivered_local: 3_990,
            dropped: 10,
            icmp_replies: 2,
            reply_packets: 3_900,
            reply_bytes: 2_000_000,
        }))
    }

    fn backend_counters(&self, address: Ipv4Addr) -> Result<BackendCounters, MapsError> {
        let packets = u64::from(address.octets()[3]) * 100;
        Ok(BackendCounters {
            packets,
            bytes: packets * 64,
        })
    }

    fn reason_totals(&self) -> Result<[u64; reasons::COUNT as usize], MapsError> {
        let mut totals = [0; reasons::COUNT as usize];
        totals[reasons::TX_ENCAP as usize] = 6_000;
        totals[reasons::PASS_LOCAL_DNAT as usize] = 3_990;
        totals[reasons::DROP_NO_BACKEND as usize] = 10;
        Ok(totals)
    }

    fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, MapsError> {
        Ok(self
            .flows
            .iter()
            .map(|(key, value)| (*key, *value))
            .collect())
    }

    fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, MapsError> {
        Ok(self.flows.get(key).copied())
    }
}

/// The runtime as the API sees it.
pub struct Runtime {
    pub inputs: Inputs,
    pub state: State,
    pub ownership: BTreeMap<Ipv4Addr, Ownership>,
    pub members: Vec<MemberStatus>,
    pub maps: Maps,
    pub ready: AtomicBool,
}

pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/standalone.yaml")
}

fn ownership(owners: BTreeMap<Ipv4Addr, &str>) -> BTreeMap<Ipv4Addr, Ownership> {
    owners
        .into_iter()
        .map(|(vip, owner)| {
            let candidates = vec![
                CandidateStatus {
                    node: "node1".into(),
                    eligible: true,
                    reason: None,
                    score: Some(0xfeed),
                },
                CandidateStatus {
                    node: "node2".into(),
                    eligible: false,
                    reason: Some("interface eth0 is down".into()),
                    score: None,
                },
            ];
            let ownership = Ownership {
                owner: Some(owner.to_owned()),
                reason: Some("set by `owner:` in the configuration file".into()),
                candidates,
            };
            (vip, ownership)
        })
        .collect()
}

fn member(name: &str, address: &str, state: MemberState) -> MemberStatus {
    MemberStatus {
        name: name.into(),
        address: address.parse().expect("gossip address"),
        state,
        incarnation: 2,
        last_change_unix_ms: Some(1_700_000_000_000),
    }
}

impl Runtime {
    /// `examples/standalone.yaml` on node1, owners as the file says, some traffic.
    pub fn from_example() -> Self {
        let standalone = config::load(&example_path()).expect("example file");
        let inputs = standalone.inputs(1500);
        let state = desired_state(&inputs);
        let flow = |client: &str, node: &str, pod: u32| {
            let query = Query {
                client: client.parse().expect("client"),
                vip: SocketAddrV4::new(ip(WEB), 80),
                protocol: Protocol::Tcp,
            };
            (
                query.flow_key(),
                FlowValue {
                    node: raw(node),
                    pod,
                    ..FlowValue::default()
                },
            )
        };
        Self {
            ownership: ownership(standalone.owners()),
            inputs,
            state,
            members: vec![
                member("node1", "10.0.0.11:7946", MemberState::Alive),
                member("node2", "10.0.0.12:7946", MemberState::Suspect),
            ],
            maps: Maps {
                web_packets: AtomicU64::new(10_000),
                loaded: AtomicBool::new(true),
                flows: HashMap::from([
                    flow("10.0.0.100:40000", "10.0.0.12", 0),
                    flow("10.0.0.101:40001", "10.0.0.11", raw("10.42.0.7")),
                ]),
            },
            ready: AtomicBool::new(false),
        }
    }

    pub fn view(&self) -> View<'_> {
        let loaded = self.maps.loaded.load(Ordering::Relaxed);
        View {
            inputs: &self.inputs,
            state: &self.state,
            interface: "eth0",
            xdp_mode: loaded.then_some("native"),
            ready: self.ready.load(Ordering::Relaxed),
            maps: loaded.then_some(&self.maps as &dyn MapsView),
            ownership: &self.ownership,
            members: self.members.clone(),
            arp: Some(ArpStatus {
                requests: 12,
                replies: 12,
                gratuitous: 6,
                send_errors: 0,
                link_outages: 2,
            }),
            gossip: Some(GossipStatus {
                dropped: BTreeMap::from([("forged".into(), 3), ("replayed".into(), 1)]),
            }),
        }
    }
}

impl StatusProvider for Runtime {
    fn status(&self) -> AgentStatus {
        self.view().status()
    }

    fn flows(&self, limit: usize) -> Result<FlowList, ProviderError> {
        self.view().flows(limit)
    }

    fn explain(
        &self,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    ) -> Result<Explanation, ProviderError> {
        assert_ne!(client.port(), PANIC_PORT, "test: the provider fails");
        self.view().explain(client, vip, protocol)
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Both servers on a runtime of their own; dropping it stops them.
pub struct Agent {
    pub runtime: Arc<Runtime>,
    pub telemetry: Arc<Telemetry>,
    pub socket: PathBuf,
    pub http: SocketAddr,
    // Dropped before `_dir`: stops the servers, which removes the socket file.
    _tokio: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // A directory the server must create itself.
        let socket = dir.path().join("run/agent.sock");
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let runtime = Arc::new(Runtime::from_example());
        let telemetry = Arc::new(Telemetry::new());
        let provider: Arc<dyn StatusProvider> = runtime.clone();
        let (server, http) = tokio.block_on(async {
            let server = SocketServer::bind(&socket).expect("bind the API socket");
            let http = HttpServer::bind("127.0.0.1:0".parse().expect("address"))
                .await
                .expect("bind HTTP");
            (server, http)
        });
        let address = http.local_addr().expect("bound address");
        tokio.spawn(server.serve(Arc::clone(&provider)));
        tokio.spawn(http.serve(provider, Arc::clone(&telemetry)));
        Self {
            runtime,
            telemetry,
            socket,
            http: address,
            _tokio: tokio,
            _dir: dir,
        }
    }
}
