//! The egui application (DESIGN.md, "Threading in the app"): the UI thread owns this state and
//! never waits for the engine. Each panel is one struct with `logic` (drain its workers, start
//! new work; no drawing) and `ui`; the app routes between them, opens whatever is dropped on
//! the window, shows errors as messages, and persists its settings between runs.

mod dataset_panel;
mod dream_panel;
mod explain_panel;
mod export;
mod frame_stats;
mod jobs;
mod layers_panel;
mod microscope;
mod photo;
mod preset_window;
mod renderer;
mod texture;
mod train_panel;
mod widgets;
mod workspace;

use serde::{Deserialize, Serialize};

pub use dataset_panel::DatasetPanel;
pub use dream_panel::{DreamPanel, DreamSettings};
pub use explain_panel::{ExplainPanel, ExplainSettings};
pub use layers_panel::{LayersPanel, LayersSettings};
pub use microscope::{UnitsSettings, UnitsView};
pub use train_panel::{DataChoice, TrainPanel, TrainSettings};
pub use workspace::{LoadedModel, ModelSpec, PhotoSpec, Workspace};

/// The panels, in tab order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PanelKind {
    #[default]
    Explain,
    Layers,
    Training,
    Dataset,
    Dream,
}

impl PanelKind {
    pub const ALL: [PanelKind; 5] = [
        PanelKind::Explain,
        PanelKind::Layers,
        PanelKind::Training,
        PanelKind::Dataset,
        PanelKind::Dream,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PanelKind::Explain => "Explain",
            PanelKind::Layers => "Layers",
            PanelKind::Training => "Training",
            PanelKind::Dataset => "Dataset",
            PanelKind::Dream => "Dream",
        }
    }
}

/// Everything that survives a restart (eframe's RON storage).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    pub panel: PanelKind,
    pub model: ModelSpec,
    pub photos: Vec<PhotoSpec>,
    pub selected: usize,
    pub explain: ExplainSettings,
    pub layers: LayersSettings,
    pub train: TrainSettings,
    pub dream: DreamSettings,
    pub show_frame_times: bool,
}

pub struct ConvscopeApp {
    pub settings: AppSettings,
    pub workspace: Workspace,
    pub explain: ExplainPanel,
    pub layers: LayersPanel,
    pub train: TrainPanel,
    pub dataset: DatasetPanel,
    pub dream: DreamPanel,
    /// The open model's preprocessing, editable.
    pub preset: preset_window::PresetWindow,
    /// Messages for the person, newest last; each can be dismissed.
    pub errors: Vec<String>,
    frames: frame_stats::FrameStats,
    /// The restored model failed: the bundled one was opened instead.
    fell_back: bool,
    /// Start a dream as soon as the model is open (CONVSCOPE_AUTOSTART=dream).
    autostart_dream: bool,
    /// The first heat map has been shown (start-up time is reported once).
    first_map_shown: bool,
    /// What draws the window (shown with the frame times); None in headless tests.
    drawing: Option<renderer::Drawing>,
    /// Frames left in which to look for the software rasteriser's threads (they may start
    /// with the first frame rather than with the context).
    rasteriser_search_frames: u32,
}

/// When `run` was called: start-up time is measured from here to the first heat map.
static LAUNCHED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

impl ConvscopeApp {
    /// The app as eframe creates it: settings from the last run, if any.
    pub fn new(cc: &eframe::CreationContext<'_>) -> Self {
        let settings: AppSettings = cc
            .storage
            .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
            .unwrap_or_default();
        let drawing = renderer::Drawing::of(cc);
        if let Some(d) = &drawing {
            jobs::set_software_rendering(d.software);
        }
        let mut app = Self::with_settings(&cc.egui_ctx, settings);
        app.rasteriser_search_frames = if drawing.as_ref().is_some_and(|d| d.software) {
            60
        } else {
            0
        };
        app.drawing = drawing;
        app.yield_rasteriser();
        app
    }

    /// Under a software rasteriser, lets the engine's workers go first (see
    /// [`renderer::yield_software_rasteriser`]).
    fn yield_rasteriser(&mut self) {
        if self.rasteriser_search_frames > 0 {
            self.rasteriser_search_frames -= 1;
            if renderer::yield_software_rasteriser() > 0 {
                self.rasteriser_search_frames = 0;
            }
        }
    }

