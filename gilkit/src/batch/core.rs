//! The claim/complete core of the CPU executor: one atomic cursor hands out disjoint runs of input
//! indices, and whoever claimed an index is the only writer of that index's result slot.
//!
//! The algorithm and why it is correct are explained in `README.md` beside this file. In short:
//!
//! - [`Board::claim`] advances the cursor with one `fetch_add` and returns a [`Claim`] for the
//!   half-open range it reserved. Every `fetch_add` sees the previous one's result, so ranges never
//!   overlap and every index below `len` is reserved at most once.
//! - A [`Claim`] yields each of its indices once, with a [`SlotWriter`] that can write that index's
//!   slot once. A writer only exists for an index its claim owns: no two writers for one slot ever
//!   exist, which is what makes the unsynchronised write sound.
//! - [`Board::into_slots`] takes the board by value, so every claim and writer (which borrow it) has
//!   ended; waiting for the worker threads that held them (`pool::join`) makes their writes
//!   visible to the caller.
//!
//! # Memory ordering
//! The cursor uses `Relaxed`: atomicity of the read-modify-write (`fetch_add`, and ordered
//! streaming's `compare_exchange` and `fetch_max`) alone gives uniqueness of claims (all RMWs of
//! one atomic form a single total order and each reads the value written by the one before it). No data is published through the cursor: slot writes become visible to the reader
//! through the happens-before edge of waiting for the worker threads (`pool::join`, whose
//! completion signal is a channel disconnection observed under the channel's lock), which
//! [`Board::into_slots`] requires by taking `self`.
//!
//! Under `--cfg gilkit_loom` the atomics and cells come from `loom`, and `tests` below model two
//! workers claiming and completing concurrently, and ordered streaming's claims (`ordered.rs`).

use std::ops::Range;

#[cfg(gilkit_loom)]
use loom::cell::UnsafeCell;
#[cfg(gilkit_loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};
#[cfg(not(gilkit_loom))]
use std::cell::UnsafeCell;
#[cfg(not(gilkit_loom))]
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest run of indices one claim reserves. Large enough to amortise the contended
/// `fetch_add` over trivial items (~100 ns shared between 64 items), small enough that an outlier
/// item delays at most 63 others that no other worker can take.
pub(crate) const MAX_CHUNK: usize = 64;

/// The claim cursor: the first unclaimed index of `0..len`. Every index is handed out at most
/// once, to whoever's read-modify-write took it: runs of indices for the CPU executor
/// ([`Board::claim`]), single indices for ordered streaming (`ordered.rs`), and a given index
/// only if it is the next one ([`Cursor::claim_at`]).
pub(crate) struct Cursor {
    /// May run past `len` (claims clip to it).
    next: crossbeam_utils::CachePadded<AtomicUsize>,
    len: usize,
}

impl Cursor {
    pub(crate) fn new(len: usize) -> Self {
        Self {
            next: crossbeam_utils::CachePadded::new(AtomicUsize::new(0)),
            len,
        }
    }

    /// Reserves the next run of unclaimed indices for one of `workers` workers, or `None` once
    /// all are claimed.
    ///
    /// The run's length follows guided self-scheduling (C. D. Polychronopoulos and D. J. Kuck,
    /// "Guided Self-Scheduling: A Practical Scheduling Scheme for Parallel Supercomputers", IEEE
    /// Transactions on Computers, 1987): a share of what remains, so early claims are long (cheap)
    /// and the last ones single items (balanced), capped by [`MAX_CHUNK`].
    #[inline]
    pub(crate) fn claim_run(&self, workers: usize) -> Option<Range<usize>> {
        // A stale read only changes the run's length, never its uniqueness.
        let seen = self.next.load(Ordering::Relaxed);
        if seen >= self.len {
            return None;
        }
        let chunk = ((self.len - seen) / (4 * workers)).clamp(1, MAX_CHUNK);
        let start = self.next.fetch_add(chunk, Ordering::Relaxed);
        (start < self.len).then(|| start..(start + chunk).min(self.len))
    }

