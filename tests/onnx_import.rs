//! ONNX import: the shared EfficientNet-Lite0, exporter-idiom fixtures compared with
//! onnxruntime (and PyTorch for the input gradient), and hostile or unsupported files.
//! Fixtures: tests/fixtures/onnx/, made by tools/make_onnx_fixtures.py.

#![allow(clippy::unwrap_used)] // tests unwrap freely

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convscope::engine::{BackwardRequest, ForwardOptions, ForwardPass, Graph, Op, Tensor};
use convscope::models::onnx::proto::{self, ModelProto, StringStringEntryProto, TensorProto};
use convscope::models::onnx::{ImportedModel, Problem, import_onnx, import_onnx_bytes};
use ndarray::ArrayD;
use prost::Message;

use common::onnx_fixture as fixture;

fn effnet_path() -> PathBuf {
    common::shared_path("data/models/efficientnet_lite0.onnx")
}

use common::onnx_npy as npy_f32;

/// max |a - b| / max |b|: a relative error that is not fooled by near-zero elements.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// The gradient of `seed` · output with respect to the input, through a pass kept for
/// backward (a graph with one input and one output).
fn input_gradient(g: &Graph, pass: &ForwardPass, seed: Tensor) -> Tensor {
    let (input, out) = (g.inputs()[0], g.outputs()[0]);
    let req = BackwardRequest {
        seeds: vec![(out, seed)],
        param_grads: false,
        value_grads: vec![input],
    };
    let mut grads = g.backward(pass, &req).unwrap();
    grads.values.remove(&input).unwrap()
}

fn op_counts(m: &ImportedModel) -> BTreeMap<&'static str, usize> {
    let mut c = BTreeMap::new();
    for n in &m.def.nodes {
        *c.entry(n.op.kind_name()).or_insert(0) += 1;
    }
    c
}

fn model_bytes(name: &str) -> ModelProto {
    ModelProto::decode(std::fs::read(fixture(name)).unwrap().as_slice()).unwrap()
}

fn import_model(m: &ModelProto) -> Result<ImportedModel, convscope::models::onnx::ImportError> {
    import_onnx_bytes(&m.encode_to_vec(), None)
}

fn initializer<'a>(m: &'a mut ModelProto, name: &str) -> &'a mut TensorProto {
    let g = m.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name() == name).unwrap()
}

// ---------------------------------------------------------------- EfficientNet-Lite0

