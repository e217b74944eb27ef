//! Building a PV domU from a 64-bit Xen PV ELF, as `xl create` does.
//!
//! [`build`] makes the hypercalls libxl and libxenguest make for a PV
//! domain (see `docs/dom0.md` for the sequence and where it differs), in
//! this order, through the [`Hypervisor`] interface:
//!
//! 1. `createdomain` (flags 0, `max_evtchn_port` 1023, default grant and
//!    maptrack frames, grant version 1, the id chosen by the hypervisor);
//! 2. `max_vcpus`, `max_mem` (memory + 1 MiB);
//! 3. `EVTCHNOP_alloc_unbound` in the domU with dom0 (the xenstore and
//!    console back end) as remote end, twice: the xenstore event channel,
//!    then the console's;
//! 4. `set_address_size(64)`, then `populate_physmap` of every page
//!    (order 0, 512 extents per call);
//! 5. through foreign mappings: zero the image area, copy the kernel's
//!    segments, write the p2m list, `start_info` (with the xenstore and
//!    console pages and ports), the page tables;
//! 6. `getdomaininfo` for the `shared_info` frame; `hypercall_init` if the
//!    image has a `HYPERCALL_PAGE` note; `MMUEXT_PIN_L4_TABLE` with
//!    `foreigndom` = the domU (validating the tables); `shared_info`
//!    zeroed with every legacy `vcpu_info`'s upcall mask set;
//! 7. `setvcpucontext` of vCPU 0 (entry, stack, `start_info` in RSI,
//!    kernel mode, online, CR3 = the L4).
//!
//! The domain is left paused: the caller writes its xenstore nodes,
//! introduces it to the store, connects its console back end and then
//! unpauses it ([`Hypervisor::unpause`]). Any failure after
//! `createdomain` destroys the half-built domain.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::cpu::{VcpuGuestContext, VgcfFlags};
use dom0_abi::domctl::CreateDomain;
use dom0_abi::grant_table::{GrantEntryV1, GtfFlags};
use dom0_abi::layout::{PAGE_SHIFT, PAGE_SIZE};
use dom0_abi::segment::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use dom0_abi::start_info::{ConsoleInfo, START_INFO_MAGIC, StartInfo};
use dom0_abi::wire::Wire;
use pv_image::{GuestImageInfo, ImageError};

use crate::config::DomainConfig;
use crate::layout::{DomuLayout, LayoutError};

/// Bytes of a page, as a `usize`.
pub const PAGE_BYTES: usize = 4096;
/// Extents per `populate_physmap` call.
const POPULATE_BATCH: usize = 512;
/// `max_evtchn_port` of a new domain (libxl's default).
const MAX_EVTCHN_PORT: u32 = 1023;
/// Legacy `vcpu_info` slots in `shared_info`, 64 bytes each from offset 0;
/// byte 1 of each is `evtchn_upcall_mask`.
const LEGACY_VCPUS: usize = 32;
const VCPU_INFO_SIZE: usize = 64;
/// Initial RFLAGS: IF only (IOPL 0).
const RFLAGS_IF: u64 = 0x200;
/// Architectural reset values of DR6 and DR7.
const DR6_INIT: u64 = 0xFFFF_0FF0;
const DR7_INIT: u64 = 0x400;

/// A failed hypercall: which operation, and its (negative) result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvError {
    /// The operation, e.g. `"createdomain"`.
    pub op: &'static str,
    /// The hypercall's result (a negated errno), or `-ENOMEM` for a short
    /// `populate_physmap`.
    pub ret: i64,
}

impl core::fmt::Display for HvError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match i32::try_from(-self.ret)
            .ok()
            .and_then(dom0_abi::Errno::from_code)
        {
            Some(e) => write!(f, "{} failed: {} ({})", self.op, e.name(), self.ret),
            None => write!(f, "{} failed: {}", self.op, self.ret),
        }
    }
}

