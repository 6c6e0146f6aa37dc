//! Leadership's rules, driven by hand: the broker's order of deliveries is played out
//! message by message.

use super::*;

const A: &str = "mqtt-server-a"; // tag 0xf2
const B: &str = "mqtt-server-b"; // tag 0xa8

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn status(presence: Presence, session: u32, epoch: u32) -> ServerStatus {
    ServerStatus {
        presence,
        session,
        epoch,
        timestamp_ms: 0,
    }
}

fn lease_of(out: &[Out]) -> Lease {
    match out {
        [Out::Lease(l)] => *l,
        other => panic!("expected one lease, got {other:?}"),
    }
}

/// A server connected at `t0` with `session`, past its retained wait, and the lease it claims.
fn claimant(id: &str, t0: Instant, session: u32) -> (Leadership, Lease) {
    let mut l = Leadership::new(id);
    let out = l.on_connected(t0, 0, session);
    assert_eq!(out, vec![Out::Status(status(Presence::Online, session, 0))]);
    assert_eq!(l.tick(t0 + ms(999), 0), (vec![], None), "still waiting");
    let (out, change) = l.tick(t0 + RETAINED_WAIT, 0);
    assert_eq!(change, None);
    (l, lease_of(&out))
}

#[test]
fn a_lone_server_claims_term_one_and_leads_after_settling() {
    let t0 = Instant::now();
    let (mut a, lease) = claimant(A, t0, 7);
    assert_eq!(lease.epoch, 0x1f2);
    assert_eq!(lease.session, 7);
    assert_eq!(a.order_epoch(), None, "claiming is not leading");
    let t1 = t0 + RETAINED_WAIT + ms(5);
    assert_eq!(a.on_lease(t1, 0, lease, false), (vec![], None));
    assert_eq!(a.tick(t1 + ms(499), 0), (vec![], None));
    let (out, change) = a.tick(t1 + SETTLE, 0);
    assert_eq!(change, Some(Change::Leads(0x1f2)));
    assert_eq!(out, vec![Out::Status(status(Presence::Online, 7, 0x1f2))]);
    assert_eq!(a.order_epoch(), Some(0x1f2));
    assert_eq!(a.leader().as_deref(), Some(A));
    assert_eq!(a.changes(), 1);
    // The link breaks: no more orders; back after a ConnAck as a standby first.
    assert_eq!(a.on_disconnected(), Some(Change::SteppedDown));
    assert_eq!(a.order_epoch(), None);
}

#[test]
fn two_claimants_of_one_term_agree_on_the_higher_epoch() {
    let t0 = Instant::now();
    let (mut a, la) = claimant(A, t0, 10); // 0x1f2
    let (mut b, lb) = claimant(B, t0, 20); // 0x1a8
    assert!(la.epoch > lb.epoch);
    let t1 = t0 + RETAINED_WAIT + ms(5);
    // The broker's order: b's lease first, then a's; every subscriber sees the same.
    for s in [&mut a, &mut b] {
        let _ = s.on_lease(t1, 0, lb, false);
    }
    let (out_a, _) = a.on_lease(t1 + ms(1), 0, la, false);
    assert!(out_a.is_empty());
    let (out_b, _) = b.on_lease(t1 + ms(1), 0, la, false);
    assert!(out_b.is_empty());
    assert_eq!(b.phase(), Phase::Standby, "b saw a higher lease");
    let (_, change) = a.tick(t1 + ms(1) + SETTLE, 0);
    assert_eq!(change, Some(Change::Leads(la.epoch)));
    // b, a standby, sees a's Online with the highest epoch: led, no claim.
    let (_, change) = b.on_status(t1 + ms(600), 0, A, status(Presence::Online, 10, la.epoch));
    assert_eq!(change, None);
    assert_eq!(b.tick(t1 + ms(5000), 0), (vec![], None));
    assert_eq!(b.leader().as_deref(), Some(A));
    assert_eq!(b.changes(), 1);

    // The other order: a's lease first, then b's lower one; a re-publishes its own.
    let (mut a, la) = claimant(A, t0, 11);
    let (_, lb) = claimant(B, t0, 21);
    let _ = a.on_lease(t1, 0, la, false);
    let (out, _) = a.on_lease(t1 + ms(1), 0, lb, false);
    assert_eq!(
        lease_of(&out),
        la,
        "the retained lease must end as the highest"
    );
}

