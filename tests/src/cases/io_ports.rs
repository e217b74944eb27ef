//! `io_ports`: port I/O from the guest kernel (ring 1), as Xen 4.17
//! gives it to a PV dom0.
//!
//! Checks:
//! - `PHYSDEVOP_set_iopl` takes 0-3 and refuses 4 and 0x100 with `EINVAL`;
//! - with a virtual IOPL of 0 and no I/O bitmap, `in` and `out` are #GP(0);
//! - after `set_iopl(1)`: `cli`/`sti` complete as no-ops; a port dom0 owns
//!   (the DMA page register 0x81) is read and written for real; a port
//!   the hypervisor keeps (the 8259's 0x21, the PIT's 0x40, COM1's
//!   scratch register) reads all ones and swallows writes; the CMOS RTC's
//!   0x70/0x71 are emulated (0x70 reads back the index, register 0x0D
//!   reads 0x80, a word read at 0x70 gives both); PCI configuration
//!   mechanism #1 works through 0xCF8/0xCFC (the latched address reads
//!   back, the host bridge's ids read in dword, word and byte widths);
//! - `PHYSDEVOP_set_iobitmap`: a bitmap clearing only port 0x81 opens
//!   just that port at IOPL 0 (0x82 and ports past `nr_ports` stay #GP),
//!   a port the bitmap opens but the hypervisor keeps reads all ones, a
//!   port at `nr_ports` is #GP, an unreadable bitmap denies everything;
//!   more than 65536 ports, or a bitmap starting in the hypervisor's area
//!   or at a non-canonical address, is `EINVAL` (only the start is
//!   checked: a bitmap running past the lower half is taken).

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::io::{self, Width};
use guest_pv_shim::report;
use guest_pv_shim::traps::Trap;

/// ISA DMA page register (channel 2): a plain read/write latch on QEMU.
const DMA_PAGE: u16 = 0x81;
/// The master 8259's mask register: the hypervisor's.
const PIC1_DATA: u16 = 0x21;
/// PIT channel 0: the hypervisor's.
const PIT0: u16 = 0x40;
/// COM1's scratch register: the hypervisor's console UART.
const COM1_SCRATCH: u16 = 0x3ff;

/// A bitmap covering every port: one bit each, set = denied.
static mut BITMAP: [u8; 8192] = [0xff; 8192];

pub fn run(_start_info: &'static StartInfo) {
    if !crate::support::traps() {
        return;
    }
    iopl_levels();
    ports_at_iopl_0();
    report::check_ret("set_iopl 1", io::set_iopl(1), 0);
    cli_sti();
    owned_port();
    kept_ports();
    cmos();
    pci();
    report::check_ret("set_iopl 0 again", io::set_iopl(0), 0);
    iobitmap();
}

fn iopl_levels() {
    for level in 0..=3 {
        report::check_ret(format_args!("set_iopl {level}"), io::set_iopl(level), 0);
    }
    report::check_ret("set_iopl 4", io::set_iopl(4), -22);
    report::check_ret("set_iopl 0x100", io::set_iopl(0x100), -22);
    report::check_ret("set_iopl 0", io::set_iopl(0), 0);
}

fn gp0(name: &str, trap: Option<Trap>) {
    report::check(
        format_args!("{name} is #GP(0)"),
        trap.is_some_and(|t| t.vector == 13 && t.error_code == 0),
        format_args!("{trap:x?}"),
    );
}

fn read(name: &str, port: u16, width: Width) -> Option<u32> {
    match io::port_in(port, width) {
        Ok(v) => {
            report::ok_value(format_args!("{name}"), format_args!("{v:#x}"));
            Some(v)
        }
        Err(t) => {
            report::fail(name, format_args!("faulted: {t:x?}"));
            None
        }
    }
}

fn write(name: &str, port: u16, width: Width, value: u32) {
    if let Err(t) = io::port_out(port, width, value) {
        report::fail(name, format_args!("faulted: {t:x?}"));
    } else {
        report::ok(name);
    }
}

fn ports_at_iopl_0() {
    gp0(
        "inb 0x81 at IOPL 0",
        io::port_in(DMA_PAGE, Width::Byte).err(),
    );
    gp0(
        "outb 0x81 at IOPL 0",
        io::port_out(DMA_PAGE, Width::Byte, 0x5a).err(),
    );
    gp0(
        "inl 0xcfc at IOPL 0",
        io::port_in(0xcfc, Width::Dword).err(),
    );
}

fn cli_sti() {
    let (_, t) = guest_pv_shim::traps::catch(|| {
        // SAFETY: with a virtual IOPL of 1 both are no-ops for a PV kernel
        // (the upcall mask decides about events); a fault resumes after
        // them.
        unsafe {
            guest_pv_shim::fixup_asm!("cli", "sti"; options(nostack));
        }
    });
    report::check(
        "cli; sti at IOPL 1 complete",
        t.is_none(),
        format_args!("{t:x?}"),
    );
}

fn owned_port() {
    write("outb 0x5a to 0x81 at IOPL 1", DMA_PAGE, Width::Byte, 0x5a);
    read("inb 0x81 at IOPL 1", DMA_PAGE, Width::Byte);
    write("outb 0xa5 to 0x81 at IOPL 1", DMA_PAGE, Width::Byte, 0xa5);
    read("inb 0x81 again", DMA_PAGE, Width::Byte);
}

