//! Every benchmark, in the order the guest runs them.
//!
//! A *sample* is what the guest times between two fenced `rdtsc`s (one
//! hypercall, one multicall, one fault round trip, or a pair of calls
//! that undo each other: unmap then remap, pin then unpin). The printed
//! values are per *item*: a sample's ticks divided by
//! [`Benchmark::items_per_sample`] (32 entries of a multicall, the 2N PTEs
//! an unmap-remap pair of N-entry `mmu_update`s writes), so batched and
//! single calls compare directly. Pairs make every sample leave the guest
//! as it found it, and make the minimum meaningful: unmapping and remapping
//! cost different amounts, so a minimum over single calls would only show
//! the cheaper half.
//!
//! Invariant: names are unique, lower-case ASCII, digits and `_` (they are
//! words of the console lines, JSON keys and table rows).

#![forbid(unsafe_code)]

/// One benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Benchmark {
    /// Its name on the console lines and in tables.
    pub name: &'static str,
    /// Unit of the printed values: `tsc/<item>` (instructions per item
    /// under `-icount shift=0`).
    pub unit: &'static str,
    /// What one sample is (the unit of the hypervisor counters).
    pub sample: &'static str,
    /// Items per sample: the divisor from sample ticks to the unit.
    pub items_per_sample: u32,
    /// What is measured, in one line.
    pub what: &'static str,
}

/// PTE counts of the `mmu_update` benchmarks, in the order of [`ALL`].
pub const MMU_UPDATE_BATCHES: [u32; 4] = [1, 8, 64, 512];