/// The hypercalls a toolstack makes, one method per operation (the
/// bare-metal implementation is `xen::Xen`; the tests use a fake).
pub trait Hypervisor {
    /// `createdomain`; returns the new domain's id.
    fn create_domain(&mut self, config: &CreateDomain) -> Result<u16, HvError>;
    /// `max_vcpus`.
    fn max_vcpus(&mut self, dom: u16, max: u32) -> Result<(), HvError>;
    /// `max_mem` in KiB.
    fn max_mem(&mut self, dom: u16, max_memkb: u64) -> Result<(), HvError>;
    /// `set_address_size`.
    fn set_address_size(&mut self, dom: u16, bits: u32) -> Result<(), HvError>;
    /// `EVTCHNOP_alloc_unbound` in `dom` for `remote`; returns the port.
    fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, HvError>;
    /// `populate_physmap` of order 0 for `dom`: `frames` holds pfns in and
    /// MFNs out; returns how many were populated.
    fn populate_physmap(&mut self, dom: u16, frames: &mut [u64]) -> Result<usize, HvError>;
    /// Writes `bytes` at byte `offset` of frame `mfn` of `dom` (through a
    /// temporary foreign mapping); the rest of the page is left alone.
    fn write_frame(
        &mut self,
        dom: u16,
        mfn: u64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), HvError>;
    /// `getdomaininfo(dom).shared_info_frame`.
    fn shared_info_frame(&mut self, dom: u16) -> Result<u64, HvError>;
    /// `GNTTABOP_setup_table` for `dom` with one frame: the MFN of its
    /// grant table's first frame.
    fn grant_table_frame(&mut self, dom: u16) -> Result<u64, HvError>;
    /// `hypercall_init` on frame `mfn`.
    fn hypercall_init(&mut self, dom: u16, mfn: u64) -> Result<(), HvError>;
    /// `mmuext_op(MMUEXT_PIN_L4_TABLE, mfn)` with `foreigndom = dom`.
    fn pin_l4(&mut self, dom: u16, mfn: u64) -> Result<(), HvError>;
    /// `setvcpucontext`.
    fn set_vcpu_context(
        &mut self,
        dom: u16,
        vcpu: u32,
        ctxt: &VcpuGuestContext,
    ) -> Result<(), HvError>;
    /// `unpausedomain`.
    fn unpause(&mut self, dom: u16) -> Result<(), HvError>;
    /// `destroydomain`.
    fn destroy(&mut self, dom: u16) -> Result<(), HvError>;
}

/// Why a domain could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The kernel image is refused (Xen's note rules).
    Image(ImageError),
    /// No layout fits the domain's memory.
    Layout(LayoutError),
    /// The caller's p2m buffer is smaller than the domain.
    P2mBuffer {
        /// Pages of the domain.
        pages: u64,
        /// Entries the buffer holds.
        capacity: usize,
    },
    /// A hypercall failed (the domain, if created, was destroyed).
    Hypervisor(HvError),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::Image(e) => write!(f, "kernel image refused: {e}"),
            BuildError::Layout(e) => write!(f, "{e}"),
            BuildError::P2mBuffer { pages, capacity } => write!(
                f,
                "domain of {pages} pages exceeds the toolstack's p2m buffer ({capacity})"
            ),
            BuildError::Hypervisor(e) => write!(f, "{e}"),
        }
    }
}

impl From<HvError> for BuildError {
    fn from(e: HvError) -> BuildError {
        BuildError::Hypervisor(e)
    }
}

/// A built, still paused domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// Its id.
    pub domid: u16,
    /// MFN of its console ring page.
    pub console_mfn: u64,
    /// Its console event channel (a port of the domU, unbound, remote dom0).
    pub console_port: u32,
    /// MFN of its xenstore ring page.
    pub store_mfn: u64,
    /// Its xenstore event channel (a port of the domU, unbound, remote dom0).
    pub store_port: u32,
    /// MFN of its `shared_info`.
    pub shared_info_mfn: u64,
    /// MFN of its bootstrap L4.
    pub l4_mfn: u64,
    /// Its layout.
    pub layout: DomuLayout,
    /// Entry point.
    pub entry: u64,
}

