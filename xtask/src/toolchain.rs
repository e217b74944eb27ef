//! The Rust pieces xtask needs beyond a bare `stable` toolchain, and
//! installing the missing ones.
//!
//! `rust-toolchain.toml` names the toolchain, its `x86_64-unknown-none`
//! target and the `rustfmt`/`clippy` components, but rustup only adds those
//! while it installs the toolchain itself: a machine that already had
//! `stable` never gets them (and with `RUSTUP_AUTO_INSTALL=0` rustup
//! installs nothing implicitly). So before every bare-metal build, and
//! before a command that runs `cargo fmt` or `cargo clippy`, xtask asks
//! rustup what the toolchain in use has, and runs `rustup target add` /
//! `rustup component add` for what is missing, printing each command. When
//! rustup is absent or an install fails, the error names the command to run
//! by hand; xtask then exits with its own status (1), never with a compiler
//! error about a missing `core`.
//!
//! The parsing of rustup's and the toolchain file's output is pure and
//! host-tested; only [`ensure`] runs commands.
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::Command;

use crate::build::{TARGET, Workspace};

/// A rustup component a command may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `cargo fmt`.
    Rustfmt,
    /// `cargo clippy`.
    Clippy,
}

impl Component {
    /// The component's name as rustup spells it.
    pub fn name(self) -> &'static str {
        match self {
            Component::Rustfmt => "rustfmt",
            Component::Clippy => "clippy",
        }
    }
}

/// The `channel` of the `[toolchain]` table of a `rust-toolchain.toml`.
pub fn toolchain_file_channel(text: &str) -> Option<String> {
    let mut in_toolchain = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            in_toolchain = line == "[toolchain]";
            continue;
        }
        if !in_toolchain {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "channel" {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
            return (!unquoted.is_empty()).then(|| unquoted.to_owned());
        }
    }
    None
}

/// The toolchain name in the output of `rustup show active-toolchain`
/// (`stable-x86_64-unknown-linux-gnu (overridden by '…')`).
pub fn active_toolchain(output: &str) -> Option<&str> {
    output.lines().next()?.split_whitespace().next()
}

/// Whether the output of `rustup target list --installed` lists `target`.
pub fn target_installed(list: &str, target: &str) -> bool {
    list.lines().any(|line| line.trim() == target)
}

/// Whether the output of `rustup component list --installed` lists
/// `component`: rustup prints the name, a dash and the host triple
/// (`clippy-x86_64-unknown-linux-gnu`), whose first field is the host's
/// architecture.
pub fn component_installed(list: &str, component: &str) -> bool {
    let host_arch = format!("{}-", std::env::consts::ARCH);
    list.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|triple| triple.starts_with(&host_arch))
    })
}

/// What to install: the `rustup` argument lists, in order.
pub fn install_commands(
    toolchain: &str,
    target_missing: bool,
    components_missing: &[Component],
) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    if target_missing {
        commands.push(
            ["target", "add", "--toolchain", toolchain, TARGET]
                .map(str::to_owned)
                .to_vec(),
        );
    }
    if !components_missing.is_empty() {
        let mut command: Vec<String> = ["component", "add", "--toolchain", toolchain]
            .map(str::to_owned)
            .to_vec();
        command.extend(components_missing.iter().map(|c| c.name().to_owned()));
        commands.push(command);
    }
    commands
}

/// Shown when rustup cannot be used.
fn by_hand(toolchain: &str, components: &[Component]) -> String {
    let mut text = format!("  rustup target add --toolchain {toolchain} {TARGET}");
    if !components.is_empty() {
        let names: Vec<&str> = components.iter().map(|c| c.name()).collect();
        text.push_str(&format!(
            "\n  rustup component add --toolchain {toolchain} {}",
            names.join(" ")
        ));
    }
    text
}

