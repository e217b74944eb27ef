//! Reads the boot loader's information through the direct map into the
//! pure `bootinfo` model (multiboot1 or multiboot2, told apart by the magic).
use crate::bootinfo::{BootInfo, BootInfoError, MULTIBOOT2_MAGIC, multiboot1, multiboot2};

use super::paging::phys_to_virt;

/// Physical memory as the boot code maps it: the first 4 GiB, through the
/// direct map (boot information and modules live there).
struct BootMemory;

const BOOT_MAPPED_END: u64 = 1 << 32;

impl multiboot1::PhysMem for BootMemory {
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
        let end = paddr.checked_add(len as u64)?;
        if end > BOOT_MAPPED_END {
            return None;
        }
        // SAFETY: [paddr, end) lies in the first 4 GiB, which the direct map
        // covers from the boot code on; the boot data is excluded from the
        // frame allocator, so it is never rewritten while this borrow lives.
        Some(unsafe { core::slice::from_raw_parts(phys_to_virt(paddr) as *const u8, len) })
    }
}

static BOOT_MEMORY: BootMemory = BootMemory;

/// Parses the information at physical `info` for the protocol `magic` names.
pub fn read(magic: u32, info: u32) -> Result<BootInfo<'static>, BootInfoError> {
    let info = u64::from(info);
    if magic == MULTIBOOT2_MAGIC {
        use multiboot1::PhysMem;
        let size = BOOT_MEMORY
            .read(info, 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let bytes = size.and_then(|size| BOOT_MEMORY.read(info, size as usize));
        multiboot2::from_bytes(bytes.unwrap_or(&[]), info)
    } else {
        multiboot1::parse(&BOOT_MEMORY, magic, info)
    }
}
