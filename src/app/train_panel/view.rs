//! The panel's central view: status and progress, the loss and accuracy curves, the timeline
//! of first-layer filters and the probe's Grad-CAM, and the final results with a confusion
//! matrix whose cells open the misclassified images.

use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::TrainPanel;
use crate::app::photo::unit_tensor_to_rgba;
use crate::app::texture::Picture;
use crate::app::widgets;

impl TrainPanel {
    fn show_snapshot(&mut self, ctx: &egui::Context) {
        let want = self.scrub.or(self.snapshots.len().checked_sub(1));
        if want == self.shown {
            return;
        }
        self.shown = want;
        if let Some(s) = want.and_then(|i| self.snapshots.get(i)) {
            if let Some(f) = &s.filters {
                self.filters_pic.set(ctx, "train-filters", f, true);
            }
            if let Some(c) = &s.cam {
                self.cam_pic.set(ctx, "train-cam", c, true);
            }
        }
    }

    pub(super) fn view(&mut self, ui: &mut egui::Ui) {
        self.show_snapshot(ui.ctx());
        ui.horizontal(|ui| {
            if self.job.is_some() {
                widgets::busy(ui);
            }
            ui.label(&self.status);
        });
        if let Some((epoch, batch, batches, ips)) = self.progress {
            ui.add(
                egui::ProgressBar::new(batch as f32 / batches.max(1) as f32)
                    .text(format!(
                        "epoch {epoch}, batch {batch}/{batches}, {ips:.0} images/s"
                    ))
                    .desired_width(420.0),
            );
        }
        if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        if self.curves.batch_loss.is_empty() && self.snapshots.is_empty() {
            ui.label("Press Start to train the smile CNN on the built-in faces: the curves, filters and the probe's Grad-CAM appear here as it learns.");
        }
        let width = ui.available_width();
        ui.horizontal(|ui| {
            let w = (width / 2.0 - 12.0).max(200.0);
            ui.vertical(|ui| {
                ui.set_width(w);
                ui.label("Loss");
                let c = &self.curves;
                Plot::new("loss")
                    .height(200.0)
                    .legend(Legend::default())
                    .x_axis_label("epoch")
                    .show(ui, |p| {
                        p.line(Line::new(
                            "train (batch)",
                            PlotPoints::from(c.batch_loss.clone()),
                        ));
                        let tr: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .map(|e| [e.epoch as f64, f64::from(e.train_loss)])
                            .collect();
                        p.line(Line::new("train (epoch)", PlotPoints::from(tr)).width(2.5));
                        let va: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .filter_map(|e| e.val_loss.map(|v| [e.epoch as f64, f64::from(v)]))
                            .collect();
                        p.line(Line::new("validation (epoch)", PlotPoints::from(va)).width(2.5));
                    });
            });
            ui.vertical(|ui| {
                ui.set_width(w);
                ui.label("Accuracy");
                let c = &self.curves;
                Plot::new("accuracy")
                    .height(200.0)
                    .legend(Legend::default())
                    .x_axis_label("epoch")
                    .include_y(0.0)
                    .include_y(1.0)
                    .show(ui, |p| {
                        p.line(Line::new(
                            "train (batch)",
                            PlotPoints::from(c.batch_acc.clone()),
                        ));
                        let tr: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .map(|e| [e.epoch as f64, e.train_acc])
                            .collect();
                        p.line(Line::new("train (epoch)", PlotPoints::from(tr)).width(2.5));
                        let va: Vec<[f64; 2]> = c
                            .epochs
                            .iter()
                            .filter_map(|e| e.val_acc.map(|v| [e.epoch as f64, v]))
                            .collect();
                        p.line(Line::new("validation (epoch)", PlotPoints::from(va)).width(2.5));
                    });
            });
        });
        if !self.snapshots.is_empty() {
            ui.separator();
            let n = self.snapshots.len();
            let mut pos = self.scrub.unwrap_or(n - 1);
            ui.horizontal(|ui| {
                ui.label("Timeline");
                let resp = ui.add(egui::Slider::new(&mut pos, 0..=n - 1).show_value(false));
                if resp.changed() {
                    self.scrub = if pos + 1 >= n { None } else { Some(pos) };
                }
                if let Some(s) = self.snapshots.get(pos) {
                    ui.label(format!("epoch {}, batch {}", s.epoch, s.batch));
                }
                if self.scrub.is_some() && ui.button("Live").clicked() {
                    self.scrub = None;
                }
            });
            self.show_snapshot(ui.ctx());
            ui.horizontal(|ui| {
                ui.vertical(|ui| {
                    ui.label("First-layer filters");
                    self.filters_pic.show(ui, egui::vec2(360.0, 200.0));
                });
                ui.vertical(|ui| {
                    ui.label("Probe image");
                    self.probe_pic.show(ui, egui::vec2(160.0, 160.0));
                });
                ui.vertical(|ui| {
                    ui.label("Its Grad-CAM (top class)");
                    self.cam_pic.show(ui, egui::vec2(160.0, 160.0));
                });
            });
        }
        self.results(ui);
    }

