//! Routing device interrupts, as pure decisions: which global system
//! interrupt (GSI) an ISA IRQ arrives on and how it signals (the ACPI
//! MADT's interrupt source overrides), which I/O APIC pin a GSI is, what a
//! redirection entry holds, and which vectors devices get.
//!
//! `arch::x86_64::ioapic` programs the hardware with these; the sources
//! are the ACPI specification (6.5, §5.2.12.5 "Interrupt Source
//! Override Structure", Table 5.26 "MPS INTI Flags") and Intel's 82093AA
//! I/O APIC datasheet (§3.2.4, the redirection table).
//!
//! Invariants: an ISA IRQ without an override is identity-mapped,
//! active high and edge-triggered (the ISA bus's own signalling); a device
//! vector is never one the hypervisor uses for something else (the 8259s'
//! 0x20-0x2f, the hypercall gate, the local APIC's 0xf0 and up).
#![forbid(unsafe_code)]

use dom0_abi::hypercall::HYPERCALL_VECTOR;

/// ISA IRQs (0-15): the only sources the overrides describe.
pub const ISA_IRQS: usize = 16;

/// The level that asserts a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Asserted high (the ISA bus's).
    ActiveHigh,
    /// Asserted low.
    ActiveLow,
}

/// How a line signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A rising (or, active low, falling) edge (the ISA bus's).
    Edge,
    /// A level, held until the device is serviced.
    Level,
}

/// How an ISA IRQ reaches the I/O APICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaRoute {
    /// The GSI it arrives on.
    pub gsi: u32,
    /// Its polarity.
    pub polarity: Polarity,
    /// Its trigger mode.
    pub trigger: Trigger,
}

impl IsaRoute {
    /// ISA IRQ `irq` without an override: GSI `irq`, active high, edge.
    #[must_use]
    pub const fn identity(irq: u8) -> IsaRoute {
        IsaRoute {
            gsi: irq as u32,
            polarity: Polarity::ActiveHigh,
            trigger: Trigger::Edge,
        }
    }
}

impl core::fmt::Display for IsaRoute {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let trigger = match self.trigger {
            Trigger::Edge => "edge",
            Trigger::Level => "level",
        };
        let polarity = match self.polarity {
            Polarity::ActiveHigh => "high",
            Polarity::ActiveLow => "low",
        };
        write!(f, "GSI {}, {trigger}, active {polarity}", self.gsi)
    }
}

/// Decodes MPS INTI flags (the overrides' `flags`): polarity in bits 0-1
/// and trigger mode in bits 2-3, each `00` for "conforms to the bus" (for
/// ISA: active high, edge), `01` for high/edge, `11` for low/level. `None`
/// for the reserved `10` in either field.
#[must_use]
pub const fn isa_signal(flags: u16) -> Option<(Polarity, Trigger)> {
    let polarity = match flags & 0b11 {
        0b00 | 0b01 => Polarity::ActiveHigh,
        0b11 => Polarity::ActiveLow,
        _ => return None,
    };
    let trigger = match (flags >> 2) & 0b11 {
        0b00 | 0b01 => Trigger::Edge,
        0b11 => Trigger::Level,
        _ => return None,
    };
    Some((polarity, trigger))
}

/// Why an interrupt source override was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideError {
    /// It is for a bus other than ISA (bus 0).
    NotIsa,
    /// Its source is not an ISA IRQ (0-15).
    NotAnIsaIrq,
    /// Its flags use a reserved encoding.
    ReservedFlags,
    /// The source already has an override (the first one is kept).
    Duplicate,
}

impl core::fmt::Display for OverrideError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            OverrideError::NotIsa => "not for the ISA bus",
            OverrideError::NotAnIsaIrq => "source is not an ISA IRQ",
            OverrideError::ReservedFlags => "reserved polarity or trigger flags",
            OverrideError::Duplicate => "second override of the same IRQ",
        })
    }
}

/// Where each ISA IRQ arrives: the identity, unless the MADT overrides it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsaOverrides {
    routes: [Option<IsaRoute>; ISA_IRQS],
}

impl IsaOverrides {
    /// No overrides.
    #[must_use]
    pub const fn new() -> IsaOverrides {
        IsaOverrides {
            routes: [None; ISA_IRQS],
        }
    }

    /// Takes the override of `source` on `bus` to `gsi` with MPS INTI
    /// `flags`, or says why not.
    pub fn record(
        &mut self,
        bus: u8,
        source: u8,
        gsi: u32,
        flags: u16,
    ) -> Result<(), OverrideError> {
        if bus != 0 {
            return Err(OverrideError::NotIsa);
        }
        let slot = self
            .routes
            .get_mut(usize::from(source))
            .ok_or(OverrideError::NotAnIsaIrq)?;
        let (polarity, trigger) = isa_signal(flags).ok_or(OverrideError::ReservedFlags)?;
        if slot.is_some() {
            return Err(OverrideError::Duplicate);
        }
        *slot = Some(IsaRoute {
            gsi,
            polarity,
            trigger,
        });
        Ok(())
    }

