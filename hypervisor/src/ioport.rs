//! Port I/O of PV guests, decided as Xen 4.17 decides it. Every `in`/`out`
//! a guest executes faults (the guest kernel runs at ring 1 with IOPL 0)
//! and comes here through the #GP path:
//!
//! 1. The guest's own permission ([`guest_allows`]): the vCPU's virtual
//!    IOPL (`PHYSDEVOP_set_iopl`) must reach the mode's privilege (1 in the
//!    kernel, 3 in user mode), or the bitmap it registered with
//!    `PHYSDEVOP_set_iobitmap` must clear every bit of the access (bytes it
//!    cannot read count as set). Otherwise the guest gets its #GP(0).
//! 2. The domain's rights ([`direct`], Xen's `admin_io_okay`): ports given
//!    to it ([`IoPorts`]: all but the hypervisor's own for dom0, those of
//!    `XEN_DOMCTL_ioport_permission` for others) are accessed for real,
//!    except a dword at 0xCF8 and the CMOS RTC's 0x70/0x71, which are
//!    always emulated.
//! 3. Everything else is emulated byte by byte ([`emulated_read`],
//!    [`emulated_write`]): the RTC through the domain's latched index
//!    (the data port only for a domain given 0x70-0x71), PCI configuration
//!    mechanism #1 through the domain's latched 0xCF8 (hardware domain
//!    only), the PIT's channel 2 and port 0x61 (hardware domain only,
//!    filtered as Xen's `hwdom_pit_access`: [`pit_read`], [`pit_write`]),
//!    and any other port reads all ones and drops writes.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec;

/// Ports: 0 to 0xFFFF.
pub const NR_PORTS: u32 = 0x1_0000;

/// The RTC's index and data ports.
pub const RTC_INDEX: u16 = 0x70;
/// The RTC's data port.
pub const RTC_DATA: u16 = 0x71;
/// PCI configuration mechanism #1: the address register.
pub const PCI_CF8: u16 = 0xcf8;
/// PCI configuration mechanism #1: the data window (0xCFC-0xCFF).
pub const PCI_CFC: u16 = 0xcfc;
/// The PIT's channel 2 data port.
pub const PIT_CH2: u16 = 0x42;
/// The PIT's mode (control word) port.
pub const PIT_MODE: u16 = 0x43;
/// System control port B: channel 2's gate (bit 0) and speaker (bit 1).
pub const PORT_B: u16 = 0x61;

/// A domain's I/O-port rights: one bit per port, set = permitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoPorts {
    bits: Box<[u64]>,
}

impl IoPorts {
    /// No port.
    pub fn none() -> IoPorts {
        IoPorts {
            bits: vec![0; (NR_PORTS / 64) as usize].into_boxed_slice(),
        }
    }

    /// What Xen 4.17 gives its hardware domain: every port but the
    /// interrupt controllers (8259s at 0x20-0x21 and 0xA0-0xA1), the PIT
    /// (0x40-0x43, and 0x61 for channel 2's gate), INIT/A20 (0x92), IGNNE
    /// (0xF0), PCI's data window 0xCFC-0xCFF (emulated) and the UART the
    /// hypervisor's console uses (`uart`, 8 ports).
    pub fn hardware_domain(uart: u16) -> IoPorts {
        let mut ports = IoPorts::none();
        ports.set(0, NR_PORTS - 1, true);
        for (first, last) in [
            (0x20, 0x21),
            (0xa0, 0xa1),
            (0x40, 0x43),
            (0x61, 0x61),
            (0x92, 0x92),
            (0xf0, 0xf0),
            (0xcfc, 0xcff),
            (u32::from(uart), u32::from(uart) + 7),
        ] {
            ports.set(first, last.min(NR_PORTS - 1), false);
        }
        ports
    }