/// The `createdomain` arguments `xl` passes for a PV domain.
#[must_use]
pub fn create_config(cfg: &DomainConfig<'_>) -> CreateDomain {
    CreateDomain {
        max_vcpus: cfg.vcpus,
        max_evtchn_port: MAX_EVTCHN_PORT,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1,
        ..CreateDomain::default()
    }
}

/// Builds domain `cfg` from `kernel` (a 64-bit Xen PV ELF), leaving it
/// paused. `p2m` must hold at least one entry per page of the domain; it
/// receives the domain's MFNs.
pub fn build(
    hv: &mut impl Hypervisor,
    cfg: &DomainConfig<'_>,
    kernel: &[u8],
    p2m: &mut [u64],
) -> Result<Built, BuildError> {
    let image = GuestImageInfo::parse(kernel).map_err(BuildError::Image)?;
    let nr_pages = cfg.nr_pages();
    let layout = DomuLayout::new(image.virt_base, image.kstart, image.kend, nr_pages)
        .map_err(BuildError::Layout)?;
    let pages = usize::try_from(nr_pages)
        .ok()
        .filter(|&n| n <= p2m.len())
        .ok_or(BuildError::P2mBuffer {
            pages: nr_pages,
            capacity: p2m.len(),
        })?;
    let domid = hv.create_domain(&create_config(cfg))?;
    match populate_and_load(hv, domid, cfg, &image, layout, &mut p2m[..pages]) {
        Ok(built) => Ok(built),
        Err(e) => {
            // The error that matters is the first; a failed cleanup leaves
            // a domain the caller sees in `getdomaininfo`.
            let _ = hv.destroy(domid);
            Err(e)
        }
    }
}

/// Steps 2-7 for the created domain `domid`.
fn populate_and_load(
    hv: &mut impl Hypervisor,
    domid: u16,
    cfg: &DomainConfig<'_>,
    image: &GuestImageInfo<'_>,
    layout: DomuLayout,
    p2m: &mut [u64],
) -> Result<Built, BuildError> {
    hv.max_vcpus(domid, cfg.vcpus)?;
    hv.max_mem(domid, cfg.max_memkb())?;
    let store_port = hv.alloc_unbound(domid, 0)?;
    let console_port = hv.alloc_unbound(domid, 0)?;
    hv.set_address_size(domid, 64)?;
    populate(hv, domid, p2m)?;
    let mfn = |pfn: u64| {
        usize::try_from(pfn)
            .ok()
            .and_then(|i| p2m.get(i))
            .copied()
            .unwrap_or(0)
    };
    let zero = [0u8; PAGE_BYTES];
    for pfn in 0..=layout.stack_pfn {
        hv.write_frame(domid, mfn(pfn), 0, &zero)?;
    }
    load_segments(hv, domid, image, &layout, p2m)?;
    write_p2m(hv, domid, &layout, p2m)?;
    write_page_tables(hv, domid, &layout, p2m)?;
    let shared_info_mfn = hv.shared_info_frame(domid)?;
    let console_mfn = mfn(layout.console_pfn);
    let ports = Ports {
        store: store_port,
        console: console_port,
    };
    write_start_info(hv, domid, cfg, &layout, p2m, shared_info_mfn, ports)?;
    let store_mfn = mfn(layout.store_pfn);
    let table = hv.grant_table_frame(domid)?;
    hv.write_frame(domid, table, 0, &reserved_grants(console_mfn, store_mfn)?)?;
    if let Some(va) = image.hypercall_page {
        let pfn = (va - layout.virt_base) >> PAGE_SHIFT;
        hv.hypercall_init(domid, mfn(pfn))?;
    }
    let l4_mfn = mfn(layout.pt_pfn);
    hv.pin_l4(domid, l4_mfn)?;
    let mut shared = [0u8; PAGE_BYTES];
    for vcpu in 0..LEGACY_VCPUS {
        shared[vcpu * VCPU_INFO_SIZE + 1] = 1;
    }
    hv.write_frame(domid, shared_info_mfn, 0, &shared)?;
    let ctxt = initial_context(&layout, image.entry, l4_mfn);
    hv.set_vcpu_context(domid, 0, &ctxt)?;
    Ok(Built {
        domid,
        console_mfn,
        console_port,
        store_mfn,
        store_port,
        shared_info_mfn,
        l4_mfn,
        layout,
        entry: image.entry,
    })
}

