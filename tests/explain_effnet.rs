//! Explanations of EfficientNet-Lite0 (ONNX import) against PyTorch fixtures made by
//! tools/make_explain_fixtures.py, plus behaviour checks on the sample photos: Grad-CAM finds
//! the cat, deletion/insertion beat a random map, and the model-randomisation sanity check.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::ReadNpyExt;

use convscope::engine::{Graph, Tensor};
use convscope::explain::cam::GradCamVariant;
use convscope::explain::faithfulness::{CurveOptions, model_randomisation_check};
use convscope::explain::{Control, Explainer, Map, Target};

const LAYER: &str = "/_head_act/Clip_output_0";
const CAT: usize = 285;
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn shared() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.join("data/models/efficientnet_lite0.onnx").exists(),
        "these tests need the shared data at {} (data/models/efficientnet_lite0.onnx)",
        p.display()
    );
    p
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/explain")
        .join(name)
}

fn load_f32(name: &str) -> ArrayD<f32> {
    let f = std::fs::File::open(fixture(name)).unwrap();
    ArrayD::<f32>::read_npy(f).unwrap()
}

/// The model input, rebuilt exactly as the fixture script does: (u8 / 255 - mean) / std.
fn input(image: &str) -> Tensor {
    let f = std::fs::File::open(fixture(&format!("{image}_u8.npy"))).unwrap();
    let u8 = ArrayD::<u8>::read_npy(f).unwrap(); // (224, 224, 3)
    let mut x = ArrayD::<f32>::zeros(IxDyn(&[1, 3, 224, 224]));
    for ((y, xx, c), &v) in u8
        .into_dimensionality::<ndarray::Ix3>()
        .unwrap()
        .indexed_iter()
    {
        x[[0, c, y, xx]] = (v as f32 / 255.0 - MEAN[c]) / STD[c];
    }
    Tensor::from_array(x)
}

fn model() -> Graph {
    let path = shared().join("data/models/efficientnet_lite0.onnx");
    let m = convscope::models::onnx::import_onnx(&path).unwrap();
    Graph::from_def(m.def).unwrap()
}

/// max |a - b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The q-quantile of |a - b| / max |b|.
fn quantile_rel_err(a: &[f32], b: &[f32], q: f64) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mut e: Vec<f32> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .collect();
    e.sort_by(f32::total_cmp);
    e[((e.len() - 1) as f64 * q) as usize]
}

fn every_4th(data: &[f32], planes: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for p in 0..planes {
        for y in (0..224).step_by(4) {
            for x in (0..224).step_by(4) {
                out.push(data[p * 224 * 224 + y * 224 + x]);
            }
        }
    }
    out
}

