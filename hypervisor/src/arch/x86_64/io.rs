//! Port I/O, through the `x86_64` crate's `Port`.
use x86_64::instructions::port::Port;

/// Writes a byte to an I/O port.
///
/// # Safety
/// The port must belong to a device the hypervisor owns, and the write must
/// not break that device's state as other code relies on it.
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port is ours to write.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: the port belongs to a device the hypervisor owns.
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller guarantees the port is ours to read.
    unsafe { Port::<u8>::new(port).read() }
}