    /// The app with given settings (tests start from `AppSettings::default()`).
    pub fn with_settings(ctx: &egui::Context, settings: AppSettings) -> Self {
        let log = std::env::var_os("CONVSCOPE_FRAME_LOG").map(std::path::PathBuf::from);
        let mut app = Self {
            workspace: Workspace::default(),
            explain: ExplainPanel::default(),
            layers: LayersPanel::default(),
            train: TrainPanel::default(),
            dataset: DatasetPanel::default(),
            dream: DreamPanel::default(),
            preset: preset_window::PresetWindow::default(),
            errors: Vec::new(),
            frames: frame_stats::FrameStats::with_log(log),
            fell_back: false,
            autostart_dream: false,
            first_map_shown: false,
            drawing: None,
            rasteriser_search_frames: 0,
            settings,
        };
        let (model, photos) = (app.settings.model.clone(), app.settings.photos.clone());
        if let Err(e) = app.workspace.restore(ctx, model, photos) {
            app.errors.push(e);
        }
        app.workspace.selected = app.settings.selected;
        app.apply_start_env(ctx);
        app
    }

    /// Start-up switches for screenshots and the frame-time benchmark (tools/screenshots.sh,
    /// tools/bench_frames.sh): `CONVSCOPE_PANEL` (explain, layers, training, dataset, dream),
    /// `CONVSCOPE_LAYER` (a layer to open in the layers panel), `CONVSCOPE_AUTOSTART`
    /// (`training` or `dream`), `CONVSCOPE_FRAME_TIMES` (the frame-time overlay on),
    /// `CONVSCOPE_OPEN` (models and photos to open, `:`-separated), `CONVSCOPE_METHOD` (the
    /// explanation method's CLI name), `CONVSCOPE_PREPROCESSING` (the preprocessing window open),
    /// `CONVSCOPE_UNITS` (the layers panel's units view), `CONVSCOPE_AUTOSTART=units` (visualise
    /// the first page of units and find their patches in the bundled photos or the saved folder),
    /// `CONVSCOPE_UNIT` (a unit whose page opens once its results are in, and
    /// its faces are made).
    fn apply_start_env(&mut self, ctx: &egui::Context) {
        if let Ok(p) = std::env::var("CONVSCOPE_PANEL")
            && let Some(kind) = PanelKind::ALL
                .into_iter()
                .find(|k| k.label().eq_ignore_ascii_case(&p))
        {
            self.settings.panel = kind;
        }
        if let Ok(layer) = std::env::var("CONVSCOPE_LAYER") {
            self.layers.select_layer(&layer);
        }
        // models and photos to open, as if dropped (paths joined as in PATH)
        if let Some(paths) = std::env::var_os("CONVSCOPE_OPEN") {
            let paths: Vec<_> = std::env::split_paths(&paths).collect();
            let errors = self.workspace.open_paths(ctx, paths);
            self.errors.extend(errors);
        }
        if let Ok(name) = std::env::var("CONVSCOPE_METHOD") {
            match crate::explain::Method::from_name(&name) {
                Some(m) => self.settings.explain.method = m,
                None => self.errors.push(format!(
                    "CONVSCOPE_METHOD={name} is no method; methods: {}",
                    crate::explain::Method::names()
                )),
            }
        }
        if std::env::var_os("CONVSCOPE_PREPROCESSING").is_some() {
            self.preset.open = true;
        }
        if std::env::var_os("CONVSCOPE_UNITS").is_some() {
            self.settings.layers.units.show = true;
        }
        if let Ok(unit) = std::env::var("CONVSCOPE_UNIT") {
            match unit.trim().parse::<usize>() {
                Ok(k) => self.layers.units_mut().open_when_ready = Some(k),
                Err(_) => self
                    .errors
                    .push(format!("CONVSCOPE_UNIT={unit} is not a unit number")),
            }
        }
        match std::env::var("CONVSCOPE_AUTOSTART").as_deref() {
            Ok("training") => self.train.start(ctx, &self.settings.train),
            Ok("dream") => self.autostart_dream = true,
            Ok("units") => {
                self.settings.layers.units.show = true;
                self.layers.units_mut().autostart = true;
            }
            _ => {}
        }
        if std::env::var_os("CONVSCOPE_FRAME_TIMES").is_some() {
            self.settings.show_frame_times = true;
        }
    }

