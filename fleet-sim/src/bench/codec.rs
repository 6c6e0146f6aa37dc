//! Codec micro-benchmark: nanoseconds to encode and to decode one message of each kind, with
//! a plain timing loop and `std::hint::black_box` (the standard bench harness needs nightly).
//! Each figure is the median of several runs.

use std::hint::black_box;
use std::time::Instant;

use common::Message;
use common::wire::samples;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodecResult {
    pub kind: String,
    pub bytes: usize,
    pub encode_ns: f64,
    pub decode_ns: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `iters` calls of `f` `runs` times; the median of ns per call.
fn time(runs: usize, iters: u64, mut f: impl FnMut()) -> f64 {
    // Warm up caches and the branch predictor.
    for _ in 0..iters / 10 {
        f();
    }
    let per_run = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    median(per_run)
}

/// Encode and decode figures for every kind.
pub fn run(runs: usize, iters: u64) -> Vec<CodecResult> {
    samples()
        .into_iter()
        .map(|(kind, msg)| {
            let bytes = msg.encode().to_vec();
            let encode_ns = time(runs, iters, || {
                black_box(black_box(&msg).encode());
            });
            let decode_ns = time(runs, iters, || {
                let _ = black_box(Message::decode(black_box(&bytes)));
            });
            CodecResult {
                kind: kind.into(),
                bytes: bytes.len(),
                encode_ns,
                decode_ns,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_round_trips_and_is_timed() {
        for (_, m) in common::wire::samples() {
            assert_eq!(common::Message::decode(m.encode().as_slice()), Ok(m));
        }
        let r = super::run(3, 1000);
        assert_eq!(r.len(), 5);
        assert!(r.iter().all(|c| c.encode_ns > 0.0 && c.decode_ns > 0.0));
    }
}