    fn results(&mut self, ui: &mut egui::Ui) {
        let Some(fin) = &self.finished else {
            return;
        };
        ui.separator();
        if let Some(m) = fin.summary.as_ref().and_then(|s| s.test.as_ref()) {
            ui.heading(format!(
                "Test accuracy {:.3} · macro precision {:.3} · recall {:.3} · F1 {:.3}{}",
                m.accuracy,
                m.macro_precision,
                m.macro_recall,
                m.macro_f1,
                m.auc
                    .map_or(String::new(), |a| format!(" · ROC AUC {a:.3}"))
            ));
            ui.label("Confusion matrix (rows: truth, columns: prediction). Click a cell to see its images.");
            let mut clicked = None;
            egui::Grid::new("confusion").striped(true).show(ui, |ui| {
                ui.label("");
                for name in &self.classes {
                    ui.label(name);
                }
                ui.end_row();
                for (t, row) in m.confusion.iter().enumerate() {
                    ui.label(self.classes.get(t).map_or("?", String::as_str));
                    for (p, &count) in row.iter().enumerate() {
                        let text = egui::RichText::new(count.to_string()).strong();
                        let sel = self.cell == Some((t, p));
                        if ui.selectable_label(sel, text).clicked() {
                            clicked = Some((t, p));
                        }
                    }
                    ui.end_row();
                }
            });
            if let Some(cell) = clicked {
                self.open_cell(ui.ctx(), cell);
            }
        }
        if let Some((t, p)) = self.cell {
            let name = |i: usize| {
                self.classes
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("class {i}"))
            };
            ui.label(format!(
                "truth “{}”, predicted “{}”: {} shown",
                name(t),
                name(p),
                self.cell_pics.len()
            ));
            ui.horizontal_wrapped(|ui| {
                for (pic, caption) in &self.cell_pics {
                    ui.vertical(|ui| {
                        pic.show(ui, egui::vec2(96.0, 96.0));
                        ui.weak(caption);
                    });
                }
            });
        }
        let has_model = self.finished.as_ref().is_some_and(|f| f.model.is_some());
        if has_model
            && ui
                .button("Explain this model")
                .on_hover_text("Open the trained model in the explain panel")
                .clicked()
            && let Some(f) = &mut self.finished
        {
            self.send_to_explain = f.model.clone();
        }
    }

    /// Loads up to 24 images of a confusion cell (misclassified ones from the metrics; for a
    /// diagonal cell, correctly classified test images are not listed by the metrics).
    fn open_cell(&mut self, ctx: &egui::Context, cell: (usize, usize)) {
        self.cell = Some(cell);
        self.cell_pics.clear();
        let (Some(fin), Some(data)) = (&self.finished, &self.data) else {
            return;
        };
        let (Some(m), Some(test)) = (
            fin.summary.as_ref().and_then(|s| s.test.as_ref()),
            data.test.as_ref(),
        ) else {
            return;
        };
        for mc in m
            .misclassified
            .iter()
            .filter(|x| (x.truth, x.predicted) == cell)
            .take(24)
        {
            if let Some(img) = test
                .load_raw(mc.index)
                .ok()
                .and_then(|t| unit_tensor_to_rgba(&t))
            {
                let mut pic = Picture::default();
                pic.set(ctx, &format!("cell-{}", mc.index), &img, true);
                self.cell_pics
                    .push((pic, format!("#{} ({:.0} %)", mc.index, 100.0 * mc.score)));
            }
        }
    }
}
