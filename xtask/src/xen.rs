//! Conformance against Xen 4.17: the same test guest booted as dom0 on Xen,
//! and its check lines compared with ours by name, verdict, value and
//! count ([`compare`]); each known legitimate difference is one entry of
//! [`ALLOWED`].
//!
//! Xen never ends QEMU by itself: when dom0 powers off it prints "Hardware
//! Dom0 halted" and spins. The harness watches the serial log for that (or
//! for dom0 crashing or shutting down, or Xen panicking) and stops QEMU.
//! [`judge`] then accepts only the poweroff: a conformance guest must end
//! on Xen as it ends here, with one `Test result: SUCCESS`, at least one
//! `ok:` check and no guest panic.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::packages;
use crate::serial_log::{self, GuestReport, Verdict};
use crate::status::Outcome;

/// Xen's command line for the conformance runs. `gnttab=max_ver:1`:
/// grant tables v1 only, as this hypervisor offers them (Xen 4.17's
/// default also allows v2), so that both answer `set_version(2)` and a
/// version-2 `createdomain` alike (`docs/grant-tables.md`).
pub const XEN_ARGS: &str = "console=com1 com1=115200,8n1 dom0_mem=64M noreboot loglvl=all \
                            guest_loglvl=all gnttab=max_ver:1";

/// Xen's line when dom0 powered off: the only good end of a run.
pub const DOM0_HALTED: &str = "Hardware Dom0 halted";

/// Xen's line when dom0 crashed.
const DOM0_CRASHED: &str = "Hardware Dom0 crashed";

/// Xen's line after a panic of its own (with `noreboot`).
const XEN_PANICKED: &str = "Manual reset required";

/// Serial-log lines after which Xen will print nothing more of interest.
pub const STOP_MARKERS: &[&str] = &[
    DOM0_HALTED,
    DOM0_CRASHED,
    "Hardware Dom0 shutdown",
    XEN_PANICKED,
];

/// Every reason a conformance run on Xen did not end as it must (dom0
/// powered off after exactly one `Test result: SUCCESS`, with at least
/// one `ok:` check and no guest panic); empty means it did.
pub fn judge(outcome: &Outcome, log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let panicked = log.lines().any(|line| line.contains("Panic on CPU"));
    match outcome {
        _ if panicked => problems.push("Xen panicked".to_owned()),
        Outcome::Stopped(DOM0_HALTED) => {}
        Outcome::Stopped(DOM0_CRASHED) => problems.push("Xen: dom0 crashed".to_owned()),
        Outcome::Stopped(XEN_PANICKED) => problems.push("Xen panicked".to_owned()),
        other => problems.push(format!("Xen run did not end with dom0 halted: {other}")),
    }
    let report = serial_log::parse(log);
    match report.results.as_slice() {
        [only] if report.passed(only) => {}
        [] => problems.push("Xen run: no 'Test result:' line".to_owned()),
        many => problems.push(format!("Xen run: Test result: {}", many.join(", "))),
    }
    for message in &report.panics {
        problems.push(format!("Xen run: the guest panicked: {message}"));
    }
    if report.with_verdict(Verdict::Ok).next().is_none() {
        problems.push("Xen run: no 'ok:' check line".to_owned());
    }
    problems
}

/// Unpacks Debian's Xen 4.17 into `dir` and returns the ELF's path.
pub fn unpack(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let xen = dir.join("xen-4.17-amd64");
    let file = std::fs::File::create(&xen).map_err(|e| format!("{}: {e}", xen.display()))?;
    let status = Command::new("gzip")
        .args(["-d", "-c", packages::XEN_GZ])
        .stdout(file)
        .status()
        .map_err(|e| format!("cannot start gzip: {e}"))?;
    if !status.success() {
        return Err(format!("gzip -d -c {} failed ({status})", packages::XEN_GZ));
    }
    Ok(xen)
}

