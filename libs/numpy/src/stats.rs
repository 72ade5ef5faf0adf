//! numpy's statistics as nnU-Net calls them.
