//! A timer for deadlines that keep moving later: a connection's next head, idle period or
//! upstream answer. Registering a tokio timer for each and dropping it cost ~400-480
//! instructions a request; this one stays registered, no later than the deadline it
//! guards, and is moved only when it fires early or an earlier deadline comes.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub struct LazyTimer(Pin<Box<Sleep>>);

impl LazyTimer {
    /// A timer that fires at `at` once polled.
    pub fn new(at: Instant) -> Self {
        LazyTimer(Box::pin(tokio::time::sleep_until(at)))
    }

    /// Makes the timer fire no later than `at`: it moves only if it was set later.
    pub fn arm(&mut self, at: Instant) {
        if self.0.deadline() > at {
            self.0.as_mut().reset(at);
        }
    }

    /// Whether the timer has fired (one atomic load: no clock read, no registration). Once
    /// polled, a timer that has not fired wakes the task when it does.
    pub fn fired(&self) -> bool {
        self.0.is_elapsed()
    }

    /// Makes the timer fire at `at`, earlier or later than it was set.
    pub fn set(&mut self, at: Instant) {
        self.0.as_mut().reset(at);
    }

    /// Whether `at` has passed; else the task is woken by then. A timer that fires before
    /// `at` (set for an earlier deadline) moves to `at`, or to `step` from now when that
    /// comes first (so that an earlier deadline armed later rarely has to move it).
    pub fn expired(&mut self, at: Instant, step: Duration, cx: &mut Context<'_>) -> bool {
        while self.0.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            if now >= at {
                return true;
            }
            self.0
                .as_mut()
                .reset(at.min(now.checked_add(step).unwrap_or(at)));
        }
        false
    }
}