/// Runs `rustup` with `args` in `root`; its standard output on success.
fn rustup_output(root: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("rustup")
        .args(args)
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot start rustup: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "rustup {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The toolchain this workspace builds with: rustup's answer in the
/// workspace (which honours `cargo +name` and `RUSTUP_TOOLCHAIN`), else the
/// channel of `rust-toolchain.toml`.
fn workspace_toolchain(root: &Path) -> Result<String, String> {
    if let Some(name) = rustup_output(root, &["show", "active-toolchain"])
        .ok()
        .as_deref()
        .and_then(active_toolchain)
    {
        return Ok(name.to_owned());
    }
    let file = root.join("rust-toolchain.toml");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    toolchain_file_channel(&text).ok_or_else(|| format!("{} names no channel", file.display()))
}

/// Makes sure the workspace's toolchain has the bare-metal target and
/// `components`, installing what is missing with rustup.
pub fn ensure(workspace: &Workspace, components: &[Component]) -> Result<(), String> {
    let root = &workspace.root;
    if rustup_output(root, &["--version"]).is_err() {
        return Err(format!(
            "rustup is not on PATH, and xtask needs it to check for the {TARGET} target{}.\n\
             Install rustup (https://rustup.rs), then run:\n{}",
            if components.is_empty() {
                ""
            } else {
                " and the rustfmt/clippy components"
            },
            by_hand("stable", components)
        ));
    }
    let toolchain = workspace_toolchain(root)?;
    let targets = rustup_output(
        root,
        &["target", "list", "--installed", "--toolchain", &toolchain],
    )?;
    let installed_components = if components.is_empty() {
        String::new()
    } else {
        rustup_output(
            root,
            &[
                "component",
                "list",
                "--installed",
                "--toolchain",
                &toolchain,
            ],
        )?
    };
    let missing: Vec<Component> = components
        .iter()
        .copied()
        .filter(|c| !component_installed(&installed_components, c.name()))
        .collect();
    for args in install_commands(&toolchain, !target_installed(&targets, TARGET), &missing) {
        eprintln!("xtask: installing: rustup {}", args.join(" "));
        let status = Command::new("rustup")
            .args(&args)
            .current_dir(root)
            .status()
            .map_err(|e| format!("cannot start rustup: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`rustup {}` failed ({status}); run by hand:\n{}",
                args.join(" "),
                by_hand(&toolchain, components)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_from_the_toolchain_file() {
        let file = "[toolchain]\nchannel = \"stable\"\ntargets = [\"x86_64-unknown-none\"]\n";
        assert_eq!(toolchain_file_channel(file).as_deref(), Some("stable"));
        let pinned = "# pinned\n[toolchain]\n  channel='1.95.0' # why\nprofile = \"minimal\"\n";
        assert_eq!(toolchain_file_channel(pinned).as_deref(), Some("1.95.0"));
        let elsewhere = "[other]\nchannel = \"nightly\"\n[toolchain]\nprofile = \"minimal\"\n";
        assert_eq!(toolchain_file_channel(elsewhere), None);
        assert_eq!(
            toolchain_file_channel("[toolchain]\nchannel = \"\"\n"),
            None
        );
        assert_eq!(
            toolchain_file_channel("[toolchain]\nchannel = stable\n"),
            None
        );
    }

    #[test]
    fn the_workspace_file_names_a_channel() {
        let text = include_str!("../../rust-toolchain.toml");
        assert!(toolchain_file_channel(text).is_some());
        assert!(text.contains(TARGET));
    }

    #[test]
    fn active_toolchain_is_the_first_word() {
        let out = "stable-x86_64-unknown-linux-gnu (overridden by '/w/rust-toolchain.toml')\n";
        assert_eq!(
            active_toolchain(out),
            Some("stable-x86_64-unknown-linux-gnu")
        );
        assert_eq!(
            active_toolchain("nightly-x86_64-unknown-linux-gnu\n"),
            Some("nightly-x86_64-unknown-linux-gnu")
        );
        assert_eq!(active_toolchain(""), None);
    }

    #[test]
    fn targets_are_matched_whole() {
        let list = "x86_64-unknown-linux-gnu\nx86_64-unknown-none\n";
        assert!(target_installed(list, "x86_64-unknown-none"));
        assert!(!target_installed(
            "x86_64-unknown-linux-gnu\n",
            "x86_64-unknown-none"
        ));
        assert!(!target_installed(
            "x86_64-unknown-none-elf\n",
            "x86_64-unknown-none"
        ));
    }

    #[test]
    fn components_carry_the_host_triple() {
        let arch = std::env::consts::ARCH;
        let list = format!(
            "cargo-{arch}-unknown-linux-gnu\nclippy-{arch}-unknown-linux-gnu\n\
             rust-std-x86_64-unknown-none\nrustc-{arch}-unknown-linux-gnu\n"
        );
        assert!(component_installed(&list, "clippy"));
        assert!(!component_installed(&list, "rustfmt"));
        assert!(!component_installed(&list, "rust"));
        assert!(component_installed("rustfmt\n", "rustfmt"));
        let preview = format!("rustfmt-preview-{arch}-unknown-linux-gnu\n");
        assert!(!component_installed(&preview, "rustfmt"));
    }

    #[test]
    fn installs_only_what_is_missing() {
        assert!(install_commands("stable", false, &[]).is_empty());
        assert_eq!(
            install_commands("stable", true, &[Component::Clippy]),
            [
                vec![
                    "target",
                    "add",
                    "--toolchain",
                    "stable",
                    "x86_64-unknown-none"
                ],
                vec!["component", "add", "--toolchain", "stable", "clippy"],
            ]
        );
        assert_eq!(
            install_commands("1.95.0", false, &[Component::Rustfmt, Component::Clippy]),
            [vec![
                "component",
                "add",
                "--toolchain",
                "1.95.0",
                "rustfmt",
                "clippy"
            ]]
        );
    }
}
