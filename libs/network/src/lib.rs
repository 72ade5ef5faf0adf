//! nnU-Net's networks in libtorch: PlainConvUNet and ResidualEncoderUNet (dynamic_network_architectures)
//! built from a configuration's `architecture` block, with nnU-Net v2's state_dict names so weights
//! move both ways as safetensors.
//!
//! Blocks are conv → InstanceNorm (eps 1e-5, affine) → LeakyReLU(0.01); downsampling is the first,
//! strided conv of a stage; upsampling is a transposed conv with kernel = stride; the decoder
//! concatenates `[upsampled, skip]`. 2D and 3D share the code: kernels, strides and padding are vectors.

mod autocast;

pub use autocast::{MixedPrecision, Precision, autocast, autocast_enabled, widen_bf16};

use nntools_planning::ArchKwargs;
use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{Init, Path, VarStore};
use tch::{Device, Kind, TchError, Tensor};

/// LeakyReLU's negative slope (torch's default, which nnU-Net keeps).
const NEGATIVE_SLOPE: f64 = 0.01;
const NORM_EPS: f64 = 1e-5;

/// nnU-Net's `InitWeights_He(1e-2)`: Kaiming normal, fan-in, LeakyReLU gain for slope 0.01.
fn he_init() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanIn,
        non_linearity: NonLinearity::ExplicitGain((2.0 / (1.0 + NEGATIVE_SLOPE * NEGATIVE_SLOPE)).sqrt()),
    }
}

fn as_i64(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}

/// A convolution of any dimension (2D or 3D), or a transposed one.
struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: Vec<i64>,
    padding: Vec<i64>,
    transposed: bool,
}

impl Conv {
    fn new(path: &Path, inputs: usize, outputs: usize, kernel: &[usize], stride: &[usize], bias: bool) -> Self {
        let mut shape = vec![outputs as i64, inputs as i64];
        shape.extend(as_i64(kernel));
        Self {
            weight: path.var("weight", &shape, he_init()),
            bias: bias.then(|| path.var("bias", &[outputs as i64], Init::Const(0.0))),
            stride: as_i64(stride),
            padding: kernel.iter().map(|&k| (k as i64 - 1) / 2).collect(),
            transposed: false,
        }
    }

    /// Transposed conv with kernel = stride, as nnU-Net's decoder upsamples.
    fn transposed(path: &Path, inputs: usize, outputs: usize, stride: &[usize]) -> Self {
        let mut shape = vec![inputs as i64, outputs as i64];
        shape.extend(as_i64(stride));
        Self {
            weight: path.var("weight", &shape, he_init()),
            bias: Some(path.var("bias", &[outputs as i64], Init::Const(0.0))),
            stride: as_i64(stride),
            padding: vec![0; stride.len()],
            transposed: true,
        }
    }

    /// Through `conv3d`, `conv_transpose2d` etc., as torch.nn's modules call them, not the generic
    /// `convolution`: libtorch's CPU autocast lists only the former (aten/src/ATen/autocast_mode.cpp).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (zeros, ones) = (vec![0i64; self.stride.len()], vec![1i64; self.stride.len()]);
        let (w, b, stride) = (&self.weight, self.bias.as_ref(), self.stride.as_slice());
        match (self.stride.len(), self.transposed) {
            (3, false) => x.conv3d(w, b, stride, self.padding.as_slice(), ones.as_slice(), 1),
            (2, false) => x.conv2d(w, b, stride, self.padding.as_slice(), ones.as_slice(), 1),
            (3, true) => {
                x.conv_transpose3d(w, b, stride, self.padding.as_slice(), zeros.as_slice(), 1, ones.as_slice())
            }
            (2, true) => {
                x.conv_transpose2d(w, b, stride, self.padding.as_slice(), zeros.as_slice(), 1, ones.as_slice())
            }
            (_, transposed) => x.convolution(w, b, stride, &self.padding, &ones, transposed, &zeros, 1),
        }
    }
}

/// InstanceNorm with affine parameters and no running statistics.
struct InstanceNorm {
    weight: Tensor,
    bias: Tensor,
}

impl InstanceNorm {
    fn new(path: &Path, channels: usize) -> Self {
        Self {
            weight: path.var("weight", &[channels as i64], Init::Const(1.0)),
            bias: path.var("bias", &[channels as i64], Init::Const(0.0)),
        }
    }

