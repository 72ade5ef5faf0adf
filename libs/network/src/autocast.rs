//! Mixed precision (`--precision`): libtorch's autocast, fp16 on CUDA as nnU-Net trains and predicts
//! there, and bf16 (or fp16) on the CPU where nnU-Net runs fp32 only.
//!
//! tch's `autocast` goes through libtorch's deprecated `at::autocast::is_enabled` and `set_enabled`, which
//! only know CUDA, and libtorch 2.11 prints a deprecation warning at every call of those: a line or three
//! per training iteration. This calls their per-device replacements (`is_autocast_enabled`,
//! `set_autocast_enabled`, `get_autocast_dtype`, `set_autocast_dtype`) through their C++ symbols, the only
//! way to reach them that tch leaves, plus the same nesting bookkeeping as tch. The symbols belong to the
//! libtorch that tch 0.24 pins; another libtorch that lacked them would fail to link, not misbehave.

use std::fmt;
use std::str::FromStr;
use tch::{Device, Kind, Tensor};

/// `c10::DeviceType` (`enum class DeviceType : int8_t`).
const CPU: i8 = 0;
const CUDA: i8 = 1;

unsafe extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device_type: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device_type: i8, enabled: bool);
    // `c10::ScalarType` is an `enum class : int8_t`
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn get_autocast_dtype(device_type: i8) -> i8;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device_type: i8, dtype: i8);
}

/// The arithmetic a network's convolutions run in, as `--precision` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// nnU-Net's choice: fp16 autocast on CUDA, fp32 on the CPU (`nnunetv2/training/nnUNetTrainer/
    /// nnUNetTrainer.py: train_step` and `nnunetv2/inference/predict_from_raw_data.py:
    /// predict_sliding_window_return_logits` enable autocast for device type cuda only).
    Auto,
    Fp32,
    Bf16,
    Fp16,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "fp32" => Ok(Self::Fp32),
            "bf16" => Ok(Self::Bf16),
            "fp16" => Ok(Self::Fp16),
            _ => Err(format!("{text:?}: expected auto, fp32, bf16 or fp16")),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Fp32 => "fp32",
            Self::Bf16 => "bf16",
            Self::Fp16 => "fp16",
        })
    }
}

impl Precision {
    /// What this precision means on `device`: plain fp32, or autocast to a 16-bit type. Refused where
    /// it would be slower than fp32: bf16 on a CPU without native bfloat16 arithmetic, which oneDNN
    /// emulates (2x slower than fp32 on the development machine), and fp16 on any CPU (75x slower there).
    pub fn on(self, device: Device) -> Result<Option<MixedPrecision>, String> {
        let kind = match (self, device.is_cuda()) {
            (Self::Fp32, _) | (Self::Auto, false) => return Ok(None),
            (Self::Auto | Self::Fp16, true) => Kind::Half,
            (Self::Fp16, false) => return Err(FP16_ON_CPU.to_owned()),
            (Self::Bf16, true) => Kind::BFloat16,
            (Self::Bf16, false) if cpu_has_native_bf16() => Kind::BFloat16,
            (Self::Bf16, false) => return Err(NO_NATIVE_BF16.to_owned()),
        };
        Ok(Some(MixedPrecision { device_type: if device.is_cuda() { CUDA } else { CPU }, kind }))
    }

    /// The precision `on(device)` resolves to, by its own name (`auto` is never the answer).
    pub fn resolved(self, device: Device) -> Result<Self, String> {
        Ok(match self.on(device)?.map(|mixed| mixed.kind) {
            None => Self::Fp32,
            Some(Kind::BFloat16) => Self::Bf16,
            Some(_) => Self::Fp16,
        })
    }
}

const NO_NATIVE_BF16: &str = "bf16: this CPU has no native bfloat16 arithmetic (x86: AVX512-BF16, as in Intel \
    Cooper Lake, Sapphire Rapids and later Xeons, or AMD Zen 4 and later; Arm: the BF16 extension), or \
    ONEDNN_MAX_CPU_ISA forbids it; emulated it runs slower than fp32: use --precision fp32";

const FP16_ON_CPU: &str = "fp16 on the CPU: libtorch's CPU convolutions have no fast fp16 path; use bf16 (on CPUs \
    with native bfloat16) or fp32";

/// Whether this CPU computes in bfloat16 natively and oneDNN, which runs libtorch's CPU convolutions, may
/// use it (`ONEDNN_MAX_CPU_ISA` caps the instruction sets it uses; the names below lack bfloat16).
fn cpu_has_native_bf16() -> bool {
    const WITHOUT_BF16: [&str; 7] =
        ["SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"];
    let capped = std::env::var("ONEDNN_MAX_CPU_ISA")
        .is_ok_and(|isa| WITHOUT_BF16.contains(&isa.trim().to_ascii_uppercase().as_str()));
    !capped && cpu_bf16_instructions()
}

#[cfg(target_arch = "x86_64")]
fn cpu_bf16_instructions() -> bool {
    // every CPU with AMX-BF16 has AVX512-BF16 too
    std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(target_arch = "aarch64")]
fn cpu_bf16_instructions() -> bool {
    std::arch::is_aarch64_feature_detected!("bf16")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_bf16_instructions() -> bool {
    false
}

/// Autocast to `kind` on one device type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedPrecision {
    device_type: i8,
    kind: Kind,
}

impl MixedPrecision {
    /// The 16-bit type the convolutions run in.
    pub fn kind(self) -> Kind {
        self.kind
    }

    /// `kind` as `c10::ScalarType` numbers it (c10/core/ScalarType.h); tch keeps its own numbering private.
    fn scalar_type(self) -> i8 {
        match self.kind {
            Kind::Half => 5,
            Kind::BFloat16 => 15,
            other => unreachable!("autocast to {other:?}"),
        }
    }
}

