//! A netfront (the shim's) and this back end over in-memory pages.

use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use dom0_abi::netif::{NETIF_RSP_ERROR, NetRxFlags, NetTxFlags, NetifTxRequest};
use dom0_abi::ring::REQ_PROD;
use guest_pv_shim::netfront::{
    Netfront, NetfrontError, PacketPages, RX_PAGES, SendError, TX_PAGES,
};

use super::*;

/// A page both ends share.
#[derive(Clone)]
struct Page(Rc<RefCell<Vec<u8>>>);

impl Page {
    fn new() -> Page {
        Page(Rc::new(RefCell::new(vec![0x5a; 4096])))
    }
}

/// Words go through the byte accessors (one borrow each).
impl RingMemory for Page {
    fn bytes(&self) -> usize {
        self.0.borrow().len()
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        let page = self.0.borrow();
        out.copy_from_slice(&page[offset..][..out.len()]);
    }
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        let mut page = self.0.borrow_mut();
        page[offset..][..bytes.len()].copy_from_slice(bytes);
    }
    fn read_u32(&self, offset: usize) -> u32 {
        let mut word = [0u8; 4];
        self.read_bytes(offset, &mut word);
        u32::from_le_bytes(word)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        self.write_bytes(offset, &value.to_le_bytes());
    }
}

/// A domain's granted pages, by reference (gref = index).
#[derive(Clone, Default)]
struct Granted(Rc<RefCell<Vec<[u8; 4096]>>>);

/// The front end's view: TX pages are grefs 0.., RX pages grefs 100...
impl PacketPages for Granted {
    fn write_tx(&mut self, id: usize, frame: &[u8]) {
        self.0.borrow_mut()[id][..frame.len()].copy_from_slice(frame);
    }
    fn with_rx<R>(&self, id: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0.borrow()[100 + id])
    }
}

/// dom0's grant copy, over one front end's pages: a gref past them fails
/// as Xen's `GNTST_bad_gntref` (-4).
impl GrantCopier for Granted {
    fn copy_in(&mut self, _domid: u16, gref: u32, offset: u16, out: &mut [u8]) -> Result<(), i16> {
        let pages = self.0.borrow();
        let page = pages.get(gref as usize).ok_or(-4i16)?;
        let at = usize::from(offset);
        out.copy_from_slice(page.get(at..at + out.len()).ok_or(-1i16)?);
        Ok(())
    }
    fn copy_out(&mut self, _domid: u16, gref: u32, offset: u16, data: &[u8]) -> Result<(), i16> {
        let mut pages = self.0.borrow_mut();
        let page = pages.get_mut(gref as usize).ok_or(-4i16)?;
        let at = usize::from(offset);
        page.get_mut(at..at + data.len())
            .ok_or(-1i16)?
            .copy_from_slice(data);
        Ok(())
    }
}

type Front = Netfront<Page, Granted>;

/// A connected pair: the front end's rings and pages, and the back end.
fn pair() -> (Front, Vif<Page>, Granted, Page) {
    let granted = Granted(Rc::new(RefCell::new(vec![[0; 4096]; 100 + RX_PAGES])));
    let (tx, rx) = (Page::new(), Page::new());
    let tx_grefs = core::array::from_fn(|i| u32::try_from(i).unwrap());
    let rx_grefs = core::array::from_fn(|i| 100 + u32::try_from(i).unwrap());
    let mut front = Netfront::new(tx.clone(), rx.clone(), tx_grefs, rx_grefs, granted.clone());
    assert!(front.post_rx());
    let back = Vif::new(3, tx.clone(), rx);
    (front, back, granted, tx)
}

fn eth_frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = vec![tag; len];
    f[..6].copy_from_slice(&[0xff; 6]);
    f
}