/// Grant entries 0 (console) and 1 (xenstore) as libxenguest seeds them:
/// each grants dom0, the back end of both, its page (by MFN, for PV).
/// `EINVAL` for an MFN a v1 entry cannot hold (above 2^32).
fn reserved_grants(console_mfn: u64, store_mfn: u64) -> Result<[u8; 16], HvError> {
    let entry = |mfn: u64| {
        Ok(GrantEntryV1 {
            flags: GtfFlags::PERMIT_ACCESS.bits(),
            domid: 0,
            frame: u32::try_from(mfn).map_err(|_| HvError {
                op: "seed grant entries",
                ret: Errno::EINVAL.neg(),
            })?,
        })
    };
    let mut bytes = [0u8; 16];
    [entry(console_mfn)?, entry(store_mfn)?].to_wire(&mut bytes);
    Ok(bytes)
}

/// Populates every page (pfn `i` gets `p2m[i]`).
fn populate(hv: &mut impl Hypervisor, domid: u16, p2m: &mut [u64]) -> Result<(), HvError> {
    let mut pfn = 0u64;
    for batch in p2m.chunks_mut(POPULATE_BATCH) {
        for slot in batch.iter_mut() {
            *slot = pfn;
            pfn += 1;
        }
        let done = hv.populate_physmap(domid, batch)?;
        if done != batch.len() {
            return Err(HvError {
                op: "populate_physmap",
                ret: dom0_abi::Errno::ENOMEM.neg(),
            });
        }
    }
    Ok(())
}

/// Copies each loadable segment's file bytes to its pages (the rest,
/// `.bss` included, is already zero).
fn load_segments(
    hv: &mut impl Hypervisor,
    domid: u16,
    image: &GuestImageInfo<'_>,
    layout: &DomuLayout,
    p2m: &[u64],
) -> Result<(), HvError> {
    for segment in image.segments() {
        let mut va = segment.va;
        let mut bytes = segment.file_bytes;
        while !bytes.is_empty() {
            let offset = usize::try_from(va % PAGE_SIZE).unwrap_or(0);
            let chunk = bytes.len().min(PAGE_BYTES - offset);
            let pfn = (va - layout.virt_base) >> PAGE_SHIFT;
            let mfn = usize::try_from(pfn)
                .ok()
                .and_then(|i| p2m.get(i))
                .copied()
                .unwrap_or(0);
            hv.write_frame(domid, mfn, offset, &bytes[..chunk])?;
            bytes = &bytes[chunk..];
            va += chunk as u64;
        }
    }
    Ok(())
}

/// Writes the p2m list (8 bytes per page) into its pages.
fn write_p2m(
    hv: &mut impl Hypervisor,
    domid: u16,
    layout: &DomuLayout,
    p2m: &[u64],
) -> Result<(), HvError> {
    let mut page = [0u8; PAGE_BYTES];
    for (i, entries) in p2m.chunks(PAGE_BYTES / 8).enumerate() {
        page.fill(0);
        for (j, mfn) in entries.iter().enumerate() {
            page[j * 8..j * 8 + 8].copy_from_slice(&mfn.to_le_bytes());
        }
        let pfn = layout.p2m_pfn + i as u64;
        hv.write_frame(domid, p2m_at(p2m, pfn), 0, &page)?;
    }
    Ok(())
}

