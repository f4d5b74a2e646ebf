//! The few raw bpf(2) calls the veth benchmark needs, and two hand-written
//! XDP programs: a traffic generator and a counting sink.
//!
//! aya 0.14 does offer live frames (`TestRunAttrs::xdp_live_frames`), but
//! only for programs it loaded from an ELF object; these two programs are
//! a few dozen instructions each, written out here so that they need no
//! second eBPF build, and so they are loaded, attached and run with bpf(2)
//! directly (`BPF_PROG_LOAD`, `BPF_LINK_CREATE`, `BPF_PROG_TEST_RUN` with
//! `BPF_F_TEST_XDP_LIVE_FRAMES`, kernel >= 5.18).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{Context, Result, bail};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;

const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// Run the program on live frames: its verdicts are carried out.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// The instructions used below, by their eBPF assembler spelling.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R10: u8 = 10;

/// `dst = imm` (64-bit).
const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = src` (64-bit).
const fn mov(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst += imm` (64-bit).
const fn add_imm(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `dst += src` (64-bit).
const fn add(dst: u8, src: u8) -> Insn {
    insn(0x0f, dst, src, 0, 0)
}
/// `dst -= src` (64-bit).
const fn sub(dst: u8, src: u8) -> Insn {
    insn(0x1f, dst, src, 0, 0)
}
/// `dst %= src` (64-bit, unsigned; a 0 divisor leaves dst as it is).
const fn rem(dst: u8, src: u8) -> Insn {
    insn(0x9f, dst, src, 0, 0)
}
/// `dst = htobe16(dst)`: the low 16 bits byte-swapped (on a little-endian
/// host), the rest zeroed.
const fn be16(dst: u8) -> Insn {
    insn(0xdc, dst, 0, 0, 16)
}
/// Loads: `dst = *(size *)(src + off)`.
const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x69, dst, src, off, 0)
}
const fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x71, dst, src, off, 0)
}
const fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x79, dst, src, off, 0)
}
/// Stores: `*(size *)(dst + off) = src`.
const fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x63, dst, src, off, 0)
}
const fn stx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x6b, dst, src, off, 0)
}
const fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x7b, dst, src, off, 0)
}
/// `*(u32 *)(dst + off) = imm`.
const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62, dst, 0, off, imm)
}
/// `if dst > src goto +off` (unsigned).
const fn jgt(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x2d, dst, src, off, 0)
}
/// `if dst == imm goto +off`.
const fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
/// `if dst != imm goto +off`.
const fn jne_imm(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// `dst = map` (`BPF_LD | BPF_DW | BPF_IMM` with `BPF_PSEUDO_MAP_FD`): two
/// instruction slots.
fn ld_map(dst: u8, map: &OwnedFd) -> [Insn; 2] {
    [insn(0x18, dst, 1, 0, map.as_raw_fd()), insn(0, 0, 0, 0, 0)]
}
const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;

/// `struct xdp_md` offsets.
const XDP_MD_DATA: i16 = 0;
const XDP_MD_DATA_END: i16 = 4;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised bpf_attr prefix of the
    // size we pass; the kernel reads and writes only within it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
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
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct xdp_md`, as the context of a test run.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// A per-CPU array of `u64` counters.
pub struct Counters {
    fd: OwnedFd,
    cpus: usize,
}

impl Counters {
    pub fn new(entries: u32) -> Result<Self> {
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: entries,
            map_flags: 0,
        };
        let fd = bpf(BPF_MAP_CREATE, &mut attr).context("BPF_MAP_CREATE (per-CPU array)")?;
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("possible CPUs")?;
        Ok(Self {
            fd: owned(fd),
            cpus,
        })
    }

    /// Slot `index`, summed over CPUs.
    pub fn get(&self, index: u32) -> Result<u64> {
        let mut values = vec![0u64; self.cpus];
        let mut attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: std::ptr::from_ref(&index) as u64,
            value: values.as_mut_ptr() as u64,
            ..ElemAttr::default()
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("BPF_MAP_LOOKUP_ELEM")?;
        Ok(values.iter().sum())
    }
}

/// A loaded XDP program.
pub struct Prog {
    fd: OwnedFd,
}

fn load(name: &str, insns: &[Insn]) -> Result<Prog> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    let n = name.len().min(15);
    attr.prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(Prog { fd: owned(fd) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD {name}: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// Bytes of the headers the generator restores and varies: Ethernet, IPv4
/// and TCP without options.
pub const GEN_HEADERS: usize = 14 + 20 + 20;
/// Where, past the IPv4 packet, the generator's frame keeps its pristine
/// copy of the headers, then its parameters (`u32` flow count, `u32` 0).
pub const GEN_COPY_AT: usize = GEN_HEADERS;
pub const GEN_PARAMS_AT: usize = GEN_COPY_AT + GEN_HEADERS;
pub const GEN_FRAME_LEN: usize = GEN_PARAMS_AT + 8;
/// Offsets of the fields the generator varies.
const OFF_IP_ID: i16 = 14 + 4;
const OFF_SADDR_LO: i16 = 14 + 12 + 2;
const OFF_TCP_WINDOW: i16 = 14 + 20 + 14;

/// The traffic generator, run in live-frame mode. Each run of the program:
///
/// 1. takes the next value `c` of its per-CPU counter (`Counters` slot 0),
/// 2. copies the pristine headers from past the end of the IPv4 packet over
///    the frame's head (the page of a live frame is recycled with whatever
///    the director wrote into it: a NAT rewrite, a tunnel header),
/// 3. makes it flow `k = c % nflows`: source address `100.64.0.1 + k` (low
///    16 bits), and IPv4 id and TCP window `0xffff - k`, which keeps both
///    checksums valid without recomputing them (the one's-complement sums
///    of `saddr_lo + id` and `saddr_lo + window` stay the same),
/// 4. returns XDP_TX, which live mode turns into a redirect out of the
///    ingress interface, i.e. across the veth pair.
pub fn generator(counter: &Counters) -> Result<Prog> {
    let total = GEN_FRAME_LEN as i32;
    let copy = GEN_COPY_AT as i16;
    let mut p: Vec<Insn> = vec![
        mov(R6, R1),
        // r7 = counter[0]++
        st_w(R10, -4, 0),
        mov(R2, R10),
        add_imm(R2, -4),
    ];
    p.extend(ld_map(R1, &counter.fd));
    p.extend([
        call(BPF_FUNC_MAP_LOOKUP_ELEM),
        jeq_imm(R0, 0, 0), // patched: goto drop
        ldx_dw(R7, R0, 0),
        mov(R1, R7),
        add_imm(R1, 1),
        stx_dw(R0, R1, 0),
        // The frame must hold the headers, their copy and the parameters.
        ldx_w(R2, R6, XDP_MD_DATA),
        ldx_w(R3, R6, XDP_MD_DATA_END),
        mov(R4, R2),
        add_imm(R4, total),
        jgt(R4, R3, 0), // patched: goto drop
    ]);
    // 54 bytes: six u64, then a u32 and a u16.
    for i in 0..6i16 {
        p.extend([ldx_dw(R5, R2, copy + 8 * i), stx_dw(R2, R5, 8 * i)]);
    }
    p.extend([
        ldx_w(R5, R2, copy + 48),
        stx_w(R2, R5, 48),
        ldx_h(R5, R2, copy + 52),
        stx_h(R2, R5, 52),
        // k = c % nflows
        ldx_w(R8, R2, GEN_PARAMS_AT as i16),
        rem(R7, R8),
        // saddr_lo += k
        ldx_h(R5, R2, OFF_SADDR_LO),
        be16(R5),
        add(R5, R7),
        be16(R5),
        stx_h(R2, R5, OFF_SADDR_LO),
        // id -= k
        ldx_h(R5, R2, OFF_IP_ID),
        be16(R5),
        sub(R5, R7),
        be16(R5),
        stx_h(R2, R5, OFF_IP_ID),
        // window -= k
        ldx_h(R5, R2, OFF_TCP_WINDOW),
        be16(R5),
        sub(R5, R7),
        be16(R5),
        stx_h(R2, R5, OFF_TCP_WINDOW),
        mov_imm(R0, XDP_TX),
        exit(),
    ]);
    let drop_at = p.len();
    p.extend([mov_imm(R0, XDP_DROP), exit()]);
    patch_jumps(&mut p, drop_at);
    load("xlvs_bench_gen", &p)
}

/// The sink at the far side: counts each IPv4 frame in `Counters` slot
/// `ip.protocol` (6 for TCP, 4 for IP-in-IP) and drops it; anything else
/// (ARP) goes to the kernel.
pub fn sink(counters: &Counters) -> Result<Prog> {
    let mut p: Vec<Insn> = vec![
        ldx_w(R2, R1, XDP_MD_DATA),
        ldx_w(R3, R1, XDP_MD_DATA_END),
        mov(R4, R2),
        add_imm(R4, 34),
        jgt(R4, R3, 0), // patched: goto pass
        ldx_h(R5, R2, 12),
        jne_imm(R5, 0x0008, 0), // patched: ethertype != htons(0x0800): goto pass
        ldx_b(R5, R2, 23),
        stx_w(R10, R5, -4),
        mov(R2, R10),
        add_imm(R2, -4),
    ];
    p.extend(ld_map(R1, &counters.fd));
    p.extend([
        call(BPF_FUNC_MAP_LOOKUP_ELEM),
        jeq_imm(R0, 0, 0), // patched: goto drop
        ldx_dw(R1, R0, 0),
        add_imm(R1, 1),
        stx_dw(R0, R1, 0),
    ]);
    let drop_at = p.len();
    p.extend([mov_imm(R0, XDP_DROP), exit()]);
    let pass_at = p.len();
    p.extend([mov_imm(R0, XDP_PASS), exit()]);
    // The first two conditional jumps go to pass, the map miss to drop.
    let mut seen = 0;
    for (i, insn) in p.iter_mut().enumerate().take(drop_at) {
        if matches!(insn.code, 0x2d | 0x55 | 0x15) {
            let target = if seen < 2 { pass_at } else { drop_at };
            insn.off = (target - i - 1) as i16;
            seen += 1;
        }
    }
    load("xlvs_bench_sink", &p)
}

/// Points every conditional jump before `target` (all written with offset
/// 0 as a placeholder) at `target`.
fn patch_jumps(p: &mut [Insn], target: usize) {
    for (i, insn) in p.iter_mut().enumerate().take(target) {
        if matches!(insn.code, 0x2d | 0x15 | 0x55) && insn.off == 0 {
            insn.off = (target - i - 1) as i16;
        }
    }
}

/// An XDP program attached with a BPF link; detached when dropped.
pub struct Link {
    _fd: OwnedFd,
}

impl Prog {
    /// Attaches to `ifindex` of the calling thread's network namespace (in
    /// native mode, which veth has).
    pub fn attach(&self, ifindex: u32) -> Result<Link> {
        let mut attr = LinkCreateAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            flags: 0,
        };
        let fd = bpf(BPF_LINK_CREATE, &mut attr)
            .with_context(|| format!("BPF_LINK_CREATE (XDP on ifindex {ifindex})"))?;
        Ok(Link { _fd: owned(fd) })
    }

    /// Runs the program on `repeat` live frames made from `frame`, as if
    /// they arrived on `ifindex` (of the calling thread's namespace), in
    /// batches of `batch`. Returns the kernel's mean time per frame in ns.
    pub fn run_live(&self, frame: &[u8], ifindex: u32, repeat: u32, batch: u32) -> Result<u32> {
        let mut ctx = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex: ifindex,
            ..XdpMd::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: size_of::<XdpMd>() as u32,
            ctx_in: std::ptr::from_mut(&mut ctx) as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: batch,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN with live frames")?;
        Ok(attr.duration)
    }
}
