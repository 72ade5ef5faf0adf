//! fp16 autocast on CUDA. tch's `autocast` goes through libtorch's deprecated
//! `at::autocast::is_enabled` and `set_enabled`, and libtorch 2.11 prints a deprecation warning at
//! every call of those: a line or three per training iteration. This calls their replacements
//! (`is_autocast_enabled` and `set_autocast_enabled` for CUDA) through their C++ symbols, the only way
//! to reach them that tch leaves, plus the same nesting bookkeeping as tch. The symbols belong to the
//! libtorch that tch 0.24 pins; another libtorch that lacked them would fail to link, not misbehave.

/// `c10::DeviceType::CUDA` (`enum class DeviceType : int8_t`).
const CUDA: i8 = 1;

unsafe extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device_type: i8, enabled: bool);
}

/// Restores the previous autocast state when the region ends, also by a panic.
struct Region {
    previous: bool,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: plain libtorch calls on thread-local state; none of them throws
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            set_autocast_enabled(CUDA, self.previous);
        }
    }
}

/// Runs `f` with CUDA autocast (fp16) on when `enabled`; when not, runs it as it is.
pub fn autocast<T>(enabled: bool, f: impl FnOnce() -> T) -> T {
    if !enabled {
        return f();
    }
    // SAFETY: as in `Region::drop`
    let _region = unsafe {
        let region = Region { previous: is_autocast_enabled(CUDA) };
        set_autocast_enabled(CUDA, true);
        torch_sys::at_autocast_increment_nesting();
        region
    };
    f()
}

/// Whether CUDA autocast is on in this thread.
pub fn autocast_enabled() -> bool {
    // SAFETY: as in `Region::drop`
    unsafe { is_autocast_enabled(CUDA) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_is_on_inside_the_region_only_and_nests() {
        assert!(!autocast_enabled());
        let inside = autocast(true, || (autocast_enabled(), autocast(true, autocast_enabled), autocast_enabled()));
        assert_eq!(inside, (true, true, true));
        // the flag is the one tch's own (deprecated) query reads, i.e. the one libtorch's CUDA autocast uses
        // SAFETY: a libtorch query of thread-local state
        assert_eq!(autocast(true, || unsafe { torch_sys::at_autocast_is_enabled() }), 1);
        assert!(!autocast_enabled());
        assert!(!autocast(false, autocast_enabled));
        // a panic inside still ends the region
        let _ = std::panic::catch_unwind(|| autocast(true, || panic!("inside")));
        assert!(!autocast_enabled());
    }
}
