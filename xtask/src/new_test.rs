//! `cargo xtask new-test <name>`: the skeleton of a new guest test.
//!
//! Creates `tests/src/cases/<name>.rs` with one deliberately failing check,
//! registers it in `tests/src/cases/mod.rs` (a `mod` line and a `Case`
//! entry), and adds a "powers off with SUCCESS" entry to the integration
//! test table in `xtask/src/suite.rs`. Nothing is written unless all three
//! edits can be made.
#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;

use crate::build::Workspace;

/// Whether `name` can be a test name: lower-case ASCII letters, digits and
/// `_`, starting with a letter.
pub fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The new test's source file.
fn skeleton(name: &str) -> String {
    format!(
        "//! `{name}`: <what this test checks, and why it matters>.
//!
//! Checks:
//! - <one line per check, with the result Xen 4.17 gives>

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::report;

pub fn run(_start_info: &'static StartInfo) {{
    report::check(
        \"{name} has checks\",
        false,
        format_args!(\"write the checks of tests/src/cases/{name}.rs\"),
    );
}}
"
    )
}

/// `mod.rs` with `mod <name>;` after the last `mod` line and a `Case` entry
/// at the end of `ALL`.
fn register_case(mod_rs: &str, name: &str) -> Result<String, String> {
    let mut lines: Vec<String> = mod_rs.lines().map(str::to_owned).collect();
    if lines.iter().any(|l| l.trim() == format!("mod {name};")) {
        return Err(format!("tests/src/cases/mod.rs already has 'mod {name};'"));
    }
    // Keep the (sorted) `mod` lines sorted.
    let is_mod = |l: &String| l.starts_with("mod ") && l.ends_with(';');
    let last_mod = lines
        .iter()
        .rposition(is_mod)
        .ok_or("no 'mod' lines in tests/src/cases/mod.rs")?;
    let new_line = format!("mod {name};");
    let at = lines
        .iter()
        .position(|l| is_mod(l) && *l > new_line)
        .unwrap_or(last_mod + 1);
    lines.insert(at, new_line);
    let all = lines
        .iter()
        .position(|l| l.starts_with("pub const ALL: &[Case] = &["))
        .ok_or("no 'pub const ALL: &[Case] = &[' in tests/src/cases/mod.rs")?;
    let end = all
        + lines[all..]
            .iter()
            .position(|l| l == "];")
            .ok_or("the ALL table in tests/src/cases/mod.rs has no closing '];'")?;
    let entry = [
        "    Case {".to_owned(),
        format!("        name: \"{name}\","),
        format!("        run: {name}::run,"),
        "    },".to_owned(),
    ];
    lines.splice(end..end, entry);
    Ok(lines.join("\n") + "\n")
}

/// `suite.rs` with `passes!("<name>", conformance: false),` after the last
/// `passes!` entry of the table.
fn register_integration_test(suite_rs: &str, name: &str) -> Result<String, String> {
    if suite_rs.contains(&format!("\"{name}\"")) {
        return Err(format!("xtask/src/suite.rs already names \"{name}\""));
    }
    let mut lines: Vec<String> = suite_rs.lines().map(str::to_owned).collect();
    let last = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("passes!(\"") && l.trim_end().ends_with("),"))
        .ok_or("no 'passes!' entry in xtask/src/suite.rs")?;
    lines.insert(
        last + 1,
        format!("    passes!(\"{name}\", conformance: false),"),
    );
    Ok(lines.join("\n") + "\n")
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// `cargo xtask new-test <name>`.
pub fn new_test(workspace: &Workspace, name: &str) -> Result<(), String> {
    if !valid_name(name) {
        return Err(format!(
            "'{name}' is not a test name: use lower-case letters, digits and '_', starting with a letter"
        ));
    }
    let cases = workspace.root.join("tests/src/cases");
    let file = cases.join(format!("{name}.rs"));
    if file.exists() {
        return Err(format!("{} exists already", file.display()));
    }
    let mod_rs = cases.join("mod.rs");
    let suite_rs = workspace.root.join("xtask/src/suite.rs");
    let new_mod = register_case(&read(&mod_rs)?, name)?;
    let new_suite = register_integration_test(&read(&suite_rs)?, name)?;
    write(&file, &skeleton(name))?;
    write(&mod_rs, &new_mod)?;
    write(&suite_rs, &new_suite)?;
    eprintln!(
        "xtask: created {} (registered in {} and {});\n  \
         write its checks, then run: cargo xtask test --filter {name}",
        file.display(),
        mod_rs.display(),
        suite_rs.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOD_RS: &str = "//! Registry.\n\nmod hello;\nmod sched_op;\n\n/// One test.\npub struct Case;\n\n\
                          pub const ALL: &[Case] = &[\n    Case {\n        name: \"hello\",\n        run: hello::run,\n    },\n];\n\n\
                          pub fn find() {}\n";

    #[test]
    fn names() {
        assert!(valid_name("grant_copy2"));
        assert!(!valid_name("2fast"));
        assert!(!valid_name("Hello"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn registers_the_case() {
        let out = register_case(MOD_RS, "evtchn_send").unwrap();
        assert!(out.contains("mod evtchn_send;\nmod hello;\nmod sched_op;\n"));
        let last = register_case(MOD_RS, "xen_version").unwrap();
        assert!(last.contains("mod sched_op;\nmod xen_version;\n"));
        assert!(out.contains(
            "        run: hello::run,\n    },\n    Case {\n        name: \"evtchn_send\",\n        run: evtchn_send::run,\n    },\n];\n"
        ));
        assert!(register_case(&out, "evtchn_send").is_err());
        assert!(register_case("mod a;\n", "b").is_err());
    }

    #[test]
    fn registers_the_integration_test() {
        let suite = "pub const TESTS: &[IntegrationTest] = &[\n    passes!(\"hello\", conformance: true),\n    \
                     passes!(\"sched_op\", conformance: true),\n    shuts_down!(\"shutdown_crash\", Dom0Crash),\n];\n";
        let out = register_integration_test(suite, "evtchn_send").unwrap();
        assert!(out.contains(
            "passes!(\"sched_op\", conformance: true),\n    passes!(\"evtchn_send\", conformance: false),\n    shuts_down!"
        ));
        assert!(register_integration_test(&out, "evtchn_send").is_err());
    }

    #[test]
    fn the_real_files_accept_a_new_test() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let suite = read(&root.join("xtask/src/suite.rs")).unwrap();
        assert!(register_integration_test(&suite, "brand_new_test").is_ok());
        if let Ok(mod_rs) = read(&root.join("tests/src/cases/mod.rs")) {
            assert!(register_case(&mod_rs, "brand_new_test").is_ok());
        }
    }

    #[test]
    fn skeleton_fails_until_written() {
        let text = skeleton("evtchn_send");
        assert!(text.starts_with("//! `evtchn_send`:"));
        assert!(
            text.contains("report::check(\n        \"evtchn_send has checks\",\n        false,")
        );
    }
}
