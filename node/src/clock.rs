//! The operating system's wall clock, the production [`Clock`]; tests and the simulation
//! pass in clocks of their own.

use std::time::Duration;

use tally_core::{Clock, UnixMillis};

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one production reading of the wall clock
    fn now(&self) -> UnixMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        UnixMillis(since_epoch.as_millis() as u64)
    }
}
