//! A QEMU TCG plugin for `cargo xtask bench --profile`: it counts how
//! often each translated block runs over a whole QEMU run, for every
//! domain and the hypervisor at once (a `--trace` follows one vCPU
//! through one sample; this sees a run of several domains).
//!
//! QEMU calls [`qemu_plugin_install`] with the plugin's arguments
//! (`out=<file>`). Each block QEMU translates gets a counter that the
//! translated code increments inline on every execution (no call out of
//! the generated code); at exit the plugin writes one line per block
//! that ran: its address, its execution count, its instructions' lengths
//! and its first bytes (see [`Block::line`]). Addresses are virtual:
//! two guests linked at one address are told apart afterwards by those
//! bytes (`xtask`'s `bench::profile`).
//!
//! **Windows.** A guest may bracket the part of a run it measures with
//! two marker instructions, `nopl` with a magic displacement
//! ([`marker`]: begin or end, and a one-byte tag naming the window). At
//! translation the plugin gives each marker a callback; a begin marker
//! takes a snapshot of every counter, the matching end marker adds the
//! counts since the snapshot to the tag's window. Every window is written
//! after the whole run's lines, as `window <tag>` and its blocks' lines.
//! The marker is a no-op everywhere else (Xen, hardware).
//!
//! Under `-icount` QEMU runs one vCPU thread at a time; the block list is
//! still behind a mutex, since translation may happen on any vCPU thread.
//! Only QEMU 7.x's plugin interface (version 1) is declared here: the
//! few functions used, with the signatures QEMU's `qemu-plugin.h`
//! documents.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::sync::Mutex;

/// QEMU's `qemu_plugin_id_t`.
type PluginId = u64;

/// QEMU's opaque `struct qemu_plugin_tb`.
#[repr(C)]
struct QemuTb {
    _opaque: [u8; 0],
}

/// QEMU's opaque `struct qemu_plugin_insn`.
#[repr(C)]
struct QemuInsn {
    _opaque: [u8; 0],
}

/// `QEMU_PLUGIN_INLINE_ADD_U64`.
const INLINE_ADD_U64: c_int = 0;

// SAFETY: these are QEMU's exported plugin functions (QEMU 7.x, plugin
// API version 1), resolved from the QEMU binary when it loads the
// plugin; the declarations follow `qemu-plugin.h`.
unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut QemuTb),
    );
    fn qemu_plugin_register_atexit_cb(
        id: PluginId,
        cb: extern "C" fn(PluginId, *mut c_void),
        userdata: *mut c_void,
    );
    fn qemu_plugin_tb_n_insns(tb: *const QemuTb) -> usize;
    fn qemu_plugin_tb_vaddr(tb: *const QemuTb) -> u64;
    fn qemu_plugin_tb_get_insn(tb: *const QemuTb, idx: usize) -> *mut QemuInsn;
    fn qemu_plugin_insn_data(insn: *const QemuInsn) -> *const c_void;
    fn qemu_plugin_insn_size(insn: *const QemuInsn) -> usize;
    fn qemu_plugin_register_vcpu_tb_exec_inline(
        tb: *mut QemuTb,
        op: c_int,
        ptr: *mut c_void,
        imm: u64,
    );
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut QemuInsn,
        cb: extern "C" fn(u32, *mut c_void),
        flags: c_int,
        userdata: *mut c_void,
    );
}

/// `QEMU_PLUGIN_CB_NO_REGS`.
const CB_NO_REGS: c_int = 0;

/// The first bytes of a marker: `nopl disp32(%rax)`, then the
/// displacement's two low bytes ([`BEGIN`] or [`END`], and the tag) and
/// its two high bytes `"PO"`.
const MARKER_OPCODE: [u8; 3] = [0x0f, 0x1f, 0x80];
/// The displacement's high bytes.
const MARKER_MAGIC: [u8; 2] = *b"PO";
/// A window begins.
pub const BEGIN: u8 = 0xb1;
/// A window ends.
pub const END: u8 = 0xe1;

/// The marker `insn` is (its kind and tag), if it is one.
#[must_use]
pub fn marker(insn: &[u8]) -> Option<(u8, u8)> {
    match insn {
        [o0, o1, o2, kind, tag, m0, m1]
            if [*o0, *o1, *o2] == MARKER_OPCODE
                && [*m0, *m1] == MARKER_MAGIC
                && (*kind == BEGIN || *kind == END) =>
        {
            Some((*kind, *tag))
        }
        _ => None,
    }
}

/// The plugin API version this plugin was written against; QEMU refuses
/// a plugin whose version it does not support.
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 1;

/// Bytes of a block kept to tell binaries linked at one address apart.
pub const KEPT_BYTES: usize = 16;