/// A difference between our run of a test and Xen's that is known and
/// legitimate: the check (or `Test result`) reads `ours` here and `xen`
/// on Xen, for `reason`, documented in `doc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The test (its name in `xtask/src/suite.rs`).
    pub test: &'static str,
    /// The check's name, or `Test result`.
    pub check: &'static str,
    /// How the check reads here (see [`outcomes`]).
    pub ours: &'static str,
    /// How it reads on Xen.
    pub xen: &'static str,
    /// Why the two platforms differ.
    pub reason: &'static str,
    /// Where the difference is documented.
    pub doc: &'static str,
}

/// Why the flush checks cannot see a stale translation here.
const NO_STALE_TLB: &str = "every return to the guest reloads CR3 for the guest view, which \
     drops the guest's TLB entries, so no stale translation survives to be flushed";

/// A flush check that is a SKIP here and passes on Xen.
const fn stale_flush(check: &'static str) -> Allowed {
    Allowed {
        test: "mm_mmuext_misc",
        check,
        ours: "SKIP",
        xen: "ok",
        reason: NO_STALE_TLB,
        doc: "docs/abi-differences.md, TLB",
    }
}

/// Why kernel selectors differ.
const RING1_SELECTORS: &str = "the guest kernel runs in ring 1 here, with this hypervisor's \
     selectors (CS 0xe019, SS 0xe039), and in ring 3 on Xen (FLAT_KERNEL_CS 0xe033, SS 0xe02b; \
     its frames show CS with RPL 0, 0xe030)";

/// A check that reads a kernel selector (or a pair of them).
const fn ring1_selector(
    test: &'static str,
    check: &'static str,
    ours: &'static str,
    xen: &'static str,
) -> Allowed {
    Allowed {
        test,
        check,
        ours,
        xen,
        reason: RING1_SELECTORS,
        doc: "docs/abi-differences.md, Ring 1 instead of ring 3",
    }
}

/// A hypercall-page slot: `int $0x82` here, `syscall` on Xen.
const fn stub(check: &'static str, ours: &'static str, xen: &'static str) -> Allowed {
    Allowed {
        test: "hypercall_page",
        check,
        ours,
        xen,
        reason: "hypercalls are int $0x82 from ring 1 here, syscall from ring 3 on Xen",
        doc: "docs/abi-differences.md, Ring 1 instead of ring 3",
    }
}

/// A store the writable-page-table emulation refused, read back: on Xen
/// the kernel's L1 entries also carry `_PAGE_USER` (0x4) and Xen's
/// guest-kernel bit 52, as its kernel runs in ring 3.
const fn refused_store(check: &'static str, ours: &'static str, xen: &'static str) -> Allowed {
    Allowed {
        test: "mm_writable_pt",
        check,
        ours,
        xen,
        reason: "on Xen a kernel L1 entry also has the user bit and Xen's bit 52, as its \
                 kernel runs in ring 3",
        doc: "docs/abi-differences.md, Ring 1 instead of ring 3",
    }
}