    /// Under autocast the input comes in 16 bits and goes out so; libtorch's CPU and CUDA batch norms,
    /// which compute it, accumulate a channel's statistics in fp32 (`opmath_type`). Widening the input
    /// to fp32 first measured 2.2x slower per norm on the CPU.
    fn forward(&self, x: &Tensor) -> Tensor {
        Tensor::instance_norm(
            x,
            Some(&self.weight),
            Some(&self.bias),
            None::<&Tensor>,
            None::<&Tensor>,
            true,
            0.1,
            NORM_EPS,
            true,
        )
    }
}

/// `ConvDropoutNormReLU`: conv, norm and (optionally) LeakyReLU, params under `conv.*` and `norm.*`.
struct ConvNormAct {
    conv: Conv,
    norm: InstanceNorm,
    activate: bool,
}

impl ConvNormAct {
    fn new(
        path: &Path,
        inputs: usize,
        outputs: usize,
        kernel: &[usize],
        stride: &[usize],
        bias: bool,
        activate: bool,
    ) -> Self {
        Self {
            conv: Conv::new(&(path / "conv"), inputs, outputs, kernel, stride, bias),
            norm: InstanceNorm::new(&(path / "norm"), outputs),
            activate,
        }
    }

    /// The activation works in place, as nnU-Net's (`nonlin_kwargs {'inplace': True}` in its plans): the
    /// norm's backward does not need its output, and an activation of its own would keep a third
    /// full-size tensor per block for the backward pass (2 GB at a 128³ patch, batch 2).
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut y = self.norm.forward(&self.conv.forward(x));
        if self.activate { y.leaky_relu_() } else { y }
    }
}

/// `StackedConvBlocks`: `n` blocks under `convs.{i}`, the first one strided.
fn stacked_convs(
    path: &Path,
    n: usize,
    inputs: usize,
    outputs: usize,
    kernel: &[usize],
    stride: &[usize],
) -> Vec<ConvNormAct> {
    let ones = vec![1; stride.len()];
    (0..n)
        .map(|i| {
            let (inputs, stride) = if i == 0 { (inputs, stride) } else { (outputs, ones.as_slice()) };
            ConvNormAct::new(&(path / "convs" / i), inputs, outputs, kernel, stride, true, true)
        })
        .collect()
}

/// ResNet-D basic block: two convs (the second without nonlinearity) plus a skip that average-pools
/// when the block is strided and projects (1x1 conv without bias, norm) when it changes channels.
struct BasicBlock {
    conv1: ConvNormAct,
    conv2: ConvNormAct,
    pool: Option<Vec<i64>>,
    projection: Option<ConvNormAct>,
}

impl BasicBlock {
    fn new(path: &Path, inputs: usize, outputs: usize, kernel: &[usize], stride: &[usize]) -> Self {
        let ones = vec![1; stride.len()];
        let strided = stride.iter().any(|&s| s != 1);
        let projection = (inputs != outputs).then(|| {
            let index = usize::from(strided); // skip.0 is the pooling when there is one
            ConvNormAct::new(&(path / "skip" / index), inputs, outputs, &ones, &ones, false, false)
        });
        Self {
            conv1: ConvNormAct::new(&(path / "conv1"), inputs, outputs, kernel, stride, true, true),
            conv2: ConvNormAct::new(&(path / "conv2"), outputs, outputs, kernel, &ones, true, false),
            pool: strided.then(|| as_i64(stride)),
            projection,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut residual = match &self.pool {
            Some(stride) => x.avg_pool(stride, stride),
            None => x.shallow_clone(),
        };
        if let Some(projection) = &self.projection {
            residual = projection.forward(&residual);
        }
        // in place, as in `ConvNormAct::forward`
        let mut sum = self.conv2.forward(&self.conv1.forward(x)) + residual;
        sum.leaky_relu_()
    }
}

trait Pool {
    fn avg_pool(&self, kernel: &[i64], stride: &[i64]) -> Tensor;
}

impl Pool for Tensor {
    fn avg_pool(&self, kernel: &[i64], stride: &[i64]) -> Tensor {
        let padding = vec![0i64; kernel.len()];
        if kernel.len() == 2 {
            self.avg_pool2d(kernel, stride, &padding, false, true, None::<i64>)
        } else {
            self.avg_pool3d(kernel, stride, &padding, false, true, None::<i64>)
        }
    }
}

enum EncoderStage {
    Plain(Vec<ConvNormAct>),
    Residual(Vec<BasicBlock>),
}

impl EncoderStage {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Self::Plain(convs) => convs.iter().fold(x.shallow_clone(), |x, c| c.forward(&x)),
            Self::Residual(blocks) => blocks.iter().fold(x.shallow_clone(), |x, b| b.forward(&x)),
        }
    }
}

