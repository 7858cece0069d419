//! A pass-through XDP program for the bridge-side veth of every node, which makes the
//! kernel deliver frames the node's own XDP program sends back with XDP_TX (see the
//! module docs of `lab`). Loaded with two raw `bpf(2)` calls: the program is two
//! instructions, and aya only loads programs from ELF objects.

use std::{
    ffi::CString,
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `r0 = XDP_PASS; exit` as little-endian `struct bpf_insn`s.
const PASS_PROGRAM: [u8; 16] = [
    0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 2
    0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // BPF_JMP | BPF_EXIT
];
const INSN_SIZE: usize = 8;

/// The leading fields of `union bpf_attr` for BPF_PROG_LOAD (the kernel treats the
/// fields past `size` as zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` for BPF_LINK_CREATE.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// Attaches the pass-through program in native mode to `ifname` in the calling thread's
/// network namespace. The program stays attached while the returned link is open.
pub fn attach_pass(ifname: &str) -> anyhow::Result<OwnedFd> {
    let name = CString::new(ifname)?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}: {}", io::Error::last_os_error());
    }
    let program = load_pass()?;
    let attr = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    bpf(BPF_LINK_CREATE, &attr).with_context(|| format!("attaching XDP to {ifname}"))
}

fn load_pass() -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    prog_name[..13].copy_from_slice(b"lab_port_pass");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: (PASS_PROGRAM.len() / INSN_SIZE) as u32,
        insns: PASS_PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: BPF_XDP,
    };
    bpf(BPF_PROG_LOAD, &attr).context("loading the pass-through XDP program")
}

/// Runs a `bpf(2)` command whose result is a new file descriptor.
fn bpf<T>(command: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a live `#[repr(C)]` prefix of `union bpf_attr` for `command`, and
    // its size is passed so the kernel reads no further; every pointer inside it refers
    // to memory that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *const T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
