//! Virtual NMIs: `cpu_nmi_callbacks` (where an NMI goes after each way of
//! registering or removing the NMI callback, and the errors),
//! `cpu_nmi` (`VCPUOP_send_nmi` to the vCPU itself: when the NMI is taken,
//! its frame, masking until `iret`, no handler, NMIs ahead of events, an
//! NMI interrupting user mode) and `vcpu_nmi` (`dom0_max_vcpus=2`: NMIs
//! between vCPUs).
//!
//! Xen 4.17's answers, as these guests see them there:
//! - the NMI callback is the vCPU's trap-table entry 2: `callback_op`
//!   (`CALLBACKTYPE_nmi`) and `nmi_op` (`XENNMI_register_callback`) write
//!   it (events always masked in the handler, whatever the flags), a
//!   `set_trap_table` entry for vector 2 replaces it (with its own IF
//!   flag: without it a pending upcall is taken at once, on top of the
//!   NMI frame), and unregistering (either call) or `set_trap_table(NULL)`
//!   removes it; registration is per vCPU and allowed on every vCPU;
//! - `nmi_op` errors: unreadable argument `EFAULT`, non-canonical handler
//!   `EINVAL`, unknown command `ENOSYS`; unregister does not read its
//!   argument; the commands of `nmi_op` and `callback_op` are 32-bit;
//! - `send_nmi`: a vCPU the domain does not have is `ENOENT` (checked
//!   first), a non-NULL argument `EINVAL`; otherwise 0, and the NMI is
//!   taken the next time the target vCPU returns to the guest: for the
//!   caller, on the way out of the `send_nmi` call itself (RIP after the
//!   stub's trap instruction, RAX 0), for a vCPU not yet up, at its first
//!   instruction;
//! - the frame is an exception frame without error code: saved upcall
//!   mask in CS bits 32-39, RFLAGS.IF its inverse, 56 bytes below the
//!   interrupted RSP rounded down to 16 (from user mode: below the
//!   `stack_switch` stack);
//! - NMIs stay masked until the handler's `HYPERVISOR_iret`: sends while
//!   masked return 0 and make one NMI, taken on the way out of that
//!   `iret` at the point it returns to (here user mode, when the handler
//!   enters user mode with its `iret`);
//! - with no callback the NMI is dropped, not delivered when one is
//!   registered later;
//! - an NMI and an event upcall pending together: the NMI first, the
//!   upcall when the NMI handler's `iret` unmasks events;
//! - vCPU 0 registering a callback (either call, not `set_trap_table`)
//!   while `shared_info.arch.nmi_reason` is non-zero gets an NMI;
//!   another vCPU does not;
//! - an NMI wakes a vCPU asleep in `SCHEDOP_block` or `SCHEDOP_poll`: the
//!   call returns 0 once the NMI handler has run.

use core::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::cpu::{
    CallbackFlags, CallbackOp, CallbackRegister, CallbackType, CallbackUnregister, TrapInfo,
};
use guest_pv_shim::dom0_abi::event_channel::EvtchnAllocUnbound;
use guest_pv_shim::dom0_abi::hypercall::{HYPERCALL_SLOT_SIZE, Hypercall};
use guest_pv_shim::dom0_abi::nmi::{NMI_VECTOR, NmiOp, XenNmiCallback};
use guest_pv_shim::dom0_abi::segment::FLAT_RING3_CS64;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::vcpu::{RUNSTATE_BLOCKED, VcpuOpCmd, VcpuRunstateInfo};
use guest_pv_shim::hypercall::{self as hc, raw};
use guest_pv_shim::traps::{
    self, Callback, Disposition, RFLAGS_IF, Trap, TrapFrame, UserEntry, VECTOR_EVENT,
    VECTOR_NMI_CALLBACK,
};
use guest_pv_shim::{report, shared, smp};

use super::BAD_POINTERS;
use crate::support;

/// Entries the log keeps.
const LOG_SIZE: usize = 32;
/// Yields vCPU 0 waits for vCPU 1 at most.
const WAIT: u32 = 100_000;
/// Bytes of a bounce frame without error code.
const FRAME_BYTES: u64 = 56;
/// `RFLAGS` bit 1, always set.
const RFLAGS_FIXED: u64 = 1 << 1;
/// A vCPU id no domain here has.
const NO_SUCH_VCPU: u64 = 4096;
/// A non-canonical address.
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;
/// An `nmi_reason` value with a bit outside the low 32.
const REASON: u64 = 1 << 40;

/// One NMI or event upcall, as its handler found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    vector: u32,
    vcpu: usize,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    frame: u64,
    rax: u64,
    /// vCPU 0's upcall mask in the handler (`None` for other vCPUs).
    mask: Option<u8>,
}

