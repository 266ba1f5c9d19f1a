//! Worker threads, each serving the client connections handed to it from start to end.
//!
//! With more than one worker, each is a thread running a current-thread tokio runtime of its
//! own (worker 0 is the runtime `tracegate` starts on, which also accepts, and runs the
//! admin port and reloads). An accepted connection goes to the worker with the fewest open
//! (ties go round), and stays there: its requests, its TLS handshake and the upstream
//! connections they use are polled by that worker's thread and registered with its I/O
//! driver, as nginx's and Envoy's workers keep theirs. The upstream pools are per worker
//! too ([`crate::upstream::Conns`] keeps one per worker and picks by [`index`]), so a
//! request never waits on a connection another thread's driver must wake.
//!
//! Before, two workers were one multi-thread runtime, whose tasks move between its
//! threads: connection tasks woken by one thread's I/O driver were queued there and stolen
//! by the other, and a request behind tracegate took 6.59 ms ± 2.84 ms (mean ± sd) at 256
//! connections with both workers on one core, against 7.04 ± 1.52 ms behind nginx's two
//! processes; p99 was 1.25x nginx's (benches/README.md, 2026-12-07).

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// This thread's worker number: 0 on any thread not started by [`Workers::start`].
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker whose thread this is (0 outside worker threads).
#[inline]
pub fn index() -> usize {
    INDEX.with(Cell::get)
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    /// Client connections open on it.
    open: Arc<AtomicUsize>,
}

/// The workers connections are handed to. Dropping it stops the threads it started (with
/// what they still run: drop it once the listeners have drained).
#[derive(Debug)]
pub struct Workers {
    /// Empty: every connection is served on the runtime that accepted it.
    workers: Box<[Worker]>,
    /// Where the search for the fewest open starts: the next worker after the last
    /// search's start, so that ties go round (see [`Workers::serve`]).
    next: AtomicUsize,
    /// Tells the started threads to stop (dropped with `Workers`).
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// No workers of its own: connections are served where they are accepted (one worker,
    /// or the runtime of a test).
    pub fn here() -> Workers {
        Workers {
            workers: Box::new([]),
            next: AtomicUsize::new(0),
            _stop: Vec::new(),
        }
    }

    /// `n` workers: the runtime of the calling thread as worker 0 and `n - 1` threads, each
    /// with a current-thread runtime, named `tracegate-K`. Must be called on a runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let mut workers = vec![Worker {
            handle: Handle::current(),
            open: Arc::default(),
        }];
        let mut stops = Vec::new();
        for k in 1..n.max(1) {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("tracegate-{k}"))
                .spawn(move || {
                    INDEX.set(k);
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = ready_tx.send(Ok(rt.handle().clone()));
                            // Serves what is handed to it until `Workers` is dropped.
                            let _ = rt.block_on(stop_rx);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?;
            let handle = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended while starting"))??;
            workers.push(Worker {
                handle,
                open: Arc::default(),
            });
            stops.push(stop_tx);
        }
        Ok(Workers {
            workers: workers.into_boxed_slice(),
            next: AtomicUsize::new(0),
            _stop: stops,
        })
    }

    /// How many workers serve connections (1 for [`Workers::here`]).
    pub fn count(&self) -> usize {
        self.workers.len().max(1)
    }

    /// Client connections open on each worker, by worker number (empty for
    /// [`Workers::here`]).
    pub fn open(&self) -> Vec<usize> {
        self.workers.iter().map(|w| w.open.load(Relaxed)).collect()
    }

    /// Tasks alive on the workers' runtimes (on the calling one for [`Workers::here`];
    /// `None` off a runtime).
    pub fn alive_tasks(&self) -> Option<usize> {
        if self.workers.is_empty() {
            let rt = Handle::try_current().ok()?;
            return Some(rt.metrics().num_alive_tasks());
        }
        Some(
            (self.workers.iter())
                .map(|w| w.handle.metrics().num_alive_tasks())
                .sum(),
        )
    }

    /// Serves `stream` with `serve` on the worker with the fewest connections open, to the
    /// end of the connection. Ties go round: short connections one after the other (a
    /// client that closes after each request) are spread over the workers too, instead of
    /// all landing on the first.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let n = self.workers.len();
        let start = self.next.fetch_add(1, Relaxed);
        // No workers of its own (`here`): served where it was accepted.
        let Some((k, worker)) = (0..n)
            .map(|j| start.wrapping_add(j) % n)
            .filter_map(|k| Some((k, self.workers.get(k)?)))
            .min_by_key(|(_, w)| w.open.load(Relaxed))
        else {
            tokio::spawn(serve(stream));
            return;
        };
        let open = Open::new(worker.open.clone());
        if k == index() {
            // Accepted on this worker's thread: registered with its driver already.
            tokio::spawn(async move {
                serve(stream).await;
                drop(open);
            });
            return;
        }
        // Moved to the worker's driver: deregistered here, registered there.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                crate::log::warn(&format!("cannot hand a connection to worker {k}: {e}"));
                return;
            }
        };
        worker.handle.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => crate::log::warn(&format!("worker {k} cannot take a connection: {e}")),
            }
            drop(open);
        });
    }
}

/// One connection counted open on a worker until dropped (also when its worker stops with
/// the connection still open).
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(open: Arc<AtomicUsize>) -> Open {
        open.fetch_add(1, Relaxed);
        Open(open)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
