//! A subscription the broker refuses for a moment is asked for again. mosquitto never refuses
//! a subscription (an ACL filters deliveries instead), NATS does while it cannot create the
//! subscription's JetStream consumer; so the broker here is a minimal MQTT 3.1.1 one in the
//! test: it answers the first SUBSCRIBE with a failure (0x80) for the second filter, the next
//! with a grant, then publishes on that filter.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mqtt_link::{BrokerConfig, Link, LinkConfig, LinkEvent, QoS};

/// Reads one packet: (first byte, body).
fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut d = [0u8; 1];
        s.read_exact(&mut d)?;
        len |= ((d[0] & 0x7f) as usize) << shift;
        if d[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
        assert!(shift <= 21, "remaining length too long");
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((b[0], body))
}

/// The topic filters of a SUBSCRIBE body (after its packet id).
fn filters(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 2;
    while i + 2 <= body.len() {
        let n = u16::from_be_bytes([body[i], body[i + 1]]) as usize;
        out.push(String::from_utf8_lossy(&body[i + 2..i + 2 + n]).into_owned());
        i += 2 + n + 1;
    }
    out
}

#[test]
fn a_refused_subscription_is_asked_again_and_then_delivers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded::<(Instant, Vec<String>)>();
    let broker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (kind, _) = read_packet(&mut s).unwrap();
        assert_eq!(kind >> 4, 1, "CONNECT first");
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
        let mut subscribes = 0;
        while let Ok((kind, body)) = read_packet(&mut s) {
            match kind >> 4 {
                8 => {
                    subscribes += 1;
                    let f = filters(&body);
                    seen_tx.send((Instant::now(), f.clone())).unwrap();
                    // First: the second filter refused. Then: everything granted.
                    let codes: Vec<u8> = (0..f.len())
                        .map(|i| {
                            if subscribes == 1 && i == 1 {
                                0x80
                            } else {
                                0x01
                            }
                        })
                        .collect();
                    let mut ack = vec![0x90, 2 + codes.len() as u8, body[0], body[1]];
                    ack.extend(codes);
                    s.write_all(&ack).unwrap();
                    if subscribes == 2 {
                        // A QoS 0 publish on the filter that was refused.
                        let topic = b"server/pi-r/action";
                        let payload = b"hello";
                        let mut p = vec![0x30, (2 + topic.len() + payload.len()) as u8, 0];
                        p.push(topic.len() as u8);
                        p.extend_from_slice(topic);
                        p.extend_from_slice(payload);
                        s.write_all(&p).unwrap();
                    }
                }
                12 => s.write_all(&[0xd0, 0x00]).unwrap(),
                14 => break,
                _ => {}
            }
        }
    });

    let mut b = BrokerConfig::default();
    b.apply("broker", &format!("127.0.0.1:{port}"))
        .unwrap()
        .unwrap();
    let mut cfg = LinkConfig::new("pi-r", b);
    cfg.subscriptions = vec![
        ("server/pi-r/segment".into(), QoS::AtLeastOnce),
        ("server/pi-r/action".into(), QoS::AtLeastOnce),
    ];
    let (tx, rx) = crossbeam_channel::bounded(100);
    let link = Link::start(cfg, tx).unwrap();

    let (t1, first) = seen_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a SUBSCRIBE");
    assert_eq!(first, ["server/pi-r/segment", "server/pi-r/action"]);
    let (t2, second) = seen_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the refused filter asked for again");
    assert_eq!(second, ["server/pi-r/action"], "only the refused one");
    let waited = t2 - t1;
    assert!(
        waited >= Duration::from_millis(4800) && waited <= Duration::from_secs(8),
        "asked again after {waited:?} (the first wait is 5 s)"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while let Ok(ev) = rx.recv_deadline(deadline) {
        if let LinkEvent::Message(p) = ev {
            got = Some((p.topic.clone(), p.payload.to_vec()));
            break;
        }
    }
    assert_eq!(
        got,
        Some(("server/pi-r/action".to_string(), b"hello".to_vec())),
        "delivered on the subscription granted the second time"
    );
    assert!(
        seen_rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "nothing asked again once granted"
    );
    link.shutdown(None, Duration::from_secs(2));
    let _ = broker.join();
}
