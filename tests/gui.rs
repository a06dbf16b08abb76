//! The window, driven the way a person uses it (egui_kittest, headless): a dropped photo gets a
//! heat map; methods, layers and classes switch; training on the built-in faces grows the
//! curves and changes the filters; a moved dream slider changes the preview; a broken file
//! gives a message and the app keeps working.
//!
//! Every test starts from `AppSettings::default()` (no saved state is read), waits for the
//! workers with a generous deadline, and fails with what it was waiting for.

// the window exists only with the `gui` feature; egui_kittest is an x86_64-only dev-dependency
#![cfg(all(feature = "gui", target_arch = "x86_64"))]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use convscope::app::{AppSettings, ConvscopeApp, PanelKind};
use convscope::explain::method::Method;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn harness(settings: AppSettings) -> Harness<'static, ConvscopeApp> {
    Harness::builder()
        .with_size([1440.0, 920.0])
        .with_max_steps(10_000)
        .build_eframe(move |cc| ConvscopeApp::with_settings(&cc.egui_ctx, settings))
}

/// Steps the app until `done` holds (workers report over channels, so frames must run).
fn wait_for(
    h: &mut Harness<'static, ConvscopeApp>,
    what: &str,
    secs: u64,
    done: impl Fn(&ConvscopeApp) -> bool,
) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            h.step();
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs} s waiting for {what}; errors shown: {:?}",
            h.state().errors
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A file dropped from the desktop (what winit hands eframe).
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &std::path::Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_files(h: &mut Harness<'static, ConvscopeApp>, paths: &[PathBuf]) {
    for p in paths {
        h.input_mut()
            .dropped_files
            .push(std::sync::Arc::new(Dropped(p.clone())));
    }
    h.step();
}

fn explained_photo(app: &ConvscopeApp) -> Option<(usize, Method)> {
    let e = app.explain.explanation()?;
    (!app.explain.is_busy()).then_some((app.workspace.selected, e.method))
}

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets/images")
        .join(name)
}

#[test]
fn starts_with_the_bundled_model_and_an_explained_photo_then_explains_a_dropped_one() {
    let mut h = harness(AppSettings::default());
    wait_for(&mut h, "the bundled photo's Grad-CAM", 240, |a| {
        explained_photo(a) == Some((0, Method::GradCam))
    });
    let app = h.state();
    let model = app
        .workspace
        .model
        .as_ref()
        .expect("the bundled model is open");
    let top = &app.workspace.photos[0].top;
    let labels: Vec<String> = top.iter().map(|&(c, _)| model.label(c)).collect();
    assert!(
        labels.iter().any(|l| l.contains("cat")),
        "the sample cat's top-5 names a cat: {labels:?}"
    );
    // the Grad-CAM peaks inside the picture and is a real map in [0, 1]
    let e = app.explain.explanation().expect("a map");
    let (lo, hi) = e.map.min_max();
    assert!(
        lo >= 0.0 && (hi - 1.0).abs() < 1e-5,
        "map range [{lo}, {hi}]"
    );
    h.get_by_label_contains("Top-1 class");

    drop_files(&mut h, &[sample("coffee.png")]);
    wait_for(&mut h, "the dropped photo in the list", 240, |a| {
        a.workspace.photos.len() == 2 && !a.workspace.is_busy()
    });
    h.get_by_label_contains("coffee.png").click();
    wait_for(&mut h, "the dropped photo's heat map", 240, |a| {
        explained_photo(a) == Some((1, Method::GradCam))
    });
    let app = h.state();
    let model = app.workspace.model.as_ref().expect("model");
    let best = app.workspace.photos[1].top[0].0;
    assert!(
        model.label(best).contains("espresso") || model.label(best).contains("cup"),
        "coffee.png is {}",
        model.label(best)
    );
    // deletion/insertion scores arrive beside the map
    wait_for(&mut h, "deletion and insertion scores", 240, |a| {
        a.explain.scores().is_some()
    });
    h.get_by_label_contains("Deletion AUC");
}

