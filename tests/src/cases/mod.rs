//! The test registry: every test's name (the `test=` value) and function.
//!
//! A test prints its checks through `guest_pv_shim::report` and returns;
//! `main` then prints the result line and powers off. Tests that end the
//! machine themselves (shutdown, isolation, return_from_entry) never
//! return.

use guest_pv_shim::dom0_abi::start_info::StartInfo;

mod console_input;
mod console_io;
mod cpu_compat;
mod cpu_exceptions;
mod cpu_fpu;
mod cpu_fsgsbase;
mod cpu_ldt;
mod cpu_priv;
mod cpu_segments;
mod cpu_traps;
mod cpu_user;
mod domctl;
mod evtchn;
mod fuzz;
mod gnttab;
mod hello;
mod hostile;
mod hypercall_page;
mod hypercall_registers;
mod io_mmcfg;
mod io_pci_add;
mod io_pci_remove;
mod io_pit;
mod io_ports;
mod iomem;
mod isolation;
mod mca;
mod mm_memory_op;
mod mm_mmu_update;
mod mm_mmuext;
mod mm_multicall;
mod mm_pt_validation;
mod mm_update_va_mapping;
mod mm_writable_pt;
mod nmi;
mod pageframeinfo;
mod pirq;
mod platform_cpuinfo;
mod return_from_entry;
mod sched_op;
mod sched_weights;
mod shutdown;
mod smp_dom0_vcpus;
mod smp_tlb;
mod time_wallclock;
mod timers;
mod unknown_hypercall;
mod vcpu_op_errors;
mod vcpu_runstate;
mod vcpu_switch;
mod vcpu_up_down;
mod virtio;
mod xen_version;

