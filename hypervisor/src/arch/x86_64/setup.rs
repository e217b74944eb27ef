//! Start of day: from the boot code's first Rust call to dom0's first instruction.
use super::serial;

/// Called by `boot/entry.S` in long mode, on the boot stack, with the boot
/// loader's magic and the physical address of its information structure.
#[unsafe(no_mangle)]
extern "C" fn hv_start64(magic: u32, info: u32) -> ! {
    serial::init(115200);
    log::info!("hello from the high half: magic {magic:#x} info {info:#x}");
    panic!("not done yet")
}
