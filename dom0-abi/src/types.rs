//! Number spaces of the ABI as distinct types: domain ids, frames, ports.
//!
//! The `#[repr(C)]` wire structures keep plain integers (their layout is the
//! contract); code on either side wraps them in these newtypes as soon as it
//! reads them, so a PFN cannot be passed where an MFN is expected.

/// A domain id (`domid_t`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub u16);

impl DomId {
    /// Ids from here on are reserved for special meanings.
    pub const FIRST_RESERVED: DomId = DomId(0x7FF0);
    /// The calling domain itself.
    pub const SELF: DomId = DomId(0x7FF0);
    /// I/O memory (in `mmu_update` and `update_va_mapping_otherdomain`:
    /// allow only I/O mappings).
    pub const IO: DomId = DomId(0x7FF1);
    /// The hypervisor (privileged mappings of its heap, e.g. the M2P).
    pub const XEN: DomId = DomId(0x7FF2);
    /// Owner of shared (copy-on-write) pages.
    pub const COW: DomId = DomId(0x7FF3);
    /// No valid owner.
    pub const INVALID: DomId = DomId(0x7FF4);
    /// The idle domain.
    pub const IDLE: DomId = DomId(0x7FFF);
    /// Mask of valid domain id bits.
    pub const MASK: u16 = 0x7FFF;
    /// The initial domain.
    pub const DOM0: DomId = DomId(0);

    /// Whether the id names an ordinary domain (below
    /// [`DomId::FIRST_RESERVED`]).
    #[must_use]
    pub const fn is_ordinary(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

/// A machine frame number: host physical address >> 12.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mfn(pub u64);

/// A pseudo-physical frame number of a PV guest (index into its p2m list).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pfn(pub u64);

/// An event-channel port.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EvtchnPort(pub u32);

/// A grant reference (index into a domain's grant table).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef(pub u32);

/// A grant-mapping handle returned by `map_grant_ref`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantHandle(pub u32);

/// A vCPU id within a domain.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuId(pub u32);

impl Mfn {
    /// The machine address of the frame's first byte.
    #[must_use]
    pub const fn maddr(self) -> u64 {
        self.0 << crate::layout::PAGE_SHIFT
    }
}

impl Pfn {
    /// The pseudo-physical address of the frame's first byte.
    #[must_use]
    pub const fn paddr(self) -> u64 {
        self.0 << crate::layout::PAGE_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domids() {
        assert!(DomId::DOM0.is_ordinary());
        assert!(!DomId::SELF.is_ordinary());
        assert_eq!(DomId::INVALID.0, 0x7FF4);
        assert_eq!(Mfn(3).maddr(), 0x3000);
    }
}