impl Seen {
    fn saved_mask(&self) -> u8 {
        ((self.cs >> 32) & 0xff) as u8
    }

    fn in_user_mode(&self) -> bool {
        self.cs & 2 != 0
    }

    /// Which handler ran.
    fn handler(&self) -> &'static str {
        match self.vector {
            2 => "trap-table entry 2",
            VECTOR_NMI_CALLBACK => "the NMI callback stub",
            VECTOR_EVENT => "the event callback",
            _ => "another entry",
        }
    }
}

/// A log slot: the fields of a [`Seen`], written by the handler.
struct Slot {
    vector: AtomicU32,
    vcpu: AtomicUsize,
    rip: AtomicU64,
    cs: AtomicU64,
    rflags: AtomicU64,
    rsp: AtomicU64,
    frame: AtomicU64,
    rax: AtomicU64,
    /// The mask, or `u32::MAX` for none.
    mask: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            vector: AtomicU32::new(0),
            vcpu: AtomicUsize::new(0),
            rip: AtomicU64::new(0),
            cs: AtomicU64::new(0),
            rflags: AtomicU64::new(0),
            rsp: AtomicU64::new(0),
            frame: AtomicU64::new(0),
            rax: AtomicU64::new(0),
            mask: AtomicU32::new(u32::MAX),
        }
    }

    fn store(&self, s: &Seen) {
        self.vector.store(s.vector, Ordering::SeqCst);
        self.vcpu.store(s.vcpu, Ordering::SeqCst);
        self.rip.store(s.rip, Ordering::SeqCst);
        self.cs.store(s.cs, Ordering::SeqCst);
        self.rflags.store(s.rflags, Ordering::SeqCst);
        self.rsp.store(s.rsp, Ordering::SeqCst);
        self.frame.store(s.frame, Ordering::SeqCst);
        self.rax.store(s.rax, Ordering::SeqCst);
        self.mask
            .store(s.mask.map_or(u32::MAX, u32::from), Ordering::SeqCst);
    }

    fn load(&self) -> Seen {
        Seen {
            vector: self.vector.load(Ordering::SeqCst),
            vcpu: self.vcpu.load(Ordering::SeqCst),
            rip: self.rip.load(Ordering::SeqCst),
            cs: self.cs.load(Ordering::SeqCst),
            rflags: self.rflags.load(Ordering::SeqCst),
            rsp: self.rsp.load(Ordering::SeqCst),
            frame: self.frame.load(Ordering::SeqCst),
            rax: self.rax.load(Ordering::SeqCst),
            mask: u8::try_from(self.mask.load(Ordering::SeqCst)).ok(),
        }
    }
}

/// Every NMI and event upcall, in the order the handlers ran.
static LOG: [Slot; LOG_SIZE] = [const { Slot::new() }; LOG_SIZE];
/// Entries made in `LOG` (more than `LOG_SIZE` are counted, not kept).
static LOGGED: AtomicUsize = AtomicUsize::new(0);
/// NMIs per vCPU.
static NMIS: [AtomicU64; smp::MAX_VCPUS] = [const { AtomicU64::new(0) }; smp::MAX_VCPUS];

/// What the next NMI on vCPU 0 does before it returns.
static ACTION: AtomicU8 = AtomicU8::new(NOTHING);
const NOTHING: u8 = 0;
/// Sends two more NMIs to vCPU 0 (masked: they stay pending).
const SEND_TWICE: u8 = 1;
/// Sends one more NMI, then enters user mode with `HYPERVISOR_iret`.
const ENTER_USER: u8 = 2;
/// Results of the sends in the handler, and NMIs seen right after each.
static IN_HANDLER: [AtomicI64; 2] = [const { AtomicI64::new(0) }; 2];
static IN_HANDLER_NMIS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// How the user-mode run of [`ENTER_USER`] ended (its exit vector).
static USER_EXIT: AtomicU32 = AtomicU32::new(0);

fn nmis(vcpu: usize) -> u64 {
    NMIS[vcpu].load(Ordering::SeqCst)
}

fn logged() -> usize {
    LOGGED.load(Ordering::SeqCst)
}

/// Log entry `i`, if it was kept.
fn entry(i: usize) -> Option<Seen> {
    (i < logged()).then(|| LOG.get(i).map(Slot::load)).flatten()
}