#[test]
fn methods_classes_and_layers_switch() {
    let mut h = harness(AppSettings::default());
    wait_for(&mut h, "the first map", 240, |a| {
        explained_photo(a).is_some()
    });
    // method: open the combo box and pick saliency
    h.get_by_label("method").click();
    h.run_steps(3);
    h.get_by_label("Saliency").click();
    wait_for(&mut h, "a saliency map", 240, |a| {
        explained_photo(a).map(|e| e.1) == Some(Method::Saliency)
    });
    // class: pick the photo's second guess from its top-5
    let (second, label) = {
        let a = h.state();
        let m = a.workspace.model.as_ref().expect("model");
        let c = a.workspace.photos[0].top[1].0;
        (c, m.label(c))
    };
    // the class picker's entry reads "  8.4 %  tiger cat" (the top-5 table below has the bare name)
    h.get_by_label_contains(&format!("%  {label}")).click();
    wait_for(&mut h, "the map for the second class", 240, |a| {
        a.explain
            .explanation()
            .is_some_and(|e| e.target.class == second)
            && !a.explain.is_busy()
    });
    // layer: Grad-CAM on an earlier layer chosen from the layer list
    h.get_by_label("method").click();
    h.run_steps(3);
    h.get_by_label("Grad-CAM").click();
    h.run_steps(3);
    h.get_by_label("layer").click();
    h.run_steps(3);
    let (layer, node) = {
        let a = h.state();
        let m = a.workspace.model.as_ref().expect("model");
        // an early convolution: visible without scrolling in the layer list and the table
        let g = &m.model.graph;
        let convs: Vec<(String, String)> = g
            .nodes()
            .iter()
            .filter(|n| n.op.kind_name() == "Conv2d")
            .map(|n| (g.value(n.output).name.clone(), n.name.clone()))
            .collect();
        convs[2].clone()
    };
    h.get_by_label(&layer).click();
    wait_for(&mut h, "Grad-CAM at the chosen layer", 240, |a| {
        a.explain.explanation().is_some_and(|e| {
            e.method == Method::GradCam && e.layer.as_deref() == Some(layer.as_str())
        }) && !a.explain.is_busy()
    });

    // the layers panel: click a layer, its activation grid appears; pick a channel
    h.get_by_label("Layers").click();
    h.run_steps(3);
    h.get_by_label(&node).click();
    wait_for(&mut h, "the activation grid", 240, |a| {
        a.layers.has_grid() && !a.layers.is_busy()
    });
    assert_eq!(h.state().layers.selected_layer(), Some(layer.as_str()));
    h.state_mut().layers.select_channel(3);
    h.step();
    h.get_by_label("channel 3");
    h.get_by_label_contains("importance for");
}

#[test]
fn training_on_the_built_in_faces_grows_the_curves_and_changes_the_filters() {
    let mut settings = AppSettings {
        panel: PanelKind::Training,
        ..AppSettings::default()
    };
    settings.train.train_size = 400;
    settings.train.val_size = 100;
    settings.train.test_size = 100;
    settings.train.epochs = 2;
    settings.train.batch = 16;
    let mut h = harness(settings);
    h.get_by_label("Start").click();
    wait_for(&mut h, "the first batches", 240, |a| {
        a.train.curves.batch_loss.len() >= 3 && a.train.snapshot_count() >= 1
    });
    let early = h.state().train.curves.batch_loss.len();
    wait_for(&mut h, "training to finish", 600, |a| !a.train.is_running());
    let app = h.state();
    assert!(
        app.train.curves.batch_loss.len() > early,
        "the loss curve grew"
    );
    assert_eq!(app.train.curves.epochs.len(), 2, "one point per epoch");
    assert!(app.train.snapshot_count() >= 2, "several filter snapshots");
    assert!(
        app.train.filters_changed(),
        "the first-layer filters changed during training"
    );
    let first = app
        .train
        .curves
        .batch_loss
        .first()
        .map(|p| p[1])
        .unwrap_or(0.0);
    let last = app
        .train
        .curves
        .epochs
        .last()
        .map(|e| f64::from(e.train_loss))
        .unwrap_or(f64::MAX);
    assert!(last < first, "the loss fell: {first} -> {last}");
    // the confusion matrix is shown and its cells open images
    h.get_by_label_contains("Test accuracy");
    // the dataset panel shows the run's faces
    h.get_by_label("Dataset").click();
    wait_for(&mut h, "thumbnails", 120, |a| {
        a.dataset.thumbnails_loaded() > 0
    });
}

