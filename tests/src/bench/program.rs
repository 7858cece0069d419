//! Program cost under BPF_PROG_TEST_RUN: `xdp_lb` and `tc_reply` on each of their paths,
//! beside two reference programs (parse and pass; parse, swap MACs and bounce, which only
//! the bench's own object holds) measured in the same run, interleaved, on one pinned CPU.
//!
//! Two methods, because `repeat` runs the program again on the frame the previous
//! iteration left behind (the kernel does not restore it):
//!
//! * **repeat**: one call with `repeat` = [`REPEAT`]; the kernel's mean time per run.
//!   Exact for programs that leave the frame as it was (or change it the same way each
//!   time): non-VIP pass and both references.
//! * **per call**: [`CALLS`] calls with `repeat` = 1 and a fresh frame each, the median of
//!   the kernel's time per call. Needed for every VIP path: after one run an
//!   encapsulated frame is no longer addressed to the VIP, and a DNATed one no longer to
//!   the VIP either. The kernel times the program alone (not the syscall), but the
//!   single-run timer adds a fixed overhead (two clock reads, bottom-half disable); it is
//!   measured as the per-call median of the pass reference minus its repeat mean, and
//!   subtracted.
//!
//! Not the live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, aya's
//! `TestRunAttrs::xdp_live_frames`): it resets only the frame's data pointers between
//! runs, not its bytes. The page pool copies the input into each page once and recycles
//! the pages, so a program that rewrites the frame sees its own output again. Tried here
//! with the flow-hit frame, 1,000,000 runs in batches of 64 on a veth in the bench's
//! namespace: 64 runs (one per page) encapsulated, the other 999,936 found the
//! Ethernet type overwritten by the outer IPv4 header and passed as non-IPv4. Decap and
//! DNAT rewrite the frame the same way. Its timings also include what follows the
//! program (an skb into the stack for `XDP_PASS`, the device transmit for `XDP_TX`),
//! which is not the program's cost.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{Context as _, Result, ensure};
use aya::{
    Ebpf,
    programs::{Program, SchedClassifier, TestRun, TestRunOptions, Xdp},
};
use lb_common::maps::{BENCH_PASS_PROGRAM, BENCH_TX_PROGRAM, TC_PROGRAM, XDP_PROGRAM};
use lb_common::types::PROTO_TCP;

use super::{BENCH_OBJECT, Measurement, median};
use crate::{
    cpu::OnOneCpu,
    fixture::{
        CLIENT, Dataplane, HTTPS, HTTPS_SLOT, HTTPS_TARGET, NEXT_HOP_MAC, NODE, PEER, POD, REQUEST,
        RESPONSE, TC_ACT_OK, TO_CLIENT, XDP_PASS, XDP_TX, https_frame, https_from_peer,
        https_packet, reply_key, reply_value, vip, xdp_md,
    },
    packets::{self, L2},
};

const GROUP: &str = "program";
/// Runs per call of the repeat method.
const REPEAT: u32 = 1_000_000;
/// Calls per run of the per-call method.
const CALLS: u32 = 1_000_000;
/// Runs of every case; the median is reported.
const RUNS: usize = 5;
/// Room for any frame the programs produce from these inputs.
const OUT_LEN: usize = 256;
/// Where non-VIP traffic goes: a LAN host that is no VIP.
const OTHER_HOST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1), 80);
/// First source address of the new flows; each call gets its own (address, port).
const NEW_FLOW_BASE: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);
const PORTS_PER_ADDRESS: u32 = 50_000;

/// Which loaded program a case runs.
#[derive(Clone, Copy, Debug)]
enum Prog {
    Lb,
    Tc,
    RefPass,
    RefTx,
}

/// How a case is timed and what it feeds the program.
#[derive(Clone, Copy, Debug)]
enum Input {
    /// The same frame, [`REPEAT`] times in one call.
    Repeat,
    /// The same frame, once per call.
    Same,
    /// A new client flow every call: its SYN, or (`syn` false) a segment of a
    /// connection the flow table does not hold (another owner's, before a failover).
    NewFlows { syn: bool },
}

