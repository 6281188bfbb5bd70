//! Transparent huge pages for the heap.
//!
//! A node's dedupe index and vote records are hundreds of MB read and written at random. With
//! 4 KiB pages nearly every such access also misses the TLB, and in a virtual machine a TLB
//! miss walks two levels of page tables. glibc backs its heap with 2 MiB transparent huge
//! pages when the `glibc.malloc.hugetlb=1` tunable is set, but it reads tunables only when a
//! process starts. So [`reexec_with_huge_pages`] runs first thing in `main`: if the tunable is
//! not set, it re-executes the same binary with the same arguments and the tunable added.
//! `exec` keeps the process ID, the open descriptors and the rest of the environment.
//!
//! BENCHMARKS.md has the measured effect: core accepts at 10M IDs held, and the wall time of
//! the simulation.
//!
//! Nothing happens in these cases:
//! - `TALLY_HUGE_PAGES=0` is set;
//! - `GLIBC_TUNABLES` already names the tunable (the operator chose);
//! - the kernel's THP mode is `never`;
//! - the target is not Linux with glibc.

/// The glibc tunable that makes malloc ask for transparent huge pages (glibc 2.35 and later;
/// older versions ignore it).
const TUNABLE: &str = "glibc.malloc.hugetlb";

/// What `GLIBC_TUNABLES` must become for huge pages, or `None` if the process should run as
/// it is. `tunables` is the current `GLIBC_TUNABLES`, `opt_out` is `TALLY_HUGE_PAGES`, and
/// `thp_mode` is the kernel's `/sys/kernel/mm/transparent_hugepage/enabled` line.
fn tunables_for_huge_pages(
    tunables: Option<&str>,
    opt_out: Option<&str>,
    thp_mode: Option<&str>,
) -> Option<String> {
    if opt_out.is_some_and(|v| v.trim() == "0") {
        return None;
    }
    if tunables.is_some_and(|t| t.split(':').any(|kv| kv.split('=').next() == Some(TUNABLE))) {
        return None;
    }
    // The kernel marks the active mode in brackets: "always [madvise] never".
    if thp_mode.is_none_or(|mode| mode.contains("[never]")) {
        return None;
    }
    Some(match tunables {
        Some(existing) if !existing.is_empty() => format!("{existing}:{TUNABLE}=1"),
        _ => format!("{TUNABLE}=1"),
    })
}

/// Whether this process runs with the huge-page tunable set.
pub fn active() -> bool {
    std::env::var("GLIBC_TUNABLES")
        .is_ok_and(|t| t.split(':').any(|kv| kv == format!("{TUNABLE}=1")))
}

/// Re-executes this binary with huge pages for the heap, unless one of the cases in the
/// module's notes applies. Returns only if it did not re-execute (or `exec` failed, which it
/// reports on stderr: logging is not set up yet).
pub fn reexec_with_huge_pages() {
    if !cfg!(all(target_os = "linux", target_env = "gnu")) {
        return;
    }
    let thp_mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok();
    let Some(tunables) = tunables_for_huge_pages(
        std::env::var("GLIBC_TUNABLES").ok().as_deref(),
        std::env::var("TALLY_HUGE_PAGES").ok().as_deref(),
        thp_mode.as_deref(),
    ) else {
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    exec(&exe, &arg0, args, &tunables);
}

#[cfg(unix)]
fn exec(
    exe: &std::path::Path,
    arg0: &std::ffi::OsStr,
    args: impl Iterator<Item = std::ffi::OsString>,
    tunables: &str,
) {
    use std::os::unix::process::CommandExt as _;
    let error = std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", tunables)
        .exec();
    eprintln!(
        "tally: could not re-execute {} with huge pages ({error}); running without them",
        exe.display()
    );
}

#[cfg(not(unix))]
fn exec(
    _exe: &std::path::Path,
    _arg0: &std::ffi::OsStr,
    _args: impl Iterator<Item = std::ffi::OsString>,
    _tunables: &str,
) {
}

#[cfg(test)]
mod tests {
    use super::*;

    const MADVISE: Option<&str> = Some("always [madvise] never\n");

    #[test]
    fn the_tunable_is_added_to_whatever_tunables_are_set() {
        assert_eq!(
            tunables_for_huge_pages(None, None, MADVISE).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_for_huge_pages(Some(""), None, MADVISE).as_deref(),
            Some("glibc.malloc.hugetlb=1")
        );
        assert_eq!(
            tunables_for_huge_pages(Some("glibc.malloc.arena_max=2"), Some("1"), MADVISE)
                .as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
        );
    }

    #[test]
    fn an_operators_choice_or_a_kernel_without_thp_is_left_alone() {
        // The operator's own setting, even "off", wins; so do the opt-out and `never`.
        let chosen = Some("glibc.malloc.hugetlb=0");
        assert_eq!(tunables_for_huge_pages(chosen, None, MADVISE), None);
        assert_eq!(tunables_for_huge_pages(None, Some("0"), MADVISE), None);
        let never = Some("always madvise [never]\n");
        assert_eq!(tunables_for_huge_pages(None, None, never), None);
        assert_eq!(tunables_for_huge_pages(None, None, None), None);
        // A re-executed process finds its own tunable and does not loop.
        let again = tunables_for_huge_pages(None, None, MADVISE);
        assert_eq!(
            tunables_for_huge_pages(again.as_deref(), None, MADVISE),
            None
        );
    }
}
