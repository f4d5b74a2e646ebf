//! The schedulers by name and id, and the scheduler flags of a service
//! (`ipvsadm -b`), as IPVS spells them (`ip_vs_sched.c` looks schedulers up
//! by exact, case-sensitive name).

use core::fmt;
use core::str::FromStr;

use crate::{
    SCHED_DH, SCHED_LBLC, SCHED_LBLCR, SCHED_LC, SCHED_MH, SCHED_NQ, SCHED_RR, SCHED_SED, SCHED_SH,
    SCHED_WLC, SCHED_WRR,
};

/// `Service::flags` bits for scheduler options. They mirror
/// `IP_VS_SVC_F_SCHED1..3` (`include/uapi/linux/ip_vs.h`) so the values are
/// the ones ipvsadm and the netlink API carry.
pub const SVC_F_SCHED1: u8 = 0x08;
pub const SVC_F_SCHED2: u8 = 0x10;
pub const SVC_F_SCHED3: u8 = 0x20;
/// sh: probe further buckets when the hashed real is unavailable.
pub const SVC_F_SH_FALLBACK: u8 = SVC_F_SCHED1;
/// sh: hash the client's port as well as its address.
pub const SVC_F_SH_PORT: u8 = SVC_F_SCHED2;
/// mh: probe further slots when the hashed real is unavailable.
pub const SVC_F_MH_FALLBACK: u8 = SVC_F_SCHED1;
/// mh: hash the client's port as well as its address.
pub const SVC_F_MH_PORT: u8 = SVC_F_SCHED2;

/// An IPVS scheduler. The discriminants are the `SCHED_*` ids of `maps.rs`,
/// which `Service::scheduler` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Scheduler {
    Rr = SCHED_RR,
    Wrr = SCHED_WRR,
    Lc = SCHED_LC,
    Wlc = SCHED_WLC,
    Lblc = SCHED_LBLC,
    Lblcr = SCHED_LBLCR,
    Dh = SCHED_DH,
    Sh = SCHED_SH,
    Sed = SCHED_SED,
    Nq = SCHED_NQ,
    Mh = SCHED_MH,
}

impl Scheduler {
    /// Every scheduler, in id order.
    pub const ALL: [Self; 11] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Lblc,
        Self::Lblcr,
        Self::Dh,
        Self::Sh,
        Self::Sed,
        Self::Nq,
        Self::Mh,
    ];

    /// The id `Service::scheduler` holds.
    #[must_use]
    pub const fn id(self) -> u8 {
        self as u8
    }

    #[must_use]
    pub const fn from_id(id: u8) -> Option<Self> {
        if (id as usize) < Self::ALL.len() { Some(Self::ALL[id as usize]) } else { None }
    }

    /// The IPVS name (`struct ip_vs_scheduler::name`).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Mh => "mh",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// A scheduler flag by its ipvsadm name (`-b`): `flag-1`..`flag-3` for
    /// any scheduler, and the named aliases only for the scheduler they
    /// belong to (`sh-port` means nothing to mh).
    #[must_use]
    pub fn flag_from_name(self, name: &str) -> Option<u8> {
        match (self, name) {
            (_, "flag-1") => Some(SVC_F_SCHED1),
            (_, "flag-2") => Some(SVC_F_SCHED2),
            (_, "flag-3") => Some(SVC_F_SCHED3),
            (Self::Sh, "sh-fallback") => Some(SVC_F_SH_FALLBACK),
            (Self::Sh, "sh-port") => Some(SVC_F_SH_PORT),
            (Self::Mh, "mh-fallback") => Some(SVC_F_MH_FALLBACK),
            (Self::Mh, "mh-port") => Some(SVC_F_MH_PORT),
            _ => None,
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name IPVS does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownScheduler;

impl fmt::Display for UnknownScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown scheduler (expected one of")?;
        for s in Scheduler::ALL {
            write!(f, " {s}")?;
        }
        f.write_str(")")
    }
}

impl core::error::Error for UnknownScheduler {}

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or(UnknownScheduler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn ids_match_the_map_constants_and_round_trip() {
        for (i, s) in Scheduler::ALL.into_iter().enumerate() {
            assert_eq!(s.id() as usize, i);
            assert_eq!(Scheduler::from_id(s.id()), Some(s));
        }
        assert_eq!(Scheduler::Mh.id(), SCHED_MH);
        assert_eq!(Scheduler::Sed.id(), SCHED_SED);
        assert_eq!(Scheduler::from_id(11), None);
    }

    #[test]
    fn names_parse_exactly_as_ipvs_spells_them() {
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!("lblcr".parse(), Ok(Scheduler::Lblcr));
        assert_eq!("WLC".parse::<Scheduler>(), Err(UnknownScheduler));
        assert_eq!("fo".parse::<Scheduler>(), Err(UnknownScheduler));
        assert!(UnknownScheduler.to_string().contains(" mh)"));
    }

    #[test]
    fn flags_belong_to_their_scheduler() {
        assert_eq!(Scheduler::Sh.flag_from_name("sh-port"), Some(0x10));
        assert_eq!(Scheduler::Mh.flag_from_name("mh-fallback"), Some(0x08));
        assert_eq!(Scheduler::Mh.flag_from_name("sh-port"), None);
        assert_eq!(Scheduler::Rr.flag_from_name("flag-3"), Some(0x20));
    }
}
