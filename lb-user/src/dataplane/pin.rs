//! Pinning the tail-call table (`SCHEDULERS`) in bpffs while the director
//! is attached, so that a director that dies without detaching (SIGKILL, a
//! crash) leaves a whole data plane behind: the kernel empties a program
//! array when its last user reference goes, and without the table the
//! attached program would lose IPv6, ICMP, later fragments and new
//! connections, keeping only IPv4's established flows. A pin is a user
//! reference no process holds. A clean stop detaches and unpins; the next
//! director in the same network namespace replaces a dead one's pin.
//!
//! The pin lives at `/sys/fs/bpf/xlvs/net-INODE/schedulers`, INODE naming
//! the director's network namespace (directors in other namespaces of one
//! host share the bpffs). Where `/sys/fs/bpf` holds no bpffs, one is
//! mounted there, as systemd does at boot.

use std::{
    ffi::CString,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// bpffs's `statfs` magic (`BPF_FS_MAGIC`).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where bpffs is mounted on a systemd host.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The pin of the tail-call table of a director in the network namespace
/// whose inode is `netns`.
#[must_use]
pub fn path_for(netns: u64) -> PathBuf {
    Path::new(BPFFS).join("xlvs").join(format!("net-{netns}")).join("schedulers")
}

/// The pin's path for this process's network namespace, with its
/// directories made and bpffs mounted if it was not; a dead director's pin
/// there is removed.
///
/// # Errors
/// When no bpffs can be had at [`BPFFS`] (inside `ip netns exec`, which
/// mounts a fresh /sys, say), or the directories cannot be made.
pub fn prepare() -> io::Result<PathBuf> {
    ensure_bpffs()?;
    // The calling thread's namespace: the one its netlink attached in.
    let netns = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    let path = path_for(netns);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(path)
}

/// Removes the pin at `path`, and the directories [`prepare`] made for it
/// once they are empty (another namespace's director may still have its
/// own pin there).
pub fn remove(path: &Path) {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the tail-call table's pin");
        }
        _ => {}
    }
    for dir in path.ancestors().skip(1).take(2) {
        if std::fs::remove_dir(dir).is_err() {
            break;
        }
    }
}

fn is_bpffs(path: &str) -> io::Result<bool> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid NUL-terminated path and a buffer statfs fills.
    if unsafe { libc::statfs(c.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded.
    let kind = unsafe { stat.assume_init() }.f_type;
    Ok(i64::from(kind) == BPF_FS_MAGIC)
}

fn ensure_bpffs() -> io::Result<()> {
    if is_bpffs(BPFFS)? {
        return Ok(());
    }
    let (source, target, fstype) = (c"bpf", CString::new(BPFFS).expect("no NUL"), c"bpf");
    let options = c"mode=0700";
    // SAFETY: valid NUL-terminated strings; mount does not keep them.
    let rc = unsafe {
        libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, options.as_ptr().cast())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    tracing::info!(path = BPFFS, "mounted bpffs, as systemd would at boot");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_per_network_namespace() {
        assert_eq!(path_for(4026531840), Path::new("/sys/fs/bpf/xlvs/net-4026531840/schedulers"));
        assert_ne!(path_for(1), path_for(2));
    }
}
