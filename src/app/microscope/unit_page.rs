//! The unit page: one unit large — its visualisation, its nine best patches with their scores
//! (hover names the file), the histogram of its per-image peaks over the folder, whether its
//! visualisation excites it more than any folder image does (the verdict `convscope
//! microscope` prints), and the current photo's activation map for its channel (the map the
//! Layers panel already computed for the photo), and on request several faces of the unit
//! (images pushed apart by the diversity term).

use super::Running;
use super::buttons::JobButtons;
use super::cache::{ScanEntry, UnitResults, VisEntry};
use super::work::{FACES, VisRequest};
use crate::app::texture::Picture;
use crate::explain::Map;
use crate::render::colormap::Colormap;
use crate::render::heatmap::map_to_image;

/// The current photo's channel maps as the Layers panel computed them: channel `first + i` is
/// `maps[i]`; `serial` changes whenever they are recomputed.
pub struct PhotoMaps<'a> {
    pub photo: &'a str,
    pub first: usize,
    pub maps: &'a [Map],
    pub serial: u64,
    pub colormap: Colormap,
    /// The layer has no maps over the photo (a dense layer).
    pub dense: bool,
}

/// What the person did on the page this frame.
pub struct PageResponse {
    /// False once the page was closed.
    pub open: bool,
    /// "Show faces" was pressed.
    pub want_faces: bool,
}

pub struct UnitPage {
    pub channel: usize,
    map_pic: Picture,
    /// `(serial, colormap)` the map picture was drawn for.
    map_key: Option<(u64, Colormap)>,
}

impl UnitPage {
    pub fn new(channel: usize) -> Self {
        Self {
            channel,
            map_pic: Picture::default(),
            map_key: None,
        }
    }

    /// Draws the page as a window; `faces_job` is the job making this unit's faces, if any.
    pub fn show(
        &mut self,
        ctx: &egui::Context,
        layer: &str,
        held: UnitResults<'_>,
        faces_job: Option<&Running<(VisRequest, usize)>>,
        source: &str,
        maps: &PhotoMaps<'_>,
    ) -> PageResponse {
        let k = self.channel;
        let UnitResults { vis, faces, scan } = held;
        let mut open = true;
        let mut want_faces = false;
        egui::Window::new(format!("Unit {k} — {layer}"))
            .id(egui::Id::unique("convscope-unit-page"))
            .open(&mut open)
            // tall enough for the pictures, the patches, the histogram and the verdict at once
            .default_size([660.0, 690.0])
            // at the right, below the units view's controls, so they stay in reach
            .default_pos(egui::pos2(ctx.content_rect().right() - 680.0, 180.0))
            .show(ctx, |ui| {
                egui::ScrollArea::vertical()
                    .auto_shrink([false, false])
                    .show(ui, |ui| {
                        let activation = vis.as_ref().map(|v| v.activation);
                        ui.horizontal_top(|ui| {
                            ui.vertical(|ui| {
                                ui.strong("Feature visualisation");
                                match vis {
                                    Some(v) => {
                                        v.thumb.show(ui, "unit-page-vis", egui::vec2(220.0, 220.0));
                                        ui.label(format!("activation {:.3}", v.activation))
                                            .on_hover_text(
                                                "the channel's spatial mean on this image",
                                            );
                                    }
                                    None => {
                                        ui.weak("not visualised yet (“Visualise this page”)");
                                    }
                                }
                            });
                            ui.vertical(|ui| {
                                ui.strong(format!("Channel {k} on {}", maps.photo));
                                self.photo_map(ui, maps);
                            });
                        });
                        ui.separator();
                        want_faces = show_faces(ui, k, faces, faces_job);
                        ui.separator();
                        match scan {
                            Some((entry, images)) => {
                                patches(ui, k, entry, images, source, activation)
                            }
                            None => {
                                ui.weak("no patches yet (“Find top patches”)");
                            }
                        }
                    });
            });
        PageResponse { open, want_faces }
    }