    /// Claims the lowest unclaimed index, if any.
    #[inline]
    pub(crate) fn claim_next(&self) -> Option<usize> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        (index < self.len).then_some(index)
    }

    /// Claims `index` if it is the lowest unclaimed one.
    #[inline]
    pub(crate) fn claim_at(&self, index: usize) -> bool {
        index < self.len
            && self
                .next
                .compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Whether every index is claimed.
    pub(crate) fn is_exhausted(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.len
    }

    /// Makes every index claimed: later claims get nothing.
    pub(crate) fn close(&self) {
        self.next.fetch_max(self.len, Ordering::Relaxed);
    }
}

/// The cursor over the input and one result slot per input item.
pub(crate) struct Board<R> {
    cursor: Cursor,
    slots: Box<[Slot<R>]>,
    /// Workers sharing the board: sizes the claims (guided self-scheduling).
    workers: usize,
}

/// One result slot. Written once through a [`SlotWriter`], read once by [`Board::into_slots`].
type Slot<R> = UnsafeCell<Option<R>>;

// SAFETY: a `Board` is shared by reference between worker threads. The only access to a slot
// through a shared reference is `SlotWriter::write`, and at most one `SlotWriter` per index ever
// exists (see `Claim`), so no two threads touch one slot; the value moves from the writing thread
// to the reader, hence `R: Send`. The cursor is an atomic.
unsafe impl<R: Send> Sync for Board<R> {}

impl<R> Board<R> {
    /// A board of `len` empty slots shared by `workers` workers (at least 1).
    pub(crate) fn new(len: usize, workers: usize) -> Self {
        Self {
            cursor: Cursor::new(len),
            slots: (0..len).map(|_| UnsafeCell::new(None)).collect(),
            workers: workers.max(1),
        }
    }

    /// Reserves the next run of unclaimed indices ([`Cursor::claim_run`]), or `None` once all
    /// are claimed.
    #[inline]
    pub(crate) fn claim(&self) -> Option<Claim<'_, R>> {
        Some(Claim {
            board: self,
            range: self.cursor.claim_run(self.workers)?,
        })
    }

    /// The slots, in input order: `Some` where a worker wrote, `None` where no one did.
    pub(crate) fn into_slots(self) -> Vec<Option<R>> {
        self.slots
            .into_vec()
            .into_iter()
            .map(UnsafeCell::into_inner)
            .collect()
    }
}

/// A run of indices reserved by one worker. Iterating yields each index once, with the only
/// writer of its slot.
pub(crate) struct Claim<'a, R> {
    board: &'a Board<R>,
    range: Range<usize>,
}

impl<'a, R> Iterator for Claim<'a, R> {
    type Item = (usize, SlotWriter<'a, R>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let index = self.range.next()?;
        Some((
            index,
            SlotWriter {
                slot: &self.board.slots[index],
            },
        ))
    }
}

/// Permission to write one slot once. Only [`Claim`] makes one, for an index it reserved.
pub(crate) struct SlotWriter<'a, R> {
    slot: &'a Slot<R>,
}

