//! Models to train: a bundled architecture, a RON description freshly initialised, or an
//! existing checkpoint to continue from.

use std::path::Path;

use super::{TrainError, TrainResult};
use crate::engine::{Op, Tensor, init};
use crate::models::{self, Model, ModelDescription, Weights};

/// `smile-cnn` (bundled), a checkpoint directory, an `.onnx` file (its weights, to fine-tune)
/// or a `.ron` model description (initialised from `seed`).
pub fn load_arch(spec: &str, seed: u64) -> TrainResult<Model> {
    let path = Path::new(spec);
    if path.is_dir() {
        return models::load_model(path).map_err(|e| TrainError::invalid(e.to_string()));
    }
    if is_onnx_file(path) {
        return models::bundled::open_onnx(path)
            .map(|(model, _)| model)
            .map_err(|e| TrainError::invalid(e.to_string()));
    }
    if let Some(found) = models::bundled(spec, seed) {
        let (description, weights) = found.map_err(|e| TrainError::invalid(e.to_string()))?;
        return build(description, weights);
    }
    if !path.exists() {
        return Err(TrainError::invalid(format!(
            "{spec}: does not exist (expected smile-cnn, a .ron model description, an .onnx file or a checkpoint directory)"
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainError::invalid(format!("{spec}: cannot read the file ({e})")))?;
    let description = ModelDescription::from_ron(&text).map_err(|e| {
        TrainError::invalid(format!("{spec}: is not a valid model description ({e})"))
    })?;
    let weights = fresh_weights(&description, seed)?;
    build(description, weights)
}

/// The model and data of a new run, as the command line and the window both build them: the
/// data is read for `arch`'s input and preset ([`load_arch`]), then the bundled smile CNN gets
/// a head sized to the data's classes (one logit for two classes, one score per class
/// otherwise). Other architectures keep theirs; `--new-head` replaces it afterwards.
pub fn model_and_data(
    arch: &str,
    seed: u64,
    spec: &super::DataSpec,
) -> TrainResult<(Model, super::TrainData)> {
    let model = load_arch(arch, seed)?;
    let data = spec.build(model.graph.input_shape(), &model.description.preprocess)?;
    // in load_arch's order: a folder or an .onnx file of that name comes first
    let path = Path::new(arch);
    let bundled_smile = arch == "smile-cnn" && !path.is_dir() && !is_onnx_file(path);
    let model = if bundled_smile && data.classes.len() > 2 {
        let cfg = models::presets::SmileCnnConfig {
            outputs: data.classes.len(),
            ..models::presets::SmileCnnConfig::default()
        };
        let (description, weights) = models::presets::smile_cnn(&cfg, seed)
            .map_err(|e| TrainError::invalid(e.to_string()))?;
        build(description, weights)?
    } else {
        model
    };
    Ok((model, data))
}

fn is_onnx_file(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn build(description: ModelDescription, weights: Weights) -> TrainResult<Model> {
    let graph = description
        .build(weights)
        .map_err(|e| TrainError::invalid(e.to_string()))?;
    Ok(Model { description, graph })
}

/// PyTorch-style initial values for every parameter of a description: convolution and linear
/// weights and biases uniform in ±1/sqrt(fan_in), batch norm gamma 1, beta 0, running mean 0,
/// running variance 1; anything else zeros (rank 1) or the default weight init.
pub fn fresh_weights(d: &ModelDescription, seed: u64) -> TrainResult<Weights> {
    let mut rng = init::rng(seed);
    let shape_of = |name: &str| d.params.iter().find(|p| p.name == name).map(|p| &p.shape);
    let mut weights = Weights::new();
    let err = |name: &str, e: crate::engine::OpError| {
        TrainError::invalid(format!("parameter '{name}': {e}"))
    };
    for node in &d.nodes {
        let params: Vec<&String> = node.inputs.iter().skip(1).collect();
        match node.op {
            Op::Conv2d(_) | Op::Gemm(_) => {
                let Some(w_name) = params.first() else {
                    continue;
                };
                let Some(w_shape) = shape_of(w_name) else {
                    continue;
                };
                let w =
                    init::torch_default_weight(w_shape, &mut rng).map_err(|e| err(w_name, e))?;
                weights.insert((*w_name).clone(), w);
                if let Some(b_name) = params.get(1)
                    && shape_of(b_name).is_some()
                {
                    let b =
                        init::torch_default_bias(w_shape, &mut rng).map_err(|e| err(b_name, e))?;
                    weights.insert((*b_name).clone(), b);
                }
            }
            Op::BatchNorm2d(_) => {
                for (i, name) in params.iter().enumerate() {
                    if let Some(shape) = shape_of(name) {
                        let v = if i == 0 || i == 3 { 1.0 } else { 0.0 };
                        weights.insert((*name).clone(), Tensor::full(shape, v));
                    }
                }
            }
            _ => {}
        }
    }
    for p in &d.params {
        if weights.contains_key(&p.name) {
            continue;
        }
        let t = if p.shape.len() >= 2 && p.trainable {
            init::torch_default_weight(&p.shape, &mut rng).map_err(|e| err(&p.name, e))?
        } else {
            Tensor::zeros(&p.shape)
        };
        weights.insert(p.name.clone(), t);
    }
    Ok(weights)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ron_description_is_initialised_like_the_preset() {
        let (d, preset) = models::smile_cnn(&models::SmileCnnConfig::default(), 0).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("arch.ron");
        std::fs::write(&file, d.to_ron().unwrap()).unwrap();
        let m = load_arch(file.to_str().unwrap(), 0).unwrap();
        // same draw order as the preset builder: identical weights
        for p in m.graph.params() {
            assert_eq!(&p.tensor, &preset[&p.name], "{}", p.name);
        }
        let e = load_arch("/no/such.ron", 0).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