    /// The photo's map of this channel, in the Layers panel's colours.
    fn photo_map(&mut self, ui: &mut egui::Ui, maps: &PhotoMaps<'_>) {
        if maps.dense {
            ui.weak("a dense layer: one value per photo, no map");
            return;
        }
        let map = self
            .channel
            .checked_sub(maps.first)
            .and_then(|i| maps.maps.get(i));
        let Some(map) = map else {
            ui.weak("computing the photo's activations…");
            return;
        };
        let key = (maps.serial, maps.colormap);
        if self.map_key != Some(key) {
            self.map_pic.set(
                ui.ctx(),
                "unit-page-map",
                &map_to_image(map, maps.colormap),
                true,
            );
            self.map_key = Some(key);
        }
        self.map_pic.show(ui, egui::vec2(220.0, 220.0));
    }
}

/// The unit's faces, or the button that makes them; true when it was pressed.
fn show_faces(
    ui: &mut egui::Ui,
    k: usize,
    faces: &mut [VisEntry],
    running: Option<&Running<(VisRequest, usize)>>,
) -> bool {
    if faces.is_empty() {
        let start = format!("Show {FACES} faces");
        let buttons = JobButtons {
            start: &start,
            hover: "optimise several images of this unit together, pushed apart by Lucid's \
                    diversity term, to see more than one thing it responds to",
            counting: "steps",
            stop: "Stop",
        };
        return ui.horizontal(|ui| buttons.show(ui, running)).inner;
    }
    ui.strong(format!("{} faces of unit {k}", faces.len()))
        .on_hover_text("optimised together, pushed apart by Lucid's diversity term");
    ui.horizontal_wrapped(|ui| {
        for (i, face) in faces.iter_mut().enumerate() {
            ui.vertical(|ui| {
                face.thumb
                    .show(ui, "unit-page-face", egui::vec2(120.0, 120.0));
                ui.label(format!("face {} · {:.3}", i + 1, face.activation))
                    .on_hover_text("the channel's spatial mean on this image");
            });
        }
    });
    false
}

/// The nine patches, the histogram and the verdict.
fn patches(
    ui: &mut egui::Ui,
    k: usize,
    entry: &mut ScanEntry,
    images: usize,
    source: &str,
    activation: Option<f32>,
) {
    ui.strong(format!("Top patches of unit {k} in {source}"));
    ui.horizontal_wrapped(|ui| {
        for (rank, (hit, patch)) in entry
            .unit
            .top
            .iter()
            .zip(entry.patches.iter_mut())
            .enumerate()
        {
            ui.vertical(|ui| {
                let file = hit.source.display();
                match patch {
                    Some(p) => {
                        p.show(ui, "unit-page-patch", egui::vec2(88.0, 88.0))
                            .on_hover_text(&file);
                    }
                    None => {
                        ui.weak("unreadable").on_hover_text(&file);
                    }
                }
                ui.label(format!("#{} · {:.3}", rank + 1, hit.score))
                    .on_hover_text(&file);
            });
        }
    });
    let bars: Vec<egui_plot::Bar> = entry
        .unit
        .histogram
        .bins()
        .into_iter()
        .map(|(lo, hi, n)| {
            egui_plot::Bar::new(f64::from(lo + hi) / 2.0, n as f64).width(f64::from(hi - lo))
        })
        .collect();
    ui.label(format!("Peak of unit {k} per image, over {images} images"));
    egui_plot::Plot::new("unit-histogram")
        .height(120.0)
        .allow_scroll(false)
        .show(ui, |p| {
            p.bar_chart(egui_plot::BarChart::new("images", bars));
        });
    let best_mean = entry.unit.max_mean;
    let best_peak = entry.unit.top.first().map_or(0.0, |h| h.score);
    let mut text = format!("folder: best mean {best_mean:.3}, best peak {best_peak:.3}");
    if let Some(a) = activation {
        let verdict = if a > best_mean {
            "above every folder image"
        } else {
            "not above the best folder image"
        };
        text.push_str(&format!(" · visualisation {a:.3}: {verdict}"));
    }
    ui.label(text).on_hover_text(
        "the spatial mean of the channel, the statistic the visualisation maximises",
    );
}
