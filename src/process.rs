//! What this process costs the machine, read from Linux's `/proc/self`: CPU time and resident
//! memory. One reader for the daemon's `process_*` metrics and the benchmarks' CPU figures.
//!
//! Each call reads the file afresh (a few microseconds); `None` where `/proc` is missing or
//! reads differently, so callers leave the figure out rather than report a wrong one.

use std::time::Duration;

/// Linux reports CPU time in USER_HZ ticks, 100 a second on every architecture we build for
/// (`sysconf(_SC_CLK_TCK)`, fixed by the kernel ABI).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system, all threads) the process used so far.
pub fn cpu_time() -> Option<Duration> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
        .map(|ticks| Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
}

/// Resident memory in bytes (`VmRSS`).
pub fn resident_bytes() -> Option<u64> {
    parse_vm_rss_kib(&std::fs::read_to_string("/proc/self/status").ok()?).map(|kib| kib * 1024)
}

/// utime + stime from a `/proc/PID/stat` line: fields 14 and 15, counted after the ")" that ends
/// the command name, which may itself hold spaces and parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        // A real line's shape (`cat /proc/self/stat`), with utime 1234 and stime 56.
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 \
                    1 0 123 4096 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_cpu_ticks(line), Some(1290));
        assert_eq!(parse_cpu_ticks("4242 (cut short) S 1"), None);
    }

    #[test]
    fn resident_memory_is_vm_rss_in_bytes() {
        let status = "Name:\tvitrine\nVmHWM:\t  99999 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_kib(status), Some(2048));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_time_grows_while_this_thread_works() {
        let before = cpu_time().expect("/proc/self/stat");
        // Ticks are 10 ms and a loaded machine gives this thread a fraction of a core: spin until
        // the count moves rather than for a fixed time.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut x = 0u64;
        while cpu_time().is_some_and(|t| t <= before) && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        assert!(cpu_time().expect("/proc/self/stat") > before);
        assert!(resident_bytes().expect("/proc/self/status") > 1 << 20);
    }
}
