//! Event channels, 2-level ABI: a domain's ports, what each is bound to,
//! and how sending one sets the bits in shared_info that make an upcall.
//!
//! Xen 4.17's rules, which this module keeps:
//! - a 64-bit domain has [`NR_PORTS`] ports (64 words of 64 pending and
//!   mask bits), or fewer if its `max_evtchn_port` says so (dom0's does
//!   not); port 0 is reserved; a new port is the lowest free one;
//! - ports exist in buckets of [`BUCKET_PORTS`]: at first only bucket 0
//!   does, and a bucket is added when an allocation finds every existing
//!   port busy. A port outside the existing buckets is invalid
//!   (`EINVAL`); a free port inside them is "closed" for `status` and
//!   `unmask` (which acts on its mask bit). Buckets stay after a reset;
//! - each port notifies one vCPU (`notify_vcpu`, 0 when freed); a VIRQ
//!   is bound once per vCPU (global VIRQs only on vCPU 0);
//! - sending sets the port's pending bit; if it was clear and the port is
//!   unmasked, the notified vCPU's selector bit `port / 64`, and if that
//!   was clear its `evtchn_upcall_pending`. The vCPU takes the upcall when
//!   it next returns to the guest with upcalls unmasked, wherever it runs;
//! - closing a port clears its pending bit (not its mask bit) and makes
//!   the other end of an interdomain pair unbound again.
//!
//! The bits live in the domain's shared_info page, which the guest writes
//! concurrently: [`EventBits`] is the page as the architecture reaches it
//! (atomic bit operations), so this logic is tested on the host.
//!
//! Only the domain itself is reachable here: interdomain ports connect
//! ports of the same domain (a loopback), and every other domain id is
//! `ESRCH`, as Xen answers for a domain that does not exist.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use dom0_abi::Errno;
use dom0_abi::event_channel::{EvtchnStat, EvtchnStatus, NR_VIRQS, Virq};
use dom0_abi::types::DomId;

use crate::index::bounded;

/// Bits in one word of the pending and mask bitmaps (and selector bits).
pub const WORD_BITS: u32 = 64;
/// Ports of the 2-level ABI for a 64-bit guest (`EVTCHN_2L_NR_CHANNELS`).
pub const NR_PORTS: u32 = WORD_BITS * WORD_BITS;
/// Ports per bucket (Xen: a page of 64-byte channel records).
pub const BUCKET_PORTS: u32 = 64;
/// Bytes of a FIFO control block (`evtchn_fifo_control_block`).
const FIFO_CONTROL_BLOCK_BYTES: u32 = 72;
/// Page size, for the FIFO control block's offset check.
const PAGE_BYTES: u32 = 4096;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Binding {
    /// Not in use.
    #[default]
    Free,
    /// Port 0: never allocated.
    Reserved,
    /// Allocated, waiting for `remote` to bind to it.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `port` of `remote`.
    Interdomain {
        /// The other end's domain.
        remote: DomId,
        /// The other end's port.
        port: u32,
    },
    /// A VIRQ.
    Virq(u32),
    /// An IPI between vCPUs of the domain.
    Ipi,
    /// A physical IRQ (`bind_pirq`).
    Pirq(u32),
}

/// One port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    /// What it is bound to.
    pub binding: Binding,
    /// The vCPU it notifies.
    pub notify_vcpu: u32,
}

/// The domain's shared_info page as far as events go. Every operation is
/// one atomic access of the page (the guest changes it concurrently).
/// `port` is below [`NR_PORTS`], `vcpu` below the domain's vCPU count.
pub trait EventBits {
    /// Sets `evtchn_pending[port]`; returns whether it was set already.
    fn test_and_set_pending(&mut self, port: u32) -> bool;
    /// Clears `evtchn_pending[port]`.
    fn clear_pending(&mut self, port: u32);
    /// Whether `evtchn_pending[port]` is set.
    fn is_pending(&self, port: u32) -> bool;
    /// Whether `evtchn_mask[port]` is set.
    fn is_masked(&self, port: u32) -> bool;
    /// Clears `evtchn_mask[port]`; returns whether it was set.
    fn test_and_clear_mask(&mut self, port: u32) -> bool;
    /// Sets bit `word` of vCPU `vcpu`'s `evtchn_pending_sel`; returns
    /// whether it was set already.
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool;
    /// Sets vCPU `vcpu`'s `evtchn_upcall_pending`; returns whether it was
    /// set already.
    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool;
    /// Whether vCPU `vcpu`'s `evtchn_upcall_pending` is set.
    fn upcall_pending(&self, vcpu: u32) -> bool;
    /// Whether vCPU `vcpu`'s `evtchn_upcall_mask` is set.
    fn upcall_masked(&self, vcpu: u32) -> bool;
    /// Sets or clears vCPU `vcpu`'s `evtchn_upcall_mask`.
    fn set_upcall_mask(&mut self, vcpu: u32, masked: bool);
    /// The vCPUs whose `evtchn_upcall_pending` went from clear to set
    /// since the last call (bit `n`: vCPU `n`), which Xen "kicks": it
    /// wakes them if they sleep in the hypervisor. An implementation may
    /// leave out a vCPU it knows to be awake (the caller's own).
    fn take_kicked(&mut self) -> u64;
}