/// A U-Net as nnU-Net builds it from the plans.
pub struct UNet {
    stem: Option<ConvNormAct>,
    encoder: Vec<EncoderStage>,
    transpconvs: Vec<Conv>,
    decoder: Vec<Vec<ConvNormAct>>,
    seg_layers: Vec<Conv>,
}

/// Which network class the plans ask for.
fn is_residual(class_name: &str) -> Result<bool, String> {
    match class_name.rsplit('.').next().unwrap_or_default() {
        "PlainConvUNet" => Ok(false),
        "ResidualEncoderUNet" => Ok(true),
        other => Err(format!("unsupported network class {other:?} (PlainConvUNet or ResidualEncoderUNet)")),
    }
}

impl UNet {
    /// Creates the network's variables under `root` (nnU-Net's state_dict names), He-initialised.
    pub fn new(
        root: &Path,
        class_name: &str,
        arch: &ArchKwargs,
        input_channels: usize,
        num_classes: usize,
    ) -> Result<Self, String> {
        let residual = is_residual(class_name)?;
        let stages = arch.n_stages;
        let blocks =
            if residual { &arch.n_blocks_per_stage } else { &arch.n_conv_per_stage }.as_ref().ok_or_else(|| {
                format!("arch_kwargs lack {}", if residual { "n_blocks_per_stage" } else { "n_conv_per_stage" })
            })?;
        let lengths = [arch.features_per_stage.len(), arch.kernel_sizes.len(), arch.strides.len(), blocks.len()];
        if lengths.iter().any(|&l| l != stages) || arch.n_conv_per_stage_decoder.len() + 1 != stages {
            return Err(format!("arch_kwargs lists do not match n_stages = {stages}"));
        }
        let features = &arch.features_per_stage;
        let encoder_path = root / "encoder";
        let stem = residual.then(|| {
            let ones = vec![1; arch.strides[0].len()];
            ConvNormAct::new(
                &(&encoder_path / "stem" / "convs" / 0),
                input_channels,
                features[0],
                &arch.kernel_sizes[0],
                &ones,
                true,
                true,
            )
        });
        let mut inputs = if residual { features[0] } else { input_channels };
        let mut encoder = Vec::with_capacity(stages);
        for s in 0..stages {
            let path = &encoder_path / "stages" / s;
            let (kernel, stride) = (&arch.kernel_sizes[s], &arch.strides[s]);
            encoder.push(if residual {
                let ones = vec![1; stride.len()];
                EncoderStage::Residual(
                    (0..blocks[s])
                        .map(|b| {
                            let (inputs, stride) =
                                if b == 0 { (inputs, stride.as_slice()) } else { (features[s], ones.as_slice()) };
                            BasicBlock::new(&(&path / "blocks" / b), inputs, features[s], kernel, stride)
                        })
                        .collect(),
                )
            } else {
                EncoderStage::Plain(stacked_convs(&(&path / 0), blocks[s], inputs, features[s], kernel, stride))
            });
            inputs = features[s];
        }
        let decoder_path = root / "decoder";
        let mut transpconvs = Vec::new();
        let mut decoder = Vec::new();
        let mut seg_layers = Vec::new();
        for j in 0..stages - 1 {
            let (below, skip) = (features[stages - 1 - j], features[stages - 2 - j]);
            transpconvs.push(Conv::transposed(
                &(&decoder_path / "transpconvs" / j),
                below,
                skip,
                &arch.strides[stages - 1 - j],
            ));
            let ones = vec![1; arch.strides[0].len()];
            decoder.push(stacked_convs(
                &(&decoder_path / "stages" / j),
                arch.n_conv_per_stage_decoder[j],
                2 * skip,
                skip,
                &arch.kernel_sizes[stages - 2 - j],
                &ones,
            ));
            seg_layers.push(Conv::new(&(&decoder_path / "seg_layers" / j), skip, num_classes, &ones, &ones, true));
        }
        if stages == 1 {
            // nnU-Net plans one stage for images too small to pool (every axis under twice the smallest
            // feature map) and then fails in its decoder, which has no segmentation layer without a stage
            // to decode; here the single stage's output gets one, as the decoder's last head would.
            let ones = vec![1; arch.strides[0].len()];
            seg_layers.push(Conv::new(
                &(&decoder_path / "seg_layers" / 0),
                features[0],
                num_classes,
                &ones,
                &ones,
                true,
            ));
        }
        Ok(Self { stem, encoder, transpconvs, decoder, seg_layers })
    }

