//! Image geometry as SimpleITK reports it for a NIfTI file (nnU-Net's reference reader), so that
//! spacings and the `sitk_stuff` of nnU-Net's properties can be compared number for number.
//!
//! ITK reads NIfTI's RAS world coordinates into its LPS convention: x and y of the origin and the first
//! two rows of the direction matrix change sign. Which of sform and qform it trusts is spelled out on
//! [`Geometry::from_header`].

use nifti::NiftiHeader;

/// Spacing in nnU-Net's array axis order (z, y, x); origin and direction exactly as SimpleITK's
/// `GetOrigin()` and `GetDirection()` return them (physical LPS x, y, z; direction row-major, column
/// `i` being the world direction of NIfTI axis `i`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geometry {
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub direction: [f64; 9],
}

/// The identity direction, row-major.
pub const IDENTITY: [f64; 9] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

/// How far a normalised sform may be from a rotation before ITK falls back to the qform.
const ORTHONORMAL_TOLERANCE: f64 = 1e-4;
/// How closely sform and qform must agree for ITK to prefer a non-scanner sform.
const SFORM_QFORM_TOLERANCE: f64 = 1e-4;

impl Geometry {
    /// The 3-D geometry nnU-Net gives a 2-D image read as one slice: spacing (999 times the largest, y, x)
    /// as `nnunetv2/imageio/simpleitk_reader_writer.py: SimpleITKIO.read_images` sets it, the plane's
    /// origin and direction (file order x, y; direction row-major) extended by an identity third axis.
    pub fn of_plane(spacing_xy: [f64; 2], origin_xy: [f64; 2], direction: [f64; 4]) -> Self {
        let [sx, sy] = spacing_xy.map(f64::abs);
        let [a, b, c, d] = direction;
        Self {
            spacing: [sx.max(sy) * 999.0, sy, sx],
            origin: [origin_xy[0], origin_xy[1], 0.0],
            direction: [a, b, 0.0, c, d, 0.0, 0.0, 0.0, 1.0],
        }
    }

    /// This geometry of a 2-D file read as 3-D, as SimpleITK reports a 2-D image: its first two axes.
    pub fn planar(&self) -> Self {
        let d = &self.direction;
        Self::of_plane([self.spacing[2], self.spacing[1]], [self.origin[0], self.origin[1]], [d[0], d[1], d[3], d[4]])
    }