    /// Grants (`allow`) or revokes ports `first..=last` (both below
    /// [`NR_PORTS`]; the caller checks).
    pub fn set(&mut self, first: u32, last: u32, allow: bool) {
        for port in first..=last.min(NR_PORTS - 1) {
            let (word, bit) = ((port / 64) as usize, port % 64);
            if allow {
                self.bits[word] |= 1 << bit;
            } else {
                self.bits[word] &= !(1 << bit);
            }
        }
    }

    /// Whether any port is permitted.
    pub fn any(&self) -> bool {
        self.bits.iter().any(|&word| word != 0)
    }

    /// Whether every port of `first..=last` is permitted.
    pub fn permitted(&self, first: u32, last: u32) -> bool {
        last < NR_PORTS
            && (first..=last).all(|port| self.bits[(port / 64) as usize] & (1 << (port % 64)) != 0)
    }
}

/// Whether an access of `bytes` bytes at `port` touches the CMOS RTC.
pub const fn is_cmos_port(port: u16, bytes: u32) -> bool {
    port <= RTC_DATA && port as u32 + bytes > RTC_INDEX as u32
}

/// Xen's `admin_io_okay`: whether the access goes to the hardware as it
/// is (`ports`: the domain's rights).
pub fn direct(ports: Option<&IoPorts>, port: u16, bytes: u32) -> bool {
    if (port == PCI_CF8 && bytes == 4) || is_cmos_port(port, bytes) {
        return false;
    }
    let first = u32::from(port);
    ports.is_some_and(|p| p.permitted(first, first + bytes - 1))
}

/// The vCPU's I/O bitmap as `PHYSDEVOP_set_iobitmap` registered it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBitmap {
    /// The bitmap's guest address.
    pub base: u64,
    /// Ports below this one are covered (0: no bitmap).
    pub limit: u32,
}

/// Xen's `guest_io_okay`: whether the guest itself allows the access.
/// `read_byte(offset)` reads byte `offset` of the bitmap (`None` if it
/// cannot: the byte counts as all ones).
pub fn guest_allows(
    iopl: u8,
    kernel: bool,
    bitmap: IoBitmap,
    port: u16,
    bytes: u32,
    mut read_byte: impl FnMut(u64) -> Option<u8>,
) -> bool {
    if iopl >= if kernel { 1 } else { 3 } {
        return true;
    }
    if u32::from(port) + bytes > bitmap.limit {
        return false;
    }
    let offset = u64::from(port >> 3);
    let low = read_byte(offset).unwrap_or(0xff);
    let high = read_byte(offset + 1).unwrap_or(0xff);
    let mask = ((1u16 << bytes) - 1) << (port & 7);
    u16::from_le_bytes([low, high]) & mask == 0
}

/// Per-domain state of the emulated ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latches {
    /// The last dword written to 0xCF8.
    pub pci_cf8: u32,
    /// The last byte written to 0x70.
    pub rtc_index: u8,
}

/// The devices behind the emulated ports (the real ones, or a fake).
pub trait Hardware {
    /// Reads `size` (1, 2 or 4) bytes at `offset` (0-3) of the PCI data
    /// window after writing `cf8` to the address register.
    fn pci_read(&mut self, cf8: u32, offset: u16, size: u32) -> u32;
    /// Writes `size` bytes at `offset` of the data window after `cf8`.
    fn pci_write(&mut self, cf8: u32, offset: u16, size: u32, value: u32);
    /// Reads RTC register `index` (0-0x7F).
    fn rtc_read(&mut self, index: u8) -> u8;
    /// Writes RTC register `index`.
    fn rtc_write(&mut self, index: u8, value: u8);
    /// Reads PIT port `port` ([`PIT_CH2`] or [`PORT_B`]).
    fn pit_read(&mut self, port: u16) -> u8;
    /// Writes PIT port `port` ([`PIT_CH2`], [`PIT_MODE`] or [`PORT_B`]).
    fn pit_write(&mut self, port: u16, value: u8);
}