#[test]
fn gradcam_gradcampp_saliency_match_pytorch() {
    let g = model();
    let ex = Explainer::new(&g).unwrap();
    let x = input("chelsea");
    let layer = ex.value(LAYER).unwrap();
    assert_eq!(ex.default_cam_layer().unwrap(), layer);

    let cam = ex
        .grad_cam(&x, Target::Class(CAT), None, GradCamVariant::GradCam)
        .unwrap();
    let e_w = rel_err(
        &cam.weights,
        load_f32("chelsea_gradcam_weights.npy").as_slice().unwrap(),
    );
    let e_raw = rel_err(
        cam.raw.data(),
        load_f32("chelsea_gradcam_raw.npy").as_slice().unwrap(),
    );
    let e_map = rel_err(
        &every_4th(cam.map.data(), 1),
        load_f32("chelsea_gradcam.npy").as_slice().unwrap(),
    );
    let pp = ex
        .grad_cam(
            &x,
            Target::Class(CAT),
            Some(layer),
            GradCamVariant::GradCamPlusPlus,
        )
        .unwrap();
    let e_pp = rel_err(
        pp.raw.data(),
        load_f32("chelsea_gradcampp_raw.npy").as_slice().unwrap(),
    );
    let sal = ex.saliency(&x, Target::Class(CAT)).unwrap();
    if let Ok(p) = std::env::var("DUMP_SALIENCY") {
        use ndarray_npy::WriteNpyExt;
        let a = ndarray::ArrayD::from_shape_vec(IxDyn(&[3, 224, 224]), sal.raw.data().to_vec())
            .unwrap();
        a.write_npy(std::fs::File::create(p).unwrap()).unwrap();
    }
    let e_sal = rel_err(
        &every_4th(sal.raw.data(), 3),
        load_f32("chelsea_saliency_raw.npy").as_slice().unwrap(),
    );
    let e_salmap = rel_err(
        &every_4th(sal.map.data(), 1),
        load_f32("chelsea_saliency.npy").as_slice().unwrap(),
    );
    println!(
        "relative errors vs PyTorch: gradcam weights {e_w:.2e}, raw {e_raw:.2e}, map {e_map:.2e}; \
         gradcam++ raw {e_pp:.2e}; saliency raw {e_sal:.2e}, map {e_salmap:.2e}"
    );
    for e in [e_w, e_raw, e_map, e_pp] {
        assert!(e < 1e-3, "relative error {e}");
    }
    // The input gradient agrees to ~1e-7 almost everywhere, but one ReLU6 unit of block 6
    // (channel 473 at (5, 10) of 14x14) has a pre-activation within 1.2e-6 of 0 (checked in
    // float64 PyTorch): float32 rounding puts it on the other side of the kink here, which
    // changes the gradient inside its receptive field (about 0.4% of the entries, rows
    // 71-110, cols 157-192). So: 1e-3 for 99% of the entries, 2e-2 for the worst.
    let e_sal_p99 = quantile_rel_err(
        &every_4th(sal.raw.data(), 3),
        load_f32("chelsea_saliency_raw.npy").as_slice().unwrap(),
        0.99,
    );
    println!("saliency raw: 99th percentile relative error {e_sal_p99:.2e}");
    assert!(e_sal_p99 < 1e-3 && e_sal < 2e-2 && e_salmap < 2e-2);
    // Top-1 is the cat, and Target::Top resolves to it.
    assert_eq!(ex.resolve(&x, Target::Top).unwrap().class, CAT);
}