/// Every benchmark, in the order the guest runs them: plain hypercalls
/// first, then page-table updates, then the ones that need trap, event and
/// user-mode support (a crash there cannot hide the earlier results).
pub const ALL: &[Benchmark] = &[
    Benchmark {
        name: "null_hypercall",
        unit: "tsc/call",
        sample: "call",
        items_per_sample: 1,
        what: "xen_version(XENVER_version, NULL) through the hypercall page",
    },
    Benchmark {
        name: "multicall_32",
        unit: "tsc/entry",
        sample: "multicall",
        items_per_sample: 32,
        what: "one multicall of 32 xen_version(XENVER_version, NULL) entries",
    },
    Benchmark {
        name: "mmu_update_1",
        unit: "tsc/pte",
        sample: "pair",
        items_per_sample: 2 * MMU_UPDATE_BATCHES[0],
        what: "mmu_update of 1 L1 entry per call; a sample unmaps then remaps a scratch page (2 calls)",
    },
    Benchmark {
        name: "mmu_update_8",
        unit: "tsc/pte",
        sample: "pair",
        items_per_sample: 2 * MMU_UPDATE_BATCHES[1],
        what: "mmu_update of 8 L1 entries per call; a sample unmaps then remaps 8 scratch pages",
    },
    Benchmark {
        name: "mmu_update_64",
        unit: "tsc/pte",
        sample: "pair",
        items_per_sample: 2 * MMU_UPDATE_BATCHES[2],
        what: "mmu_update of 64 L1 entries per call; a sample unmaps then remaps 64 scratch pages",
    },
    Benchmark {
        name: "mmu_update_512",
        unit: "tsc/pte",
        sample: "pair",
        items_per_sample: 2 * MMU_UPDATE_BATCHES[3],
        what: "mmu_update of 512 L1 entries per call; a sample unmaps then remaps 512 scratch pages",
    },
    Benchmark {
        name: "update_va_mapping_invlpg",
        unit: "tsc/call",
        sample: "pair",
        items_per_sample: 2,
        what: "update_va_mapping with UVMF_INVLPG; a sample unmaps then remaps a scratch page",
    },
    Benchmark {
        name: "update_va_mapping_flush",
        unit: "tsc/call",
        sample: "pair",
        items_per_sample: 2,
        what: "update_va_mapping with UVMF_TLB_FLUSH|UVMF_LOCAL; a sample unmaps then remaps",
    },
    Benchmark {
        name: "mmuext_pin_unpin_l1",
        unit: "tsc/pair",
        sample: "pair",
        items_per_sample: 1,
        what: "mmuext_op PIN_L1_TABLE then UNPIN_TABLE of a fresh (empty) L1 table, two calls",
    },
    Benchmark {
        name: "ptwr_xchg",
        unit: "tsc/store",
        sample: "pair",
        items_per_sample: 2,
        what: "xchg into a read-only L1 entry (writable page tables), decoded and emulated; a sample unmaps then remaps a scratch page",
    },
    Benchmark {
        name: "page_fault",
        unit: "tsc/fault",
        sample: "fault",
        items_per_sample: 1,
        what: "#PF on an unmapped address, bounced to the guest handler, back with HYPERVISOR_iret",
    },
    Benchmark {
        name: "page_fault_iretq",
        unit: "tsc/fault",
        sample: "fault",
        items_per_sample: 1,
        what: "as page_fault, but the handler returns with a native iretq (no second hypervisor entry)",
    },
    Benchmark {
        name: "syscall_bounce",
        unit: "tsc/syscall",
        sample: "syscall",
        items_per_sample: 1,
        what: "SYSCALL from guest user mode to the syscall callback and back (iret, VGCF_in_syscall)",
    },
    Benchmark {
        name: "syscall_bounce_iretq",
        unit: "tsc/syscall",
        sample: "syscall",
        items_per_sample: 1,
        what: "as syscall_bounce, but the callback returns to user mode with a native iretq (no second hypervisor entry)",
    },
    Benchmark {
        name: "evtchn_self",
        unit: "tsc/event",
        sample: "event",
        items_per_sample: 1,
        what: "EVTCHNOP_send to an IPI port of the sender's own vCPU, upcall, handler, iret",
    },
    Benchmark {
        name: "evtchn_user_upcall",
        unit: "tsc/event",
        sample: "event",
        items_per_sample: 1,
        what: "SYSCALL from user mode; the callback (events masked) sends to an IPI port of its own vCPU and irets; the upcall interrupts user mode, handler, iret",
    },
    Benchmark {
        name: "timer_block",
        unit: "tsc/wakeup",
        sample: "wakeup",
        items_per_sample: 1,
        what: "set_timer_op with a past deadline (upcalls masked), SCHEDOP_block returning at once, VIRQ_TIMER upcall, handler, iret",
    },
    Benchmark {
        name: "timer_poll",
        unit: "tsc/wakeup",
        sample: "wakeup",
        items_per_sample: 1,
        what: "set_timer_op with a past deadline (upcalls masked), SCHEDOP_poll of the VIRQ_TIMER port returning at once, the pending bit cleared by the guest",
    },
    Benchmark {
        name: "grant_copy_4k",
        unit: "tsc/copy",
        sample: "copy",
        items_per_sample: 1,
        what: "GNTTABOP_copy of 4096 bytes from a grant of the guest's own page to another own page",
    },
    Benchmark {
        name: "rep_movsb_4k",
        unit: "tsc/copy",
        sample: "copy",
        items_per_sample: 1,
        what: "the same 4096 bytes copied by the guest with rep movsb (the grant copy's yardstick)",
    },
    Benchmark {
        name: "grant_map_unmap",
        unit: "tsc/pair",
        sample: "pair",
        items_per_sample: 1,
        what: "GNTTABOP_map_grant_ref (host map by VA) of a self-grant, then unmap_grant_ref",
    },
    Benchmark {
        name: "evtchn_interdomain_pingpong",
        unit: "tsc/roundtrip",
        sample: "roundtrip",
        items_per_sample: 1,
        what: "dom0 sends on an interdomain port, the domU blocked in SCHEDOP_poll on it wakes and sends back, dom0 wakes from its own poll (measured by the toolstack dom0, dom0/src/pingpong.rs)",
    },
    Benchmark {
        name: "xenstore_read",
        unit: "tsc/read",
        sample: "read",
        items_per_sample: 1,
        what: "a domU reads its own `name` node: the request on its store ring, an event to dom0, dom0's xenstored answering, the reply read back (measured by the pong domU, domu-demo/src/xenstore.rs)",
    },
    Benchmark {
        name: "blk_read_dom0",
        unit: "tsc/MiB",
        sample: "read",
        items_per_sample: BLK_READ_MIB,
        what: "dom0 reads its virtio disk sequentially in 64 KiB reads through its own driver: the instructions of every domain and the hypervisor, idle time taken out (measured by the toolstack dom0 with readbench, dom0/src/readbench.rs)",
    },
    Benchmark {
        name: "blk_read_domu",
        unit: "tsc/MiB",
        sample: "read",
        items_per_sample: BLK_READ_MIB,
        what: "a domU reads the same bytes (phy:vda) in 64 KiB units through blkfront and dom0's blkback: the instructions of every domain and the hypervisor, idle time taken out (domu-demo disk readbench, timed by dom0)",
    },
    Benchmark {
        name: "net_recv_dom0",
        unit: "tsc/MiB",
        sample: "stream",
        items_per_sample: NET_RECV_MIB,
        what: "dom0 receives a TCP stream from the host (QEMU's port forward) under smoltcp on its own virtio-net driver: the instructions of every domain and the hypervisor from the first byte to the sender's FIN, idle time taken out (dom0/src/netbench.rs)",
    },
    Benchmark {
        name: "net_recv_domu",
        unit: "tsc/MiB",
        sample: "stream",
        items_per_sample: NET_RECV_MIB,
        what: "a domU receives the same stream under smoltcp through netfront, dom0's netback and bridge and the same driver: the instructions of every domain and the hypervisor, idle time taken out (domu-demo net web netbench, timed by dom0)",
    },
    Benchmark {
        name: "linux_boot_to_init",
        unit: "tsc/boot",
        sample: "boot",
        items_per_sample: 1,
        what: "Debian's Linux as dom0 (the kernel and initramfs of cargo xtask test --linux) from the hypervisor's start to /init: Linux's own /proc/uptime there, in ns, which under -icount shift=0 are TSC ticks and instructions, idle time skipped to the next timer included (measured by a Linux boot of its own)",
    },
];

