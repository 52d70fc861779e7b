//! A persistent thread pool for short data-parallel jobs.
//!
//! One job at a time: the caller publishes a task function and a task count, workers
//! claim task indices from a shared counter, and the caller works too. The job is open
//! while the caller is still claiming; a worker *joins* it by bumping a reference count
//! in the same atomic word that carries the job's epoch, and only after joining reads
//! the job. When the caller runs out of tasks it closes the job (late workers then skip
//! it) and waits for the workers still inside. So the caller never waits for a worker
//! that has not started, and the borrowed task function outlives every use of it.
//!
//! Idle workers spin for a short while (decode runs hundreds of jobs a second, each a few
//! tens of microseconds, back to back) and then sleep on a condition variable.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN_FOR: Duration = Duration::from_micros(300);

// Layout of `Shared::state`: bits 0..16 workers inside the job, bits 16..31 how many
// workers may join, bit 31 closed, bits 32.. the job epoch.
const REF_MASK: u64 = 0xffff;
const LIMIT_SHIFT: u32 = 16;
const LIMIT_MASK: u64 = 0x7fff;
const CLOSED: u64 = 1 << 31;
const EPOCH_SHIFT: u32 = 32;

type TaskFn = dyn Fn(usize) + Sync;

struct Job {
    f: *const TaskFn,
    n_tasks: usize,
}

struct Shared {
    state: AtomicU64,
    /// Written by the caller only while no worker can be inside a job (previous job
    /// closed and drained), read by workers only after joining the current one.
    job: UnsafeCell<Job>,
    next_task: AtomicUsize,
    worker_panicked: AtomicBool,
    shutdown: AtomicBool,
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is guarded by the protocol described in the module docs; the task
// function it points to is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Persistent worker threads (created once, parked between jobs).
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Held by the thread running a job; a second concurrent or nested `run` runs inline.
    run_lock: Mutex<()>,
}

impl ThreadPool {
    /// A pool of `n_threads` workers counting the calling thread (`new(2)` spawns one
    /// thread). `0` is taken as 1.
    pub fn new(n_threads: usize) -> Self {
        let n_threads = n_threads.clamp(1, LIMIT_MASK as usize + 1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            job: UnsafeCell::new(Job {
                f: &noop as &TaskFn as *const TaskFn,
                n_tasks: 0,
            }),
            next_task: AtomicUsize::new(0),
            worker_panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("wick-kernel-{index}"))
                    .spawn(move || worker_loop(&shared, index))
                    .expect("spawning a kernel worker thread")
            })
            .collect();
        Self {
            shared,
            workers,
            n_threads,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads a job can use, counting the caller.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Run `f(task)` for every `task` in `0..n_tasks`, each exactly once, on at most
    /// `min(threads, n_threads)` threads including the caller; returns when all are done.
    /// A panic in a task is re-raised here after the other tasks finished. One job runs
    /// at a time: a `run` nested in a task, or called while another thread's job is
    /// running, does its tasks inline on the calling thread (correct, not parallel).
    pub fn run(&self, threads: usize, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let participants = threads.min(self.n_threads).min(n_tasks);
        if participants <= 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _guard = match self.run_lock.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            // Nested in a task of this pool, or another thread is running a job.
            Err(TryLockError::WouldBlock) => {
                (0..n_tasks).for_each(f);
                return;
            }
        };
        let sh = &*self.shared;
        // SAFETY: the previous job is closed and drained (see the end of this function),
        // so no worker reads `job` now. The lifetime is erased; `f` outlives the job
        // because this function waits for every worker that joined it.
        unsafe {
            *sh.job.get() = Job {
                f: erase_lifetime(f),
                n_tasks,
            };
        }
        sh.next_task.store(0, Ordering::Relaxed);
        let epoch = (sh.state.load(Ordering::Relaxed) >> EPOCH_SHIFT) + 1;
        let limit = (participants - 1) as u64;
        sh.state.store(
            (epoch << EPOCH_SHIFT) | (limit << LIMIT_SHIFT),
            Ordering::SeqCst,
        );
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = sh.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.wake.notify_all();
        }

        let mine = catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, f, n_tasks)));

        sh.state.fetch_or(CLOSED, Ordering::AcqRel);
        let mut spins = 0u32;
        while sh.state.load(Ordering::Acquire) & REF_MASK != 0 {
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        let worker_failed = sh.worker_panicked.swap(false, Ordering::AcqRel);
        if let Err(payload) = mine {
            resume_unwind(payload);
        }
        if worker_failed {
            panic!("a task panicked on a kernel worker thread");
        }
    }
}

fn noop(_: usize) {}

/// # Safety
/// The caller must not use the pointer after `f`'s lifetime ends.
unsafe fn erase_lifetime<'a>(f: &'a (dyn Fn(usize) + Sync + 'a)) -> *const TaskFn {
    std::mem::transmute::<&'a (dyn Fn(usize) + Sync + 'a), &'static TaskFn>(f)
}