/// A domain's event channels.
#[derive(Clone, Debug)]
pub struct EventChannels {
    /// The domain they belong to.
    domain: DomId,
    /// The existing buckets' ports (a multiple of [`BUCKET_PORTS`]).
    ports: Vec<Channel>,
    /// The highest port that may be allocated (Xen's `max_evtchn_port`).
    max_port: u32,
    /// Per vCPU, the port of each VIRQ (0: not bound).
    virqs: Vec<[u32; NR_VIRQS as usize]>,
    /// Whether a port was ever bound so that a send on it stays in the
    /// domain (an IPI port, a loopback interdomain pair): never cleared,
    /// so that `false` means no port has a [`EventChannels::local_target`].
    local_bound: bool,
}

/// Whether a VIRQ is bound on vCPU 0 only (every VIRQ but the per-vCPU
/// ones; on x86 the architectural ones are global too).
pub fn virq_is_global(virq: u32) -> bool {
    !matches!(
        Virq::from_number(u64::from(virq)),
        Some(Virq::Timer | Virq::Debug | Virq::Xenoprof | Virq::Xenpmu)
    )
}

impl EventChannels {
    /// The channels of a new domain `domain` with `vcpus` vCPUs: bucket 0,
    /// port 0 reserved, every port of the 2-level ABI allowed (dom0's
    /// limit on Xen).
    pub fn new(domain: DomId, vcpus: u32) -> EventChannels {
        let mut ports = alloc::vec![Channel::default(); BUCKET_PORTS as usize];
        ports[0].binding = Binding::Reserved;
        EventChannels {
            domain,
            ports,
            max_port: NR_PORTS - 1,
            virqs: alloc::vec![[0; NR_VIRQS as usize]; vcpus as usize],
            local_bound: false,
        }
    }

    /// The same, allowing ports up to `max_port` only (the toolstack's
    /// `max_evtchn_port` for a domain; the 2-level ABI's limit still holds).
    #[must_use]
    pub fn with_max_port(mut self, max_port: u32) -> EventChannels {
        self.max_port = max_port.min(NR_PORTS - 1);
        self
    }

    /// How many ports exist now (Xen's `valid_evtchns`).
    pub fn valid_ports(&self) -> u32 {
        u32::try_from(self.ports.len()).unwrap_or(NR_PORTS)
    }

    /// Port `port`, if it exists.
    pub fn channel(&self, port: u32) -> Option<&Channel> {
        bounded(u64::from(port), self.ports.len()).map(|i| &self.ports[i])
    }

    fn channel_mut(&mut self, port: u32) -> Result<&mut Channel, Errno> {
        bounded(u64::from(port), self.ports.len())
            .map(|i| &mut self.ports[i])
            .ok_or(Errno::EINVAL)
    }

    fn vcpus(&self) -> u32 {
        u32::try_from(self.virqs.len()).unwrap_or(0)
    }

    /// `Ok` for this domain (by id or `DOMID_SELF`), `ESRCH` for any
    /// other: no other domain is reachable.
    fn this_domain(&self, dom: DomId) -> Result<(), Errno> {
        if dom == DomId::SELF || dom == self.domain {
            Ok(())
        } else {
            Err(Errno::ESRCH)
        }
    }

    /// `ENOENT` unless the domain has vCPU `vcpu`.
    fn check_vcpu(&self, vcpu: u32) -> Result<(), Errno> {
        if vcpu < self.vcpus() {
            Ok(())
        } else {
            Err(Errno::ENOENT)
        }
    }

    /// The lowest free port, adding a bucket when every existing port is
    /// busy; `ENOSPC` when every port up to the domain's highest allowed
    /// one is.
    fn free_port(&mut self) -> Result<u32, Errno> {
        if let Some(port) = self.ports.iter().position(|c| c.binding == Binding::Free) {
            return u32::try_from(port)
                .ok()
                .filter(|&port| port <= self.max_port)
                .ok_or(Errno::ENOSPC);
        }
        let first = self.valid_ports();
        if first >= NR_PORTS || first > self.max_port {
            return Err(Errno::ENOSPC);
        }
        self.ports
            .resize(self.ports.len() + BUCKET_PORTS as usize, Channel::default());
        Ok(first)
    }

    /// Makes `port` pending for its vCPU `vcpu` (Xen's 2-level
    /// `set_pending`).
    fn set_pending(bits: &mut (impl EventBits + ?Sized), port: u32, vcpu: u32) {
        if bits.test_and_set_pending(port) {
            return;
        }
        if !bits.is_masked(port) && !bits.test_and_set_selector(vcpu, port / WORD_BITS) {
            bits.test_and_set_upcall_pending(vcpu);
        }
    }

