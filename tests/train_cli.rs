//! `convscope train` and `convscope evaluate` through the real binary.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{convscope, json_lines, shared_path};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny synthetic run writing a checkpoint to `out`.
fn train_tiny(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        "synthetic-smiles",
        "--arch",
        "smile-cnn",
        "--train-size",
        "48",
        "--val-size",
        "16",
        "--test-size",
        "16",
        "--batch",
        "16",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    convscope(&args)
}

#[test]
fn train_prints_epoch_lines_and_evaluate_reads_the_happy_photos() {
    let happy = shared_path("data/happy/test");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ck");
    let o = train_tiny(&out, &["--epochs", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (i, l) in lines[..2].iter().enumerate() {
        assert_eq!(l["epoch"], i + 1);
        for k in ["train_loss", "train_acc", "val_loss", "val_acc", "seconds"] {
            assert!(l[k].is_f64(), "{k} in {l}");
        }
    }
    let last = &lines[2];
    for k in ["test_acc", "precision", "recall", "f1", "macro_f1", "auc"] {
        assert!(last[k].is_f64(), "{k} in {last}");
    }
    let conf: u64 = last["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_u64().unwrap()))
        .sum();
    assert_eq!(conf, 16);
    assert!(out.join("model.ron").is_file() && out.join("weights.safetensors").is_file());
    assert!(
        std::fs::read_to_string(out.join("model.ron"))
            .unwrap()
            .contains("\"smile\"")
    );

    let o = convscope(&[
        "evaluate",
        "--model",
        out.to_str().unwrap(),
        "--data",
        happy.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v = &json_lines(&o)[0];
    let confusion = v["confusion"].as_array().unwrap();
    assert_eq!(confusion.len(), 2);
    let rows: Vec<u64> = confusion
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .sum()
        })
        .collect();
    // 66 frowns, 84 smiles (SOURCE.md)
    assert_eq!(rows, [66, 84], "{v}");
    assert_eq!(v["classes"], serde_json::json!(["frown", "smile"]));

    // text mode names the classes and prints the matrix
    let o = convscope(&[
        "evaluate",
        "--model",
        out.to_str().unwrap(),
        "--data",
        happy.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("confusion"), "{}", text(&o.stdout));
}

/// SIGKILL at random moments while checkpoints are written after every batch: whatever is at
/// --out afterwards is a complete checkpoint.
#[test]
fn killing_training_never_leaves_a_corrupt_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    // deterministic "random" kill times from a small LCG, spread over 0.2-2.5 s
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut loaded = 0;
    for round in 0..5 {
        let out = tmp.path().join(format!("ck{round}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_convscope"))
            .args([
                "train",
                "--data",
                "synthetic-smiles",
                "--train-size",
                "64",
                "--val-size",
                "0",
                "--test-size",
                "0",
                "--batch",
                "4",
                "--epochs",
                "100",
                "--checkpoint-every",
                "1",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 200 + (x >> 33) % 2300;
        std::thread::sleep(Duration::from_millis(ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        if out.exists() {
            convscope::models::load_model(&out)
                .unwrap_or_else(|e| panic!("round {round} (killed after {ms} ms): {e}"));
            loaded += 1;
        }
    }
    eprintln!("{loaded} of 5 killed runs left a checkpoint; all loaded");
}

#[test]
fn a_diverging_run_fails_with_a_message_and_keeps_a_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ck");
    let o = train_tiny(
        &out,
        &["--epochs", "20", "--lr", "1e6", "--checkpoint-every", "1"],
    );
    let err = text(&o.stderr);
    assert!(!o.status.success(), "a run at lr 1e6 succeeded");
    assert!(
        err.contains("diverged") && err.contains("last good checkpoint"),
        "{err}"
    );
    if out.exists() {
        let m = convscope::models::load_model(&out).unwrap();
        assert!(m.graph.params().iter().all(|p| !p.tensor.has_non_finite()));
    }
}

fn write_png(path: &Path, w: u32, h: u32, seed: u8, gray: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if gray {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 7 + y * 3) as u8 ^ seed]))
            .save(path)
            .unwrap();
    } else {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 5) as u8 ^ seed, (y * 9) as u8, seed.wrapping_mul(3)])
        })
        .save(path)
        .unwrap();
    }
}

