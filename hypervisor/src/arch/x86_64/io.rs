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

/// Reads `bytes` (1, 2 or 4) from an I/O port.
///
/// # Safety
/// As for [`outb`]: the port belongs to a device the caller may read.
#[inline]
pub unsafe fn read(port: u16, bytes: u32) -> u32 {
    // SAFETY: the caller guarantees the port is its to read.
    unsafe {
        match bytes {
            1 => u32::from(Port::<u8>::new(port).read()),
            2 => u32::from(Port::<u16>::new(port).read()),
            _ => Port::<u32>::new(port).read(),
        }
    }
}

/// Writes the low `bytes` (1, 2 or 4) of `value` to an I/O port.
///
/// # Safety
/// As for [`outb`]: the port belongs to a device the caller may write.
#[inline]
pub unsafe fn write(port: u16, bytes: u32, value: u32) {
    // SAFETY: the caller guarantees the port is its to write; the casts
    // keep the bytes the access moves.
    #[allow(clippy::cast_possible_truncation, reason = "the access's width")]
    unsafe {
        match bytes {
            1 => Port::<u8>::new(port).write(value as u8),
            2 => Port::<u16>::new(port).write(value as u16),
            _ => Port::<u32>::new(port).write(value),
        }
    }
}