#[test]
fn a_standby_takes_over_when_the_leaders_will_arrives() {
    let t0 = Instant::now();
    let mut b = Leadership::new(B);
    let _ = b.on_connected(t0, 0, 5);
    // Retained: the lease and a's Online with its epoch.
    let _ = b.on_lease(
        t0,
        0,
        Lease {
            epoch: 0x1f2,
            session: 3,
            timestamp_ms: 0,
        },
        true,
    );
    let _ = b.on_status(t0, 0, A, status(Presence::Online, 3, 0x1f2));
    let _ = b.on_status(t0, 0, B, status(Presence::Online, 5, 0));
    assert_eq!(b.tick(t0 + ms(2000), 0), (vec![], None), "led by a");
    assert_eq!(b.phase(), Phase::Standby);
    // a is killed: its will, epoch 0, same session.
    let _ = b.on_status(t0 + ms(3000), 0, A, status(Presence::ConnectionLost, 3, 0));
    assert_eq!(b.leader(), None);
    let (out, _) = b.tick(t0 + ms(3050), 0);
    let lease = lease_of(&out);
    assert_eq!(lease.epoch, 0x2a8, "term 2 with b's tag");
    let _ = b.on_lease(t0 + ms(3060), 0, lease, false);
    let (_, change) = b.tick(t0 + ms(3560), 0);
    assert_eq!(change, Some(Change::Leads(0x2a8)));
    // a comes back as a standby; its late will of an older session changes nothing.
    let mut a = Leadership::new(A);
    let _ = a.on_connected(t0 + ms(4000), 0, 4);
    let _ = a.on_lease(t0 + ms(4000), 0, lease, true);
    let _ = a.on_status(t0 + ms(4000), 0, B, status(Presence::Online, 5, 0x2a8));
    assert_eq!(a.tick(t0 + ms(6000), 0), (vec![], None));
    assert_eq!(a.leader().as_deref(), Some(B));
}

#[test]
fn a_leader_steps_down_on_any_higher_epoch() {
    let t0 = Instant::now();
    let lead = |t: Instant| {
        let (mut a, lease) = claimant(A, t, 10);
        let _ = a.on_lease(t + RETAINED_WAIT, 0, lease, false);
        let (_, c) = a.tick(t + RETAINED_WAIT + SETTLE, 0);
        assert_eq!(c, Some(Change::Leads(0x1f2)));
        a
    };
    let later = t0 + ms(2000);
    let higher = 0x2a8;
    let mut a = lead(t0);
    let (out, c) = a.on_lease(
        later,
        0,
        Lease {
            epoch: higher,
            session: 1,
            timestamp_ms: 0,
        },
        false,
    );
    assert_eq!(c, Some(Change::SteppedDown));
    assert_eq!(out, vec![Out::Status(status(Presence::Online, 10, 0))]);
    let mut a = lead(t0);
    let (_, c) = a.on_status(later, 0, B, status(Presence::Online, 1, higher));
    assert_eq!(c, Some(Change::SteppedDown));
    let mut a = lead(t0);
    let (_, c) = a.on_fence(later, 0, higher);
    assert_eq!(c, Some(Change::SteppedDown));
    let mut a = lead(t0);
    let (_, c) = a.on_stale_leader(later, 0);
    assert_eq!(c, Some(Change::SteppedDown));
    assert_eq!(a.order_epoch(), None);
    // Equal or lower epochs are its own or older: no change.
    let mut a = lead(t0);
    assert_eq!(a.on_fence(later, 0, 0x1f2).1, None);
    assert_eq!(a.on_fence(later, 0, 0x1a8).1, None);
    assert_eq!(a.order_epoch(), Some(0x1f2));
}