    /// How ISA IRQ `irq` arrives; `None` if it is not an ISA IRQ.
    #[must_use]
    pub fn route(&self, irq: u8) -> Option<IsaRoute> {
        let slot = self.routes.get(usize::from(irq))?;
        Some(slot.unwrap_or(IsaRoute::identity(irq)))
    }
}

/// The pin of `gsi` on an I/O APIC whose pins take the GSIs from
/// `gsi_base` on; `None` if it is not one of them.
#[must_use]
pub fn pin_of(gsi: u32, gsi_base: u32, pins: u8) -> Option<u8> {
    let pin = gsi.checked_sub(gsi_base)?;
    u8::try_from(pin).ok().filter(|&p| p < pins)
}

/// A redirection table entry for fixed delivery to one local APIC
/// (physical destination mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectionEntry {
    /// The vector it raises.
    pub vector: u8,
    /// The line's polarity.
    pub polarity: Polarity,
    /// The line's trigger mode.
    pub trigger: Trigger,
    /// Whether the pin is masked.
    pub masked: bool,
    /// The destination local APIC's id.
    pub destination: u8,
}

/// Low dword: the pin is masked.
const MASKED: u32 = 1 << 16;
/// Low dword: level-triggered.
const LEVEL: u32 = 1 << 15;
/// Low dword: active low.
const ACTIVE_LOW: u32 = 1 << 13;

impl RedirectionEntry {
    /// The entry of a pin no interrupt may come through: masked, vector 0.
    pub const DISABLED: (u32, u32) = (MASKED, 0);

    /// Fixed delivery of `route`'s line as `vector` to the local APIC
    /// `apic_id`, unmasked; `None` if the id does not fit the 8-bit
    /// physical destination (x2APIC ids from 256 need interrupt
    /// remapping).
    #[must_use]
    pub fn fixed(vector: u8, route: &IsaRoute, apic_id: u32) -> Option<RedirectionEntry> {
        Some(RedirectionEntry {
            vector,
            polarity: route.polarity,
            trigger: route.trigger,
            masked: false,
            destination: u8::try_from(apic_id).ok()?,
        })
    }

    /// The entry's (low, high) dwords: vector in bits 0-7, delivery mode
    /// (fixed, 000) in 8-10, destination mode (physical, 0) in 11,
    /// polarity in 13, trigger mode in 15, mask in 16; the destination in
    /// bits 56-63, i.e. the high dword's top byte.
    #[must_use]
    pub fn encode(&self) -> (u32, u32) {
        let mut low = u32::from(self.vector);
        if self.polarity == Polarity::ActiveLow {
            low |= ACTIVE_LOW;
        }
        if self.trigger == Trigger::Level {
            low |= LEVEL;
        }
        if self.masked {
            low |= MASKED;
        }
        (low, u32::from(self.destination) << 24)
    }
}

/// The first vector a device may get: above the 8259s' 0x20-0x2f.
pub const FIRST_DEVICE_VECTOR: u8 = 0x30;
/// The last one: below the local APIC's timer (0xf0), error and spurious
/// vectors.
pub const LAST_DEVICE_VECTOR: u8 = 0xef;

/// Hands out device vectors, lowest first, skipping the hypercall gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorAllocator {
    /// The next candidate; `None` once every vector is given out.
    next: Option<u8>,
}

impl Default for VectorAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl VectorAllocator {
    /// An allocator with every device vector free.
    #[must_use]
    pub const fn new() -> VectorAllocator {
        VectorAllocator {
            next: Some(FIRST_DEVICE_VECTOR),
        }
    }

