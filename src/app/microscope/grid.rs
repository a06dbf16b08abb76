//! The units view's drawing: page buttons, the two jobs' controls with their progress, the
//! folder's summary (images read and skipped), and the grid of cells — a unit's number, its
//! visualisation and its best patch. A click on a cell opens the unit page.

use std::sync::Arc;

use super::buttons::JobButtons;
use super::unit_page::PhotoMaps;
use super::{PAGE, UnitsSettings, UnitsView};
use crate::app::widgets;
use crate::app::workspace::Workspace;

/// Side of a cell's pictures in points.
const CELL: f32 = 76.0;

/// An empty square where a picture will be.
fn placeholder(ui: &mut egui::Ui, hover: &str) -> egui::Response {
    let (rect, resp) = ui.allocate_exact_size(egui::vec2(CELL, CELL), egui::Sense::click());
    ui.painter()
        .rect_filled(rect, 2.0, ui.visuals().faint_bg_color);
    resp.on_hover_text(hover)
}

impl UnitsView {
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        ws: &Workspace,
        settings: &mut UnitsSettings,
        maps: &PhotoMaps<'_>,
    ) {
        let Some(model) = ws.model.as_ref().map(|m| m.model.clone()) else {
            return;
        };
        let (name, units) = match &self.layer {
            Some((name, Ok(units))) => (name.clone(), units.clone()),
            Some((_, Err(e))) => {
                ui.label(e.as_str());
                return;
            }
            None => return,
        };
        ui.label(format!(
            "{} units ({})",
            units.channels,
            if units.is_dense() {
                "outputs of a dense layer: patches are whole images"
            } else {
                "channels"
            }
        ));
        if units.channels > PAGE {
            ui.horizontal_wrapped(|ui| {
                ui.label("Page:");
                for p in 0..units.channels.div_ceil(PAGE) {
                    let last = ((p + 1) * PAGE).min(units.channels) - 1;
                    let text = format!("{}–{last}", p * PAGE);
                    if ui.selectable_label(self.page == p, text).clicked() {
                        self.page = p;
                    }
                }
            });
        }
        self.controls(ui, &model, settings);
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e.as_str());
        }
        let scan_req = settings.scan_request(&name);
        if let Some(set) = self.cache.scan(&scan_req) {
            ui.horizontal(|ui| {
                ui.weak(format!(
                    "{} images read from {}",
                    set.images,
                    scan_req.source_name()
                ));
                let n = set.skipped.len();
                if n > 0 {
                    let list: Vec<String> = set
                        .skipped
                        .iter()
                        .map(|(file, why)| format!("{file}: {why}"))
                        .collect();
                    let s = if n == 1 { "" } else { "s" };
                    ui.label(format!("{n} image{s} skipped"))
                        .on_hover_text(list.join("\n"));
                }
            });
        }
        ui.separator();
        let clicked = self.cells(ui, settings, &name);
        if let Some(k) = clicked {
            self.show_unit(k);
        }
        let shown = self.unit.as_mut().map(|page| {
            let k = page.channel;
            let held = self.cache.unit_mut(
                &settings.vis_request(&name),
                &settings.faces_request(&name),
                &scan_req,
                k,
            );
            let faces_job = self.faces_job.as_ref().filter(|run| run.req.1 == k);
            let source = scan_req.source_name();
            (
                k,
                page.show(ui.ctx(), &name, held, faces_job, &source, maps),
            )
        });
        if let Some((k, shown)) = shown {
            if shown.want_faces {
                self.start_faces(ui.ctx(), &model, settings, k);
            }
            if !shown.open {
                self.unit = None;
            }
        }
    }

    /// "Visualise this page" and "Find top patches", each with its progress and a stop button.
    fn controls(
        &mut self,
        ui: &mut egui::Ui,
        model: &Arc<crate::models::Model>,
        settings: &mut UnitsSettings,
    ) {
        ui.horizontal(|ui| {
            let l = ui.label("steps");
            ui.add(egui::DragValue::new(&mut settings.steps).range(1..=4096))
                .labelled_by(l.id);
            let l = ui.label("size");
            ui.add(egui::DragValue::new(&mut settings.size).range(32..=512))
                .labelled_by(l.id);
            let action = JobButtons {
                start: "Visualise this page",
                hover: "optimise an image per unit of this page that excites it",
                counting: "steps",
                stop: "Stop visualising",
            };
            if action.show(ui, self.vis_job.as_ref()) {
                self.start_vis(ui.ctx(), model, settings);
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Folder:");
            ui.add(
                egui::TextEdit::singleline(&mut settings.folder)
                    .desired_width(260.0)
                    .hint_text("empty: the bundled photos"),
            )
            .labelled_by(l.id);
            if ui
                .button("Browse…")
                .on_hover_text("pick a folder (type its path when no dialog opens)")
                .clicked()
                && let Some(dir) = widgets::pick_folder()
            {
                settings.folder = dir.display().to_string();
            }
            let action = JobButtons {
                start: "Find top patches",
                hover: "the images of the folder that excite each unit of this page most",
                counting: "images",
                stop: "Stop searching",
            };
            if action.show(ui, self.scan_job.as_ref()) {
                self.start_scan(ui.ctx(), model, settings);
            }
        });
    }

    /// The page's cells; returns the unit clicked.
    fn cells(&mut self, ui: &mut egui::Ui, settings: &UnitsSettings, name: &str) -> Option<usize> {
        let channels = self.page_channels();
        let vis_req = settings.vis_request(name);
        let scan_req = settings.scan_request(name);
        let spacing = 10.0;
        let cols = ((ui.available_width() + spacing) / (2.0 * CELL + 4.0 + spacing))
            .floor()
            .max(1.0) as usize;
        let mut clicked = None;
        egui::Grid::new("units-grid")
            .spacing([spacing, spacing])
            .show(ui, |ui| {
                for (i, &k) in channels.iter().enumerate() {
                    ui.vertical(|ui| {
                        if ui.small_button(format!("unit {k}")).clicked() {
                            clicked = Some(k);
                        }
                        ui.horizontal(|ui| {
                            ui.spacing_mut().item_spacing.x = 4.0;
                            let vis = self.cache.vis_mut(&vis_req).and_then(|v| v.get_mut(&k));
                            let resp = match vis {
                                Some(v) => v
                                    .thumb
                                    .show(ui, "unit-vis", egui::vec2(CELL, CELL))
                                    .on_hover_text(format!(
                                        "unit {k}'s visualisation: activation {:.3}",
                                        v.activation
                                    )),
                                None => placeholder(ui, "not visualised yet"),
                            };
                            if resp.clicked() {
                                clicked = Some(k);
                            }
                            let best = self
                                .cache
                                .scan_mut(&scan_req)
                                .and_then(|s| s.units.get_mut(&k))
                                .and_then(|u| {
                                    let score = u.unit.top.first().map(|h| h.score);
                                    u.patches.first_mut()?.as_mut().map(|p| (p, score))
                                });
                            let resp = match best {
                                Some((p, score)) => p
                                    .show(ui, "unit-patch", egui::vec2(CELL, CELL))
                                    .on_hover_text(format!(
                                        "unit {k}'s best patch: peak {:.3}",
                                        score.unwrap_or(0.0)
                                    )),
                                None => placeholder(ui, "no patches yet"),
                            };
                            if resp.clicked() {
                                clicked = Some(k);
                            }
                        });
                    });
                    if (i + 1) % cols == 0 {
                        ui.end_row();
                    }
                }
            });
        clicked
    }
}