#[test]
fn effnet_imports_with_its_op_list() {
    let m = import_onnx(&effnet_path()).unwrap();
    assert_eq!(m.input_name, "input");
    assert_eq!(m.input_shape, vec![1, 3, 224, 224]);
    assert_eq!(m.output_names, vec!["logits".to_string()]);
    assert_eq!(m.opset, 13);
    let expected: BTreeMap<&str, usize> = [
        ("Conv2d", 49),
        ("BatchNorm2d", 49),
        ("Clip", 33),
        ("Pad", 17),
        ("Add", 9),
        ("GlobalAvgPool", 1),
        ("Flatten", 1),
        ("Gemm", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(op_counts(&m), expected);
    let trainable: usize = m
        .def
        .params
        .iter()
        .filter(|p| p.trainable)
        .map(|p| p.tensor.numel())
        .sum();
    assert_eq!(
        trainable, 4_652_008,
        "SOURCE.md gives 4,652,008 trainable parameters"
    );
    for n in &m.def.nodes {
        match &n.op {
            Op::BatchNorm2d(s) => assert!((s.eps - 1e-3).abs() < 1e-9, "{}: eps {}", n.name, s.eps),
            Op::Activation(convscope::engine::ops::Activation::Clip { min, max }) => {
                assert_eq!((*min, *max), (0.0, 6.0), "{} is a ReLU6", n.name)
            }
            _ => {}
        }
    }
}

fn effnet_input() -> Tensor {
    let u8s: ArrayD<u8> = ndarray_npy::read_npy(fixture("effnet.input_u8.npy")).unwrap();
    // Same formula as the fixture script; exact in f32.
    Tensor::from_array(u8s.mapv(|v| (v as f32 - 128.0) / 64.0))
}

#[test]
fn effnet_logits_match_onnxruntime() {
    let m = import_onnx(&effnet_path()).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let pass = g
        .forward(&[effnet_input()], &ForwardOptions::eval())
        .unwrap();
    let logits = pass.get(g.outputs()[0]).unwrap();
    let want = npy_f32("effnet.logits.npy");
    assert_eq!(logits.shape(), want.shape());
    let err = rel_err(logits.data(), want.data());
    eprintln!("effnet logits vs onnxruntime: relative error {err:e}");
    assert!(
        err < 1e-4,
        "logits differ from onnxruntime by {err:e} (relative to the largest)"
    );
}

#[test]
fn effnet_input_gradient_matches_torch() {
    const CLASS: usize = 285;
    let m = import_onnx(&effnet_path()).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let pass = g
        .forward(&[effnet_input()], &ForwardOptions::eval_for_backward())
        .unwrap();
    let mut seed = Tensor::zeros(&[1, 1000]);
    seed.data_mut()[CLASS] = 1.0;
    let d_x = &input_gradient(&g, &pass, seed); // (1, 3, 224, 224)
    let (lo, hi) = (80usize, 144usize);
    let mut window = Vec::new();
    for c in 0..3 {
        for y in lo..hi {
            let row = (c * 224 + y) * 224;
            window.extend_from_slice(&d_x.data()[row + lo..row + hi]);
        }
    }
    let want = npy_f32("effnet.grad_window.npy");
    let err = rel_err(&window, want.data());
    eprintln!("effnet input gradient window vs PyTorch: relative error {err:e}");
    assert!(
        err < 1e-3,
        "input gradient window differs from PyTorch by {err:e}"
    );
    let norms: Vec<f32> = (0..3)
        .map(|c| {
            d_x.data()[c * 224 * 224..(c + 1) * 224 * 224]
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .sqrt() as f32
        })
        .collect();
    let want = npy_f32("effnet.grad_norms.npy");
    assert!(
        rel_err(&norms, want.data()) < 1e-3,
        "gradient norms {norms:?} vs PyTorch {:?}",
        want.data()
    );
}

// ---------------------------------------------------------------- exporter idioms

/// Imports a fixture, runs it on its stored input (batch 2, declared 1) and compares with
/// onnxruntime's output.
fn check_against_onnxruntime(name: &str) -> ImportedModel {
    let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
    let g = Graph::from_def(m.def.clone()).unwrap();
    let x = npy_f32(&format!("{name}.input.npy"));
    let pass = g.forward(&[x], &ForwardOptions::eval()).unwrap();
    let y = pass.get(g.outputs()[0]).unwrap();
    let want = npy_f32(&format!("{name}.output.npy"));
    assert_eq!(y.shape(), want.shape(), "{name}");
    let err = rel_err(y.data(), want.data());
    assert!(
        err < 1e-5,
        "{name}: output differs from onnxruntime by {err:e}"
    );
    m
}

fn kinds(m: &ImportedModel) -> Vec<&'static str> {
    m.def.nodes.iter().map(|n| n.op.kind_name()).collect()
}

#[test]
fn keras_idioms_structure() {
    let m = import_onnx(&fixture("keras_idioms.onnx")).unwrap();
    assert_eq!(m.input_shape, vec![1, 9, 9, 3]);
    assert_eq!(
        kinds(&m),
        [
            "Transpose",
            "Conv2d",
            "Mul",
            "Add",
            "Clip",
            "GlobalAvgPool",
            "Reshape",
            "MatMul",
            "Add",
            "Softmax"
        ]
    );
    let conv = m.def.nodes.iter().find_map(|n| match &n.op {
        Op::Conv2d(s) => Some(s.clone()),
        _ => None,
    });
    // 9 -> 5 with a 3x3 stride-2 window: total padding 2, SAME_UPPER splits it 1/1.
    assert_eq!(
        conv.unwrap().padding,
        convscope::engine::ops::Padding2d::uniform(1)
    );
    let squeeze = m.def.nodes.iter().find(|n| n.name == "squeeze").unwrap();
    assert_eq!(squeeze.op, Op::Reshape { shape: vec![0, 4] });
    let scale = m.def.params.iter().find(|p| p.name == "bn_scale").unwrap();
    assert!(!scale.trainable, "constant operands of Mul are buffers");
    let dense = m.def.params.iter().find(|p| p.name == "dense_w").unwrap();
    assert!(dense.trainable);
}

#[test]
fn keras_idioms_match_onnxruntime() {
    check_against_onnxruntime("keras_idioms");
}

#[test]
fn torch_flatten_folds_to_a_batch_preserving_reshape() {
    let m = import_onnx(&fixture("torch_flatten.onnx")).unwrap();
    assert_eq!(
        kinds(&m),
        [
            "Conv2d",
            "BatchNorm2d",
            "Relu",
            "MaxPool2d",
            "Reshape",
            "Gemm"
        ]
    );
    let reshape = m.def.nodes.iter().find(|n| n.name == "reshape").unwrap();
    assert_eq!(reshape.op, Op::Reshape { shape: vec![0, 36] });
    let Op::BatchNorm2d(bn) = &m.def.nodes[1].op else {
        panic!("not a batch norm")
    };
    assert!(
        (bn.momentum - 0.01).abs() < 1e-6,
        "ONNX momentum 0.99 is PyTorch's 0.01, got {}",
        bn.momentum
    );
    let trainable: Vec<(&str, bool)> = m
        .def
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.trainable))
        .collect();
    assert!(trainable.contains(&("bn_m", false)) && trainable.contains(&("bn_v", false)));
    assert!(trainable.contains(&("bn_g", true)) && trainable.contains(&("fc_w", true)));
}

#[test]
fn torch_flatten_matches_onnxruntime() {
    check_against_onnxruntime("torch_flatten");
}

#[test]
fn pools_and_activations_match_onnxruntime() {
    let m = check_against_onnxruntime("pools_acts");
    let avg = m.def.nodes.iter().find(|n| n.name == "avg").unwrap();
    let Op::AvgPool2d(s) = &avg.op else {
        panic!("not an average pool")
    };
    assert!(s.ceil_mode && s.count_include_pad);
}

#[test]
fn opset9_and_opset13_forms_import_alike() {
    let old = import_onnx(&fixture("opset9_clip_pad_softmax.onnx")).unwrap();
    let new = import_onnx(&fixture("opset13_clip_pad_softmax.onnx")).unwrap();
    assert_eq!((old.opset, new.opset), (9, 13));
    let ops = |m: &ImportedModel| m.def.nodes.iter().map(|n| n.op.clone()).collect::<Vec<_>>();
    assert_eq!(ops(&old), ops(&new));
    let o = ops(&old);
    assert!(
        matches!(&o[0], Op::Pad(p) if p.value == 0.25 && p.pads == vec![(0, 0), (0, 0), (1, 1), (1, 1)])
    );
    assert!(matches!(
        o[1],
        Op::Activation(convscope::engine::ops::Activation::Clip {
            min: -0.5,
            max: 0.5
        })
    ));
    assert!(matches!(o[2], Op::Dropout { p } if (p - 0.3).abs() < 1e-6));
    assert_eq!(o.last(), Some(&Op::Softmax { axis: 1 }));
}