/// The NMI and event handler: logs the entry; an NMI on vCPU 0 then does
/// what [`ACTION`] says. NMIs return to their frame; events go on to the
/// shim's own handling.
fn hook(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    let nmi = rec.vector == u32::from(NMI_VECTOR) || rec.vector == VECTOR_NMI_CALLBACK;
    if !nmi && rec.vector != VECTOR_EVENT {
        return Disposition::Default;
    }
    let vcpu = support::vcpu_of(frame.rsp);
    let seen = Seen {
        vector: rec.vector,
        vcpu,
        rip: rec.rip,
        cs: rec.cs,
        rflags: rec.rflags,
        rsp: rec.rsp,
        frame: rec.frame,
        rax: rec.rax,
        mask: if vcpu == 0 { rec.mask } else { None },
    };
    let i = LOGGED.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = LOG.get(i) {
        slot.store(&seen);
    }
    if !nmi {
        return Disposition::Default;
    }
    NMIS[vcpu].fetch_add(1, Ordering::SeqCst);
    if vcpu == 0 {
        match ACTION.swap(NOTHING, Ordering::SeqCst) {
            SEND_TWICE => {
                for k in 0..2 {
                    IN_HANDLER[k].store(hc::vcpu_send_nmi(0), Ordering::SeqCst);
                    IN_HANDLER_NMIS[k].store(nmis(0), Ordering::SeqCst);
                }
            }
            ENTER_USER => {
                IN_HANDLER[0].store(hc::vcpu_send_nmi(0), Ordering::SeqCst);
                IN_HANDLER_NMIS[0].store(nmis(0), Ordering::SeqCst);
                let exit = traps::run_user(
                    traps::user_exit_entry(),
                    FLAT_RING3_CS64,
                    RFLAGS_IF | RFLAGS_FIXED,
                    UserEntry::Hypercall,
                );
                USER_EXIT.store(exit.vector, Ordering::SeqCst);
            }
            _ => {}
        }
    }
    Disposition::Return
}

/// Sends an NMI to vCPU 0 (the caller): the result and the entries the
/// handlers logged during the call.
fn send_self() -> (i64, usize, Option<Seen>) {
    let before = logged();
    let ret = hc::vcpu_send_nmi(0);
    let after = logged();
    (ret, after - before, entry(before))
}

/// Which handler the NMI of a `send_self` went to: `none`, or the name
/// of the only entry logged.
fn went_to(sent: (i64, usize, Option<Seen>)) -> &'static str {
    match sent {
        (0, 0, _) => "none",
        (0, 1, Some(s)) => s.handler(),
        _ => "a failed send or several entries",
    }
}

/// Checks that an NMI sent to vCPU 0 now goes to `want`.
fn check_goes_to(check: &str, want: &str) -> Option<Seen> {
    let sent = send_self();
    report::check_eq(check, went_to(sent), want);
    sent.2
}

/// Whether `rip` is in hypercall `call`'s stub, right after its trap
/// instruction (`int $0x82` here, `syscall` on Xen).
fn after_trap_of(call: Hypercall, rip: u64) -> bool {
    let Some(stub) = raw::stub_address(call.number()) else {
        return false;
    };
    let page = raw::page_address();
    let in_stub = (stub + 2..stub + HYPERCALL_SLOT_SIZE as u64).contains(&rip);
    in_stub && {
        let at = usize::try_from(rip - page).unwrap_or(usize::MAX);
        matches!(
            raw::page().get(at - 2..at),
            Some([0xcd, 0x82] | [0x0f, 0x05])
        )
    }
}

/// The NMI callback stub of the shim, and its trap-table stub for vector 2.
fn stubs() -> (u64, u64) {
    (
        traps::callback_address(Callback::Nmi),
        traps::stub_address(NMI_VECTOR).unwrap_or(0),
    )
}

/// `callback_op` register of the NMI callback at `address`.
fn register(address: u64, flags: CallbackFlags) -> i64 {
    let reg = CallbackRegister {
        kind: CallbackType::Nmi as u16,
        flags: flags.bits(),
        pad: 0,
        address,
    };
    // SAFETY: the address is the shim's NMI callback stub, or one the
    // hypervisor refuses.
    unsafe { hc::callback_register(&reg) }
}

/// Trap table, user mode, events unmasked with nothing pending, the hook.
fn set_up(user: bool) -> bool {
    let ready = if user {
        support::traps_and_user()
    } else {
        support::traps()
    };
    if !ready {
        return false;
    }
    if !shared::set_upcall_pending(0) || !shared::set_upcall_mask(0) {
        report::error("shared_info", format_args!("not mapped"));
        return false;
    }
    traps::set_hook(Some(hook));
    true
}

