//! The training settings: the data set, architecture and hyper-parameter choices
//! (`TrainSettings`), what they mean to the trainer (`data_spec`, `optimizer`, `arch_spec`), and
//! the settings form on the panel's left (Start, Pause, Stop and the choices).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::TrainPanel;
use crate::app::widgets::{path_field, pick_file, pick_folder};
use crate::data::Confound;
use crate::engine::optim::OptimizerConfig;
use crate::train::data::DataSpec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataChoice {
    BuiltInFaces,
    Folder,
    Mnist,
    Cifar,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfoundChoice {
    None,
    HeadTilt,
    Background,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchChoice {
    SmileCnn,
    File,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptimizerChoice {
    Adam,
    AdamW,
    Sgd,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub data: DataChoice,
    pub confound: ConfoundChoice,
    pub correlation: f32,
    pub train_size: usize,
    pub val_size: usize,
    pub test_size: usize,
    pub folder: String,
    pub mnist_images: String,
    pub mnist_labels: String,
    pub mnist_test_images: String,
    pub mnist_test_labels: String,
    pub cifar_dir: String,
    pub arch: ArchChoice,
    pub arch_file: String,
    pub optimizer: OptimizerChoice,
    pub lr: f32,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub hflip: bool,
    pub patience: usize,
    pub checkpoint_dir: String,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            data: DataChoice::BuiltInFaces,
            confound: ConfoundChoice::None,
            correlation: 0.9,
            train_size: 3000,
            val_size: 500,
            test_size: 500,
            folder: String::new(),
            mnist_images: String::new(),
            mnist_labels: String::new(),
            mnist_test_images: String::new(),
            mnist_test_labels: String::new(),
            cifar_dir: String::new(),
            arch: ArchChoice::SmileCnn,
            arch_file: String::new(),
            optimizer: OptimizerChoice::Adam,
            lr: 1e-3,
            batch: 32,
            epochs: 3,
            seed: 0,
            hflip: false,
            patience: 0,
            checkpoint_dir: String::new(),
        }
    }
}

impl TrainSettings {
    pub(super) fn data_spec(&self) -> Result<DataSpec, String> {
        let path = |s: &str, what: &str| -> Result<PathBuf, String> {
            let s = s.trim();
            if s.is_empty() {
                return Err(format!("choose the {what} first"));
            }
            Ok(PathBuf::from(s))
        };
        Ok(match self.data {
            DataChoice::BuiltInFaces => DataSpec::Synthetic {
                seed: self.seed,
                train: self.train_size,
                val: self.val_size,
                test: self.test_size,
                confound: match self.confound {
                    ConfoundChoice::None => Confound::None,
                    ConfoundChoice::HeadTilt => Confound::HeadTilt {
                        correlation: self.correlation,
                    },
                    ConfoundChoice::Background => Confound::BackgroundBrightness {
                        correlation: self.correlation,
                    },
                },
            },
            DataChoice::Folder => DataSpec::Folder {
                root: path(&self.folder, "image folder")?,
                val_fraction: 0.1,
                test_fraction: 0.1,
                seed: self.seed,
            },
            DataChoice::Mnist => {
                let test = if self.mnist_test_images.trim().is_empty() {
                    None
                } else {
                    Some((
                        path(&self.mnist_test_images, "test images file")?,
                        path(&self.mnist_test_labels, "test labels file")?,
                    ))
                };
                DataSpec::Idx {
                    train_images: path(&self.mnist_images, "IDX images file")?,
                    train_labels: path(&self.mnist_labels, "IDX labels file")?,
                    test,
                }
            }
            DataChoice::Cifar => DataSpec::Cifar {
                dir: path(&self.cifar_dir, "CIFAR-10 folder")?,
            },
        })
    }

    pub(super) fn optimizer(&self) -> OptimizerConfig {
        match self.optimizer {
            OptimizerChoice::Adam => OptimizerConfig::adam(self.lr),
            OptimizerChoice::AdamW => OptimizerConfig::adamw(self.lr, 1e-2),
            OptimizerChoice::Sgd => OptimizerConfig::sgd_momentum(self.lr, 0.9),
        }
    }
}

/// What `train::arch::model_and_data` reads for the chosen architecture.
pub(super) fn arch_spec(settings: &TrainSettings) -> Result<&str, String> {
    match settings.arch {
        ArchChoice::SmileCnn => Ok("smile-cnn"),
        ArchChoice::File => {
            let f = settings.arch_file.trim();
            if f.is_empty() {
                return Err("choose a model description (.ron) or checkpoint folder first".into());
            }
            Ok(f)
        }
    }
}

impl TrainPanel {
    pub(super) fn settings_ui(&mut self, ui: &mut egui::Ui, s: &mut TrainSettings) {
        let running = self.job.is_some();
        ui.horizontal(|ui| {
            if ui
                .add_enabled(!running, egui::Button::new("Start"))
                .clicked()
            {
                self.start(ui.ctx(), s);
            }
            let paused = self.control.as_ref().is_some_and(|c| c.is_paused());
            let label = if paused { "Resume" } else { "Pause" };
            if ui
                .add_enabled(self.control.is_some(), egui::Button::new(label))
                .clicked()
                && let Some(c) = &self.control
            {
                if paused { c.resume() } else { c.pause() }
            }
            if ui
                .add_enabled(self.control.is_some(), egui::Button::new("Stop"))
                .clicked()
                && let Some(c) = &self.control
            {
                c.stop();
            }
        });
        ui.add_enabled_ui(!running, |ui| {
            ui.heading("Data");
            ui.selectable_value(
                &mut s.data,
                DataChoice::BuiltInFaces,
                "Built-in faces (smiling / frowning)",
            );
            ui.selectable_value(
                &mut s.data,
                DataChoice::Folder,
                "Image folder (one sub-folder per class)",
            );
            ui.selectable_value(
                &mut s.data,
                DataChoice::Mnist,
                "MNIST / Fashion-MNIST IDX files",
            );
            ui.selectable_value(&mut s.data, DataChoice::Cifar, "CIFAR-10 binary folder");
            match s.data {
                DataChoice::BuiltInFaces => {
                    ui.label("Confound (planted in training and validation faces):");
                    ui.horizontal(|ui| {
                        ui.selectable_value(&mut s.confound, ConfoundChoice::None, "none");
                        ui.selectable_value(&mut s.confound, ConfoundChoice::HeadTilt, "head tilt");
                        ui.selectable_value(
                            &mut s.confound,
                            ConfoundChoice::Background,
                            "background",
                        );
                    });
                    if s.confound != ConfoundChoice::None {
                        ui.add(
                            egui::Slider::new(&mut s.correlation, 0.0..=1.0)
                                .text("correlation with the label"),
                        );
                    }
                    ui.add(
                        egui::Slider::new(&mut s.train_size, 200..=20_000)
                            .logarithmic(true)
                            .text("training faces"),
                    );
                    ui.add(egui::Slider::new(&mut s.val_size, 0..=5_000).text("validation faces"));
                    ui.add(egui::Slider::new(&mut s.test_size, 0..=5_000).text("test faces"));
                }
                DataChoice::Folder => {
                    path_field(ui, "Folder:", &mut s.folder);
                    if ui.button("Browse…").clicked()
                        && let Some(p) = pick_folder()
                    {
                        s.folder = p.display().to_string();
                    }
                }
                DataChoice::Mnist => {
                    path_field(ui, "Train images:", &mut s.mnist_images);
                    path_field(ui, "Train labels:", &mut s.mnist_labels);
                    path_field(ui, "Test images:", &mut s.mnist_test_images);
                    path_field(ui, "Test labels:", &mut s.mnist_test_labels);
                }
                DataChoice::Cifar => {
                    path_field(ui, "Folder:", &mut s.cifar_dir);
                }
            }
            ui.separator();
            ui.heading("Architecture");
            ui.selectable_value(&mut s.arch, ArchChoice::SmileCnn, "The book's smile CNN");
            ui.selectable_value(
                &mut s.arch,
                ArchChoice::File,
                "A RON description or checkpoint",
            );
            if s.arch == ArchChoice::File {
                path_field(ui, "Model:", &mut s.arch_file);
                if ui.button("Browse…").clicked()
                    && let Some(p) = pick_file(&[("Model description", &["ron"])])
                {
                    s.arch_file = p.display().to_string();
                }
            }
            ui.separator();
            ui.heading("Hyper-parameters");
            egui::ComboBox::from_label("optimiser")
                .selected_text(format!("{:?}", s.optimizer))
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut s.optimizer, OptimizerChoice::Adam, "Adam");
                    ui.selectable_value(&mut s.optimizer, OptimizerChoice::AdamW, "AdamW");
                    ui.selectable_value(
                        &mut s.optimizer,
                        OptimizerChoice::Sgd,
                        "SGD (momentum 0.9)",
                    );
                });
            ui.add(
                egui::Slider::new(&mut s.lr, 1e-5..=1e-1)
                    .logarithmic(true)
                    .text("learning rate"),
            );
            ui.add(
                egui::Slider::new(&mut s.batch, 1..=256)
                    .logarithmic(true)
                    .text("batch"),
            );
            ui.add(egui::Slider::new(&mut s.epochs, 1..=100).text("epochs"));
            ui.add(
                egui::Slider::new(&mut s.patience, 0..=20).text("early-stopping patience (0: off)"),
            );
            ui.horizontal(|ui| {
                let l = ui.label("seed");
                ui.add(egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
            });
            ui.checkbox(&mut s.hflip, "random horizontal flips");
            path_field(ui, "Checkpoints:", &mut s.checkpoint_dir);
            ui.weak("(empty: no checkpoints)");
        });
    }
}
