//! Built-in detectors: one pass over the bytes finds the matches of every
//! enabled detector.
//!
//! The pass looks only at bytes that can start a match (digits, `@`, and the
//! first bytes of the secret prefixes: a 256-entry table per detector set),
//! so text without candidates is skipped at memory speed; each candidate is
//! then validated (Luhn for cards, mod-97 for IBANs, the number ranges never
//! issued for US SSNs, the prefixes never allocated for UK NINOs, shapes and
//! boundaries for the rest). Government ids start at a digit too (a NINO is
//! looked for at the first of its digits, its letters just before), so they
//! add no trigger byte: with cards or phones on, they cost nothing on text
//! without digits.
//!
//! No detector's match contains `"`, `\` or a control character except the
//! body of a private-key block. That lets [`Scanner::any_in_json`] run over
//! raw JSON text and answer "could a decoded string hold a match?" without
//! decoding: escapes other than `\u` cannot hide or create a match.

use toolgate_core::output::Detector;

/// A set of detectors, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DetectorSet(u16);

impl DetectorSet {
    /// The set of `ds`.
    pub fn of(ds: &[Detector]) -> Self {
        Self(ds.iter().fold(0, |acc, d| acc | d.bit()))
    }
    /// Whether `d` is in the set.
    pub fn contains(self, d: Detector) -> bool {
        self.0 & d.bit() != 0
    }
    /// Adds `d`.
    pub fn insert(&mut self, d: Detector) {
        self.0 |= d.bit();
    }
    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One match: byte range and detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Which detector matched.
    pub detector: Detector,
}

const T_DIGIT: u8 = 1;
const T_AT: u8 = 2;
const T_UPPER_A: u8 = 4;
const T_G: u8 = 8;
const T_X: u8 = 16;
const T_J: u8 = 32;
const T_DASH: u8 = 64;
const T_BACKSLASH: u8 = 128;

/// The detectors of one filter, with their trigger table.
#[derive(Debug, Clone)]
pub struct Scanner {
    set: DetectorSet,
    trigger: [u8; 256],
    /// `trigger` plus `\`, for raw JSON text.
    trigger_json: [u8; 256],
}

impl Scanner {
    /// A scanner for `set`.
    pub fn new(set: DetectorSet) -> Self {
        let mut trigger = [0u8; 256];
        let on = |d: Detector| set.contains(d);
        if on(Detector::Card)
            || on(Detector::Phone)
            || on(Detector::Iban)
            || on(Detector::UsSsn)
            || on(Detector::UkNino)
        {
            for b in b'0'..=b'9' {
                trigger[usize::from(b)] |= T_DIGIT;
            }
        }
        if on(Detector::Email) {
            trigger[usize::from(b'@')] |= T_AT;
        }
        if on(Detector::AwsKey) {
            trigger[usize::from(b'A')] |= T_UPPER_A;
        }
        if on(Detector::GithubToken) {
            trigger[usize::from(b'g')] |= T_G;
        }
        if on(Detector::SlackToken) {
            trigger[usize::from(b'x')] |= T_X;
        }
        if on(Detector::Jwt) {
            trigger[usize::from(b'J')] |= T_J;
        }
        if on(Detector::PrivateKey) {
            trigger[usize::from(b'-')] |= T_DASH;
        }
        let mut trigger_json = trigger;
        trigger_json[usize::from(b'\\')] = T_BACKSLASH;
        Self {
            set,
            trigger,
            trigger_json,
        }
    }

    /// The detectors scanned for.
    pub fn set(&self) -> DetectorSet {
        self.set
    }

    /// Appends every match in `text` to `out`, in order, never overlapping.
    pub fn scan(&self, text: &[u8], out: &mut Vec<Found>) {
        if self.set.is_empty() {
            return;
        }
        self.run(text, false, &mut |f| {
            out.push(f);
            true
        });
    }

    /// Whether raw JSON text may hold a match once its strings are decoded:
    /// true on any match (boundaries relaxed, since escapes such as `\n` sit
    /// where the decoded text has a separator) and on any `\u` escape.
    pub fn any_in_json(&self, json: &[u8]) -> bool {
        if self.set.is_empty() {
            return false;
        }
        let mut hit = false;
        self.run(json, true, &mut |_| {
            hit = true;
            false
        });
        hit
    }

