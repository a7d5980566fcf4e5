//! Calendar windows: which window a moment falls in, and when it ends —
//! in UTC, or on a time zone's local calendar (a day from local midnight
//! to local midnight, 23 or 25 hours across a daylight-saving change).

use std::sync::atomic::{fence, AtomicU64, Ordering};

use jiff::tz::TimeZone;
use jiff::Timestamp;
use toolgate_core::config::Window;

/// Days since 1970-01-01 of the civil date `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil year and month of day `z` since 1970-01-01.
fn year_month(z: i64) -> (i64, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// The window `now` (Unix seconds) falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Its number, counting from the epoch.
    pub id: u64,
    /// The Unix second it starts at.
    pub start: u64,
    /// The Unix second it ends at (the next one's start).
    pub end: u64,
}

/// The window of kind `w` that `now` (Unix seconds) falls in.
pub fn window_of(w: Window, now: u64) -> Bounds {
    let span = match w {
        Window::Minute => 60,
        Window::Hour => 3_600,
        Window::Day => 86_400,
        Window::Month => {
            let (y, m) = year_month((now / 86_400) as i64);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let start = days_from_civil(y, m, 1) * 86_400;
            let end = days_from_civil(ny, nm, 1) * 86_400;
            let id = (y - 1970) * 12 + i64::from(m) - 1;
            return Bounds {
                id: id.max(0) as u64,
                start: start.max(0) as u64,
                end: end.max(0) as u64,
            };
        }
    };
    let id = now / span;
    Bounds {
        id,
        start: id * span,
        end: (id + 1) * span,
    }
}

/// The calendar a quota's windows follow: UTC, or a time zone's, with the
/// current window cached so a call pays for the zone's rules once per
/// window rather than once per call.
pub struct Calendar {
    zone: Option<TimeZone>,
    /// A sequence lock over the cached window: odd while being written.
    seq: AtomicU64,
    id: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
}

impl Calendar {
    /// UTC's calendar, or `zone`'s.
    pub fn new(zone: Option<TimeZone>) -> Self {
        Self {
            zone,
            seq: AtomicU64::new(0),
            id: AtomicU64::new(0),
            start: AtomicU64::new(0),
            end: AtomicU64::new(0),
        }
    }

    /// The window of kind `w` that `now` (Unix seconds) falls in.
    pub fn window(&self, w: Window, now: u64) -> Bounds {
        let Some(zone) = &self.zone else {
            return window_of(w, now);
        };
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 == 0 {
            let b = Bounds {
                id: self.id.load(Ordering::Relaxed),
                start: self.start.load(Ordering::Relaxed),
                end: self.end.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 && b.start <= now && now < b.end {
                return b;
            }
        }
        let b = zoned_window(w, zone, now);
        // One writer at a time; a loser just answers without caching.
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && self
                .seq
                .compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            self.id.store(b.id, Ordering::Relaxed);
            self.start.store(b.start, Ordering::Relaxed);
            self.end.store(b.end, Ordering::Relaxed);
            self.seq.store(s + 2, Ordering::Release);
        }
        b
    }
}