/// One translated block.
pub struct Block {
    /// Its first instruction's virtual address.
    pub vaddr: u64,
    /// Its instructions' lengths, in order.
    pub sizes: Vec<u8>,
    /// Its first [`KEPT_BYTES`] bytes (fewer if it is shorter).
    pub bytes: Vec<u8>,
    /// Executions, incremented by the translated code itself.
    count: *mut u64,
}

// SAFETY: `count` points to a leaked `u64` that lives for the whole run;
// QEMU's generated code writes it, and the plugin reads it only at exit,
// when no vCPU runs.
unsafe impl Send for Block {}

impl Block {
    /// The block's output line: `<vaddr hex> <count> <sizes, comma-separated>
    /// <bytes hex>`.
    pub fn line(&self, count: u64) -> String {
        let mut line = format!("{:x} {count} ", self.vaddr);
        for (i, size) in self.sizes.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{size}");
        }
        line.push(' ');
        for byte in &self.bytes {
            let _ = write!(line, "{byte:02x}");
        }
        line
    }
}

/// Every block translated so far, the windows, and where the report
/// goes.
struct State {
    blocks: Vec<Block>,
    out: Option<String>,
    /// Per tag: the counters at its last begin marker (a block translated
    /// since counts from zero), while the window is open.
    open: Vec<(u8, Vec<u64>)>,
    /// Per tag: each block's executions inside the tag's windows.
    windows: Vec<(u8, Vec<u64>)>,
}

static STATE: Mutex<State> = Mutex::new(State {
    blocks: Vec::new(),
    out: None,
    open: Vec::new(),
    windows: Vec::new(),
});

impl State {
    fn counts(&self) -> Vec<u64> {
        self.blocks
            .iter()
            // SAFETY: the counters are live (leaked); under `-icount` no
            // other vCPU thread runs while this one is in a callback.
            .map(|b| unsafe { b.count.read_volatile() })
            .collect()
    }

    /// A begin (`kind` [`BEGIN`]) or end marker of window `tag` ran.
    fn mark(&mut self, kind: u8, tag: u8) {
        let now = self.counts();
        if kind == BEGIN {
            self.open.retain(|(t, _)| *t != tag);
            self.open.push((tag, now));
            return;
        }
        let Some(at) = self.open.iter().position(|(t, _)| *t == tag) else {
            return;
        };
        let (_, start) = self.open.swap_remove(at);
        let window = match self.windows.iter().position(|(t, _)| *t == tag) {
            Some(i) => &mut self.windows[i].1,
            None => {
                self.windows.push((tag, Vec::new()));
                &mut self.windows.last_mut().expect("just pushed").1
            }
        };
        window.resize(now.len(), 0);
        for (i, n) in now.iter().enumerate() {
            window[i] += n - start.get(i).copied().unwrap_or(0);
        }
    }
}

/// Called by QEMU when a marker runs; `userdata` holds its kind and tag.
extern "C" fn marked(_vcpu: u32, userdata: *mut c_void) {
    let [kind, tag, ..] = (userdata as usize).to_le_bytes();
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .mark(kind, tag);
}

/// Called by QEMU for each block it translates.
extern "C" fn translated(_id: PluginId, tb: *mut QemuTb) {
    // SAFETY: `tb` is the block QEMU is translating, valid for this call;
    // the accessors only read it.
    let (vaddr, n) = unsafe { (qemu_plugin_tb_vaddr(tb), qemu_plugin_tb_n_insns(tb)) };
    let mut sizes = Vec::with_capacity(n);
    let mut bytes = Vec::with_capacity(KEPT_BYTES);
    for i in 0..n {
        // SAFETY: `i` is below the block's instruction count; the
        // instruction's data is `size` bytes QEMU keeps for this call.
        let data = unsafe {
            let insn = qemu_plugin_tb_get_insn(tb, i);
            let size = qemu_plugin_insn_size(insn);
            sizes.push(u8::try_from(size).unwrap_or(u8::MAX));
            core::slice::from_raw_parts(qemu_plugin_insn_data(insn).cast::<u8>(), size)
        };
        let room = KEPT_BYTES - bytes.len();
        bytes.extend_from_slice(&data[..data.len().min(room)]);
        if let Some((kind, tag)) = marker(data) {
            let userdata = usize::from_le_bytes([kind, tag, 0, 0, 0, 0, 0, 0]);
            // SAFETY: the instruction belongs to the block being
            // translated; the callback takes its kind and tag by value.
            unsafe {
                let insn = qemu_plugin_tb_get_insn(tb, i);
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    marked,
                    CB_NO_REGS,
                    userdata as *mut c_void,
                );
            }
        }
    }
    let count = Box::into_raw(Box::new(0u64));
    // SAFETY: `count` is a leaked `u64` that outlives every execution of
    // the block; the generated code adds one to it per execution.
    unsafe {
        qemu_plugin_register_vcpu_tb_exec_inline(tb, INLINE_ADD_U64, count.cast(), 1);
    }
    let mut state = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    state.blocks.push(Block {
        vaddr,
        sizes,
        bytes,
        count,
    });
}