#[test]
fn bad_input_gives_clear_messages_never_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    let out_s = out.to_str().unwrap();
    let run = |data: &Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_s,
            "--epochs",
            "1",
            "--json",
        ];
        args.extend_from_slice(extra);
        convscope(&args)
    };
    let fails_with = |o: &Output, want: &str| {
        let err = text(&o.stderr);
        assert!(!o.status.success(), "expected failure with '{want}'");
        assert!(err.contains(want), "wanted '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };

    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(&run(&empty, &[]), "has no class sub-folders");

    let single = root.join("single");
    write_png(&single.join("only/a.png"), 8, 8, 1, false);
    fails_with(&run(&single, &[]), "single class");

    fails_with(
        &convscope(&[
            "train",
            "--data",
            "synthetic-smiles",
            "--epochs",
            "0",
            "--out",
            out_s,
        ]),
        "--epochs must be at least 1",
    );

    // mixed sizes, gray and colour, one unreadable file: trains, names the bad file once
    let mixed = root.join("mixed");
    for i in 0..6u8 {
        write_png(
            &mixed.join(format!("frown/f{i}.png")),
            20 + u32::from(i),
            30,
            i,
            i % 2 == 0,
        );
        write_png(
            &mixed.join(format!("smile/s{i}.png")),
            64,
            48 + u32::from(i),
            100 + i,
            false,
        );
    }
    std::fs::write(mixed.join("smile/broken.png"), b"not a png at all").unwrap();
    let o = run(
        &mixed,
        &[
            "--batch",
            "100",
            "--val-fraction",
            "0.2",
            "--test-fraction",
            "0.2",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert_eq!(err.matches("broken.png").count(), 1, "{err}");
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(out.join("model.ron").is_file());

    // a model with 4 input channels cannot read images
    let (mut d, _) = convscope::models::smile_cnn(&Default::default(), 0).unwrap();
    d.inputs[0].shape[1] = 4;
    for p in &mut d.params {
        if p.name == "features.conv1.weight" {
            p.shape[1] = 4;
        }
    }
    let ron = root.join("four.ron");
    std::fs::write(&ron, d.to_ron().unwrap()).unwrap();
    fails_with(
        &run(&mixed, &["--arch", ron.to_str().unwrap()]),
        "4 input channels",
    );

    // evaluate on an empty folder and a missing model
    let o = convscope(&[
        "evaluate",
        "--model",
        "smile-cnn",
        "--data",
        empty.to_str().unwrap(),
    ]);
    fails_with(&o, "has no class sub-folders");
    let o = convscope(&[
        "evaluate",
        "--model",
        "/no/such/model",
        "--data",
        mixed.to_str().unwrap(),
    ]);
    fails_with(&o, "does not exist");
}

#[test]
fn resume_continues_to_the_requested_epoch_count() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ck");
    let t0 = Instant::now();
    let o = train_tiny(&out, &["--epochs", "1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = train_tiny(&out, &["--epochs", "2", "--resume"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let lines = json_lines(&o);
    assert_eq!(lines[0]["epoch"], 2, "{lines:?}");
    let o = train_tiny(&out, &["--epochs", "2", "--resume"]);
    assert!(
        text(&o.stderr).contains("already trained for 2 epochs"),
        "{}",
        text(&o.stderr)
    );
    eprintln!("{:.1} s", t0.elapsed().as_secs_f64());
}

/// The bundled smile CNN trained on three classes gets one score per class, as the window
/// builds it (`train::arch::model_and_data`); it used to keep its single logit on the command
/// line and stop at the head.
#[test]
fn the_smile_cnn_is_sized_to_the_data_s_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("three");
    for (c, class) in ["ants", "bees", "cats"].iter().enumerate() {
        for i in 0..4u8 {
            write_png(
                &data.join(class).join(format!("{i}.png")),
                40,
                30,
                (c as u8) * 60 + i,
                false,
            );
        }
    }
    let out = tmp.path().join("run");
    let o = convscope(&[
        "train",
        "--arch",
        "smile-cnn",
        "--data",
        data.to_str().unwrap(),
        "--epochs",
        "1",
        "--batch",
        "4",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let p = convscope(&[
        "predict",
        "--model",
        out.to_str().unwrap(),
        data.join("bees/0.png").to_str().unwrap(),
        "--json",
    ]);
    assert!(p.status.success(), "{}", text(&p.stderr));
    let v = &json_lines(&p)[0];
    assert_eq!(v["logits"].as_array().map(Vec::len), Some(3), "{v}");
    let label = v["top"][0]["label"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(["ants", "bees", "cats"].contains(&label.as_str()), "{v}");
}
