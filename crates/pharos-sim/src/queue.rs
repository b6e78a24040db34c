//! A time-ordered event queue: earliest first, ties in the order pushed (so that runs
//! are deterministic).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

struct Timed<E> {
    t: f64,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Timed<E> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl<E> Eq for Timed<E> {}
impl<E> PartialOrd for Timed<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Timed<E> {
    /// Reversed, for a max-heap that pops the earliest.
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

pub(crate) struct EventQueue<E> {
    heap: BinaryHeap<Timed<E>>,
    seq: u64,
}

impl<E> EventQueue<E> {
    pub(crate) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    pub(crate) fn push(&mut self, t: f64, ev: E) {
        self.seq += 1;
        self.heap.push(Timed {
            t,
            seq: self.seq,
            ev,
        });
    }

    /// The earliest event and its time.
    pub(crate) fn pop(&mut self) -> Option<(f64, E)> {
        self.heap.pop().map(|x| (x.t, x.ev))
    }

    /// The next event's time.
    pub(crate) fn next_time(&self) -> Option<f64> {
        self.heap.peek().map(|x| x.t)
    }
}