/// `cpu_nmi_callbacks`: registering and removing the NMI callback.
pub fn callbacks(_start_info: &'static StartInfo) {
    if !set_up(false) {
        return;
    }
    let (callback, entry2) = stubs();
    check_goes_to("after init an NMI goes to", "trap-table entry 2");

    report::check_ret(
        "register the NMI callback with callback_op (flags 0)",
        register(callback, CallbackFlags::empty()),
        0,
    );
    let seen = check_goes_to(
        "after callback_op register an NMI goes to",
        "the NMI callback stub",
    );
    report::check_eq(
        "its handler runs with events masked",
        seen.and_then(|s| s.mask),
        Some(1),
    );
    report::check_ret(
        "callback_op register with a non-canonical address is EINVAL",
        register(NON_CANONICAL, CallbackFlags::empty()),
        Errno::EINVAL.neg(),
    );
    check_goes_to("after it an NMI still goes to", "the NMI callback stub");
    report::check_ret(
        "unregister it with callback_op",
        hc::callback_unregister(CallbackType::Nmi as u16),
        0,
    );
    check_goes_to("without a callback an NMI goes to", "none");

    // SAFETY: the shim's vector-2 stub handles NMIs.
    let ret = unsafe { hc::nmi_register_callback(entry2) };
    report::check_ret("nmi_op register_callback", ret, 0);
    let seen = check_goes_to(
        "after nmi_op register_callback an NMI goes to",
        "trap-table entry 2",
    );
    report::check_eq(
        "the nmi_op handler runs with events masked",
        seen.and_then(|s| s.mask),
        Some(1),
    );
    // SAFETY: a non-canonical handler, which is refused.
    let ret = unsafe { hc::nmi_register_callback(NON_CANONICAL) };
    report::check_ret(
        "nmi_op register_callback of a non-canonical handler is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the hypervisor must refuse it.
        let ret = unsafe { hc::nmi_op_raw(NmiOp::RegisterCallback as u64, ptr) };
        report::check_ret(
            format_args!("nmi_op register_callback from {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
    for cmd in [2, 0xffff_ffff] {
        // SAFETY: an unknown command reads nothing.
        let ret = unsafe { hc::nmi_op_raw(cmd, 0) };
        report::check_ret(
            format_args!("nmi_op command {cmd:#x} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
    }
    // SAFETY: `unregister_callback` must not read its argument.
    let ret = unsafe { hc::nmi_op_raw(NmiOp::UnregisterCallback as u64, BAD_POINTERS[0].1) };
    report::check_ret("nmi_op unregister_callback ignores its argument", ret, 0);
    check_goes_to("after nmi_op unregister_callback an NMI goes to", "none");
    let arg = XenNmiCallback {
        handler_address: entry2,
        pad: 0,
    };
    // SAFETY: `arg` is readable and names the shim's vector-2 stub; only
    // the low 32 bits of the command count.
    let ret = unsafe {
        hc::nmi_op_raw(
            (1 << 32) | NmiOp::RegisterCallback as u64,
            core::ptr::from_ref(&arg) as u64,
        )
    };
    report::check_ret(
        "nmi_op command (1 << 32) | register_callback registers",
        ret,
        0,
    );
    check_goes_to("an NMI then goes to", "trap-table entry 2");

    trap_table_entry(callback, entry2);
    nmi_reason(callback);
    traps::set_hook(None);
}

/// The trap-table side of the NMI callback.
fn trap_table_entry(callback: u64, entry2: u64) {
    report::check_ret(
        "register the NMI callback with callback_op",
        register(callback, CallbackFlags::MASK_EVENTS),
        0,
    );
    report::check_ret(
        "set_trap_table entry 2 (flags 4)",
        traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2)),
        0,
    );
    check_goes_to("then an NMI goes to", "trap-table entry 2");
    register(callback, CallbackFlags::empty());
    check_goes_to(
        "callback_op then replaces it: an NMI goes to",
        "the NMI callback stub",
    );
    report::check_ret(
        "callback_op unregister",
        hc::callback_unregister(CallbackType::Nmi as u16),
        0,
    );
    traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2));
    let unregister = CallbackUnregister {
        kind: CallbackType::Nmi as u16,
        unused: 0,
    };
    // SAFETY: `unregister` is readable; only the low 32 bits of the
    // command count.
    let ret = unsafe {
        hc::callback_op_raw(
            (1 << 32) | CallbackOp::Unregister as u64,
            core::ptr::from_ref(&unregister) as u64,
        )
    };
    report::check_ret(
        "callback_op command (1 << 32) | unregister unregisters",
        ret,
        0,
    );
    check_goes_to(
        "callback_op unregister also clears a trap-table entry 2: an NMI goes to",
        "none",
    );
    traps::set_trap(NMI_VECTOR, 0, Some(entry2));
    let seen = check_goes_to(
        "set_trap_table entry 2 without the IF flag: an NMI goes to",
        "trap-table entry 2",
    );
    report::check_eq(
        "and its handler runs with events unmasked",
        seen.and_then(|s| s.mask),
        Some(0),
    );
    shared::set_upcall_pending(1);
    let before = logged();
    let ret = hc::vcpu_send_nmi(0);
    let (first, second) = (entry(before), entry(before + 1));
    report::check_eq(
        "with an upcall pending too: result, the handler that runs first, then",
        (ret, first.map(|s| s.handler()), second.map(|s| s.handler())),
        (0, Some("the event callback"), Some("trap-table entry 2")),
    );
    report::check(
        "the upcall interrupted the NMI handler at its first instruction",
        first.is_some_and(|s| s.rip == entry2 && s.saved_mask() == 0),
        format_args!("{first:x?}"),
    );
    traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2));
    // SAFETY: clears every handler; nothing faults until the table is
    // installed again below.
    let ret = unsafe { hc::set_trap_table_raw(0) };
    report::check_ret("set_trap_table(NULL)", ret, 0);
    let sent = send_self();
    let table = traps::default_trap_table();
    // SAFETY: the shim's own table, as `traps::init` installs it.
    let restored = unsafe { hc::set_trap_table(&table) };
    report::check_eq(
        "after set_trap_table(NULL) an NMI goes to",
        went_to(sent),
        "none",
    );
    report::check_ret("the trap table is installed again", restored, 0);
    check_goes_to("with it an NMI goes to", "trap-table entry 2");
}