#[test]
fn a_frame_goes_out_and_another_comes_in() {
    let (mut front, mut back, mut granted, _) = pair();
    let sent = eth_frame(60, 7);
    front.transmit(&sent).unwrap();
    let mut buf = [0u8; 4096];
    let got = back.next_tx(&mut granted, &mut buf).unwrap().unwrap();
    assert_eq!(&buf[..got.len], &sent[..]);
    assert_eq!(
        got.offload,
        Offload {
            csum_blank: false,
            data_validated: true
        }
    );
    assert_eq!(back.next_tx(&mut granted, &mut buf), Ok(None));
    assert!(back.take_notify());
    front.reap_tx().unwrap();
    assert_eq!(front.stats.tx_ok, 1);

    let incoming = eth_frame(1514, 9);
    let offload = Offload {
        csum_blank: true,
        data_validated: false,
    };
    assert_eq!(back.deliver(&mut granted, &incoming, offload), Ok(true));
    let mut received = Vec::new();
    front.receive(|f| received.push(f.to_vec())).unwrap();
    assert_eq!(received, [incoming]);
    assert_eq!(back.stats.rx_frames, 1);
    assert_eq!(back.stats.tx_frames, 1);
}

#[test]
fn every_tx_page_can_be_in_flight_and_comes_back() {
    let (mut front, mut back, mut granted, _) = pair();
    for i in 0..TX_PAGES {
        front
            .transmit(&eth_frame(64, u8::try_from(i).unwrap()))
            .unwrap();
    }
    assert_eq!(front.transmit(&eth_frame(64, 0)), Err(SendError::Busy));
    assert_eq!(front.transmit(&[0; 4097]), Err(SendError::TooLong));
    let mut buf = [0u8; 4096];
    for i in 0..TX_PAGES {
        let got = back.next_tx(&mut granted, &mut buf).unwrap().unwrap();
        assert_eq!(buf[got.len - 1], u8::try_from(i).unwrap());
    }
    front.reap_tx().unwrap();
    assert!(front.can_transmit());
    assert_eq!(front.stats.tx_ok, TX_PAGES as u64);
}

#[test]
fn rx_without_buffers_drops_and_buffers_are_reposted() {
    let (mut front, mut back, mut granted, _) = pair();
    let frame = eth_frame(100, 1);
    for _ in 0..RX_PAGES {
        assert_eq!(
            back.deliver(&mut granted, &frame, Offload::default()),
            Ok(true)
        );
    }
    assert_eq!(
        back.deliver(&mut granted, &frame, Offload::default()),
        Ok(false)
    );
    assert_eq!(back.stats.rx_dropped, 1);
    let mut n = 0;
    assert!(front.receive(|_| n += 1).unwrap());
    assert_eq!(n, RX_PAGES);
    assert_eq!(
        back.deliver(&mut granted, &frame, Offload::default()),
        Ok(true)
    );
}

#[test]
fn bad_requests_get_an_error_status() {
    let (mut front, mut back, mut granted, _) = pair();
    // Shorter than an Ethernet header, then a grant the front never gave.
    front
        .push_tx(&NetifTxRequest {
            gref: 0,
            offset: 0,
            flags: 0,
            id: 0,
            size: 13,
        })
        .unwrap();
    front
        .push_tx(&NetifTxRequest {
            gref: 999,
            offset: 0,
            flags: 0,
            id: 1,
            size: 60,
        })
        .unwrap();
    let mut buf = [0u8; 4096];
    assert_eq!(back.next_tx(&mut granted, &mut buf), Ok(None));
    assert_eq!(back.stats.tx_errors, 2);
    front.reap_tx().unwrap();
    assert_eq!(front.stats.tx_errors, 2);
}

#[test]
fn hostile_requests_disconnect() {
    for (req, fault) in [
        (
            NetifTxRequest {
                gref: 0,
                offset: 4000,
                flags: 0,
                id: 0,
                size: 200,
            },
            Fault::CrossesPage {
                offset: 4000,
                size: 200,
            },
        ),
        (
            NetifTxRequest {
                gref: 0,
                offset: 0,
                flags: NetTxFlags::MORE_DATA.bits(),
                id: 0,
                size: 60,
            },
            Fault::NotNegotiated(NetTxFlags::MORE_DATA.bits()),
        ),
    ] {
        let (mut front, mut back, mut granted, _) = pair();
        front.push_tx(&req).unwrap();
        assert_eq!(back.next_tx(&mut granted, &mut [0u8; 4096]), Err(fault));
    }
    let (_, mut back, mut granted, mut tx) = pair();
    tx.write_u32(REQ_PROD, 1000);
    assert!(matches!(
        back.next_tx(&mut granted, &mut [0u8; 4096]),
        Err(Fault::Ring("TX", _))
    ));
}

