//! `cpu_trap_table` and `cpu_callbacks`.
//!
//! `cpu_trap_table`: `set_trap_table` errors (a non-canonical handler,
//! `EINVAL`, keeping the entries before it; an unreadable table, `EFAULT`;
//! NULL clears, and the table can be installed again); the DPL of an
//! entry decides who may `int $n` it (kernel: DPL 0 is #GP, 1-3
//! delivered); the entry's `cs` is ignored; the IF flag (4) masks events
//! in the handler, without it the handler keeps the interrupted mask; the
//! frame shows the saved mask in CS bits 32-39 and RFLAGS.IF = !mask;
//! `HYPERVISOR_iret` restores the mask from RFLAGS.IF.
//!
//! `cpu_callbacks`: `set_callbacks`, and `callback_op` registration of
//! every callback type (event, failsafe, syscall, sysenter, syscall32,
//! NMI) and its errors: unknown type and the deprecated sysenter type 3
//! (`ENOSYS`), non-canonical address
//! (`EINVAL`), unreadable argument (`EFAULT`), unknown command (`ENOSYS`),
//! unregistering anything but NMI (`EINVAL`). The event callback runs when
//! an upcall is pending and the guest unmasks events and enters the
//! hypervisor: it masks events, shows the interrupted kernel context, and
//! its return restores the mask.
//!
//! Software interrupts from the kernel travel through the hypervisor's
//! #GP path; under QEMU's TCG the #GP error code is `n * 16 + 2`, which Xen
//! decodes as vector `2n mod 256`. Each test vector is therefore
//! installed at `n` and at that alias with the same settings (on real
//! hardware the alias is simply never used).

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::cpu::{
    CallbackFlags, CallbackOp, CallbackRegister, CallbackType, TrapInfo,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::traps::{self, Callback, Trap};
use guest_pv_shim::{fixup_asm, report, shared};

use crate::support;

/// The test vector and its alias under QEMU's TCG.
const VECTOR: u8 = traps::TEST_VECTOR;
const ALIAS: u8 = 0x42;

/// Installs `VECTOR` (and its alias) with `flags`; returns the first
/// non-zero result.
fn open(flags: u8) -> i64 {
    let stub = traps::stub_address(VECTOR);
    let a = traps::set_trap(VECTOR, flags, stub);
    let b = traps::set_trap(ALIAS, flags, stub);
    if a != 0 { a } else { b }
}

/// `int $0x21` from the kernel.
fn int21() -> Option<Trap> {
    let (_, t) = traps::catch(|| {
        // SAFETY: a software interrupt that the shim's handler returns
        // from, or a #GP the fixup table resumes after.
        unsafe { fixup_asm!("int 0x21"; options(nostack)) };
    });
    t
}

/// Whether a #GP error code names `n` (hardware or QEMU TCG encoding).
fn names_vector(error_code: u64, n: u64) -> bool {
    error_code == n * 8 + 2 || error_code == n * 16 + 2
}

fn dpl_checks() {
    report::check_ret("install vector 0x21 with DPL 0", open(0), 0);
    let t = int21();
    report::check(
        "int $0x21 with DPL 0 from the kernel is #GP naming the vector",
        t.is_some_and(|t| t.vector == 13 && names_vector(t.error_code, 0x21)),
        format_args!("{t:x?}"),
    );
    for dpl in 1..=3u8 {
        report::check_ret(
            format_args!("install vector 0x21 with DPL {dpl}"),
            open(dpl | TrapInfo::FLAG_IF),
            0,
        );
        let t = int21();
        report::check(
            format_args!("int $0x21 with DPL {dpl} from the kernel is delivered"),
            t.is_some_and(|t| t.vector == 0x21 && !t.from_user() && t.error_code == 0),
            format_args!("{t:x?}"),
        );
    }
    // A zero `cs`: ignored for 64-bit guests.
    let stub = traps::stub_address(VECTOR).unwrap_or(0);
    let table = [
        TrapInfo {
            vector: VECTOR,
            flags: 1,
            cs: 0,
            address: stub,
        },
        TrapInfo {
            vector: ALIAS,
            flags: 1,
            cs: 0,
            address: stub,
        },
        TrapInfo::default(),
    ];
    // SAFETY: the handler is the shim's stub for the vector.
    let ret = unsafe { hc::set_trap_table(&table) };
    report::check_ret("an entry with cs 0 is accepted", ret, 0);
    let t = int21();
    report::check(
        "an entry with cs 0 delivers with the kernel's CS",
        t.is_some_and(|t| t.vector == 0x21 && t.handler_cs == traps::current_cs_ss().0),
        format_args!("{t:x?}"),
    );
}

fn mask_checks() {
    if !shared::set_upcall_mask(0) {
        report::error("shared_info", format_args!("not mapped"));
        return;
    }
    open(1);
    let t = int21();
    shared::set_upcall_mask(1);
    report::check(
        "without the IF flag the handler keeps events unmasked",
        t.is_some_and(|t| t.mask == Some(0)),
        format_args!("{t:x?}"),
    );
    report::check(
        "the frame shows mask 0 in CS bits 32-39 and RFLAGS.IF set",
        t.is_some_and(|t| t.saved_mask() == 0 && t.rflags & traps::RFLAGS_IF != 0),
        format_args!("{t:x?}"),
    );
    open(1 | TrapInfo::FLAG_IF);
    shared::set_upcall_mask(0);
    let t = int21();
    let after = shared::upcall_mask();
    shared::set_upcall_mask(1);
    report::check(
        "with the IF flag the handler runs with events masked",
        t.is_some_and(|t| t.mask == Some(1) && t.saved_mask() == 0),
        format_args!("{t:x?}"),
    );
    report::check_eq(
        "HYPERVISOR_iret restores the upcall mask from RFLAGS.IF",
        after,
        Some(0),
    );
    let t = int21();
    report::check(
        "with events masked the frame shows mask 1 and RFLAGS.IF clear",
        t.is_some_and(|t| t.saved_mask() == 1 && t.rflags & traps::RFLAGS_IF == 0),
        format_args!("{t:x?}"),
    );
    report::check_eq(
        "events stay masked after returning to masked code",
        shared::upcall_mask(),
        Some(1),
    );
}

pub fn trap_table(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    dpl_checks();
    mask_checks();

    let stub = traps::stub_address(VECTOR).unwrap_or(0);
    let table = [
        TrapInfo {
            vector: VECTOR,
            flags: 1,
            cs: 0,
            address: stub,
        },
        TrapInfo {
            vector: ALIAS,
            flags: 1,
            cs: 0,
            address: stub,
        },
        TrapInfo {
            vector: 0x23,
            flags: 1,
            cs: 0,
            address: 0x8000_0000_0000_0000,
        },
        TrapInfo::default(),
    ];
    report::check_ret("install vector 0x21 with DPL 0", open(0), 0);
    // SAFETY: the valid entries point at the shim's stub; the third must
    // be refused.
    let ret = unsafe { hc::set_trap_table(&table) };
    report::check_ret(
        "a non-canonical handler is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let t = int21();
    report::check(
        "entries before the bad one were installed",
        t.is_some_and(|t| t.vector == 0x21),
        format_args!("{t:x?}"),
    );
    // SAFETY: the table address is unmapped; the call must fail.
    let ret = unsafe { hc::set_trap_table_raw(0x1000) };
    report::check_ret("an unreadable table is EFAULT", ret, Errno::EFAULT.neg());
    // SAFETY: NULL clears the table; it is installed again right after,
    // and nothing faults in between.
    let ret = unsafe { hc::set_trap_table_raw(0) };
    report::check_ret("a NULL table clears the trap table", ret, 0);
    let table = traps::default_trap_table();
    // SAFETY: the shim's own table.
    let ret = unsafe { hc::set_trap_table(&table) };
    report::check_ret("the trap table can be installed again", ret, 0);
    let (_, t) = traps::catch(|| {
        // SAFETY: ud2 faults and resumes after the block.
        unsafe { fixup_asm!("ud2"; options(nostack)) };
    });
    report::check(
        "exceptions are delivered again",
        t.is_some_and(|t| t.vector == 6),
        format_args!("{t:x?}"),
    );
}

fn register(kind: u16, flags: u16, address: u64) -> i64 {
    let reg = CallbackRegister {
        kind,
        flags,
        pad: 0,
        address,
    };
    // SAFETY: every address registered is a shim stub for that callback,
    // or is refused.
    unsafe { hc::callback_register(&reg) }
}

pub fn callbacks(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let event = traps::callback_address(Callback::Event);
    let failsafe = traps::callback_address(Callback::Failsafe);
    let syscall = traps::callback_address(Callback::Syscall);
    // SAFETY: the shim's callback stubs.
    let ret = unsafe { hc::set_callbacks(event, failsafe, syscall) };
    report::check_ret("set_callbacks", ret, 0);
    // SAFETY: a non-canonical address, which is not registered.
    let ret = unsafe { hc::set_callbacks(event, failsafe, 0x8000_0000_0000_0000) };
    report::check_ret(
        "set_callbacks with a non-canonical address returns 0",
        ret,
        0,
    );

    let mask = CallbackFlags::MASK_EVENTS.bits();
    let kinds = [
        (CallbackType::Event, Callback::Event, 0),
        (CallbackType::Failsafe, Callback::Failsafe, 0),
        (CallbackType::Syscall, Callback::Syscall, mask),
        (CallbackType::Sysenter, Callback::Sysenter, mask),
        (CallbackType::Syscall32, Callback::Syscall32, mask),
        (CallbackType::Nmi, Callback::Nmi, 0),
    ];
    for (kind, cb, flags) in kinds {
        report::check_ret(
            format_args!("register the {} callback", kind.name()),
            register(kind as u16, flags, traps::callback_address(cb)),
            0,
        );
    }
    report::check_ret(
        "register the deprecated sysenter callback type (3) is ENOSYS",
        register(
            CallbackType::SysenterDeprecated as u16,
            mask,
            traps::callback_address(Callback::Sysenter),
        ),
        Errno::ENOSYS.neg(),
    );
    for kind in [6u16, 8, 100] {
        report::check_ret(
            format_args!("register callback type {kind} is ENOSYS"),
            register(kind, 0, event),
            Errno::ENOSYS.neg(),
        );
    }
    report::check_ret(
        "register with a non-canonical address is EINVAL",
        register(CallbackType::Event as u16, 0, 0x8000_0000_0000_0000),
        Errno::EINVAL.neg(),
    );
    // SAFETY: an unmapped argument, which the hypervisor must refuse.
    let ret = unsafe { hc::callback_op_raw(CallbackOp::Register as u64, 0x1000) };
    report::check_ret(
        "register with an unreadable argument is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    let reg = CallbackRegister {
        kind: CallbackType::Event as u16,
        flags: 0,
        pad: 0,
        address: event,
    };
    // SAFETY: an unknown command reads nothing that matters.
    let ret = unsafe { hc::callback_op_raw(2, core::ptr::from_ref(&reg) as u64) };
    report::check_ret("callback_op command 2 is ENOSYS", ret, Errno::ENOSYS.neg());
    report::check_ret(
        "unregister the NMI callback",
        hc::callback_unregister(CallbackType::Nmi as u16),
        0,
    );
    for kind in [
        CallbackType::Event,
        CallbackType::Failsafe,
        CallbackType::Syscall,
    ] {
        report::check_ret(
            format_args!("unregister the {} callback is EINVAL", kind.name()),
            hc::callback_unregister(kind as u16),
            Errno::EINVAL.neg(),
        );
    }
    report::check_ret(
        "unregister callback type 100 is ENOSYS",
        hc::callback_unregister(100),
        Errno::ENOSYS.neg(),
    );

    event_upcall();
}

/// Makes an upcall pending, unmasks events and enters the hypervisor: the
/// event callback must run before the hypercall returns.
fn event_upcall() {
    if !shared::set_upcall_pending(1) {
        report::error("shared_info", format_args!("not mapped"));
        return;
    }
    let before = traps::event_count();
    shared::set_upcall_mask(0);
    let version = hc::xenver_version();
    let mask_after = shared::upcall_mask();
    shared::set_upcall_mask(1);
    report::check(
        "a pending upcall is delivered when events are unmasked",
        traps::event_count() == before + 1,
        format_args!("{} upcalls", traps::event_count() - before),
    );
    let t = traps::last_event();
    report::check_eq(
        "the event callback was entered",
        t.vector,
        traps::VECTOR_EVENT,
    );
    report::check(
        "the event callback shows the interrupted kernel context",
        !t.from_user() && t.saved_mask() == 0 && t.rflags & traps::RFLAGS_IF != 0,
        format_args!("{t:x?}"),
    );
    report::check_eq(
        "the event callback runs with events masked",
        t.mask,
        Some(1),
    );
    report::check_eq(
        "the return from the event callback restores the mask",
        mask_after,
        Some(0),
    );
    report::check_ret(
        "the interrupted hypercall completed",
        version,
        i64::from(guest_pv_shim::dom0_abi::version::version_number(4, 17)),
    );
}
