//! The QEMU integration tests: one table, one entry per test.
//!
//! Every test boots the hypervisor with one dom0 and judges the run by the
//! QEMU status (mapped through `HostExit`), the guest's result lines and
//! the hypervisor's log (see [`crate::serial_log::evaluate`]). Most tests
//! boot the one test guest, which picks its test from `test=<name>` on its
//! command line; the rejection tests boot broken images made from it.
#![forbid(unsafe_code)]

use hypervisor::exit::HostExit;
use pv_tests::typed_text;

use crate::cli::{BootPath, DEFAULT_HV_ARGS};
use crate::images::BadImage;
use crate::qemu::{HostStep, Keys};
use crate::ramdisk::DomuSet;
use crate::run::{CURL_PAGE, WEB_READY};
use crate::serial_log::Expectation;

/// What the test boots as dom0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dom0 {
    /// The test guest.
    TestGuest,
    /// The benchmark guest (`bench/`), which prints `BENCH` lines and an
    /// XTF-style result.
    BenchGuest,
    /// A broken image made from the test guest.
    Bad(BadImage),
    /// No dom0 module at all.
    Absent,
    /// dom0 with the toolstack (`dom0/`), its ramdisk holding these domUs
    /// and their configurations.
    Toolstack(DomuSet),
}

/// One integration test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntegrationTest {
    /// The test's name (also its log file's name).
    pub name: &'static str,
    /// dom0's image.
    pub dom0: Dom0,
    /// dom0's command line.
    pub dom0_args: &'static str,
    /// The hypervisor's command line.
    pub hv_args: &'static str,
    /// Options both hypervisors get: appended to `hv_args` here and to
    /// [`XEN_ARGS`](crate::xen::XEN_ARGS) on Xen (empty for none). For
    /// what a test needs of the machine that both must agree on, such as
    /// `dom0_max_vcpus=2`; [`IntegrationTest::command_line`] joins them.
    pub hv_extra_args: &'static str,
    /// How the hypervisor is booted.
    pub boot: BootPath,
    /// What the run must show.
    pub expect: Expectation,
    /// Whether the test also runs on Xen 4.17 with `cargo xtask test --xen`
    /// (the checks' names, verdicts, values and counts must then match Xen's,
    /// but for the allow-list `crate::xen::ALLOWED`).
    pub conformance: bool,
    /// What the harness types into COM1 during the run, on both
    /// hypervisors (empty for most tests; see [`Keys`]).
    pub typing: &'static [Keys],
    /// Whether QEMU runs with `-icount` on both hypervisors: the TSC then
    /// counts instructions, so the guest's time does not jump when the
    /// host deschedules QEMU (for tests that compare CPU time).
    pub icount: bool,
    /// The devices the machine gets on both hypervisors (see
    /// [`TestDevices`]).
    pub devices: TestDevices,
    /// CPUs (QEMU's `-smp`) on both hypervisors.
    pub cpus: u32,
    /// Commands the harness runs on the host when their log line appears
    /// (e.g. `curl` through the port forward), each of which must pass,
    /// on both hypervisors (empty for most tests; see [`HostStep`]).
    pub host_steps: &'static [HostStep],
}

/// Which extra devices a test's machine has (`crate::qemu::Devices`):
/// the disk is a fresh image of `pv_tests::disk::SECTORS` zero sectors per
/// run, checked after the run (`crate::disk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestDevices {
    /// A virtio-blk disk, and what it must hold after the run.
    pub disk: Option<DiskCheck>,
    /// A virtio-net NIC on user networking.
    pub nic: bool,
}

/// What a test's disk image must hold after the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskCheck {
    /// Still all zeros: the test only looks at the device.
    Untouched,
    /// The guest's pattern in the ranges it printed, zeros elsewhere.
    Written,
}

/// No extra device.
pub const NO_DEVICES: TestDevices = TestDevices {
    disk: None,
    nic: false,
};

impl IntegrationTest {
    /// The command line of a hypervisor whose own options are `base`:
    /// `base`, then this test's [`hv_extra_args`](Self::hv_extra_args).
    #[must_use]
    pub fn command_line(&self, base: &str) -> String {
        match (base.is_empty(), self.hv_extra_args.is_empty()) {
            (_, true) => base.to_owned(),
            (true, false) => self.hv_extra_args.to_owned(),
            (false, false) => format!("{base} {}", self.hv_extra_args),
        }
    }
}

/// A test-guest test, direct boot, default hypervisor command line.
macro_rules! guest_test {
    ($name:literal, $exit:ident, result_line: $result:literal, checks: $checks:literal, log: $log:expr, conformance: $conf:literal) => {
        IntegrationTest {
            name: $name,
            dom0: Dom0::TestGuest,
            dom0_args: concat!("test=", $name),
            hv_args: DEFAULT_HV_ARGS,
            hv_extra_args: "",
            boot: BootPath::Direct,
            expect: Expectation {
                exit: HostExit::$exit,
                result_line: $result,
                checks: $checks,
                log_lines: $log,
            },
            conformance: $conf,
            typing: &[],
            host_steps: &[],
            icount: false,
            devices: NO_DEVICES,
            cpus: 1,
        }
    };
}

/// A guest test that powers off with `Test result: SUCCESS`.
macro_rules! passes {
    ($name:literal, conformance: $conf:literal) => {
        guest_test!($name, Dom0Poweroff, result_line: true, checks: true, log: &[], conformance: $conf)
    };
}

/// A guest test that reports SUCCESS and then shuts down: the guest must
/// announce the shutdown it asks for (`shutting down: <call>`), and the
/// hypervisor must log that reason. A guest that panicked instead (its
/// panic path also crashes it) fails on its `PANIC:` line and on the
/// missing announcement.
macro_rules! shuts_down {
    ($name:literal, $exit:ident, checks: $checks:literal, $call:literal, $reason:literal) => {
        guest_test!(
            $name,
            $exit,
            result_line: true,
            checks: $checks,
            log: &[
                &[concat!("shutting down: ", $call)],
                &["(HV) dom0 shut down (reason ", $reason],
            ],
            conformance: false
        )
    };
}

