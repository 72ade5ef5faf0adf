//! The global allocator of every nn-tools binary: the system's, asking the kernel for transparent huge
//! pages on large blocks (what glibc's `glibc.malloc.hugetlb=1` tunable does, which a program cannot set
//! for itself). Images are tens of megabytes, and filling a fresh 35 MB block of 4 KB pages takes 8,700
//! page faults: nn-resample on Dataset005 spent half its CPU time in the kernel, and this halved that.
//! Where huge pages are off, or `madvise`'s advice is refused, blocks stay as they are.
//! In nn-train the system's malloc is jemalloc, which keeps freed pages for reuse (tools/nn-train/src/main.rs).

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this size on are advised (smaller ones share pages with other blocks).
const HUGE_PAGES_FROM: usize = 4 << 20;

/// [`System`], with `MADV_HUGEPAGE` advice on the whole pages of blocks of [`HUGE_PAGES_FROM`] bytes or more.
pub struct HugePageAllocator;

/// Advises the whole pages within `[block, block + size)`, a block just allocated and not yet written.
fn advise(block: *mut u8, size: usize) {
    if block.is_null() || size < HUGE_PAGES_FROM {
        return;
    }
    let page = rustix::param::page_size();
    let (from, to) = ((block as usize).next_multiple_of(page), (block as usize + size) / page * page);
    // SAFETY: [from, to) lies within the block the allocator just returned; MADV_HUGEPAGE changes only how
    // the kernel backs these pages, never their contents, and a refusal leaves them as they are.
    let _ = unsafe { rustix::mm::madvise(from as *mut std::ffi::c_void, to - from, rustix::mm::Advice::LinuxHugepage) };
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; `advise` does not change memory.
unsafe impl GlobalAlloc for HugePageAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System`'s
        let block = unsafe { System.alloc(layout) };
        advise(block, layout.size());
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`
        let block = unsafe { System.alloc_zeroed(layout) };
        advise(block, layout.size());
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`
        unsafe { System.dealloc(block, layout) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `alloc`
        let moved = unsafe { System.realloc(block, layout, new_size) };
        advise(moved, new_size);
        moved
    }
}

#[global_allocator]
static ALLOCATOR: HugePageAllocator = HugePageAllocator;

#[cfg(test)]
mod tests {
    #[test]
    fn large_blocks_are_backed_by_huge_pages_where_the_kernel_offers_them() {
        let offered = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|mode| mode.contains("[madvise]") || mode.contains("[always]"));
        let mut block = vec![0u8; 64 << 20];
        block.iter_mut().step_by(4096).for_each(|b| *b = 1);
        let huge_kb: u64 = std::fs::read_to_string("/proc/self/smaps_rollup")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("AnonHugePages:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        if offered {
            // the block spans 31 or 32 whole 2 MB pages; some may be left small when memory is fragmented
            assert!(huge_kb >= 16 << 10, "{huge_kb} kB in huge pages");
        }
        assert_eq!(block.iter().step_by(4096).filter(|&&b| b == 1).count(), 16384);
    }
}
