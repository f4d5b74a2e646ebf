//! The baseline: an XDP program that does nothing but return XDP_PASS.
//!
//! It must not live in lb-ebpf (that object is the product), and aya has no
//! way to load hand-written instructions, so it is loaded with a raw bpf(2)
//! call and run with another. Measured exactly like the data plane (same
//! syscall, same kernel timer), it tells how much of a figure is the test
//! harness itself.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// `struct bpf_insn`: opcode, dst/src registers, offset, immediate.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r0 = XDP_PASS; exit`.
const PROGRAM: [Insn; 2] = [
    Insn {
        code: 0xb7,
        regs: 0,
        off: 0,
        imm: 2,
    }, // BPF_ALU64 | BPF_MOV | BPF_K
    Insn {
        code: 0x95,
        regs: 0,
        off: 0,
        imm: 0,
    }, // BPF_JMP | BPF_EXIT
];

/// The head of `union bpf_attr` for BPF_PROG_LOAD; the kernel zero-fills the
/// fields past the size we pass.
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

/// `union bpf_attr` for BPF_PROG_TEST_RUN (the `test` member).
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
    /// Spelled out so that it is zero: the kernel rejects non-zero bytes
    /// past the last field it knows.
    _pad: u32,
}

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

pub struct EmptyProg {
    fd: OwnedFd,
}

impl EmptyProg {
    pub fn load() -> io::Result<Self> {
        let license = c"GPL";
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: PROGRAM.len() as u32,
            insns: PROGRAM.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..ProgLoadAttr::default()
        };
        attr.prog_name[..10].copy_from_slice(b"xlvs_empty");
        let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// One BPF_PROG_TEST_RUN, repeat 1: (action, output length, kernel time).
    pub fn run_into(&self, frame: &[u8], out: &mut [u8]) -> io::Result<(u32, usize, Duration)> {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_size_out: out.len() as u32,
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ..TestRunAttr::default()
        };
        bpf(BPF_PROG_TEST_RUN, &mut attr)?;
        let time = Duration::from_nanos(u64::from(attr.duration));
        Ok((attr.retval, attr.data_size_out as usize, time))
    }
}