#[test]
fn a_hostile_back_end_is_caught_by_the_front_end() {
    let (mut front, _, _, _) = pair();
    let mut rsp_page = Page::new();
    // The back end's TX response for an id never sent.
    let mut fake: Front = Netfront::new(
        rsp_page.clone(),
        Page::new(),
        [0; TX_PAGES],
        [0; RX_PAGES],
        Granted(Rc::new(RefCell::new(vec![[0; 4096]; 1]))),
    );
    fake.transmit(&eth_frame(60, 0)).unwrap();
    rsp_page.write_bytes(64, &[5, 0, 0, 0]);
    rsp_page.write_u32(dom0_abi::ring::RSP_PROD, 1);
    assert_eq!(fake.reap_tx(), Err(NetfrontError::BadId(true, 5)));
    assert!(front.arm().is_ok());
}

#[test]
fn checksum_facts_pass_through() {
    assert_eq!(
        rx_flags(offload_of(NetTxFlags::CSUM_BLANK.bits())),
        (NetRxFlags::CSUM_BLANK | NetRxFlags::DATA_VALIDATED).bits()
    );
    assert_eq!(
        rx_flags(offload_of(NetTxFlags::DATA_VALIDATED.bits())),
        NetRxFlags::DATA_VALIDATED.bits()
    );
    assert_eq!(rx_flags(offload_of(0)), 0);
    assert_eq!(
        check_tx(&NetifTxRequest {
            size: 13,
            ..Default::default()
        }),
        Err(Ok(NETIF_RSP_ERROR))
    );
}

#[test]
fn frontend_keys_need_rx_copy() {
    let keys = |pairs: &'static [(&str, &str)]| {
        frontend_keys(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_bytes().to_vec())
        })
    };
    assert_eq!(
        keys(&[
            ("tx-ring-ref", "8"),
            ("rx-ring-ref", "9"),
            ("event-channel", "4"),
            ("request-rx-copy", "1")
        ]),
        Ok(FrontendKeys {
            tx_ring_ref: 8,
            rx_ring_ref: 9,
            event_channel: 4
        })
    );
    assert_eq!(keys(&[("tx-ring-ref", "8")]), Err("request-rx-copy"));
    assert_eq!(
        keys(&[("tx-ring-ref", "x"), ("request-rx-copy", "1")]),
        Err("tx-ring-ref")
    );
}

#[test]
fn queued_rx_copies_are_answered_in_order_once_they_ran() {
    let (mut front, mut back, mut granted, _) = pair();
    let frames: Vec<Vec<u8>> = (0u8..3)
        .map(|i| eth_frame(100 + usize::from(i), 20 + i))
        .collect();
    let grefs: Vec<u32> = frames
        .iter()
        .map(|f| back.queue_rx(f.len(), Offload::default()).unwrap().unwrap())
        .collect();
    assert_eq!(grefs, [100, 101, 102], "the buffers in the order posted");
    let mut seen = 0;
    assert!(!front.receive(|_| seen += 1).unwrap());
    assert_eq!(seen, 0, "nothing answered before the copies ran");
    assert!(!back.take_notify());
    for (f, &gref) in frames.iter().zip(&grefs) {
        if gref != 101 {
            granted.copy_out(3, gref, 0, f).unwrap();
        }
    }
    for gref in &grefs {
        back.finish_rx(*gref != 101);
    }
    back.finish_rx(true);
    assert!(back.take_notify());
    let mut received = Vec::new();
    front.receive(|f| received.push(f.to_vec())).unwrap();
    assert_eq!(received, [frames[0].clone(), frames[2].clone()]);
    assert_eq!((front.stats.rx_frames, front.stats.rx_errors), (2, 1));
    assert_eq!((back.stats.rx_frames, back.stats.rx_dropped), (2, 1));
    assert_eq!(
        back.queue_rx(4097, Offload::default()),
        Ok(None),
        "longer than a page: its buffer answered with an error at once"
    );
    let mut errors = 0;
    front.receive(|_| errors += 1).unwrap();
    assert_eq!((errors, front.stats.rx_errors), (0, 2));
}
