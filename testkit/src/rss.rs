//! Memory sampling: a thread reads a process's resident set size ([`crate::procfs`]) every
//! interval, so a scenario can show memory stays flat through a fault.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::procfs::rss_kib;

/// Samples `(time since start, KiB)`; stops on [`RssSampler::finish`] or drop.
pub struct RssSampler {
    samples: Arc<Mutex<Vec<(Duration, u64)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (samples, stop) = (samples.clone(), stop.clone());
            thread::Builder::new()
                .name("rss-sampler".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    let mut next = t0;
                    while !stop.load(Ordering::Acquire) {
                        if Instant::now() >= next {
                            let Some(kib) = rss_kib(pid) else { break };
                            samples
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((t0.elapsed(), kib));
                            next += every;
                        }
                        thread::sleep(Duration::from_millis(10));
                    }
                })
                .expect("spawn rss sampler")
        };
        RssSampler {
            samples,
            stop,
            handle: Some(handle),
        }
    }

    /// The samples so far.
    pub fn samples(&self) -> Vec<(Duration, u64)> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops sampling and returns every sample.
    pub fn finish(mut self) -> Vec<(Duration, u64)> {
        self.halt();
        self.samples()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Min and max KiB of the samples taken at or after `from` (None when there are none).
pub fn range_after(samples: &[(Duration, u64)], from: Duration) -> Option<(u64, u64)> {
    let v: Vec<u64> = samples
        .iter()
        .filter(|(t, _)| *t >= from)
        .map(|(_, k)| *k)
        .collect();
    Some((*v.iter().min()?, *v.iter().max()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = RssSampler::start(std::process::id(), Duration::from_millis(20));
        thread::sleep(Duration::from_millis(120));
        let v = s.finish();
        assert!(v.len() >= 3, "{v:?}");
        assert!(v.iter().all(|(_, k)| *k > 0));
        let (lo, hi) = range_after(&v, Duration::ZERO).unwrap();
        assert!(lo <= hi);
        assert_eq!(range_after(&v, Duration::from_secs(60)), None);
    }
}