#[test]
fn opset9_clip_pad_softmax_matches_onnxruntime() {
    check_against_onnxruntime("opset9_clip_pad_softmax");
}

#[test]
fn opset13_clip_pad_softmax_matches_onnxruntime() {
    check_against_onnxruntime("opset13_clip_pad_softmax");
}

#[test]
fn typed_fields_decode_like_raw_data() {
    let mut m = model_bytes("torch_flatten.onnx");
    let reference = import_model(&m).unwrap();
    let param = |im: &ImportedModel, name: &str| {
        im.def
            .params
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .tensor
            .clone()
    };
    // conv_w as float_data, conv_b as double_data, fc_b as float16 bits in int32_data.
    let t = initializer(&mut m, "conv_w");
    t.float_data = t
        .raw_data
        .take()
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let t = initializer(&mut m, "conv_b");
    t.double_data = t
        .raw_data
        .take()
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    t.data_type = Some(proto::tensor_proto::DataType::Double as i32);
    let t = initializer(&mut m, "fc_b");
    t.raw_data = None;
    t.int32_data = vec![0x3c00, 0xc000, 0x3800]; // 1, -2, 0.5
    t.data_type = Some(proto::tensor_proto::DataType::Float16 as i32);
    let typed = import_model(&m).unwrap();
    assert_eq!(param(&typed, "conv_w"), param(&reference, "conv_w"));
    assert_eq!(param(&typed, "conv_b"), param(&reference, "conv_b"));
    assert_eq!(param(&typed, "fc_b").data(), &[1.0, -2.0, 0.5]);
}

#[test]
fn int64_shape_constants_in_typed_fields_fold() {
    // The Concat target of the flatten idiom as an int64_data initializer instead of a Constant.
    let mut m = model_bytes("torch_flatten.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node.retain(|n| n.name() != "minus1_node");
    g.initializer.push(TensorProto {
        name: Some("minus1".into()),
        dims: vec![1],
        data_type: Some(proto::tensor_proto::DataType::Int64 as i32),
        int64_data: vec![-1],
        ..Default::default()
    });
    let im = import_model(&m).unwrap();
    let reshape = im.def.nodes.iter().find(|n| n.name == "reshape").unwrap();
    assert_eq!(reshape.op, Op::Reshape { shape: vec![0, 36] });
}

#[test]
fn external_data_beside_the_model_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = model_bytes("torch_flatten.onnx");
    let reference = import_model(&m).unwrap();
    let t = initializer(&mut m, "fc_w");
    let raw = t.raw_data.take().unwrap();
    let mut blob = vec![7u8; 16];
    blob.extend_from_slice(&raw);
    std::fs::write(dir.path().join("weights.bin"), &blob).unwrap();
    t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
    let kv = |k: &str, v: String| StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v),
    };
    t.external_data = vec![
        kv("location", "weights.bin".into()),
        kv("offset", "16".into()),
        kv("length", raw.len().to_string()),
    ];
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let im = import_onnx(&path).unwrap();
    let fc = |im: &ImportedModel| {
        im.def
            .params
            .iter()
            .find(|p| p.name == "fc_w")
            .unwrap()
            .tensor
            .clone()
    };
    assert_eq!(fc(&im), fc(&reference));

    // The same tensor pointing outside the model's directory is refused.
    let t = initializer(&mut m, "fc_w");
    t.external_data[0] = kv("location", "../weights.bin".into());
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let err = import_onnx(&path).unwrap_err().to_string();
    assert!(
        err.contains("model.onnx")
            && err.contains("leaves the model's directory")
            && err.contains("fc_w"),
        "{err}"
    );
    let t = initializer(&mut m, "fc_w");
    t.external_data[0] = kv("location", "/etc/passwd".into());
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    assert!(
        import_onnx(&path)
            .unwrap_err()
            .to_string()
            .contains("leaves the model's directory")
    );
}

// ---------------------------------------------------------------- bad files

