//! Exchanges the export thread has encoded come back to the request path, whose next
//! requests are recorded into them instead of into a new allocation.
//!
//! Each recorded request put its `Exchange` (~780 bytes) in an `Arc` of its own, and the
//! export thread freed it after encoding. The allocation went to one thread and the free
//! to another: glibc gives the freed chunk back to the worker's arena under its lock, and
//! the worker's next allocation of that size came from the arena's bins, not from its
//! thread cache, into memory gone cold (~12 last-level write misses in callgrind's cache
//! model at c=256). An exchange that comes back was just read by the export thread. With
//! them reused, glibc's allocator costs 708 instructions a request instead of 941 at c=256
//! (callgrind, benches/README.md 2026-12-07), and the export thread's share of the CPU is
//! 5-9% less.
//!
//! The export thread gives back, in one lock a run, the exchanges it held the last
//! reference to ([`give_back`]). A worker takes them all at once into a cache of its own
//! thread when its cache is empty ([`fill`]), so the shared list is locked about once a
//! run on each side, never per request. At most [`MOST`] wait in the shared list; a
//! worker's cache holds at most what it took. An exchange still in the viewer's ring is
//! not given back (it is not the last reference) and is freed as before.
//!
//! A spare keeps what its last request recorded (its connection's attributes, its route's
//! name) until it is reused: those are freed by the worker that overwrites it, where they
//! were made.
#![allow(clippy::disallowed_types)] // The shared list's lock: one `Vec` swap or append, never across an await.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use super::Exchange;

/// The most exchanges waiting in the shared list: a batch (`export.batch_size`'s default).
/// More are freed by the export thread as before.
pub const MOST: usize = 512;

static SHARED: Mutex<Vec<Arc<Exchange>>> = Mutex::new(Vec::new());
/// How many wait in `SHARED`: read before locking, so that a worker finding none does not
/// lock.
static WAITING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's share, taken whole from `SHARED`.
    static CACHE: RefCell<Vec<Arc<Exchange>>> = const { RefCell::new(Vec::new()) };
}

fn shared() -> std::sync::MutexGuard<'static, Vec<Arc<Exchange>>> {
    SHARED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An exchange on the heap, shared by nothing yet, recorded by `fill`: into a spare
/// exchange's allocation when there is one, into `blank()` in a new one otherwise. `fill`
/// sets every field (what a spare's last request recorded is dropped field by field as it
/// does), so the exchange is written where it lies: made on the stack and moved into its
/// allocation, its ~780 bytes were copied twice more (~300 instructions on this path;
/// benches/README.md, 2026-12-07's tenth session).
#[inline]
pub fn fill(blank: impl FnOnce() -> Exchange, fill: impl FnOnce(&mut Exchange)) -> Arc<Exchange> {
    let spare = CACHE.with_borrow_mut(|cache| {
        if cache.is_empty() && WAITING.load(Relaxed) > 0 {
            let mut list = shared();
            // The cache's empty vector (and its room) stays for the export thread to fill.
            std::mem::swap(cache, &mut list);
            WAITING.store(0, Relaxed);
        }
        cache.pop()
    });
    if let Some(mut spare) = spare
        && let Some(slot) = Arc::get_mut(&mut spare)
    {
        fill(slot);
        return spare;
    }
    let mut e = blank();
    fill(&mut e);
    Arc::new(e)
}

/// Gives back the exchanges of `done` that nothing else holds (up to [`MOST`] waiting) and
/// frees the rest; `done` is left empty.
pub fn give_back(done: &mut Vec<Arc<Exchange>>) {
    done.retain_mut(|e| Arc::get_mut(e).is_some());
    if done.is_empty() {
        return;
    }
    let mut list = shared();
    let room = MOST.saturating_sub(list.len());
    let keep = done.len().min(room);
    list.extend(done.drain(..keep));
    WAITING.store(list.len(), Relaxed);
    drop(list);
    // The ones there was no room for, freed after the lock is released.
    done.clear();
}

/// Exchanges waiting in the shared list now.
pub fn waiting() -> usize {
    WAITING.load(Relaxed)
}