struct Case {
    name: &'static str,
    prog: Prog,
    input: Input,
    frame: Vec<u8>,
    /// Ingress interface (XDP), for the FIB lookup of the encapsulation.
    ifindex: Option<u32>,
    expected: u32,
}

/// The loaded programs of one data plane.
struct Programs<'a> {
    lb: &'a Xdp,
    tc: &'a SchedClassifier,
    pass: &'a Xdp,
    tx: &'a Xdp,
}

impl Programs<'_> {
    fn run(&self, prog: Prog, options: TestRunOptions<'_>) -> Result<aya::TestRunResult> {
        let result = match prog {
            Prog::Lb => self.lb.test_run(options),
            Prog::Tc => self.tc.test_run(options),
            Prog::RefPass => self.pass.test_run(options),
            Prog::RefTx => self.tx.test_run(options),
        };
        Ok(result?)
    }
}

pub fn run() -> Result<Vec<Measurement>> {
    let _pinned = OnOneCpu::pin()?;
    let mut dataplane = Dataplane::with_services()?;
    let lan = prepare(&mut dataplane)?;
    let cases = cases(lan);
    // The FIB lookups of the encapsulation happen in the caller's namespace.
    let references = load_references()?;
    let _inside = dataplane.netns.enter()?;
    let ebpf = dataplane.ebpf();
    let programs = Programs {
        lb: xdp(ebpf, XDP_PROGRAM)?,
        tc: ebpf
            .program(TC_PROGRAM)
            .context("tc program missing")?
            .try_into()?,
        pass: xdp(&references, BENCH_PASS_PROGRAM)?,
        tx: xdp(&references, BENCH_TX_PROGRAM)?,
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(RUNS); cases.len()];
    let mut next_flow = 0u32;
    for run in 0..RUNS {
        eprintln!("program: run {} of {RUNS}", run + 1);
        for (case, taken) in cases.iter().zip(&mut samples) {
            taken.push(measure(&programs, case, &mut next_flow)?);
        }
    }
    let figures: Vec<(&Case, f64)> = cases
        .iter()
        .zip(&samples)
        .map(|(case, taken)| (case, median(taken)))
        .collect();
    Ok(report(&figures))
}

/// The reference programs, loaded from [`BENCH_OBJECT`]. Its maps are created too (at
/// their default sizes) though the references use none; `xdp_lb` and `tc_reply` are
/// measured in the agent's own object, as the agent loads it.
fn load_references() -> Result<Ebpf> {
    let mut object = Ebpf::load(BENCH_OBJECT)?;
    for name in [BENCH_PASS_PROGRAM, BENCH_TX_PROGRAM] {
        let program: &mut Xdp = object
            .program_mut(name)
            .with_context(|| format!("{name} missing from the bench object"))?
            .try_into()?;
        program.load()?;
    }
    Ok(object)
}

/// The loaded XDP program `name` of `object`.
fn xdp<'a>(object: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    let program: &Program = object
        .program(name)
        .with_context(|| format!("{name} missing from the object"))?;
    Ok(program.try_into()?)
}

/// Peers, the link towards [`PEER`] and the reply flow the cases need; returns the
/// link's interface index.
fn prepare(dataplane: &mut Dataplane) -> Result<u32> {
    dataplane.add_peer(PEER)?;
    dataplane.set_node_ring(HTTPS_SLOT, &[PEER])?;
    let lan = dataplane.add_link("lan0", NODE, PEER, Some(NEXT_HOP_MAC))?;
    let pod = SocketAddrV4::new(POD, HTTPS_TARGET);
    dataplane
        .maps
        .reply_flows
        .insert(&reply_key(pod, CLIENT, PROTO_TCP), &reply_value(vip(HTTPS)))?;
    Ok(lan)
}