/// Every known legitimate difference; the summary lists each one that
/// applied. One `*` in `check`, `ours` or `xen` matches any run of
/// characters.
pub const ALLOWED: &[Allowed] = &[
    Allowed {
        test: "cpu_msr_policy",
        check: "rdmsr DE_CFG (0xc0011029)",
        ours: "ok = vector 13 error 0x0",
        xen: "ok = 0x2",
        reason: "Xen reports LFENCE as dispatch-serialising (DE_CFG bit 1), which it sets up on AMD; \
                 this hypervisor does not",
        doc: "docs/guest-cpu.md, CPUID",
    },
    Allowed {
        test: "cpu_cpuid_policy",
        check: "cpuid 0x80000000.0",
        ours: "ok = eax 0x8000000a ebx 0x68747541 ecx 0x444d4163 edx 0x69746e65",
        xen: "ok = eax 0x80000021 ebx 0x68747541 ecx 0x444d4163 edx 0x69746e65",
        reason: "Xen raises the last extended leaf to 0x80000021 for the LFENCE-serialising bit it reports there",
        doc: "docs/guest-cpu.md, CPUID",
    },
    Allowed {
        test: "cpu_cpuid_policy",
        check: "cpuid 0x80000021.0",
        ours: "ok = eax 0x00000000 ebx 0x00000000 ecx 0x00000000 edx 0x00000000",
        xen: "ok = eax 0x00000004 ebx 0x00000000 ecx 0x00000000 edx 0x00000000",
        reason: "Xen reports LFENCE as dispatch-serialising (it sets that up on AMD); this hypervisor does not",
        doc: "docs/guest-cpu.md, CPUID",
    },
    stale_flush("TLB_FLUSH_LOCAL removes a stale translation"),
    stale_flush("INVLPG_LOCAL removes a stale translation"),
    stale_flush("TLB_FLUSH_MULTI removes a stale translation"),
    stale_flush("INVLPG_MULTI removes a stale translation"),
    stale_flush("TLB_FLUSH_ALL removes a stale translation"),
    stale_flush("INVLPG_ALL removes a stale translation"),
    Allowed {
        test: "mm_mmuext_misc",
        check: RESULT,
        ours: "SKIP",
        xen: "SUCCESS",
        reason: "the flush checks above are skipped here",
        doc: "docs/abi-differences.md, TLB",
    },
    Allowed {
        test: "xen_version",
        check: "get_features submap 0 is this platform's whole bitmap",
        ours: "ok = 0x208e0",
        xen: "ok = 0x228e0",
        reason: "Xen also sets memory_op_vnode_supported: vNUMA is not implemented here",
        doc: "docs/abi-differences.md, Feature bits",
    },
    stub(
        "slot 0 holds this platform's stub",
        "ok = [184, 0, 0, 0, 0, 205, 130, 195]",
        "ok = [81, 65, 83, 184, 0, 0, 0, 0, 15, 5, 65, 91, 89, 195]",
    ),
    stub(
        "slot 17 holds this platform's stub",
        "ok = [184, 17, 0, 0, 0, 205, 130, 195]",
        "ok = [81, 65, 83, 184, 17, 0, 0, 0, 15, 5, 65, 91, 89, 195]",
    ),
    stub(
        "slot 23 holds this platform's iret stub",
        "ok = [81, 65, 83, 80, 184, 23, 0, 0, 0, 205, 130]",
        "ok = [81, 65, 83, 80, 184, 23, 0, 0, 0, 15, 5]",
    ),
    ring1_selector(
        "cpu_exceptions_iret",
        "* frame shows kernel mode (iret)",
        "ok = cs 0xe018",
        "ok = cs 0xe030",
    ),
    ring1_selector(
        "cpu_exceptions_iretq",
        "* frame shows kernel mode (iretq)",
        "ok = cs 0xe018",
        "ok = cs 0xe030",
    ),
    Allowed {
        test: "cpu_priv_kernel",
        check: "* in the kernel behaves as the platform documents",
        ours: "ok = vector 13 error 0x0",
        xen: "ok = completed",
        reason: "this hypervisor sets CR4.UMIP where the CPU has it, so the descriptor-table \
                 reads fault with #GP(0); Xen does not set UMIP for PV guests",
        doc: "docs/abi-differences.md, Events (UMIP)",
    },
    Allowed {
        test: "pirq",
        check: "map_pirq of MSI for an absent device",
        ours: "ok = -38",
        xen: "ok = -19",
        reason: "MSI and MSI-X are not implemented: every MSI map_pirq type answers -ENOSYS, \
                 where Xen looks the device up (-ENODEV here)",
        doc: "docs/abi-differences.md, Devices",
    },
    Allowed {
        test: "cpu_user_mode",
        check: "user read of a kernel-only page is #PF with U, cr2",
        ours: "ok = vector 14 error 0x5",
        xen: "ok = vector 14 error 0x4",
        reason: "kernel pages are present supervisor pages here (error P|U); on Xen a kernel-only \
                 page is one the user page table leaves out (error U)",
        doc: "docs/abi-differences.md, Events",
    },
    ring1_selector(
        "cpu_exceptions_iret",
        "frame SS slot is the kernel stack selector (iret)",
        "ok = 57401",
        "ok = 57387",
    ),
    ring1_selector(
        "cpu_exceptions_iret",
        "handler runs with the kernel CS and SS (iret)",
        "ok = (57369, 57401)",
        "ok = (57395, 57387)",
    ),
    ring1_selector(
        "cpu_exceptions_iretq",
        "frame SS slot is the kernel stack selector (iretq)",
        "ok = 57401",
        "ok = 57387",
    ),
    ring1_selector(
        "cpu_exceptions_iretq",
        "handler runs with the kernel CS and SS (iretq)",
        "ok = (57369, 57401)",
        "ok = (57395, 57387)",
    ),
    Allowed {
        test: "mm_pt_validation",
        check: "an L4 entry in reserved slot 256 leaves the entry unchanged",
        ours: "ok = 0",
        xen: "ok = not own | 0x8000000000000025",
        reason: "Xen keeps its own mappings in the reserved L4 slots of every guest L4; this \
                 hypervisor is absent from guest page tables, so the slot reads empty",
        doc: "docs/address-spaces.md",
    },
    refused_store(
        "the refused store left the entry unchanged (assist disabled)",
        "ok = pfn 0x3fff | 0x63",
        "ok = pfn 0x3fff | 0x10000000000067",
    ),
    refused_store(
        "the refused store left the entry unchanged (assist enabled)",
        "ok = pfn 0x3ffe | 0x63",
        "ok = pfn 0x3ffe | 0x10000000000067",
    ),
    refused_store(
        "the refused store left the entry unchanged (no assist)",
        "ok = pfn 0x3fff | 0x63",
        "ok = pfn 0x3fff | 0x10000000000067",
    ),
    Allowed {
        test: "sched_watchdog",
        check: "a third watchdog is ENOSPC",
        ours: "ok = -28 (ENOSPC)",
        xen: "ok = 4294967268",
        reason: "Xen 4.17 returns -ENOSPC zero-extended from 32 bits (4294967268), a positive \
                 value a guest takes for a watchdog id; here it is -ENOSPC",
        doc: "docs/abi-differences.md, Timers and sleeping",
    },
    // Issue 13: the counter of hypervisor memory per idle domain is this
    // hypervisor's log line; Xen 4.17 logs none, so dom0 skips the check.
    Allowed {
        test: "dom0_scale",
        check: "[2] scale tiny.cfg hypervisor memory per idle domain at most 20 KiB",
        ours: "ok",
        xen: "SKIP",
        reason: "the counter is this hypervisor's 'd<N> held <bytes> bytes of hypervisor memory' \
                 log line; Xen 4.17 logs no such counter",
        doc: "docs/dom0.md, Many domains",
    },
    Allowed {
        test: "dom0_scale",
        check: RESULT,
        ours: "SUCCESS",
        xen: "SKIP",
        reason: "the memory check above is skipped on Xen",
        doc: "docs/dom0.md, Many domains",
    },
];