fn kept_ports() {
    read("inb 0x21 (8259 mask)", PIC1_DATA, Width::Byte);
    write("outb 0 to 0x21", PIC1_DATA, Width::Byte, 0);
    read("inb 0x21 after the write", PIC1_DATA, Width::Byte);
    read("inl 0x20 (8259 pair)", 0x20, Width::Dword);
    read("inb 0x40 (PIT channel 0)", PIT0, Width::Byte);
    write(
        "outb 0x5a to COM1's scratch",
        COM1_SCRATCH,
        Width::Byte,
        0x5a,
    );
    read("inb COM1's scratch", COM1_SCRATCH, Width::Byte);
    read("inw 0x3fe", COM1_SCRATCH - 1, Width::Word);
}

fn cmos() {
    write("outb 0x0d to 0x70", 0x70, Width::Byte, 0x0d);
    read("inb 0x70 (the index)", 0x70, Width::Byte);
    read("inb 0x71 (register 0x0d)", 0x71, Width::Byte);
    read("inw 0x70", 0x70, Width::Word);
}

fn pci() {
    let host_bridge = io::pci_address(0, 0, 0, 0);
    write(
        "outl host bridge to 0xcf8",
        0xcf8,
        Width::Dword,
        host_bridge,
    );
    read("inl 0xcf8", 0xcf8, Width::Dword);
    read("inl 0xcfc (ids)", 0xcfc, Width::Dword);
    read("inw 0xcfe (device id)", 0xcfe, Width::Word);
    read("inb 0xcfd", 0xcfd, Width::Byte);
    match io::pci_config_read(0, 0, 0, 0x08) {
        Ok(v) => report::ok_value("host bridge class", format_args!("{:#x}", v >> 8)),
        Err(t) => report::fail("host bridge class", format_args!("{t:x?}")),
    }
    match io::pci_config_read(0, 31, 7, 0) {
        Ok(v) => report::ok_value("absent function 00:1f.7", format_args!("{v:#x}")),
        Err(t) => report::fail("absent function 00:1f.7", format_args!("{t:x?}")),
    }
    write("outl 0 to 0xcf8", 0xcf8, Width::Dword, 0);
}

fn iobitmap() {
    let bitmap = &raw mut BITMAP;
    // SAFETY: only this test uses the bitmap, and the hypervisor only
    // reads it.
    unsafe { (*bitmap)[usize::from(DMA_PAGE / 8)] &= !(1 << (DMA_PAGE % 8)) };
    // SAFETY: as above.
    unsafe { (*bitmap)[usize::from(PIC1_DATA / 8)] &= !(1 << (PIC1_DATA % 8)) };
    let addr = bitmap as u64;
    report::check_ret("set_iobitmap 256 ports", io::set_iobitmap(addr, 0x100), 0);
    read("inb 0x81 through the bitmap", DMA_PAGE, Width::Byte);
    gp0(
        "inb 0x82 outside the bitmap's holes",
        io::port_in(DMA_PAGE + 1, Width::Byte).err(),
    );
    gp0(
        "inw 0x81 (0x82 denied)",
        io::port_in(DMA_PAGE, Width::Word).err(),
    );
    read("inb 0x21 through the bitmap", PIC1_DATA, Width::Byte);
    gp0(
        "inb 0x3ff past nr_ports",
        io::port_in(COM1_SCRATCH, Width::Byte).err(),
    );
    report::check_ret("set_iobitmap 0x81 ports", io::set_iobitmap(addr, 0x81), 0);
    gp0(
        "inb 0x81 at nr_ports",
        io::port_in(DMA_PAGE, Width::Byte).err(),
    );
    report::check_ret("set_iobitmap 0x82 ports", io::set_iobitmap(addr, 0x82), 0);
    read("inb 0x81 just below nr_ports", DMA_PAGE, Width::Byte);
    report::check_ret(
        "set_iobitmap 65537 ports",
        io::set_iobitmap(addr, 0x1_0001),
        -22,
    );
    report::check_ret(
        "set_iobitmap in the hypervisor's area",
        io::set_iobitmap(0xffff_8000_0000_0000, 0x100),
        -22,
    );
    report::check_ret(
        "set_iobitmap at a non-canonical address",
        io::set_iobitmap(0x0000_8000_0000_0000, 0x100),
        -22,
    );
    report::check_ret(
        "set_iobitmap running past the lower half",
        io::set_iobitmap(0x0000_7fff_ffff_f000, 0x100),
        0,
    );
    report::check_ret("set_iobitmap of page 0", io::set_iobitmap(0, 0x100), 0);
    gp0(
        "inb 0x81 through an unreadable bitmap",
        io::port_in(DMA_PAGE, Width::Byte).err(),
    );
    report::check_ret("set_iobitmap 0 ports", io::set_iobitmap(addr, 0), 0);
    gp0(
        "inb 0x81 without a bitmap",
        io::port_in(DMA_PAGE, Width::Byte).err(),
    );
}