/// Registering on vCPU 0 with `shared_info.arch.nmi_reason` non-zero.
fn nmi_reason(callback: u64) {
    let (_, entry2) = stubs();
    shared::set_nmi_reason(REASON);
    let before = logged();
    let ret = register(callback, CallbackFlags::empty());
    let seen = entry(before);
    report::check_ret("callback_op register with nmi_reason set", ret, 0);
    report::check_eq(
        "it raises an NMI, taken at its return, in the new callback",
        (logged() - before, seen.map(|s| s.handler())),
        (1, Some("the NMI callback stub")),
    );
    report::check(
        "that NMI interrupted the callback_op stub after its trap instruction",
        seen.is_some_and(|s| after_trap_of(Hypercall::CallbackOp, s.rip)),
        format_args!("{seen:x?}"),
    );
    let before = logged();
    // SAFETY: the shim's vector-2 stub handles NMIs.
    let ret = unsafe { hc::nmi_register_callback(entry2) };
    report::check_eq(
        "nmi_op register with nmi_reason set: result, NMIs",
        (ret, logged() - before),
        (0, 1),
    );
    let before = logged();
    let ret = traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2));
    report::check_eq(
        "set_trap_table entry 2 with nmi_reason set: result, NMIs",
        (ret, logged() - before),
        (0, 0),
    );
    shared::set_nmi_reason(0);
    let before = logged();
    let ret = register(callback, CallbackFlags::empty());
    report::check_eq(
        "callback_op register with nmi_reason 0: result, NMIs",
        (ret, logged() - before),
        (0, 0),
    );
    traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2));
}

