//! Which hypervisor the guest runs on, and facts about the initial mapping.
//!
//! The same test guest boots on real Xen 4.17 and on this hypervisor.
//! Where the two legitimately differ (documented in `dom0-abi`), tests ask
//! `on_xen()` (bare-metal target only). This hypervisor's
//! `XENVER_extraversion` contains `"oxen"`; Xen's never does.

#![forbid(unsafe_code)]

/// Where pseudo-physical frame 0 is mapped: the `VIRT_BASE` note of every
/// kernel built with this shim (`guest.ld` links the image from here).
pub const VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;

/// The marker in this hypervisor's extraversion.
pub const OUR_EXTRAVERSION_MARKER: &[u8] = b"oxen";

/// Whether an extraversion string (up to its NUL) is this hypervisor's.
#[must_use]
pub fn is_our_extraversion(extraversion: &[u8]) -> bool {
    let end = extraversion
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(extraversion.len());
    extraversion[..end]
        .windows(OUR_EXTRAVERSION_MARKER.len())
        .any(|w| w == OUR_EXTRAVERSION_MARKER)
}

/// The pseudo-physical frame number of a virtual address of the initial
/// mapping (`va = VIRT_BASE + pfn * 4096`), or `None` below `VIRT_BASE`.
#[must_use]
pub const fn initial_mapping_pfn(va: u64) -> Option<u64> {
    match va.checked_sub(VIRT_BASE) {
        Some(off) => Some(off >> dom0_abi::layout::PAGE_SHIFT),
        None => None,
    }
}

/// True when running on real Xen, false on this hypervisor.
///
/// Asks `XENVER_extraversion`; a failing call also means "not Xen" (Xen
/// always answers it).
#[cfg(target_os = "none")]
#[must_use]
pub fn on_xen() -> bool {
    let mut extra = [0u8; dom0_abi::version::XENVER_EXTRAVERSION_LEN];
    crate::hypercall::xenver_extraversion(&mut extra) == 0 && !is_our_extraversion(&extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraversion() {
        assert!(is_our_extraversion(b".0-oxen\0\0\0"));
        assert!(!is_our_extraversion(b".7\0oxen"));
        assert!(!is_our_extraversion(b".5-pre"));
        assert!(!is_our_extraversion(b""));
    }

    #[test]
    fn pfns() {
        assert_eq!(initial_mapping_pfn(VIRT_BASE), Some(0));
        assert_eq!(initial_mapping_pfn(VIRT_BASE + 0x5123), Some(5));
        assert_eq!(initial_mapping_pfn(0x1000), None);
    }

    #[test]
    fn linker_script_agrees() {
        let script = include_str!("../guest.ld");
        assert!(script.contains("VIRT_BASE = 0xFFFFFFFF80000000;"));
        assert_eq!(VIRT_BASE, 0xFFFFFFFF80000000);
    }
}
