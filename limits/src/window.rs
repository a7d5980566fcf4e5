//! Calendar windows in UTC: which window a moment falls in, and when it ends.

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
}
