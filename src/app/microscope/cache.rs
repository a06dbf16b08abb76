//! What the units view has computed, kept in memory so that revisiting a layer or a page is
//! instant: visualisations per (layer, steps, size) and scans per (layer, folder), each by
//! channel. The model is part of every key: the whole cache follows one model and is emptied
//! when another opens. Pictures become textures only when first drawn, so a cached page that
//! is never looked at again costs no texture memory.

use std::collections::HashMap;
use std::sync::Arc;

use image::RgbaImage;

use super::work::{ScanDone, ScanRequest, VisPicture, VisRequest};
use crate::app::texture::Picture;
use crate::explain::microscope::UnitScan;
use crate::models::Model;

/// A picture and, once drawn, its texture.
pub struct Thumb {
    image: RgbaImage,
    pic: Picture,
}

impl Thumb {
    pub fn new(image: RgbaImage) -> Self {
        Self {
            image,
            pic: Picture::default(),
        }
    }

    /// Shows the picture within `max`, uploading it the first time.
    pub fn show(&mut self, ui: &mut egui::Ui, name: &str, max: egui::Vec2) -> egui::Response {
        if !self.pic.is_set() {
            self.pic.set(ui.ctx(), name, &self.image, false);
        }
        match self.pic.show(ui, max) {
            Some(r) => r,
            None => ui.allocate_response(max, egui::Sense::click()),
        }
    }
}

/// One unit's visualisation.
pub struct VisEntry {
    pub thumb: Thumb,
    /// The channel's spatial mean on its own visualisation.
    pub activation: f32,
    /// Which of the unit's faces (0 in the grid).
    pub variant: usize,
}

/// One unit's scan: the hits, their patches (beside `unit.top`) and the histogram.
pub struct ScanEntry {
    pub unit: UnitScan,
    pub patches: Vec<Option<Thumb>>,
}

/// What the cache holds for one unit.
pub struct UnitResults<'a> {
    pub vis: Option<&'a mut VisEntry>,
    /// Its faces, in order (empty until asked for).
    pub faces: &'a mut [VisEntry],
    /// Its scan and the number of images it read.
    pub scan: Option<(&'a mut ScanEntry, usize)>,
}

/// The scans of one folder for one layer.
#[derive(Default)]
pub struct ScanSet {
    pub units: HashMap<usize, ScanEntry>,
    /// Images read by the last scan.
    pub images: usize,
    /// `(file, reason)` of the images the last scan skipped.
    pub skipped: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Cache {
    /// The model the entries belong to (held so its address cannot be reused by another).
    model: Option<Arc<Model>>,
    vis: HashMap<VisRequest, HashMap<usize, VisEntry>>,
    /// A unit's faces (requests with more than one image per unit), in variant order.
    faces: HashMap<VisRequest, HashMap<usize, Vec<VisEntry>>>,
    scans: HashMap<ScanRequest, ScanSet>,
}

impl Cache {
    /// Whether the cache was filled for `model`.
    pub fn model_is(&self, model: &Arc<Model>) -> bool {
        self.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, model))
    }

    /// Empties the cache when `model` is not the one it was filled for.
    pub fn follow(&mut self, model: &Arc<Model>) {
        if !self.model_is(model) {
            *self = Cache {
                model: Some(model.clone()),
                ..Cache::default()
            };
        }
    }

    pub fn add_vis(&mut self, req: &VisRequest, images: Vec<VisPicture>) {
        for p in images {
            let entry = VisEntry {
                thumb: Thumb::new(p.image),
                activation: p.activation,
                variant: p.variant,
            };
            if req.faces > 1 {
                let faces = self.faces.entry(req.clone()).or_default();
                let faces = faces.entry(p.channel).or_default();
                faces.push(entry);
                faces.sort_by_key(|f| f.variant);
            } else {
                self.vis
                    .entry(req.clone())
                    .or_default()
                    .insert(p.channel, entry);
            }
        }
    }

    /// How many faces of `channel` are held for `req`.
    pub fn face_count(&self, req: &VisRequest, channel: usize) -> usize {
        self.faces
            .get(req)
            .and_then(|f| f.get(&channel))
            .map_or(0, Vec::len)
    }

    pub fn add_scan(&mut self, req: &ScanRequest, done: ScanDone) {
        let set = self.scans.entry(req.clone()).or_default();
        set.images = done.images;
        set.skipped = done.skipped;
        for (unit, patches) in done.units {
            let patches = patches.into_iter().map(|p| p.map(Thumb::new)).collect();
            set.units.insert(unit.channel, ScanEntry { unit, patches });
        }
    }

    pub fn vis(&self, req: &VisRequest) -> Option<&HashMap<usize, VisEntry>> {
        self.vis.get(req)
    }

    pub fn vis_mut(&mut self, req: &VisRequest) -> Option<&mut HashMap<usize, VisEntry>> {
        self.vis.get_mut(req)
    }

    pub fn scan(&self, req: &ScanRequest) -> Option<&ScanSet> {
        self.scans.get(req)
    }

    pub fn scan_mut(&mut self, req: &ScanRequest) -> Option<&mut ScanSet> {
        self.scans.get_mut(req)
    }

    /// One unit's visualisation, faces and scan (with the number of images scanned), as far
    /// as held.
    pub fn unit_mut(
        &mut self,
        vis: &VisRequest,
        faces: &VisRequest,
        scan: &ScanRequest,
        channel: usize,
    ) -> UnitResults<'_> {
        UnitResults {
            vis: self.vis.get_mut(vis).and_then(|v| v.get_mut(&channel)),
            faces: self
                .faces
                .get_mut(faces)
                .and_then(|f| f.get_mut(&channel))
                .map_or(&mut [][..], |f| f.as_mut_slice()),
            scan: self.scans.get_mut(scan).and_then(|s| {
                let images = s.images;
                s.units.get_mut(&channel).map(|u| (u, images))
            }),
        }
    }

    /// Channels among `channels` that have no visualisation for `req` yet.
    pub fn missing_vis(&self, req: &VisRequest, channels: &[usize]) -> Vec<usize> {
        let have = self.vis.get(req);
        channels
            .iter()
            .copied()
            .filter(|c| !have.is_some_and(|h| h.contains_key(c)))
            .collect()
    }

    /// Channels among `channels` that have no scan for `req` yet.
    pub fn missing_scan(&self, req: &ScanRequest, channels: &[usize]) -> Vec<usize> {
        let have = self.scans.get(req);
        channels
            .iter()
            .copied()
            .filter(|c| !have.is_some_and(|h| h.units.contains_key(c)))
            .collect()
    }
}