    /// The single pass. `emit` returns whether to go on.
    fn run(&self, text: &[u8], raw_json: bool, emit: &mut dyn FnMut(Found) -> bool) {
        let table = if raw_json {
            &self.trigger_json
        } else {
            &self.trigger
        };
        let n = text.len();
        let mut i = 0;
        let mut floor = 0;
        let strict = !raw_json;
        while i < n {
            // The hot loop: one table load per byte that starts no candidate.
            let t = table[usize::from(text[i])];
            if t == 0 {
                i += 1;
                continue;
            }
            let mut next = i + 1;
            let mut found: Option<Found> = None;
            if t & T_BACKSLASH != 0 {
                if text.get(i + 1) == Some(&b'u') {
                    emit(Found {
                        start: i,
                        end: i + 2,
                        detector: Detector::Card,
                    });
                    return;
                }
                next = i + 2;
            } else if t & T_DIGIT != 0 {
                let (f, resume) = self.at_digit(text, i, floor, strict);
                found = f;
                next = resume.max(i + 1);
            } else if t & T_AT != 0 {
                found = email_at(text, i, floor);
            } else if t & T_UPPER_A != 0 {
                found = aws_at(text, i, strict);
            } else if t & T_G != 0 {
                found = github_at(text, i, strict);
            } else if t & T_X != 0 {
                found = slack_at(text, i, strict);
            } else if t & T_J != 0 {
                found = jwt_at(text, i, floor, strict);
            } else if t & T_DASH != 0 {
                found = private_key_at(text, i);
            }
            match found {
                Some(f) if f.start >= floor => {
                    floor = f.end;
                    next = f.end.max(i + 1);
                    if !emit(f) {
                        return;
                    }
                }
                _ => {}
            }
            i = next;
        }
    }

    /// Card, phone, IBAN and government-id candidates at a digit. Returns a
    /// match and where to resume.
    fn at_digit(
        &self,
        text: &[u8],
        i: usize,
        floor: usize,
        strict: bool,
    ) -> (Option<Found>, usize) {
        // Only a run's first digit starts a candidate.
        if i > 0 && text[i - 1].is_ascii_digit() {
            return (None, i + 1);
        }
        // Most digit runs in business data are short, free-standing numbers
        // (ids, quantities, prices): fewer than six digits not continued by
        // a separator, a letter or an escape cannot be, or start, any
        // detector's match (cards, phones and SSNs need more digits or a
        // separator; IBANs and NINOs, a letter or more digits).
        let digits = text[i..]
            .iter()
            .take(6)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits < 6
            && !text.get(i + digits).is_some_and(|&b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')' | b'+' | b'\\')
            })
        {
            return (None, i + digits);
        }
        if self.set.contains(Detector::Iban) {
            if let Some(f) = iban_at(text, i, strict) {
                if f.start >= floor {
                    return (Some(f), f.end);
                }
            }
        }
        if self.set.contains(Detector::UkNino) {
            if let Some(f) = nino_at(text, i, strict) {
                if f.start >= floor {
                    return (Some(f), f.end);
                }
            }
        }
        let run = DigitRun::read(text, i);
        if strict && i > 0 && text[i - 1].is_ascii_alphabetic() {
            return (None, run.end());
        }
        let card = if self.set.contains(Detector::Card) {
            run.card(text, strict)
        } else {
            None
        };
        let ssn = if self.set.contains(Detector::UsSsn) {
            run.ssn(text, strict)
        } else {
            None
        };
        let phone = if self.set.contains(Detector::Phone) {
            run.phone(text).filter(|f| f.start >= floor)
        } else {
            None
        };
        match first_of([card, ssn, phone]) {
            Some(f) => (Some(f), f.end),
            None => (None, run.end()),
        }
    }
}