#[test]
fn truncated_file_is_refused() {
    let bytes = std::fs::read(fixture("torch_flatten.onnx")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.onnx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = import_onnx(&path).unwrap_err();
    assert!(matches!(err.problem, Problem::Decode(_)), "{err}");
    assert!(
        err.to_string().starts_with("cannot import '") && err.to_string().contains("cut.onnx"),
        "{err}"
    );
}

#[test]
fn garbage_bytes_are_refused() {
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = import_onnx_bytes(&garbage, None).unwrap_err();
    assert!(
        matches!(err.problem, Problem::Decode(_) | Problem::Invalid(_)),
        "{err}"
    );
    let err = import_onnx_bytes(b"", None).unwrap_err();
    assert!(
        err.to_string().contains("declares no opset") || err.to_string().contains("no graph"),
        "{err}"
    );
}

#[test]
fn a_weight_that_does_not_fit_its_node_names_the_file() {
    // conv_w's dims reordered (same element count): its input channels no longer fit the image
    let mut m = model_bytes("torch_flatten.onnx");
    let t = initializer(&mut m, "conv_w");
    assert!(
        t.dims[0] != t.dims[1],
        "the test needs unequal channel counts"
    );
    t.dims.swap(0, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("misfit.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let err = convscope::models::bundled::open_onnx(&path)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("misfit.onnx") && err.contains("channels"),
        "{err}"
    );
}

#[test]
fn raw_data_length_disagreeing_with_dims_is_refused() {
    let mut m = model_bytes("torch_flatten.onnx");
    initializer(&mut m, "conv_w")
        .raw_data
        .as_mut()
        .unwrap()
        .truncate(100);
    let err = import_model(&m).unwrap_err().to_string();
    assert!(
        err.contains("conv_w") && err.contains("raw_data holds 100 bytes"),
        "{err}"
    );
}

#[test]
fn absurd_dims_are_refused_before_allocating() {
    let mut m = model_bytes("torch_flatten.onnx");
    let t = initializer(&mut m, "fc_w");
    t.dims = vec![1 << 20, 1 << 20];
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("fc_w") && err.contains("2^32"), "{err}");
}

#[test]
fn every_unsupported_op_is_named_at_once() {
    let mut m = model_bytes("torch_flatten.onnx");
    let g = m.graph.as_mut().unwrap();
    g.node[2].op_type = Some("LSTM".into());
    g.node[3].op_type = Some("NonMaxSuppression".into());
    let err = import_model(&m).unwrap_err();
    let Problem::Unsupported(list) = &err.problem else {
        panic!("{err}")
    };
    assert_eq!(list.len(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("LSTM (node 'relu')") && msg.contains("NonMaxSuppression (node 'pool')"),
        "{msg}"
    );
}

/// An Einsum that is not a batched matrix product is refused with its equation named.
#[test]
fn an_einsum_other_than_a_batched_product_is_refused_by_equation() {
    let mut m = model_bytes("maxvit_legacy.onnx");
    let g = m.graph.as_mut().unwrap();
    let node = g.node.iter_mut().find(|n| n.op_type() == "Einsum").unwrap();
    for a in node.attribute.iter_mut().filter(|a| a.name() == "equation") {
        a.s = Some(b"bghid,bghjd->bgij".to_vec());
    }
    let err = import_model(&m).unwrap_err().to_string();
    assert!(
        err.contains("bghid,bghjd->bgij") && err.contains("Einsum"),
        "{err}"
    );
    // a batched-product equation of another rank than its operands: refused, not a panic
    let mut m = model_bytes("maxvit_legacy.onnx");
    let g = m.graph.as_mut().unwrap();
    let node = g.node.iter_mut().find(|n| n.op_type() == "Einsum").unwrap();
    for a in node.attribute.iter_mut().filter(|a| a.name() == "equation") {
        a.s = Some(b"abghid,abghjd->abghij".to_vec());
    }
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("ranks 5 and 5"), "{err}");
}

#[test]
fn non_finite_weights_are_refused_by_name() {
    let mut m = model_bytes("torch_flatten.onnx");
    let t = initializer(&mut m, "conv_b");
    t.raw_data.as_mut().unwrap()[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("conv_b") && err.contains("NaN"), "{err}");
}

#[test]
fn dangling_inputs_and_cycles_are_errors() {
    let mut m = model_bytes("torch_flatten.onnx");
    m.graph.as_mut().unwrap().node[2].input[0] = "nowhere".into();
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("'relu'") && err.contains("'nowhere'"), "{err}");

    let mut m = model_bytes("torch_flatten.onnx");
    // conv reads relu's output: conv -> bn -> relu -> conv.
    m.graph.as_mut().unwrap().node[0].input[0] = "relu".into();
    let g = m.graph.as_mut().unwrap();
    g.input[0].name = Some("unused".into());
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("cycle") && err.contains("'conv'"), "{err}");
}

#[test]
fn softmax_coerced_to_2d_on_a_middle_axis_is_refused() {
    let mut m = model_bytes("opset9_clip_pad_softmax.onnx");
    let g = m.graph.as_mut().unwrap();
    // Softmax over axis 1 of the 4-D clip output: opset 9 flattens [N, C*H*W].
    let soft = g.node.iter_mut().find(|n| n.name() == "softmax").unwrap();
    soft.input[0] = "clip".into();
    let err = import_model(&m).unwrap_err().to_string();
    assert!(err.contains("softmax") && err.contains("2-D"), "{err}");
}

#[test]
fn missing_file_is_named() {
    let err = import_onnx(Path::new("no/such/model.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot import 'no/such/model.onnx': the file cannot be read"),
        "{err}"
    );
}

// ---------------------------------------------------------------- ReduceMean (adaptive pooling)

/// Adaptive average pooling as the legacy exporter (opset 13: axes attribute, keepdims=1, then
/// Flatten) and PyTorch's default exporter (opset 18: axes (-1, -2) as an input, keepdims=0)
/// write it: the engine's global average pool, outputs within 1e-5 of onnxruntime.
#[test]
fn reduce_mean_over_spatial_axes_matches_onnxruntime_in_both_forms() {
    for name in ["opset13_reduce_mean", "opset18_reduce_mean"] {
        let m = check_against_onnxruntime(name);
        assert!(
            kinds(&m).contains(&"GlobalAvgPool"),
            "{name}: {:?}",
            kinds(&m)
        );
    }
}

