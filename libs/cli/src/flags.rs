//! The flags several tools share, each declared once so that its name, short form and help read the same in
//! every tool. A tool flattens (`#[command(flatten)]`) only the flags that do something in it.
//!
//! `-j/--threads` sizes one of two pools, told apart by type and help: [`Workers`] is rayon's pool in the tools
//! that process cases in parallel; [`TorchThreads`] is libtorch's in the tools that run networks (nn-train,
//! nn-infer), set up by `nntools_network::set_cpu_threads`, since this crate does not depend on torch.

use nntools_io::{Error, Result};

/// `-j/--threads` of the tools that process cases in parallel.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Workers {
    /// Worker threads, each processing one case at a time (default: one per core).
    #[arg(short = 'j', long, global = true)]
    pub threads: Option<usize>,
}

impl Workers {
    /// Sizes rayon's global pool: `threads` workers, or one per core when absent or zero.
    pub fn init_pool(self) -> Result<()> {
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads.unwrap_or(0))
            .build_global()
            .map_err(|e| Error::runtime("thread pool", e))
    }
}

/// `-j/--threads` of the tools that run networks.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TorchThreads {
    /// CPU threads for libtorch's operations (default: libtorch's choice).
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
}

/// `-q/--quiet`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Quiet {
    /// Nothing on stderr but errors: no progress bars, summaries, per-epoch lines or warnings.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// `--device`, kept as written: the tools that run networks parse it with `nntools_network::parse_device`.
#[derive(clap::Args, Debug, Clone)]
pub struct Device {
    /// auto (CUDA when present), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// `--precision`, kept as written: the tools that run networks parse it as `nntools_network::Precision`.
#[derive(clap::Args, Debug, Clone)]
pub struct Precision {
    /// The network's arithmetic: auto (nnU-Net's: fp16 autocast on CUDA, fp32 on the CPU), fp32, bf16 or
    /// fp16 (autocast; normalisation, softmax, loss and the sliding-window sums stay in fp32 or fp16).
    /// bf16 on the CPU needs native bfloat16: x86 CPUs with AVX512-BF16 (Intel Cooper Lake, Sapphire
    /// Rapids and later Xeons, AMD Zen 4 and later) or Arm CPUs with BF16; elsewhere it is refused.
    #[arg(long, default_value = "auto", value_name = "auto|fp32|bf16|fp16")]
    pub precision: String,
}

/// `--max-memory-gb`: the memory budget of `nntools_io::memory`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct MaxMemory {
    /// Refuse, before allocating, work whose arrays alone would need more memory than this (a volume
    /// resampled to a tiny spacing, a training batch, a sliding-window grid) [default: this machine's memory].
    #[arg(long = "max-memory-gb", value_name = "GB")]
    pub max_memory_gb: Option<f64>,
}

impl MaxMemory {
    /// Sets the process's budget; call before any work.
    pub fn init(self) -> Result<()> {
        nntools_io::memory::set_budget_gb(self.max_memory_gb)
    }
}

/// `--force`: what exists already at the output is not kept.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Force {
    /// Overwrite existing outputs: an existing output folder is replaced, cases already current are redone.
    #[arg(long)]
    pub force: bool,
}

/// `--part K/N`: this process's share of the cases, as nnU-Net's `-part_id K -num_parts N`.
#[derive(clap::Args, Debug, Clone)]
pub struct Part {
    /// Process only part K of N (K from 0 to N-1): over the sorted case identifiers, case i belongs to part
    /// i mod N, as nnU-Net's -part_id K -num_parts N. Run N processes, one per K, on the same output.
    #[arg(long, value_name = "K/N", allow_hyphen_values = true)]
    pub part: Option<String>,
}

impl Part {
    /// The part asked for; every case when absent.
    pub fn parse(&self) -> Result<nntools_dataset::Part> {
        let Some(text) = &self.part else { return Ok(nntools_dataset::Part::WHOLE) };
        parse_part(text).map_err(|problem| Error::bad_input("--part", format!("{text:?}: {problem}")))
    }
}

/// `K/N` with K and N non-negative integers, K < N.
fn parse_part(text: &str) -> std::result::Result<nntools_dataset::Part, String> {
    let expected = "expected K/N, e.g. 0/4 (part K of N, K from 0 to N-1)";
    let (index, count) = text.split_once('/').ok_or(expected)?;
    let number = |s: &str| s.parse::<usize>().map_err(|_| expected.to_owned());
    nntools_dataset::Part::new(number(index)?, number(count)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_reads_k_of_n() {
        let part = |text: &str| parse_part(text).map(|p| p.to_string());
        assert_eq!(part("0/1").as_deref(), Ok("0/1"));
        assert_eq!(part("1/2").as_deref(), Ok("1/2"));
        assert_eq!(part("4/5").as_deref(), Ok("4/5"));
        for bad in ["3/2", "2/2", "-1/2", "a/b", "0/0", "1", "1/2/3", "", "/2", "1/", " 1/2"] {
            assert!(parse_part(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_bad_part_is_bad_input_naming_the_flag() {
        let error = Part { part: Some("3/2".into()) }.parse().unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.message.starts_with("--part: ") && !error.message.contains('\n'), "{}", error.message);
        assert_eq!(Part { part: None }.parse().unwrap(), nntools_dataset::Part::WHOLE);
    }
}
