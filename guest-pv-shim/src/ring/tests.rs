//! Both ends over one in-memory page, honest and hostile.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::*;

/// A page both ends share.
type Page = SharedPage;

/// A 12-byte request and an 8-byte response: slots of 12 bytes.
type Front = FrontRing<Page, [u32; 3], u64>;
type Back = BackRing<Page, [u32; 3], u64>;

fn pair(bytes: usize) -> (Front, Back, Page) {
    let page = Page::new(bytes, 0xa5);
    let front = Front::init(page.clone());
    let back = Back::attach(page.clone());
    (front, back, page)
}

#[test]
fn init_writes_xens_initial_header() {
    let (front, back, page) = pair(4096);
    assert_eq!(front.size(), 256);
    assert_eq!(back.size(), 256);
    assert_eq!(page.read_u32(REQ_PROD), 0);
    assert_eq!(page.read_u32(REQ_EVENT), 1);
    assert_eq!(page.read_u32(RSP_PROD), 0);
    assert_eq!(page.read_u32(RSP_EVENT), 1);
    let mut pad = [1u8; HEADER_BYTES - 16];
    page.read_bytes(16, &mut pad);
    assert_eq!(pad, [0; HEADER_BYTES - 16]);
}

#[test]
fn a_request_and_its_response_round_trip_with_notifications() {
    let (mut front, mut back, _) = pair(4096);
    assert_eq!(back.pop(), Ok(None));
    assert!(front.push(&[1, 2, 3]));
    // The back end has not published a request yet.
    assert_eq!(back.pop(), Ok(None));
    assert!(front.publish(), "the first request passes req_event 1");
    assert_eq!(back.pop(), Ok(Some([1, 2, 3])));
    assert_eq!(back.pop(), Ok(None));
    assert!(!back.final_check().unwrap());
    assert!(back.push(&0xdead_beef));
    assert!(!back.push(&1), "one response per request");
    assert_eq!(front.pop(), Ok(None));
    assert!(back.publish(), "the first response passes rsp_event 1");
    assert_eq!(front.pop(), Ok(Some(0xdead_beef)));
    assert!(!front.final_check().unwrap());
    // Both ends asked for the next entry: each push notifies again.
    assert!(front.push(&[4, 5, 6]));
    assert!(front.publish());
    assert!(front.push(&[7, 8, 9]));
    assert!(!front.publish(), "the back end has not asked again");
}

#[test]
fn a_full_ring_refuses_requests_until_responses_free_slots() {
    let (mut front, mut back, _) = pair(4096);
    for i in 0..256 {
        assert!(front.push(&[i, 0, 0]));
    }
    assert!(!front.push(&[256, 0, 0]));
    front.publish();
    for i in 0..256 {
        assert_eq!(back.pop(), Ok(Some([i, 0, 0])));
    }
    assert_eq!(back.pop(), Ok(None));
    assert!(back.push(&7));
    back.publish();
    assert_eq!(front.pop(), Ok(Some(7)));
    assert_eq!(front.free_requests(), 1);
    assert!(front.push(&[256, 0, 0]));
}

#[test]
fn a_front_end_overrunning_unanswered_requests_is_an_error() {
    let (mut front, mut back, mut page) = pair(4096);
    assert!(front.push(&[1, 1, 1]));
    front.publish();
    page.write_u32(REQ_PROD, 257);
    assert_eq!(
        back.pop(),
        Err(RingError::Overrun {
            prod: 257,
            cons: 0,
            limit: 256
        })
    );
    // A producer index behind the consumer is as bad: it is 2^32 - 1 past.
    page.write_u32(REQ_PROD, u32::MAX);
    assert!(back.final_check().is_err());
}

#[test]
fn requests_wait_while_every_slot_holds_an_unanswered_one() {
    let (_, mut back, mut page) = pair(4096);
    // A hostile front end publishes a full ring of requests, takes none
    // of the responses, and keeps pushing its index within the limit.
    page.write_u32(REQ_PROD, 256);
    for _ in 0..256 {
        assert!(back.pop().unwrap().is_some());
    }
    assert_eq!(back.pop(), Ok(None));
    assert!(back.push(&1));
    back.publish();
    page.write_u32(REQ_PROD, 257);
    assert!(back.pop().unwrap().is_some());
    assert_eq!(back.pop(), Ok(None));
}

#[test]
fn a_back_end_answering_unasked_is_an_error() {
    let (mut front, _, mut page) = pair(4096);
    assert!(front.push(&[1, 1, 1]));
    front.publish();
    page.write_u32(RSP_PROD, 2);
    assert_eq!(
        front.pop(),
        Err(RingError::Overrun {
            prod: 2,
            cons: 0,
            limit: 1
        })
    );
}