/// Which of one digit run's candidates (in priority order) to report now.
/// The first one found wins over those it overlaps; one lying wholly before
/// it is reported first, and the scan, resuming after it, finds the later
/// one again, so two values in one run are both masked.
fn first_of(candidates: [Option<Found>; 3]) -> Option<Found> {
    let mut best: Option<Found> = None;
    for c in candidates.into_iter().flatten() {
        match best {
            Some(b) if c.end > b.start => {}
            _ => best = Some(c),
        }
    }
    best
}

/// Digit groups separated by short runs of ` `, `-`, `.`, `(`, `)`.
struct DigitRun {
    groups: [(usize, usize); MAX_GROUPS],
    len: usize,
}

const MAX_GROUPS: usize = 24;

fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'(' | b')')
}

impl DigitRun {
    fn read(text: &[u8], start: usize) -> Self {
        let mut groups = [(0, 0); MAX_GROUPS];
        let mut len = 0;
        let mut p = start;
        let n = text.len();
        while len < MAX_GROUPS {
            let s = p;
            while p < n && text[p].is_ascii_digit() {
                p += 1;
            }
            groups[len] = (s, p);
            len += 1;
            // up to two separator bytes, then a digit, continue the run
            let mut q = p;
            while q < n && q - p < 2 && is_sep(text[q]) {
                q += 1;
            }
            if q > p && q < n && text[q].is_ascii_digit() {
                p = q;
            } else {
                break;
            }
        }
        Self { groups, len }
    }

    fn end(&self) -> usize {
        self.groups[self.len - 1].1
    }

    fn sep<'t>(&self, text: &'t [u8], g: usize) -> &'t [u8] {
        &text[self.groups[g - 1].1..self.groups[g].0]
    }

    fn card(&self, text: &[u8], strict: bool) -> Option<Found> {
        for k in 0..self.len {
            let first = text[self.groups[k].0];
            if !(b'2'..=b'6').contains(&first) {
                continue;
            }
            if k > 0 && self.sep(text, k) == b"." {
                continue;
            }
            let mut total = 0;
            let mut best = None;
            for m in k..self.len {
                if m > k {
                    let s = self.sep(text, m);
                    if s != b" " && s != b"-" {
                        break;
                    }
                }
                total += self.groups[m].1 - self.groups[m].0;
                if total > 19 {
                    break;
                }
                if total >= 13 && luhn(&text[self.groups[k].0..self.groups[m].1]) {
                    best = Some(m);
                }
            }
            if let Some(m) = best {
                let (start, end) = (self.groups[k].0, self.groups[m].1);
                if strict && text.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
                    continue;
                }
                return Some(Found {
                    start,
                    end,
                    detector: Detector::Card,
                });
            }
        }
        None
    }

    /// A US SSN: groups of 3, 2 and 4 digits joined by the same `-` or ` `,
    /// not part of a longer id (a dashed SSN may only sit next to other
    /// numbers across a space; a spaced one must be the whole run).
    fn ssn(&self, text: &[u8], strict: bool) -> Option<Found> {
        let glen = |g: usize| self.groups[g].1 - self.groups[g].0;
        for k in 0..self.len.saturating_sub(2) {
            if glen(k) != 3 || glen(k + 1) != 2 || glen(k + 2) != 4 {
                continue;
            }
            let sep = self.sep(text, k + 1);
            if (sep != b"-" && sep != b" ") || self.sep(text, k + 2) != sep {
                continue;
            }
            let apart = |g: usize| sep == b"-" && self.sep(text, g) == b" ";
            if (k > 0 && !apart(k)) || (k + 3 < self.len && !apart(k + 3)) {
                continue;
            }
            let (start, end) = (self.groups[k].0, self.groups[k + 2].1);
            if strict && text.get(end).is_some_and(|b| b.is_ascii_alphanumeric()) {
                continue;
            }
            let digits = |g: usize| &text[self.groups[g].0..self.groups[g].1];
            if ssn_valid(digits(k), digits(k + 1), digits(k + 2)) {
                return Some(Found {
                    start,
                    end,
                    detector: Detector::UsSsn,
                });
            }
        }
        None
    }

    fn phone(&self, text: &[u8]) -> Option<Found> {
        let start = self.groups[0].0;
        // international: `+` and 8–15 digits
        if start > 0 && text[start - 1] == b'+' {
            let mut total = 0;
            let mut best = None;
            for m in 0..self.len {
                total += self.groups[m].1 - self.groups[m].0;
                if total > 15 {
                    break;
                }
                if total >= 8 {
                    best = Some(m);
                }
            }
            return best.map(|m| Found {
                start: start - 1,
                end: self.groups[m].1,
                detector: Detector::Phone,
            });
        }
        // North American: [1 ]ddd ddd dddd with `-`, `.` or ` `, or (ddd) ddd-dddd
        let glen = |g: usize| self.groups[g].1 - self.groups[g].0;
        let k = if self.len >= 4 && glen(0) == 1 && text[start] == b'1' {
            1
        } else {
            0
        };
        if self.len < k + 3 || glen(k) != 3 || glen(k + 1) != 3 || glen(k + 2) != 4 {
            return None;
        }
        let (s1, s2) = (self.sep(text, k + 1), self.sep(text, k + 2));
        let paren = self.groups[k].0 > 0 && text[self.groups[k].0 - 1] == b'(';
        let ok = if paren {
            (s1 == b")" || s1 == b") " || s1 == b")-") && (s2 == b"-" || s2 == b" ")
        } else {
            s1 == s2 && (s1 == b"-" || s1 == b"." || s1 == b" ")
        };
        if !ok {
            return None;
        }
        let from = if k == 1 {
            start
        } else if paren {
            self.groups[k].0 - 1
        } else {
            self.groups[k].0
        };
        Some(Found {
            start: from,
            end: self.groups[k + 2].1,
            detector: Detector::Phone,
        })
    }
}

