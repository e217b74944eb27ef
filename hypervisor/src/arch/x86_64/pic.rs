//! The legacy 8259 interrupt controllers. The firmware leaves them routing
//! IRQ 0-7 to vectors 8-15, on top of the CPU's exceptions; the hypervisor
//! moves them to vectors 0x20-0x2f and masks every line. Device interrupts
//! will come through the I/O APIC.
use super::io::outb;

const MASTER_COMMAND: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_COMMAND: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
/// First vector of the (masked) legacy IRQs.
pub const LEGACY_IRQ_BASE: u8 = 0x20;

/// Remaps both PICs above the exception vectors and masks all their lines.
pub fn disable() {
    // SAFETY: the 8259 ports belong to the hypervisor; this is the standard
    // initialisation sequence (ICW1-ICW4) followed by a full mask.
    unsafe {
        outb(MASTER_COMMAND, 0x11);
        outb(SLAVE_COMMAND, 0x11);
        outb(MASTER_DATA, LEGACY_IRQ_BASE);
        outb(SLAVE_DATA, LEGACY_IRQ_BASE + 8);
        outb(MASTER_DATA, 0x04);
        outb(SLAVE_DATA, 0x02);
        outb(MASTER_DATA, 0x01);
        outb(SLAVE_DATA, 0x01);
        outb(MASTER_DATA, 0xff);
        outb(SLAVE_DATA, 0xff);
    }
}