fn claim_tasks(sh: &Shared, f: &(dyn Fn(usize) + Sync + '_), n_tasks: usize) {
    loop {
        let t = sh.next_task.fetch_add(1, Ordering::Relaxed);
        if t >= n_tasks {
            break;
        }
        f(t);
    }
}

fn worker_loop(sh: &Shared, index: usize) {
    let mut seen_epoch = 0u64;
    loop {
        let Some(state) = wait_for_job(sh, seen_epoch) else {
            return;
        };
        seen_epoch = state >> EPOCH_SHIFT;
        if index as u64 > (state >> LIMIT_SHIFT) & LIMIT_MASK || !try_join(sh, state) {
            continue;
        }
        // SAFETY: joined an open job: the caller wrote it before publishing the epoch
        // (Release/Acquire through `state`) and waits for us before it returns.
        let (f, n_tasks) = unsafe {
            let job = &*sh.job.get();
            (&*job.f, job.n_tasks)
        };
        if catch_unwind(AssertUnwindSafe(|| claim_tasks(sh, f, n_tasks))).is_err() {
            sh.worker_panicked.store(true, Ordering::Release);
        }
        sh.state.fetch_sub(1, Ordering::Release);
    }
}

/// Spin, then sleep, until a job newer than `seen_epoch` is published; `None` on shutdown.
fn wait_for_job(sh: &Shared, seen_epoch: u64) -> Option<u64> {
    let fresh = |s: u64| s >> EPOCH_SHIFT != seen_epoch;
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let s = sh.state.load(Ordering::Acquire);
        if sh.shutdown.load(Ordering::Relaxed) {
            return None;
        }
        if fresh(s) {
            return Some(s);
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) || start.elapsed() < SPIN_FOR {
            std::hint::spin_loop();
            continue;
        }
        let mut guard = sh.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
        sh.sleepers.fetch_add(1, Ordering::SeqCst);
        loop {
            let s = sh.state.load(Ordering::SeqCst);
            if sh.shutdown.load(Ordering::SeqCst) {
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            if fresh(s) {
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                return Some(s);
            }
            guard = sh.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Enter the job of `seen` if it is still that job and open.
fn try_join(sh: &Shared, seen: u64) -> bool {
    let mut cur = seen;
    loop {
        if cur >> EPOCH_SHIFT != seen >> EPOCH_SHIFT || cur & CLOSED != 0 {
            return false;
        }
        match sh
            .state
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return true,
            Err(now) => cur = now,
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.state.fetch_add(1 << EPOCH_SHIFT, Ordering::SeqCst);
        {
            let _l = sh.sleep_lock.lock().unwrap_or_else(|p| p.into_inner());
            sh.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counts(n: usize) -> Vec<AtomicU32> {
        (0..n).map(|_| AtomicU32::new(0)).collect()
    }

    #[test]
    fn every_task_runs_exactly_once() {
        let pool = ThreadPool::new(3);
        for &(threads, n) in &[(1, 10), (2, 1), (2, 2), (3, 7), (8, 1000), (3, 0)] {
            let c = counts(n);
            pool.run(threads, n, &|t| {
                c[t].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                c.iter().all(|x| x.load(Ordering::Relaxed) == 1),
                "{threads} {n}"
            );
        }
    }

    #[test]
    fn many_sequential_jobs() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        for i in 0..20_000 {
            pool.run(2, 4, &|t| {
                total.fetch_add(t + 1, Ordering::Relaxed);
            });
            if i % 5000 == 0 {
                // Let the worker fall asleep once in a while.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 20_000 * 10);
    }

    #[test]
    fn one_thread_runs_inline() {
        let pool = ThreadPool::new(4);
        let me = std::thread::current().id();
        let same = AtomicUsize::new(0);
        pool.run(1, 50, &|_| {
            if std::thread::current().id() == me {
                same.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(same.load(Ordering::Relaxed), 50);
        let single = ThreadPool::new(1);
        assert_eq!(single.n_threads(), 1);
        single.run(4, 3, &|_| {});
    }

    #[test]
    fn nested_runs_complete() {
        let pool = ThreadPool::new(2);
        let c = counts(6 * 5);
        pool.run(2, 6, &|outer| {
            pool.run(2, 5, &|inner| {
                c[outer * 5 + inner].fetch_add(1, Ordering::Relaxed);
            });
        });
        assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
    }

    #[test]
    fn concurrent_callers_share_the_pool() {
        let pool = ThreadPool::new(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..500 {
                        pool.run(2, 8, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 500 * 8);
    }

    #[test]
    fn a_panicking_task_is_reported_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(2, 64, &|t| {
                if t == 40 {
                    panic!("task 40");
                }
            })
        }));
        assert!(r.is_err());
        let c = counts(16);
        pool.run(2, 16, &|t| {
            c[t].fetch_add(1, Ordering::Relaxed);
        });
        assert!(c.iter().all(|x| x.load(Ordering::Relaxed) == 1));
    }
}