/// Whether area, group and serial (ASCII digits) form an SSN that can have
/// been issued: area not 000, 666 or 900–999 (never assigned, or ITINs),
/// group not 00, serial not 0000.
pub fn ssn_valid(area: &[u8], group: &[u8], serial: &[u8]) -> bool {
    area != b"000"
        && area != b"666"
        && area.first() != Some(&b'9')
        && group != b"00"
        && serial != b"0000"
}

/// First letters of a NINO prefix HMRC never allocates.
const NINO_NOT_FIRST: &[u8] = b"DFIQUV";
/// Second letters of a NINO prefix HMRC never allocates.
const NINO_NOT_SECOND: &[u8] = b"DFIOQUV";
/// Whole prefixes HMRC never allocates (administrative or reserved).
const NINO_NOT_PREFIX: [&[u8; 2]; 7] = [b"BG", b"GB", b"KN", b"NK", b"NT", b"TN", b"ZZ"];

/// UK NINO at the first of its digits, `i`: two capital letters just before
/// (or before one space), six digits (one space allowed between pairs), an
/// optional space and the suffix A–D: `AB123456C`, `AB 12 34 56 C`.
fn nino_at(text: &[u8], i: usize, strict: bool) -> Option<Found> {
    let up = |p: usize| text[p].is_ascii_uppercase();
    let start = if i >= 2 && up(i - 2) && up(i - 1) {
        i - 2
    } else if i >= 3 && text[i - 1] == b' ' && up(i - 3) && up(i - 2) {
        i - 3
    } else {
        return None;
    };
    let (a, b) = (text[start], text[start + 1]);
    if NINO_NOT_FIRST.contains(&a)
        || NINO_NOT_SECOND.contains(&b)
        || NINO_NOT_PREFIX.contains(&&[a, b])
        || !boundary_before(text, start, strict)
    {
        return None;
    }
    let digit = |p: usize| text.get(p).is_some_and(|c| c.is_ascii_digit());
    let mut p = i;
    for pair in 0..3 {
        if pair > 0 && text.get(p) == Some(&b' ') {
            p += 1;
        }
        if !(digit(p) && digit(p + 1)) {
            return None;
        }
        p += 2;
    }
    if text.get(p) == Some(&b' ') {
        p += 1;
    }
    if !matches!(text.get(p), Some(b'A'..=b'D')) {
        return None;
    }
    let end = p + 1;
    if strict && text.get(end).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some(Found {
        start,
        end,
        detector: Detector::UkNino,
    })
}

