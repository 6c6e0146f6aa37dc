//! How a rate-limited log line says how many lines like it were held back: the one place the
//! daemons format "(N ... not logged)".

use std::fmt::Display;

/// How many log lines a limiter held back since the last one it let through (see
/// `common::ratelimit::RateLimiter::check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held(pub u64);

impl Held {
    /// ` (N {what} not logged)`, to end a line; nothing when none was held back.
    pub fn note(self, what: impl Display) -> String {
        if self.0 > 0 {
            format!(" ({})", self.count(what))
        } else {
            String::new()
        }
    }

    /// `N {what} not logged` (`N not logged` when `what` is empty), even when N is 0.
    pub fn count(self, what: impl Display) -> String {
        let what = what.to_string();
        if what.is_empty() {
            format!("{} not logged", self.0)
        } else {
            format!("{} {what} not logged", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_and_counts() {
        assert_eq!(Held(0).note("similar"), "");
        assert_eq!(Held(3).note("similar"), " (3 similar not logged)");
        assert_eq!(
            Held(2).note(format_args!("more {}", "oversized")),
            " (2 more oversized not logged)"
        );
        assert_eq!(Held(0).count("more"), "0 more not logged");
        assert_eq!(Held(7).count(""), "7 not logged");
    }
}
