//! Flushing denormal floats to zero on the calling thread.
//!
//! Adam's moment estimates decay geometrically (by 0.9 and 0.999 a step), so for weights that
//! rarely get a gradient (pixels near the image border) they sink below f32's normal range
//! within a few hundred steps. x86 CPUs handle such denormal operands in microcode, one to two
//! orders of magnitude slower, and profiling showed Adam's scalar multiplies dominating the run.
//! Values that small change no weight, so the trainer's threads treat them as zero.

/// Sets flush-to-zero and denormals-are-zero for the calling thread's float unit.
pub fn flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    {
        // MXCSR bit 15 is FTZ (results) and bit 6 is DAZ (operands).
        const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register only; the
        // new value differs from the old one in the two flush bits, which every x86-64 CPU has.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= FTZ_DAZ;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // FPCR bit 24 is FZ (flush denormal inputs and outputs to zero).
        let mut fpcr: u64;
        // SAFETY: reads and writes this thread's floating-point control register only.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn denormal_results_become_zero_on_this_thread_only() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!(tiny * half > 0.0, "denormals exist by default");
        std::thread::spawn(move || {
            super::flush_to_zero();
            assert_eq!(tiny * half, 0.0);
        })
        .join()
        .unwrap();
        assert!(tiny * half > 0.0, "other threads are untouched");
    }
}
