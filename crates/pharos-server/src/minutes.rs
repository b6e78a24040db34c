//! The durable per-minute load history of a service: what arrived, was served, dropped
//! and late in each minute, its p99 latency and its replicas - kept in the store as one
//! row per service and hour, the hour's 60 minutes packed in a few bytes each.
//!
//! A minute is a unix minute (`unix seconds / 60`). Minutes a server observed carry
//! every field; minutes imported from a trace carry only their arrivals; a minute nobody
//! recorded (the server was down) is absent.
//!
//! The packing, per minute: a flag byte (0: absent; bit 0 present, bit 1 observed, bit
//! 2 with a p99) then LEB128 varints: arrivals; if observed, served, dropped,
//! violations, replicas; if with a p99, the p99 in microseconds. A busy observed minute
//! takes about ten bytes, an imported one three, an absent one one.

use serde::{Deserialize, Serialize};

/// Minutes in a stored chunk.
pub const CHUNK_MINUTES: i64 = 60;

/// One minute of a service's load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Minute {
    /// Requests that arrived.
    pub arrivals: u64,
    /// What the server observed (none for an imported minute).
    #[serde(flatten)]
    pub observed: Option<Observed>,
}

/// What the server saw of a minute beyond its arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// Requests completed in the minute.
    pub served: u64,
    /// Requests dropped (queue full or refused by the admission).
    pub dropped: u64,
    /// Completed requests slower than the SLO latency.
    pub violations: u64,
    /// The p99 latency of the requests completed (none without any), seconds.
    pub p99_s: Option<f64>,
    /// Replicas ready at the minute's end.
    pub replicas: u32,
}

impl Minute {
    pub fn imported(arrivals: u64) -> Self {
        Self {
            arrivals,
            observed: None,
        }
    }
}

