//! Ending the run: how the hypervisor tells the host what happened.
use crate::exit::{DEBUG_EXIT_PORT, HostExit};

use super::{cpu, io};

/// Ends the machine with `outcome`: under QEMU through `isa-debug-exit`;
/// elsewhere the write goes nowhere and the CPU halts.
pub fn end(outcome: HostExit) -> ! {
    // SAFETY: port 0xf4 is QEMU's debug-exit device when present and unused
    // otherwise; writing it has no other effect.
    unsafe { io::outb(DEBUG_EXIT_PORT, outcome.code()) };
    cpu::halt_forever()
}