#[test]
fn gradcam_peaks_on_the_cat_and_beats_random_maps() {
    let g = model();
    let ex = Explainer::new(&g).unwrap();
    let x = input("chelsea");
    let cam = ex
        .grad_cam(&x, Target::Class(CAT), None, GradCamVariant::GradCam)
        .unwrap();
    let (py, px) = cam.map.argmax();
    println!("Grad-CAM peak (y, x) = ({py}, {px}) in 224x224");
    // The cat's head fills x < 185 (the right edge is background), all rows; see chelsea.png.
    assert!(px < 185, "peak at x {px} is on the background");

    let opts = CurveOptions {
        steps: 16,
        batch: 17,
        ..CurveOptions::default()
    };
    // Random maps as smooth as Grad-CAM's: random 7x7 values upsampled the same way
    // (pixel-level noise would be an unfair baseline: scattered deletions destroy any image).
    // The baseline is the mean AUC over a few of them.
    let mut rng_state = 12345u64;
    let randoms: Vec<Map> = (0..3)
        .map(|_| {
            let coarse: Vec<f32> = (0..49)
                .map(|_| {
                    rng_state = rng_state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (rng_state >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            Map::new(7, 7, coarse).unwrap().resize_bilinear(224, 224)
        })
        .collect();
    for (image, class) in [("chelsea", CAT), ("coffee", 967)] {
        let x = input(image);
        let cam = ex
            .grad_cam(&x, Target::Class(class), None, GradCamVariant::GradCam)
            .unwrap();
        let t = Target::Class(class);
        let del_cam = ex
            .deletion_curve(&x, t, &cam.map, &opts, Control::default())
            .unwrap();
        let ins_cam = ex
            .insertion_curve(&x, t, &cam.map, &opts, Control::default())
            .unwrap();
        let (mut del_rnd, mut ins_rnd) = (0.0, 0.0);
        for r in &randoms {
            let d = ex
                .deletion_curve(&x, t, r, &opts, Control::default())
                .unwrap();
            let i = ex
                .insertion_curve(&x, t, r, &opts, Control::default())
                .unwrap();
            println!(
                "{image}: random map deletion AUC {:.3}, insertion AUC {:.3}",
                d.auc, i.auc
            );
            del_rnd += d.auc / randoms.len() as f32;
            ins_rnd += i.auc / randoms.len() as f32;
        }
        println!(
            "{image}: deletion AUC grad-cam {:.3} random {:.3}; insertion AUC grad-cam {:.3} random {:.3}",
            del_cam.auc, del_rnd, ins_cam.auc, ins_rnd
        );
        assert!(del_cam.auc < del_rnd);
        assert!(ins_cam.auc > ins_rnd);
    }
}

#[test]
fn model_randomisation_sanity_check() {
    let g = model();
    let x = input("chelsea");
    let t = Target::Class(CAT);
    let k = 3;
    let sal = model_randomisation_check(&g, k, 7, |ex| Ok(ex.saliency(&x, t)?.map)).unwrap();
    let cam = model_randomisation_check(&g, k, 7, |ex| {
        Ok(ex.grad_cam(&x, t, None, GradCamVariant::GradCam)?.map)
    })
    .unwrap();
    let guided =
        model_randomisation_check(&g, k, 7, |ex| Ok(ex.guided_backprop(&x, t)?.map)).unwrap();
    println!("randomised layers: {:?}", sal.randomised);
    for (name, r) in [
        ("saliency", &sal),
        ("grad-cam", &cam),
        ("guided backprop", &guided),
    ] {
        println!("{name}: spearman {:.3}, ssim {:.3}", r.spearman, r.ssim);
    }
    assert!(
        guided.spearman > sal.spearman,
        "guided backprop should stay more similar than saliency"
    );
    assert!(
        guided.spearman > cam.spearman,
        "guided backprop should stay more similar than Grad-CAM"
    );
    assert!(sal.spearman < 0.5 && cam.spearman < 0.5);
}

#[test]
fn score_cam_top_channels_and_overlay_png() {
    let g = model();
    let ex = Explainer::new(&g).unwrap();
    let x = input("chelsea");
    let opts = convscope::explain::cam::ScoreCamOptions {
        max_channels: Some(16),
        batch: 8,
    };
    let sc = ex
        .score_cam(&x, Target::Class(CAT), None, &opts, Control::default())
        .unwrap();
    let used = sc.weights.iter().filter(|&&w| w != 0.0).count();
    let (py, px) = sc.map.argmax();
    println!(
        "Score-CAM (16 strongest channels): {used} non-zero weights, peak (y, x) = ({py}, {px})"
    );
    assert!(used > 0 && used <= 16);
    assert!(
        sc.map
            .data()
            .iter()
            .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
    );

    // The overlay a person looks at: Grad-CAM on the preprocessed photo.
    let cam = ex
        .grad_cam(&x, Target::Class(CAT), None, GradCamVariant::GradCam)
        .unwrap();
    let f = std::fs::File::open(fixture("chelsea_u8.npy")).unwrap();
    let u8 = ArrayD::<u8>::read_npy(f).unwrap();
    let photo = image::RgbaImage::from_fn(224, 224, |xx, y| {
        let p = |c: usize| u8[[y as usize, xx as usize, c]];
        image::Rgba([p(0), p(1), p(2), 255])
    });
    let img = convscope::render::overlay(&photo, &cam.map, convscope::render::Colormap::Jet, 0.5);
    let out = std::env::temp_dir().join("convscope_chelsea_gradcam.png");
    convscope::render::save_png(&img, &out).unwrap();
    assert_eq!(image::open(&out).unwrap().width(), 224);
}
