//! Loading the director: its entry program, one program per scheduler, and
//! the tail-call table that joins them (`lb_common::PROG_SCHEDULERS`).

use aya::{
    Ebpf,
    maps::{Map, ProgramArray},
    programs::Xdp,
};
use lb_common::{
    MAP_SCHEDULERS, PROG_CONNECT, PROG_DIRECTOR, PROG_DIRECTOR6, PROG_FRAGMENT, PROG_ICMP, PROG_SCHEDULERS,
    SCHED_CONNECT, SLOT_FRAGMENT, SLOT_ICMP, SLOT_IPV6,
};

use super::Error;

/// Loads `xlvs_director` and every scheduler program through the verifier,
/// and fills `SCHEDULERS` so that a new connection reaches its scheduler
/// (or `xlvs_connect`, when a persistence template names its real), ICMP
/// reaches `xlvs_icmp`, a fragment past the first `xlvs_fragment` and IPv6
/// `xlvs_director6`.
///
/// Keep the returned table for as long as the director runs (or pin it,
/// see `pin`): the kernel empties a program array when user space closes
/// its last handle on it.
///
/// # Errors
/// When a program is missing or refused (the error carries the verifier
/// log), or the table cannot be written.
pub fn load_director(ebpf: &mut Ebpf) -> Result<Map, Error> {
    // Taken out of `ebpf` so that programs can be borrowed while it is
    // written.
    let mut map = ebpf.take_map(MAP_SCHEDULERS).ok_or(Error::Missing(MAP_SCHEDULERS))?;
    let mut table =
        ProgramArray::try_from(&mut map).map_err(|source| Error::Map { name: MAP_SCHEDULERS, source })?;
    let slots = PROG_SCHEDULERS.iter().map(|(id, name)| (u32::from(*id), *name));
    let others = [
        (SCHED_CONNECT, PROG_CONNECT),
        (SLOT_ICMP, PROG_ICMP),
        (SLOT_FRAGMENT, PROG_FRAGMENT),
        (SLOT_IPV6, PROG_DIRECTOR6),
    ];
    for (slot, name) in slots.chain(others) {
        let program = xdp(ebpf, name)?;
        program.load().map_err(|source| Error::Program { name, source })?;
        let fd = program.fd().map_err(|source| Error::Program { name, source })?;
        table.set(slot, fd, 0).map_err(|source| Error::Map { name: MAP_SCHEDULERS, source })?;
    }
    xdp(ebpf, PROG_DIRECTOR)?.load().map_err(|source| Error::Program { name: PROG_DIRECTOR, source })?;
    Ok(map)
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::Missing(name))?
        .try_into()
        .map_err(|source| Error::Program { name, source })
}