#[test]
fn a_live_claim_in_progress_is_not_overtaken() {
    let t0 = Instant::now();
    let mut b = Leadership::new(B);
    let _ = b.on_connected(t0, 0, 5);
    // a's live claim arrives while b waits.
    let _ = b.on_lease(
        t0 + ms(500),
        0,
        Lease {
            epoch: 0x1f2,
            session: 3,
            timestamp_ms: 0,
        },
        false,
    );
    assert_eq!(b.tick(t0 + ms(1100), 0), (vec![], None), "a settles first");
    // a leads: its Online with the epoch.
    let _ = b.on_status(t0 + ms(1100), 0, A, status(Presence::Online, 3, 0x1f2));
    assert_eq!(b.tick(t0 + ms(5000), 0), (vec![], None));
    // A claim that never leads is abandoned after CLAIM_PATIENCE.
    let mut c = Leadership::new(B);
    let _ = c.on_connected(t0, 0, 6);
    let _ = c.on_lease(
        t0 + ms(500),
        0,
        Lease {
            epoch: 0x1f2,
            session: 3,
            timestamp_ms: 0,
        },
        false,
    );
    let (out, _) = c.tick(t0 + ms(500) + CLAIM_PATIENCE, 0);
    assert_eq!(lease_of(&out).epoch, 0x2a8);
}

/// The one stale-status rule, per server id: a lower session is ignored, equal or higher
/// applied, whatever the presences.
#[test]
fn stale_server_statuses_follow_the_one_rule() {
    let t0 = Instant::now();
    let presences = [
        Presence::Online,
        Presence::Offline,
        Presence::ConnectionLost,
    ];
    for first in presences {
        for second in presences {
            for (delta, applied) in [(-1i64, false), (0, true), (1, true)] {
                let mut b = Leadership::new(B);
                let _ = b.on_connected(t0, 0, 50);
                let _ = b.on_lease(
                    t0,
                    0,
                    Lease {
                        epoch: 0x1f2,
                        session: 9,
                        timestamp_ms: 0,
                    },
                    true,
                );
                let epoch = |p| if p == Presence::Online { 0x1f2 } else { 0 };
                let s2 = (100 + delta) as u32;
                let _ = b.on_status(t0, 0, A, status(first, 100, epoch(first)));
                let _ = b.on_status(t0, 0, A, status(second, s2, epoch(second)));
                let effective = if applied { second } else { first };
                let case = format!("{first:?} 100 then {second:?} {s2}");
                assert_eq!(
                    b.leader().is_some(),
                    effective == Presence::Online,
                    "{case}"
                );
            }
        }
    }
}

#[test]
fn the_server_map_is_bounded() {
    let t0 = Instant::now();
    let mut b = Leadership::new(B);
    for i in 0..(MAX_SERVERS as u32 * 3) {
        let _ = b.on_status(t0, 0, &format!("s{i}"), status(Presence::Offline, 1, 0));
    }
    assert!(b.servers.len() <= MAX_SERVERS);
}

#[test]
fn a_previous_runs_retained_online_makes_the_next_claim_higher() {
    let t0 = Instant::now();
    let mut a = Leadership::new(A);
    let _ = a.on_connected(t0, 0, 8);
    // Killed and restarted before the broker published the old run's will; no lease known.
    let _ = a.on_status(t0, 0, A, status(Presence::Online, 7, 0x3f2));
    let _ = a.on_status(t0, 0, A, status(Presence::Online, 8, 0));
    let (out, _) = a.tick(t0 + RETAINED_WAIT, 0);
    assert_eq!(lease_of(&out).epoch, 0x4f2);
}