    /// Opens files as if they had been dropped on the window.
    pub fn open_paths(&mut self, ctx: &egui::Context, paths: Vec<std::path::PathBuf>) {
        let errors = self.workspace.open_paths(ctx, paths);
        self.errors.extend(errors);
        if matches!(
            self.settings.panel,
            PanelKind::Training | PanelKind::Dataset
        ) {
            self.settings.panel = PanelKind::Explain;
        }
    }

    /// Is any worker busy? (Tests wait for this to become false.)
    pub fn is_busy(&self) -> bool {
        self.workspace.is_busy()
            || self.explain.is_busy()
            || self.layers.is_busy()
            || self.layers.units().is_busy()
    }

    fn top_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.heading("convscope");
            ui.separator();
            for p in PanelKind::ALL {
                ui.selectable_value(&mut self.settings.panel, p, p.label());
            }
            ui.separator();
            match &self.workspace.model {
                Some(m) => {
                    ui.label(format!("model: {}", m.name));
                    ui.toggle_value(&mut self.preset.open, "Preprocessing")
                        .on_hover_text(
                            "how photos become the model's input: size, crop, filter, mean and std",
                        );
                }
                None => {
                    ui.label("model: loading…");
                }
            };
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.checkbox(&mut self.settings.show_frame_times, "frame times");
                if self.settings.show_frame_times
                    && let Some((median, p99)) = self.frames.summary()
                {
                    ui.monospace(format!("median {median:.1} ms · p99 {p99:.1} ms"));
                    if let Some(d) = &self.drawing {
                        ui.monospace(format!("{} · {}", d.renderer, d.device))
                            .on_hover_text(if d.software {
                                "drawn by the CPU: no GPU driver in use"
                            } else {
                                "drawn by the GPU"
                            });
                    }
                }
            });
        });
    }

    fn error_banner(&mut self, ui: &mut egui::Ui) {
        let mut dismiss = None;
        for (i, e) in self.errors.iter().enumerate().rev().take(4) {
            ui.horizontal(|ui| {
                ui.colored_label(ui.visuals().error_fg_color, e.as_str());
                if ui.small_button("Dismiss").clicked() {
                    dismiss = Some(i);
                }
            });
        }
        if let Some(i) = dismiss {
            self.errors.remove(i);
        }
    }
}