/// The input gradient of the sum of the logits through the imported opset-18 graph (ReduceMean
/// with keepdims=0 becomes a pool and a reshape) against central finite differences in f64
/// sums of the f32 forward, step 1e-2: within 1e-2 relative to the largest entry (the
/// function is piecewise linear, so only ReLU kinks within a step can differ).
#[test]
fn reduce_mean_input_gradient_matches_finite_differences() {
    assert_input_gradient_matches_finite_differences("opset18_reduce_mean", 1e-2);
}

/// The input gradient of the sum of a fixture's outputs against central finite differences
/// (step `h`, f64 sums of the f32 forward), within 1e-2 relative to the largest entry.
fn assert_input_gradient_matches_finite_differences(name: &str, h: f32) {
    let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
    let g = Graph::from_def(m.def.clone()).unwrap();
    let x = npy_f32(&format!("{name}.input.npy"));
    let out = g.outputs()[0];
    let total = |x: &Tensor| -> f64 {
        let pass = g
            .forward(std::slice::from_ref(x), &ForwardOptions::eval())
            .unwrap();
        pass.get(out)
            .unwrap()
            .data()
            .iter()
            .map(|&v| f64::from(v))
            .sum()
    };
    let pass = g
        .forward(
            std::slice::from_ref(&x),
            &ForwardOptions::eval_for_backward(),
        )
        .unwrap();
    let y = pass.get(out).unwrap();
    let seed = Tensor::new(y.shape().to_vec(), vec![1.0; y.numel()]).unwrap();
    let dx = &input_gradient(&g, &pass, seed);
    assert_eq!(dx.shape(), x.shape());
    let mut fd = Vec::with_capacity(x.numel());
    for i in 0..x.numel() {
        let (mut up, mut down) = (x.clone(), x.clone());
        up.data_mut()[i] += h;
        down.data_mut()[i] -= h;
        fd.push(((total(&up) - total(&down)) / (2.0 * f64::from(h))) as f32);
    }
    let err = rel_err(dx.data(), &fd);
    assert!(
        err < 1e-2,
        "{name}: input gradient differs from finite differences by {err:e}"
    );
}

/// A mean over the channel axis runs as the general reduction.
#[test]
fn reduce_mean_over_channels_imports_as_a_reduction() {
    let m = import_onnx(&fixture("reduce_mean_channels.onnx")).unwrap();
    assert_eq!(kinds(&m), ["ReduceMean"]);
}

/// Sum, mean, max, min and L2 over channel, row and column axes, with and without keepdims,
/// axes as attributes (opset 13) and as inputs (opset 18): outputs within 1e-5 of
/// onnxruntime, and the input gradient within 1e-2 of finite differences of step 1e-3 (max and
/// min are piecewise linear: a change of winner within a step of 1e-2 did differ, by 1.9e-2).
#[test]
fn reductions_match_onnxruntime_and_finite_differences() {
    for name in ["opset13_reduce_ops", "opset18_reduce_ops"] {
        let m = check_against_onnxruntime(name);
        for kind in [
            "ReduceSum",
            "ReduceMean",
            "ReduceMax",
            "ReduceMin",
            "ReduceL2",
        ] {
            assert!(kinds(&m).contains(&kind), "{name}: {:?}", kinds(&m));
        }
        assert_input_gradient_matches_finite_differences(name, 1e-3);
    }
}

/// A LayerNorm written out as the legacy exporter does below opset 17 (ReduceMean, Sub, Pow 2,
/// Sqrt, Div, scale and shift), then Reciprocal and Neg, all of run-time values: output within
/// 1e-5 of onnxruntime and the input gradient within 1e-2 of finite differences (step 1e-3).
#[test]
fn decomposed_layer_norm_and_runtime_unary_ops_match_onnxruntime() {
    let name = "opset13_decomposed_layer_norm";
    let m = check_against_onnxruntime(name);
    for kind in ["ReduceMean", "Pow", "Sqrt", "Reciprocal", "Neg"] {
        assert!(kinds(&m).contains(&kind), "{:?}", kinds(&m));
    }
    assert_input_gradient_matches_finite_differences(name, 1e-3);
}

/// Nearest upsampling by whole factors from Resize with scales (opset 13, half_pixel), Resize
/// with sizes (opset 11, asymmetric + floor) and Upsample (opset 9): outputs within 1e-5 of
/// onnxruntime, input gradients within 1e-2 of finite differences (step 1e-3).
#[test]
fn nearest_resizes_match_onnxruntime_and_finite_differences() {
    for name in [
        "opset13_resize_scales",
        "opset11_resize_sizes",
        "opset9_upsample",
    ] {
        let m = check_against_onnxruntime(name);
        assert!(kinds(&m).contains(&"Upsample"), "{name}: {:?}", kinds(&m));
        assert_input_gradient_matches_finite_differences(name, 1e-3);
    }
}

/// Bilinear resizing from Resize with scales (opset 13, half_pixel, a non-whole 1.5), with
/// sizes (opset 11, align_corners; pytorch_half_pixel shrinking to 3x2) and Upsample in
/// bilinear mode (opset 9, asymmetric): outputs within 1e-5 of onnxruntime, input gradients
/// within 1e-2 of finite differences (step 1e-3). A cubic Resize is refused with the node and
/// the mode named.
#[test]
fn bilinear_resizes_match_onnxruntime_and_finite_differences() {
    for name in [
        "opset13_resize_linear",
        "opset11_resize_linear_align",
        "opset11_resize_linear_down",
        "opset9_upsample_bilinear",
    ] {
        let m = check_against_onnxruntime(name);
        assert!(kinds(&m).contains(&"Bilinear"), "{name}: {:?}", kinds(&m));
        assert_input_gradient_matches_finite_differences(name, 1e-3);
    }
    let err = import_onnx(&fixture("resize_cubic.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cubic_up") && err.contains("\"cubic\""),
        "{err}"
    );
}

