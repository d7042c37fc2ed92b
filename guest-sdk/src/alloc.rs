//! A size-class allocator for guests.
//!
//! UDFs allocate per record (a `String` per `map`, a `Vec` per `flat_map`), and the default
//! wasm32 allocator (dlmalloc) spends more on a small allocation and free than the boundary
//! spends on the record. This allocator keeps one free list per power-of-two size class from
//! 16 B to 32 KiB: an allocation pops a block, a free pushes it back, both a few instructions.
//! Larger or over-aligned blocks go to the backing allocator. Freed blocks stay in their class
//! for reuse and are not returned to the backing allocator; the instance's memory limit bounds
//! the total, and the host recycles instances.
//!
//! Sound only where one thread runs: the global instance is installed on `wasm32` without the
//! atomics feature (every Sluice guest), behind the default `allocator` feature.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The smallest class: 16 B (room for the free-list link, and the wasm32 max alignment).
const MIN_SHIFT: u32 = 4;
/// The largest class: 32 KiB.
const MAX_SHIFT: u32 = 15;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Every pooled block is aligned to this; layouts that need more go to the backing allocator.
const ALIGN: usize = 16;

/// Free lists per size class in front of a backing allocator.
pub struct SizeClasses<A> {
    backing: A,
    free: UnsafeCell<[*mut u8; CLASSES]>,
}

impl<A> SizeClasses<A> {
    /// An allocator with empty free lists in front of `backing`.
    pub const fn new(backing: A) -> Self {
        Self {
            backing,
            free: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

/// The class serving `layout`, if it is pooled.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN || layout.size() > 1 << MAX_SHIFT {
        return None;
    }
    let size = layout.size().max(1 << MIN_SHIFT);
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some((shift - MIN_SHIFT) as usize)
}

fn class_layout(class: usize) -> Layout {
    // Sizes are powers of two ≥ ALIGN: always a valid layout.
    Layout::from_size_align(1 << (class as u32 + MIN_SHIFT), ALIGN).unwrap_or(Layout::new::<u8>())
}

unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout) else {
            return unsafe { self.backing.alloc(layout) };
        };
        // SAFETY: one thread (see the module docs), and no reference to the lists outlives
        // this call.
        let free = unsafe { &mut *self.free.get() };
        let head = free[class];
        if head.is_null() {
            return unsafe { self.backing.alloc(class_layout(class)) };
        }
        // SAFETY: `head` is a free block of this class; its first word links to the next one.
        free[class] = unsafe { head.cast::<*mut u8>().read() };
        head
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(layout) else {
            return unsafe { self.backing.dealloc(ptr, layout) };
        };
        let free = unsafe { &mut *self.free.get() };
        // SAFETY: `ptr` is a block of this class (allocated with `layout`), 16-aligned and at
        // least 16 bytes: room for the link.
        unsafe { ptr.cast::<*mut u8>().write(free[class]) };
        free[class] = ptr;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to `layout.align()`, fits `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            (Some(a), Some(b)) if a == b => ptr,
            (None, None) => unsafe { self.backing.realloc(ptr, layout, new_size) },
            _ => {
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

// SAFETY: installed only on single-threaded wasm32 (see `lib.rs`), where no two threads exist.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SizeClasses<A> {}

#[cfg(test)]
mod tests {
    use std::alloc::System;

    use super::*;

    #[test]
    fn classes_round_up_to_powers_of_two() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class_of(layout(1, 1)), Some(0));
        assert_eq!(class_of(layout(16, 8)), Some(0));
        assert_eq!(class_of(layout(17, 1)), Some(1));
        assert_eq!(class_of(layout(100, 1)), Some(3)); // 128
        assert_eq!(class_of(layout(32 * 1024, 1)), Some(CLASSES - 1));
        assert_eq!(class_of(layout(32 * 1024 + 1, 1)), None);
        assert_eq!(class_of(layout(8, 64)), None);
    }

    #[test]
    fn blocks_are_reused_and_keep_their_contents_through_realloc() {
        let heap = SizeClasses::new(System);
        let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
        let mut seed = 7u64;
        for step in 0..20_000u32 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = (seed >> 33) as usize;
            if !r.is_multiple_of(3) || live.is_empty() {
                let size = 1 + r % 40_000;
                let layout =
                    Layout::from_size_align(size, if r.is_multiple_of(7) { 32 } else { 8 })
                        .unwrap();
                let p = unsafe { heap.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % layout.align(), 0);
                let fill = step as u8;
                unsafe { ptr::write_bytes(p, fill, size) };
                live.push((p, layout, fill));
            } else {
                let (p, layout, fill) = live.swap_remove(r % live.len());
                let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
                assert!(
                    bytes.iter().all(|&b| b == fill),
                    "a live block was overwritten"
                );
                if r.is_multiple_of(2) {
                    let new_size = 1 + (r >> 8) % 40_000;
                    let q = unsafe { heap.realloc(p, layout, new_size) };
                    let kept = layout.size().min(new_size);
                    let bytes = unsafe { std::slice::from_raw_parts(q, kept) };
                    assert!(bytes.iter().all(|&b| b == fill), "realloc lost contents");
                    let new_layout = Layout::from_size_align(new_size, layout.align()).unwrap();
                    unsafe { ptr::write_bytes(q, fill, new_size) };
                    live.push((q, new_layout, fill));
                } else {
                    unsafe { heap.dealloc(p, layout) };
                }
            }
        }
        for (p, layout, fill) in live {
            let bytes = unsafe { std::slice::from_raw_parts(p, layout.size()) };
            assert!(bytes.iter().all(|&b| b == fill));
            unsafe { heap.dealloc(p, layout) };
        }
    }
}