#[test]
fn a_moved_dream_slider_changes_the_preview() {
    let mut settings = AppSettings {
        panel: PanelKind::Dream,
        ..AppSettings::default()
    };
    settings.dream.config.size = 96;
    settings.dream.steps = 10_000;
    settings.dream.classes = vec![(288, 1.0), (1, 0.0)];
    let mut h = harness(settings);
    wait_for(&mut h, "the model", 240, |a| a.workspace.model.is_some());
    h.step();
    h.get_by_label("Dream from noise").click();
    wait_for(&mut h, "dream frames", 240, |a| a.dream.frames >= 2);
    let before = h.state().dream.frames;
    let step_before = h.state().dream.step;
    // move the second class's slider: the dream continues (step count goes on) with new weights
    let goldfish = {
        let a = h.state();
        a.workspace.model.as_ref().expect("model").label(1)
    };
    h.get_by_role_and_label(egui::accesskit::Role::Slider, &goldfish)
        .set_value_accesskit(1.0);
    h.step();
    assert!(
        (h.state().settings.dream.classes[1].1 - 1.0).abs() < 1e-6,
        "the slider moved the weight"
    );
    wait_for(&mut h, "new frames after the slider moved", 240, |a| {
        a.dream.frames >= before + 2
    });
    let a = h.state();
    assert!(
        a.dream.step > step_before,
        "the dream continued from its state ({step_before} -> {})",
        a.dream.step
    );
    assert!(a.dream.is_running());
}

#[test]
fn a_broken_file_gives_a_message_and_the_app_keeps_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n this is not a picture").expect("write");
    let bad_model = dir.path().join("garbage.onnx");
    std::fs::write(&bad_model, b"not a protobuf at all").expect("write");
    let mut h = harness(AppSettings::default());
    wait_for(&mut h, "the first map", 240, |a| {
        explained_photo(a).is_some()
    });
    drop_files(&mut h, std::slice::from_ref(&broken));
    wait_for(&mut h, "an error about broken.png", 240, |a| {
        a.errors.iter().any(|e| e.contains("broken.png"))
    });
    h.get_by_label_contains("broken.png");
    drop_files(&mut h, &[bad_model]);
    wait_for(&mut h, "an error about garbage.onnx", 240, |a| {
        a.errors.iter().any(|e| e.contains("garbage.onnx"))
    });
    // the model and the photo are still there and still work
    wait_for(&mut h, "the model to stay", 240, |a| !a.workspace.is_busy());
    assert_eq!(
        h.state().workspace.model.as_ref().map(|m| m.name.as_str()),
        Some("efficientnet-lite0")
    );
    assert_eq!(h.state().workspace.photos.len(), 1);
    h.get_by_label("method").click();
    h.run_steps(3);
    h.get_by_label("Gradient × Input").click();
    wait_for(&mut h, "a new map after the errors", 240, |a| {
        explained_photo(a).map(|e| e.1) == Some(Method::GradientXInput)
    });
    // a slow method can be cancelled, and the window goes on
    h.get_by_label("method").click();
    h.run_steps(3);
    h.get_by_label("Score-CAM").click();
    h.run_steps(2);
    if h.state().explain.is_busy() {
        h.get_by_label("Cancel").click();
        wait_for(&mut h, "the cancelled Score-CAM to stop", 60, |a| {
            !a.explain.is_busy()
        });
        h.get_by_label_contains("cancelled");
    }
    // a typed path that does not exist: a message, nothing else
    h.get_by_label("Path:").focus();
    h.step();
    h.get_by_label("Path:").type_text("/no/such/photo.jpg");
    h.step();
    h.get_by_label("Open path").click();
    h.step();
    assert!(
        h.state()
            .errors
            .iter()
            .any(|e| e.contains("/no/such/photo.jpg"))
    );
}

/// eframe's storage, in memory.
#[derive(Default)]
struct MemoryStorage(std::collections::HashMap<String, String>);

impl eframe::Storage for MemoryStorage {
    fn get_string(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }

    fn set_string(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }

    fn remove_string(&mut self, key: &str) {
        self.0.remove(key);
    }

    fn flush(&mut self) {}
}