/// A classifier ending in LogSoftmax (opset 13 over the last axis, opset 11 over axis 1):
/// outputs within 1e-5 of onnxruntime, input gradients within 1e-2 of finite differences
/// (step 1e-3), and explanations score the logits before it, as they do before a Softmax.
#[test]
fn log_softmax_matches_onnxruntime_and_explains_its_logits() {
    for name in ["opset13_log_softmax", "opset11_log_softmax"] {
        let m = check_against_onnxruntime(name);
        assert_eq!(kinds(&m).last(), Some(&"LogSoftmax"), "{name}");
        assert_input_gradient_matches_finite_differences(name, 1e-3);
        let g = Graph::from_def(m.def.clone()).unwrap();
        let head = convscope::explain::ScoreHead::find(&g).unwrap();
        assert_eq!(g.value(head.value).name, "logits", "{name}");
    }
}

/// A reduction over the batch axis is refused with the node named.
#[test]
fn reduction_over_the_batch_axis_is_refused_by_name() {
    let err = import_onnx(&fixture("reduce_batch_axis.onnx"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch_sum") && err.contains("batch axis"),
        "{err}"
    );
}

/// ShuffleNet's channel split of a run-time value (sizes as an input at opset 13; an uneven
/// `num_outputs` split at opset 18): one engine Slice per part, outputs within 1e-5 of
/// onnxruntime.
#[test]
fn split_of_a_run_time_value_matches_onnxruntime() {
    for name in ["opset13_split", "opset18_split"] {
        let m = check_against_onnxruntime(name);
        assert_eq!(
            kinds(&m).iter().filter(|k| **k == "Slice").count(),
            2,
            "{name}: {:?}",
            kinds(&m)
        );
    }
}

/// ConvNeXt's block as the legacy exporter writes it (LayerNormalization on channels-last
/// values, GELU decomposed through Erf) and the opset-20 `Gelu` operator in both
/// approximations with a two-axis LayerNormalization: outputs within 1e-5 of onnxruntime.
#[test]
fn layer_norm_and_gelu_match_onnxruntime() {
    let m = check_against_onnxruntime("opset17_layer_norm");
    let k = kinds(&m);
    assert!(k.contains(&"LayerNorm") && k.contains(&"Erf"), "{k:?}");
    let m = check_against_onnxruntime("opset20_gelu");
    assert_eq!(
        kinds(&m).iter().filter(|k| **k == "Gelu").count(),
        2,
        "{:?}",
        kinds(&m)
    );
}

/// Runs a transformer fixture (`<name>.onnx`, a batch of 2 inputs, onnxruntime's logits per
/// item, PyTorch's float64 gradient of logit 1 of item 0) item by item: logits within 1e-5 of
/// onnxruntime's, the input gradient within 1e-4 (relative to its largest entry) of
/// PyTorch's. Both exporters write attention reshapes as literals traced at batch 1 whose
/// batch placement the file does not determine (`[L, N, E]` as `[L, E]` may be `[L·N, E]` or
/// `[L, N·E]`), so such graphs run at batch 1, as onnxruntime runs them; a batch of 2 must
/// then be a clear error, not a wrong answer. Returns the op counts.
fn check_transformer(name: &str) -> BTreeMap<&'static str, usize> {
    let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
    let counts = op_counts(&m);
    let g = Graph::from_def(m.def).unwrap();
    let x = npy_f32(&format!("{name}.input.npy")); // (2, 3, 32, 32)
    let want = npy_f32(&format!("{name}.output.npy")); // (2, 5)
    let item = 3 * 32 * 32;
    let out = g.outputs()[0];
    for i in 0..2 {
        let xi = Tensor::new(vec![1, 3, 32, 32], x.data()[i * item..][..item].to_vec()).unwrap();
        let pass = g
            .forward(&[xi], &ForwardOptions::eval_for_backward())
            .unwrap();
        let y = pass.get(out).unwrap();
        let err = rel_err(y.data(), &want.data()[i * 5..][..5]);
        assert!(
            err < 1e-5,
            "{name} item {i}: logits differ from onnxruntime by {err:e}"
        );
        if i == 0 {
            let mut seed = Tensor::zeros(&[1, 5]);
            seed.data_mut()[1] = 1.0;
            let d_x = input_gradient(&g, &pass, seed);
            let grad = npy_f32(&format!("{name}.grad.npy"));
            let err = rel_err(d_x.data(), &grad.data()[..item]);
            eprintln!("{name}: input gradient vs PyTorch float64: relative error {err:e}");
            assert!(err < 1e-4, "{name}: input gradient differs by {err:e}");
        }
    }
    // the graph knows from its shapes alone whether it runs a batch (callers that batch
    // images, such as the explanation scores, run them one at a time otherwise)
    match g.forward(&[x], &ForwardOptions::eval()) {
        // a graph whose reshapes all placed the batch runs the batch; its logits must agree
        Ok(pass) => {
            let err = rel_err(pass.get(out).unwrap().data(), want.data());
            assert!(err < 1e-5, "{name} at batch 2: logits differ by {err:e}");
            assert_eq!(g.max_batch(), usize::MAX, "{name}");
        }
        Err(e) => {
            assert!(e.to_string().contains("reshape"), "{name}: {e}");
            assert_eq!(g.max_batch(), 1, "{name}");
        }
    }
    counts
}

