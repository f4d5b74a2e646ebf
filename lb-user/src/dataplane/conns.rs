//! `REAL_CONNS`: IPVS's per-real connection counts (ActiveConn, InActConn,
//! PersistConn) and OVERLOAD flag, shared with the data plane.
//!
//! Both sides change the same counters: the XDP program counts a connection
//! when it creates one and moves it between active and inactive, and the
//! controller uncounts it when its sweeper expires it. A read-modify-write
//! through the map syscalls would lose updates made in between, so the map
//! is created with `BPF_F_MMAPABLE` and mapped here, and every change is an
//! atomic operation on the shared page, like the data plane's
//! `__sync_fetch_and_add`. This module is the only place that touches the
//! mapping; everything else goes through its safe methods.

use std::{
    mem::{offset_of, size_of},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use lb_common::{RealConns, sched::overload_on_unbind};

/// `BPF_F_MMAPABLE` (`include/uapi/linux/bpf.h`).
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("its values are {0} bytes, not the {size} of RealConns", size = size_of::<RealConns>())]
    ValueSize(u32),
    #[error("it was not created with BPF_F_MMAPABLE (flags {0:#x})")]
    NotMmapable(u32),
    #[error("reading its information")]
    Info(#[source] aya::maps::MapError),
    #[error("mmap")]
    Mmap(#[source] std::io::Error),
}

/// The four counters of one real, as words of the mapping. They are 64-bit
/// because the BPF target has no 32-bit atomics.
#[derive(Clone, Copy)]
enum Field {
    Active = (offset_of!(RealConns, active) / WORD) as isize,
    Inactive = (offset_of!(RealConns, inactive) / WORD) as isize,
    Persist = (offset_of!(RealConns, persist) / WORD) as isize,
    Overloaded = (offset_of!(RealConns, overloaded) / WORD) as isize,
}

const WORD: usize = size_of::<u64>();

/// The counters of every real, mapped from `REAL_CONNS`.
pub struct SharedCounters {
    /// The first word of the array: entry `i` starts at word `4 * i`.
    base: NonNull<u64>,
    entries: u32,
    /// The length of the mapping, for munmap.
    bytes: usize,
    /// The map the mapping shows (the mapping holds a reference of its
    /// own; this keeps the map's handle with it).
    _map: Option<MapData>,
}

// SAFETY: the mapping is plain shared memory that is only ever accessed
// through atomics, from any thread.
unsafe impl Send for SharedCounters {}
// SAFETY: as above; `&self` methods only perform atomic operations.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// Maps the `REAL_CONNS` array of the loaded data plane.
    ///
    /// # Errors
    /// When the map has the wrong value size, is not mmapable, or mmap fails.
    pub fn open(map: MapData) -> Result<Self, Error> {
        let info = map.info().map_err(Error::Info)?;
        if info.value_size() as usize != size_of::<RealConns>() {
            return Err(Error::ValueSize(info.value_size()));
        }
        if info.map_flags() & BPF_F_MMAPABLE == 0 {
            return Err(Error::NotMmapable(info.map_flags()));
        }
        let mut counters = Self::map_fd(map.fd().as_fd(), info.max_entries())?;
        counters._map = Some(map);
        Ok(counters)
    }

    /// Maps `entries` counters from the start of `fd` (a BPF array, or any
    /// file for the tests).
    fn map_fd(fd: BorrowedFd<'_>, entries: u32) -> Result<Self, Error> {
        // An mmapable array's data starts on a page boundary and is a whole
        // number of pages long; its 32-byte values need no rounding up to
        // the kernel's 8-byte element alignment.
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let bytes = (entries as usize * size_of::<RealConns>()).div_ceil(page).max(1) * page;
        // SAFETY: a fresh shared mapping of a valid fd; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Mmap(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<u64>()).ok_or_else(|| Error::Mmap(std::io::Error::other("mmap returned NULL")))?;
        Ok(Self { base, entries, bytes, _map: None })
    }

    fn word(&self, real: u32, field: Field) -> Option<&AtomicU64> {
        if real >= self.entries {
            return None;
        }
        let index = real as usize * (size_of::<RealConns>() / WORD) + field as usize;
        // SAFETY: `index` is within the mapping (real < entries), the
        // mapping is page-aligned so every u64 is aligned, it lives as long
        // as `self`, and both sides only access it atomically.
        Some(unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(index)) })
    }

    /// A real's counters (each read atomically; together they are a
    /// moment's picture, as ipvsadm's are).
    #[must_use]
    pub fn get(&self, real: u32) -> RealConns {
        let load = |f| self.word(real, f).map_or(0, |w| w.load(Ordering::Relaxed));
        RealConns {
            active: load(Field::Active),
            inactive: load(Field::Inactive),
            persist: load(Field::Persist),
            overloaded: load(Field::Overloaded),
        }
    }

    /// `ip_vs_unbind_dest()`: a connection of `real` has been removed; it
    /// was counted as inactive (`CONN_F_INACTIVE`) or as active. Uncounts
    /// it, then clears the OVERLOAD flag when the real has drained below
    /// its lower threshold (`lb_common::sched::overload_on_unbind`).
    pub fn unbind(&self, real: u32, was_inactive: bool, u_threshold: u32, l_threshold: u32) {
        let (Some(active), Some(inactive), Some(overloaded)) = (
            self.word(real, Field::Active),
            self.word(real, Field::Inactive),
            self.word(real, Field::Overloaded),
        ) else {
            return;
        };
        decrement(if was_inactive { inactive } else { active });
        // The thresholds are u32, so a count beyond u32 is simply "a lot".
        let load = |w: &AtomicU64| u32::try_from(w.load(Ordering::Relaxed)).unwrap_or(u32::MAX);
        if overloaded.load(Ordering::Relaxed) != 0
            && !overload_on_unbind(load(active), load(inactive), u_threshold, l_threshold, true)
        {
            overloaded.store(0, Ordering::Relaxed);
        }
    }

    /// A connection of `real` has been made by the controller (a synced
    /// one): counts it as inactive or active, as `ip_vs_bind_dest()`.
    pub fn bind(&self, real: u32, inactive: bool) {
        if let Some(word) = self.word(real, if inactive { Field::Inactive } else { Field::Active }) {
            word.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes connections off a real's counts that no table entry stands for
    /// any more (evicted by the kernel's LRU), stopping at 0.
    pub fn forget(&self, real: u32, active: u64, inactive: u64) {
        for (field, n) in [(Field::Active, active), (Field::Inactive, inactive)] {
            if let Some(word) = self.word(real, field).filter(|_| n > 0) {
                let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c.saturating_sub(n)));
            }
        }
    }

    /// Zeroes a real's counters, for an id that is handed to a new real
    /// (nothing refers to the old one any more).
    pub fn clear(&self, real: u32) {
        for field in [Field::Active, Field::Inactive, Field::Persist, Field::Overloaded] {
            if let Some(word) = self.word(real, field) {
                word.store(0, Ordering::Relaxed);
            }
        }
    }

    /// A persistence template naming `real` has been removed.
    pub fn release_template(&self, real: u32) {
        if let Some(persist) = self.word(real, Field::Persist) {
            decrement(persist);
        }
    }
}