/// `tensor` in fp32 if it is bf16, else as it is: what bf16 autocast produces is widened where it is summed
/// (normalisation statistics, losses, test-time augmentation), since bf16 keeps only 8 bits of mantissa;
/// fp16 stays fp16 there, as nnU-Net computes under CUDA autocast.
pub fn widen_bf16(tensor: &Tensor) -> Tensor {
    if tensor.kind() == Kind::BFloat16 { tensor.to_kind(Kind::Float) } else { tensor.shallow_clone() }
}

/// Restores the previous autocast state when the region ends, also by a panic.
struct Region {
    device_type: i8,
    was_enabled: bool,
    previous_dtype: i8,
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: plain libtorch calls on thread-local state; none of them throws
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            set_autocast_enabled(self.device_type, self.was_enabled);
            set_autocast_dtype(self.device_type, self.previous_dtype);
        }
    }
}

/// Runs `f` under autocast as `mixed` says; with `None`, as it is (fp32).
pub fn autocast<T>(mixed: Option<MixedPrecision>, f: impl FnOnce() -> T) -> T {
    let Some(mixed) = mixed else { return f() };
    // SAFETY: as in `Region::drop`
    let _region = unsafe {
        let region = Region {
            device_type: mixed.device_type,
            was_enabled: is_autocast_enabled(mixed.device_type),
            previous_dtype: get_autocast_dtype(mixed.device_type),
        };
        set_autocast_enabled(mixed.device_type, true);
        set_autocast_dtype(mixed.device_type, mixed.scalar_type());
        torch_sys::at_autocast_increment_nesting();
        region
    };
    f()
}

/// Whether autocast is on for `device`'s type in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: as in `Region::drop`
    unsafe { is_autocast_enabled(if device.is_cuda() { CUDA } else { CPU }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUDA_FP16: MixedPrecision = MixedPrecision { device_type: CUDA, kind: Kind::Half };
    const CPU_BF16: MixedPrecision = MixedPrecision { device_type: CPU, kind: Kind::BFloat16 };

    #[test]
    fn autocast_is_on_inside_the_region_only_and_nests() {
        let cuda = Device::Cuda(0);
        assert!(!autocast_enabled(cuda));
        let inside = autocast(Some(CUDA_FP16), || {
            (autocast_enabled(cuda), autocast(Some(CUDA_FP16), || autocast_enabled(cuda)), autocast_enabled(cuda))
        });
        assert_eq!(inside, (true, true, true));
        // the flag is the one tch's own (deprecated) query reads, i.e. the one libtorch's CUDA autocast uses
        // SAFETY: a libtorch query of thread-local state
        assert_eq!(autocast(Some(CUDA_FP16), || unsafe { torch_sys::at_autocast_is_enabled() }), 1);
        assert!(!autocast_enabled(cuda));
        assert!(!autocast(None, || autocast_enabled(cuda)));
        // the CPU's flag is another one
        assert!(!autocast(Some(CUDA_FP16), || autocast_enabled(Device::Cpu)));
        // a panic inside still ends the region
        let _ = std::panic::catch_unwind(|| autocast(Some(CUDA_FP16), || panic!("inside")));
        assert!(!autocast_enabled(cuda));
    }

    #[test]
    fn cpu_autocast_runs_the_networks_convolutions_in_its_dtype_and_restores_the_previous_one() {
        // SAFETY: a libtorch query of thread-local state
        let default_dtype = unsafe { get_autocast_dtype(CPU) };
        let fp16_on_cpu = MixedPrecision { device_type: CPU, kind: Kind::Half };
        let x = Tensor::ones([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let w = Tensor::ones([1, 1, 3, 3], (Kind::Float, Device::Cpu));
        let conv = || x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1).kind();
        assert_eq!(conv(), Kind::Float);
        assert_eq!(autocast(Some(CPU_BF16), conv), Kind::BFloat16);
        assert_eq!(autocast(Some(CPU_BF16), || autocast(Some(fp16_on_cpu), conv)), Kind::Half);
        assert_eq!(conv(), Kind::Float);
        // SAFETY: as above
        assert_eq!(unsafe { get_autocast_dtype(CPU) }, default_dtype);
    }

    #[test]
    fn precision_resolves_per_device_as_nnunet_for_auto() {
        assert_eq!(Precision::Auto.on(Device::Cpu), Ok(None));
        assert_eq!(Precision::Auto.on(Device::Cuda(0)), Ok(Some(CUDA_FP16)));
        assert_eq!(Precision::Fp32.on(Device::Cuda(0)), Ok(None));
        assert_eq!(Precision::Bf16.resolved(Device::Cuda(0)), Ok(Precision::Bf16));
        assert_eq!(Precision::Fp16.resolved(Device::Cuda(0)), Ok(Precision::Fp16));
        assert!(Precision::Fp16.on(Device::Cpu).is_err_and(|message| message.contains("no fast fp16")));
        assert_eq!(Precision::Auto.resolved(Device::Cpu), Ok(Precision::Fp32));
        match Precision::Bf16.on(Device::Cpu) {
            Ok(mixed) => assert!(cpu_has_native_bf16() && mixed == Some(CPU_BF16)),
            Err(message) => assert!(!cpu_has_native_bf16() && message.contains("AVX512-BF16"), "{message}"),
        }
        for text in ["auto", "fp32", "bf16", "fp16"] {
            assert_eq!(text.parse::<Precision>().map(|p| p.to_string()), Ok(text.to_owned()));
        }
        assert!("float16".parse::<Precision>().is_err());
    }
}
