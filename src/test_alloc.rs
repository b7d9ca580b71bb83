//! A test-only global allocator that remembers, per thread, the largest single allocation asked
//! for: the fuzz and hostile-input tests assert that no input makes a reader allocate beyond
//! what it actually received. Per thread, so the tests that run beside them do not count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

struct Probe;

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = LARGEST.try_with(|c| {
        if size > c.get() {
            c.set(size);
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; only sizes are noted.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static PROBE: Probe = Probe;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
pub fn largest_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|c| c.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Resident memory is the whole process's, and the other tests of a binary allocate on their own
/// threads (CI once saw +100 MB that was theirs), so a memory measurement runs in a child process
/// that runs only it. Called first thing by such a test (`module` = `module_path!()`): in the child
/// it returns true and the test measures; in the parent it runs the child, checks that it ran and
/// passed exactly this test, and returns false.
pub fn measured_alone(module: &str, test: &str) -> bool {
    const CHILD: &str = "VITRINE_RSS_MEASURE";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let module = module.split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::{test}");
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .expect("run the measuring child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{text}");
    // A filter that matched nothing would pass silently.
    assert!(
        text.contains("1 passed"),
        "the child did not run the test:\n{text}"
    );
    false
}
