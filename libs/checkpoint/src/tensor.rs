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
        assert_eq!(shape.iter().product::<usize>(), values.len(), "shape {shape:?} for {} values", values.len());
        Tensor { dtype: Dtype::F32, shape, data: values.iter().flat_map(|v| v.to_le_bytes()).collect() }
    }

    /// The elements as float32 (float16 and bfloat16 widened exactly, float64 rounded); None for
    /// integer and bool tensors.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let size = self.dtype.size();
        let elements = self.data.chunks_exact(size);
        Some(match self.dtype {
            Dtype::F32 => elements.map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
            Dtype::F16 => elements.map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => elements.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F64 => elements.map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_widens_exactly() {
        // 1.5 in float16 is 0x3e00, -2.0 in bfloat16 is 0xc000
        let f16 = Tensor { dtype: Dtype::F16, shape: vec![1], data: vec![0x00, 0x3e] };
        let bf16 = Tensor { dtype: Dtype::BF16, shape: vec![1], data: vec![0x00, 0xc0] };
        assert_eq!((f16.to_f32(), bf16.to_f32()), (Some(vec![1.5]), Some(vec![-2.0])));
        let ints = Tensor { dtype: Dtype::I64, shape: vec![1], data: vec![0; 8] };
        assert_eq!(ints.to_f32(), None);
        assert_eq!(Tensor::from_f32(vec![2], &[1.0, -0.5]).to_f32(), Some(vec![1.0, -0.5]));
    }
}