/// `p2m[pfn]`, or 0 outside it (the layout keeps every pfn inside).
fn p2m_at(p2m: &[u64], pfn: u64) -> u64 {
    usize::try_from(pfn)
        .ok()
        .and_then(|i| p2m.get(i))
        .copied()
        .unwrap_or(0)
}

/// Writes every bootstrap page-table frame.
fn write_page_tables(
    hv: &mut impl Hypervisor,
    domid: u16,
    layout: &DomuLayout,
    p2m: &[u64],
) -> Result<(), HvError> {
    let mut page = [0u8; PAGE_BYTES];
    for frame in 0..layout.nr_pt_frames {
        page.fill(0);
        layout.table_entries(frame, |slot, pfn, flags| {
            let value = (p2m_at(p2m, pfn) << PAGE_SHIFT) | flags;
            page[slot * 8..slot * 8 + 8].copy_from_slice(&value.to_le_bytes());
        });
        hv.write_frame(domid, p2m_at(p2m, layout.pt_pfn + frame), 0, &page)?;
    }
    Ok(())
}

/// A domU's event channels for its back ends.
#[derive(Clone, Copy)]
struct Ports {
    store: u32,
    console: u32,
}

/// Fills in `start_info` as libxenguest does for a PV domU (flags 0).
fn write_start_info(
    hv: &mut impl Hypervisor,
    domid: u16,
    cfg: &DomainConfig<'_>,
    layout: &DomuLayout,
    p2m: &[u64],
    shared_info_mfn: u64,
    ports: Ports,
) -> Result<(), HvError> {
    let mut si = StartInfo::zeroed();
    si.set_magic(START_INFO_MAGIC);
    si.nr_pages = layout.nr_pages;
    si.shared_info = shared_info_mfn << PAGE_SHIFT;
    si.store_mfn = p2m_at(p2m, layout.store_pfn);
    si.store_evtchn = ports.store;
    si.console = ConsoleInfo::dom_u(p2m_at(p2m, layout.console_pfn), ports.console);
    si.pt_base = layout.va(layout.pt_pfn);
    si.nr_pt_frames = layout.nr_pt_frames;
    si.mfn_list = layout.va(layout.p2m_pfn);
    si.set_cmdline(cfg.cmdline.as_bytes());
    let mut bytes = [0u8; StartInfo::SIZE];
    // The buffer is exactly `StartInfo::SIZE` bytes.
    let _ = si.to_wire(&mut bytes);
    hv.write_frame(domid, p2m_at(p2m, layout.start_info_pfn), 0, &bytes)
}

/// vCPU 0's first context, as libxenguest's `vcpu_x86_64`.
fn initial_context(layout: &DomuLayout, entry: u64, l4_mfn: u64) -> VcpuGuestContext {
    let mut ctxt = VcpuGuestContext::zeroed();
    let stack_top = layout.va(layout.stack_pfn + 1);
    ctxt.user_regs.rip = entry;
    ctxt.user_regs.rsp = stack_top;
    ctxt.user_regs.rsi = layout.va(layout.start_info_pfn);
    ctxt.user_regs.rflags = RFLAGS_IF;
    ctxt.user_regs.cs = FLAT_KERNEL_CS;
    ctxt.user_regs.ss = FLAT_KERNEL_SS;
    ctxt.kernel_ss = u64::from(FLAT_KERNEL_SS);
    ctxt.kernel_sp = stack_top;
    ctxt.debugreg[6] = DR6_INIT;
    ctxt.debugreg[7] = DR7_INIT;
    ctxt.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    ctxt.ctrlreg[3] = l4_mfn << PAGE_SHIFT;
    ctxt
}

#[cfg(test)]
mod tests;
