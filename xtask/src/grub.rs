//! GRUB boot ISOs: the configuration from `boot/grub.cfg.in`, and
//! `grub-mkrescue`.
//!
//! GRUB splits a `multiboot2`/`module2` line into words as a shell would and
//! joins them back with single spaces, so runs of spaces collapse. Words with
//! characters GRUB's parser treats specially are single-quoted. Quotes and
//! backslashes are refused: GRUB would hand them on with extra backslashes,
//! so the hypervisor would not see the command line it was given.
#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The template, `boot/grub.cfg.in`.
const TEMPLATE: &str = include_str!("../../boot/grub.cfg.in");

/// What goes on the ISO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoContents {
    /// The multiboot2 kernel (the hypervisor), copied to `/boot/hypervisor`.
    pub kernel: PathBuf,
    /// The kernel's command line.
    pub kernel_args: String,
    /// dom0 and its command line, copied to `/boot/dom0`.
    pub dom0: Option<(PathBuf, String)>,
    /// dom0's ramdisk, copied to `/boot/ramdisk`.
    pub ramdisk: Option<PathBuf>,
}

/// Characters that GRUB's command parser passes through unquoted.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.,=:/+@%~^!".contains(c)
}

/// `args` as GRUB words.
pub fn grub_words(args: &str) -> Result<String, String> {
    let mut words = Vec::new();
    for word in args.split_whitespace() {
        if word.contains(['\'', '"', '\\']) {
            return Err(format!(
                "GRUB cannot pass quotes or backslashes unchanged (in '{word}'); use --boot direct"
            ));
        }
        if word.chars().all(is_plain) {
            words.push(word.to_owned());
        } else {
            words.push(format!("'{word}'"));
        }
    }
    Ok(words.join(" "))
}

/// A `module2` line for `file` with `args`.
fn module_line(file: &str, args: &str) -> Result<String, String> {
    let words = grub_words(args)?;
    Ok(if words.is_empty() {
        format!("module2 {file}")
    } else {
        format!("module2 {file} {words}")
    })
}

/// The GRUB configuration for `contents`, from the template.
pub fn render_config(contents: &IsoContents) -> Result<String, String> {
    let dom0 = match &contents.dom0 {
        Some((_, args)) => module_line("/boot/dom0", args)?,
        None => String::new(),
    };
    let ramdisk = match contents.ramdisk {
        Some(_) => module_line("/boot/ramdisk", "")?,
        None => String::new(),
    };
    let substitutions = [
        ("@HV_ARGS@", grub_words(&contents.kernel_args)?),
        ("@DOM0_MODULE@", dom0),
        ("@RAMDISK_MODULE@", ramdisk),
    ];
    let mut config = String::new();
    for line in TEMPLATE.lines() {
        let mut rendered = line.to_owned();
        let mut had_placeholder = false;
        for (placeholder, value) in &substitutions {
            if rendered.contains(placeholder) {
                had_placeholder = true;
                rendered = rendered.replace(placeholder, value);
            }
        }
        if had_placeholder && rendered.trim().is_empty() {
            continue;
        }
        config.push_str(rendered.trim_end());
        config.push('\n');
    }
    Ok(config)
}

/// Builds `<work_dir>/boot.iso` with `grub-mkrescue` and returns its path.
/// `work_dir` is emptied first.
pub fn make_iso(contents: &IsoContents, work_dir: &Path) -> Result<PathBuf, String> {
    let config = render_config(contents)?;
    let tree = work_dir.join("iso");
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if work_dir.exists() {
        fs::remove_dir_all(work_dir).map_err(|e| io(&work_dir.display().to_string(), e))?;
    }
    let boot = tree.join("boot");
    fs::create_dir_all(boot.join("grub")).map_err(|e| io(&boot.display().to_string(), e))?;
    let copy = |from: &Path, name: &str| {
        fs::copy(from, boot.join(name))
            .map(|_| ())
            .map_err(|e| io(&format!("copying {}", from.display()), e))
    };
    copy(&contents.kernel, "hypervisor")?;
    if let Some((dom0, _)) = &contents.dom0 {
        copy(dom0, "dom0")?;
    }
    if let Some(ramdisk) = &contents.ramdisk {
        copy(ramdisk, "ramdisk")?;
    }
    fs::write(boot.join("grub").join("grub.cfg"), config).map_err(|e| io("writing grub.cfg", e))?;
    let iso = work_dir.join("boot.iso");
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .arg(&tree)
        .output()
        .map_err(|e| io("cannot start grub-mkrescue", e))?;
    if !output.status.success() {
        return Err(format!(
            "grub-mkrescue failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> IsoContents {
        IsoContents {
            kernel: "hv".into(),
            kernel_args: "console=com1 com1=115200,8n1 dom0_mem=64M".into(),
            dom0: Some(("guest".into(), "test=hello".into())),
            ramdisk: None,
        }
    }

    fn entry(config: &str) -> Vec<&str> {
        let start = config.find("menuentry").unwrap();
        config[start..].lines().map(str::trim).collect()
    }

    #[test]
    fn dom0_without_ramdisk() {
        let config = render_config(&contents()).unwrap();
        assert_eq!(
            entry(&config),
            [
                "menuentry \"hypervisor\" {",
                "multiboot2 /boot/hypervisor console=com1 com1=115200,8n1 dom0_mem=64M",
                "module2 /boot/dom0 test=hello",
                "}",
            ]
        );
        assert!(config.contains("set timeout=0"));
        assert!(config.contains("terminal_output serial"));
        assert!(!config.contains('@'));
    }

    #[test]
    fn ramdisk_and_no_dom0() {
        let mut with_ramdisk = contents();
        with_ramdisk.ramdisk = Some("rd".into());
        let config = render_config(&with_ramdisk).unwrap();
        assert!(entry(&config).contains(&"module2 /boot/ramdisk"));

        let mut bare = contents();
        bare.dom0 = None;
        let config = render_config(&bare).unwrap();
        assert_eq!(
            entry(&config),
            [
                "menuentry \"hypervisor\" {",
                "multiboot2 /boot/hypervisor console=com1 com1=115200,8n1 dom0_mem=64M",
                "}",
            ]
        );
    }

    #[test]
    fn empty_dom0_args() {
        let mut c = contents();
        c.dom0 = Some(("guest".into(), String::new()));
        assert!(
            render_config(&c)
                .unwrap()
                .contains("    module2 /boot/dom0\n")
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(grub_words("  a=1   b=x,y ").unwrap(), "a=1 b=x,y");
        assert_eq!(grub_words("cmd=a;b $x").unwrap(), "'cmd=a;b' '$x'");
        assert!(grub_words("say=\"hi\"").is_err());
        assert!(grub_words("it's").is_err());
        assert!(grub_words(r"a\b").is_err());
    }
}