/// A tiny torchvision ViT from both exporters: the legacy one expands the class token to the
/// batch through Equal/Where shape arithmetic (folded at import, then `RepeatBatch`), the
/// default one concatenates the bare parameter (also `RepeatBatch`).
#[test]
fn vision_transformer_from_both_exporters_matches_onnxruntime_and_torch() {
    for name in ["vit_legacy", "vit_dynamo"] {
        let counts = check_transformer(name);
        for kind in ["RepeatBatch", "LayerNorm", "Softmax", "MatMul"] {
            assert!(counts.contains_key(kind), "{name}: no {kind} in {counts:?}");
        }
    }
}

/// A tiny torchvision Swin Transformer from both exporters: the shifted-window mask (slice
/// assignments folded through ScatterND and Range), torch.roll (Slice + Concat of run-time
/// values), patch merging (step-2 Slices) and, from the default exporter, the `as_strided`
/// Gather after the pool (a reshape).
#[test]
fn swin_transformer_from_both_exporters_matches_onnxruntime_and_torch() {
    for name in ["swin_legacy", "swin_dynamo"] {
        let counts = check_transformer(name);
        for kind in ["Slice", "Concat", "LayerNorm", "Softmax"] {
            assert!(counts.contains_key(kind), "{name}: no {kind} in {counts:?}");
        }
    }
}

/// A tiny torchvision MaxViT from both exporters: attention written as `Einsum` (batched
/// matrix products, one with its second operand transposed).
#[test]
fn maxvit_from_both_exporters_matches_onnxruntime_and_torch() {
    for name in ["maxvit_legacy", "maxvit_dynamo"] {
        let counts = check_transformer(name);
        assert!(
            counts.get("MatMul").is_some_and(|&c| c >= 2),
            "{name}: {counts:?}"
        );
    }
}

/// Grad-CAM at a token layer, found without a reshape transform: on the tiny ViT (patch tokens
/// behind a class token) and Swin (channels-last maps; windows partitioned and, in the second
/// block of each stage, shifted) from both exporters, the default layer is the last block's
/// first norm, read back onto the patch grid, and the map of logit 1 equals pytorch-grad-cam's
/// at that layer with its reshape transform (`tools/make_onnx_fixtures.py`, float64) within
/// 1e-3 of the map's largest value.
#[test]
fn grad_cam_at_token_layers_matches_pytorch_grad_cam() {
    use convscope::explain::Explainer;
    use convscope::explain::Target;
    use convscope::explain::cam::GradCamVariant;
    for (name, reference) in [
        ("vit_legacy", "vit"),
        ("vit_dynamo", "vit"),
        ("swin_legacy", "swin"),
        ("swin_dynamo", "swin"),
    ] {
        let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
        let g = Graph::from_def(m.def).unwrap();
        let x = npy_f32(&format!("{name}.input.npy"));
        let x0 = Tensor::new(vec![1, 3, 32, 32], x.data()[..3 * 32 * 32].to_vec()).unwrap();
        let ex = Explainer::new(&g).unwrap();
        let layer = ex.default_cam_layer().unwrap();
        let cam = ex
            .grad_cam(&x0, Target::Class(1), None, GradCamVariant::GradCam)
            .unwrap();
        let want = npy_f32(&format!("{reference}.gradcam_raw.npy")); // (4, 4)
        assert_eq!(
            (cam.raw.height(), cam.raw.width()),
            (4, 4),
            "{name}: layer {}",
            g.value(layer).name
        );
        let err = rel_err(cam.raw.data(), want.data());
        eprintln!(
            "{name}: Grad-CAM at {} vs pytorch-grad-cam: {err:e} of the largest value",
            g.value(layer).name
        );
        assert!(err < 1e-3, "{name}: Grad-CAM differs by {err:e}");
        assert!(want.data().iter().any(|&v| v > 0.0), "{name}: empty map");
    }
}

/// Swin's shifted windows read back onto the grid: in the tiny Swin's second block (shift 2 on
/// an 8x8 grid, `torch.roll` exported as slices and a concatenation, then the window partition
/// as reshapes and a transpose), the windowed tokens `[4 windows, 16, c]` that enter the
/// attention hold the block's normalised map in another order; read as channel planes, both
/// are the same map, element for element.
#[test]
fn swin_windowed_tokens_read_back_unshifted() {
    use convscope::engine::Keep;
    use convscope::explain::layout::Layouts;
    let m = import_onnx(&fixture("swin_legacy.onnx")).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let node_output = |name: &str| {
        g.nodes()
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .output
    };
    let norm = node_output("/features/features.1/features.1.1/norm1/LayerNormalization");
    let windows = node_output("/features/features.1/features.1.1/attn/Reshape_3");
    assert_eq!(g.value(windows).shape, vec![4, 16, 8]);
    // the roll is really in between: the first window's first token is not grid pixel 0
    let shifted = g.nodes().iter().any(|n| {
        n.name
            .starts_with("/features/features.1/features.1.1/attn/Concat")
            && matches!(n.op, Op::Concat { axis: 1 })
    });
    assert!(shifted, "no roll in the shifted block");
    let layouts = Layouts::of(&g);
    let x = npy_f32("swin_legacy.input.npy");
    let x0 = Tensor::new(vec![1, 3, 32, 32], x.data()[..3 * 32 * 32].to_vec()).unwrap();
    let pass = g
        .forward(
            &[x0],
            &ForwardOptions {
                keep: Keep::Values(vec![norm, windows]),
                ..ForwardOptions::eval()
            },
        )
        .unwrap();
    let read = |v| {
        layouts
            .get(&g, v)
            .unwrap()
            .to_planes(pass.get(v).unwrap())
            .unwrap()
    };
    let (a, b) = (read(norm), read(windows));
    assert_eq!(a.shape(), &[1, 8, 8, 8]);
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.data(), b.data());
    // and the raw window order differs from the grid order (the test would pass vacuously
    // if the roll and partition were the identity)
    assert_ne!(
        pass.get(windows).unwrap().data(),
        pass.get(norm).unwrap().data()
    );
}

