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

/// `--force`: what exists already at the output is not kept.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Force {
    /// Overwrite existing outputs: an existing output folder is replaced, cases already current are redone.
    #[arg(long)]
    pub force: bool,
}
