//! Counting the bpf(2) calls of this thread, by command, with perf events
//! on the `syscalls:sys_enter_bpf` tracepoint filtered on `cmd`: how many
//! map writes a controller operation really made, whatever code made them.
//!
//! The tracepoint's id is read from tracefs; when tracefs is not mounted it
//! is mounted in a private mount namespace of a child process (`unshare
//! -m`), which changes nothing outside it.

use std::{
    fs, io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
};

use anyhow::{Context, Result, bail};

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
const PERF_EVENT_IOC_RESET: libc::c_ulong = 0x2403;
const PERF_EVENT_IOC_SET_FILTER: libc::c_ulong = 0x4008_2406;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// bpf(2) commands counted.
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;

fn tracepoint_id() -> Result<u64> {
    const REL: &str = "events/syscalls/sys_enter_bpf/id";
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if let Ok(text) = fs::read_to_string(format!("{dir}/{REL}")) {
            return Ok(text.trim().parse()?);
        }
    }
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!("mount -t tracefs nodev /sys/kernel/tracing && cat /sys/kernel/tracing/{REL}"),
        ])
        .output()
        .context("running unshare -m to read the tracepoint id")?;
    if !out.status.success() {
        bail!(
            "cannot read the id of syscalls:sys_enter_bpf: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// One counter: this thread's bpf(2) calls with one `cmd`.
struct Event {
    fd: OwnedFd,
}

impl Event {
    fn open(id: u64, cmd: u32) -> Result<Self> {
        // `struct perf_event_attr` (PERF_ATTR_SIZE_VER8, 136 bytes): type,
        // size, config, then `flags` at byte 40 (bit 0: disabled).
        let mut attr = [0u64; 17];
        attr[0] = u64::from(PERF_TYPE_TRACEPOINT) | (136u64 << 32);
        attr[1] = id;
        attr[5] = 1;
        // SAFETY: a 136-byte perf_event_attr; pid 0 / cpu -1 = this thread
        // on any CPU.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                attr.as_ptr(),
                0,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .context("perf_event_open(syscalls:sys_enter_bpf)");
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let filter = std::ffi::CString::new(format!("cmd == {cmd}")).expect("no NUL");
        // SAFETY: the ioctl reads the NUL-terminated filter.
        if unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_SET_FILTER, filter.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error()).context("PERF_EVENT_IOC_SET_FILTER");
        }
        Ok(Self { fd })
    }

    fn ioctl(&self, request: libc::c_ulong) {
        // SAFETY: a plain ioctl on our perf descriptor.
        unsafe { libc::ioctl(self.fd.as_raw_fd(), request, 0) };
    }

    fn read(&self) -> u64 {
        let mut value = 0u64;
        // SAFETY: a perf counter reads as one u64.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::from_mut(&mut value).cast(),
                8,
            )
        };
        if n == 8 { value } else { 0 }
    }
}

/// Counts of this thread's map writes, deletes and lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub updates: u64,
    pub deletes: u64,
    pub lookups: u64,
}

pub struct SysCount {
    events: [Event; 3],
}

impl SysCount {
    /// Counters for the calling thread (use them on that thread only).
    pub fn new() -> Result<Self> {
        let id = tracepoint_id()?;
        Ok(Self {
            events: [
                Event::open(id, BPF_MAP_UPDATE_ELEM)?,
                Event::open(id, BPF_MAP_DELETE_ELEM)?,
                Event::open(id, BPF_MAP_LOOKUP_ELEM)?,
            ],
        })
    }

    /// Runs `f` with the counters on; returns what it counted.
    pub fn count<T>(&self, f: impl FnOnce() -> T) -> (T, Counts) {
        for e in &self.events {
            e.ioctl(PERF_EVENT_IOC_RESET);
            e.ioctl(PERF_EVENT_IOC_ENABLE);
        }
        let value = f();
        for e in &self.events {
            e.ioctl(PERF_EVENT_IOC_DISABLE);
        }
        let [u, d, l] = &self.events;
        (
            value,
            Counts {
                updates: u.read(),
                deletes: d.read(),
                lookups: l.read(),
            },
        )
    }
}