/// Called by QEMU when it exits: writes the report.
extern "C" fn exited(_id: PluginId, _userdata: *mut c_void) {
    let state = STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(out) = &state.out else {
        return;
    };
    let mut text = String::new();
    let lines = |text: &mut String, counts: &[u64]| {
        for (block, &count) in state.blocks.iter().zip(counts) {
            if count != 0 {
                text.push_str(&block.line(count));
                text.push('\n');
            }
        }
    };
    lines(&mut text, &state.counts());
    for (tag, counts) in &state.windows {
        let _ = writeln!(text, "window {tag}");
        lines(&mut text, counts);
    }
    if let Err(e) = std::fs::write(out, text) {
        eprintln!("qemu-profile: {out}: {e}");
    }
}

/// The value of the plugin argument `out=<file>`, if given.
pub fn out_argument<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<String> {
    args.into_iter()
        .find_map(|arg| arg.strip_prefix("out="))
        .map(str::to_owned)
}

/// QEMU's entry point: registers the callbacks. Fails (non-zero) without
/// an `out=<file>` argument.
///
/// # Safety
/// Called by QEMU only, with `argv` holding `argc` C strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let count = usize::try_from(argc).unwrap_or(0);
    let args: Vec<&str> = (0..count)
        // SAFETY: QEMU passes `argc` valid, NUL-terminated strings.
        .filter_map(|i| unsafe { CStr::from_ptr(*argv.add(i)) }.to_str().ok())
        .collect();
    let Some(out) = out_argument(args) else {
        eprintln!("qemu-profile: give the report's path as out=<file>");
        return 1;
    };
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .out = Some(out);
    // SAFETY: `id` is this plugin's id, as QEMU passed it.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
        qemu_plugin_register_atexit_cb(id, exited, core::ptr::null_mut());
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_line_names_address_count_sizes_and_bytes() {
        let block = Block {
            vaddr: 0xffff_8000_0000_1000,
            sizes: vec![1, 3],
            bytes: vec![0x90, 0x48, 0x89, 0xc3],
            count: core::ptr::null_mut(),
        };
        assert_eq!(block.line(7), "ffff800000001000 7 1,3 904889c3");
    }

    #[test]
    fn markers_are_told_by_opcode_kind_and_magic() {
        assert_eq!(
            marker(&[0x0f, 0x1f, 0x80, BEGIN, 7, b'P', b'O']),
            Some((BEGIN, 7))
        );
        assert_eq!(
            marker(&[0x0f, 0x1f, 0x80, END, 7, b'P', b'O']),
            Some((END, 7))
        );
        assert_eq!(marker(&[0x0f, 0x1f, 0x80, 0, 7, b'P', b'O']), None);
        assert_eq!(marker(&[0x0f, 0x1f, 0x80, BEGIN, 7, b'P', b'X']), None);
        assert_eq!(marker(&[0x0f, 0x1f, 0x80, BEGIN, 7, b'P']), None);
    }

    /// A block whose counter starts at `count`.
    fn block(count: u64) -> Block {
        Block {
            vaddr: 0,
            sizes: vec![1],
            bytes: vec![0x90],
            count: Box::into_raw(Box::new(count)),
        }
    }

    /// Runs `block` `n` more times, as translated code would count it.
    fn run(block: &Block, n: u64) {
        // SAFETY: the counter is a leaked `u64` of this test alone.
        unsafe { *block.count += n };
    }

    #[test]
    fn a_window_counts_what_ran_between_its_markers() {
        let mut state = State {
            blocks: vec![block(5)],
            out: None,
            open: Vec::new(),
            windows: Vec::new(),
        };
        state.mark(BEGIN, 3);
        run(&state.blocks[0], 2);
        state.blocks.push(block(0));
        run(&state.blocks[1], 4);
        state.mark(END, 3);
        run(&state.blocks[0], 100);
        state.mark(END, 3);
        state.mark(BEGIN, 3);
        run(&state.blocks[0], 1);
        state.mark(END, 3);
        assert_eq!(state.windows, vec![(3, vec![3, 4])]);
    }

    #[test]
    fn the_out_argument_is_found_among_others() {
        assert_eq!(
            out_argument(["x=1", "out=/tmp/p"]),
            Some("/tmp/p".to_owned())
        );
        assert_eq!(out_argument(["x=1"]), None);
    }
}