/// One test.
pub struct Case {
    /// The name selected with `test=<name>`.
    pub name: &'static str,
    /// The test body.
    pub run: fn(&'static StartInfo),
}

/// Every test, by name.
pub const ALL: &[Case] = &[
    Case {
        name: "hello",
        run: hello::run,
    },
    Case {
        name: "xen_version",
        run: xen_version::run,
    },
    Case {
        name: "domctl_domains",
        run: domctl::run,
    },
    Case {
        name: "domctl_iomem_permission",
        run: iomem::run,
    },
    Case {
        name: "domctl_getpageframeinfo3",
        run: pageframeinfo::run,
    },
    Case {
        name: "sched_weights",
        run: sched_weights::run,
    },
    Case {
        name: "console_io",
        run: console_io::run,
    },
    Case {
        name: "gnttab_self",
        run: gnttab::run,
    },
    Case {
        name: "console_input",
        run: console_input::run,
    },
    Case {
        name: "console_input_polled",
        run: console_input::run_polled,
    },
    Case {
        name: "console_input_domu",
        run: console_input::run_with_domu,
    },
    Case {
        name: "unknown_hypercall",
        run: unknown_hypercall::run,
    },
    Case {
        name: "sched_op",
        run: sched_op::run,
    },
    Case {
        name: "shutdown_poweroff",
        run: shutdown::poweroff,
    },
    Case {
        name: "shutdown_reboot",
        run: shutdown::reboot,
    },
    Case {
        name: "shutdown_suspend",
        run: shutdown::suspend,
    },
    Case {
        name: "shutdown_crash",
        run: shutdown::crash,
    },
    Case {
        name: "shutdown_watchdog",
        run: shutdown::watchdog,
    },
    Case {
        name: "shutdown_soft_reset",
        run: shutdown::soft_reset,
    },
    Case {
        name: "shutdown_code",
        run: shutdown::code,
    },
    Case {
        name: "shutdown_compat",
        run: shutdown::compat,
    },
    Case {
        name: "isolation_read_hv_text",
        run: isolation::read_hv_text,
    },
    Case {
        name: "isolation_read_directmap",
        run: isolation::read_directmap,
    },
    Case {
        name: "isolation_read_slot271",
        run: isolation::read_slot271,
    },
    Case {
        name: "isolation_write_m2p",
        run: isolation::write_m2p,
    },
    Case {
        name: "isolation_write_trampoline",
        run: isolation::write_trampoline,
    },
    Case {
        name: "isolation_read_m2p",
        run: isolation::read_m2p,
    },
    Case {
        name: "return_from_entry",
        run: return_from_entry::run,
    },
    Case {
        name: "hypercall_page",
        run: hypercall_page::run,
    },
    Case {
        name: "mm_update_va_mapping",
        run: mm_update_va_mapping::run,
    },
    Case {
        name: "mm_cache_attributes",
        run: mm_update_va_mapping::cache_attributes,
    },
    Case {
        name: "cpu_exceptions_iret",
        run: cpu_exceptions::iret,
    },
    Case {
        name: "cpu_exceptions_iretq",
        run: cpu_exceptions::iretq,
    },
    Case {
        name: "mm_mmu_update",
        run: mm_mmu_update::run,
    },
    Case {
        name: "mm_pt_validation",
        run: mm_pt_validation::run,
    },
    Case {
        name: "mm_mmuext_pin",
        run: mm_mmuext::pin,
    },
    Case {
        name: "mm_mmuext_baseptr",
        run: mm_mmuext::baseptr,
    },
    Case {
        name: "mm_mmuext_misc",
        run: mm_mmuext::misc,
    },
    Case {
        name: "mm_multicall",
        run: mm_multicall::multicall,
    },
    Case {
        name: "mm_uvm_otherdomain",
        run: mm_multicall::uvm_otherdomain,
    },
    Case {
        name: "mm_vm_assist",
        run: mm_multicall::vm_assist,
    },
    Case {
        name: "mm_memory_op",
        run: mm_memory_op::queries,
    },
    Case {
        name: "mm_reservation",
        run: mm_memory_op::reservation,
    },
    Case {
        name: "mm_balloon_ceiling",
        run: mm_memory_op::balloon_ceiling,
    },
    Case {
        name: "mm_exchange",
        run: mm_memory_op::exchange,
    },
    Case {
        name: "mm_writable_pt",
        run: mm_writable_pt::run,
    },
    Case {
        name: "cpu_user_mode",
        run: cpu_user::mode,
    },
    Case {
        name: "cpu_user_syscall",
        run: cpu_user::syscall,
    },
    Case {
        name: "cpu_priv_kernel",
        run: cpu_priv::kernel,
    },
    Case {
        name: "cpu_priv_user",
        run: cpu_priv::user,
    },
    Case {
        name: "cpu_trap_table",
        run: cpu_traps::trap_table,
    },
    Case {
        name: "cpu_callbacks",
        run: cpu_traps::callbacks,
    },
    Case {
        name: "cpu_fpu",
        run: cpu_fpu::run,
    },
    Case {
        name: "cpu_segments",
        run: cpu_segments::segments,
    },
    Case {
        name: "cpu_fsgsbase",
        run: cpu_fsgsbase::run,
    },
    Case {
        name: "cpu_descriptors",
        run: cpu_segments::descriptors,
    },
    Case {
        name: "cpu_ldt",
        run: cpu_ldt::run,
    },
    Case {
        name: "cpu_debugreg",
        run: cpu_segments::debugreg,
    },
    Case {
        name: "cpu_alignment_check",
        run: cpu_segments::alignment_check,
    },
    Case {
        name: "cpu_compat_callbacks",
        run: cpu_compat::run,
    },
    Case {
        name: "mm_multicall_iret",
        run: mm_multicall::multicall_iret,
    },
    Case {
        name: "vcpu_op_errors",
        run: vcpu_op_errors::run,
    },
    Case {
        name: "vcpu_register_vcpu_info",
        run: vcpu_runstate::register_vcpu_info,
    },
    Case {
        name: "cpu_iretq_rpl0",
        run: cpu_exceptions::iretq_rpl0,
    },
    Case {
        name: "cpu_msr_policy",
        run: cpu_priv::msr_policy,
    },
    Case {
        name: "cpu_cpuid_policy",
        run: cpu_priv::cpuid_policy,
    },
    Case {
        name: "vcpu_runstate_area",
        run: vcpu_runstate::run,
    },
    Case {
        name: "vcpu_switch",
        run: vcpu_switch::two,
    },
    Case {
        name: "vcpu_switch4",
        run: vcpu_switch::four,
    },
    Case {
        name: "vcpu_up_down",
        run: vcpu_up_down::run,
    },
    Case {
        name: "hostile_selectors_kernel",
        run: hostile::selectors_kernel,
    },
    Case {
        name: "hostile_selectors_user",
        run: hostile::selectors_user,
    },
    Case {
        name: "hostile_rip",
        run: hostile::rip,
    },
    Case {
        name: "hostile_ldt_refault",
        run: hostile::ldt_refault,
    },
    Case {
        name: "hostile_debugreg",
        run: hostile::debugreg,
    },
    Case {
        name: "hostile_machphys_io",
        run: hostile::machphys_io,
    },
    Case {
        name: "hostile_hypervisor_mmio",
        run: hostile::hypervisor_mmio,
    },
    Case {
        name: "hostile_unresumable",
        run: hostile::unresumable,
    },
    Case {
        name: "evtchn_ports",
        run: evtchn::ports,
    },
    Case {
        name: "evtchn_loopback",
        run: evtchn::loopback,
    },
    Case {
        name: "evtchn_vcpus",
        run: evtchn::vcpus,
    },
    Case {
        name: "evtchn_poll_wake",
        run: evtchn::poll_wake,
    },
    Case {
        name: "timer_ops",
        run: timers::ops,
    },
    Case {
        name: "timer_user_mode",
        run: timers::user_mode,
    },
    Case {
        name: "time_monotonic",
        run: timers::monotonic,
    },
    Case {
        name: "sched_block_poll",
        run: timers::block_poll,
    },
    Case {
        name: "sched_watchdog",
        run: timers::watchdog,
    },
    Case {
        name: "sched_watchdog_expiry",
        run: timers::watchdog_expiry,
    },
    Case {
        name: "sched_remote_shutdown",
        run: timers::remote_shutdown,
    },
    Case {
        name: "cpu_nmi_callbacks",
        run: nmi::callbacks,
    },
    Case {
        name: "cpu_nmi",
        run: nmi::delivery,
    },
    Case {
        name: "vcpu_nmi",
        run: nmi::vcpus,
    },
    Case {
        name: "fuzz",
        run: fuzz::run,
    },
    Case {
        name: "time_wallclock",
        run: time_wallclock::run,
    },
    Case {
        name: "virtio_blk",
        run: virtio::run_blk,
    },
    Case {
        name: "virtio_net",
        run: virtio::run_net,
    },
    Case {
        name: "io_ports",
        run: io_ports::run,
    },
    Case {
        name: "pirq",
        run: pirq::run,
    },
    Case {
        name: "io_mmcfg_write",
        run: io_mmcfg::run,
    },
    Case {
        name: "io_pci_add",
        run: io_pci_add::run,
    },
    Case {
        name: "platform_cpuinfo",
        run: platform_cpuinfo::run,
    },
    Case {
        name: "mm_writable_pt_rmw",
        run: mm_writable_pt::run_rmw,
    },
    Case {
        name: "mm_writable_pt_forms",
        run: mm_writable_pt::run_forms,
    },
    Case {
        name: "mca",
        run: mca::run,
    },
    Case {
        name: "io_pci_remove",
        run: io_pci_remove::run,
    },
    Case {
        name: "io_pit",
        run: io_pit::run,
    },
    Case {
        name: "smp_dom0_vcpus",
        run: smp_dom0_vcpus::run,
    },
    Case {
        name: "smp_mmu_update_shared",
        run: smp_tlb::mmu_update_shared,
    },
    Case {
        name: "smp_remote_flush",
        run: smp_tlb::remote_flush,
    },
    Case {
        name: "hypercall_registers",
        run: hypercall_registers::run,
    },
];

/// The test called `name`.
pub fn find(name: &str) -> Option<&'static Case> {
    ALL.iter().find(|c| c.name == name)
}

/// Guest pointers every hypercall must refuse with `EFAULT`: an unmapped
/// low address and the hypervisor's direct map (reserved L4 slot 262).
pub const BAD_POINTERS: &[(&str, u64)] = &[
    ("unmapped 0x1000", 0x1000),
    (
        "reserved 0xffff830000000000",
        guest_pv_shim::dom0_abi::layout::DIRECTMAP_VIRT_START,
    ),
];