impl eframe::App for ConvscopeApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let dropped: Vec<std::path::PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if !dropped.is_empty() {
            self.open_paths(ctx, dropped);
        }
        let errors = self.workspace.poll(ctx);
        self.errors.extend(errors);
        if self.workspace.model.is_none() && !self.workspace.is_busy() && !self.fell_back {
            // the last session's model is gone or broken: fall back to the bundled one
            self.fell_back = true;
            let photos = self
                .workspace
                .photos
                .iter()
                .map(|p| p.spec.clone())
                .collect();
            if let Err(e) = self.workspace.restore(ctx, ModelSpec::default(), photos) {
                self.errors.push(e);
            }
        }
        if self.autostart_dream
            && let Some(m) = &self.workspace.model
        {
            self.autostart_dream = false;
            self.dream.start(ctx, m, &self.settings.dream, false);
        }
        self.explain
            .logic(ctx, &self.workspace, &self.settings.explain);
        self.layers
            .logic(ctx, &self.workspace, &self.settings.layers);
        if !self.first_map_shown && self.explain.explanation().is_some() {
            self.first_map_shown = true;
            if let (Some(t0), Some(_)) =
                (LAUNCHED.get(), std::env::var_os("CONVSCOPE_REPORT_STARTUP"))
            {
                eprintln!(
                    "convscope: first heat map on screen {:.0} ms after launch",
                    t0.elapsed().as_secs_f64() * 1e3
                );
            }
        }
        self.train.logic(ctx);
        self.dataset.logic(ctx);
        self.dream.logic(ctx);
        if let Some(data) = self.train.take_prepared_data() {
            self.dataset.set_data(data);
        }
        if let Some(model) = self.train.finished.as_ref().and_then(|f| f.model.as_ref())
            && self.dataset.model.is_none()
        {
            self.dataset.model = Some(std::sync::Arc::new(model.clone()));
        }
        if let Some(model) = self.train.send_to_explain.take() {
            let loaded = LoadedModel::new(None, "trained smile CNN".into(), model);
            if let Err(e) = self.workspace.use_model(ctx, loaded) {
                self.errors.push(e);
            }
            self.settings.panel = PanelKind::Explain;
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        if let Some(t) = frame.info().cpu_usage {
            self.frames.record(t);
        }
        self.yield_rasteriser();

        let ctx = ui.ctx().clone();
        egui::Panel::top("top-bar").show(ui, |ui| {
            self.top_bar(ui);
            if !self.errors.is_empty() {
                self.error_banner(ui);
            }
        });
        let mut errors = Vec::new();
        egui::CentralPanel::default().show(ui, |ui| match self.settings.panel {
            PanelKind::Explain => {
                errors = self
                    .explain
                    .ui(ui, &mut self.workspace, &mut self.settings.explain);
            }
            PanelKind::Layers => self
                .layers
                .ui(ui, &self.workspace, &mut self.settings.layers),
            PanelKind::Training => self.train.ui(ui, &mut self.settings.train),
            PanelKind::Dataset => self.dataset.ui(ui),
            PanelKind::Dream => self.dream.ui(ui, &self.workspace, &mut self.settings.dream),
        });
        self.preset.show(&ctx, &mut self.workspace, &mut errors);
        self.errors.extend(errors);
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
        if hovering {
            let painter = ctx.layer_painter(egui::LayerId::new(
                egui::Order::Foreground,
                egui::Id::unique("convscope-drop-overlay"),
            ));
            let rect = ctx.content_rect();
            painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(160));
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                "Drop photos or a model to open them",
                egui::FontId::proportional(28.0),
                egui::Color32::WHITE,
            );
        }
        if self.settings.show_frame_times {
            // keep measuring while the overlay is on
            ctx.request_repaint_after(std::time::Duration::from_millis(250));
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let Some(spec) = self.workspace.model.as_ref().and_then(|m| m.spec.clone()) {
            self.settings.model = spec;
        }
        self.settings.photos = self
            .workspace
            .photos
            .iter()
            .map(|p| p.spec.clone())
            .collect();
        self.settings.selected = self.workspace.selected;
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
    }
}

/// Opens the window; returns when it closes. `simd_error`: why `CONVSCOPE_SIMD` could not be
/// honoured (the window says so and runs at the best level of the CPU).
pub fn run(simd_error: Option<String>) -> Result<(), String> {
    let _ = LAUNCHED.set(std::time::Instant::now());
    let (renderer, renderer_error) = renderer::from_env();
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("convscope")
            .with_inner_size([1440.0, 920.0])
            .with_drag_and_drop(true),
        renderer,
        ..Default::default()
    };
    let app_opened = opened.clone();
    let result = eframe::run_native(
        "convscope",
        options,
        Box::new(move |cc| {
            app_opened.store(true, std::sync::atomic::Ordering::Relaxed);
            let mut app = ConvscopeApp::new(cc);
            if let Some(e) = simd_error {
                let best = crate::engine::simd::Level::best();
                app.errors.push(format!("{e}; running at {best} instead."));
            }
            app.errors.extend(renderer_error);
            Ok(Box::new(app))
        }),
    );
    match result {
        Ok(()) => Ok(()),
        // OpenGL could not open a window (no driver): one more try with wgpu, in a fresh
        // process because winit allows one event loop per process.
        Err(e)
            if renderer == eframe::Renderer::Glow
                && !opened.load(std::sync::atomic::Ordering::Relaxed)
                && std::env::var_os(renderer::ENV_VAR).is_none() =>
        {
            let exe = std::env::current_exe()
                .map_err(|x| format!("cannot open the window with OpenGL ({e}), and cannot find this program to retry with wgpu: {x}"))?;
            let status = std::process::Command::new(exe)
                .args(std::env::args_os().skip(1))
                .env(renderer::ENV_VAR, "wgpu")
                .status()
                .map_err(|x| {
                    format!(
                        "cannot open the window with OpenGL ({e}), and cannot retry with wgpu: {x}"
                    )
                })?;
            if status.success() {
                Ok(())
            } else {
                Err(format!(
                    "cannot open the window with OpenGL ({e}) nor with wgpu ({status})"
                ))
            }
        }
        Err(e) => Err(format!("cannot open the window: {e}")),
    }
}
