//! Turning the kernel's CLOCK_BOOTTIME stamps into UTC wall-clock time.
//!
//! The programs stamp events with `bpf_ktime_get_boot_ns` (monotonic, counts
//! suspend). The offset to CLOCK_REALTIME is sampled when the capture starts
//! and again by [`BootClock::resync`], so that a clock step (NTP, an operator)
//! shows in the timestamps of later events.

/// Offset between CLOCK_REALTIME and CLOCK_BOOTTIME.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    realtime_minus_boottime_ns: i64,
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_REALTIME and
    // CLOCK_BOOTTIME exist on every kernel flowsql runs on, and on failure ts
    // stays zero rather than uninitialized.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec.saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec)
}

impl BootClock {
    /// Samples the offset now.
    pub fn new() -> Self {
        let mut clock = BootClock { realtime_minus_boottime_ns: 0 };
        clock.resync();
        clock
    }

    /// Samples the offset again. Takes the tightest of a few readings so that
    /// a preemption between the two clock reads does not skew it.
    pub fn resync(&mut self) {
        let mut best: Option<(i64, i64)> = None; // (spread, offset)
        for _ in 0..3 {
            let boot_before = clock_ns(libc::CLOCK_BOOTTIME);
            let real = clock_ns(libc::CLOCK_REALTIME);
            let boot_after = clock_ns(libc::CLOCK_BOOTTIME);
            let spread = boot_after - boot_before;
            let offset = real - (boot_before + spread / 2);
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, offset));
            }
        }
        if let Some((_, offset)) = best {
            self.realtime_minus_boottime_ns = offset;
        }
    }

    /// UTC nanoseconds since the Unix epoch for a CLOCK_BOOTTIME reading.
    pub fn to_utc_ns(&self, boot_ns: u64) -> i64 {
        i64::try_from(boot_ns).unwrap_or(i64::MAX).saturating_add(self.realtime_minus_boottime_ns)
    }

    /// The current CLOCK_BOOTTIME, as the kernel programs read it.
    pub fn boot_now_ns() -> u64 {
        u64::try_from(clock_ns(libc::CLOCK_BOOTTIME)).unwrap_or(0)
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_now_maps_to_wall_clock_now() {
        let clock = BootClock::new();
        let utc = clock.to_utc_ns(BootClock::boot_now_ns());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i64;
        assert!((utc - wall).abs() < 50_000_000, "off by {} ns", utc - wall);
    }
}
