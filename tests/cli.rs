//! The command-line contract: runs the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use common::{convscope, json_lines, stderr, stdout};

/// `sum(p.numel() for p in refmodels.SmileCNN().parameters())`:
/// conv1 3·16·25+16 = 1216, bn1 32, conv2 16·16·25+16 = 6416, bn2 32, conv3 16·32·9+32 = 4640,
/// bn3 64, conv4 32·32·9+32 = 9248, bn4 64, fc1 8192·128+128 = 1048704, fc2 128+1 = 129.
const SMILE_CNN_PARAMS: u64 = 1_070_545;

#[test]
fn summary_json_of_the_smile_cnn() {
    let o = convscope(&["summary", "--model", "smile-cnn", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 21, "20 nodes and a totals line");
    let flatten = lines
        .iter()
        .find(|l| l["node"] == "classifier.flatten")
        .unwrap();
    assert_eq!(flatten["shape"], serde_json::json!([1, 8192]));
    let fc1 = lines
        .iter()
        .find(|l| l["node"] == "classifier.fc1")
        .unwrap();
    assert_eq!(fc1["params"], 8192 * 128 + 128);
    assert_eq!(fc1["macs"], 8192 * 128);
    let conv1 = &lines[0];
    assert_eq!(conv1["node"], "features.conv1");
    assert_eq!(conv1["shape"], serde_json::json!([1, 16, 64, 64]));
    assert_eq!(conv1["macs"], 16 * 64 * 64 * 75);
    let totals = lines.last().unwrap();
    assert_eq!(totals["params"].as_u64(), Some(SMILE_CNN_PARAMS));
    assert_eq!(totals["buffers"].as_u64(), Some(2 * (16 + 16 + 32 + 32)));
    let per_node: u64 = lines[..20]
        .iter()
        .map(|l| l["params"].as_u64().unwrap())
        .sum();
    assert_eq!(per_node, SMILE_CNN_PARAMS);
}

#[test]
fn summary_table_mentions_every_layer() {
    let o = convscope(&["summary", "--model", "smile-cnn"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for name in [
        "features.conv1",
        "features.bn4",
        "features.drop2",
        "classifier.fc2",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(
        text.contains("[1, 8192]") && text.contains("1070545"),
        "{text}"
    );
}

#[test]
fn bench_json_reports_medians() {
    let o = convscope(&[
        "bench",
        "--model",
        "smile-cnn",
        "--runs",
        "2",
        "--threads",
        "1",
        "--train-batch",
        "2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(line["model"], "smile-cnn");
    assert_eq!(line["threads"], 1);
    assert_eq!(line["runs"], 2);
    for key in [
        "forward_ms",
        "forward_backward_ms",
        "train_step_ms",
        "train_images_per_s",
    ] {
        assert!(line[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {line}");
    }
}

#[test]
fn bad_model_path_is_one_line_naming_it() {
    let o = convscope(&["summary", "--model", "/no/such/model.dir"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("/no/such/model.dir") && err.contains("does not exist"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
}

#[test]
fn corrupt_checkpoint_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.ron"), "ModelDescription(").unwrap();
    std::fs::write(tmp.path().join("weights.safetensors"), [1u8, 2, 3]).unwrap();
    let o = convscope(&["bench", "--model", tmp.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("model.ron") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn bad_numbers_are_errors_not_panics() {
    let o = convscope(&["bench", "--model", "smile-cnn", "--runs", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--runs"), "{}", stderr(&o));
    let o = convscope(&["summary", "--model", "smile-cnn", "--seed", "minus one"]);
    assert!(!o.status.success());
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn help_lists_the_commands_and_no_display_is_a_message_not_a_crash() {
    let o = convscope(&["--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for cmd in ["summary", "predict", "explain", "dream", "train", "bench"] {
        assert!(text.contains(cmd), "--help lacks {cmd}: {text}");
    }
    // without a subcommand convscope opens the window; with no display to open it on, it says
    // so in one sentence and exits non-zero
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_convscope"))
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .output()
        .expect("run convscope");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot open the window"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