    /// `EVTCHNOP_alloc_unbound` in domain `dom` for `remote` (which need
    /// not exist; `DOMID_SELF` means this domain). Returns the port.
    pub fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<u32, Errno> {
        self.this_domain(dom)?;
        let port = self.free_port()?;
        let remote = if remote == DomId::SELF {
            self.domain
        } else {
            remote
        };
        *self.channel_mut(port)? = Channel {
            binding: Binding::Unbound { remote },
            notify_vcpu: 0,
        };
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain` to `remote_port` of `remote` (only this
    /// domain is reachable). The new local port starts pending. Returns it.
    pub fn bind_interdomain(
        &mut self,
        bits: &mut (impl EventBits + ?Sized),
        remote: DomId,
        remote_port: u32,
    ) -> Result<u32, Errno> {
        self.this_domain(remote)?;
        let local = self.free_port()?;
        let me = self.domain;
        let other = self.channel_mut(remote_port)?;
        if other.binding != (Binding::Unbound { remote: me }) {
            return Err(Errno::EINVAL);
        }
        other.binding = Binding::Interdomain {
            remote: me,
            port: local,
        };
        let new = self.channel_mut(local)?;
        *new = Channel {
            binding: Binding::Interdomain {
                remote: me,
                port: remote_port,
            },
            notify_vcpu: 0,
        };
        self.local_bound = true;
        Self::set_pending(bits, local, 0);
        Ok(local)
    }

    /// Whether a send on some port may stay in the domain (a port with a
    /// [`EventChannels::local_target`] was ever bound): `false` holds
    /// until the first IPI or loopback port, for the event lane's quick
    /// decline.
    #[must_use]
    pub fn may_send_locally(&self) -> bool {
        self.local_bound
    }

    /// The domain these channels belong to.
    pub fn domain(&self) -> DomId {
        self.domain
    }

    /// `EVTCHNOP_alloc_unbound` in this domain made by another (the
    /// control domain), for `remote` (`DOMID_SELF` already resolved to
    /// the caller). Returns the port.
    pub fn alloc_unbound_for(&mut self, remote: DomId) -> Result<u32, Errno> {
        let port = self.free_port()?;
        *self.channel_mut(port)? = Channel {
            binding: Binding::Unbound { remote },
            notify_vcpu: 0,
        };
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain` to `remote_port` of another domain,
    /// whose channels are `peer`: that port must be unbound and name this
    /// domain (`EINVAL`). Both ends become interdomain; the new local
    /// port starts pending. Returns it.
    pub fn bind_interdomain_with(
        &mut self,
        bits: &mut dyn EventBits,
        peer: &mut EventChannels,
        remote_port: u32,
    ) -> Result<u32, Errno> {
        let local = self.free_port()?;
        let me = self.domain;
        let other = peer.channel_mut(remote_port)?;
        if other.binding != (Binding::Unbound { remote: me }) {
            return Err(Errno::EINVAL);
        }
        other.binding = Binding::Interdomain {
            remote: me,
            port: local,
        };
        *self.channel_mut(local)? = Channel {
            binding: Binding::Interdomain {
                remote: peer.domain,
                port: remote_port,
            },
            notify_vcpu: 0,
        };
        Self::set_pending(bits, local, 0);
        Ok(local)
    }

    /// The other end of `port` when it is an interdomain port connected
    /// to another domain: that domain and its port.
    pub fn remote_end(&self, port: u32) -> Option<(DomId, u32)> {
        match self.channel(port)?.binding {
            Binding::Interdomain { remote, port } if remote != self.domain => Some((remote, port)),
            _ => None,
        }
    }

    /// Raises `port`, the end of an interdomain channel another domain
    /// sent on, for the vCPU it notifies.
    pub fn raise(&self, bits: &mut dyn EventBits, port: u32) {
        if let Some(channel) = self.channel(port)
            && matches!(channel.binding, Binding::Interdomain { .. })
        {
            Self::set_pending(bits, port, channel.notify_vcpu);
        }
    }

    /// Raises `port` if it is bound to a PIRQ (its line fired).
    pub fn raise_pirq(&self, bits: &mut (impl EventBits + ?Sized), port: u32) {
        if let Some(channel) = self.channel(port)
            && matches!(channel.binding, Binding::Pirq(_))
        {
            Self::set_pending(bits, port, channel.notify_vcpu);
        }
    }

    /// `EVTCHNOP_bind_pirq`'s port: a free one bound to `pirq`, notifying
    /// vCPU 0 (`bind_vcpu` may move it).
    pub fn bind_pirq(&mut self, pirq: u32) -> Result<u32, Errno> {
        let port = self.free_port()?;
        *self.channel_mut(port)? = Channel {
            binding: Binding::Pirq(pirq),
            notify_vcpu: 0,
        };
        Ok(port)
    }

    /// The other end of `port` was closed by `closer` (or `closer` was
    /// destroyed): `port` becomes unbound, bindable again by `closer`.
    pub fn disconnect(&mut self, port: u32, closer: DomId) {
        if let Ok(channel) = self.channel_mut(port)
            && matches!(channel.binding, Binding::Interdomain { remote, .. } if remote == closer)
        {
            channel.binding = Binding::Unbound { remote: closer };
        }
    }

    /// Every port connected to another domain, as (that domain, its port):
    /// the ends to disconnect when this domain goes away.
    pub fn remote_ends(&self) -> Vec<(DomId, u32)> {
        (0..self.valid_ports())
            .filter_map(|port| self.remote_end(port))
            .collect()
    }

    /// `EVTCHNOP_bind_virq` of `virq` on `vcpu`. Returns the port.
    pub fn bind_virq(&mut self, virq: u32, vcpu: u32) -> Result<u32, Errno> {
        let slot = bounded(u64::from(virq), NR_VIRQS as usize).ok_or(Errno::EINVAL)?;
        if virq_is_global(virq) && vcpu != 0 {
            return Err(Errno::EINVAL);
        }
        let v = bounded(u64::from(vcpu), self.virqs.len()).ok_or(Errno::ENOENT)?;
        if self.virqs[v][slot] != 0 {
            return Err(Errno::EEXIST);
        }
        let port = self.free_port()?;
        *self.channel_mut(port)? = Channel {
            binding: Binding::Virq(virq),
            notify_vcpu: vcpu,
        };
        self.virqs[v][slot] = port;
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi` to `vcpu`. Returns the port.
    pub fn bind_ipi(&mut self, vcpu: u32) -> Result<u32, Errno> {
        self.check_vcpu(vcpu)?;
        let port = self.free_port()?;
        *self.channel_mut(port)? = Channel {
            binding: Binding::Ipi,
            notify_vcpu: vcpu,
        };
        self.local_bound = true;
        Ok(port)
    }

    /// `EVTCHNOP_bind_vcpu`: `port` notifies `vcpu` from now on (unbound,
    /// interdomain, PIRQ and global-VIRQ ports; `EINVAL` for the others).
    /// Bits already set stay where they are.
    pub fn bind_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Errno> {
        self.check_vcpu(vcpu)?;
        let channel = self.channel_mut(port)?;
        match channel.binding {
            Binding::Virq(virq) if virq_is_global(virq) => channel.notify_vcpu = vcpu,
            Binding::Unbound { .. } | Binding::Interdomain { .. } | Binding::Pirq(_) => {
                channel.notify_vcpu = vcpu;
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// Frees `port`: its pending bit is cleared (its mask bit is left),
    /// it notifies vCPU 0 again.
    fn free(&mut self, bits: &mut (impl EventBits + ?Sized), port: u32) -> Result<(), Errno> {
        bits.clear_pending(port);
        *self.channel_mut(port)? = Channel::default();
        Ok(())
    }

    /// `EVTCHNOP_close`: frees `port`; the other end of an interdomain
    /// port becomes unbound, bindable again by this domain.
    pub fn close(&mut self, bits: &mut (impl EventBits + ?Sized), port: u32) -> Result<(), Errno> {
        let channel = *self.channel_mut(port)?;
        match channel.binding {
            Binding::Free | Binding::Reserved => return Err(Errno::EINVAL),
            Binding::Unbound { .. } | Binding::Ipi | Binding::Pirq(_) => {}
            Binding::Virq(virq) => {
                let vcpu = if virq_is_global(virq) {
                    0
                } else {
                    channel.notify_vcpu
                };
                let slot = bounded(u64::from(virq), NR_VIRQS as usize);
                let v = bounded(u64::from(vcpu), self.virqs.len());
                if let (Some(slot), Some(v)) = (slot, v) {
                    self.virqs[v][slot] = 0;
                }
            }
            Binding::Interdomain {
                remote,
                port: other,
            } => {
                if remote == self.domain {
                    let me = self.domain;
                    self.channel_mut(other)?.binding = Binding::Unbound { remote: me };
                }
            }
        }
        self.free(bits, port)
    }

    /// `EVTCHNOP_send` on `port`: the other end of an interdomain port, or
    /// the IPI port itself, becomes pending; an unbound port drops it.
    #[inline]
    pub fn send(&mut self, bits: &mut (impl EventBits + ?Sized), port: u32) -> Result<(), Errno> {
        let channel = *self.channel_mut(port)?;
        match channel.binding {
            Binding::Interdomain {
                remote,
                port: other,
            } if remote == self.domain => {
                let vcpu = self.channel_mut(other)?.notify_vcpu;
                Self::set_pending(bits, other, vcpu);
            }
            Binding::Ipi => Self::set_pending(bits, port, channel.notify_vcpu),
            Binding::Unbound { .. } => {}
            _ => return Err(Errno::EINVAL),
        }
        Ok(())
    }

    /// The vCPU that [`EventChannels::send`] on `port` makes the port
    /// pending for, when the event stays in this domain and the send
    /// succeeds: an IPI port, or a loopback interdomain port (its other
    /// end's vCPU). `None` for every other port: another domain's end, an
    /// unbound one (the send drops the event), or an error.
    #[inline]
    #[must_use]
    pub fn local_target(&self, port: u32) -> Option<u32> {
        let channel = self.channel(port)?;
        match channel.binding {
            Binding::Interdomain {
                remote,
                port: other,
            } if remote == self.domain => Some(self.channel(other)?.notify_vcpu),
            Binding::Ipi => Some(channel.notify_vcpu),
            _ => None,
        }
    }

    /// Raises VIRQ `virq` of vCPU `vcpu` (global VIRQs: of the domain),
    /// if a port is bound to it; a VIRQ nobody bound is dropped.
    pub fn send_virq(&self, bits: &mut (impl EventBits + ?Sized), virq: Virq, vcpu: u32) {
        let vcpu = if virq_is_global(virq as u32) { 0 } else { vcpu };
        let port = bounded(u64::from(vcpu), self.virqs.len())
            .and_then(|v| self.virqs[v].get(virq as usize).copied())
            .unwrap_or(0);
        if let Some(channel) = self.channel(port).filter(|_| port != 0) {
            Self::set_pending(bits, port, channel.notify_vcpu);
        }
    }

    /// Whether vCPU `vcpu` has a port bound to VIRQ `virq`.
    pub fn virq_bound(&self, virq: Virq, vcpu: u32) -> bool {
        bounded(u64::from(vcpu), self.virqs.len())
            .and_then(|v| self.virqs[v].get(virq as usize))
            .is_some_and(|&port| port != 0)
    }

    /// `EVTCHNOP_status`: fills `status`, `vcpu` and the state's part of
    /// `u` in `s` for port `s.port` of `s.dom`, leaving the rest as the
    /// guest gave it.
    pub fn status(&self, s: &mut EvtchnStatus) -> Result<(), Errno> {
        self.this_domain(DomId(s.dom))?;
        let channel = self.channel(s.port).ok_or(Errno::EINVAL)?;
        let (stat, detail) = match channel.binding {
            Binding::Free | Binding::Reserved => (EvtchnStat::Closed, None),
            Binding::Unbound { remote } => {
                s.u[0] = (s.u[0] & 0xffff_0000) | u32::from(remote.0);
                (EvtchnStat::Unbound, None)
            }
            Binding::Interdomain { remote, port } => {
                s.u[0] = (s.u[0] & 0xffff_0000) | u32::from(remote.0);
                (EvtchnStat::Interdomain, Some((1, port)))
            }
            Binding::Pirq(pirq) => (EvtchnStat::Pirq, Some((0, pirq))),
            Binding::Virq(virq) => (EvtchnStat::Virq, Some((0, virq))),
            Binding::Ipi => (EvtchnStat::Ipi, None),
        };
        if let Some((word, value)) = detail {
            s.u[word] = value;
        }
        s.status = stat as u32;
        s.vcpu = channel.notify_vcpu;
        Ok(())
    }

    /// `EVTCHNOP_unmask`: clears `port`'s mask bit; if it was set and the
    /// port is pending, raises it on its vCPU as a send would have.
    pub fn unmask(&self, bits: &mut (impl EventBits + ?Sized), port: u32) -> Result<(), Errno> {
        let channel = self.channel(port).ok_or(Errno::EINVAL)?;
        if bits.test_and_clear_mask(port)
            && bits.is_pending(port)
            && !bits.test_and_set_selector(channel.notify_vcpu, port / WORD_BITS)
        {
            bits.test_and_set_upcall_pending(channel.notify_vcpu);
        }
        Ok(())
    }

    /// `EVTCHNOP_reset` of `dom`: closes every port (the buckets stay).
    pub fn reset(&mut self, bits: &mut (impl EventBits + ?Sized), dom: DomId) -> Result<(), Errno> {
        self.this_domain(dom)?;
        for port in 1..self.valid_ports() {
            // Free ports answer EINVAL, as on Xen; nothing else can fail.
            let _ = self.close(bits, port);
        }
        Ok(())
    }

    /// `EVTCHNOP_reset_cont`: the continuation of a reset, which here
    /// never needs one: `EBUSY` (no reset under way), as on Xen.
    pub fn reset_cont(&self, dom: DomId) -> Result<(), Errno> {
        self.this_domain(dom)?;
        Err(Errno::EBUSY)
    }

    /// `EVTCHNOP_set_priority` on a 2-level domain: `EINVAL` for a port
    /// that does not exist, else `ENOSYS` (2-level ports have no priority).
    pub fn set_priority(&self, port: u32) -> Result<(), Errno> {
        self.channel(port).ok_or(Errno::EINVAL)?;
        Err(Errno::ENOSYS)
    }

    /// `EVTCHNOP_init_control`: Xen's checks of the vCPU (`ENOENT`) and of
    /// the control block's offset (`EINVAL`: past the page or not 8-byte
    /// aligned); the FIFO ABI itself is not implemented (`ENOSYS`).
    pub fn init_control(&self, vcpu: u32, offset: u32) -> Result<(), Errno> {
        self.check_vcpu(vcpu)?;
        if offset > PAGE_BYTES - FIFO_CONTROL_BLOCK_BYTES || !offset.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        Err(Errno::ENOSYS)
    }
}

#[cfg(test)]
pub mod fake {
    //! Bitmaps in plain memory, for the host tests.
    use super::{EventBits, WORD_BITS};

    /// The event part of a shared_info page.
    #[derive(Clone, Debug)]
    pub struct FakeBits {
        /// `evtchn_pending`.
        pub pending: [u64; 64],
        /// `evtchn_mask`.
        pub mask: [u64; 64],
        /// Each vCPU's `evtchn_pending_sel`.
        pub selector: [u64; 32],
        /// Each vCPU's `evtchn_upcall_pending`.
        pub upcall: [u8; 32],
        /// Each vCPU's `evtchn_upcall_mask`.
        pub upcall_mask: [u8; 32],
        /// The vCPUs kicked since the last `take_kicked`.
        pub kicked: u64,
    }

    impl Default for FakeBits {
        fn default() -> Self {
            FakeBits {
                pending: [0; 64],
                mask: [0; 64],
                selector: [0; 32],
                upcall: [0; 32],
                upcall_mask: [0; 32],
                kicked: 0,
            }
        }
    }

    fn at(port: u32) -> (usize, u64) {
        ((port / WORD_BITS) as usize, 1 << (port % WORD_BITS))
    }

    impl FakeBits {
        /// Whether `port` is pending.
        pub fn pending(&self, port: u32) -> bool {
            let (w, b) = at(port);
            self.pending[w] & b != 0
        }
        /// Masks or unmasks `port` as the guest does, by hand.
        pub fn set_mask(&mut self, port: u32, masked: bool) {
            let (w, b) = at(port);
            if masked {
                self.mask[w] |= b;
            } else {
                self.mask[w] &= !b;
            }
        }
    }

    impl EventBits for FakeBits {
        fn test_and_set_pending(&mut self, port: u32) -> bool {
            let (w, b) = at(port);
            let old = self.pending[w] & b != 0;
            self.pending[w] |= b;
            old
        }
        fn clear_pending(&mut self, port: u32) {
            let (w, b) = at(port);
            self.pending[w] &= !b;
        }
        fn is_pending(&self, port: u32) -> bool {
            self.pending(port)
        }
        fn is_masked(&self, port: u32) -> bool {
            let (w, b) = at(port);
            self.mask[w] & b != 0
        }
        fn test_and_clear_mask(&mut self, port: u32) -> bool {
            let (w, b) = at(port);
            let old = self.mask[w] & b != 0;
            self.mask[w] &= !b;
            old
        }
        fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool {
            let b = 1u64 << word;
            let old = self.selector[vcpu as usize] & b != 0;
            self.selector[vcpu as usize] |= b;
            old
        }
        fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool {
            let old = self.upcall[vcpu as usize] != 0;
            self.upcall[vcpu as usize] = 1;
            if !old {
                self.kicked |= 1 << vcpu;
            }
            old
        }
        fn upcall_pending(&self, vcpu: u32) -> bool {
            self.upcall[vcpu as usize] != 0
        }
        fn upcall_masked(&self, vcpu: u32) -> bool {
            self.upcall_mask[vcpu as usize] != 0
        }
        fn set_upcall_mask(&mut self, vcpu: u32, masked: bool) {
            self.upcall_mask[vcpu as usize] = u8::from(masked);
        }
        fn take_kicked(&mut self) -> u64 {
            core::mem::take(&mut self.kicked)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeBits;
    use super::*;

    const ME: DomId = DomId(0);

    fn table(vcpus: u32) -> (EventChannels, FakeBits) {
        (EventChannels::new(ME, vcpus), FakeBits::default())
    }

    fn status(t: &EventChannels, port: u32) -> Result<EvtchnStatus, Errno> {
        let mut s = EvtchnStatus {
            dom: DomId::SELF.0,
            port,
            u: [0xaaaa_aaaa; 2],
            ..Default::default()
        };
        t.status(&mut s).map(|()| s)
    }

    #[test]
    fn allocation_is_lowest_free_from_one_in_buckets() {
        let (mut t, _) = table(1);
        assert_eq!(t.valid_ports(), 64);
        assert_eq!(t.alloc_unbound(DomId::SELF, DomId::SELF), Ok(1));
        assert_eq!(t.alloc_unbound(ME, DomId(7)), Ok(2));
        assert_eq!(t.alloc_unbound(DomId(1), ME), Err(Errno::ESRCH));
        for expected in 3..NR_PORTS {
            assert_eq!(t.alloc_unbound(ME, ME), Ok(expected));
            assert_eq!(t.valid_ports(), (expected / 64 + 1) * 64);
        }
        assert_eq!(t.alloc_unbound(ME, ME), Err(Errno::ENOSPC));
        assert_eq!(t.bind_ipi(0), Err(Errno::ENOSPC));
        let mut bits = FakeBits::default();
        assert_eq!(t.reset(&mut bits, DomId::SELF), Ok(()));
        assert_eq!(t.valid_ports(), NR_PORTS, "buckets stay");
        assert_eq!(t.alloc_unbound(ME, ME), Ok(1));
        assert_eq!(t.reset_cont(ME), Err(Errno::EBUSY));
        assert_eq!(t.reset(&mut bits, DomId(3)), Err(Errno::ESRCH));
    }

    #[test]
    fn max_port_limits_allocation() {
        let mut t = EventChannels::new(DomId(3), 1).with_max_port(70);
        for expected in 1..=70 {
            assert_eq!(t.bind_ipi(0), Ok(expected));
        }
        assert_eq!(t.alloc_unbound(DomId::SELF, ME), Err(Errno::ENOSPC));
        assert_eq!(t.valid_ports(), 128, "the bucket of port 70 exists");
        let mut t = EventChannels::new(DomId(3), 1).with_max_port(63);
        for _ in 1..=63 {
            t.bind_ipi(0).unwrap();
        }
        assert_eq!(t.bind_ipi(0), Err(Errno::ENOSPC));
        assert_eq!(t.valid_ports(), 64, "no bucket beyond the limit");
        let t = EventChannels::new(DomId(3), 1).with_max_port(u32::MAX);
        assert_eq!(t.max_port, NR_PORTS - 1);
    }

    #[test]
    fn status_writes_only_its_fields() {
        let (mut t, mut bits) = table(2);
        let s = status(&t, 0).unwrap();
        assert_eq!((s.status, s.vcpu, s.u), (0, 0, [0xaaaa_aaaa; 2]));
        assert_eq!(status(&t, 64), Err(Errno::EINVAL));
        let a = t.alloc_unbound(ME, DomId(9)).unwrap();
        let s = status(&t, a).unwrap();
        assert_eq!((s.status, s.u), (1, [0xaaaa_0009, 0xaaaa_aaaa]));
        let b = t.alloc_unbound(ME, DomId::SELF).unwrap();
        let c = t.bind_interdomain(&mut bits, DomId::SELF, b).unwrap();
        let s = status(&t, c).unwrap();
        assert_eq!((s.status, s.u), (2, [0xaaaa_0000, b]));
        let v = t.bind_virq(Virq::Debug as u32, 1).unwrap();
        let s = status(&t, v).unwrap();
        assert_eq!((s.status, s.vcpu, s.u), (4, 1, [1, 0xaaaa_aaaa]));
        let i = t.bind_ipi(1).unwrap();
        let s = status(&t, i).unwrap();
        assert_eq!((s.status, s.vcpu, s.u), (5, 1, [0xaaaa_aaaa; 2]));
        let mut other = EvtchnStatus {
            dom: 1,
            port: 1,
            ..Default::default()
        };
        assert_eq!(t.status(&mut other), Err(Errno::ESRCH));
    }

    #[test]
    fn loopback_pair_send_and_close() {
        let (mut t, mut bits) = table(2);
        let a = t.alloc_unbound(ME, ME).unwrap();
        let far = t.alloc_unbound(ME, DomId(5)).unwrap();
        assert_eq!(
            t.bind_interdomain(&mut bits, ME, far),
            Err(Errno::EINVAL),
            "not for us"
        );
        assert_eq!(t.bind_interdomain(&mut bits, ME, 0), Err(Errno::EINVAL));
        assert_eq!(t.bind_interdomain(&mut bits, ME, 999), Err(Errno::EINVAL));
        assert_eq!(
            t.bind_interdomain(&mut bits, DomId(1), a),
            Err(Errno::ESRCH)
        );
        let b = t.bind_interdomain(&mut bits, ME, a).unwrap();
        assert_eq!(b, 3);
        assert!(bits.pending(b), "the new port starts pending");
        assert_eq!((bits.selector[0], bits.upcall[0]), (1, 1));
        assert_eq!(t.bind_interdomain(&mut bits, ME, a), Err(Errno::EINVAL));
        bits = FakeBits::default();
        t.bind_vcpu(a, 1).unwrap();
        t.send(&mut bits, b).unwrap();
        assert!(bits.pending(a) && !bits.pending(b));
        assert_eq!(
            (bits.selector, bits.upcall[..2].to_vec()),
            (
                {
                    let mut s = [0; 32];
                    s[1] = 1;
                    s
                },
                vec![0, 1]
            )
        );
        bits.set_mask(a, true);
        t.close(&mut bits, a).unwrap();
        assert!(
            !bits.pending(a) && bits.is_masked(a),
            "pending cleared, mask kept"
        );
        assert_eq!(
            t.channel(b).unwrap().binding,
            Binding::Unbound { remote: ME }
        );
        assert_eq!(t.channel(a).unwrap(), &Channel::default());
        assert_eq!(t.send(&mut bits, b), Ok(()), "unbound: dropped");
        assert_eq!(t.send(&mut bits, a), Err(Errno::EINVAL));
        assert_eq!(t.close(&mut bits, a), Err(Errno::EINVAL));
        assert_eq!(t.close(&mut bits, 0), Err(Errno::EINVAL));
        assert_eq!(t.close(&mut bits, u32::MAX), Err(Errno::EINVAL));
    }

    #[test]
    fn masks_selectors_and_unmask() {
        let (mut t, mut bits) = table(1);
        let p = t.bind_ipi(0).unwrap();
        bits.set_mask(p, true);
        t.send(&mut bits, p).unwrap();
        assert!(bits.pending(p));
        assert_eq!((bits.selector[0], bits.upcall[0]), (0, 0), "masked");
        t.unmask(&mut bits, p).unwrap();
        assert_eq!((bits.selector[0], bits.upcall[0]), (1, 1), "re-raised");
        bits = FakeBits::default();
        bits.pending[0] = 1 << p;
        t.unmask(&mut bits, p).unwrap();
        assert_eq!(bits.upcall[0], 0, "not masked before: nothing");
        t.send(&mut bits, p).unwrap();
        assert_eq!(bits.upcall[0], 0, "already pending: nothing");
        assert_eq!(t.unmask(&mut bits, 60), Ok(()), "a free port of bucket 0");
        assert_eq!(t.unmask(&mut bits, 64), Err(Errno::EINVAL));
        let high = {
            for _ in 0..100 {
                t.alloc_unbound(ME, ME).unwrap();
            }
            t.bind_ipi(0).unwrap()
        };
        assert_eq!(high, 102);
        bits = FakeBits::default();
        t.send(&mut bits, high).unwrap();
        assert_eq!(bits.selector[0], 1 << 1, "selector bit = port / 64");
    }

    #[test]
    fn virq_rules() {
        let (mut t, mut bits) = table(2);
        assert_eq!(t.bind_virq(24, 0), Err(Errno::EINVAL));
        assert_eq!(t.bind_virq(u32::MAX, 0), Err(Errno::EINVAL));
        assert_eq!(t.bind_virq(Virq::Console as u32, 1), Err(Errno::EINVAL));
        assert_eq!(t.bind_virq(Virq::Timer as u32, 2), Err(Errno::ENOENT));
        let t0 = t.bind_virq(Virq::Timer as u32, 0).unwrap();
        let t1 = t.bind_virq(Virq::Timer as u32, 1).unwrap();
        assert_eq!(t.bind_virq(Virq::Timer as u32, 1), Err(Errno::EEXIST));
        assert_eq!(t.bind_vcpu(t1, 0), Err(Errno::EINVAL), "per-vCPU VIRQ");
        let con = t.bind_virq(Virq::Console as u32, 0).unwrap();
        assert_eq!(t.bind_vcpu(con, 1), Ok(()));
        assert_eq!(t.channel(con).unwrap().notify_vcpu, 1);
        assert_eq!(t.bind_virq(5, 0).map(|_| ()), Ok(()), "unnumbered: global");
        assert_eq!(t.send(&mut bits, t0), Err(Errno::EINVAL));
        t.close(&mut bits, con).unwrap();
        assert_eq!(t.bind_virq(Virq::Console as u32, 0), Ok(con));
        t.close(&mut bits, t1).unwrap();
        assert_eq!(t.bind_virq(Virq::Timer as u32, 1), Ok(t1));
    }

    #[test]
    fn bind_vcpu_and_ipi_rules() {
        let (mut t, _) = table(2);
        assert_eq!(t.bind_ipi(2), Err(Errno::ENOENT));
        let ipi = t.bind_ipi(1).unwrap();
        assert_eq!(t.channel(ipi).unwrap().notify_vcpu, 1);
        assert_eq!(t.bind_vcpu(ipi, 0), Err(Errno::EINVAL));
        assert_eq!(
            t.bind_vcpu(999, 2),
            Err(Errno::ENOENT),
            "vCPU checked first"
        );
        assert_eq!(t.bind_vcpu(999, 1), Err(Errno::EINVAL));
        assert_eq!(t.bind_vcpu(0, 1), Err(Errno::EINVAL));
        t.ports[5].binding = Binding::Pirq(9);
        assert_eq!(t.bind_vcpu(5, 1), Ok(()));
    }

    #[test]
    fn fifo_answers() {
        let (t, _) = table(1);
        assert_eq!(t.set_priority(1), Err(Errno::ENOSYS));
        assert_eq!(t.set_priority(64), Err(Errno::EINVAL));
        assert_eq!(t.init_control(1, 0), Err(Errno::ENOENT));
        assert_eq!(t.init_control(0, 4025), Err(Errno::EINVAL));
        assert_eq!(t.init_control(0, 4), Err(Errno::EINVAL));
        assert_eq!(t.init_control(0, 4024), Err(Errno::ENOSYS));
    }
}

#[cfg(test)]
mod properties {
    //! Any sequence of guest commands, with any arguments, keeps the
    //! table consistent and never panics.
    use proptest::prelude::*;

    use super::fake::FakeBits;
    use super::*;

    /// Ports near the interesting boundaries, or anything.
    fn port() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..8, 60u32..70, 4090u32..4100, any::<u32>()]
    }

    fn dom() -> impl Strategy<Value = DomId> {
        prop_oneof![
            Just(DomId::SELF),
            Just(DomId(0)),
            any::<u16>().prop_map(DomId)
        ]
    }

    #[derive(Clone, Debug)]
    enum Cmd {
        Alloc(DomId, DomId),
        Interdomain(DomId, u32),
        Virq(u32, u32),
        Ipi(u32),
        Vcpu(u32, u32),
        Close(u32),
        Send(u32),
        Unmask(u32),
        Mask(u32),
        Reset(DomId),
    }

    fn cmd() -> impl Strategy<Value = Cmd> {
        prop_oneof![
            (dom(), dom()).prop_map(|(d, r)| Cmd::Alloc(d, r)),
            (dom(), port()).prop_map(|(d, p)| Cmd::Interdomain(d, p)),
            (
                prop_oneof![0u32..26, any::<u32>()],
                prop_oneof![0u32..3, any::<u32>()]
            )
                .prop_map(|(v, c)| Cmd::Virq(v, c)),
            prop_oneof![0u32..3, any::<u32>()].prop_map(Cmd::Ipi),
            (port(), 0u32..4).prop_map(|(p, v)| Cmd::Vcpu(p, v)),
            port().prop_map(Cmd::Close),
            port().prop_map(Cmd::Send),
            port().prop_map(Cmd::Unmask),
            port().prop_map(Cmd::Mask),
            dom().prop_map(Cmd::Reset),
        ]
    }

    /// Interdomain pairs point at each other; VIRQ ports and the per-vCPU
    /// VIRQ table agree; every notify vCPU exists; port 0 stays reserved.
    fn consistent(t: &EventChannels) -> Result<(), TestCaseError> {
        prop_assert_eq!(t.ports[0].binding, Binding::Reserved);
        prop_assert!(t.ports.len().is_multiple_of(BUCKET_PORTS as usize));
        prop_assert!(t.ports.len() <= NR_PORTS as usize);
        for (port, c) in (0u32..).zip(&t.ports) {
            prop_assert!(c.notify_vcpu < t.vcpus());
            match c.binding {
                Binding::Interdomain {
                    remote,
                    port: other,
                } => {
                    prop_assert_eq!(remote, t.domain);
                    let peer = t.channel(other).map(|c| c.binding);
                    prop_assert_eq!(peer, Some(Binding::Interdomain { remote, port }));
                }
                Binding::Virq(virq) => {
                    let v = if virq_is_global(virq) {
                        0
                    } else {
                        c.notify_vcpu
                    };
                    prop_assert_eq!(t.virqs[v as usize][virq as usize], port);
                }
                _ => {}
            }
        }
        for row in &t.virqs {
            for (virq, &port) in (0u32..).zip(row) {
                if port != 0 {
                    prop_assert_eq!(
                        t.channel(port).map(|c| c.binding),
                        Some(Binding::Virq(virq))
                    );
                }
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn any_commands_keep_the_table_consistent(cmds in proptest::collection::vec(cmd(), 1..60)) {
            let (mut t, mut bits) = (EventChannels::new(DomId(0), 2), FakeBits::default());
            for c in cmds {
                let _ = match c {
                    Cmd::Alloc(d, r) => t.alloc_unbound(d, r).map(drop),
                    Cmd::Interdomain(d, p) => t.bind_interdomain(&mut bits, d, p).map(drop),
                    Cmd::Virq(v, c) => t.bind_virq(v, c).map(drop),
                    Cmd::Ipi(v) => t.bind_ipi(v).map(drop),
                    Cmd::Vcpu(p, v) => t.bind_vcpu(p, v),
                    Cmd::Close(p) => t.close(&mut bits, p),
                    Cmd::Send(p) => t.send(&mut bits, p),
                    Cmd::Unmask(p) => t.unmask(&mut bits, p),
                    Cmd::Mask(p) => {
                        if p < NR_PORTS {
                            bits.set_mask(p, true);
                        }
                        Ok(())
                    }
                    Cmd::Reset(d) => t.reset(&mut bits, d),
                };
                consistent(&t)?;
                // The event lane's rule: a local target means the send
                // succeeds and raises that vCPU alone.
                for port in 0..t.valid_ports() + 1 {
                    let mut fresh = FakeBits::default();
                    let sent = t.clone().send(&mut fresh, port);
                    match t.local_target(port) {
                        Some(vcpu) => {
                            prop_assert!(t.may_send_locally());
                            prop_assert_eq!(sent, Ok(()));
                            prop_assert_eq!(fresh.take_kicked(), 1 << vcpu);
                        }
                        None => prop_assert!(sent.is_err() || fresh.take_kicked() == 0),
                    }
                }
                for (port, c) in (0u32..).zip(&t.ports) {
                    if c.binding == Binding::Free {
                        prop_assert!(!bits.pending(port), "a free port is never pending");
                    }
                }
            }
        }
    }
}