    /// Segmentation logits at every decoder resolution, full resolution first (deep supervision).
    pub fn forward_deep_supervision(&self, x: &Tensor) -> Vec<Tensor> {
        self.forward_impl(x, true)
    }

    /// Full-resolution segmentation logits only.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_impl(x, false).remove(0)
    }

    fn forward_impl(&self, x: &Tensor, all_heads: bool) -> Vec<Tensor> {
        let mut x = match &self.stem {
            Some(stem) => stem.forward(x),
            None => x.shallow_clone(),
        };
        let mut skips = Vec::with_capacity(self.encoder.len());
        for stage in &self.encoder {
            x = stage.forward(&x);
            skips.push(x.shallow_clone());
        }
        let mut below = skips.pop().expect("at least one stage");
        if self.decoder.is_empty() {
            return vec![self.seg_layers[0].forward(&below)];
        }
        let mut outputs = Vec::new();
        let last = self.decoder.len() - 1;
        for (j, ((up, convs), head)) in self.transpconvs.iter().zip(&self.decoder).zip(&self.seg_layers).enumerate() {
            let skip = skips.pop().expect("a skip per decoder stage");
            let joined = Tensor::cat(&[up.forward(&below), skip], 1);
            below = convs.iter().fold(joined, |x, c| c.forward(&x));
            if all_heads || j == last {
                outputs.push(head.forward(&below));
            }
        }
        outputs.reverse();
        outputs
    }
}

/// The activations one training sample keeps for backpropagation, in values: the input, and per
/// convolution its output and the normalised copy (the nonlinearity works in place), in the encoder and,
/// with the upsampled and concatenated maps and the heads, in the decoder. A lower bound of training's
/// memory, which nn-train checks against the memory budget before it starts (on CPU: 8.0 GB estimated
/// for the 128^3 x 2 batch of a brain-sized set against a measured 9.0 GB peak; 114 KB per 6x6x6
/// sample against 232 KB measured per added sample).
pub fn activations_per_sample(arch: &ArchKwargs, patch: &[usize], input_channels: usize, classes: usize) -> f64 {
    let convs = arch.n_conv_per_stage.as_ref().or(arch.n_blocks_per_stage.as_ref());
    let mut voxels_at_stage = Vec::with_capacity(arch.strides.len());
    let mut size: Vec<f64> = patch.iter().map(|&n| n as f64).collect();
    for stride in &arch.strides {
        for (n, s) in size.iter_mut().zip(stride) {
            *n = (*n / *s.max(&1) as f64).floor().max(1.0);
        }
        voxels_at_stage.push(size.iter().product::<f64>());
    }
    let mut values = input_channels as f64 * patch.iter().map(|&n| n as f64).product::<f64>();
    for (s, (&features, &voxels)) in arch.features_per_stage.iter().zip(&voxels_at_stage).enumerate() {
        let encoder_convs = convs.and_then(|c| c.get(s)).copied().unwrap_or(1) as f64;
        values += encoder_convs * 2.0 * features as f64 * voxels;
        let stages = arch.features_per_stage.len();
        if s + 1 < stages {
            // decoded at this stage's resolution: upsampled, concatenated with the skip, convolved
            let decoder_convs = arch.n_conv_per_stage_decoder.get(stages - 2 - s).copied().unwrap_or(1) as f64;
            values += (3.0 + decoder_convs * 2.0) * features as f64 * voxels;
        }
        if s + 1 < stages || stages == 1 {
            // a deep-supervision head
            values += classes as f64 * voxels;
        }
    }
    values
}

/// The `--device` and `--precision` arguments of the tools that run networks, parsed and checked
/// together (a precision the device cannot run is refused), each problem naming its flag.
pub fn device_and_precision(device: &str, precision: &str) -> nntools_io::Result<(Device, Precision)> {
    let flag = |name: &'static str| move |problem: String| nntools_io::Error::bad_input(name, problem);
    let device = parse_device(device).map_err(flag("--device"))?;
    let precision: Precision = precision.parse().map_err(flag("--precision"))?;
    precision.on(device).map_err(flag("--precision"))?;
    Ok((device, precision))
}