/// A guest that touches hypervisor memory and must be crashed by a #PF at `cr2`.
macro_rules! isolation {
    ($name:literal, $cr2:literal) => {
        guest_test!(
            $name,
            Dom0Crash,
            result_line: false,
            checks: false,
            log: &[&["unhandled #PF"], &[concat!("cr2 ", $cr2)]],
            conformance: false
        )
    };
}

/// A dom0 the builder must reject, with `keyword` on the rejection line.
macro_rules! rejected {
    ($name:literal, $dom0:expr, $hv_args:expr, $keyword:literal) => {
        IntegrationTest {
            name: $name,
            dom0: $dom0,
            dom0_args: "test=hello",
            hv_args: $hv_args,
            hv_extra_args: "",
            boot: BootPath::Direct,
            expect: Expectation {
                exit: HostExit::BadDom0Image,
                result_line: false,
                checks: false,
                log_lines: &[&["dom0 image rejected:", $keyword]],
            },
            conformance: false,
            typing: &[],
            host_steps: &[],
            icount: false,
            devices: NO_DEVICES,
            cpus: 1,
        }
    };
}

/// `hello` under the hypervisor command line `hv_args`, which must make
/// the hypervisor log each of `log`.
macro_rules! cmdline_test {
    ($name:literal, $hv_args:literal, $($log:expr),+) => {
        IntegrationTest {
            name: $name,
            dom0: Dom0::TestGuest,
            dom0_args: "test=hello",
            hv_args: $hv_args,
            hv_extra_args: "",
            boot: BootPath::Direct,
            expect: Expectation {
                exit: HostExit::Dom0Poweroff,
                result_line: true,
                checks: true,
                log_lines: &[$($log),+],
            },
            conformance: false,
            typing: &[],
            host_steps: &[],
            icount: false,
            devices: NO_DEVICES,
            cpus: 1,
        }
    };
}

/// A conformance guest test that powers off with `Test result: SUCCESS`
/// and needs `extra` on both hypervisors' command lines.
macro_rules! passes_with {
    ($name:literal, hv_extra_args: $extra:literal) => {
        IntegrationTest {
            hv_extra_args: $extra,
            ..passes!($name, conformance: true)
        }
    };
}

/// A dom0 toolstack test: dom0 builds the domUs of `$set`, serves their
/// consoles (the log must show `$line` from the domU, through dom0's
/// console back end), reaps them and powers off with SUCCESS.
macro_rules! toolstack {
    ($name:expr, $set:expr, $args:literal, $line:literal) => {
        IntegrationTest {
            name: $name,
            dom0: Dom0::Toolstack($set),
            dom0_args: $args,
            hv_args: DEFAULT_HV_ARGS,
            hv_extra_args: "",
            boot: BootPath::Direct,
            expect: Expectation {
                exit: HostExit::Dom0Poweroff,
                result_line: true,
                checks: true,
                log_lines: &[&[$line]],
            },
            conformance: true,
            typing: &[],
            host_steps: &[],
            icount: false,
            devices: NO_DEVICES,
            cpus: 1,
        }
    };
}

/// A toolstack test of issue 17: the domUs of `set` on two CPUs, dom0
/// waiting for each to power off, and the lines `log_lines` in the log.
const fn smp_domu_test(
    name: &'static str,
    set: DomuSet,
    log_lines: &'static [&'static [&'static str]],
) -> IntegrationTest {
    let base = toolstack!(name, set, "expect=poweroff", "");
    IntegrationTest {
        cpus: 2,
        expect: Expectation {
            log_lines,
            ..base.expect
        },
        ..base
    }
}

/// A dom0 test guest that drives the machine's devices with the
/// `drivers` crate (`tests/src/cases/virtio.rs`).
macro_rules! device_test {
    ($name:literal, disk: $disk:expr, nic: $nic:literal) => {
        IntegrationTest {
            devices: TestDevices {
                disk: $disk,
                nic: $nic,
            },
            ..passes!($name, conformance: true)
        }
    };
}

/// A virtio disk the guests write, checked afterwards.
const DISK_WRITTEN: TestDevices = TestDevices {
    disk: Some(DiskCheck::Written),
    nic: false,
};

/// Tests written against Xen 4.17 before this hypervisor implements what
/// they check (issues 3 and 4: memory and CPU virtualization; issue 11:
/// several vCPUs in dom0; issue 12: event channels, timers, console
/// input). They are left out of the default run; `cargo xtask test
/// --pending` runs them after `TESTS`, and with `--xen` also on Xen, where
/// every one must already pass. When the hypervisor catches up with one,
/// its entry moves from here to `TESTS`. None is pending now (dom0's
/// virtio driver tests moved once the hypervisor gave dom0 its ports,
/// `DOMID_IO` mappings and PIRQs).
pub const PENDING: &[IntegrationTest] = &[];

/// What the `console_input` tests are typed: each burst of the test
/// guest's
/// [`typed_text::BURSTS`] after its prompt (the guest checks what it
/// reads against the same bursts).
const CONSOLE_INPUT_TYPING: &[Keys] = &[
    Keys {
        after: typed_text::BURSTS[0].prompt,
        bytes: typed_text::BURSTS[0].bytes,
    },
    Keys {
        after: typed_text::BURSTS[1].prompt,
        bytes: typed_text::BURSTS[1].bytes,
    },
];

/// What `dom0_shell_interactive` types at dom0's prompt once the demo
/// domU is gone (so that `list` shows the same on both hypervisors): a
/// command with a typo corrected by Backspace, an unknown command, then
/// `quit`.
const SHELL_TYPING: &[Keys] = &[
    Keys {
        after: "(demo) destroyed (poweroff)",
        bytes: b"lisx\x7ft\r",
    },
    Keys {
        after: "dom0> ",
        bytes: b"frobnicate\r",
    },
    Keys {
        after: "dom0> ",
        bytes: b"quit\r",
    },
];

/// What `dom0_web_curl` does on the host: fetch the web domU's page
/// through the port forward once it serves, again once it has logged the
/// first answer (the count of requests must have moved on), once more
/// past five silent connections, then list its vif in dom0's shell and
/// quit.
const WEB_STEPS: &[HostStep] = &[
    HostStep {
        after: WEB_READY,
        command: CURL_PAGE,
        expect: &[
            "oxen: a web page served by a PV domU",
            "domain id: 1",
            "name: web",
            "requests served: 1",
            "1 web (this domain",
            "0 back end of vif 0 and the console",
        ],
        then_type: b"",
    },
    HostStep {
        after: "\"GET / HTTP/1.1\" from 10.0.2.2 -> 200",
        command: CURL_PAGE,
        expect: &["requests served: 2"],
        then_type: b"",
    },
    // Five clients that connect and send nothing (more than the server's
    // four connections), then a real request: it must be answered once
    // the silent ones are aborted (10 s), so they cannot wedge the server.
    HostStep {
        after: "\"GET / HTTP/1.1\" from 10.0.2.2 -> 200",
        command: &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do sleep 15 | curl --silent --max-time 15 telnet://127.0.0.1:{port} & done; \
             sleep 2; \
             curl --silent --show-error --max-time 30 --retry 25 --retry-delay 1 \
             --retry-all-errors http://127.0.0.1:{port}/; wait",
        ],
        expect: &["requests served: 3"],
        then_type: b"network-list web\rquit\r",
    },
];

