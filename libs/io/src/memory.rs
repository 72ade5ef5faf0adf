//! The memory budget: work whose arrays alone would not fit (a volume resampled to a tiny spacing, a
//! training batch of a hand-edited batch size, a sliding-window grid at a step of almost 0) is refused
//! before anything is allocated, with one line naming the file, instead of an allocation abort or the
//! kernel's out-of-memory kill. The budget is the machine's memory unless a tool's `--max-memory-gb`
//! sets it; the estimates it is compared with are lower bounds, so no work that fits is refused.

use crate::{Error, Result};
use std::path::Path;
use std::sync::OnceLock;

static BUDGET: OnceLock<f64> = OnceLock::new();

const GB: f64 = 1e9;

/// Sets this process's budget in GB (`--max-memory-gb`); absent, the machine's memory. Call once, before
/// any work.
pub fn set_budget_gb(gb: Option<f64>) -> Result<()> {
    if let Some(gb) = gb {
        if !(gb.is_finite() && gb > 0.0) {
            return Err(Error::bad_input("--max-memory-gb", "must be a positive number of GB"));
        }
        let _ = BUDGET.set(gb * GB);
    }
    Ok(())
}

/// The budget in bytes: `--max-memory-gb`, or the machine's memory (`MemTotal`), or no limit where that
/// cannot be read.
pub fn budget_bytes() -> f64 {
    *BUDGET.get_or_init(|| machine_memory_bytes().unwrap_or(f64::INFINITY))
}

fn machine_memory_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Refuses, naming `file`, work that needs `bytes` (computed in floating point, so that absurd sizes do
/// not overflow) when they exceed the budget; `work` says what would have been allocated.
pub fn check(file: impl AsRef<Path>, bytes: f64, work: impl FnOnce() -> String) -> Result<()> {
    let budget = budget_bytes();
    if bytes <= budget {
        return Ok(());
    }
    Err(Error::bad_input(
        file.as_ref(),
        format!(
            "{} would need {} GB, more than the {:.1} GB allowed (--max-memory-gb, by default this machine's memory)",
            work(),
            significant(bytes / GB),
            budget / GB
        ),
    ))
}

/// A size in GB to three significant digits, in scientific notation when large.
fn significant(gb: f64) -> String {
    if gb < 1e4 { format!("{gb:.3}") } else { format!("{gb:.3e}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_at_a_glance() {
        assert_eq!(significant(2.5), "2.500");
        assert_eq!(significant(247520.0), "2.475e5");
    }

    #[test]
    fn the_machine_has_some_memory() {
        let bytes = machine_memory_bytes().expect("Linux has /proc/meminfo");
        assert!(bytes > 1e8 && bytes < 1e15, "{bytes}");
        assert!(check("x", 1.0, || unreachable!()).is_ok());
        let refused = check("case_0000.nii.gz", 1e20, || "a volume".to_owned()).unwrap_err().to_string();
        assert!(
            refused.contains("case_0000.nii.gz") && refused.contains("a volume would need 1.000e11 GB"),
            "{refused}"
        );
    }
}