/// Attention rollout on the tiny ViT from both exporters equals a float64 reference computed
/// from each block's own `nn.MultiheadAttention` weights (`tools/make_onnx_fixtures.py`) within
/// 1e-5 of its largest value; on Swin (attention within windows) it is refused with a sentence
/// that says why.
#[test]
fn attention_rollout_matches_a_pytorch_reference() {
    use convscope::explain::Explainer;
    let want = npy_f32("vit.rollout.npy"); // (4, 4)
    for name in ["vit_legacy", "vit_dynamo"] {
        let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
        let g = Graph::from_def(m.def).unwrap();
        let x = npy_f32(&format!("{name}.input.npy"));
        let x0 = Tensor::new(vec![1, 3, 32, 32], x.data()[..3 * 32 * 32].to_vec()).unwrap();
        let ex = Explainer::new(&g).unwrap();
        let r = ex.attention_rollout(&x0).unwrap();
        assert_eq!(r.layers.len(), 2, "{name}: one softmax per block");
        assert_eq!((r.raw.height(), r.raw.width()), (4, 4));
        let err = rel_err(r.raw.data(), want.data());
        eprintln!("{name}: attention rollout vs PyTorch float64: {err:e} of the largest value");
        assert!(err < 1e-5, "{name}: rollout differs by {err:e}");
        assert_eq!((r.map.height(), r.map.width()), (32, 32));
    }
    let m = import_onnx(&fixture("swin_legacy.onnx")).unwrap();
    let g = Graph::from_def(m.def).unwrap();
    let x0 = Tensor::zeros(&[1, 3, 32, 32]);
    let e = Explainer::new(&g)
        .unwrap()
        .attention_rollout(&x0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("within windows of 16 tokens"), "{e}");
}

/// Comparisons and Where on run-time values, as attention masks are written (Greater, Less,
/// Equal, Not, then Where with a constant −∞ side before a Softmax): outputs within 1e-5 of
/// onnxruntime (the −∞ kept as the lowest float gives the same zero weights), input gradients
/// within 1e-2 of finite differences (step 1e-3; no value sits within a step of a threshold).
#[test]
fn runtime_comparisons_and_where_match_onnxruntime() {
    let name = "opset13_where_mask";
    let m = check_against_onnxruntime(name);
    let k = kinds(&m);
    for kind in ["Greater", "Less", "Equal", "Where", "Softmax"] {
        assert!(k.contains(&kind), "no {kind} in {k:?}");
    }
    assert_input_gradient_matches_finite_differences(name, 1e-3);
}

/// Expand of a run-time value along a dimension of known size (a per-column mean spread back
/// over the rows): outputs within 1e-5 of onnxruntime, input gradients within 1e-2 of finite
/// differences (step 1e-3), at batch 2.
#[test]
fn runtime_expand_matches_onnxruntime() {
    let name = "opset13_expand_runtime";
    let m = check_against_onnxruntime(name);
    assert!(kinds(&m).contains(&"Add"), "{:?}", kinds(&m));
    assert_input_gradient_matches_finite_differences(name, 1e-3);
}

/// A CNN whose file leaves the input's height and width open (`dynamic_axes` on H and W) is
/// imported at a given size (a preset's; 224x224 by default) and then matches onnxruntime run
/// at that size within 1e-5; an open channel count is still refused with its position named.
#[test]
fn open_height_and_width_resolve_to_the_given_size() {
    use convscope::models::onnx::import_onnx_sized;
    let name = "opset13_open_spatial";
    let m = import_onnx(&fixture(&format!("{name}.onnx"))).unwrap();
    assert_eq!(m.input_shape, vec![1, 3, 224, 224]);
    let m = import_onnx_sized(&fixture(&format!("{name}.onnx")), [6, 7]).unwrap();
    assert_eq!(m.input_shape, vec![1, 3, 6, 7]);
    let g = Graph::from_def(m.def).unwrap();
    let x = npy_f32(&format!("{name}.input.npy")); // (2, 3, 6, 7)
    let want = npy_f32(&format!("{name}.output.npy"));
    let pass = g.forward(&[x], &ForwardOptions::eval()).unwrap();
    let got = pass.get(g.outputs()[0]).unwrap();
    let err = rel_err(got.data(), want.data());
    assert!(err < 1e-5, "{name}: differs from onnxruntime by {err:e}");
    // the channel count left open: refused, position named
    use convscope::models::onnx::proto::tensor_shape_proto::dimension::Value as D;
    use convscope::models::onnx::proto::type_proto::Value as T;
    let mut proto = model_bytes(&format!("{name}.onnx"));
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(T::TensorType(tt)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("the input is a tensor")
    };
    tt.shape.as_mut().unwrap().dim[1].value = Some(D::DimParam("C".into()));
    let err = import_model(&proto).unwrap_err().to_string();
    assert!(err.contains("position 1"), "{err}");
}