/// A hardware domain's read of a PIT port, as Xen 4.17 lets it through
/// while Xen itself does not use the PIT (this hypervisor uses it only to
/// measure the TSC at boot): channel 2's data and port 0x61 read the
/// hardware; the write-only mode port reads all ones.
pub fn pit_read(hw: &mut impl Hardware, port: u16) -> u32 {
    match port {
        PIT_CH2 | PORT_B => u32::from(hw.pit_read(port)),
        _ => u32::MAX,
    }
}

/// A hardware domain's write of a PIT port, as Xen 4.17 lets it through:
/// channel 2's data; a control word for channel 2, or a read-back command
/// naming channel 2 (without channels 0 and 1 and bit 0); bits 0-1 of port
/// 0x61 (the others are kept). Control words for channels 0 and 1, which
/// the hypervisor keeps, are dropped.
pub fn pit_write(hw: &mut impl Hardware, port: u16, value: u8) {
    match port {
        PIT_CH2 => hw.pit_write(port, value),
        PIT_MODE => match value & 0xc0 {
            0x80 => hw.pit_write(port, value),
            0xc0 if value & 0x08 != 0 => hw.pit_write(port, value & 0xf8),
            _ => {}
        },
        PORT_B => {
            let kept = hw.pit_read(PORT_B) & !3;
            hw.pit_write(PORT_B, kept | (value & 3));
        }
        _ => {}
    }
}

/// Whether `port` is one of the PIT's that the hardware domain reaches.
const fn is_pit_port(port: u16) -> bool {
    matches!(port, PIT_CH2 | PIT_MODE | PORT_B)
}

/// Who is asking: its rights, whether it is the hardware domain, and its
/// latches.
pub struct Emulated<'a> {
    /// The domain's port rights.
    pub ports: Option<&'a IoPorts>,
    /// Whether it is the hardware domain (PCI configuration space).
    pub hardware_domain: bool,
    /// Its latched registers.
    pub latches: &'a mut Latches,
}

impl Emulated<'_> {
    fn rtc_data_allowed(&self) -> bool {
        self.ports
            .is_some_and(|p| p.permitted(RTC_INDEX.into(), RTC_DATA.into()))
    }

    /// The width of the next piece of an access at `port` with `bytes`
    /// left: 4 for a whole dword at 0xCF8, the rest of the PCI window's
    /// dword (3 taken as 2), 1 otherwise.
    fn piece(port: u16, bytes: u32) -> u32 {
        if port == PCI_CF8 && bytes == 4 {
            4
        } else if port & 0xfffc == PCI_CFC {
            match bytes.min(4 - u32::from(port & 3)) {
                3 => 2,
                size => size,
            }
        } else {
            1
        }
    }
}

/// Xen's `guest_io_read` for an access that is not [`direct`].
pub fn emulated_read(hw: &mut impl Hardware, who: &mut Emulated<'_>, port: u16, bytes: u32) -> u32 {
    let (mut port, mut left) = (port, bytes);
    let (mut data, mut shift) = (0u32, 0u32);
    while left > 0 {
        let size = Emulated::piece(port, left);
        let piece = if size == 4 && port == PCI_CF8 {
            who.latches.pci_cf8
        } else if port & 0xfffc == PCI_CFC {
            if who.hardware_domain {
                hw.pci_read(who.latches.pci_cf8, port & 3, size)
            } else {
                u32::MAX
            }
        } else if port == RTC_INDEX {
            u32::from(who.latches.rtc_index)
        } else if port == RTC_DATA && who.rtc_data_allowed() {
            u32::from(hw.rtc_read(who.latches.rtc_index & 0x7f))
        } else if is_pit_port(port) && who.hardware_domain {
            pit_read(hw, port)
        } else {
            u32::MAX
        };
        if size == 4 {
            return piece;
        }
        data |= (piece & ((1 << (size * 8)) - 1)) << shift;
        shift += size * 8;
        port = port.wrapping_add(u16::try_from(size).unwrap_or(0));
        left -= size;
    }
    data
}