#[test]
fn the_model_photos_panel_and_settings_come_back_after_a_restart() {
    use eframe::App;
    let mut h = harness(AppSettings::default());
    wait_for(&mut h, "the first map", 240, |a| {
        explained_photo(a).is_some()
    });
    drop_files(&mut h, &[sample("rocket.png")]);
    wait_for(&mut h, "the dropped photo", 240, |a| {
        a.workspace.photos.len() == 2 && !a.workspace.is_busy()
    });
    h.get_by_label("Layers").click();
    h.step();
    h.state_mut().settings.explain.alpha = 0.8;
    let mut storage = MemoryStorage::default();
    h.state_mut().save(&mut storage);
    let saved: AppSettings =
        eframe::get_value(&storage, eframe::APP_KEY).expect("settings were saved");
    assert_eq!(saved.panel, PanelKind::Layers);
    assert!((saved.explain.alpha - 0.8).abs() < 1e-6);
    // a new window from the saved settings reopens the same photos
    let mut h2 = harness(saved);
    wait_for(&mut h2, "the photos to come back", 240, |a| {
        a.workspace.photos.len() == 2 && !a.workspace.is_busy()
    });
    let names: Vec<String> = h2
        .state()
        .workspace
        .photos
        .iter()
        .map(|p| p.photo.name.clone())
        .collect();
    assert!(names.contains(&"rocket.png".to_string()), "{names:?}");
    assert_eq!(h2.state().settings.panel, PanelKind::Layers);
}

/// A vision transformer in the window: the tiny ViT fixture dropped in, its Grad-CAM runs at
/// the last block's first norm (patch tokens read onto the 4x4 grid), the Layers panel shows
/// that token layer as channel maps; then its preprocessing is edited in the Preprocessing
/// window, applied (the photos are prepared again with it) and saved beside the file, and the
/// saved sidecar holds the edit.
#[test]
fn a_vision_transformer_shows_token_maps_and_its_preprocessing_is_edited() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("tiny_vit.onnx");
    std::fs::copy(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/vit_legacy.onnx"),
        &model,
    )
    .expect("copy the fixture");
    let mut h = harness(AppSettings::default());
    wait_for(&mut h, "the first map", 240, |a| {
        explained_photo(a).is_some()
    });
    drop_files(&mut h, std::slice::from_ref(&model));
    wait_for(&mut h, "the ViT and its photo", 240, |a| {
        a.workspace
            .model
            .as_ref()
            .is_some_and(|m| m.name == "tiny_vit.onnx")
            && !a.workspace.is_busy()
            && !a.workspace.photos.is_empty()
    });
    let norm = "/encoder/layers/encoder_layer_1/ln_1/LayerNormalization_output_0";
    assert!(
        h.state()
            .workspace
            .model
            .as_ref()
            .is_some_and(|m| m.spatial_layers.iter().any(|l| l == norm)),
        "the token layer is a CAM layer choice"
    );
    h.get_by_label("method").click();
    h.run_steps(3);
    h.get_by_label("Grad-CAM").click();
    wait_for(&mut h, "Grad-CAM on the ViT", 240, |a| {
        a.explain
            .explanation()
            .is_some_and(|e| e.method == Method::GradCam && e.layer.as_deref() == Some(norm))
            && !a.explain.is_busy()
    });
    let raw = h
        .state()
        .explain
        .explanation()
        .map(|e| e.raw.shape().to_vec());
    assert_eq!(raw, Some(vec![4, 4]));

    // the token layer in the Layers panel: a grid of 4x4 channel maps
    h.get_by_label("Layers").click();
    h.run_steps(3);
    // (the row is far down the table: selected as a click on it does)
    h.state_mut().layers.select_layer(norm);
    wait_for(&mut h, "the token layer's grid", 240, |a| {
        a.layers.has_grid() && !a.layers.is_busy()
    });

    // preprocessing: squash → shorter side ×256/224 and centre crop, applied, then saved
    h.get_by_label("Preprocessing").click();
    h.run_steps(3);
    h.get_by_label("resize").click();
    h.run_steps(3);
    h.get_by_label("shorter side ×256/224, centre crop").click();
    h.run_steps(3);
    h.get_by_label("Apply to the photos").click();
    wait_for(&mut h, "the photos prepared again", 240, |a| {
        !a.workspace.is_busy()
            && a.workspace.model.as_ref().is_some_and(|m| {
                m.model.description.preprocess.resize == convscope::models::Resize::ShorterSideCrop
            })
    });
    assert_eq!(
        h.state().workspace.photos[0].photo.input.shape(),
        &[1, 3, 32, 32]
    );
    h.get_by_label("Save beside the model").click();
    h.run_steps(3);
    let sidecar = dir.path().join("tiny_vit.preset.ron");
    let text = std::fs::read_to_string(&sidecar).expect("the sidecar was written");
    assert!(text.contains("ShorterSideCrop"), "{text}");
    h.get_by_label_contains("saved to");
}

