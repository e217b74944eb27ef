//! `XENFEAT_*`: optional hypervisor features a guest can query.
//!
//! Features are reported in 32-bit submaps by `XENVER_get_features`
//! ([`FeatureInfo`](crate::version::FeatureInfo)); only submap 0 exists.
//! Kernels declare the features they support in the `FEATURES` ELF note
//! (by name) and the `SUPPORTED_FEATURES` note (as a bitmap).
//!
//! For a 64-bit PV guest Xen 4.17 reports `mmu_pt_update_preserve_ad`,
//! `highmem_assist`, `gnttab_map_avail_bits`, `memory_op_vnode_supported`
//! and `direct_mapped`, plus `dom0` for the hardware domain.

/// Number of 32-bit feature submaps (`XENFEAT_NR_SUBMAPS`).
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// Declares `XenFeature` from one table: variant, bit number, note name.
macro_rules! feature_table {
    ($($(#[$doc:meta])* $name:ident = $bit:literal, $cname:literal;)*) => {
        /// A feature bit number (`XENFEAT_*`).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum XenFeature {
            $($(#[$doc])* $name = $bit,)*
        }

        impl XenFeature {
            /// Every feature, ascending.
            pub const ALL: &'static [XenFeature] = &[$(XenFeature::$name),*];

            /// The feature with bit number `bit`.
            #[must_use]
            pub const fn from_number(bit: u32) -> Option<XenFeature> {
                match bit {
                    $($bit => Some(XenFeature::$name),)*
                    _ => None,
                }
            }

            /// Xen's name (as used after `XENFEAT_`), e.g. `"dom0"`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(XenFeature::$name => $cname,)*
                }
            }
        }
    };
}

feature_table! {
    /// The guest may write its page tables directly (translated guests).
    WritablePageTables = 0, "writable_page_tables";
    /// The guest may write its descriptor tables directly.
    WritableDescriptorTables = 1, "writable_descriptor_tables";
    /// The hypervisor translates guest-physical to machine addresses.
    AutoTranslatedPhysmap = 2, "auto_translated_physmap";
    /// The guest kernel runs in ring 0 (obsolete; refused for dom0).
    SupervisorModeKernel = 3, "supervisor_mode_kernel";
    /// PAE page directories may lie above 4 GiB (32-bit guests).
    PaePgdirAbove4gb = 4, "pae_pgdir_above_4gb";
    /// `MMU_PT_UPDATE_PRESERVE_AD` is available.
    MmuPtUpdatePreserveAd = 5, "mmu_pt_update_preserve_ad";
    /// Highmem assist (32-bit guests).
    HighmemAssist = 6, "highmem_assist";
    /// Grant mappings may use the PTE's available bits.
    GnttabMapAvailBits = 7, "gnttab_map_avail_bits";
    /// HVM: event delivery through an interrupt vector.
    HvmCallbackVector = 8, "hvm_callback_vector";
    /// HVM: the PV clock is safe to use.
    HvmSafePvclock = 9, "hvm_safe_pvclock";
    /// HVM: physical interrupts are delivered as event channels.
    HvmPirqs = 10, "hvm_pirqs";
    /// The domain is (or the kernel can be) the hardware domain.
    Dom0 = 11, "dom0";
    /// Grant mappings are identity (ARM).
    GrantMapIdentity = 12, "grant_map_identity";
    /// `XENMEM_get_vnumainfo` and vNUMA memory ops are available.
    MemoryOpVnodeSupported = 13, "memory_op_vnode_supported";
    /// ARM SMCCC is available.
    ArmSmcccSupported = 14, "ARM_SMCCC_supported";
    /// The RSDP may be anywhere (Linux PVH).
    LinuxRsdpUnrestricted = 15, "linux_rsdp_unrestricted";
    /// Guest frames are not mapped 1:1 onto machine frames.
    NotDirectMapped = 16, "not_direct_mapped";
    /// Guest frames are machine frames (every PV guest).
    DirectMapped = 17, "direct_mapped";
}

impl XenFeature {
    /// The feature's mask in its 32-bit submap (`1 << number`).
    #[must_use]
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Whether `submap` (submap 0) has this feature.
    #[must_use]
    pub const fn is_set_in(self, submap: u32) -> bool {
        submap & self.bit() != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits() {
        assert_eq!(XenFeature::Dom0.bit(), 1 << 11);
        assert_eq!(XenFeature::MmuPtUpdatePreserveAd as u32, 5);
        assert_eq!(XenFeature::DirectMapped.bit(), 1 << 17);
        assert_eq!(XenFeature::from_number(11), Some(XenFeature::Dom0));
        assert_eq!(XenFeature::from_number(18), None);
        assert_eq!(XenFeature::ALL.len(), 18);
        assert!(XenFeature::Dom0.is_set_in(0x800));
    }
}