    /// A vector no one has; `None` when they are all taken.
    pub fn allocate(&mut self) -> Option<u8> {
        let mut vector = self.next?;
        if vector == HYPERCALL_VECTOR {
            vector = vector.checked_add(1)?;
        }
        if vector > LAST_DEVICE_VECTOR {
            self.next = None;
            return None;
        }
        self.next = vector.checked_add(1);
        Some(vector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isa_irqs_without_overrides_are_identity_high_edge() {
        let overrides = IsaOverrides::new();
        assert_eq!(
            overrides.route(4),
            Some(IsaRoute {
                gsi: 4,
                polarity: Polarity::ActiveHigh,
                trigger: Trigger::Edge
            })
        );
        assert_eq!(overrides.route(15).map(|r| r.gsi), Some(15));
        assert_eq!(overrides.route(16), None);
    }

    #[test]
    fn overrides_move_irqs_and_set_their_signalling() {
        let mut overrides = IsaOverrides::new();
        // QEMU's q35: the PIT's IRQ 0 on GSI 2, conforming; the SCI on
        // IRQ 9, level active high.
        assert_eq!(overrides.record(0, 0, 2, 0), Ok(()));
        assert_eq!(overrides.record(0, 9, 9, 0b1101), Ok(()));
        // A serial port moved and inverted, as some boards do.
        assert_eq!(overrides.record(0, 4, 20, 0b1111), Ok(()));
        assert_eq!(overrides.route(0), Some(IsaRoute::identity(2)));
        let sci = overrides.route(9).unwrap();
        assert_eq!(
            (sci.gsi, sci.polarity, sci.trigger),
            (9, Polarity::ActiveHigh, Trigger::Level)
        );
        let com1 = overrides.route(4).unwrap();
        assert_eq!(
            (com1.gsi, com1.polarity, com1.trigger),
            (20, Polarity::ActiveLow, Trigger::Level)
        );
        assert_eq!(overrides.route(3), Some(IsaRoute::identity(3)));
        assert_eq!(com1.to_string(), "GSI 20, level, active low");
        assert_eq!(
            IsaRoute::identity(4).to_string(),
            "GSI 4, edge, active high"
        );
    }

    #[test]
    fn unusable_overrides_are_refused_and_leave_the_table_alone() {
        let mut overrides = IsaOverrides::new();
        assert_eq!(overrides.record(1, 4, 9, 0), Err(OverrideError::NotIsa));
        assert_eq!(
            overrides.record(0, 16, 9, 0),
            Err(OverrideError::NotAnIsaIrq)
        );
        assert_eq!(
            overrides.record(0, 4, 9, 0b0010),
            Err(OverrideError::ReservedFlags)
        );
        assert_eq!(
            overrides.record(0, 4, 9, 0b1000),
            Err(OverrideError::ReservedFlags)
        );
        assert_eq!(overrides, IsaOverrides::new());
        assert_eq!(overrides.record(0, 4, 9, 0), Ok(()));
        assert_eq!(overrides.record(0, 4, 10, 0), Err(OverrideError::Duplicate));
        assert_eq!(overrides.route(4).map(|r| r.gsi), Some(9));
    }

    #[test]
    fn mps_flags_decode_every_field_value() {
        use Polarity::*;
        use Trigger::*;
        let cases = [
            (0b0000, Some((ActiveHigh, Edge))),
            (0b0101, Some((ActiveHigh, Edge))),
            (0b0011, Some((ActiveLow, Edge))),
            (0b1100, Some((ActiveHigh, Level))),
            (0b1111, Some((ActiveLow, Level))),
            (0b0110, None),
            (0b1001, None),
        ];
        for (flags, want) in cases {
            assert_eq!(isa_signal(flags), want, "{flags:#06b}");
        }
        // Bits above 3 are reserved and ignored.
        assert_eq!(isa_signal(0xfff0), Some((ActiveHigh, Edge)));
        assert_eq!(isa_signal(0xffff), Some((ActiveLow, Level)));
    }

    #[test]
    fn gsis_map_to_pins_of_the_right_ioapic() {
        assert_eq!(pin_of(4, 0, 24), Some(4));
        assert_eq!(pin_of(23, 0, 24), Some(23));
        assert_eq!(pin_of(24, 0, 24), None);
        assert_eq!(pin_of(30, 24, 24), Some(6));
        assert_eq!(pin_of(4, 24, 24), None);
        assert_eq!(pin_of(u32::MAX, 0, 255), None);
    }

    #[test]
    fn entries_encode_as_the_datasheet_lays_them_out() {
        let edge = RedirectionEntry::fixed(0x30, &IsaRoute::identity(4), 0).unwrap();
        assert_eq!(edge.encode(), (0x30, 0));
        let level_low = IsaRoute {
            gsi: 20,
            polarity: Polarity::ActiveLow,
            trigger: Trigger::Level,
        };
        let entry = RedirectionEntry::fixed(0x41, &level_low, 3).unwrap();
        assert_eq!(entry.encode(), (0x41 | 1 << 13 | 1 << 15, 3 << 24));
        let masked = RedirectionEntry {
            masked: true,
            ..entry
        };
        assert_eq!(masked.encode().0 & (1 << 16), 1 << 16);
        assert_eq!(RedirectionEntry::DISABLED, (1 << 16, 0));
        assert_eq!(
            RedirectionEntry::fixed(0x30, &IsaRoute::identity(4), 255).map(|e| e.destination),
            Some(255)
        );
        assert_eq!(
            RedirectionEntry::fixed(0x30, &IsaRoute::identity(4), 256),
            None
        );
    }

    #[test]
    fn vectors_are_unique_device_vectors_until_they_run_out() {
        let mut allocator = VectorAllocator::new();
        let mut given = Vec::new();
        while let Some(vector) = allocator.allocate() {
            assert!((FIRST_DEVICE_VECTOR..=LAST_DEVICE_VECTOR).contains(&vector));
            assert_ne!(vector, HYPERCALL_VECTOR);
            assert!(!given.contains(&vector));
            given.push(vector);
        }
        assert_eq!(given.first(), Some(&FIRST_DEVICE_VECTOR));
        assert_eq!(
            given.len(),
            usize::from(LAST_DEVICE_VECTOR - FIRST_DEVICE_VECTOR)
        );
        assert_eq!(allocator.allocate(), None);
    }
}
