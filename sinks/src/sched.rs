//! Scheduling class of the audit path's threads.
//!
//! The audit thread and its sync thread are background work: they should run
//! when a CPU is free, not preempt a shard the moment they are woken. Under
//! Linux's `SCHED_BATCH` a woken thread does not preempt the running one
//! (it waits for the next scheduling point or tick), so a shard sharing a
//! CPU with the audit thread finishes its reactor turn — and commits more
//! records for the same batch — before the thread writes them. Same
//! priority and CPU share as a normal thread otherwise.
//!
//! The one `unsafe` block here is the `sched_setscheduler(2)` call; the
//! libc binding has no safe wrapper.
#![allow(unsafe_code)]

/// Puts the calling thread in the `SCHED_BATCH` class. Best effort: a
/// refusal (e.g. a seccomp filter) leaves the thread as it was and is logged.
pub fn background_batch() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid, live
        // sched_param for the duration of the call.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "audit thread stays in the normal scheduling class"
            );
        }
    }
}
