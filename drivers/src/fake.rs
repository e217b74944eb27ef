//! Host-test doubles: pages in memory, a configuration space in a map.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use crate::pci::Address;
use crate::{Error, Interrupt, Platform, Region};

/// A page both the driver and the fake device see.
#[derive(Clone)]
pub struct Page(pub Rc<RefCell<Vec<u8>>>);

impl Page {
    pub fn new() -> Page {
        Page(Rc::new(RefCell::new(vec![0; 4096])))
    }
}

impl Region for Page {
    fn read8(&self, offset: usize) -> u8 {
        self.0.borrow()[offset]
    }
    fn read16(&self, offset: usize) -> u16 {
        let p = self.0.borrow();
        u16::from_le_bytes([p[offset], p[offset + 1]])
    }
    fn read32(&self, offset: usize) -> u32 {
        let p = self.0.borrow();
        u32::from_le_bytes(p[offset..offset + 4].try_into().unwrap())
    }
    fn write8(&mut self, offset: usize, value: u8) {
        self.0.borrow_mut()[offset] = value;
    }
    fn write16(&mut self, offset: usize, value: u16) {
        self.0.borrow_mut()[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }
    fn write32(&mut self, offset: usize, value: u32) {
        self.0.borrow_mut()[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }
}

/// An interrupt that never fires.
pub struct NoIrq;

impl Interrupt for NoIrq {
    fn wait(&mut self, _timeout_ms: Option<u64>) -> bool {
        false
    }
    fn eoi(&mut self) {}
}

/// A configuration space: registers by function and offset; a BAR
/// register listed in `bar_sizes` reads back its size mask after all ones
/// are written.
#[derive(Default)]
pub struct Machine {
    pub config: BTreeMap<(Address, u8), u32>,
    pub bar_sizes: BTreeMap<(Address, u8), u32>,
    pub mapped: Vec<u64>,
}

impl Platform for Machine {
    type Page = Page;
    type Irq = NoIrq;

    fn config_read(&mut self, function: Address, offset: u8) -> u32 {
        let absent = if offset == 0 { 0xFFFF_FFFF } else { 0 };
        self.config
            .get(&(function, offset))
            .copied()
            .unwrap_or(absent)
    }

    fn config_write(&mut self, function: Address, offset: u8, value: u32) {
        let value = match self.bar_sizes.get(&(function, offset)) {
            Some(&mask) if value == 0xFFFF_FFFF => {
                let old = self.config_read(function, offset);
                mask | (old & 0xF)
            }
            _ => value,
        };
        self.config.insert((function, offset), value);
    }

    fn map_mmio(&mut self, phys: u64) -> Result<Page, Error> {
        self.mapped.push(phys);
        Ok(Page::new())
    }

    fn alloc_dma(&mut self) -> Result<(Page, u64), Error> {
        Ok((Page::new(), 0x10_0000))
    }

    fn bind_gsi(&mut self, _gsi: u32) -> Result<NoIrq, Error> {
        Ok(NoIrq)
    }
}