/// The window of kind `w` holding `now` on `zone`'s local calendar: found
/// on local time, its bounds turned back into instants (a local midnight
/// skipped by a daylight-saving jump is the first instant after it).
/// Falls back to UTC for a moment jiff cannot represent.
fn zoned_window(w: Window, zone: &TimeZone, now: u64) -> Bounds {
    let utc = || window_of(w, now);
    let Ok(ts) = Timestamp::from_second(now as i64) else {
        return utc();
    };
    let local = now as i64 + i64::from(zone.to_offset(ts).seconds());
    if local < 0 {
        return utc();
    }
    let l = window_of(w, local as u64);
    let instant = |local_s: u64| -> Option<u64> {
        let civil = TimeZone::UTC.to_datetime(Timestamp::from_second(local_s as i64).ok()?);
        let t = zone.to_ambiguous_timestamp(civil).compatible().ok()?;
        u64::try_from(t.as_second()).ok()
    };
    match (instant(l.start), instant(l.end)) {
        (Some(start), Some(end)) if start <= now && now < end => Bounds {
            id: l.id,
            start,
            end,
        },
        _ => utc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_end_at_their_calendar_boundary() {
        // 2026-12-06T22:03:04Z
        let now = 1_796_594_584;
        assert_eq!(window_of(Window::Minute, now).end, 1_796_594_640);
        assert_eq!(window_of(Window::Hour, now).start, 1_796_594_400);
        assert_eq!(window_of(Window::Hour, now).end, 1_796_594_400 + 3_600);
        // 2026-12-07T00:00:00Z
        assert_eq!(window_of(Window::Day, now).end, 1_796_601_600);
        // 2027-01-01T00:00:00Z
        assert_eq!(window_of(Window::Month, now).end, 1_798_761_600);
        // February of a leap year: 2028-02-01 to 2028-03-01, 29 days.
        let feb = window_of(Window::Month, 1_832_976_000 + 86_400 * 10);
        assert_eq!((feb.start, feb.end), (1_832_976_000, 1_835_481_600));
        assert_eq!(feb.end - feb.start, 86_400 * 29);
        // Consecutive months have consecutive numbers.
        let dec = window_of(Window::Month, now);
        assert_eq!(window_of(Window::Month, dec.end).id, dec.id + 1);
        assert_eq!(window_of(Window::Month, dec.end - 1).id, dec.id);
    }

    fn zone(name: &str) -> Calendar {
        Calendar::new(Some(TimeZone::get(name).unwrap()))
    }

    #[test]
    fn a_zone_day_runs_from_local_midnight_to_local_midnight() {
        // 2026-12-07T10:00:00Z is 19:00 in Tokyo (UTC+9): the local day
        // began at 2026-12-06T15:00Z and ends at 2026-12-07T15:00Z.
        let now = 1_796_637_600;
        let tokyo = zone("Asia/Tokyo");
        let b = tokyo.window(Window::Day, now);
        assert_eq!((b.start, b.end), (1_796_569_200, 1_796_655_600));
        // Cached: the same answer, and the next window after the end.
        assert_eq!(tokyo.window(Window::Day, now + 60), b);
        let next = tokyo.window(Window::Day, b.end);
        assert_eq!((next.id, next.start), (b.id + 1, b.end));
        assert_eq!(tokyo.window(Window::Day, b.start - 1).id, b.id - 1);
    }

    #[test]
    fn daylight_saving_days_are_23_and_25_hours_long() {
        let paris = zone("Europe/Paris");
        // 2026-03-29: clocks go from 02:00 to 03:00 (noon UTC that day).
        let spring = paris.window(Window::Day, 1_774_785_600);
        assert_eq!(spring.end - spring.start, 23 * 3_600);
        // 2026-10-25: from 03:00 back to 02:00.
        let autumn = paris.window(Window::Day, 1_792_929_600);
        assert_eq!(autumn.end - autumn.start, 25 * 3_600);
    }

    #[test]
    fn half_hour_zones_shift_hours_and_months_follow_the_local_calendar() {
        // India is UTC+5:30: local hours start at :30 UTC.
        let b = zone("Asia/Kolkata").window(Window::Hour, 1_796_637_600);
        assert_eq!((b.start % 3_600, b.end - b.start), (1_800, 3_600));
        // December 2026 in New York: from 2026-12-01T05:00Z to 2027-01-01T05:00Z.
        let m = zone("America/New_York").window(Window::Month, 1_796_637_600);
        assert_eq!(
            (m.start, m.end),
            (1_796_083_200 + 18_000, 1_798_761_600 + 18_000)
        );
        // UTC is unchanged.
        assert_eq!(
            Calendar::new(None).window(Window::Day, 1_796_637_600),
            window_of(Window::Day, 1_796_637_600)
        );
    }
}