/// A `--device` argument: `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`; a CUDA device this
/// machine does not have is refused here rather than failing at the first tensor. `cpu` never touches
/// CUDA.
pub fn parse_device(name: &str) -> Result<Device, String> {
    let index = match name {
        "auto" => return Ok(Device::cuda_if_available()),
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| "device must be auto, cpu, cuda or cuda:N".to_owned())?,
    };
    let available = tch::Cuda::device_count().max(0) as usize;
    if index >= available {
        return Err(match available {
            0 => "CUDA is not available here (use --device cpu or auto)".to_owned(),
            n => format!("CUDA device {index} is not available: this machine has {n} (cuda:0 to cuda:{})", n - 1),
        });
    }
    Ok(Device::Cuda(index))
}

/// A `-j/--threads` argument of the tools that run networks: libtorch's CPU threads, or libtorch's own
/// choice when absent.
pub fn set_cpu_threads(threads: Option<usize>) {
    if let Some(threads) = threads {
        tch::set_num_threads(threads as i32);
    }
}

/// A network with its variables, ready to load or save nnU-Net weights.
pub struct Model {
    pub vs: VarStore,
    pub net: UNet,
}

impl Model {
    pub fn new(
        device: Device,
        class_name: &str,
        arch: &ArchKwargs,
        input_channels: usize,
        num_classes: usize,
    ) -> Result<Self, String> {
        let vs = VarStore::new(device);
        let net = UNet::new(&vs.root(), class_name, arch, input_channels, num_classes)?;
        Ok(Self { vs, net })
    }

    /// Loads weights with nnU-Net's key names from a safetensors file or an nnU-Net checkpoint (`.pth`,
    /// its `network_weights`). nnU-Net checkpoints repeat tensors under alias keys
    /// (`decoder.encoder.*`, `*.all_modules.*`), which are ignored; every variable of this network must
    /// be present with its shape.
    pub fn load_weights(&mut self, path: &std::path::Path) -> nntools_io::Result<()> {
        self.load_variables(path, |_| true)
    }

    /// Loads pretrained weights as nnU-Net's `load_pretrained_weights` does
    /// (nnunetv2/run/load_pretrained_weights.py): every variable but the segmentation heads, whose class
    /// count may differ between the pretraining and this dataset.
    pub fn load_pretrained(&mut self, path: &std::path::Path) -> nntools_io::Result<()> {
        self.load_variables(path, |name| !name.contains(".seg_layers."))
    }

    fn load_variables(&mut self, path: &std::path::Path, wanted: impl Fn(&str) -> bool) -> nntools_io::Result<()> {
        let named = named_tensors(path)?;
        let _guard = tch::no_grad_guard();
        for (name, mut var) in self.vs.variables().into_iter().filter(|(name, _)| wanted(name)) {
            let source =
                named.get(&name).ok_or_else(|| nntools_io::Error::bad_input(path, format!("no tensor {name}")))?;
            if source.size() != var.size() {
                let problem = format!("{name}: file has {:?}, network has {:?}", source.size(), var.size());
                return Err(nntools_io::Error::bad_input(path, problem));
            }
            var.copy_(&source.to_kind(Kind::Float).to_device(var.device()));
        }
        Ok(())
    }

    /// Saves the weights as safetensors with nnU-Net's key names.
    pub fn save_safetensors(&self, path: &std::path::Path) -> Result<(), TchError> {
        self.vs.save(path)
    }
}

/// The tensors of a weights file by name: a `.pth` is an nnU-Net checkpoint (its `network_weights`,
/// read without Python), anything else safetensors.
fn named_tensors(path: &std::path::Path) -> nntools_io::Result<std::collections::HashMap<String, Tensor>> {
    if path.extension().is_some_and(|e| e == "pth") {
        let checkpoint = nntools_checkpoint::NnunetCheckpoint::read(path)?;
        return checkpoint
            .network_weights
            .iter()
            .map(|(name, tensor)| {
                let values = tensor.to_f32().ok_or_else(|| {
                    nntools_io::Error::bad_input(
                        path,
                        format!("{name}: {:?} weights, expected floating point", tensor.dtype),
                    )
                })?;
                let shape: Vec<i64> = tensor.shape.iter().map(|&s| s as i64).collect();
                Ok((name.clone(), Tensor::from_slice(&values).view(shape.as_slice())))
            })
            .collect();
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| nntools_io::Error::bad_input(path, e))?;
    Ok(tensors.into_iter().collect())
}