/// What `dom0_console_attach` types: `console typist` at dom0's prompt,
/// a line for the domU once attached, Ctrl-] once dom0 has reported it,
/// `console typist` again and `bye` (the domU powers off, which detaches),
/// then `quit`. Each waits for what it answers, so no report line of
/// dom0's lands after a prompt.
const CONSOLE_ATTACH_TYPING: &[Keys] = &[
    Keys {
        after: "dom0> ",
        bytes: b"console typist\r",
    },
    Keys {
        after: "(Ctrl-] returns to the shell)",
        bytes: b"hello domU\r",
    },
    Keys {
        after: "ok: typist console input = \"hello domU\"",
        bytes: b"\x1d",
    },
    Keys {
        after: "(Ctrl-])",
        bytes: b"console typist\r",
    },
    Keys {
        after: "(Ctrl-] returns to the shell)",
        bytes: b"bye\r",
    },
    Keys {
        after: "(is gone)",
        bytes: b"quit\r",
    },
];

/// Every integration test, in the order they run.
pub const TESTS: &[IntegrationTest] = &[
    toolstack!(
        "dom0_domu_lifecycle",
        DomuSet::Demo,
        "expect=poweroff",
        "(d1) domu-demo: hello"
    ),
    IntegrationTest {
        typing: SHELL_TYPING,
        ..toolstack!(
            "dom0_shell_interactive",
            DomuSet::Demo,
            "shell expect=poweroff",
            "unknown command (try help)"
        )
    },
    toolstack!(
        "dom0_domu_crash",
        DomuSet::Crash,
        "expect=crash",
        "(d1) domu-demo: shutting down: crash"
    ),
    toolstack!(
        "dom0_domu_xenstore",
        DomuSet::Xenstore,
        "expect=poweroff",
        "(d1) check: xs read name = \"xsdemo\""
    ),
    toolstack!(
        "dom0_xenstore_shell",
        DomuSet::XenstoreShell,
        "script=xenstore.xl expect=poweroff",
        "xl> xenstore-ls /local/domain"
    ),
    toolstack!(
        "dom0_domu_grant",
        DomuSet::Grant,
        "expect=poweroff",
        "(d1) domu-demo: shutting down: poweroff"
    ),
    IntegrationTest {
        expect: Expectation {
            log_lines: &[
                &["(d1) check: domctl getdomaininfo of dom0 = -1"],
                &["(d1) check: set_iopl 1 = 0"],
                &["(d1) check: map_pirq of GSI 8 = -1"],
                &["(d1) check: unmap_pirq 8 = -1"],
                &["(d1) check: bind_pirq 8 = -1"],
                &["(d1) check: setup_gsi 8 = -1"],
                &["(d1) check: irq_status_query 8 = 0"],
                &["(d1) check: irq_status_query 1000 = -22"],
                &["(d1) check: mmu_update of the local APIC with DOMID_IO = -1"],
                &["(d1) check: inb 0x81 = 0xff"],
                &["(d1) check: inb 0x71 = 0xff"],
                &["(d1) check: inl 0xcfc = 0xffffffff"],
                &["(d1) check: exchange of frame 0 = -22 0"],
                &[
                    "(d1) check: exchange of the last frame below maximum_ram_page not its own = -22 0",
                ],
                &["(d1) check: exchange of the frame at maximum_ram_page = -22 0"],
                &["(d1) check: exchange of its own frame with frame 0 in one chunk = -22 0"],
                &["(d1) check: exchange of its own frame given back afterwards = 1 0"],
            ],
            ..toolstack!("dom0_domu_privilege", DomuSet::Probe, "expect=poweroff", "").expect
        },
        ..toolstack!("dom0_domu_privilege", DomuSet::Probe, "expect=poweroff", "")
    },
    toolstack!(
        "dom0_net_ping_tcp",
        DomuSet::Net,
        "expect=poweroff",
        "(d2) check: tcp echo = \"echo: hello from 10.0.0.2\" from 10.0.0.1"
    ),
    toolstack!(
        "dom0_net_hostile",
        DomuSet::NetHostile,
        "expect=poweroff",
        "(d2) check: back end state after a slot past its page = Closing"
    ),
    toolstack!(
        "dom0_shell_script",
        DomuSet::Shell,
        "script=shell.xl expect=poweroff",
        "(d1) domu-demo: hello"
    ),
    toolstack!(
        "dom0_blk_rw",
        DomuSet::Blk,
        "expect=poweroff",
        "(d1) check: blk flush = ok"
    ),
    toolstack!(
        "dom0_blk_two",
        DomuSet::BlkTwo,
        "expect=poweroff",
        "(d2) check: blk flush = ok"
    ),
    toolstack!(
        "dom0_blk_hostile",
        DomuSet::BlkHostile,
        "expect=poweroff",
        "(d2) check: blk flush = ok"
    ),
    // Issue 13: weighted shares of eight domUs, 100 tiny domUs created
    // and destroyed (both under -icount: instruction-counted time), the
    // shell's console attach, and a domU woken at once by dom0's event.
    IntegrationTest {
        icount: true,
        ..toolstack!(
            "dom0_sched_fairness",
            DomuSet::Fairness,
            "script=share.xl timeout=120",
            "xl> cpu-share"
        )
    },
    // Issue 17: two domUs' vCPUs run at once on two CPUs (their CPU time
    // adds up to nearly twice the wall time); two running domUs are
    // paused, unpaused and destroyed.
    IntegrationTest {
        cpus: 2,
        ..toolstack!(
            "smp_domus_parallel",
            DomuSet::Parallel,
            "script=par.xl timeout=120",
            "xl> cpu-share"
        )
    },
    // Issue 17: two domUs on two CPUs copy from each other's grant at
    // once; every copy must succeed (the one needing the lower id's
    // domain while the other holds it is continued, not refused).
    smp_domu_test(
        "smp_grant_copy_cross",
        DomuSet::CrossCopy,
        &[
            &["(d1) check: failed copies from the peer = 0 None"],
            &["(d2) check: failed copies from the peer = 0 None"],
        ],
    ),
    // Issue 17: a copy between two other domains' grants (domain 2 from
    // domain 1's into domain 3's) while domain 1 copies from domain 2's
    // on the other CPU: both sides are held from the start, so none
    // fails and none leaves a grant pinned.
    smp_domu_test(
        "smp_grant_copy_three",
        DomuSet::CopyThree,
        &[
            &["(d1) check: failed copies from the peer = 0 None"],
            &["(d2) check: failed copies from the peer = 0 None"],
            &["(d2) check: done mark into domain 3 = 0/0"],
            &["(d3) check: copied into the held page = true true"],
            &["(d1) check: own grant in use after the peer's copies = false"],
            &["(d3) check: own grant in use after the peer's copies = false"],
        ],
    ),
    IntegrationTest {
        hv_extra_args: "max_domains=128",
        icount: true,
        ..toolstack!(
            "dom0_scale",
            DomuSet::Scale,
            "script=scale.xl",
            "xl> scale tiny.cfg 100"
        )
    },
    IntegrationTest {
        typing: CONSOLE_ATTACH_TYPING,
        expect: Expectation {
            log_lines: &[
                &["ok: typist console input = \"hello domU\""],
                &["dom0: detached from the console of domain 1 (Ctrl-])"],
                &["ok: typist console input = \"bye\""],
                &["dom0: detached from the console of domain 1 (is gone)"],
            ],
            ..toolstack!("dom0_console_attach", DomuSet::Typist, "shell", "").expect
        },
        ..toolstack!(
            "dom0_console_attach",
            DomuSet::Typist,
            "shell expect=poweroff",
            ""
        )
    },
    // The hypercall fuzzer as an unprivileged domU: what a hostile domU
    // can try. dom0 checks its result line; the teardown line counts every
    // frame back after its destroy. On Xen 4.17 too: the same calls must
    // leave Xen and the fuzzer standing.
    toolstack!(
        "dom0_fuzz_domu",
        DomuSet::Fuzz,
        "expect=poweroff",
        "(d1) fuzz summary: seed 0x1, 20000 calls in"
    ),
    IntegrationTest {
        icount: true,
        ..toolstack!(
            "dom0_evtchn_wake",
            DomuSet::Pong,
            "expect=poweroff",
            "(d1) check: rounds answered = 200 of 200"
        )
    },
    passes!("hello", conformance: true),
    passes!("xen_version", conformance: true),
    passes!("console_io", conformance: true),
    IntegrationTest {
        typing: CONSOLE_INPUT_TYPING,
        ..passes!("console_input", conformance: true)
    },
    // The same bursts with COM1's interrupt off (IRQ 0), on both
    // hypervisors: reads alone must find every byte.
    IntegrationTest {
        typing: CONSOLE_INPUT_TYPING,
        expect: Expectation {
            log_lines: &[&["(HV) com1: no receive interrupt (irq 0)"]],
            ..passes!("console_input_polled", conformance: true).expect
        },
        ..passes_with!("console_input_polled", hv_extra_args: "com1=115200,8n1,0x3f8,0")
    },
    // The first burst while a domain dom0 started spins on the CPU.
    IntegrationTest {
        typing: CONSOLE_INPUT_TYPING.split_at(1).0,
        ..passes!("console_input_domu", conformance: true)
    },
    passes!("unknown_hypercall", conformance: true),
    passes!("hypercall_registers", conformance: true),
    passes!("domctl_iomem_permission", conformance: true),
    passes!("domctl_getpageframeinfo3", conformance: true),
    guest_test!(
        "domctl_domains",
        Dom0Poweroff,
        result_line: true,
        checks: true,
        log: &[
            &["d5 destroyed: 1 frames released, 0 still referenced"],
            &["d3 destroyed: 65 frames released, 0 still referenced"],
            &["d4 shut down (reason 1)"],
            &["d4 destroyed: 7 frames released, 0 still referenced"],
        ],
        conformance: true
    ),
    passes!("sched_op", conformance: true),
    // Eight domains sharing the CPU by weight: under `-icount`, so that
    // the host's load cannot skew the CPU time each one is charged.
    IntegrationTest {
        icount: true,
        ..passes!("sched_weights", conformance: true)
    },
    passes!("isolation_read_m2p", conformance: true),
    passes!("hypercall_page", conformance: true),
    passes!("cpu_exceptions_iret", conformance: true),
    passes!("cpu_exceptions_iretq", conformance: true),
    passes!("mm_mmu_update", conformance: true),
    passes!("mm_update_va_mapping", conformance: true),
    passes!("mm_cache_attributes", conformance: true),
    passes!("gnttab_self", conformance: true),
    passes!("mm_mmuext_pin", conformance: true),
    passes!("mm_mmuext_baseptr", conformance: true),
    passes!("mm_mmuext_misc", conformance: true),
    passes!("mm_multicall", conformance: true),
    passes!("mm_uvm_otherdomain", conformance: true),
    passes!("mm_vm_assist", conformance: true),
    passes!("mm_reservation", conformance: true),
    passes_with!("mm_balloon_ceiling", hv_extra_args: "dom0_mem=max:65M"),
    passes!("cpu_priv_kernel", conformance: true),
    passes!("cpu_priv_user", conformance: true),
    passes!("cpu_trap_table", conformance: true),
    passes!("cpu_fpu", conformance: true),
    passes!("cpu_segments", conformance: true),
    passes!("cpu_alignment_check", conformance: true),
    passes!("cpu_compat_callbacks", conformance: true),
    passes!("mm_multicall_iret", conformance: true),
    passes!("mm_memory_op", conformance: true),
    passes!("mm_exchange", conformance: true),
    passes!("cpu_user_syscall", conformance: true),
    passes!("cpu_callbacks", conformance: true),
    passes!("mm_pt_validation", conformance: true),
    passes!("cpu_user_mode", conformance: true),
    passes!("mm_writable_pt", conformance: true),
    passes!("cpu_descriptors", conformance: true),
    passes!("cpu_debugreg", conformance: true),
    passes!("cpu_ldt", conformance: true),
    passes_with!("vcpu_op_errors", hv_extra_args: "dom0_max_vcpus=3"),
    passes_with!("vcpu_runstate_area", hv_extra_args: "dom0_max_vcpus=2"),
    passes!("cpu_cpuid_policy", conformance: true),
    passes!("cpu_msr_policy", conformance: true),
    passes!("cpu_iretq_rpl0", conformance: false),
    passes_with!("vcpu_register_vcpu_info", hv_extra_args: "dom0_max_vcpus=2"),
    passes_with!("vcpu_switch", hv_extra_args: "dom0_max_vcpus=2"),
    passes_with!("vcpu_switch4", hv_extra_args: "dom0_max_vcpus=4"),
    passes_with!("cpu_fsgsbase", hv_extra_args: "dom0_max_vcpus=2"),
    passes_with!("vcpu_up_down", hv_extra_args: "dom0_max_vcpus=3"),
    passes!("evtchn_ports", conformance: true),
    passes!("evtchn_loopback", conformance: true),
    passes_with!("evtchn_vcpus", hv_extra_args: "dom0_max_vcpus=2"),
    passes_with!("evtchn_poll_wake", hv_extra_args: "dom0_max_vcpus=2"),
    passes_with!("timer_ops", hv_extra_args: "dom0_max_vcpus=2"),
    passes!("timer_user_mode", conformance: true),
    passes_with!("time_monotonic", hv_extra_args: "dom0_max_vcpus=2"),
    passes!("sched_block_poll", conformance: true),
    passes!("sched_watchdog", conformance: true),
    shuts_down!("sched_watchdog_expiry", Dom0Watchdog, checks: true, "watchdog expiry while blocked", "4: watchdog"),
    shuts_down!("sched_remote_shutdown", Dom0Poweroff, checks: true, "SCHEDOP_remote_shutdown(0, poweroff)", "0: poweroff"),
    passes!("cpu_nmi_callbacks", conformance: true),
    passes!("cpu_nmi", conformance: true),
    passes_with!("vcpu_nmi", hv_extra_args: "dom0_max_vcpus=2"),
    passes!("time_wallclock", conformance: true),
    passes!("hostile_selectors_kernel", conformance: false),
    passes!("hostile_selectors_user", conformance: false),
    passes!("hostile_rip", conformance: false),
    passes!("hostile_ldt_refault", conformance: false),
    passes!("hostile_debugreg", conformance: true),
    passes!("hostile_machphys_io", conformance: false),
    passes!("hostile_hypervisor_mmio", conformance: false),
    passes!("io_ports", conformance: true),
    passes!("pirq", conformance: true),
    passes!("io_mmcfg_write", conformance: true),
    passes!("io_pci_add", conformance: true),
    // Two CPUs, so that a second one is described too.
    IntegrationTest {
        cpus: 2,
        ..passes!("platform_cpuinfo", conformance: true)
    },
    passes!("mm_writable_pt_rmw", conformance: true),
    passes!("mm_writable_pt_forms", conformance: true),
    // Two CPUs, so that a second one is described too.
    IntegrationTest {
        cpus: 2,
        ..passes!("mca", conformance: true)
    },
    passes!("io_pci_remove", conformance: true),
    passes!("io_pit", conformance: true),
    // A short run of `cargo xtask fuzz-guest`: the fuzzer's defaults,
    // 20000 random hypercalls with seed 1 (about two seconds under TCG), on
    // two vCPUs as there.
    IntegrationTest {
        hv_extra_args: crate::fuzz::HV_EXTRA_ARGS,
        ..guest_test!(
            "fuzz",
            Dom0Poweroff,
            result_line: true,
            checks: true,
            log: &[&["fuzz summary: seed 0x1, 20000 calls in", "calls/s"]],
            conformance: false
        )
    },
    shuts_down!("shutdown_poweroff", Dom0Poweroff, checks: false, "SCHEDOP_shutdown(poweroff)", "0: poweroff"),
    shuts_down!("shutdown_compat", Dom0Poweroff, checks: false, "sched_op_compat(SCHEDOP_shutdown, poweroff)", "0: poweroff"),
    shuts_down!("shutdown_reboot", Dom0Reboot, checks: false, "SCHEDOP_shutdown(reboot)", "1: reboot"),
    shuts_down!("shutdown_suspend", Dom0Suspend, checks: false, "SCHEDOP_shutdown(suspend)", "2: suspend"),
    shuts_down!("shutdown_crash", Dom0Crash, checks: false, "SCHEDOP_shutdown(crash)", "3: crash"),
    shuts_down!("shutdown_watchdog", Dom0Watchdog, checks: false, "SCHEDOP_shutdown(watchdog)", "4: watchdog"),
    shuts_down!("shutdown_soft_reset", Dom0SoftReset, checks: false, "SCHEDOP_shutdown(soft_reset)", "5: soft_reset"),
    shuts_down!("shutdown_code", Dom0Reboot, checks: true, "SCHEDOP_shutdown(poweroff) after shutdown_code(reboot)", "1: reboot"),
    isolation!("isolation_read_hv_text", "0xffff82d080000000"),
    isolation!("isolation_read_directmap", "0xffff830000000000"),
    isolation!("isolation_read_slot271", "0xffff87fffffff000"),
    isolation!("isolation_write_m2p", "0xffff800000000000"),
    isolation!("isolation_write_trampoline", "0xffff808000000000"),
    guest_test!(
        "hostile_unresumable",
        Dom0Crash,
        result_line: false,
        checks: false,
        log: &[&["unhandled #NP (segment not present) (vector 11, error 0x8)", "cs 0x9"]],
        conformance: false
    ),
    guest_test!(
        "return_from_entry",
        Dom0Crash,
        result_line: false,
        checks: false,
        log: &[&["unhandled #PF"]],
        conformance: false
    ),
    rejected!(
        "bad_image_not_elf",
        Dom0::Bad(BadImage::NotElf),
        DEFAULT_HV_ARGS,
        "not an ELF"
    ),
    rejected!(
        "bad_image_elf32",
        Dom0::Bad(BadImage::Elf32),
        DEFAULT_HV_ARGS,
        "64-bit"
    ),
    rejected!(
        "bad_image_no_notes",
        Dom0::Bad(BadImage::NoXenNotes),
        DEFAULT_HV_ARGS,
        "no Xen ELF notes"
    ),
    rejected!(
        "bad_image_loader",
        Dom0::Bad(BadImage::Loader),
        DEFAULT_HV_ARGS,
        "LOADER"
    ),
    rejected!(
        "bad_image_xen_version",
        Dom0::Bad(BadImage::XenVersion),
        DEFAULT_HV_ARGS,
        "XEN_VERSION"
    ),
    rejected!(
        "bad_image_no_dom0_feature",
        Dom0::Bad(BadImage::NoDom0Feature),
        DEFAULT_HV_ARGS,
        "dom0"
    ),
    rejected!(
        "bad_image_entry",
        Dom0::Bad(BadImage::Entry),
        DEFAULT_HV_ARGS,
        "entry"
    ),
    rejected!(
        "bad_image_too_big",
        Dom0::TestGuest,
        "console=com1 com1=115200,8n1 dom0_mem=2M loglvl=info",
        "dom0_mem"
    ),
    rejected!(
        "no_dom0_module",
        Dom0::Absent,
        DEFAULT_HV_ARGS,
        "no dom0 kernel"
    ),
    cmdline_test!(
        "cmdline_warnings",
        "console=com1 com1=115200,8n1 dom0_mem=64M loglvl=info bogus_option=1 loglvl=loud",
        &["unknown option 'bogus_option'"],
        &["loglvl: malformed value 'loud'"]
    ),
    // `com1=` is honoured: other line settings keep the console working,
    // the IRQ it names is the one routed, and an I/O base with no UART
    // leaves the console where it was, with a warning.
    cmdline_test!(
        "cmdline_com1",
        "console=com1 com1=38400,7e2,0x3f8,3 dom0_mem=64M loglvl=info",
        &["com1: receive interrupt on ISA IRQ 3 (GSI 3, edge, active high)"]
    ),
    cmdline_test!(
        "cmdline_com1_no_uart",
        "console=com1 com1=115200,8n1,0x2f8 dom0_mem=64M loglvl=info",
        &["com1: no UART answers at 0x2f8; the console stays at 0x3f8"]
    ),
    IntegrationTest {
        name: "grub_hello",
        boot: BootPath::Grub,
        ..passes!("hello", conformance: false)
    },
    // Every CPU the MADT lists is started on its own tables and idles
    // with interrupts on, and takes an event-check IPI and answers a
    // flush IPI from the boot CPU; dom0 still runs on the boot CPU.
    IntegrationTest {
        name: "smp_start_cpus",
        dom0_args: "test=hello",
        cpus: 4,
        expect: Expectation {
            log_lines: &[
                &["SMP: CPU 1 (APIC id 1) up"],
                &["SMP: CPU 3 (APIC id 3) up, its timer fires"],
                &["SMP: 4 of 4 CPUs up"],
                &["SMP: 3 of 3 started CPUs answer event-check IPIs"],
                &["SMP: 3 of 3 started CPUs answer flush IPIs"],
            ],
            ..passes!("hello", conformance: false).expect
        },
        ..passes!("hello", conformance: false)
    },
    // dom0's default vCPU count is the online CPU count, as on Xen.
    IntegrationTest {
        cpus: 4,
        ..passes!("smp_dom0_vcpus", conformance: true)
    },
    // Issue 17: two vCPUs of one domain on shared page tables: concurrent
    // `mmu_update` batches on one L1 table, and flushes of the other vCPU
    // (every `UVMF`/`MMUEXT` way) after which it must not read through
    // the old mapping.
    IntegrationTest {
        cpus: 2,
        ..passes_with!("smp_mmu_update_shared", hv_extra_args: "dom0_max_vcpus=2")
    },
    IntegrationTest {
        cpus: 2,
        ..passes_with!("smp_remote_flush", hv_extra_args: "dom0_max_vcpus=2")
    },
    // The same two tests in two domUs with two vCPUs each, on two CPUs:
    // here a domU's vCPUs run in turn, on whichever CPU holds it, and its
    // flushes reach the CPUs it ran on before.
    smp_domu_test(
        "smp_shared_tables_domu",
        DomuSet::SharedTables,
        &[
            &["(d1) ok: reads after a flip that found the old frame"],
            &["(d2) ok: entries of the final table not as the last round left them = 0"],
        ],
    ),
    // The benchmark guest with tiny counts, so it cannot rot: every
    // benchmark runs (or says `unsupported`), its checks pass, and the
    // null hypercall is measured. `cargo xtask bench` does the real runs.
    IntegrationTest {
        name: "bench_guest_smoke",
        dom0: Dom0::BenchGuest,
        dom0_args: "iters=4 warmup=1",
        hv_args: DEFAULT_HV_ARGS,
        hv_extra_args: "",
        boot: BootPath::Direct,
        expect: Expectation {
            exit: HostExit::Dom0Poweroff,
            result_line: true,
            checks: true,
            log_lines: &[&["BENCH null_hypercall tsc/call mean="]],
        },
        conformance: false,
        typing: &[],
        host_steps: &[],
        icount: false,
        devices: NO_DEVICES,
        cpus: 1,
    },
    // dom0's PCI and virtio drivers on QEMU's virtio-blk and virtio-net.
    device_test!("virtio_blk", disk: Some(DiskCheck::Written), nic: false),
    device_test!("virtio_net", disk: None, nic: true),
    // domUs on dom0's virtio disk through blkback (`phy:` disks); the
    // host checks the image afterwards.
    IntegrationTest {
        devices: DISK_WRITTEN,
        ..toolstack!(
            "dom0_disk_rw",
            DomuSet::PhyDisk,
            "expect=poweroff",
            "(d1) disk: xvda: wrote, read back and verified 8 of 8 ranges"
        )
    },
    IntegrationTest {
        devices: DISK_WRITTEN,
        ..toolstack!(
            "dom0_disk_two",
            DomuSet::PhyDiskTwo,
            "expect=poweroff",
            "(d2) disk: xvda: wrote, read back and verified 6 of 6 ranges"
        )
    },
    IntegrationTest {
        devices: DISK_WRITTEN,
        ..toolstack!(
            "dom0_disk_hotplug",
            DomuSet::PhyDiskHotplug,
            "script=hotplug.xl expect=poweroff",
            "(d1) disk: xvdb: wrote, read back and verified 3 of 3 ranges"
        )
    },
    // The block benchmarks' boot (`cargo xtask bench`, `blk_read_*`)
    // under -icount, where the drivers' waits once timed out: dom0 reads
    // the disk three times, then the disk domU through blkback. Every
    // idle wait jumps the clock to QEMU's next timer, so the run takes
    // hundreds of seconds of system time (dom0's `timeout`).
    IntegrationTest {
        icount: true,
        devices: TestDevices {
            disk: Some(DiskCheck::Untouched),
            nic: false,
        },
        ..toolstack!(
            "dom0_disk_readbench",
            DomuSet::BlkBench,
            "readbench expect=poweroff timeout=100000",
            "(d1) check: readbench MiB read = 192"
        )
    },
    // The network benchmarks' boot (`cargo xtask bench`, `net_recv_*`)
    // under -icount: the host sends three 8 MiB streams to dom0's own
    // smoltcp on the NIC, then three to the web domU through the bridge;
    // both count every byte (a short stream is never timed).
    IntegrationTest {
        icount: true,
        devices: TestDevices {
            disk: None,
            nic: true,
        },
        host_steps: crate::bench::NET_STREAMS,
        expect: Expectation {
            log_lines: &[
                &["ok: netbench MiB received by dom0 = 24"],
                &["BENCH net_recv_dom0 "],
                &["(d1) check: web gateway ping = 10.0.2.2 answered"],
                &["BENCH net_recv_domu "],
            ],
            ..toolstack!(
                "dom0_net_recvbench",
                DomuSet::NetBench,
                "nic netbench expect=poweroff timeout=100000",
                ""
            )
            .expect
        },
        ..toolstack!(
            "dom0_net_recvbench",
            DomuSet::NetBench,
            "nic netbench expect=poweroff timeout=100000",
            ""
        )
    },
    IntegrationTest {
        devices: TestDevices {
            disk: Some(DiskCheck::Untouched),
            nic: true,
        },
        ..toolstack!(
            "dom0_pci_list",
            DomuSet::Devices,
            "script=devices.xl expect=poweroff",
            "virtio-net"
        )
    },
    // The host fetches the web domU's page with curl through QEMU's port
    // forward, dom0's uplink (virtio-net) and bridge, and the domU's vif;
    // the domU first pings QEMU's gateway through the same path.
    IntegrationTest {
        devices: TestDevices {
            disk: None,
            nic: true,
        },
        host_steps: WEB_STEPS,
        expect: Expectation {
            log_lines: &[
                &["(d1) check: web gateway ping = 10.0.2.2 answered"],
                &[WEB_READY],
                &["web: a connection idle for 10 s was aborted"],
                &["ok: [1] network-list vifs = 1"],
            ],
            ..toolstack!("dom0_web_curl", DomuSet::Web, "nic shell", "").expect
        },
        ..toolstack!("dom0_web_curl", DomuSet::Web, "nic shell", "")
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_file_safe() {
        for (i, test) in TESTS.iter().enumerate() {
            assert!(
                test.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                test.name
            );
            assert!(
                TESTS[..i].iter().all(|t| t.name != test.name),
                "{} twice",
                test.name
            );
        }
    }

    #[test]
    fn guest_tests_name_themselves_on_the_command_line() {
        for test in TESTS.iter().filter(|t| t.dom0 == Dom0::TestGuest) {
            let picked = test.dom0_args.strip_prefix("test=").unwrap();
            assert!(picked == test.name || picked == "hello", "{}", test.name);
        }
    }

    #[test]
    fn conformance_tests_power_off_with_success_on_the_default_setup() {
        let conformance: Vec<&str> = TESTS
            .iter()
            .filter(|t| t.conformance)
            .map(|t| t.name)
            .collect();
        for name in [
            "hello",
            "xen_version",
            "console_io",
            "unknown_hypercall",
            "sched_op",
            "isolation_read_m2p",
            "hypercall_page",
        ] {
            assert!(conformance.contains(&name), "{name} is a conformance test");
        }
        for test in TESTS.iter().filter(|t| t.conformance) {
            assert_eq!(test.expect.exit, HostExit::Dom0Poweroff);
            assert!(test.expect.result_line);
            assert!(
                matches!(test.dom0, Dom0::TestGuest | Dom0::Toolstack(_)),
                "{}",
                test.name
            );
            assert_eq!(
                (test.hv_args, test.boot),
                (DEFAULT_HV_ARGS, BootPath::Direct)
            );
        }
    }

    #[test]
    fn pending_tests_are_conformance_guests_named_once() {
        for (i, test) in PENDING.iter().enumerate() {
            assert!(
                TESTS
                    .iter()
                    .chain(&PENDING[..i])
                    .all(|t| t.name != test.name),
                "{} twice",
                test.name
            );
            assert!(test.conformance, "{} must also run on Xen", test.name);
            assert_eq!(test.expect.exit, HostExit::Dom0Poweroff, "{}", test.name);
            if let Dom0::Toolstack(_) = test.dom0 {
                assert!(test.name.starts_with("dom0_"), "{}", test.name);
                continue;
            }
            assert_eq!(test.dom0, Dom0::TestGuest, "{}", test.name);
            assert_eq!(test.dom0_args.strip_prefix("test="), Some(test.name));
            assert!(
                ["mm_", "cpu_", "vcpu_", "evtchn_", "console_", "virtio_"]
                    .iter()
                    .any(|prefix| test.name.starts_with(prefix)),
                "{}",
                test.name
            );
        }
    }

    #[test]
    fn extra_options_follow_each_hypervisors_own() {
        let vcpus = TESTS.iter().find(|t| t.name == "vcpu_switch").unwrap();
        assert_eq!(
            vcpus.command_line("console=com1"),
            "console=com1 dom0_max_vcpus=2"
        );
        assert_eq!(vcpus.command_line(""), "dom0_max_vcpus=2");
        let hello = TESTS.iter().find(|t| t.name == "hello").unwrap();
        assert_eq!(hello.command_line(DEFAULT_HV_ARGS), DEFAULT_HV_ARGS);
    }

    #[test]
    fn console_input_types_the_guests_bursts_and_no_other_test_types() {
        for test in TESTS.iter().chain(PENDING) {
            if !test.name.starts_with("console_input") {
                // The interactive shell is typed its own commands.
                let typed = match test.name {
                    "dom0_shell_interactive" => SHELL_TYPING.len(),
                    "dom0_console_attach" => CONSOLE_ATTACH_TYPING.len(),
                    _ => 0,
                };
                assert_eq!(test.typing.len(), typed, "{}", test.name);
                continue;
            }
            assert!(test.conformance, "typed on Xen too");
            // The guest's bursts, from the first, each after its prompt.
            assert!(!test.typing.is_empty(), "{}", test.name);
            for (keys, burst) in test.typing.iter().zip(typed_text::BURSTS) {
                assert_eq!((keys.after, keys.bytes), (burst.prompt, burst.bytes));
            }
            assert!(test.typing.len() <= typed_text::BURSTS.len());
        }
    }

    #[test]
    fn rejection_tests_expect_a_bad_image() {
        for test in TESTS
            .iter()
            .filter(|t| t.name.starts_with("bad_image") || t.name == "no_dom0_module")
        {
            assert_eq!(test.expect.exit, HostExit::BadDom0Image, "{}", test.name);
            assert_eq!(test.expect.log_lines[0][0], "dom0 image rejected:");
        }
    }

    #[test]
    fn bench_smoke_runs_the_bench_guest_with_tiny_counts() {
        let smoke = TESTS.iter().find(|t| t.dom0 == Dom0::BenchGuest).unwrap();
        assert_eq!(smoke.name, "bench_guest_smoke");
        let options = pv_bench::options::Options::parse(smoke.dom0_args.as_bytes()).unwrap();
        assert!(options.iters <= 10);
        assert!(!smoke.conformance);
    }

    #[test]
    fn grub_hello_is_hello_through_grub() {
        let grub = TESTS.iter().find(|t| t.name == "grub_hello").unwrap();
        assert_eq!(grub.boot, BootPath::Grub);
        assert_eq!(grub.dom0_args, "test=hello");
        assert_eq!(grub.expect.exit, HostExit::Dom0Poweroff);
    }
}