/// MiB the block benchmarks read (the whole test disk), in one sample.
pub const BLK_READ_MIB: u32 = 64;
/// Samples (whole reads of the disk) of each block benchmark: when the
/// disk's completion interrupt comes (while the CPU idles or while a
/// guest still runs) changes the path a little, and the minimum is the
/// shortest one.
pub const BLK_READ_PASSES: u32 = 3;
/// The `disk` domU's console line just before its timed read.
pub const BLK_READ_START: &str = "readbench: start";
/// Its console line just after.
pub const BLK_READ_DONE: &str = "readbench: done";

/// MiB the host sends in one stream of the network benchmarks.
pub const NET_RECV_MIB: u32 = 8;
/// Streams each receiver takes (one sample each; the minimum is shown).
pub const NET_RECV_PASSES: u32 = 3;
/// The receiver's console line once it listens for the next stream
/// (the host's sender waits for it).
pub const NET_RECV_LISTENING: &str = "netbench: listening";
/// The receiver's console line at a stream's first byte.
pub const NET_RECV_START: &str = "netbench: start";
/// Its console line once the sender closed and every byte was read.
pub const NET_RECV_DONE: &str = "netbench: done";

/// The benchmark called `name`.
#[must_use]
pub fn find(name: &str) -> Option<&'static Benchmark> {
    ALL.iter().find(|b| b.name == name)
}

/// The profiling window tag of benchmark `name`: its index in [`ALL`]
/// (`guest_pv_shim::profile`, `cargo xtask bench --profile`). Evaluated
/// at compile time by the markers; a name not in [`ALL`] fails the build.
#[must_use]
pub const fn tag(name: &str) -> u8 {
    let mut i = 0;
    while i < ALL.len() {
        if str_eq(ALL[i].name, name) {
            assert!(i <= u8::MAX as usize, "more benchmarks than tags");
            #[expect(clippy::cast_possible_truncation, reason = "checked just above")]
            return i as u8;
        }
        i += 1;
    }
    panic!("no such benchmark")
}

/// `a == b`, in a const context.
const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The `mmu_update` benchmark with `ptes` entries per call (two calls per
/// sample).
#[must_use]
pub fn mmu_update(ptes: u32) -> Option<&'static Benchmark> {
    ALL.iter().find(|b| {
        b.name.starts_with("mmu_update_") && Some(b.items_per_sample) == ptes.checked_mul(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_the_benchmarks_index() {
        assert_eq!(tag("null_hypercall"), 0);
        assert_eq!(ALL[usize::from(tag("net_recv_domu"))].name, "net_recv_domu");
    }

    #[test]
    fn names_are_unique_words() {
        for (i, b) in ALL.iter().enumerate() {
            assert!(
                b.name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'),
                "{}",
                b.name
            );
            assert!(ALL[..i].iter().all(|o| o.name != b.name), "{}", b.name);
            assert!(b.unit.starts_with("tsc/") && !b.unit.contains(' '));
            assert!(b.items_per_sample >= 1);
            assert!(!b.sample.contains(' '));
        }
    }

    #[test]
    fn every_mmu_batch_has_a_benchmark() {
        for ptes in MMU_UPDATE_BATCHES {
            let b = mmu_update(ptes).unwrap();
            assert_eq!(b.items_per_sample, 2 * ptes);
            assert_eq!(b.unit, "tsc/pte");
        }
        assert_eq!(mmu_update(2), None);
        assert_eq!(find("null_hypercall").unwrap().unit, "tsc/call");
        assert_eq!(find("multicall_32").unwrap().items_per_sample, 32);
    }
}
