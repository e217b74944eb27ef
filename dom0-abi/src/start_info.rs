//! `start_info`: what the domain builder tells a PV kernel at entry.
//!
//! The builder writes one `StartInfo` into its own page inside the initial
//! mapping and passes its virtual address in `RSI`. After that the page
//! belongs to the guest; the hypervisor never reads it back (only a resume
//! from suspend would refill the fields up to `console`).
//!
//! Every field is written by the **builder** (hypervisor for dom0, toolstack
//! for others) and only read by the guest. Field docs say what each means.

use bitflags::bitflags;

/// The guest-type string of a 64-bit PV guest, stored NUL-terminated in
/// [`StartInfo::magic`]. It must also appear in `XENVER_capabilities`.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";
/// Size of [`StartInfo::cmd_line`] including the terminating NUL.
pub const MAX_GUEST_CMDLINE: usize = 1024;

bitflags! {
    /// `SIF_*`: properties of the domain, in [`StartInfo::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SifFlags: u32 {
        /// The domain is privileged (may use privileged hypercalls).
        const PRIVILEGED = 1 << 0;
        /// The domain is the initial (hardware/control) domain, dom0.
        const INITDOMAIN = 1 << 1;
        /// `mod_start` holds a multiboot-style module list, not one module.
        const MULTIBOOT_MOD = 1 << 2;
        /// `mod_start` is a PFN, not a virtual address (the module is not
        /// mapped; requested with the `MOD_START_PFN` ELF note).
        const MOD_START_PFN = 1 << 3;
        /// The toolstack understands a virtually mapped p2m list.
        const VIRT_P2M_4TOOLS = 1 << 4;
        /// Reserved for power-management options (bits 15:8).
        const PM_MASK = 0xFF << 8;
    }
}

/// The `console` union of `start_info` (16 bytes).
///
/// For a domU it holds `{u64 mfn; u32 evtchn}` of the console ring; for
/// dom0 it holds `{u32 info_off; u32 info_size}` locating a
/// `dom0_vga_console_info` inside the start_info page (zero: no VGA info).
/// The two views overlap; accessors pick one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsoleInfo {
    /// Bytes 0-7: `domU.mfn`, or `dom0.info_off` (low half) and
    /// `dom0.info_size` (high half).
    pub word0: u64,
    /// Bytes 8-15: `domU.evtchn` in the low half; the high half is padding.
    pub word1: u64,
}

impl ConsoleInfo {
    /// The domU view: console ring MFN and its event channel.
    #[must_use]
    pub const fn dom_u(mfn: u64, evtchn: u32) -> ConsoleInfo {
        ConsoleInfo {
            word0: mfn,
            word1: evtchn as u64,
        }
    }

    /// The dom0 view: offset and size of the VGA console info in the
    /// start_info page.
    #[must_use]
    pub const fn dom0(info_off: u32, info_size: u32) -> ConsoleInfo {
        ConsoleInfo {
            word0: ((info_size as u64) << 32) | info_off as u64,
            word1: 0,
        }
    }

    /// domU: MFN of the console ring page.
    #[must_use]
    pub const fn domu_mfn(&self) -> u64 {
        self.word0
    }

    /// domU: event channel of the console ring.
    #[must_use]
    pub const fn domu_evtchn(&self) -> u32 {
        (self.word1 & 0xFFFF_FFFF) as u32
    }

    /// dom0: offset of `dom0_vga_console_info` in the start_info page.
    #[must_use]
    pub const fn dom0_info_off(&self) -> u32 {
        (self.word0 & 0xFFFF_FFFF) as u32
    }

    /// dom0: size of that structure (0: none).
    #[must_use]
    pub const fn dom0_info_size(&self) -> u32 {
        (self.word0 >> 32) as u32
    }
}

/// `struct start_info` for x86-64 (1168 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Guest type, NUL-terminated: [`START_INFO_MAGIC`].
    pub magic: [u8; 32],
    /// Number of pages the domain has (the length of the p2m list).
    pub nr_pages: u64,
    /// **Machine** address of the shared_info page (map it by MFN).
    pub shared_info: u64,
    /// [`SifFlags`] bits.
    pub flags: u32,
    /// Padding (zero).
    pub pad0: u32,
    /// MFN of the xenstore ring page (0 for dom0).
    pub store_mfn: u64,
    /// Event channel of the xenstore ring (0 for dom0).
    pub store_evtchn: u32,
    /// Padding (zero).
    pub pad1: u32,
    /// Console ring (domU) or VGA console info (dom0).
    pub console: ConsoleInfo,
    /// Virtual address of the bootstrap L4 (the initial CR3's table).
    pub pt_base: u64,
    /// Number of bootstrap page-table frames, from `pt_base` on.
    pub nr_pt_frames: u64,
    /// Virtual address of the p2m list: `nr_pages` MFNs indexed by PFN.
    pub mfn_list: u64,
    /// Virtual address of the first module (ramdisk), or its PFN when
    /// [`SifFlags::MOD_START_PFN`] is set; 0 if there is none.
    pub mod_start: u64,
    /// Size of the module in bytes (0 if none).
    pub mod_len: u64,
    /// The domain's command line, NUL-terminated.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First PFN of the initial p2m table (only with the `INIT_P2M` note).
    pub first_p2m_pfn: u64,
    /// Number of frames of the initial p2m table (only with `INIT_P2M`).
    pub nr_p2m_frames: u64,
}