/// Luhn check over the digits of `s` (other bytes skipped).
pub fn luhn(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut double = false;
    let mut digits = 0;
    for &b in s.iter().rev() {
        if !b.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(b - b'0');
        if double {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        double = !double;
        digits += 1;
    }
    digits > 0 && sum.is_multiple_of(10)
}

/// IBAN at the first of its check digits, `i`: two capital letters before,
/// then alphanumerics (single spaces allowed), mod-97 == 1.
fn iban_at(text: &[u8], i: usize, strict: bool) -> Option<Found> {
    if i < 2 || !text[i - 2].is_ascii_uppercase() || !text[i - 1].is_ascii_uppercase() {
        return None;
    }
    if !text.get(i + 1).is_some_and(|b| b.is_ascii_digit()) {
        return None;
    }
    let start = i - 2;
    if strict && start > 0 && text[start - 1].is_ascii_alphanumeric() {
        return None;
    }
    // Walk alphanumerics with single spaces; remember where groups end.
    let mut ends = [0usize; 40];
    let mut n_ends = 0;
    let mut chars = 0;
    let mut p = start;
    while p < text.len() && chars < 34 {
        let b = text[p];
        if b.is_ascii_uppercase() || b.is_ascii_digit() {
            chars += 1;
            p += 1;
        } else if b == b' '
            && text
                .get(p + 1)
                .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            if n_ends < ends.len() {
                ends[n_ends] = p;
                n_ends += 1;
            }
            p += 1;
        } else {
            break;
        }
    }
    let full_end = p;
    if strict
        && text
            .get(full_end)
            .is_some_and(|b| b.is_ascii_alphanumeric())
    {
        // an IBAN is not followed by more letters without a space
        if n_ends == 0 {
            return None;
        }
    }
    let boundary_ok =
        |end: usize| !strict || !text.get(end).is_some_and(|b| b.is_ascii_alphanumeric());
    let candidates = std::iter::once(full_end).chain(ends[..n_ends].iter().rev().copied());
    for end in candidates {
        if boundary_ok(end) && iban_valid(&text[start..end]) {
            return Some(Found {
                start,
                end,
                detector: Detector::Iban,
            });
        }
    }
    None
}

