//! Small widgets the panels share: the class picker, a labelled path field, a progress line.

use super::workspace::LoadedModel;
use crate::explain::Target;

/// Shows the photo's top classes as buttons and a search over every label; returns true when
/// the choice changed.
pub fn class_picker(
    ui: &mut egui::Ui,
    model: &LoadedModel,
    top: &[(usize, f32)],
    choice: &mut Target,
    search: &mut String,
) -> bool {
    let before = *choice;
    ui.selectable_value(choice, Target::Top, "Top-1 class");
    for &(c, p) in top {
        let text = format!("{:>5.1} %  {}", 100.0 * p, model.label(c));
        ui.selectable_value(choice, Target::Class(c), text);
    }
    ui.horizontal(|ui| {
        let label = ui.label("Find class:");
        ui.add(egui::TextEdit::singleline(search).desired_width(140.0))
            .labelled_by(label.id);
    });
    let needle = search.trim().to_lowercase();
    if !needle.is_empty() {
        egui::ScrollArea::vertical()
            .id_salt("class-search")
            .max_height(140.0)
            .show(ui, |ui| {
                let mut shown = 0;
                for c in 0..model.classes() {
                    let label = model.label(c);
                    let hit = label.to_lowercase().contains(&needle) || c.to_string() == needle;
                    if hit {
                        ui.selectable_value(choice, Target::Class(c), format!("{c}: {label}"));
                        shown += 1;
                        if shown >= 50 {
                            ui.weak("… more: refine the search");
                            break;
                        }
                    }
                }
                if shown == 0 {
                    ui.weak("no class matches");
                }
            });
    }
    *choice != before
}

/// A drop-down over a closed set of choices, each shown by `name`.
pub fn choice_combo<T: Copy + PartialEq>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut T,
    choices: &[T],
    name: impl Fn(T) -> &'static str,
) {
    egui::ComboBox::from_label(label)
        .selected_text(name(*value))
        .show_ui(ui, |ui| {
            for &c in choices {
                ui.selectable_value(value, c, name(c));
            }
        });
}

/// A single-line path field with a label; returns the response of the text field.
pub fn path_field(ui: &mut egui::Ui, label: &str, value: &mut String) -> egui::Response {
    ui.horizontal(|ui| {
        let l = ui.label(label);
        ui.add(
            egui::TextEdit::singleline(value)
                .desired_width(260.0)
                .hint_text("/path/to/…"),
        )
        .labelled_by(l.id)
    })
    .inner
}

/// A progress bar for `done` of `total`.
pub fn progress(ui: &mut egui::Ui, what: &str, done: usize, total: usize) {
    let frac = if total == 0 {
        0.0
    } else {
        done as f32 / total as f32
    };
    ui.add(
        egui::ProgressBar::new(frac)
            .text(format!("{what} {done}/{total}"))
            .desired_width(220.0),
    );
}

/// A busy mark for a running job. It is drawn at the phase of the current frame's time and
/// never asks for a frame itself: it moves when the worker's news repaints the window (at most
/// 10 times a second, `jobs::Reporter`). egui's own spinner asks for a new frame every frame,
/// and under a software rasteriser those full-window repaints took a core from the engine.
pub fn busy(ui: &mut egui::Ui) -> egui::Response {
    let side = ui.spacing().interact_size.y;
    let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), egui::Sense::hover());
    if ui.is_rect_visible(rect) {
        let phase = (ui.input(|i| i.time) * 4.0) % std::f64::consts::TAU;
        let radius = rect.height() / 2.0 - 2.0;
        let points: Vec<egui::Pos2> = (0..=16)
            .map(|i| {
                let a = (phase + f64::from(i) / 16.0 * 1.5 * std::f64::consts::PI) as f32;
                rect.center() + radius * egui::vec2(a.cos(), a.sin())
            })
            .collect();
        let stroke = egui::Stroke::new(2.0, ui.visuals().strong_text_color());
        ui.painter().add(egui::Shape::line(points, stroke));
    }
    response
}

/// Shows a native file dialog when one is available (rfd returns None at once without a
/// desktop portal, in which case the path field is the way in).
pub fn pick_file(filters: &[(&str, &[&str])]) -> Option<std::path::PathBuf> {
    let mut dialog = rfd::FileDialog::new();
    for (name, exts) in filters {
        dialog = dialog.add_filter(*name, exts);
    }
    dialog.pick_file()
}

/// A native folder picker, when available.
pub fn pick_folder() -> Option<std::path::PathBuf> {
    rfd::FileDialog::new().pick_folder()
}