/// The units view of the Layers panel (issue 16): a mid EfficientNet-Lite0 layer's first page
/// of units is visualised (small settings) and searched for patches in the bundled photos;
/// a click on a cell opens the unit page with that unit's patches, histogram and verdict, and
/// its button makes four faces of the unit.
/// Then the bad inputs: a folder that does not exist is one sentence naming it, and a folder
/// with a broken image is read with the image skipped and counted.
#[test]
fn the_units_view_visualises_a_page_finds_patches_and_opens_a_unit_page() {
    let mut settings = AppSettings {
        panel: PanelKind::Layers,
        ..AppSettings::default()
    };
    settings.layers.units.steps = 8;
    settings.layers.units.size = 64;
    let mut h = harness(settings);
    wait_for(&mut h, "the model and its photo", 240, |a| {
        a.workspace.model.is_some() && !a.workspace.photos.is_empty()
    });
    h.state_mut()
        .layers
        .select_layer("/_blocks.6/_swish/Clip_output_0");
    h.step();
    h.get_by_label("Units").click();
    h.run_steps(2);
    h.get_by_label("Visualise this page").click();
    h.run_steps(2);
    h.get_by_label("Find top patches").click();
    wait_for(&mut h, "the page's visualisations and patches", 240, |a| {
        let units = a.layers.units();
        units.results(&a.settings.layers.units) == (64, 64) && !units.is_busy()
    });
    let photos = convscope::models::bundled::SAMPLE_IMAGES.len();
    h.get_by_label_contains(&format!("{photos} images read from the bundled photos"));
    h.get_by_label("unit 5").click();
    h.run_steps(3);
    assert_eq!(h.state().layers.units().open_unit(), Some(5));
    h.get_by_label_contains("Top patches of unit 5 in the bundled photos");
    h.get_by_label_contains(&format!("Peak of unit 5 per image, over {photos} images"));
    h.get_by_label_contains("#1 · ");
    // the verdict: the visualisation against the best folder image
    h.get_by_label_contains("folder image");
    // several faces of the unit, optimised together and pushed apart
    h.get_by_label("Show 4 faces").click();
    wait_for(&mut h, "unit 5's faces", 120, |a| {
        a.layers.units().faces(&a.settings.layers.units, 5) == 4 && !a.layers.units().is_busy()
    });
    h.get_by_label_contains("4 faces of unit 5");
    h.get_by_label_contains("face 4 · ");

    // a folder that cannot be read: one sentence naming it, the window goes on
    h.state_mut().settings.layers.units.folder = "/no/such/folder".into();
    h.step();
    h.get_by_label("Find top patches").click();
    wait_for(&mut h, "the folder's error", 60, |a| {
        a.layers
            .units()
            .error()
            .is_some_and(|e| e.contains("/no/such/folder"))
            && !a.layers.units().is_busy()
    });
    // a broken image among good ones: skipped and counted
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(sample("coffee.png"), dir.path().join("coffee.png")).expect("copy");
    std::fs::write(
        dir.path().join("broken.png"),
        b"\x89PNG\r\n\x1a\n not a picture",
    )
    .expect("write");
    h.state_mut().settings.layers.units.folder = dir.path().display().to_string();
    h.step();
    h.get_by_label("Find top patches").click();
    wait_for(&mut h, "the folder with a broken image", 120, |a| {
        a.layers.units().results(&a.settings.layers.units).1 == 64 && !a.layers.units().is_busy()
    });
    h.get_by_label("1 image skipped");
    assert!(h.state().layers.units().error().is_none());
}