fn iban_valid(s: &[u8]) -> bool {
    let compact = s.iter().filter(|&&b| b != b' ');
    let len = compact.clone().count();
    if !(15..=34).contains(&len) {
        return false;
    }
    // move the first four characters to the end, letters as 10..35, mod 97
    let mut rem: u32 = 0;
    for &b in compact.clone().skip(4).chain(compact.take(4)) {
        if b.is_ascii_digit() {
            rem = (rem * 10 + u32::from(b - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(b - b'A') + 10) % 97;
        }
    }
    rem == 1
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn email_at(text: &[u8], at: usize, floor: usize) -> Option<Found> {
    let mut start = at;
    while start > floor && at - start < 64 && is_local(text[start - 1]) {
        start -= 1;
    }
    while start < at && text[start] == b'.' {
        start += 1;
    }
    if start == at {
        return None;
    }
    let n = text.len();
    let mut p = at + 1;
    let mut labels = 0;
    let mut good_end = None;
    loop {
        let q = p;
        while p < n && (text[p].is_ascii_alphanumeric() || text[p] == b'-') && p - q < 63 {
            p += 1;
        }
        if p == q || text[q] == b'-' || text[p - 1] == b'-' {
            break;
        }
        labels += 1;
        if labels >= 2 && p - q >= 2 && text[q..p].iter().all(|b| b.is_ascii_alphabetic()) {
            good_end = Some(p);
        }
        if p + 1 < n && text[p] == b'.' && text[p + 1].is_ascii_alphanumeric() && p - at < 253 {
            p += 1;
        } else {
            break;
        }
    }
    good_end.map(|end| Found {
        start,
        end,
        detector: Detector::Email,
    })
}

fn run_of(text: &[u8], from: usize, max: usize, ok: impl Fn(u8) -> bool) -> usize {
    let mut p = from;
    while p < text.len() && p - from < max && ok(text[p]) {
        p += 1;
    }
    p - from
}

fn boundary_before(text: &[u8], i: usize, strict: bool) -> bool {
    !strict || i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_')
}

fn aws_at(text: &[u8], i: usize, strict: bool) -> Option<Found> {
    let head = text.get(i..i + 4)?;
    if !matches!(head, b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA") || !boundary_before(text, i, strict) {
        return None;
    }
    let body = run_of(text, i + 4, 17, |b| {
        b.is_ascii_uppercase() || b.is_ascii_digit()
    });
    if body != 16 || (strict && text.get(i + 20).is_some_and(|b| b.is_ascii_alphanumeric())) {
        return None;
    }
    Some(Found {
        start: i,
        end: i + 20,
        detector: Detector::AwsKey,
    })
}

fn github_at(text: &[u8], i: usize, strict: bool) -> Option<Found> {
    if text.get(i + 1) != Some(&b'h') || !boundary_before(text, i, strict) {
        return None;
    }
    let rest = &text[i..];
    let (prefix, min, max, underscore) = if rest.starts_with(b"github_pat_") {
        (11, 22, 244, true)
    } else if rest.len() > 4
        && matches!(rest[2], b'p' | b'o' | b'u' | b's' | b'r')
        && rest[3] == b'_'
    {
        (4, 36, 251, false)
    } else {
        return None;
    };
    let body = run_of(text, i + prefix, max, |b| {
        b.is_ascii_alphanumeric() || (underscore && b == b'_')
    });
    (body >= min).then_some(Found {
        start: i,
        end: i + prefix + body,
        detector: Detector::GithubToken,
    })
}

fn slack_at(text: &[u8], i: usize, strict: bool) -> Option<Found> {
    let rest = &text[i..];
    // `xoxb-`, `xoxp-`, … and `xapp-`: five bytes each.
    let prefix = 5;
    let bot_or_user = rest.len() > 5
        && rest.starts_with(b"xox")
        && matches!(rest[3], b'a' | b'b' | b'o' | b'p' | b'r' | b's')
        && rest[4] == b'-';
    if !(bot_or_user || rest.starts_with(b"xapp-")) || !boundary_before(text, i, strict) {
        return None;
    }
    let body = run_of(text, i + prefix, 256, |b| {
        b.is_ascii_alphanumeric() || b == b'-'
    });
    (body >= 10).then_some(Found {
        start: i,
        end: i + prefix + body,
        detector: Detector::SlackToken,
    })
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

fn jwt_at(text: &[u8], j: usize, floor: usize, strict: bool) -> Option<Found> {
    if j < 2 || text[j - 2] != b'e' || text[j - 1] != b'y' {
        return None;
    }
    let start = j - 2;
    if start < floor
        || (strict && start > 0 && (is_b64url(text[start - 1]) || text[start - 1] == b'.'))
    {
        return None;
    }
    let h = run_of(text, start, 4096, is_b64url);
    let p1 = start + h;
    if h < 10 || text.get(p1) != Some(&b'.') || !text[p1 + 1..].starts_with(b"ey") {
        return None;
    }
    let b = run_of(text, p1 + 1, 1 << 16, is_b64url);
    let p2 = p1 + 1 + b;
    if b < 4 || text.get(p2) != Some(&b'.') {
        return None;
    }
    let s = run_of(text, p2 + 1, 4096, is_b64url);
    Some(Found {
        start,
        end: p2 + 1 + s,
        detector: Detector::Jwt,
    })
}

/// Longest private-key block searched for its END line.
const MAX_KEY_BLOCK: usize = 64 * 1024;

fn private_key_at(text: &[u8], i: usize) -> Option<Found> {
    let rest = &text[i..];
    if !rest.starts_with(b"-----BEGIN ") {
        return None;
    }
    let label = run_of(text, i + 11, 48, |b| b.is_ascii_uppercase() || b == b' ');
    let head_end = i + 11 + label;
    if !text[i + 11..head_end].ends_with(b"PRIVATE KEY") || !text[head_end..].starts_with(b"-----")
    {
        return None;
    }
    let head_end = head_end + 5;
    let window = &text[head_end..text.len().min(head_end + MAX_KEY_BLOCK)];
    let end = memchr::memmem::find(window, b"-----END ")
        .and_then(|e| {
            let tail = &window[e..];
            let close = memchr::memmem::find(&tail[..tail.len().min(64)], b"KEY-----")?;
            Some(head_end + e + close + 8)
        })
        .unwrap_or_else(|| {
            // No END line: mask the header and the base64 body after it.
            head_end
                + run_of(text, head_end, MAX_KEY_BLOCK, |b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'+' | b'/' | b'=' | b'\\' | b'\n' | b'\r' | b' ')
                })
        });
    Some(Found {
        start: i,
        end,
        detector: Detector::PrivateKey,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Scanner {
        Scanner::new(DetectorSet::of(&Detector::ALL))
    }

    fn found(text: &str) -> Vec<(&str, &'static str)> {
        let mut out = Vec::new();
        all().scan(text.as_bytes(), &mut out);
        out.iter()
            .map(|f| (&text[f.start..f.end], f.detector.name()))
            .collect()
    }

    #[test]
    fn luhn_valid_cards_are_found_and_invalid_ones_survive() {
        assert_eq!(
            found("pay 4111 1111 1111 1111 now"),
            vec![("4111 1111 1111 1111", "card")]
        );
        assert_eq!(
            found("pan 5555-5555-5555-4444."),
            vec![("5555-5555-5555-4444", "card")]
        );
        assert_eq!(
            found("4012888888881881"),
            vec![("4012888888881881", "card")]
        );
        // Luhn-invalid: an order number
        assert_eq!(found("order 4111 1111 1111 1112"), vec![]);
        // too short, wrong network digit, inside a word
        assert_eq!(found("4111 1111 1111"), vec![]);
        assert_eq!(found("9111111111111111"), vec![]);
        assert_eq!(found("x4111111111111111"), vec![]);
    }

    #[test]
    fn card_inside_a_longer_digit_run_is_found() {
        assert_eq!(
            found("12 4111 1111 1111 1111"),
            vec![("4111 1111 1111 1111", "card")]
        );
    }

    #[test]
    fn emails() {
        assert_eq!(
            found("mail ada.l+x@mail.example.com, thanks."),
            vec![("ada.l+x@mail.example.com", "email")]
        );
        assert_eq!(found("a@b"), vec![]);
        assert_eq!(found("@example.com"), vec![]);
        assert_eq!(found("x@example.c"), vec![]);
    }

    #[test]
    fn phones() {
        assert_eq!(
            found("call +44 20 7946 0958"),
            vec![("+44 20 7946 0958", "phone")]
        );
        assert_eq!(found("(555) 123-4567"), vec![("(555) 123-4567", "phone")]);
        assert_eq!(found("555.123.4567"), vec![("555.123.4567", "phone")]);
        // dates, amounts, timestamps and ids survive
        assert_eq!(found("2024-01-02 1,234.50 1732500000 id 42"), vec![]);
    }

    #[test]
    fn ibans() {
        assert_eq!(
            found("iban DE89 3704 0044 0532 0130 00 ok"),
            vec![("DE89 3704 0044 0532 0130 00", "iban")]
        );
        assert_eq!(
            found("GB82WEST12345698765432"),
            vec![("GB82WEST12345698765432", "iban")]
        );
        assert_eq!(found("GB83WEST12345698765432"), vec![]);
    }

    #[test]
    fn secrets() {
        assert_eq!(
            found("key AKIAIOSFODNN7EXAMPLE."),
            vec![("AKIAIOSFODNN7EXAMPLE", "aws_key")]
        );
        let gh = format!("ghp_{}", "a1".repeat(18));
        assert_eq!(
            found(&format!("t={gh}")),
            vec![(gh.as_str(), "github_token")]
        );
        assert_eq!(
            found("xoxb-1234567890-abcdef"),
            vec![("xoxb-1234567890-abcdef", "slack_token")]
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl";
        assert_eq!(found(&format!("Bearer {jwt}")), vec![(jwt, "jwt")]);
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(&format!("k: {pem} end")), vec![(pem, "private_key")]);
        assert_eq!(
            found("ghost AKIA short xoxb- eyJ -----BEGIN CERTIFICATE-----"),
            vec![]
        );
    }

    #[test]
    fn us_ssns_in_issued_ranges_are_found() {
        assert_eq!(
            found("ssn 078-05-1120, ok"),
            vec![("078-05-1120", "us_ssn")]
        );
        assert_eq!(found("SSN: 219 09 9999"), vec![("219 09 9999", "us_ssn")]);
        assert_eq!(found("(123-45-6789)"), vec![("123-45-6789", "us_ssn")]);
        // next to other numbers across a space
        assert_eq!(
            found("row 12 078-05-1120 2024"),
            vec![("078-05-1120", "us_ssn")]
        );
    }

    #[test]
    fn us_ssns_never_issued_survive() {
        for never in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert_eq!(found(&format!("ssn {never} ok")), vec![], "{never}");
        }
    }

    #[test]
    fn ssn_shaped_parts_of_longer_numbers_survive() {
        for other in [
            "1078-05-1120",     // a digit before
            "078-05-11201",     // a digit after
            "x078-05-1120",     // a letter before
            "078-05-1120x",     // a letter after
            "078-05-1120-55",   // a longer dashed id
            "12-078-05-1120",   // likewise
            "078 05 1120 2024", // a spaced run of numbers
            "078-05 1120",      // mixed separators
            "078051120",        // bare nine digits: too many ordinary numbers
            "2024-01-02",
        ] {
            assert_eq!(found(other), vec![], "{other}");
        }
    }

    #[test]
    fn uk_ninos_with_allocated_prefixes_are_found() {
        assert_eq!(found("NI AB123456C."), vec![("AB123456C", "uk_nino")]);
        assert_eq!(
            found("nino: JG 10 37 21 D ok"),
            vec![("JG 10 37 21 D", "uk_nino")]
        );
        assert_eq!(found("CE 123456 A"), vec![("CE 123456 A", "uk_nino")]);
    }

    #[test]
    fn uk_ninos_never_allocated_or_misshapen_survive() {
        for other in [
            "QQ123456C", // Q never first (HMRC's own example prefix)
            "DA123456A", // D never first
            "AO123456A", // O never second
            "GB123456A", // administrative prefixes
            "ZZ123456A",
            "AB123456E",    // suffix beyond D
            "AB12345C",     // five digits
            "AB1234567C",   // seven
            "XAB123456C",   // inside a word
            "AB123456CD",   // likewise
            "AB 12 345 6C", // pairs broken
            "ab123456c",
        ] {
            assert_eq!(found(&format!("id {other} ok")), vec![], "{other}");
        }
    }

    #[test]
    fn values_in_one_digit_run_are_all_found() {
        assert_eq!(
            found("078-05-1120 4111 1111 1111 1111"),
            vec![("078-05-1120", "us_ssn"), ("4111 1111 1111 1111", "card")]
        );
        assert_eq!(
            found("555-123-4567 123-45-6789"),
            vec![("555-123-4567", "phone"), ("123-45-6789", "us_ssn")]
        );
    }

    #[test]
    fn gov_ids_in_raw_json() {
        let s = all();
        assert!(s.any_in_json(
            br#"{"t":"x
078-05-1120
"}"#
        ));
        assert!(s.any_in_json(br#"{"t":"	AB 12 34 56 C"}"#));
        assert!(!s.any_in_json(br#"{"t":"666-12-3456 QQ123456C"}"#));
    }

    #[test]
    fn raw_json_scan_sees_through_escapes() {
        let s = all();
        assert!(s.any_in_json(br#"{"t":"line\nAKIAIOSFODNN7EXAMPLE"}"#));
        assert!(s.any_in_json(br#"{"t":"\u0034111 1111 1111 1111"}"#));
        assert!(!s.any_in_json(br#"{"t":"nothing\nhere 42","n":2024}"#));
    }

    #[test]
    fn only_enabled_detectors_run() {
        let s = Scanner::new(DetectorSet::of(&[Detector::Email]));
        let mut out = Vec::new();
        s.scan(b"4111 1111 1111 1111 a@example.com", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].detector, Detector::Email);
    }
}
