//! The preprocessing window: the open model's preset (size, resize and crop, resampling
//! filter, scale, mean and std, channel order, layout) edited as a draft, applied to the photos
//! (re-prepared and re-classified on the workspace's worker), and saved beside an ONNX file as
//! its `.preset.ron` sidecar, which every later run (window and CLI) reads.

use super::widgets::choice_combo;
use super::workspace::{ModelSpec, Workspace};
use crate::models::description::{Channels, Filter, Layout, Preprocess, Resize};
use crate::models::labels::ModelPreset;

/// The resize choices, without their numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResizeKind {
    Squash,
    ShorterSideCrop,
    ShorterSideTo,
}

impl ResizeKind {
    const ALL: [ResizeKind; 3] = [
        ResizeKind::Squash,
        ResizeKind::ShorterSideCrop,
        ResizeKind::ShorterSideTo,
    ];

    fn of(r: Resize) -> Self {
        match r {
            Resize::Squash => Self::Squash,
            Resize::ShorterSideCrop => Self::ShorterSideCrop,
            Resize::ShorterSideTo { .. } => Self::ShorterSideTo,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Squash => "squash to the size",
            Self::ShorterSideCrop => "shorter side ×256/224, centre crop",
            Self::ShorterSideTo => "shorter side to …, centre crop",
        }
    }
}

#[derive(Default)]
pub struct PresetWindow {
    pub open: bool,
    /// The preset being edited.
    draft: Option<Preprocess>,
    /// The model's preset when the draft was taken: when the model's changes (another model,
    /// or the draft applied), the draft starts again from it.
    taken: Option<Preprocess>,
    /// What the last action did (shown under the buttons).
    pub status: Option<String>,
}

impl PresetWindow {
    /// Draws the window when open; errors go to the app's message list.
    pub fn show(&mut self, ctx: &egui::Context, ws: &mut Workspace, errors: &mut Vec<String>) {
        if !self.open {
            return;
        }
        let Some(model) = &ws.model else {
            return;
        };
        let current = model.model.description.preprocess.clone();
        let sidecar_target = match &model.spec {
            Some(ModelSpec::Path(p))
                if p.extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case("onnx")) =>
            {
                Some(p.clone())
            }
            _ => None,
        };
        let labels = model.model.description.labels.clone();
        if self.taken.as_ref() != Some(&current) {
            self.draft = Some(current.clone());
            self.taken = Some(current.clone());
        }
        let mut open = self.open;
        let mut apply = false;
        let mut save = false;
        egui::Window::new("Preprocessing")
            .open(&mut open)
            .resizable(false)
            // over the empty corner under the heat map, not the controls
            .default_pos([960.0, 640.0])
            .show(ctx, |ui| {
                let Some(d) = self.draft.as_mut() else {
                    return;
                };
                edit(ui, d);
                ui.separator();
                ui.horizontal(|ui| {
                    let changed = *d != current;
                    apply = ui
                        .add_enabled(changed && !ws.is_busy(), egui::Button::new("Apply to the photos"))
                        .clicked();
                    if ui.add_enabled(changed, egui::Button::new("Reset")).clicked() {
                        *d = current.clone();
                    }
                    save = ui
                        .add_enabled(
                            sidecar_target.is_some(),
                            egui::Button::new("Save beside the model"),
                        )
                        .on_disabled_hover_text(
                            "only an .onnx file has a sidecar; checkpoints keep their preset in model.ron",
                        )
                        .clicked();
                });
                if let Some(s) = &self.status {
                    ui.label(s);
                }
            });
        self.open = open;
        let Some(draft) = self.draft.clone() else {
            return;
        };
        if apply {
            match ws.set_preprocess(ctx, draft.clone()) {
                Ok(()) => self.status = Some("applied: the photos are prepared again".into()),
                Err(e) => errors.push(e),
            }
        }
        if save && let Some(path) = sidecar_target {
            let preset = ModelPreset {
                preprocess: draft,
                labels,
            };
            match crate::models::preprocess::validate(&preset.preprocess)
                .and_then(|()| preset.write_sidecar(&path))
            {
                Ok(file) => self.status = Some(format!("saved to {}", file.display())),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
}

/// The fields of a preset.
fn edit(ui: &mut egui::Ui, p: &mut Preprocess) {
    ui.horizontal(|ui| {
        ui.label("input size (h × w)");
        ui.add(egui::DragValue::new(&mut p.size[0]).range(1..=4096));
        ui.label("×");
        ui.add(egui::DragValue::new(&mut p.size[1]).range(1..=4096));
    });
    ui.horizontal(|ui| {
        let mut kind = ResizeKind::of(p.resize);
        choice_combo(ui, "resize", &mut kind, &ResizeKind::ALL, ResizeKind::label);
        let short = match p.resize {
            Resize::ShorterSideTo { shorter } => shorter,
            _ => (p.size[0].max(p.size[1]) * 256).div_ceil(224),
        };
        p.resize = match kind {
            ResizeKind::Squash => Resize::Squash,
            ResizeKind::ShorterSideCrop => Resize::ShorterSideCrop,
            ResizeKind::ShorterSideTo => {
                let mut shorter = short;
                ui.add(
                    egui::DragValue::new(&mut shorter)
                        .range(1..=8192)
                        .suffix(" px"),
                );
                Resize::ShorterSideTo { shorter }
            }
        };
    });
    choice_combo(
        ui,
        "filter",
        &mut p.filter,
        &[Filter::Bilinear, Filter::Bicubic],
        |f| match f {
            Filter::Bilinear => "bilinear (PIL)",
            Filter::Bicubic => "bicubic (PIL)",
        },
    );
    ui.horizontal(|ui| {
        ui.label("scale (pixel × scale)");
        ui.add(
            egui::DragValue::new(&mut p.scale)
                .speed(0.0001)
                .max_decimals(6),
        );
    });
    for (label, values) in [("mean", &mut p.mean), ("std", &mut p.std)] {
        ui.horizontal(|ui| {
            ui.label(label);
            for v in values.iter_mut() {
                ui.add(egui::DragValue::new(v).speed(0.001).max_decimals(4));
            }
        });
    }
    choice_combo(
        ui,
        "channels",
        &mut p.channels,
        &[Channels::Rgb, Channels::Bgr, Channels::Gray],
        |c| match c {
            Channels::Rgb => "RGB",
            Channels::Bgr => "BGR",
            Channels::Gray => "gray",
        },
    );
    choice_combo(
        ui,
        "layout",
        &mut p.layout,
        &[Layout::Nchw, Layout::Nhwc],
        |l| match l {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC (Keras)",
        },
    );
}