    /// Derives the geometry from a header the way ITK's NiftiImageIO does (ITK 5.4, SimpleITK 2.4/2.5):
    /// spacing from pixdim (0 or non-finite read as 1, negative ones flip their direction column, metres
    /// and microns scaled to mm); the sform when it is a rotation and either the qform is unset, the
    /// sform is scanner-anatomical, or both agree; else the qform; identity when neither is set.
    pub fn from_header(header: &NiftiHeader) -> Result<Self, String> {
        let unit_scale = match header.xyzt_units & 0x07 {
            1 => 1e3,  // metres
            3 => 1e-3, // microns
            _ => 1.0,
        };
        let pixdim = [1, 2, 3].map(|i| {
            let p = f64::from(header.pixdim[i]);
            if p == 0.0 || !p.is_finite() { 1.0 } else { p }
        });
        let transform = if header.qform_code <= 0 && header.sform_code <= 0 {
            None // ITK keeps its default: identity direction (in LPS) at the origin
        } else if header.sform_code > 0 && sform_is_rotation(header) && prefer_sform(header, pixdim) {
            Some(sform(header))
        } else if header.qform_code > 0 {
            Some(qform(header))
        } else {
            return Err("neither sform nor qform describes an orthonormal direction".into());
        };
        let (origin_lps, axes_lps) = match transform {
            None => ([0.0; 3], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
            Some((o, axes)) => ([-o[0], -o[1], o[2]], axes.map(|c| [-c[0], -c[1], c[2]])),
        };
        let mut direction = [0.0; 9];
        for (axis, column) in axes_lps.iter().enumerate() {
            let sign = if pixdim[axis] < 0.0 { -1.0 } else { 1.0 };
            for (row, value) in column.iter().enumerate() {
                direction[row * 3 + axis] = sign * value;
            }
        }
        let origin = origin_lps.map(|v| v * unit_scale);
        let spacing = pixdim.map(|p| p.abs() * unit_scale);
        Ok(Self { spacing: [spacing[2], spacing[1], spacing[0]], origin, direction })
    }

    /// A header (single-file NIfTI-1, float32 placeholder type) whose sform and qform both describe
    /// this geometry; the direction must be a rotation, possibly with a reflection.
    pub fn to_header(&self) -> NiftiHeader {
        let [sz, sy, sx] = self.spacing;
        let spacing_xyz = [sx, sy, sz];
        let mut header = NiftiHeader {
            magic: *b"n+1\0",
            sform_code: 1,
            qform_code: 1,
            xyzt_units: 2, // millimetres
            scl_slope: 1.0,
            ..NiftiHeader::default()
        };
        let ras = |row: usize, axis: usize| {
            let d = self.direction[row * 3 + axis];
            if row < 2 { -d } else { d }
        };
        let origin_ras = [-self.origin[0], -self.origin[1], self.origin[2]];
        let rows = [&mut header.srow_x, &mut header.srow_y, &mut header.srow_z];
        for (row, srow) in rows.into_iter().enumerate() {
            for axis in 0..3 {
                srow[axis] = (ras(row, axis) * spacing_xyz[axis]) as f32;
            }
            srow[3] = origin_ras[row] as f32;
        }
        let mut rotation = [[0.0; 3]; 3];
        for (row, r) in rotation.iter_mut().enumerate() {
            for (axis, v) in r.iter_mut().enumerate() {
                *v = ras(row, axis);
            }
        }
        let qfac = if determinant(&rotation) < 0.0 {
            for r in &mut rotation {
                r[2] = -r[2];
            }
            -1.0
        } else {
            1.0
        };
        let [b, c, d] = rotation_to_quaternion(&rotation);
        header.quatern_b = b as f32;
        header.quatern_c = c as f32;
        header.quatern_d = d as f32;
        header.quatern_x = origin_ras[0] as f32;
        header.quatern_y = origin_ras[1] as f32;
        header.quatern_z = origin_ras[2] as f32;
        header.pixdim = [qfac, sx as f32, sy as f32, sz as f32, 1.0, 1.0, 1.0, 1.0];
        header
    }
}

/// Columns of the sform (axis directions times spacing) and its translation, in RAS.
pub(crate) fn sform_columns(header: &NiftiHeader) -> ([f64; 3], [[f64; 3]; 3]) {
    let rows = [header.srow_x, header.srow_y, header.srow_z].map(|r| r.map(f64::from));
    let columns = [0, 1, 2].map(|axis| [rows[0][axis], rows[1][axis], rows[2][axis]]);
    ([rows[0][3], rows[1][3], rows[2][3]], columns)
}

fn sform(header: &NiftiHeader) -> ([f64; 3], [[f64; 3]; 3]) {
    let (origin, columns) = sform_columns(header);
    (origin, columns.map(normalised))
}

/// ITK's choice between a usable sform and a set qform: the sform unless the qform is set, the sform is
/// not scanner-anatomical, and the two disagree (compared element by element, scaled matrices and offsets).
fn prefer_sform(header: &NiftiHeader, pixdim: [f64; 3]) -> bool {
    if header.qform_code <= 0 || header.sform_code == 1 {
        return true;
    }
    let (s_origin, s_columns) = sform_columns(header);
    let (q_origin, q_axes) = qform(header);
    let scale = pixdim.map(|p| if p > 0.0 { p } else { 1.0 });
    let close = |a: f64, b: f64| (a - b).abs() <= SFORM_QFORM_TOLERANCE;
    (0..3).all(|axis| (0..3).all(|row| close(s_columns[axis][row], q_axes[axis][row] * scale[axis])))
        && (0..3).all(|i| close(s_origin[i], q_origin[i]))
}

fn sform_is_rotation(header: &NiftiHeader) -> bool {
    let (_, columns) = sform_columns(header);
    if columns.iter().any(|c| norm(c) == 0.0 || c.iter().any(|v| !v.is_finite())) {
        return false;
    }
    let unit = columns.map(normalised);
    (0..3).all(|a| (a + 1..3).all(|b| dot(&unit[a], &unit[b]).abs() < ORTHONORMAL_TOLERANCE))
}

/// The qform's rotation (nifti_quatern_to_mat44) with qfac applied to the third axis, and its offset.
pub(crate) fn qform(header: &NiftiHeader) -> ([f64; 3], [[f64; 3]; 3]) {
    let (b, c, d) = (f64::from(header.quatern_b), f64::from(header.quatern_c), f64::from(header.quatern_d));
    let a_squared = 1.0 - (b * b + c * c + d * d);
    let (a, b, c, d) = if a_squared < 1e-7 {
        let scale = 1.0 / (b * b + c * c + d * d).sqrt();
        (0.0, b * scale, c * scale, d * scale)
    } else {
        (a_squared.sqrt(), b, c, d)
    };
    let qfac = if header.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let r = [
        [a * a + b * b - c * c - d * d, 2.0 * (b * c - a * d), 2.0 * (b * d + a * c)],
        [2.0 * (b * c + a * d), a * a + c * c - b * b - d * d, 2.0 * (c * d - a * b)],
        [2.0 * (b * d - a * c), 2.0 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ];
    let columns = [0, 1, 2].map(|axis| {
        let sign = if axis == 2 { qfac } else { 1.0 };
        [r[0][axis] * sign, r[1][axis] * sign, r[2][axis] * sign]
    });
    let origin = [header.quatern_x, header.quatern_y, header.quatern_z].map(f64::from);
    (origin, columns)
}

/// Quaternion (b, c, d) of a proper rotation matrix, as nifti_mat44_to_quatern computes it (a >= 0).
fn rotation_to_quaternion(r: &[[f64; 3]; 3]) -> [f64; 3] {
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        [0.25 * (r[2][1] - r[1][2]) / a, 0.25 * (r[0][2] - r[2][0]) / a, 0.25 * (r[1][0] - r[0][1]) / a]
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        let (a, b, c, d) = if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (0.25 * (r[2][1] - r[1][2]) / b, b, 0.25 * (r[0][1] + r[1][0]) / b, 0.25 * (r[0][2] + r[2][0]) / b)
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (0.25 * (r[0][2] - r[2][0]) / c, 0.25 * (r[0][1] + r[1][0]) / c, c, 0.25 * (r[1][2] + r[2][1]) / c)
        } else {
            let d = 0.5 * zd.sqrt();
            (0.25 * (r[1][0] - r[0][1]) / d, 0.25 * (r[0][2] + r[2][0]) / d, 0.25 * (r[1][2] + r[2][1]) / d, d)
        };
        if a < 0.0 { [-b, -c, -d] } else { [b, c, d] }
    }
}

