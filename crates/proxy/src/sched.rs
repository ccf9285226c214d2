//! A short scheduling slice for the data-plane thread (issue 15, tails under contention).
//!
//! Every request wakes the data-plane thread of both sidecars, each for a few tens of microseconds. On a
//! node whose cores are busy, Linux's EEVDF scheduler (6.6 and later) lets a woken thread wait until the
//! running one has used its slice (0.75 ms × (1 + log2 CPUs), 1.5 ms on 2 cores) unless the woken thread
//! asked for a shorter slice: since 6.12 a task's own slice (`sched_attr.sched_runtime` for
//! `SCHED_OTHER`, 0.1–100 ms) sets its deadline, so a short-slice task preempts a CPU hog at wake-up.
//! A request through two sidecars is a chain of such wake-ups (generator → client sidecar → server
//! sidecar → app and back), each of which could wait a slice: that is how the mesh path's p90 grew by
//! milliseconds when the other core was busy while the direct path (one wake-up each way) barely moved.
//! The thread keeps its policy, its nice value and so its CPU share: a short slice changes when it runs,
//! not how much. No privilege is needed; kernels before 6.12 accept and ignore the value.
#![allow(
    unsafe_code,
    reason = "sched_setattr/sched_getattr have no libc wrapper; the raw syscalls take a struct we own"
)]

use std::time::Duration;

/// The slice the data-plane thread asks for: the kernel's minimum (0.1 ms), a few requests' work.
pub const DATA_PLANE_SLICE: Duration = Duration::from_micros(100);

/// `struct sched_attr` (include/uapi/linux/sched/types.h), first version (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The calling thread's policy, nice value and slice request (`sched_runtime`, 0 when none).
pub fn current() -> std::io::Result<(u32, i32, Duration)> {
    let mut attr = SchedAttr::default();
    // SAFETY: sched_getattr writes at most `size` bytes into the struct we own and pass with its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((attr.policy, attr.nice, Duration::from_nanos(attr.runtime)))
}

/// Asks for `slice` as the calling thread's scheduling slice, keeping its policy and nice value. A thread
/// that is not `SCHED_OTHER` (a real-time or batch policy someone chose) is left alone.
pub fn request_slice(slice: Duration) -> std::io::Result<()> {
    let (policy, nice, _) = current()?;
    if policy != libc::SCHED_OTHER as u32 {
        return Ok(());
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        nice,
        runtime: slice.as_nanos() as u64,
        ..Default::default()
    };
    // SAFETY: sched_setattr reads the struct we own; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_request_keeps_policy_and_nice() {
        // A thread of its own: the request must not change the test runner's threads.
        std::thread::spawn(|| {
            let (policy, nice, _) = current().unwrap();
            request_slice(DATA_PLANE_SLICE).unwrap();
            let (policy_after, nice_after, slice) = current().unwrap();
            assert_eq!((policy_after, nice_after), (policy, nice));
            // Kernels with EEVDF custom slices (6.12+) report the request back; older ones report 0.
            assert!(
                slice == DATA_PLANE_SLICE || slice.is_zero(),
                "sched_runtime read back as {slice:?}"
            );
        })
        .join()
        .unwrap();
    }
}
