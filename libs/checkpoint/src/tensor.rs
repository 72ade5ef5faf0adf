//! A tensor's data as a checkpoint stores it.

/// The element types of torch storages nn-tools reads and writes (`torch.FloatStorage`,
/// `torch.HalfStorage`, `torch.BFloat16Storage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }
}

/// A tensor: element type, shape, and its elements contiguous in row-major order as little-endian
/// bytes (`data.len() == numel * dtype.size()`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A float32 tensor of `shape` holding `values`.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Tensor {
        todo!("{shape:?} {}", values.len())
    }

    /// The elements as float32 (float16 and bfloat16 widened exactly, float64 rounded); None for
    /// integer and bool tensors.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        todo!()
    }
}