crate::assert_layout!(ConsoleInfo, 16, { word0: 0, word1: 8 });
crate::assert_layout!(StartInfo, 1168, {
    magic: 0, nr_pages: 32, shared_info: 40, flags: 48, pad0: 52, store_mfn: 56,
    store_evtchn: 64, pad1: 68, console: 72, pt_base: 88, nr_pt_frames: 96,
    mfn_list: 104, mod_start: 112, mod_len: 120, cmd_line: 128,
    first_p2m_pfn: 1152, nr_p2m_frames: 1160,
});

/// The bytes of `buf` up to (not including) the first NUL.
fn until_nul(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// Copies `src` into `dst` NUL-terminated, truncating to `dst.len() - 1`
/// bytes; the rest of `dst` is zeroed. Returns the number of bytes copied.
fn copy_nul_terminated(dst: &mut [u8], src: &[u8]) -> usize {
    let n = src.len().min(dst.len().saturating_sub(1));
    dst.fill(0);
    dst[..n].copy_from_slice(&src[..n]);
    n
}

impl StartInfo {
    /// An all-zero `start_info`.
    #[must_use]
    pub const fn zeroed() -> StartInfo {
        StartInfo {
            magic: [0; 32],
            nr_pages: 0,
            shared_info: 0,
            flags: 0,
            pad0: 0,
            store_mfn: 0,
            store_evtchn: 0,
            pad1: 0,
            console: ConsoleInfo { word0: 0, word1: 0 },
            pt_base: 0,
            nr_pt_frames: 0,
            mfn_list: 0,
            mod_start: 0,
            mod_len: 0,
            cmd_line: [0; MAX_GUEST_CMDLINE],
            first_p2m_pfn: 0,
            nr_p2m_frames: 0,
        }
    }

    /// The guest-type string without its NUL.
    #[must_use]
    pub fn magic_bytes(&self) -> &[u8] {
        until_nul(&self.magic)
    }

    /// Sets `magic`, truncated to 31 bytes and NUL-terminated.
    pub fn set_magic(&mut self, magic: &[u8]) {
        copy_nul_terminated(&mut self.magic, magic);
    }

    /// The command line without its NUL.
    #[must_use]
    pub fn cmdline(&self) -> &[u8] {
        until_nul(&self.cmd_line)
    }

    /// Sets the command line, truncated to 1023 bytes and NUL-terminated.
    /// Returns the number of bytes kept.
    pub fn set_cmdline(&mut self, cmdline: &[u8]) -> usize {
        copy_nul_terminated(&mut self.cmd_line, cmdline)
    }

    /// The flags as [`SifFlags`] (unknown bits kept).
    #[must_use]
    pub const fn sif_flags(&self) -> SifFlags {
        SifFlags::from_bits_retain(self.flags)
    }

    /// Whether this is the initial domain ([`SifFlags::INITDOMAIN`]).
    #[must_use]
    pub const fn is_initdomain(&self) -> bool {
        self.sif_flags().contains(SifFlags::INITDOMAIN)
    }
}

impl Default for StartInfo {
    fn default() -> StartInfo {
        StartInfo::zeroed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        let mut si = StartInfo::zeroed();
        si.set_magic(START_INFO_MAGIC);
        assert_eq!(si.magic_bytes(), b"xen-3.0-x86_64");
        assert_eq!(si.set_cmdline(b"test=hello"), 10);
        assert_eq!(si.cmdline(), b"test=hello");
        let long = [b'x'; 2000];
        assert_eq!(si.set_cmdline(&long), 1023);
        assert_eq!(si.cmd_line[1023], 0);
        assert_eq!(si.cmdline().len(), 1023);
    }

    #[test]
    fn console_views() {
        let c = ConsoleInfo::dom_u(0x1234, 7);
        assert_eq!((c.domu_mfn(), c.domu_evtchn()), (0x1234, 7));
        let d = ConsoleInfo::dom0(1168, 48);
        assert_eq!((d.dom0_info_off(), d.dom0_info_size()), (1168, 48));
        let mut si = StartInfo::zeroed();
        si.flags = (SifFlags::PRIVILEGED | SifFlags::INITDOMAIN).bits();
        assert!(si.is_initdomain());
        assert_eq!(si.flags, 3);
    }
}