impl<R> SlotWriter<'_, R> {
    /// Stores the item's result in its slot.
    #[inline]
    pub(crate) fn write(self, value: R) {
        #[cfg(not(gilkit_loom))]
        // SAFETY: this writer is the only one for its slot (claims are disjoint and a claim yields
        // each index once), and the slot is read only by `into_slots`, which owns the board and so
        // runs after every writer is gone. No other reference to the cell's contents exists.
        unsafe {
            *self.slot.get() = Some(value);
        }
        #[cfg(gilkit_loom)]
        self.slot.with_mut(|cell| {
            // SAFETY: as above; loom checks the claim of exclusive access.
            unsafe { *cell = Some(value) }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(gilkit_loom))]
    #[test]
    fn claims_cover_every_index_once() {
        for (len, workers) in [(0, 1), (1, 4), (7, 2), (1000, 3), (100_000, 2)] {
            let board = Board::<usize>::new(len, workers);
            let mut seen = vec![false; len];
            let mut biggest = 0;
            while let Some(claim) = board.claim() {
                biggest = biggest.max(claim.range.len());
                for (index, writer) in claim {
                    assert!(!seen[index], "index {index} claimed twice");
                    seen[index] = true;
                    writer.write(index * 2);
                }
            }
            assert!(biggest <= MAX_CHUNK);
            let slots = board.into_slots();
            assert!(slots.iter().enumerate().all(|(i, s)| *s == Some(i * 2)));
        }
    }

    #[cfg(not(gilkit_loom))]
    #[test]
    fn an_index_is_claimed_at_the_cursor_only_and_close_ends_claims() {
        let c = Cursor::new(4);
        assert!(!c.claim_at(1), "index 0 is still unclaimed");
        assert!(c.claim_at(0));
        assert!(!c.claim_at(0), "claimed twice");
        assert_eq!(c.claim_next(), Some(1));
        assert!(c.claim_at(2));
        assert!(!c.is_exhausted());
        c.close();
        assert!(c.is_exhausted());
        assert_eq!(
            (c.claim_next(), c.claim_at(3), c.claim_run(1)),
            (None, false, None)
        );
        assert!(!Cursor::new(0).claim_at(0));
    }

    #[cfg(not(gilkit_loom))]
    #[test]
    fn concurrent_claims_are_disjoint() {
        let board = Board::<std::thread::ThreadId>::new(50_000, 4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while let Some(claim) = board.claim() {
                        for (_, writer) in claim {
                            writer.write(std::thread::current().id());
                        }
                    }
                });
            }
        });
        assert!(board.into_slots().iter().all(Option::is_some));
    }

    /// Ordered streaming's use of the cursor (`ordered.rs`): a worker takes the next index while
    /// the consumer takes each index in order if still unclaimed (else the next one), then closes
    /// the cursor; every index is taken at most once, and every index below where the cursor was
    /// closed exactly once. Run by `scripts/ci.d/20-loom.sh` with the model below.
    #[cfg(gilkit_loom)]
    #[test]
    fn loom_ordered_claims() {
        loom::model(|| {
            let cursor = loom::sync::Arc::new(Cursor::new(3));
            let worker = {
                let cursor = cursor.clone();
                loom::thread::spawn(move || std::iter::from_fn(|| cursor.claim_next()).collect())
            };
            let mut mine = Vec::new();
            for want in 0..2 {
                if cursor.claim_at(want) {
                    mine.push(want);
                } else if let Some(index) = cursor.claim_next() {
                    mine.push(index);
                }
            }
            cursor.close();
            assert!(cursor.claim_next().is_none() && !cursor.claim_at(2));
            let theirs: Vec<usize> = worker.join().unwrap();
            let mut all = [mine, theirs].concat();
            all.sort_unstable();
            assert!(
                all.windows(2).all(|w| w[0] < w[1]),
                "an index taken twice: {all:?}"
            );
            assert!(
                all.len() >= 2 && all[..2] == [0, 1],
                "an index skipped: {all:?}"
            );
        });
    }

    /// Two workers claim and complete a board of three slots; the reader sees every result exactly
    /// once, whatever the interleaving. The test command runs it (`scripts/ci.d/20-loom.sh`:
    /// `RUSTFLAGS="--cfg gilkit_loom"` in its own target directory).
    #[cfg(gilkit_loom)]
    #[test]
    fn loom_claim_and_complete() {
        loom::model(|| {
            let board = loom::sync::Arc::new(Board::<usize>::new(3, 2));
            let other = {
                let board = board.clone();
                loom::thread::spawn(move || {
                    while let Some(claim) = board.claim() {
                        for (index, writer) in claim {
                            writer.write(index + 10);
                        }
                    }
                })
            };
            while let Some(claim) = board.claim() {
                for (index, writer) in claim {
                    writer.write(index + 10);
                }
            }
            other.join().unwrap();
            let board = loom::sync::Arc::try_unwrap(board)
                .ok()
                .expect("both workers are done");
            assert_eq!(board.into_slots(), vec![Some(10), Some(11), Some(12)]);
        });
    }
}