fn dot(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: &[f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn normalised(a: [f64; 3]) -> [f64; 3] {
    let n = norm(&a);
    a.map(|v| v / n)
}

fn determinant(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(geometry: Geometry) {
        let header = geometry.to_header();
        let back = Geometry::from_header(&header).unwrap();
        for (a, b) in back.direction.iter().zip(&geometry.direction) {
            assert!((a - b).abs() < 1e-6, "{back:?} vs {geometry:?}");
        }
        for (a, b) in back.origin.iter().zip(&geometry.origin).chain(back.spacing.iter().zip(&geometry.spacing)) {
            assert!((a - b).abs() < 1e-4, "{back:?} vs {geometry:?}");
        }
        let mut qform_only = header.clone();
        qform_only.sform_code = 0;
        let from_qform = Geometry::from_header(&qform_only).unwrap();
        assert_eq!(from_qform.origin.map(|v| v as f32), geometry.origin.map(|v| v as f32));
        for (a, b) in from_qform.direction.iter().zip(&geometry.direction) {
            assert!((a - b).abs() < 1e-6, "qform {from_qform:?} vs {geometry:?}");
        }
    }

    #[test]
    fn header_round_trips_rotations_and_reflections() {
        let identity = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        round_trip(Geometry { spacing: [4.0, 0.85, 1.07], origin: [10.0, -20.0, 5.0], direction: identity });
        let lps_flip = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0];
        round_trip(Geometry { spacing: [3.0, 1.0, 1.0], origin: [0.0; 3], direction: lps_flip });
        let reflected = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0];
        round_trip(Geometry { spacing: [1.0, 2.0, 3.0], origin: [1.0, 2.0, 3.0], direction: reflected });
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let rotated = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        round_trip(Geometry { spacing: [2.5, 0.7, 0.7], origin: [-3.0, 4.0, 9.5], direction: rotated });
    }

    #[test]
    fn itk_rules_for_pixdim_units_and_conflicting_transforms() {
        let mut header = Geometry {
            spacing: [3.0, 2.0, 1.0],
            origin: [1.0, 2.0, 3.0],
            direction: [-1., 0., 0., 0., -1., 0., 0., 0., 1.],
        }
        .to_header();
        // a negative pixdim keeps its magnitude as spacing and flips its direction column
        header.pixdim[2] = -2.0;
        let g = Geometry::from_header(&header).unwrap();
        assert_eq!(g.spacing, [3.0, 2.0, 1.0]);
        assert_eq!(g.direction[4], 1.0);
        // metres become millimetres, origin included
        header.pixdim[2] = 2.0;
        header.xyzt_units = 1;
        let g = Geometry::from_header(&header).unwrap();
        assert_eq!(g.spacing, [3000.0, 2000.0, 1000.0]);
        assert_eq!(g.origin, [1000.0, 2000.0, 3000.0]);
        header.xyzt_units = 2;
        // an aligned (code 2) sform that disagrees with the qform loses to it; a scanner one wins
        header.sform_code = 2;
        header.srow_x[3] += 10.0;
        assert_eq!(Geometry::from_header(&header).unwrap().origin, [1.0, 2.0, 3.0]);
        header.sform_code = 1;
        assert_eq!(Geometry::from_header(&header).unwrap().origin, [-9.0, 2.0, 3.0]);
        // neither transform set: identity at the origin, spacing from pixdim (0 read as 1)
        header.sform_code = 0;
        header.qform_code = 0;
        header.pixdim[1] = 0.0;
        let g = Geometry::from_header(&header).unwrap();
        assert_eq!((g.origin, g.spacing), ([0.0; 3], [3.0, 2.0, 1.0]));
        assert_eq!(g.direction, [1., 0., 0., 0., 1., 0., 0., 0., 1.]);
    }

    #[test]
    fn itk_reads_ras_header_as_lps() {
        // hippocampus_001 of Dataset104: qform = sform = diag(1.0715, 0.8557, 4) at (-10, 20, 5) RAS;
        // nnU-Net's reference properties record SimpleITK's view of it.
        let mut header = NiftiHeader { qform_code: 1, sform_code: 1, ..NiftiHeader::default() };
        header.pixdim = [1.0, 1.071_528_1, 0.855_663_8, 4.0, 1.0, 1.0, 1.0, 1.0];
        header.srow_x = [1.071_528_1, 0.0, 0.0, -10.0];
        header.srow_y = [0.0, 0.855_663_8, 0.0, 20.0];
        header.srow_z = [0.0, 0.0, 4.0, 5.0];
        let g = Geometry::from_header(&header).unwrap();
        assert_eq!(g.origin, [10.0, -20.0, 5.0]);
        assert_eq!(g.direction, [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(g.spacing, [4.0, 0.8556637763977051, 1.0715280771255493]);
    }
}
