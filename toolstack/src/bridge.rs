//! dom0's software Ethernet bridge: the forwarding decision for every
//! frame that one port (a vif's back end, a NIC driver) hands it.
//!
//! A learning switch: the source address of each frame is remembered
//! against its port; a frame to a known unicast address goes to that port
//! only, and a frame to a broadcast or multicast address, or to an
//! address not (or no longer) known, is flooded to every port but the one
//! it came from. Nothing is ever sent back to its own port. Entries age
//! out after [`AGEING_NS`] without traffic, or when their port goes.
//!
//! Ports are small integers the caller chooses; what a port is lives
//! behind [`NetDevice`] on the caller's side.
#![forbid(unsafe_code)]

/// An Ethernet address.
pub type Mac = [u8; 6];

/// How long a learnt address is kept without traffic (Linux's default,
/// 300 s).
pub const AGEING_NS: u64 = 300_000_000_000;

/// Addresses remembered at once; the oldest is forgotten for a new one.
pub const TABLE_SIZE: usize = 64;

/// One port of the bridge: something that sends Ethernet frames out.
pub trait NetDevice {
    /// Sends `frame` (a whole Ethernet frame, no FCS) out of this port;
    /// `offload` says what the sender told about its checksums. `false`
    /// if it was dropped (no room, port down).
    fn transmit(&mut self, frame: &[u8], offload: Offload) -> bool;
}

/// What the sender of a frame said about its transport checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    /// The checksum is blank (not filled in).
    pub csum_blank: bool,
    /// The data was validated already.
    pub data_validated: bool,
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To this port only.
    Unicast(usize),
    /// To every port but the one it came from.
    Flood,
    /// Nowhere: too short, or addressed to its own port.
    Drop,
}

/// One learnt address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    mac: Mac,
    port: usize,
    seen: u64,
}

/// The bridge's address table.
#[derive(Debug)]
pub struct Bridge {
    table: [Option<Entry>; TABLE_SIZE],
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge {
            table: [None; TABLE_SIZE],
        }
    }
}

/// Whether `mac` is a group (broadcast or multicast) address.
#[must_use]
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

impl Bridge {
    /// Learns the source of `frame` (from `port`, at time `now` in ns)
    /// and decides where it goes.
    pub fn forward(&mut self, port: usize, frame: &[u8], now: u64) -> Forward {
        let (Some(dst), Some(src)) = (mac_at(frame, 0), mac_at(frame, 6)) else {
            return Forward::Drop;
        };
        if !is_group(&src) {
            self.learn(src, port, now);
        }
        if is_group(&dst) {
            return Forward::Flood;
        }
        match self.lookup(&dst, now) {
            Some(p) if p == port => Forward::Drop,
            Some(p) => Forward::Unicast(p),
            None => Forward::Flood,
        }
    }

    /// The port `mac` was last seen on, if not aged out.
    #[must_use]
    pub fn lookup(&self, mac: &Mac, now: u64) -> Option<usize> {
        self.table
            .iter()
            .flatten()
            .find(|e| e.mac == *mac && now.saturating_sub(e.seen) < AGEING_NS)
            .map(|e| e.port)
    }

    /// Forgets every address learnt on `port` (it went away).
    pub fn remove_port(&mut self, port: usize) {
        for slot in &mut self.table {
            if slot.is_some_and(|e| e.port == port) {
                *slot = None;
            }
        }
    }

    /// Addresses currently remembered (aged ones included until reused).
    #[must_use]
    pub fn len(&self) -> usize {
        self.table.iter().flatten().count()
    }

    /// Whether no address is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn learn(&mut self, mac: Mac, port: usize, now: u64) {
        if let Some(e) = self.table.iter_mut().flatten().find(|e| e.mac == mac) {
            e.port = port;
            e.seen = now;
            return;
        }
        let slot = match self.table.iter().position(Option::is_none) {
            Some(free) => free,
            None => self
                .table
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.map_or(0, |e| e.seen))
                .map_or(0, |(i, _)| i),
        };
        self.table[slot] = Some(Entry {
            mac,
            port,
            seen: now,
        });
    }
}

fn mac_at(frame: &[u8], at: usize) -> Option<Mac> {
    frame.get(at..at + 6)?.try_into().ok()
}

