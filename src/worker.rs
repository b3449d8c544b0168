//! Worker threads, each running its own single-threaded tokio runtime.
//!
//! A connection, once accepted, is served on one worker for its whole life, and so
//! are the Redis connections that worker uses: the handler, fred's connection task and
//! the socket reads wake each other on the same thread, with no hand-over between
//! CPUs. A work-stealing runtime moves woken tasks between threads instead, and on a
//! virtual machine every such wake-up of a parked thread is an interrupt between CPUs.
//! (A worker borrows another's Redis connection only while its own are down or when
//! there are fewer connections than workers. Password hashing, the reuse walk and
//! the resolution of Redis's host name run on the worker runtime's blocking threads,
//! started when needed and ended after 10 s idle.)
//!
//! An acceptor thread hands each new connection to the worker with the fewest open
//! ones ([`crate::serve::run`]). Threads are named `worker-<n>`, `acceptor` and
//! `blocking-<n>` (blocking threads of worker `n`), as `top -H` shows them; the names
//! stay within the 15 bytes Linux keeps of one.

use std::cell::Cell;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// Running worker threads. Dropping this stops them: tasks still on their runtimes
/// are cancelled, and the drop waits for blocking tasks they started (a password hash
/// in progress) to finish.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` worker threads, idle until work is spawned on their
    /// [`handles`](Self::handles).
    ///
    /// # Errors
    /// The OS error if a runtime or a thread cannot be created.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            stops: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for index in 0..count.max(1) {
            let runtime = Builder::new_current_thread()
                .enable_all()
                .thread_name(format!("blocking-{index}"))
                // Runs on the runtime's blocking threads only: the worker is this
                // thread, not one the runtime starts.
                .on_thread_start(lower_blocking_priority)
                .build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            workers.stops.push(stop);
            workers.threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{index}"))
                    .spawn(move || {
                        CURRENT.with(|c| c.set(Some(index)));
                        // Runs what is spawned on this runtime until told to stop
                        // (or until `Workers` is dropped, which drops the sender).
                        runtime.block_on(async {
                            let _ = stopped.await;
                        });
                    })?,
            );
        }
        Ok(workers)
    }

    /// The workers' runtimes, in worker order.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// The nice value the workers' blocking threads run at (password hashing, the reuse
/// walk): lower priority than the workers, so that a login flood runs on CPU time the
/// requests leave idle rather than on theirs, and refreshes keep their latency while
/// logins queue. Hashing still gets every idle CPU, and about a tenth of a busy one.
pub const BLOCKING_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`BLOCKING_NICE`], never raises it. Linux
/// keeps a nice value per thread, so no other thread is touched. Failure leaves the
/// thread as it was: only the latency of requests during a login flood depends on it.
fn lower_blocking_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        match getpriority_process(None) {
            Ok(nice) if nice < BLOCKING_NICE => {
                if let Err(e) = setpriority_process(None, BLOCKING_NICE) {
                    tracing::debug!(error = %e, "cannot lower a blocking thread's priority");
                }
            }
            _ => {}
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_they_were_spawned_on() {
        let workers = Workers::start(3).expect("workers");
        let seen: Vec<Option<usize>> = workers
            .handles()
            .iter()
            .map(|h| {
                let (tx, rx) = std::sync::mpsc::channel();
                h.spawn(async move { tx.send(current()).expect("receiver") });
                rx.recv().expect("answer")
            })
            .collect();
        assert_eq!(seen, [Some(0), Some(1), Some(2)]);
        assert_eq!(current(), None, "the caller is not a worker");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn blocking_work_runs_below_the_workers_priority() {
        use rustix::process::getpriority_process;
        let workers = Workers::start(1).expect("workers");
        let (tx, rx) = std::sync::mpsc::channel();
        workers.handles()[0].spawn(async move {
            let worker = getpriority_process(None).expect("nice");
            let blocking = tokio::task::spawn_blocking(|| getpriority_process(None))
                .await
                .expect("blocking task")
                .expect("nice");
            tx.send((worker, blocking)).expect("receiver");
        });
        let (worker, blocking) = rx.recv().expect("answer");
        assert_eq!(blocking, worker.max(BLOCKING_NICE), "worker at {worker}");
        assert_eq!(
            getpriority_process(None).expect("nice"),
            worker,
            "the caller keeps its priority"
        );
    }

    #[test]
    fn dropping_the_workers_stops_their_threads() {
        let workers = Workers::start(2).expect("workers");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A task that never finishes holds the sender; cancelling it drops the sender.
        workers.handles()[1].spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        assert!(rx.recv().is_err(), "the pending task was cancelled");
    }
}
