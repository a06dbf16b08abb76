//! Colormaps: perceptually uniform ones from `colorous` (d3-scale-chromatic), the classic jet,
//! and a diverging red-blue one for signed maps (see [`super::signed_to_unit`]).

/// A colormap for values in [0, 1] (values outside are clamped, NaN is drawn as 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Colormap {
    #[default]
    Viridis,
    Inferno,
    Magma,
    Turbo,
    /// MATLAB's jet (piecewise linear), the usual Grad-CAM picture.
    Jet,
    Gray,
    /// Diverging: blue (0) - white (0.5) - red (1).
    BlueRed,
}

impl Colormap {
    pub const ALL: [Colormap; 7] = [
        Colormap::Viridis,
        Colormap::Inferno,
        Colormap::Magma,
        Colormap::Turbo,
        Colormap::Jet,
        Colormap::Gray,
        Colormap::BlueRed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Magma => "magma",
            Colormap::Turbo => "turbo",
            Colormap::Jet => "jet",
            Colormap::Gray => "gray",
            Colormap::BlueRed => "bluered",
        }
    }

    /// The colormap called `name` (case-insensitive), e.g. for `--colormap`.
    pub fn from_name(name: &str) -> Option<Colormap> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// RGB of a value in [0, 1].
    pub fn rgb(self, t: f32) -> [u8; 3] {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } as f64;
        let from = |c: colorous::Color| [c.r, c.g, c.b];
        match self {
            Colormap::Viridis => from(colorous::VIRIDIS.eval_continuous(t)),
            Colormap::Inferno => from(colorous::INFERNO.eval_continuous(t)),
            Colormap::Magma => from(colorous::MAGMA.eval_continuous(t)),
            Colormap::Turbo => from(colorous::TURBO.eval_continuous(t)),
            Colormap::BlueRed => from(colorous::RED_BLUE.eval_continuous(1.0 - t)),
            Colormap::Gray => {
                let v = (t * 255.0).round() as u8;
                [v, v, v]
            }
            Colormap::Jet => {
                let ch =
                    |x: f64| ((1.5 - (4.0 * t - x).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
                [ch(3.0), ch(2.0), ch(1.0)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ends() {
        for c in Colormap::ALL {
            assert_eq!(Colormap::from_name(c.name()), Some(c));
        }
        assert_eq!(Colormap::Jet.rgb(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.rgb(1.0), [128, 0, 0]);
        assert_eq!(Colormap::Gray.rgb(f32::NAN), [0, 0, 0]);
        let mid = Colormap::BlueRed.rgb(0.5);
        assert!(mid.iter().all(|&v| v > 230), "{mid:?}");
        assert!(Colormap::BlueRed.rgb(1.0)[0] > Colormap::BlueRed.rgb(1.0)[2]);
    }
}