/// The chunk (hour) a minute falls in and its slot there.
pub fn chunk_of(minute: i64) -> (i64, usize) {
    (
        minute.div_euclid(CHUNK_MINUTES),
        minute.rem_euclid(CHUNK_MINUTES) as usize,
    )
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_varint(data: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = data.get(*at) else {
            return Err(format!("cut short at byte {at}"));
        };
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(format!("a number longer than 64 bits before byte {at}"))
}

/// Packs a chunk's minutes (slot order; at most [`CHUNK_MINUTES`]).
pub fn encode(minutes: &[Option<Minute>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(minutes.len() * 4);
    for m in minutes.iter().take(CHUNK_MINUTES as usize) {
        let Some(m) = m else {
            out.push(0);
            continue;
        };
        let p99 = m.observed.and_then(|o| o.p99_s);
        let flags = 1 | u8::from(m.observed.is_some()) << 1 | u8::from(p99.is_some()) << 2;
        out.push(flags);
        put_varint(&mut out, m.arrivals);
        if let Some(o) = m.observed {
            for v in [o.served, o.dropped, o.violations, u64::from(o.replicas)] {
                put_varint(&mut out, v);
            }
        }
        if let Some(p) = p99 {
            put_varint(&mut out, (p.max(0.0) * 1e6).round() as u64);
        }
    }
    out
}

/// Unpacks a chunk: always [`CHUNK_MINUTES`] slots (missing trailing slots are absent);
/// a damaged chunk is an error saying where.
pub fn decode(data: &[u8]) -> Result<Vec<Option<Minute>>, String> {
    let mut out = Vec::with_capacity(CHUNK_MINUTES as usize);
    let mut at = 0;
    while at < data.len() {
        if out.len() == CHUNK_MINUTES as usize {
            return Err(format!("more than {CHUNK_MINUTES} minutes"));
        }
        let flags = data[at];
        at += 1;
        if flags == 0 {
            out.push(None);
            continue;
        }
        if flags & !0b111 != 0 || flags & 1 == 0 {
            return Err(format!("bad flags {flags:#x} at byte {}", at - 1));
        }
        let arrivals = get_varint(data, &mut at)?;
        let observed = if flags & 2 != 0 {
            let mut v = [0u64; 4];
            for x in &mut v {
                *x = get_varint(data, &mut at)?;
            }
            Some(Observed {
                served: v[0],
                dropped: v[1],
                violations: v[2],
                p99_s: None,
                replicas: u32::try_from(v[3]).map_err(|_| "replicas out of range")?,
            })
        } else {
            None
        };
        let p99 = if flags & 4 != 0 {
            Some(get_varint(data, &mut at)? as f64 / 1e6)
        } else {
            None
        };
        let observed = match (observed, p99) {
            (Some(o), p) => Some(Observed { p99_s: p, ..o }),
            (None, Some(_)) => return Err("a p99 on a minute not observed".into()),
            (None, None) => None,
        };
        out.push(Some(Minute { arrivals, observed }));
    }
    out.resize(CHUNK_MINUTES as usize, None);
    Ok(out)
}

/// A service's arrivals per minute from a day's first minute: what forecasters are
/// shown (gaps count 0).
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// The unix minute of `counts[0]` (the first minute of a day).
    pub start: i64,
    pub counts: Vec<u32>,
}

impl Series {
    /// An empty series whose day starts at or before `minute` (days start where
    /// `(minute - day_origin) % day_minutes == 0`).
    pub fn starting_before(minute: i64, day_origin: i64, day_minutes: i64) -> Self {
        let start = minute - (minute - day_origin).rem_euclid(day_minutes);
        Self {
            start,
            counts: Vec::new(),
        }
    }

    /// The minute after the last one held.
    pub fn end(&self) -> i64 {
        self.start + self.counts.len() as i64
    }

    /// Sets minute `m`'s count (a minute before the series is ignored; a later one
    /// extends it, gaps counting 0).
    pub fn set(&mut self, m: i64, count: u64) {
        if m < self.start {
            return;
        }
        let i = (m - self.start) as usize;
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] = count.min(u64::from(u32::MAX)) as u32;
    }

    /// Fills with 0 up to (not including) minute `m`.
    pub fn extend_to(&mut self, m: i64) {
        if m > self.end() {
            self.counts.resize((m - self.start) as usize, 0);
        }
    }

    /// Drops whole days from the front so that at most `days` whole days and the
    /// current partial one stay.
    pub fn keep_days(&mut self, days: usize, day_minutes: usize) {
        let whole = self.counts.len() / day_minutes;
        if whole > days {
            let drop = (whole - days) * day_minutes;
            self.counts.drain(..drop);
            self.start += drop as i64;
        }
    }

    /// The last `days` whole days held (fewer if fewer are held), ending at the last
    /// whole day.
    pub fn whole_days(&self, days: usize, day_minutes: usize) -> &[u32] {
        let whole = self.counts.len() / day_minutes;
        let n = whole.min(days);
        &self.counts[(whole - n) * day_minutes..whole * day_minutes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(a: u64, p99: Option<f64>) -> Minute {
        Minute {
            arrivals: a,
            observed: Some(Observed {
                served: a.saturating_sub(3),
                dropped: 3,
                violations: 2,
                p99_s: p99,
                replicas: 4,
            }),
        }
    }

    #[test]
    fn chunks_round_trip_and_stay_small() {
        let mut m: Vec<Option<Minute>> = vec![None; 60];
        m[0] = Some(Minute::imported(1234));
        m[1] = Some(observed(5000, Some(0.1234)));
        m[2] = Some(observed(0, None));
        m[59] = Some(observed(u64::MAX, Some(12.5)));
        let data = encode(&m);
        assert_eq!(decode(&data).unwrap(), m);
        // A full hour of busy observed minutes: about ten bytes a minute.
        let busy: Vec<Option<Minute>> = (0..60)
            .map(|i| Some(observed(2000 + i, Some(0.08))))
            .collect();
        let n = encode(&busy).len();
        assert!(n <= 60 * 12, "{n} bytes");
        assert_eq!(decode(&encode(&busy)).unwrap(), busy);
    }

    #[test]
    fn damaged_chunks_are_errors_not_panics() {
        let good = encode(&[Some(observed(300, Some(0.2)))]);
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(decode(&[0x08]).unwrap_err().contains("bad flags"));
        assert!(decode(&[0x05, 1, 1]).unwrap_err().contains("not observed"));
        assert!(decode(&[0x01; 200]).is_err());
        assert!(
            decode(&[
                0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ])
            .is_err()
        );
        assert!(decode(&[0u8; 61]).is_err());
    }

    #[test]
    fn series_start_at_a_day_and_keep_whole_days() {
        // Days of 10 minutes starting at minute 3 (mod 10).
        let mut s = Series::starting_before(27, 3, 10);
        assert_eq!(s.start, 23);
        s.set(22, 9); // before the series: ignored
        s.set(25, 5);
        assert_eq!(s.counts, vec![0, 0, 5]);
        s.extend_to(50);
        assert_eq!((s.end(), s.counts.len()), (50, 27));
        assert_eq!(s.whole_days(5, 10).len(), 20);
        assert_eq!(s.whole_days(1, 10).len(), 10);
        s.keep_days(1, 10);
        assert_eq!((s.start, s.counts.len()), (33, 17));
        assert_eq!(Series::starting_before(-5, 0, 10).start, -10);
    }
}