/// Whether `text` matches `pattern`, in which one `*` matches any run of
/// characters.
fn matches(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, suffix)) => {
            text.len() >= prefix.len() + suffix.len()
                && text.starts_with(prefix)
                && text.ends_with(suffix)
        }
    }
}

/// The pseudo-check name of the result line.
const RESULT: &str = "Test result";

/// How each check of a report reads, by name: its verdict words in order
/// (`ok`, `FAIL`, `SKIP`, `ERROR`), a passed check with the value it saw
/// as `ok = <value>`, a check printed twice as `ok, ok`; plus the result
/// line as [`RESULT`].
pub fn outcomes(report: &GuestReport) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for check in &report.checks {
        let word = check.verdict.prefix().trim_end().trim_end_matches(':');
        let reading = if check.verdict == Verdict::Ok && !check.detail.is_empty() {
            format!("{word} = {}", check.detail)
        } else {
            word.to_owned()
        };
        map.entry(check.name.clone()).or_default().push(reading);
    }
    for result in &report.results {
        map.entry(RESULT.to_owned())
            .or_default()
            .push(result.clone());
    }
    map.into_iter()
        .map(|(name, words)| (name, words.join(", ")))
        .collect()
}

/// What comparing our run of `test` with Xen's found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Differences that fail the conformance test.
    pub differences: Vec<String>,
    /// Differences found in [`ALLOWED`], described with their reason.
    pub allowed: Vec<String>,
}

