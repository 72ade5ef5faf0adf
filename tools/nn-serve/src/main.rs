use clap::Parser;
use nntools_cli::flags::{Device, MaxMemory, Precision, Quiet, TorchThreads};
use nntools_inference::{Options, Resident};
use nntools_io::{Error, Result};
use nntools_layout::run::{CheckpointName, Fold};
use nntools_serve::{CaseOptions, Config, Model, Server};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const TOOL: &str = "nn-serve";

/// Serve a trained model over HTTP: the model stays loaded, and each request's image is predicted as
/// nn-infer predicts it, the answer byte-identical to the file nn-infer writes.
///
/// POST /v1/predict takes one image in a single-file format nn-tools reads (NIfTI, .nii.gz, .mha, .nrrd,
/// PNG, BMP, TIFF; told by its first bytes, or by format=nii|nii.gz|mha|nrrd|png|bmp|tif), or
/// multipart/form-data with one part per channel named 0000, 0001, ...; .mhd and .nhdr (several files)
/// are refused. It answers the label map in the request's format and geometry; with probabilities=true a
/// zip of the files nn-infer --save-probabilities writes (label map, .npz, .json). Options: tta=false (no
/// mirroring), postprocess=false (without the --plan's postprocessing), spacing=Z,Y,X (3-D TIFF).
/// GET /healthz answers 503 until the model is loaded, then 200; GET /v1/model describes the model.
///
/// One worker predicts one request at a time; up to --queue more wait (429 with Retry-After beyond).
/// Larger bodies or images than the limits get 413, requests slower than --timeout-s 504 (their case
/// stops at its next tile). Errors are one JSON line, {"error": "..."}; an access line per request goes
/// to stderr. With --token-file every request but /healthz needs `Authorization: Bearer TOKEN` (401
/// otherwise); an address other than loopback is refused without one. TLS is left to a reverse proxy.
/// SIGTERM stops accepting, answers what was accepted, and exits 0.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-serve -m runs/3d_fullres --listen 127.0.0.1:8080 --device cpu
  curl --fail-with-body -o seg.nii.gz --data-binary @scan_0000.nii.gz 'http://127.0.0.1:8080/v1/predict?tta=false'
  curl -o seg.nii.gz -F 0000=@t2_0000.nii.gz -F 0001=@adc_0001.nii.gz http://127.0.0.1:8080/v1/predict
  curl -o case.zip --data-binary @scan_0000.nii.gz 'http://127.0.0.1:8080/v1/predict?probabilities=true'
  nn-serve --plan inference_plan.json --listen 0.0.0.0:8080 --token-file token.txt
  curl -H \"Authorization: Bearer $(cat token.txt)\" --data-binary @scan.mha http://host:8080/v1/predict -o seg.mha")]
struct Args {
    /// Model folder: nn-train's run folder or nnU-Net's trainer folder; repeat to ensemble.
    #[arg(short, long = "model", required_unless_present = "plan")]
    models: Vec<PathBuf>,
    /// The models and folds `nn-ensemble select` chose (its inference_plan.json), instead of -m and
    /// --folds; answers are postprocessed as `nn-ensemble postprocess --plan` does (unless postprocess=false).
    #[arg(long, conflicts_with_all = ["models", "folds"])]
    plan: Option<PathBuf>,
    /// Folds to use, comma-separated (default: every fold_N with the checkpoint).
    #[arg(long, value_delimiter = ',')]
    folds: Option<Vec<String>>,
    /// Checkpoint to use: final, best, latest, or a file name in the fold folders.
    #[arg(long, default_value = "final")]
    checkpoint: String,
    /// Address and port to listen on (port 0: any free port, printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// File holding the bearer token every request but /healthz must carry.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Requests that may wait while one is predicted.
    #[arg(long, default_value_t = 16)]
    queue: usize,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 512)]
    max_body_mb: usize,
    /// Largest image a request may carry, in values as its header claims: voxels times channels (the
    /// volumes of a 4-D file, the samples of an RGB pixel), per file of a multipart request.
    #[arg(long, default_value_t = 1 << 30)]
    max_voxels: u64,
    /// Time limit of a request from arrival to answer, in seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout_s: f64,
    #[command(flatten)]
    device: Device,
    #[command(flatten)]
    precision: Precision,
    #[command(flatten)]
    threads: TorchThreads,
    #[command(flatten)]
    max_memory: MaxMemory,
    #[command(flatten)]
    quiet: Quiet,
}

/// The resident models, as nn-serve's worker predicts with them.
struct Loaded(Resident);

impl Model for Loaded {
    fn info(&self) -> serde_json::Value {
        serde_json::to_value(self.0.info()).unwrap_or_default()
    }
    fn channels(&self) -> usize {
        self.0.channels()
    }
    fn predict_case(
        &self,
        id: &str,
        images: &[PathBuf],
        out_dir: &Path,
        case: CaseOptions,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<PathBuf> {
        let case = nntools_inference::CaseOptions { tta: case.tta, save_probabilities: case.save_probabilities };
        self.0.predict_case(id, images, out_dir, case, keep_going)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        let (device, precision) =
            nntools_network::device_and_precision(&args.device.device, &args.precision.precision)?;
        let checkpoint: CheckpointName = args.checkpoint.parse().map_err(|p| Error::bad_input("--checkpoint", p))?;
        if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
            return Err(Error::bad_input("--timeout-s", "must be a positive number of seconds"));
        }
        let (models, folds, postprocessing) = match &args.plan {
            Some(path) => {
                let plan: nntools_ensembling::InferencePlan = nntools_io::read_json(path)?;
                let folds = plan.folds.iter().copied().map(Fold::Index).collect();
                (plan.models.into_iter().map(|m| m.run).collect(), Some(folds), plan.postprocessing)
            }
            None => {
                let parse = |fold: &String| fold.parse().map_err(|p| Error::bad_input("--folds", p));
                let folds = args.folds.as_ref().map(|folds| folds.iter().map(parse).collect()).transpose()?;
                (args.models.clone(), folds, Vec::new())
            }
        };
        let token = args.token_file.as_deref().map(nntools_serve::read_token).transpose()?;
        let quiet = args.quiet.quiet;
        let server = Server::bind(Config {
            listen: args.listen,
            token,
            queue: args.queue,
            max_body_bytes: args.max_body_mb.saturating_mul(1 << 20),
            max_voxels: args.max_voxels,
            timeout: Duration::from_secs_f64(args.timeout_s),
            postprocessing,
            quiet,
        })?;
        // tests and scripts started with port 0 read the port from this line, so it is printed even with -q
        eprintln!("{TOOL}: listening on http://{}", server.local_addr());
        nntools_network::set_cpu_threads(args.threads.threads);
        args.max_memory.init()?;
        let options = Options { folds, checkpoint, tta: true, step: 0.5, device, precision };
        server.run(move || Resident::load(&models, &options).map(Loaded))
    })
}