/// Xen's `guest_io_write` for an access that is not [`direct`].
pub fn emulated_write(
    hw: &mut impl Hardware,
    who: &mut Emulated<'_>,
    port: u16,
    bytes: u32,
    value: u32,
) {
    let (mut port, mut left, mut data) = (port, bytes, value);
    while left > 0 {
        let size = Emulated::piece(port, left);
        if size == 4 && port == PCI_CF8 {
            who.latches.pci_cf8 = data;
        } else if port & 0xfffc == PCI_CFC {
            if who.hardware_domain {
                let mask = if size == 4 {
                    u32::MAX
                } else {
                    (1 << (size * 8)) - 1
                };
                hw.pci_write(who.latches.pci_cf8, port & 3, size, data & mask);
            }
        } else if port == RTC_INDEX {
            who.latches.rtc_index = data.to_le_bytes()[0];
        } else if port == RTC_DATA && who.rtc_data_allowed() {
            hw.rtc_write(who.latches.rtc_index & 0x7f, data.to_le_bytes()[0]);
        } else if is_pit_port(port) && who.hardware_domain {
            pit_write(hw, port, data.to_le_bytes()[0]);
        }
        if size == 4 {
            return;
        }
        data >>= size * 8;
        port = port.wrapping_add(u16::try_from(size).unwrap_or(0));
        left -= size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    struct Fake {
        rtc: Vec<u8>,
        pci: Vec<(u32, u16, u32, Option<u32>)>,
        pit: Vec<(u16, u8)>,
        port_b: u8,
    }

    impl Fake {
        /// A machine with an empty CMOS, no PCI or PIT traffic yet, and
        /// `port_b` in port 0x61.
        fn with_port_b(port_b: u8) -> Fake {
            Fake {
                rtc: vec![0; 128],
                pci: Vec::new(),
                pit: Vec::new(),
                port_b,
            }
        }
    }

    impl Hardware for Fake {
        fn pci_read(&mut self, cf8: u32, offset: u16, size: u32) -> u32 {
            self.pci.push((cf8, offset, size, None));
            0x29c0_8086 >> (offset * 8)
        }
        fn pci_write(&mut self, cf8: u32, offset: u16, size: u32, value: u32) {
            self.pci.push((cf8, offset, size, Some(value)));
        }
        fn rtc_read(&mut self, index: u8) -> u8 {
            self.rtc[usize::from(index)]
        }
        fn rtc_write(&mut self, index: u8, value: u8) {
            self.rtc[usize::from(index)] = value;
        }
        fn pit_read(&mut self, port: u16) -> u8 {
            match port {
                PORT_B => self.port_b,
                _ => 0x5a,
            }
        }
        fn pit_write(&mut self, port: u16, value: u8) {
            if port == PORT_B {
                self.port_b = value;
            }
            self.pit.push((port, value));
        }
    }

    #[test]
    fn the_hardware_domain_reaches_pit_channel_2_only() {
        let mut hw = Fake::with_port_b(0xf0);
        let mut latches = Latches::default();
        let dom0 = IoPorts::hardware_domain(0x3f8);
        let mut who = Emulated {
            ports: Some(&dom0),
            hardware_domain: true,
            latches: &mut latches,
        };
        assert_eq!(emulated_read(&mut hw, &mut who, PIT_CH2, 1), 0x5a);
        assert_eq!(emulated_read(&mut hw, &mut who, PIT_MODE, 1), 0xff);
        assert_eq!(emulated_read(&mut hw, &mut who, PORT_B, 1), 0xf0);
        assert_eq!(emulated_read(&mut hw, &mut who, 0x40, 1), 0xff, "channel 0");
        for (port, value) in [
            (PIT_MODE, 0xb0),
            (PIT_CH2, 0xff),
            (PIT_MODE, 0x30),
            (PIT_MODE, 0xe8),
            (PIT_MODE, 0xe2),
            (PORT_B, 0x0d),
            (0x40, 0x12),
        ] {
            emulated_write(&mut hw, &mut who, port, 1, value);
        }
        assert_eq!(
            hw.pit,
            [
                (PIT_MODE, 0xb0),
                (PIT_CH2, 0xff),
                (PIT_MODE, 0xe8),
                (PORT_B, 0xf1)
            ]
        );
        let mut latches = Latches::default();
        let domu = IoPorts::none();
        let mut who = Emulated {
            ports: Some(&domu),
            hardware_domain: false,
            latches: &mut latches,
        };
        assert_eq!(emulated_read(&mut hw, &mut who, PIT_CH2, 1), 0xff);
        emulated_write(&mut hw, &mut who, PORT_B, 1, 0);
        assert_eq!(hw.port_b, 0xf1, "other domains reach nothing");
    }

    #[test]
    fn the_hardware_domain_gets_all_but_the_hypervisors_ports() {
        let d0 = IoPorts::hardware_domain(0x3f8);
        for kept in [
            0x20, 0x21, 0xa0, 0xa1, 0x40, 0x43, 0x61, 0x92, 0xf0, 0xcfc, 0xcff, 0x3f8, 0x3ff,
        ] {
            assert!(!d0.permitted(kept, kept), "{kept:#x}");
        }
        for open in [0x70, 0x71, 0x80, 0x81, 0xcf8, 0xcfb, 0x2f8, 0xffff] {
            assert!(d0.permitted(open, open), "{open:#x}");
        }
        assert!(!d0.permitted(0x80, 0x10000));
        assert!(!IoPorts::none().permitted(0x81, 0x81));
    }

    #[test]
    fn direct_access_skips_cf8_dwords_and_the_rtc() {
        let d0 = IoPorts::hardware_domain(0x3f8);
        assert!(direct(Some(&d0), 0x81, 1));
        assert!(!direct(Some(&d0), 0xcf8, 4));
        assert!(direct(Some(&d0), 0xcf8, 1));
        assert!(!direct(Some(&d0), 0x70, 1) && !direct(Some(&d0), 0x6f, 2));
        assert!(direct(Some(&d0), 0x72, 1));
        assert!(!direct(Some(&d0), 0x20, 4) && !direct(Some(&d0), 0x3fe, 2));
        assert!(!direct(None, 0x81, 1));
    }

    #[test]
    fn the_guest_allows_by_iopl_or_bitmap() {
        let none = IoBitmap::default();
        let never = |_| -> Option<u8> { panic!("the bitmap is not read at IOPL 1") };
        assert!(guest_allows(1, true, none, 0x81, 1, never));
        assert!(!guest_allows(1, false, none, 0x81, 1, |_| Some(0)));
        assert!(guest_allows(3, false, none, 0x81, 1, never));
        assert!(!guest_allows(0, true, none, 0x81, 1, |_| Some(0)));
        let bitmap = IoBitmap {
            base: 0x1000,
            limit: 0x100,
        };
        // Only port 0x81 clear.
        let read = |offset: u64| Some(if offset == 0x10 { 0xfd } else { 0xff });
        assert!(guest_allows(0, true, bitmap, 0x81, 1, read));
        assert!(!guest_allows(0, true, bitmap, 0x81, 2, read));
        assert!(!guest_allows(0, true, bitmap, 0x82, 1, read));
        assert!(!guest_allows(
            0,
            true,
            IoBitmap {
                limit: 0x81,
                ..bitmap
            },
            0x81,
            1,
            read
        ));
        assert!(guest_allows(
            0,
            true,
            IoBitmap {
                limit: 0x82,
                ..bitmap
            },
            0x81,
            1,
            read
        ));
        assert!(!guest_allows(0, true, bitmap, 0x81, 1, |_| None));
        // A word across a byte boundary needs both bytes.
        let read = |offset: u64| Some(if offset == 0 { 0x7f } else { 0xfe });
        assert!(guest_allows(0, true, bitmap, 7, 2, read));
        assert!(!guest_allows(0, true, bitmap, 7, 2, |offset| (offset == 0)
            .then_some(0x7f)));
    }

    #[test]
    fn the_rtc_is_emulated_through_the_latched_index() {
        let mut hw = Fake::with_port_b(0);
        hw.rtc[0x0d] = 0x80;
        let d0 = IoPorts::hardware_domain(0x3f8);
        let mut latches = Latches::default();
        let mut who = Emulated {
            ports: Some(&d0),
            hardware_domain: true,
            latches: &mut latches,
        };
        emulated_write(&mut hw, &mut who, RTC_INDEX, 1, 0x8d);
        assert_eq!(emulated_read(&mut hw, &mut who, RTC_INDEX, 1), 0x8d);
        assert_eq!(emulated_read(&mut hw, &mut who, RTC_DATA, 1), 0x80);
        assert_eq!(emulated_read(&mut hw, &mut who, RTC_INDEX, 2), 0x808d);
        emulated_write(&mut hw, &mut who, RTC_INDEX, 2, 0x5a0e);
        assert_eq!(hw.rtc[0x0e], 0x5a);
        // Without the ports, the index still latches but data is ~0.
        let mut latches = Latches::default();
        let mut domu = Emulated {
            ports: None,
            hardware_domain: false,
            latches: &mut latches,
        };
        emulated_write(&mut hw, &mut domu, RTC_INDEX, 1, 0x0d);
        assert_eq!(emulated_read(&mut hw, &mut domu, RTC_INDEX, 1), 0x0d);
        assert_eq!(emulated_read(&mut hw, &mut domu, RTC_DATA, 1), 0xff);
        emulated_write(&mut hw, &mut domu, RTC_DATA, 1, 0);
        assert_eq!(hw.rtc[0x0d], 0x80);
    }

    #[test]
    fn pci_configuration_through_the_latched_address() {
        let mut hw = Fake::with_port_b(0);
        let mut latches = Latches::default();
        let mut who = Emulated {
            ports: None,
            hardware_domain: true,
            latches: &mut latches,
        };
        emulated_write(&mut hw, &mut who, PCI_CF8, 4, 0x8000_0000);
        assert_eq!(emulated_read(&mut hw, &mut who, PCI_CF8, 4), 0x8000_0000);
        assert_eq!(emulated_read(&mut hw, &mut who, PCI_CFC, 4), 0x29c0_8086);
        assert_eq!(emulated_read(&mut hw, &mut who, 0xcfe, 2), 0x29c0);
        // Three bytes at 0xCFD: a word, then a byte.
        emulated_read(&mut hw, &mut who, 0xcfd, 3);
        assert_eq!(
            hw.pci[hw.pci.len() - 2..],
            [(0x8000_0000, 1, 2, None), (0x8000_0000, 3, 1, None)]
        );
        emulated_write(&mut hw, &mut who, 0xcfe, 2, 0x1234);
        assert_eq!(hw.pci.last(), Some(&(0x8000_0000, 2, 2, Some(0x1234))));
        // Other ports: all ones, writes dropped.
        assert_eq!(emulated_read(&mut hw, &mut who, 0x20, 4), u32::MAX);
        assert_eq!(emulated_read(&mut hw, &mut who, 0x3fe, 2), 0xffff);
        // Not the hardware domain: no configuration space.
        let mut latches = Latches::default();
        let mut domu = Emulated {
            ports: None,
            hardware_domain: false,
            latches: &mut latches,
        };
        let before = hw.pci.len();
        emulated_write(&mut hw, &mut domu, PCI_CF8, 4, 0x8000_0000);
        assert_eq!(emulated_read(&mut hw, &mut domu, PCI_CFC, 4), u32::MAX);
        emulated_write(&mut hw, &mut domu, PCI_CFC, 4, 0);
        assert_eq!(hw.pci.len(), before);
    }
}
