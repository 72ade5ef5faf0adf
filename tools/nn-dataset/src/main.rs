use clap::{Parser, Subcommand};
use nntools_cli::flags::{Force, Quiet, Workers};
use nntools_ingest::{CreateRequest, Options, convert_v1, create, parse_dataset_ending, parse_numbered};
use std::path::PathBuf;
use std::process::ExitCode;

const TOOL: &str = "nn-dataset";

/// Get data into nnU-Net's raw layout (dataset.json, imagesTr/CASE_XXXX.nii.gz, labelsTr/CASE.nii.gz,
/// imagesTs; or any other image format nnU-Net reads), checked as `nn-fingerprint --verify-only` checks it. The dataset folder appears only when
/// everything is in order; on any problem nothing is written and the exit code is 2.
#[derive(Parser)]
#[command(name = TOOL, version, after_help = "\
Examples:
  nn-dataset create --images scans --labels masks --channel 0=MRI -o raw/Dataset123_Hippo
  nn-dataset create --images mha --labels slicer --channel 0=CT --to .nii.gz -o raw/Dataset127_Liver
  nn-dataset create --images t2_adc --labels zones --test-images new --channel 0=T2 \\
      --channel 1=ADC --label 0=background --label 1=PZ --label 2=TZ -o raw/Dataset124_Prostate
  nn-dataset convert-v1 Task05_Prostate -o raw/Dataset005_Prostate")]
struct Args {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    threads: Workers,
    #[command(flatten)]
    quiet: Quiet,
}

#[derive(Subcommand)]
enum Command {
    /// Make a raw dataset from a folder of images and a folder of label maps, paired by case name.
    ///
    /// A label map CASE.nii.gz makes a training case (any format nnU-Net reads: .nii.gz .nii .mha .nrrd
    /// .gipl .tif .tiff .png .bmp; 3D Slicer's CASE.seg.nrrd too). Its images are CASE.nii.gz (one file:
    /// 3-D for one channel, 4-D with one volume per channel, or RGB, for several) or CASE_0000.nii.gz,
    /// CASE_0001.nii.gz, ... (one file per channel; an RGB CASE_0000.png holds three). Test images take
    /// the same forms; there, names ending in _XXXX are channel files when every name does (XXXX below
    /// the channel count). TIFF stacks take their spacing from CASE.json beside them. The files keep
    /// their format, which they must share, unless --to converts them. Without --label, the labels are
    /// the segment names of Slicer segmentations, else the values found in the label maps: 0 is
    /// `background`, N is `label_N`.
    #[command(after_help = "\
Examples:
  nn-dataset create --images scans --labels masks --channel 0=MRI --label 0=background \\
      --label 1=Anterior --label 2=Posterior --name Hippocampus -o raw/Dataset104_Hippo --force
  nn-dataset create --images scans --labels masks --channel 0=CT -o raw/Dataset125_Liver --link
  nn-dataset create --images photos --labels masks --channel 0=R --channel 1=G --channel 2=B \\
      -o raw/Dataset126_Roads
  nn-dataset create --images mha --labels slicer --channel 0=CT --to .nii.gz -o raw/Dataset127_Liver")]
    Create {
        /// Folder of training images.
        #[arg(long)]
        images: PathBuf,
        /// Folder of label maps, CASE.nii.gz (or CASE.seg.nrrd).
        #[arg(long)]
        labels: PathBuf,
        /// Folder of unlabelled images, written to imagesTs.
        #[arg(long)]
        test_images: Option<PathBuf>,
        /// Channel INDEX=NAME, once per channel; the name selects the normalisation (CT, or z-score).
        #[arg(long = "channel", value_name = "INDEX=NAME", value_parser = parse_numbered, required = true)]
        channels: Vec<(i64, String)>,
        /// Label VALUE=NAME, once per label, 0=background included (default: derived from the data).
        #[arg(long = "label", value_name = "VALUE=NAME", value_parser = parse_numbered)]
        labels_declared: Vec<(i64, String)>,
        /// dataset.json's name (default: the output folder's name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Convert an nnU-Net v1 / Medical Segmentation Decathlon task folder to the v2 layout.
    ///
    /// Reads TASK_DIR/dataset.json (modality, labels value -> name, training and test lists), splits
    /// 4-D images into one 3-D file per channel with their header and geometry, copies the label maps
    /// (or converts every file, with --to), and writes a v2 dataset.json.
    #[command(
        name = "convert-v1",
        after_help = "\
Examples:
  nn-dataset convert-v1 Task04_Hippocampus -o raw/Dataset004_Hippocampus
  nn-dataset convert-v1 nnUNet_raw_data/Task005_Prostate -o raw/Dataset005_Prostate --link"
    )]
    ConvertV1 {
        /// v1 task folder: dataset.json, imagesTr, labelsTr, imagesTs.
        task_dir: PathBuf,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(clap::Args)]
struct Output {
    /// Output dataset folder, e.g. raw/Dataset123_Name.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    folder: PathBuf,
    /// Link the source files (hard links, else symbolic links) instead of copying them; split or
    /// compressed files are written anyway.
    #[arg(long)]
    link: bool,
    /// Write every image and label map in this format (.nii.gz .nii .mha .nrrd .gipl .tif .tiff .png
    /// .bmp), with the source geometry; several channels in one file become one file each.
    #[arg(long, value_name = "ENDING", value_parser = parse_dataset_ending)]
    to: Option<&'static str>,
    #[command(flatten)]
    force: Force,
}

impl Output {
    fn options(&self) -> Options {
        Options { link: self.link, force: self.force.force, to: self.to }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    nntools_cli::run(TOOL, || {
        args.threads.init_pool()?;
        let warnings = match args.command {
            Command::Create { images, labels, test_images, channels, labels_declared, name, output } => {
                let request =
                    CreateRequest { images, labels, test_images, channels, label_names: labels_declared, name };
                create(&request, &output.folder, output.options())?
            }
            Command::ConvertV1 { task_dir, output } => convert_v1(&task_dir, &output.folder, output.options())?,
        };
        for warning in &warnings {
            nntools_cli::warn(TOOL, args.quiet.quiet, warning);
        }
        Ok(())
    })
}