fn cases(lan: u32) -> Vec<Case> {
    let other = L2::LAN.ipv4(&packets::tcp(CLIENT, OTHER_HOST, REQUEST));
    let tunnelled = https_from_peer();
    let pod = SocketAddrV4::new(POD, HTTPS_TARGET);
    let reply = TO_CLIENT.ipv4(&packets::tcp(pod, CLIENT, RESPONSE));
    let case = |name, prog, input, frame: &Vec<u8>, ifindex, expected| Case {
        name,
        prog,
        input,
        frame: frame.clone(),
        ifindex,
        expected,
    };
    vec![
        case(
            MIN_PASS,
            Prog::RefPass,
            Input::Repeat,
            &other,
            None,
            XDP_PASS,
        ),
        case(MIN_TX, Prog::RefTx, Input::Repeat, &other, None, XDP_TX),
        case(NON_VIP, Prog::Lb, Input::Repeat, &other, None, XDP_PASS),
        case(
            MIN_PASS_CALL,
            Prog::RefPass,
            Input::Same,
            &other,
            None,
            XDP_PASS,
        ),
        case(MIN_TX_CALL, Prog::RefTx, Input::Same, &other, None, XDP_TX),
        case(NON_VIP_CALL, Prog::Lb, Input::Same, &other, None, XDP_PASS),
        case(
            NEW_FLOW,
            Prog::Lb,
            Input::NewFlows { syn: true },
            &Vec::new(),
            Some(lan),
            XDP_TX,
        ),
        case(
            MISS,
            Prog::Lb,
            Input::NewFlows { syn: false },
            &Vec::new(),
            Some(lan),
            XDP_TX,
        ),
        case(
            FLOW_HIT,
            Prog::Lb,
            Input::Same,
            &https_frame(CLIENT),
            Some(lan),
            XDP_TX,
        ),
        // The same flow with a VLAN tag, which the express path never takes: the
        // flow-table hit it stands in front of.
        case(
            FLOW_TABLE_HIT,
            Prog::Lb,
            Input::Same,
            &L2::LAN.tagged(7).ipv4(&https_packet(CLIENT)),
            Some(lan),
            XDP_TX,
        ),
        case(DECAP, Prog::Lb, Input::Same, &tunnelled, None, XDP_PASS),
        case(TC_REWRITE, Prog::Tc, Input::Same, &reply, None, TC_ACT_OK),
    ]
}

const MIN_PASS: &str = "minimal XDP: parse + pass";
const MIN_TX: &str = "minimal XDP: parse + swap MACs + TX";
const NON_VIP: &str = "xdp_lb: non-VIP pass";
const MIN_PASS_CALL: &str = "minimal XDP: parse + pass (per call)";
const MIN_TX_CALL: &str = "minimal XDP: parse + swap MACs + TX (per call)";
const NON_VIP_CALL: &str = "xdp_lb: non-VIP pass (per call, check of the correction)";
const NEW_FLOW: &str = "xdp_lb: VIP new flow, SYN (Maglev + IPIP encap)";
const MISS: &str = "xdp_lb: VIP flow-table miss, mid-connection (Maglev + IPIP encap)";
const FLOW_HIT: &str = "xdp_lb: VIP flow hit, express path (IPIP encap)";
const FLOW_TABLE_HIT: &str = "xdp_lb: VIP flow-table hit, full path (VLAN-tagged, IPIP encap)";
const DECAP: &str = "xdp_lb: IPIP decap + DNAT on the backend node";
const TC_REWRITE: &str = "tc_reply: reply rewrite to the VIP";

/// One run of `case`: nanoseconds per packet (per-call figures still include the timer
/// overhead; [`report`] subtracts it).
fn measure(programs: &Programs<'_>, case: &Case, next_flow: &mut u32) -> Result<f64> {
    let mut out = [0u8; OUT_LEN];
    let ctx = case
        .ifindex
        .map(|ifindex| xdp_md(case.frame.len(), ifindex));
    let mut once = |frame: &[u8], repeat: u32| -> Result<u64> {
        let ctx = match case.ifindex {
            Some(ifindex) if frame.len() != case.frame.len() => Some(xdp_md(frame.len(), ifindex)),
            _ => ctx.clone(),
        };
        let result = programs.run(
            case.prog,
            TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx.as_deref(),
                repeat,
                ..TestRunOptions::default()
            },
        )?;
        ensure!(
            result.return_value == case.expected,
            "{}: verdict {} instead of {}",
            case.name,
            result.return_value,
            case.expected
        );
        Ok(u64::try_from(result.duration.as_nanos())?)
    };
    match case.input {
        Input::Repeat => Ok(once(&case.frame, REPEAT)? as f64),
        Input::Same => {
            once(&case.frame, 1)?;
            let mut times = Vec::with_capacity(CALLS as usize);
            for _ in 0..CALLS {
                times.push(once(&case.frame, 1)? as f64);
            }
            Ok(median(&times))
        }
        Input::NewFlows { syn } => {
            let mut times = Vec::with_capacity(CALLS as usize);
            for _ in 0..CALLS {
                let client = new_client(*next_flow);
                let frame = if syn {
                    L2::LAN.ipv4(&packets::syn(client, vip(HTTPS)))
                } else {
                    https_frame(client)
                };
                *next_flow += 1;
                times.push(once(&frame, 1)? as f64);
            }
            Ok(median(&times))
        }
    }
}