/// `cpu_nmi`: NMIs to the vCPU itself.
pub fn delivery(_start_info: &'static StartInfo) {
    if !set_up(true) {
        return;
    }
    // SAFETY: a non-NULL argument, which send_nmi refuses unread.
    let ret = unsafe { hc::vcpu_op_raw(VcpuOpCmd::SendNmi as u64, 0, 0x1000) };
    let count = logged();
    report::check_ret(
        "send_nmi with a non-NULL argument is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    report::check_eq("and sends nothing", count, 0);
    report::check_ret(
        "send_nmi to a vCPU the domain does not have is ENOENT",
        hc::vcpu_send_nmi(NO_SUCH_VCPU),
        Errno::ENOENT.neg(),
    );
    // SAFETY: as above.
    let ret = unsafe { hc::vcpu_op_raw(VcpuOpCmd::SendNmi as u64, NO_SUCH_VCPU, 0x1000) };
    report::check_ret(
        "with a non-NULL argument too it is ENOENT (the vCPU is checked first)",
        ret,
        Errno::ENOENT.neg(),
    );

    let sent = send_self();
    report::check_eq(
        "send_nmi to itself: result, entries before it returns",
        (sent.0, sent.1),
        (0, 1),
    );
    if let Some(seen) = sent.2 {
        kernel_frame(&seen, 0);
    }
    shared::set_upcall_mask(1);
    let sent = send_self();
    let mask_after = shared::upcall_mask();
    shared::set_upcall_mask(0);
    report::check_eq(
        "with events masked: result, entries",
        (sent.0, sent.1),
        (0, 1),
    );
    if let Some(seen) = sent.2 {
        kernel_frame(&seen, 1);
    }
    report::check_eq(
        "after its iret events are masked again",
        mask_after,
        Some(1),
    );

    masked_until_iret();
    no_handler();
    before_events();
    user_mode();
    traps::set_hook(None);
}

/// The frame of an NMI that interrupted the `send_nmi` call with upcall
/// mask `mask`.
fn kernel_frame(seen: &Seen, mask: u8) {
    report::check_eq(
        format_args!("mask {mask}: the handler is"),
        seen.handler(),
        "trap-table entry 2",
    );
    report::check(
        format_args!("mask {mask}: RIP is in the vcpu_op stub after its trap instruction"),
        after_trap_of(Hypercall::VcpuOp, seen.rip),
        format_args!("rip {:#x}", seen.rip),
    );
    report::check_eq(
        format_args!("mask {mask}: the frame shows kernel mode"),
        seen.in_user_mode(),
        false,
    );
    report::check_eq(
        format_args!("mask {mask}: RAX is send_nmi's result"),
        seen.rax,
        0,
    );
    report::check_eq(
        format_args!("mask {mask}: saved upcall mask, RFLAGS.IF"),
        (seen.saved_mask(), seen.rflags & RFLAGS_IF != 0),
        (mask, mask == 0),
    );
    report::check_eq(
        format_args!("mask {mask}: the handler runs with events masked"),
        seen.mask,
        Some(1),
    );
    report::check(
        format_args!(
            "mask {mask}: the frame is 56 bytes below the interrupted RSP rounded down to 16"
        ),
        seen.frame == (seen.rsp & !15) - FRAME_BYTES,
        format_args!("frame {:#x}, rsp {:#x}", seen.frame, seen.rsp),
    );
}

/// Two sends from inside the handler, then its `iret`.
fn masked_until_iret() {
    let before = logged();
    let first_nmis = nmis(0);
    ACTION.store(SEND_TWICE, Ordering::SeqCst);
    let ret = hc::vcpu_send_nmi(0);
    let first = entry(before);
    let second = entry(before + 1);
    report::check_eq(
        "in the handler two more sends return",
        [
            IN_HANDLER[0].load(Ordering::SeqCst),
            IN_HANDLER[1].load(Ordering::SeqCst),
        ],
        [0, 0],
    );
    report::check_eq(
        "and no NMI is taken meanwhile (NMIs masked)",
        [
            IN_HANDLER_NMIS[0]
                .load(Ordering::SeqCst)
                .wrapping_sub(first_nmis),
            IN_HANDLER_NMIS[1]
                .load(Ordering::SeqCst)
                .wrapping_sub(first_nmis),
        ],
        [1, 1],
    );
    report::check_eq(
        "after the handler's iret one more NMI, not two: result, NMIs",
        (ret, nmis(0).wrapping_sub(first_nmis)),
        (0, 2),
    );
    report::check(
        "it interrupted the point the iret returned to",
        matches!((first, second), (Some(a), Some(b)) if a.rip == b.rip && a.rsp == b.rsp),
        format_args!("first {first:x?}, second {second:x?}"),
    );
}

/// NMIs without a handler.
fn no_handler() {
    report::check_ret(
        "unregister the NMI callback",
        hc::callback_unregister(CallbackType::Nmi as u16),
        0,
    );
    let sent = send_self();
    report::check_eq(
        "send_nmi without a callback: result, entries",
        (sent.0, sent.1),
        (0, 0),
    );
    let before = logged();
    let (_, entry2) = stubs();
    traps::set_trap(NMI_VECTOR, TrapInfo::FLAG_IF, Some(entry2));
    let sent = send_self();
    report::check_eq(
        "the dropped NMI is not taken once a handler is back; a new one is",
        (logged() - before, went_to(sent)),
        (1, "trap-table entry 2"),
    );
}

/// An NMI and an event upcall pending together.
fn before_events() {
    shared::set_upcall_mask(1);
    shared::set_upcall_pending(1);
    shared::set_upcall_mask(0);
    let before = logged();
    let ret = hc::vcpu_send_nmi(0);
    let (first, second) = (entry(before), entry(before + 1));
    report::check_eq(
        "NMI and event pending: result, entries, first, second",
        (
            ret,
            logged() - before,
            first.map(|s| s.handler()),
            second.map(|s| s.handler()),
        ),
        (0, 2, Some("trap-table entry 2"), Some("the event callback")),
    );
    report::check(
        "the upcall came after the NMI's iret, at the same point",
        matches!((first, second), (Some(a), Some(b)) if a.rip == b.rip && b.saved_mask() == 0),
        format_args!("first {first:x?}, second {second:x?}"),
    );
}

/// An NMI left pending in the handler is taken when the handler's
/// `HYPERVISOR_iret` enters user mode.
fn user_mode() {
    let before = logged();
    let first_nmis = nmis(0);
    ACTION.store(ENTER_USER, Ordering::SeqCst);
    let ret = hc::vcpu_send_nmi(0);
    let user = entry(before + 1);
    report::check_eq(
        "the handler's send returns, nothing taken meanwhile",
        (
            IN_HANDLER[0].load(Ordering::SeqCst),
            IN_HANDLER_NMIS[0]
                .load(Ordering::SeqCst)
                .wrapping_sub(first_nmis),
        ),
        (0, 1),
    );
    report::check_eq(
        "its iret to user mode takes the pending NMI: result, entries",
        (ret, logged() - before),
        (0, 2),
    );
    let Some(user) = user else {
        return;
    };
    report::check_eq(
        "that NMI's frame shows user mode, CS",
        (user.in_user_mode(), user.cs & 0xffff),
        (true, u64::from(FLAT_RING3_CS64)),
    );
    report::check(
        "and the user RIP and RSP the iret entered",
        user.rip == traps::user_exit_entry() && user.rsp == traps::user_stack_top(),
        format_args!("rip {:#x} rsp {:#x}", user.rip, user.rsp),
    );
    report::check(
        "it is on the stack_switch stack",
        user.frame == (traps::entry_stack_top() & !15) - FRAME_BYTES,
        format_args!(
            "frame {:#x}, stack top {:#x}",
            user.frame,
            traps::entry_stack_top()
        ),
    );
    report::check_eq(
        "after its iret the user code ran to its exit (vector)",
        USER_EXIT.load(Ordering::SeqCst),
        6,
    );
}

/// What vCPU 1 is asked to do.
static COMMAND: AtomicU8 = AtomicU8::new(IDLE);
const IDLE: u8 = 0;
/// Send an NMI to itself.
const SELF: u8 = 1;
/// Send an NMI to vCPU 0.
const TO_0: u8 = 2;
/// Register its NMI callback with `nmi_op`.
const REGISTER: u8 = 3;
/// Block in `SCHEDOP_block`.
const BLOCK: u8 = 4;
/// Poll [`POLL_PORT`] without a timeout.
const POLL: u8 = 5;
/// Return (the vCPU goes down).
const STOP: u8 = 6;
/// A port nothing sends on, for [`POLL`].
static POLL_PORT: AtomicU32 = AtomicU32::new(0);
/// The result of vCPU 1's last command, and its NMIs during it.
static RESULT: AtomicI64 = AtomicI64::new(0);
static RESULT_NMIS: AtomicU64 = AtomicU64::new(0);

fn worker(vcpu: usize) {
    loop {
        let command = COMMAND.load(Ordering::SeqCst);
        let before = nmis(vcpu);
        let ret = match command {
            SELF => hc::vcpu_send_nmi(vcpu as u64),
            TO_0 => hc::vcpu_send_nmi(0),
            // SAFETY: the shim's NMI callback stub.
            REGISTER => unsafe { hc::nmi_register_callback(stubs().0) },
            BLOCK => {
                let ret = hc::sched_block();
                // Block unmasked events; the worker runs with them masked.
                shared::set_upcall_mask_of(vcpu, 1);
                ret
            }
            POLL => hc::sched_poll(&[POLL_PORT.load(Ordering::SeqCst)], 0),
            STOP => return,
            _ => {
                hc::sched_yield();
                continue;
            }
        };
        RESULT_NMIS.store(nmis(vcpu) - before, Ordering::SeqCst);
        RESULT.store(ret, Ordering::SeqCst);
        COMMAND.store(IDLE, Ordering::SeqCst);
    }
}

/// Has vCPU 1 run `command`: its result and its NMIs during it.
fn on_vcpu1(command: u8) -> Option<(i64, u64)> {
    COMMAND.store(command, Ordering::SeqCst);
    support::yield_until(WAIT, || COMMAND.load(Ordering::SeqCst) == IDLE).then(|| {
        (
            RESULT.load(Ordering::SeqCst),
            RESULT_NMIS.load(Ordering::SeqCst),
        )
    })
}

/// The last logged NMI of vCPU `vcpu`.
fn last_of(vcpu: usize) -> Option<Seen> {
    (0..logged().min(LOG_SIZE))
        .rev()
        .filter_map(entry)
        .find(|s| s.vcpu == vcpu && s.vector != VECTOR_EVENT)
}

/// Has vCPU 1 sleep with `command`, then sends it an NMI, which must wake
/// it: its call returns 0 after it took the NMI.
fn asleep_on_vcpu1(command: u8, call: &str) {
    COMMAND.store(command, Ordering::SeqCst);
    let asleep = support::yield_until(WAIT, || {
        let mut info = VcpuRunstateInfo::default();
        hc::vcpu_get_runstate_info(1, &mut info) == 0 && info.state == RUNSTATE_BLOCKED
    });
    let sent = hc::vcpu_send_nmi(1);
    let woke = support::yield_until(WAIT, || COMMAND.load(Ordering::SeqCst) == IDLE);
    report::check_eq(
        format_args!(
            "vCPU 1 asleep in {call}, an NMI wakes it: asleep, send, its call's result and NMIs"
        ),
        (
            asleep,
            sent,
            woke.then(|| {
                (
                    RESULT.load(Ordering::SeqCst),
                    RESULT_NMIS.load(Ordering::SeqCst),
                )
            }),
        ),
        (true, 0, Some((0, 1))),
    );
}

/// `vcpu_nmi`: NMIs between two vCPUs.
pub fn vcpus(_start_info: &'static StartInfo) {
    if !set_up(false) {
        return;
    }
    report::check_ret(
        "send_nmi to vCPU 2 is ENOENT",
        hc::vcpu_send_nmi(2),
        Errno::ENOENT.neg(),
    );
    report::check_ret(
        "send_nmi to vCPU 1, never initialised",
        hc::vcpu_send_nmi(1),
        0,
    );
    if !support::start_vcpu(1, worker) {
        return;
    }
    let taken = support::yield_until(WAIT, || nmis(1) == 1);
    let first = last_of(1);
    report::check_eq(
        "vCPU 1 takes it, in its trap-table entry 2",
        (taken, first.map(|s| s.handler())),
        (true, Some("trap-table entry 2")),
    );
    report::check(
        "at its first instruction",
        first.is_some_and(|s| s.rip == smp::entry_address() && smp::stack_top(1) == Some(s.rsp)),
        format_args!("{first:x?}"),
    );

    report::check_ret("send_nmi from vCPU 0 to vCPU 1", hc::vcpu_send_nmi(1), 0);
    let taken = support::yield_until(WAIT, || nmis(1) == 2);
    report::check_eq(
        "vCPU 1 takes it when it runs; vCPU 0 takes none",
        (taken, nmis(0)),
        (true, 0),
    );
    report::check_eq(
        "vCPU 1's send to itself: result, NMIs before it returns",
        on_vcpu1(SELF),
        Some((0, 1)),
    );
    report::check_eq(
        "vCPU 1's send to vCPU 0: result, its own NMIs",
        on_vcpu1(TO_0),
        Some((0, 0)),
    );
    let taken = support::yield_until(WAIT, || nmis(0) == 1);
    report::check_eq(
        "vCPU 0 takes it, in its trap-table entry 2",
        (taken, last_of(0).map(|s| s.handler())),
        (true, Some("trap-table entry 2")),
    );

    report::check_eq(
        "vCPU 1 registers its NMI callback with nmi_op: result, NMIs",
        on_vcpu1(REGISTER),
        Some((0, 0)),
    );
    hc::vcpu_send_nmi(1);
    let taken = support::yield_until(WAIT, || nmis(1) == 4);
    report::check_eq(
        "an NMI to vCPU 1 then goes to",
        (taken, last_of(1).map(|s| s.handler())),
        (true, Some("the NMI callback stub")),
    );
    check_goes_to("vCPU 0's NMIs still go to", "trap-table entry 2");
    shared::set_nmi_reason(REASON);
    let reg = on_vcpu1(REGISTER);
    shared::set_nmi_reason(0);
    report::check_eq(
        "vCPU 1 registering with nmi_reason set: result, NMIs",
        reg,
        Some((0, 0)),
    );
    asleep_on_vcpu1(BLOCK, "SCHEDOP_block");
    let mut unbound = EvtchnAllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: DomId::SELF.0,
        port: 0,
    };
    let ret = hc::evtchn_alloc_unbound(&mut unbound);
    report::check_ret("a port for vCPU 1 to poll", ret, 0);
    POLL_PORT.store(unbound.port, Ordering::SeqCst);
    asleep_on_vcpu1(POLL, "SCHEDOP_poll");
    COMMAND.store(STOP, Ordering::SeqCst);
    let stopped = support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0);
    report::check(
        "vCPU 1 finished",
        stopped,
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
    traps::set_hook(None);
}