/// Subtracts one, stopping at 0: a count that is already 0 means an
/// increment was never seen (say, the table evicted an entry), and wrapping
/// to 4 billion would make the real look loaded forever.
fn decrement(word: &AtomicU64) {
    if word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
        tracing::debug!("a connection counter was already 0");
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map_fd`; no reference into
        // it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use super::*;

    /// A memfd stands in for the map: the same MAP_SHARED semantics, so two
    /// mappings of it see each other's writes as the data plane's would.
    fn memfd(entries: u32) -> OwnedFd {
        // SAFETY: a NUL-terminated name; the result is checked.
        let fd = unsafe { libc::memfd_create(c"real-conns".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let len = i64::from(entries) * size_of::<RealConns>() as i64;
        // SAFETY: a valid fd.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), len) }, 0);
        fd
    }

    #[test]
    fn counts_are_shared_and_decrements_stop_at_zero() {
        let fd = memfd(8);
        let controller = SharedCounters::map_fd(fd.as_fd(), 8).unwrap();
        // The "data plane": another mapping of the same memory.
        let dataplane = SharedCounters::map_fd(fd.as_fd(), 8).unwrap();
        let add = |real, field, n| dataplane.word(real, field).unwrap().fetch_add(n, Ordering::Relaxed);
        add(3, Field::Active, 2);
        add(3, Field::Inactive, 5);
        add(3, Field::Persist, 1);
        assert_eq!(controller.get(3), RealConns { active: 2, inactive: 5, persist: 1, overloaded: 0 });
        assert_eq!(controller.get(2), RealConns::default());

        controller.unbind(3, true, 0, 0);
        controller.unbind(3, false, 0, 0);
        controller.release_template(3);
        controller.release_template(3);
        assert_eq!(dataplane.get(3), RealConns { active: 1, inactive: 4, persist: 0, overloaded: 0 });
        // Out of range: ignored, not a crash.
        controller.unbind(8, true, 0, 0);
        assert_eq!(controller.get(8), RealConns::default());
    }

    #[test]
    fn unbind_clears_overload_below_the_lower_threshold() {
        let fd = memfd(1);
        let c = SharedCounters::map_fd(fd.as_fd(), 1).unwrap();
        let set = |field, n| c.word(0, field).unwrap().store(n, Ordering::Relaxed);
        // upper 10, lower 5: overloaded at 10 connections.
        set(Field::Inactive, 10);
        set(Field::Overloaded, 1);
        for _ in 0..5 {
            c.unbind(0, true, 10, 5);
            assert_eq!(c.get(0).overloaded, 1, "{:?}", c.get(0));
        }
        c.unbind(0, true, 10, 5); // 4 < 5
        assert_eq!(c.get(0), RealConns { active: 0, inactive: 4, persist: 0, overloaded: 0 });
        // No lower threshold: clears below 3/4 of the upper one.
        set(Field::Active, 8);
        set(Field::Inactive, 0);
        set(Field::Overloaded, 1);
        c.unbind(0, false, 8, 0); // 7 * 4 = 28 >= 24
        c.unbind(0, false, 8, 0); // 6 * 4 = 24 >= 24
        assert_eq!(c.get(0).overloaded, 1);
        c.unbind(0, false, 8, 0); // 5 * 4 = 20 < 24
        assert_eq!(c.get(0).overloaded, 0);
    }
}