/// The `n`-th new client: its own (address, port) pair.
fn new_client(n: u32) -> SocketAddrV4 {
    let address = Ipv4Addr::from(u32::from(NEW_FLOW_BASE) + n / PORTS_PER_ADDRESS);
    let port = 10_000 + u16::try_from(n % PORTS_PER_ADDRESS).expect("port below 60000");
    SocketAddrV4::new(address, port)
}

fn report(figures: &[(&Case, f64)]) -> Vec<Measurement> {
    let get = |name: &str| {
        figures
            .iter()
            .find(|(case, _)| case.name == name)
            .map_or(f64::NAN, |(_, value)| *value)
    };
    let overhead = get(MIN_PASS_CALL) - get(MIN_PASS);
    let repeat_detail = format!(
        "BPF_PROG_TEST_RUN repeat={REPEAT}, kernel mean per run; median of {RUNS} interleaved runs, one pinned CPU"
    );
    let call_detail = |extra: &str| {
        format!(
            "{CALLS} BPF_PROG_TEST_RUN calls (repeat=1, fresh frame) per run, median per run, median of {RUNS} runs; \
             minus the single-run timer overhead ({overhead:.1} ns = per-call minus repeat median of the pass reference){extra}"
        )
    };
    let mut out = Vec::new();
    for (case, value) in figures {
        let (value, detail) = match case.input {
            Input::Repeat => (*value, repeat_detail.clone()),
            _ if matches!(case.name, MIN_PASS_CALL | MIN_TX_CALL) => (
                *value,
                format!(
                    "{CALLS} calls with repeat=1 per run, median, median of {RUNS} runs; raw (timer overhead included)"
                ),
            ),
            Input::NewFlows { .. } => (
                value - overhead,
                call_detail(
                    "; each call a new client (address, port), so every packet misses the flow table and \
                     inserts into the LRU (65536 entries, full after the first 65536: eviction included)",
                ),
            ),
            _ => (value - overhead, call_detail("")),
        };
        out.push(Measurement::new(GROUP, case.name, value, "ns", &detail));
    }
    let non_vip_ratio = get(NON_VIP) / get(MIN_PASS);
    out.push(
        Measurement::new(
            GROUP,
            "non-VIP pass / minimal pass",
            non_vip_ratio,
            "x",
            "both with repeat, same frame, same run",
        )
        .at_most(1.3, "<= 1.3x"),
    );
    // Both per call without correction: the timer overhead is of the order of the
    // reference itself, and subtracting it makes the ratio swing with it.
    let ratio = |name: &str, label: &str, target: f64| {
        let corrected = (get(name) - overhead) / get(MIN_TX);
        Measurement::new(
            GROUP,
            &format!("{label} / minimal TX"),
            get(name) / get(MIN_TX_CALL),
            "x",
            &format!(
                "both per call without correction; minus the timer overhead, over the TX \
                 reference with repeat: {corrected:.1}x"
            ),
        )
        .at_most(target, &format!("<= {target}x"))
    };
    out.push(ratio(FLOW_HIT, "VIP flow hit (IPIP)", 2.6));
    out.push(ratio(NEW_FLOW, "VIP new flow, SYN (IPIP)", 7.0));
    out
}
