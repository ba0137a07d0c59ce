//! The only place wayline reads wall time. Everything else receives `Time` values.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wayline_journal::Time;

/// Wall time for journal timestamps, paired with a monotonic clock for sleeping.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_time: Time,
}

impl Clock {
    pub fn system() -> Clock {
        #[allow(clippy::disallowed_methods)] // the one place that reads wall time
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock {
            origin: Instant::now(),
            origin_time: Time::from_micros(since_epoch.as_micros() as i64),
        }
    }

    /// Now, as wall time that never goes backwards within this process.
    pub fn now(&self) -> Time {
        self.origin_time.after(self.origin.elapsed())
    }

    /// The monotonic instant at which wall time `at` is reached.
    pub fn instant(&self, at: Time) -> Instant {
        let offset = at.as_micros() - self.origin_time.as_micros();
        if offset <= 0 {
            self.origin
        } else {
            self.origin + std::time::Duration::from_micros(offset as u64)
        }
    }

    /// The wall time as `SystemTime`, for APIs that need it (HTTP dates).
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_micros(self.now().as_micros().max(0) as u64)
    }
}
