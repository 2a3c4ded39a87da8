//! Time as the core sees it: always passed in, never read.

use std::time::Duration;

/// The current time, given to every call that can change state.
///
/// `instant` drives timers (keepalive, idle timeout, rate-limit windows);
/// `unix_ms` is wall-clock time for what outlives the process or travels on
/// the wire (token expiry, message timestamps, retention). A simulator
/// advances both together from a seed-independent start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub instant: Instant,
    /// Wall-clock time, Unix milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// A time from its two readings.
    #[must_use]
    pub fn new(instant: Instant, unix_ms: u64) -> Now {
        Now { instant, unix_ms }
    }

    /// This time moved forward by `d` on both clocks.
    #[must_use]
    pub fn advance(self, d: Duration) -> Now {
        Now { instant: self.instant + d, unix_ms: self.unix_ms.saturating_add(d.as_millis() as u64) }
    }
}

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub use self::wasm::Instant;
/// The monotonic instant of [`Now::instant`].
///
/// Everywhere but in a browser this is [`std::time::Instant`]. On
/// `wasm32-unknown-unknown` the standard library has no clock and its
/// `Instant::now()` panics, with no other way to make one; there the core
/// uses its own `Instant`, which the host builds from its own monotonic
/// reading (a page's `performance.now()`) with `Instant::from_origin`. The core itself never reads a clock on any target.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub use std::time::Instant;

#[cfg(any(test, all(target_arch = "wasm32", target_os = "unknown")))]
mod wasm {
    use std::ops::{Add, AddAssign, Sub};
    use std::time::Duration;

    /// A monotonic instant as a duration since a host-chosen origin (the
    /// browser's stand-in for [`std::time::Instant`], with the part of its
    /// API the core uses).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub struct Instant(Duration);

    impl Instant {
        /// The instant `since` after the host's origin (a page passes
        /// `performance.now()`, milliseconds since it loaded).
        #[must_use]
        pub const fn from_origin(since: Duration) -> Instant {
            Instant(since)
        }

        /// How long after the origin this instant is.
        #[must_use]
        pub const fn since_origin(self) -> Duration {
            self.0
        }

        /// `self + d`, or `None` past the representable range.
        #[must_use]
        pub fn checked_add(self, d: Duration) -> Option<Instant> {
            self.0.checked_add(d).map(Instant)
        }

        /// `self - d`, or `None` before the origin.
        #[must_use]
        pub fn checked_sub(self, d: Duration) -> Option<Instant> {
            self.0.checked_sub(d).map(Instant)
        }

        /// The time from `earlier` to `self`, zero if `earlier` is later.
        #[must_use]
        pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
            self.0.saturating_sub(earlier.0)
        }

        /// The time from `earlier` to `self`, `None` if `earlier` is later.
        #[must_use]
        pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
            self.0.checked_sub(earlier.0)
        }

        /// The time from `earlier` to `self`, zero if `earlier` is later (as
        /// the standard library's since Rust 1.60).
        #[must_use]
        pub fn duration_since(self, earlier: Instant) -> Duration {
            self.saturating_duration_since(earlier)
        }
    }

    impl Add<Duration> for Instant {
        type Output = Instant;
        fn add(self, d: Duration) -> Instant {
            self.checked_add(d).expect("overflow when adding a duration to an instant")
        }
    }

    impl AddAssign<Duration> for Instant {
        fn add_assign(&mut self, d: Duration) {
            *self = *self + d;
        }
    }

    impl Sub<Duration> for Instant {
        type Output = Instant;
        fn sub(self, d: Duration) -> Instant {
            self.checked_sub(d).expect("overflow when subtracting a duration from an instant")
        }
    }

    impl Sub<Instant> for Instant {
        type Output = Duration;
        fn sub(self, earlier: Instant) -> Duration {
            self.duration_since(earlier)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn arithmetic_matches_std_semantics() {
            let a = Instant::from_origin(Duration::from_millis(1_500));
            let b = a + Duration::from_millis(250);
            assert_eq!(b.since_origin(), Duration::from_millis(1_750));
            assert_eq!(b - a, Duration::from_millis(250));
            assert_eq!(a - b, Duration::ZERO, "saturates as std's Instant does");
            assert_eq!(a.checked_duration_since(b), None);
            assert_eq!(b.saturating_duration_since(a), Duration::from_millis(250));
            assert_eq!(a.checked_sub(Duration::from_secs(2)), None, "nothing before the origin");
            assert_eq!(b - Duration::from_millis(250), a);
            assert!(a < b);
            assert_eq!(Instant::from_origin(Duration::MAX).checked_add(Duration::from_nanos(1)), None);
            let mut c = a;
            c += Duration::from_millis(1);
            assert_eq!(c.since_origin(), Duration::from_millis(1_501));
        }
    }
}