#[test]
fn a_ring_too_small_for_a_slot_has_no_slots() {
    let (mut front, mut back, _) = pair(HEADER_BYTES + 11);
    assert_eq!(front.size(), 0);
    assert!(!front.push(&[0, 0, 0]));
    assert_eq!(back.pop(), Ok(None));
}

/// One step of either end.
#[derive(Clone, Debug)]
enum Step {
    Push(u32),
    PublishRequests,
    Serve,
    PublishResponses,
    Take,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<u32>().prop_map(Step::Push),
        Just(Step::PublishRequests),
        Just(Step::Serve),
        Just(Step::PublishResponses),
        Just(Step::Take),
    ]
}

proptest! {
    /// Honest ends starting anywhere in the index space: every request is
    /// answered once, in order, and a notification is asked for exactly
    /// when the other end armed its event index and is behind.
    #[test]
    fn honest_ends_deliver_everything_in_order(
        start in any::<u32>(),
        steps in proptest::collection::vec(step(), 1..400),
    ) {
        let page = Page::new(HEADER_BYTES + 8 * 12, 0xa5);
        let mut front = Front::init(page.clone());
        let mut back = Back::attach(page.clone());
        // Start both ends (and the shared indices) at `start`.
        front.req_prod_pvt = start;
        front.rsp_cons = start;
        back.req_cons = start;
        back.rsp_prod_pvt = start;
        let mut shared = page.clone();
        for at in [REQ_PROD, RSP_PROD] {
            shared.write_u32(at, start);
        }
        for at in [REQ_EVENT, RSP_EVENT] {
            shared.write_u32(at, start.wrapping_add(1));
        }
        let (mut sent, mut served, mut answered) = (Vec::new(), Vec::new(), Vec::new());
        for step in steps {
            match step {
                Step::Push(v) => {
                    let full = front.outstanding() == front.size();
                    prop_assert_eq!(front.push(&[v, !v, v ^ 0x55]), !full);
                    if !full {
                        sent.push(v);
                    }
                }
                Step::PublishRequests => {
                    front.publish();
                }
                Step::Serve => {
                    while let Some([a, b, c]) = back.pop().unwrap() {
                        prop_assert_eq!((b, c), (!a, a ^ 0x55));
                        served.push(a);
                        prop_assert!(back.push(&(u64::from(a) << 1)));
                    }
                }
                Step::PublishResponses => {
                    back.publish();
                }
                Step::Take => {
                    while let Some(rsp) = front.pop().unwrap() {
                        answered.push(rsp >> 1);
                    }
                }
            }
            prop_assert!(front.outstanding() <= front.size());
        }
        front.publish();
        while let Some([a, ..]) = back.pop().unwrap() {
            served.push(a);
            back.push(&(u64::from(a) << 1));
        }
        back.publish();
        while let Some(rsp) = front.pop().unwrap() {
            answered.push(rsp >> 1);
        }
        prop_assert_eq!(&served, &sent);
        let sent: Vec<u64> = sent.iter().map(|&v| u64::from(v)).collect();
        prop_assert_eq!(answered, sent);
        prop_assert!(!front.final_check().unwrap());
        prop_assert!(!back.final_check().unwrap());
    }

    /// Whatever a hostile front end writes into the shared indices and
    /// slots, the back end neither consumes more than a ring's worth of
    /// unanswered requests nor answers one twice.
    #[test]
    fn a_hostile_front_end_cannot_overrun_the_back_end(
        writes in proptest::collection::vec((0usize..4, any::<u32>(), any::<bool>()), 1..200),
    ) {
        let page = Page::new(4096, 0xa5);
        let mut back = Back::attach(page.clone());
        let mut shared = page.clone();
        for (field, value, serve) in writes {
            shared.write_u32(field * 4, value);
            if let Ok(Some(_)) = back.pop()
                && serve
            {
                prop_assert!(back.push(&0));
                back.publish();
            }
            prop_assert!(back.unanswered() <= back.size());
        }
    }
}

#[test]
fn scratch_is_zeroed_and_exactly_as_long_as_asked() {
    for len in [0, 8, 16, 17, 64, 65, 112, MAX_SLOT_BYTES] {
        assert_eq!(
            scratch(len, |buf| (buf.len(), buf.iter().all(|&b| b == 0))),
            Some((len, true))
        );
    }
    assert_eq!(scratch(MAX_SLOT_BYTES + 1, |buf| buf.len()), None);
}
