//! The planner's memory proxy: the number of feature-map elements every convolution of the network
//! produces for one patch (nnU-Net's `compute_conv_feature_map_size`, deep supervision off).
//!
//! Only output sizes count, computed with floor division by the strides, exactly as
//! dynamic_network_architectures does; the estimate is compared against reference values that
//! nnU-Net calibrated on real GPU memory use.

/// Which encoder the network has; the decoder is the same U-Net decoder for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// PlainConvUNet: `n` conv-norm-nonlin blocks per stage, the first strided.
    Plain,
    /// ResidualEncoderUNet: a stem conv, then `n` ResNet-D basic blocks per stage.
    Residual,
}

/// The shape of a U-Net as the plans describe it.
pub struct Network<'a> {
    pub encoder: Encoder,
    pub features_per_stage: &'a [usize],
    pub strides: &'a [Vec<usize>],
    /// Convs (Plain) or residual blocks (Residual) per encoder stage.
    pub blocks_per_stage: &'a [usize],
    pub convs_per_decoder_stage: &'a [usize],
    pub num_classes: usize,
}

fn volume(channels: usize, size: &[usize]) -> u64 {
    size.iter().fold(channels as u64, |acc, &s| acc * s as u64)
}

fn downsample(size: &[usize], stride: &[usize]) -> Vec<usize> {
    size.iter().zip(stride).map(|(s, k)| s / k).collect()
}

impl Network<'_> {
    /// Feature-map elements of every conv and transposed conv output for an input of `patch_size`.
    pub fn feature_map_size(&self, patch_size: &[usize]) -> u64 {
        self.encoder_size(patch_size) + self.decoder_size(patch_size)
    }

    fn encoder_size(&self, patch_size: &[usize]) -> u64 {
        let mut total = 0;
        let mut size = patch_size.to_vec();
        let mut channels = self.features_per_stage[0];
        if self.encoder == Encoder::Residual {
            total += volume(self.features_per_stage[0], &size); // stem
        }
        for (stage, stride) in self.strides.iter().enumerate() {
            let features = self.features_per_stage[stage];
            let blocks = self.blocks_per_stage[stage];
            let strided = downsample(&size, stride);
            total += match self.encoder {
                Encoder::Plain => blocks as u64 * volume(features, &strided),
                Encoder::Residual => {
                    // conv1 and conv2 of every block, plus the projection skip of a block that changes
                    // channels or size
                    let projection = channels != features || strided != size;
                    (2 * blocks as u64 + u64::from(projection)) * volume(features, &strided)
                }
            };
            channels = features;
            size = strided;
        }
        total
    }

    fn decoder_size(&self, patch_size: &[usize]) -> u64 {
        let stages = self.strides.len();
        let mut skip_sizes = Vec::with_capacity(stages - 1);
        let mut size = patch_size.to_vec();
        for stride in &self.strides[..stages - 1] {
            size = downsample(&size, stride);
            skip_sizes.push(size.clone());
        }
        let mut total = 0;
        for s in 0..stages - 1 {
            let skip = &skip_sizes[stages - 2 - s];
            let features = self.features_per_stage[stages - 2 - s];
            total += self.convs_per_decoder_stage[s] as u64 * volume(features, skip);
            total += volume(features, skip); // transposed conv
            if s == stages - 2 {
                total += volume(self.num_classes, skip); // segmentation head at full resolution
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residual_reference_points_from_nnunet() {
        // Values printed by the `__main__` block of nnU-Net's ResEnc planner file
        // (`nnunetv2/experiment_planning/experiment_planners/residual_unets/residual_encoder_unet_planners.py`). Those
        // networks are built with deep supervision on, which adds a 3-class head at every lower decoder
        // resolution; the planner's estimate (deep supervision off) excludes them.
        let strides: Vec<Vec<usize>> = [1, 2, 2, 2, 2, 2].iter().map(|&s| vec![s; 3]).collect();
        let net = Network {
            encoder: Encoder::Residual,
            features_per_stage: &[32, 64, 128, 256, 320, 320],
            strides: &strides,
            blocks_per_stage: &[1, 3, 4, 6, 6, 6],
            convs_per_decoder_stage: &[1; 5],
            num_classes: 3,
        };
        let heads_3d = 3 * [64u64, 32, 16, 8].iter().map(|s| s * s * s).sum::<u64>();
        assert_eq!(net.feature_map_size(&[128, 128, 128]) + heads_3d, 558_319_104);
        let strides: Vec<Vec<usize>> = [1, 2, 2, 2, 2, 2, 2].iter().map(|&s| vec![s; 2]).collect();
        let net = Network {
            encoder: Encoder::Residual,
            features_per_stage: &[32, 64, 128, 256, 512, 512, 512],
            strides: &strides,
            blocks_per_stage: &[1, 3, 4, 6, 6, 6, 6],
            convs_per_decoder_stage: &[1; 6],
            num_classes: 3,
        };
        let heads_2d = 3 * [256u64, 128, 64, 32, 16].iter().map(|s| s * s).sum::<u64>();
        assert_eq!(net.feature_map_size(&[512, 512]) + heads_2d, 129_793_792);
    }

    #[test]
    fn plain_isotropic_hippocampus_example() {
        // Hippocampus 3d_fullres (patch 40x56x40, 4 stages, 3 classes, as in nnU-Net's Dataset004 plans): 19,174,400
        // by the rule of dynamic_network_architectures' `architectures/unet.py:
        // PlainConvUNet.compute_conv_feature_map_size`, worked out independently of this code.
        let strides: Vec<Vec<usize>> = [1, 2, 2, 2].iter().map(|&s| vec![s; 3]).collect();
        let net = Network {
            encoder: Encoder::Plain,
            features_per_stage: &[32, 64, 128, 256],
            strides: &strides,
            blocks_per_stage: &[2; 4],
            convs_per_decoder_stage: &[2; 3],
            num_classes: 3,
        };
        assert_eq!(net.feature_map_size(&[40, 56, 40]), 19_174_400);
    }
}
