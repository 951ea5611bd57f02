//! The DPDK Environment Abstraction Layer: initialised once per process.
//!
//! Invariants: [`Eal::init`] succeeds at most once per process (DPDK cannot
//! re-initialise after `rte_eal_cleanup`); everything DPDK-backed (pools,
//! ports) borrows nothing from [`Eal`] but must be dropped before it, which
//! `petreld` guarantees by owning them in one struct in that order.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

/// Errors of EAL initialisation.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum EalError {
    /// EAL is already initialised in this process (it initialises once per process: run tests under cargo nextest)
    AlreadyInitialised,
    /// EAL argument {0:?} contains a NUL byte
    NulInArgument(String),
    /// no free hugepages ({0}): reserve some with `echo 1024 > /proc/sys/vm/nr_hugepages` (or run scripts/bootstrap.sh), or pass --no-huge in the EAL args
    NoHugepages(String),
    /// no hugetlbfs is mounted: `mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages` (or run scripts/bootstrap.sh)
    NoHugetlbfs,
    /// rte_eal_init failed: {0} (rte_errno {1})
    Init(String, i32),
    /// registering thread with EAL failed: {0}
    RegisterThread(String),
}

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised EAL; dropping it runs `rte_eal_cleanup`.
#[derive(Debug)]
pub struct Eal {
    tsc_hz: u64,
}

impl Eal {
    /// Initialises EAL with `args` (without the program name).
    ///
    /// Checks for hugepages and a hugetlbfs mount first (unless `--no-huge`
    /// is given), so the common setup mistakes get an error naming the fix
    /// rather than DPDK's log.
    ///
    /// # Errors
    /// See [`EalError`]; [`EalError::AlreadyInitialised`] on a second call.
    pub fn init(args: &[String]) -> Result<Self, EalError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyInitialised);
        }
        if !args.iter().any(|a| a == "--no-huge") {
            check_hugepages()?;
        }
        let mut owned = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("petreld").expect("literal has no NUL"));
        for a in args {
            owned.push(CString::new(a.as_str()).map_err(|_| EalError::NulInArgument(a.clone()))?);
        }
        // rte_eal_init may permute argv (getopt), so hand it a private array of
        // pointers into `owned`, which outlives the call.
        let mut argv: Vec<*mut libc::c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
        let argc = i32::try_from(argv.len()).expect("EAL argument count fits in i32");
        // SAFETY: argv holds argc valid NUL-terminated strings that live until
        // after the call; EAL keeps no pointer to argv itself past init (it
        // copies what it needs), and this runs at most once per process.
        let rc = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if rc < 0 {
            let errno = rte_errno();
            return Err(EalError::Init(strerror(errno), errno));
        }
        // SAFETY: plain query, valid after a successful rte_eal_init.
        let tsc_hz = unsafe { sys::rte_get_tsc_hz() };
        Ok(Eal { tsc_hz })
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// The main lcore's id.
    pub fn main_lcore(&self) -> u32 {
        // SAFETY: plain query on an initialised EAL.
        unsafe { sys::rte_get_main_lcore() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL was initialised by `init`; every pool and port was dropped
        // before (the owner's field order guarantees it).
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// Reads the TSC (time stamp counter); the PMD's `now`.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rte_rdtsc only reads the TSC register.
    unsafe { sys::rte_rdtsc() }
}

/// The calling thread's DPDK `rte_errno`.
pub fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's errno slot; no preconditions.
    unsafe { sys::petrel_rte_errno() }
}

/// DPDK's message for an errno value (positive or negative).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local
    // NUL-terminated string, which we copy at once.
    let s = unsafe { CStr::from_ptr(sys::rte_strerror(errno.abs())) };
    s.to_string_lossy().into_owned()
}

/// Registers the calling (non-EAL) thread with EAL so it gets an lcore id
/// and with it per-lcore mempool caches. Call once from each PMD thread.
///
/// # Errors
/// [`EalError::RegisterThread`] when EAL has no lcore slot left.
pub fn register_thread() -> Result<u32, EalError> {
    // SAFETY: called from a thread that is not yet registered; EAL is up.
    let rc = unsafe { sys::rte_thread_register() };
    if rc != 0 {
        return Err(EalError::RegisterThread(strerror(rte_errno())));
    }
    // SAFETY: plain query of the calling thread's lcore id.
    Ok(unsafe { sys::rte_lcore_id() })
}

/// Sets the calling thread's timer slack (how late the kernel may end its
/// sleeps), in ns: PMDs that sleep when lightly loaded need µs, not the
/// default 50 µs. Best effort (a failure leaves the default).
pub fn set_timer_slack(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only the
    // calling thread's slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong) };
}

/// Unregisters a thread registered with [`register_thread`].
pub fn unregister_thread() {
    // SAFETY: the calling thread was registered by register_thread.
    unsafe { sys::rte_thread_unregister() }
}

fn check_hugepages() -> Result<(), EalError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let free = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if free == 0 {
        let total = meminfo.lines().find_map(|l| l.strip_prefix("HugePages_Total:")).map_or("?", str::trim).to_owned();
        return Err(EalError::NoHugepages(format!("HugePages_Total {total}, HugePages_Free 0")));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")) {
        return Err(EalError::NoHugetlbfs);
    }
    Ok(())
}
