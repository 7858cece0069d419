//! The process's heap: giving freed memory back to the kernel.
//!
//! The C allocator keeps freed memory for later allocations and returns it to the kernel
//! only from the top of its heaps: memory freed below allocations that live on stays
//! resident. [`crate::config::load_apart`] keeps a parse's transient memory apart from
//! what lives on, then gives it back with [`release_free_memory`].

/// Returns the allocator's free pages, wherever they are in its heaps, to the kernel.
#[cfg(target_env = "gnu")]
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks; it
    // takes no pointer and invalidates no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries give no such call; their memory stays as it is.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}