/// Compares our report of `test` with Xen's.
pub fn compare(test: &str, ours: &GuestReport, xen: &GuestReport) -> Comparison {
    let (ours, xen) = (outcomes(ours), outcomes(xen));
    let mut comparison = Comparison::default();
    if ours.is_empty() && xen.is_empty() {
        comparison
            .differences
            .push("neither run printed a check or result line".to_owned());
    }
    let names: BTreeSet<&String> = ours.keys().chain(xen.keys()).collect();
    for name in names {
        let here = ours.get(name).map_or("absent", String::as_str);
        let there = xen.get(name).map_or("absent", String::as_str);
        if here == there {
            continue;
        }
        let allowed = ALLOWED.iter().find(|a| {
            a.test == test
                && matches(a.check, name)
                && matches(a.ours, here)
                && matches(a.xen, there)
        });
        match allowed {
            Some(a) => comparison.allowed.push(format!(
                "{name}: here {here}, on Xen {there}: {} ({})",
                a.reason, a.doc
            )),
            None => comparison
                .differences
                .push(format!("{name}: here {here}, on Xen {there}")),
        }
    }
    comparison
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial_log::parse;

    #[test]
    fn same_checks_agree_whatever_the_details() {
        let ours = parse("ok: a\nSKIP: b (no x)\nFAIL: c: got 1\nTest result: FAILURE\n");
        let xen = parse(
            "(XEN) noise\nok: a\nSKIP: b (other reason)\nFAIL: c: got 2\nTest result: FAILURE\n",
        );
        assert_eq!(compare("t", &ours, &xen), Comparison::default());
    }

    #[test]
    fn differences_are_listed_both_ways() {
        let ours = parse("ok: a\nok: b\nok: d\nTest result: SUCCESS\n");
        let xen = parse("ok: a\nFAIL: b: -38\nok: c\nok: d\nok: d\nTest result: FAILURE\n");
        let comparison = compare("t", &ours, &xen);
        assert_eq!(
            comparison.differences,
            [
                "Test result: here SUCCESS, on Xen FAILURE",
                "b: here ok, on Xen FAIL",
                "c: here absent, on Xen ok",
                "d: here ok, on Xen ok, ok",
            ]
        );
        assert!(comparison.allowed.is_empty());
    }

    #[test]
    fn a_missing_check_or_result_is_a_difference() {
        let ours = parse("ok: a\nok: b\nTest result: SUCCESS\n");
        let one = |xen: &str| compare("t", &ours, &parse(xen)).differences.len();
        assert_eq!(one("ok: a\nTest result: SUCCESS\n"), 1);
        assert_eq!(one("ok: a\nok: b\n"), 1);
        assert_eq!(compare("t", &parse(""), &parse("")).differences.len(), 1);
    }

    #[test]
    fn allowed_differences_are_listed_not_failed() {
        let check = "TLB_FLUSH_LOCAL removes a stale translation";
        let ours = parse(&format!(
            "ok: a\nSKIP: {check} (no stale entry)\nTest result: SKIP\n"
        ));
        let xen = parse(&format!("ok: a\nok: {check}\nTest result: SUCCESS\n"));
        let comparison = compare("mm_mmuext_misc", &ours, &xen);
        assert!(comparison.differences.is_empty(), "{comparison:?}");
        assert_eq!(comparison.allowed.len(), 2);
        assert!(comparison.allowed[0].contains(NO_STALE_TLB));
        // Only for that test, and only for those two readings.
        assert_eq!(compare("other", &ours, &xen).differences.len(), 2);
        let failed = parse(&format!("ok: a\nFAIL: {check}: x\nTest result: FAILURE\n"));
        assert_eq!(
            compare("mm_mmuext_misc", &failed, &xen).differences.len(),
            2
        );
    }

    #[test]
    fn values_are_compared_and_wildcards_match_only_passes() {
        let check = "SMSW in the kernel behaves as the platform documents";
        let ours = parse(&format!(
            "ok: x = 1\nok: {check} = vector 13 error 0x0\nTest result: SUCCESS\n"
        ));
        let xen = parse(&format!(
            "ok: x = 2\nok: {check} = completed\nTest result: SUCCESS\n"
        ));
        let comparison = compare("cpu_priv_kernel", &ours, &xen);
        assert_eq!(comparison.differences, ["x: here ok = 1, on Xen ok = 2"]);
        assert_eq!(comparison.allowed.len(), 1);
        let failed = parse(&format!("FAIL: {check}: got 1\nTest result: FAILURE\n"));
        assert_eq!(
            compare("cpu_priv_kernel", &failed, &xen).differences.len(),
            3
        );
        assert!(matches("ok = pfn *", "ok = pfn 0x97 | 0x1"));
        assert!(!matches("ok = pfn *", "FAIL"));
        assert!(matches("ok = 0", "ok = 0") && !matches("ok = 0", "ok = 01"));
        assert!(matches("* frame (iret)", "#DE frame (iret)"));
        assert!(!matches("* frame (iret)", "#DE frame (iretq)"));
        assert!(!matches("ab*ba", "aba"));
    }

    #[test]
    fn check_names_may_be_patterns() {
        let ours = parse("ok: #DE frame shows kernel mode (iret) = cs 0xe018\n");
        let xen = parse("ok: #DE frame shows kernel mode (iret) = cs 0xe030\n");
        assert!(
            compare("cpu_exceptions_iret", &ours, &xen)
                .differences
                .is_empty()
        );
        assert_eq!(
            compare("cpu_exceptions_iretq", &ours, &xen)
                .differences
                .len(),
            1
        );
    }

    #[test]
    fn allow_list_entries_are_unique_and_explained() {
        for (i, a) in ALLOWED.iter().enumerate() {
            assert!(!a.reason.is_empty() && !a.doc.is_empty(), "{a:?}");
            assert!(a.ours != a.xen || a.ours.ends_with('*'), "{a:?}");
            assert!(
                ALLOWED[..i]
                    .iter()
                    .all(|b| (b.test, b.check) != (a.test, a.check)),
                "{a:?} twice"
            );
        }
    }

    #[test]
    fn only_a_halted_dom0_with_one_success_passes_on_xen() {
        let good = "(d0) ok: a\n(d0) Test result: SUCCESS\n(XEN) Hardware Dom0 halted\n";
        let halted = Outcome::Stopped(DOM0_HALTED);
        assert!(judge(&halted, good).is_empty());
        assert_eq!(
            judge(&Outcome::Stopped(DOM0_CRASHED), good),
            ["Xen: dom0 crashed"]
        );
        assert_eq!(
            judge(&Outcome::Stopped(XEN_PANICKED), good),
            ["Xen panicked"]
        );
        let panic_log = format!("{good}(XEN) Panic on CPU 0:\n");
        assert_eq!(judge(&halted, &panic_log), ["Xen panicked"]);
        assert_eq!(
            judge(&Outcome::Timeout(std::time::Duration::from_secs(1)), good).len(),
            1
        );
        assert_eq!(judge(&halted, "(d0) ok: a\n").len(), 1);
        assert_eq!(judge(&halted, "(d0) Test result: SUCCESS\n").len(), 1);
        let failed = good.replace("SUCCESS", "FAILURE");
        assert_eq!(judge(&halted, &failed).len(), 1);
        let guest_panic = good.replace("(d0) Test", "(d0) PANIC: x.rs:1: y\n(d0) Test");
        assert_eq!(judge(&halted, &guest_panic).len(), 1);
    }
}