pub use dom0_abi::netif::parse_mac;

/// A MAC as `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug)]
pub struct ShowMac(pub Mac);

impl core::fmt::Display for ShowMac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: Mac = [0x00, 0x16, 0x3e, 0, 0, 1];
    const B: Mac = [0x00, 0x16, 0x3e, 0, 0, 2];
    const BCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac) -> [u8; 60] {
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    #[test]
    fn unknown_and_broadcast_flood_then_unicast_once_learnt() {
        let mut br = Bridge::default();
        assert_eq!(br.forward(0, &frame(BCAST, A), 0), Forward::Flood);
        assert_eq!(br.forward(1, &frame(A, B), 1), Forward::Unicast(0));
        assert_eq!(br.forward(0, &frame(B, A), 2), Forward::Unicast(1));
        assert_eq!(br.len(), 2);
        // Multicast floods even from a known source.
        let mcast = [0x01, 0x00, 0x5e, 0, 0, 1];
        assert_eq!(br.forward(0, &frame(mcast, A), 3), Forward::Flood);
    }

    #[test]
    fn never_back_to_the_source_port() {
        let mut br = Bridge::default();
        br.forward(0, &frame(BCAST, A), 0);
        br.forward(0, &frame(BCAST, B), 0);
        assert_eq!(br.forward(0, &frame(A, B), 1), Forward::Drop);
    }

    #[test]
    fn addresses_move_age_and_go_with_their_port() {
        let mut br = Bridge::default();
        br.forward(0, &frame(BCAST, A), 0);
        br.forward(2, &frame(BCAST, A), 10);
        assert_eq!(br.lookup(&A, 10), Some(2));
        assert_eq!(br.lookup(&A, 10 + AGEING_NS), None);
        assert_eq!(br.forward(1, &frame(A, B), 10 + AGEING_NS), Forward::Flood);
        br.remove_port(2);
        assert_eq!(br.lookup(&A, 11), None);
        assert_eq!(br.lookup(&B, 11 + AGEING_NS), Some(1));
    }

    #[test]
    fn short_frames_and_group_sources() {
        let mut br = Bridge::default();
        assert_eq!(br.forward(0, &[0; 11], 0), Forward::Drop);
        br.forward(0, &frame(A, BCAST), 0);
        assert!(br.is_empty());
    }

    #[test]
    fn a_full_table_forgets_the_oldest() {
        let mut br = Bridge::default();
        for i in 0..=TABLE_SIZE {
            let mac = [2, 0, 0, 0, 0, u8::try_from(i).unwrap()];
            br.forward(i, &frame(BCAST, mac), i as u64);
        }
        assert_eq!(br.len(), TABLE_SIZE);
        assert_eq!(br.lookup(&[2, 0, 0, 0, 0, 0], 100), None);
        assert_eq!(br.lookup(&[2, 0, 0, 0, 0, 1], 100), Some(1));
    }

    #[test]
    fn macs_parse_and_show() {
        assert_eq!(parse_mac("00:16:3E:00:00:01"), Some(A));
        assert_eq!(parse_mac("00:16:3e:00:00"), None);
        assert_eq!(parse_mac("00:16:3e:00:00:01:02"), None);
        assert_eq!(parse_mac("00:16:3e:00:00:1"), None);
        assert_eq!(parse_mac("00:16:3e:00:00:zz"), None);
        assert_eq!(alloc::format!("{}", ShowMac(A)), "00:16:3e:00:00:01");
    }

    proptest! {
        #[test]
        fn a_frame_never_goes_back_where_it_came_from(
            frames in proptest::collection::vec((0usize..4, 0u8..6, 0u8..6), 1..64)
        ) {
            let mut br = Bridge::default();
            for (t, (port, d, s)) in frames.into_iter().enumerate() {
                let mac = |n: u8| if n == 5 { BCAST } else { [0, 0x16, 0x3e, 0, 0, n] };
                let decision = br.forward(port, &frame(mac(d), mac(s)), t as u64);
                prop_assert_ne!(decision, Forward::Unicast(port));
                if d == 5 {
                    prop_assert_eq!(decision, Forward::Flood);
                }
            }
        }
    }
}
