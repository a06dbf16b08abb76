//! What `convscope microscope` leaves behind and prints: the contact sheet, `index.json`, the
//! self-contained `index.html`, and the stdout lines.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{MicroscopeArgs, UnitResult};
use crate::cli::{CliError, CliResult};
use crate::explain::microscope::{ScanReport, UnitLayer, UnitScan};
use crate::render::save_png;
use crate::render::sheet::{SheetRow, contact_sheet};

/// Pixels per contact sheet cell.
const SHEET_CELL: u32 = 96;

pub(crate) struct Summary<'a> {
    pub model: String,
    pub layer: &'a UnitLayer,
    pub args: &'a MicroscopeArgs,
    pub scan: Option<&'a ScanReport>,
    pub units: &'a [UnitResult],
    pub visualise_seconds: f64,
    pub scan_seconds: f64,
}

impl Summary<'_> {
    fn unit_scan(&self, i: usize) -> Option<&UnitScan> {
        self.scan.and_then(|s| s.units.get(i))
    }

    /// Per unit: does its own visualisation excite it more than any folder image does (the
    /// spatial mean, the statistic the visualisation maximises)? `None` without both.
    fn beats_folder(&self, i: usize) -> Option<bool> {
        let best = self.units.get(i)?.images.first()?.1;
        let scan = self.unit_scan(i)?;
        Some(best > scan.max_mean)
    }

    fn unit_json(&self, i: usize) -> Value {
        let u = &self.units[i];
        let scan = self.unit_scan(i);
        let top: Vec<Value> = scan
            .map(|s| {
                s.top
                    .iter()
                    .zip(u.patches.iter().map(Some).chain(std::iter::repeat(None)))
                    .map(|(h, patch)| {
                        json!({
                            "image": h.source.display(),
                            "score": h.score,
                            "mean": h.mean,
                            "at": h.at,
                            "box": {"top": h.bbox[0], "left": h.bbox[1], "bottom": h.bbox[2], "right": h.bbox[3]},
                            "patch": patch.filter(|p| !p.is_empty()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let histogram = scan.map(|s| {
            let bins: Vec<Value> = s
                .histogram
                .bins()
                .iter()
                .map(|(lo, hi, n)| json!([lo, hi, n]))
                .collect();
            json!(bins)
        });
        json!({
            "unit": u.channel,
            "images": u.images.iter().map(|(f, a)| json!({"file": f, "activation": a})).collect::<Vec<_>>(),
            "top": top,
            "folder_max_mean": scan.map(|s| s.max_mean),
            "folder_max_peak": scan.and_then(|s| s.top.first()).map(|h| h.score),
            "above_folder": self.beats_folder(i),
            "histogram": histogram,
        })
    }

    fn summary_json(&self) -> Value {
        let judged: Vec<bool> = (0..self.units.len())
            .filter_map(|i| self.beats_folder(i))
            .collect();
        json!({
            "model": self.model,
            "layer": self.layer.name,
            "units": self.units.len(),
            "channels": self.layer.channels,
            "size": self.args.size,
            "steps": self.args.steps,
            "images": self.scan.map(|s| s.images),
            "skipped": self.scan.map(|s| s.skipped.len()),
            "above_folder": judged.iter().filter(|&&b| b).count(),
            "judged": judged.len(),
            "visualise_seconds": self.visualise_seconds,
            "scan_seconds": self.scan_seconds,
            "out": self.args.out.display().to_string(),
        })
    }
}

/// Units per contact sheet (a sheet of 2,048 rows would be a 200,000-pixel-tall PNG).
const SHEET_UNITS: usize = 64;

/// Units up to which `index.html` embeds its images.
const EMBED_UNITS: usize = 128;

/// Writes the contact sheets, `index.json` and `index.html` into `out`. Pictures are read back
/// from the files one sheet at a time, so a large layer is never in memory at once.
pub(crate) fn write_all(out: &Path, s: &Summary) -> CliResult<()> {
    let read = |file: &String| -> Option<image::RgbImage> {
        (!file.is_empty())
            .then(|| image::open(out.join(file)).ok().map(|i| i.to_rgb8()))
            .flatten()
    };
    for (page, units) in s.units.chunks(SHEET_UNITS).enumerate() {
        let pictures: Vec<Vec<image::RgbImage>> = units
            .iter()
            .map(|u| {
                u.images
                    .first()
                    .map(|i| &i.0)
                    .into_iter()
                    .chain(&u.patches)
                    .filter_map(read)
                    .collect()
            })
            .collect();
        let rows: Vec<SheetRow> = units
            .iter()
            .zip(&pictures)
            .map(|(u, p)| SheetRow {
                label: u.channel,
                pictures: p.iter().collect(),
            })
            .collect();
        let columns = rows.iter().map(|r| r.pictures.len()).max().unwrap_or(1);
        let name = match page {
            0 => "contact_sheet.png".to_string(),
            p => format!("contact_sheet_{}.png", p + 1),
        };
        save_png(&contact_sheet(&rows, columns, SHEET_CELL), &out.join(name))
            .map_err(|e| CliError(e.to_string()))?;
    }

    let mut index = s.summary_json();
    index["units"] = json!(
        (0..s.units.len())
            .map(|i| s.unit_json(i))
            .collect::<Vec<_>>()
    );
    index["skipped"] = json!(s.scan.map(|r| {
        r.skipped
            .iter()
            .map(|(p, e)| json!({"image": p, "reason": e}))
            .collect::<Vec<_>>()
    }));
    let text = serde_json::to_string_pretty(&index).map_err(|e| CliError(e.to_string()))?;
    write(&out.join("index.json"), text.as_bytes())?;
    write(&out.join("index.html"), html(out, s)?.as_bytes())
}

fn write(path: &Path, bytes: &[u8]) -> CliResult<()> {
    crate::io::write_atomically(path, bytes)
        .map_err(|e| CliError(format!("{}: cannot write ({e})", path.display())))
}

/// A file under `out` as a `data:` URI (empty when it cannot be read), or its relative path
/// when the page is too large to embed everything.
fn embedded(out: &Path, file: &str, embed: bool) -> String {
    if !embed {
        return escape(file);
    }
    match std::fs::read(out.join(file)) {
        Ok(bytes) if !file.is_empty() => format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
        _ => String::new(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One page: a grid of units (visualisation, activation, nine patches), each unit's histogram
/// as a row of bars; every image embedded, no script, no network.
fn html(out: &Path, s: &Summary) -> CliResult<String> {
    let embed = s.units.len() <= EMBED_UNITS;
    let mut h = String::new();
    let title = format!(
        "{} — {} — convscope microscope",
        escape(&s.model),
        escape(&s.layer.name)
    );
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
<style>body{{font:14px system-ui,sans-serif;background:#1b1b1b;color:#ddd;margin:16px}}\
h1{{font-size:18px}}.grid{{display:flex;flex-wrap:wrap;gap:12px}}\
.unit{{background:#262626;border-radius:6px;padding:8px;width:340px}}\
.unit h2{{font-size:14px;margin:0 0 6px}}.vis{{display:flex;gap:4px}}.vis img{{width:160px;height:160px;image-rendering:auto}}\
.patches{{display:grid;grid-template-columns:repeat(3,52px);gap:2px}}.patches img{{width:52px;height:52px;object-fit:cover}}\
.hist{{display:flex;align-items:flex-end;height:32px;gap:1px;margin-top:6px}}.hist div{{background:#6ab0f3;flex:1}}\
.ok{{color:#8fd18f}}.no{{color:#e49b6b}}small{{color:#999}}</style></head><body>\
<h1>{title}</h1><p>{} units of {} · visualisations {} px, {} steps · patches from {} images{}</p><div class=\"grid\">",
        s.units.len(),
        s.layer.channels,
        s.args.size,
        s.args.steps,
        s.scan.map(|r| r.images).unwrap_or(0),
        s.scan
            .map(|r| format!(" ({} skipped)", r.skipped.len()))
            .unwrap_or_default(),
    );
    for (i, u) in s.units.iter().enumerate() {
        let scan = s.unit_scan(i);
        let _ = write!(
            h,
            "<div class=\"unit\" id=\"unit-{}\"><h2>unit {}</h2><div class=\"vis\">",
            u.channel, u.channel
        );
        if let Some((file, activation)) = u.images.first() {
            let _ = write!(
                h,
                "<figure style=\"margin:0\"><img alt=\"unit {} visualisation\" src=\"{}\"><figcaption><small>mean activation {activation:.3}</small></figcaption></figure>",
                u.channel,
                embedded(out, file, embed)
            );
        }
        let _ = write!(h, "<div class=\"patches\">");
        for (rank, file) in u.patches.iter().enumerate().filter(|(_, f)| !f.is_empty()) {
            let title = scan
                .and_then(|sc| sc.top.get(rank))
                .map(|hit| format!("{} — peak {:.3}", hit.source.display(), hit.score))
                .unwrap_or_default();
            let _ = write!(
                h,
                "<img title=\"{}\" alt=\"patch {}\" src=\"{}\">",
                escape(&title),
                rank + 1,
                embedded(out, file, embed)
            );
        }
        let _ = write!(h, "</div></div>");
        if let Some(sc) = scan {
            let bins = sc.histogram.bins();
            let most = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1);
            let _ = write!(
                h,
                "<div class=\"hist\" title=\"per-image peaks over the folder\">"
            );
            for (lo, hi, n) in &bins {
                let _ = write!(
                    h,
                    "<div title=\"{lo:.2}..{hi:.2}: {n}\" style=\"height:{}%\"></div>",
                    (100 * n / most).max(1)
                );
            }
            let verdict = match s.beats_folder(i) {
                Some(true) => "<span class=\"ok\">above every folder image</span>",
                Some(false) => "<span class=\"no\">not above the best folder image</span>",
                None => "",
            };
            let _ = write!(
                h,
                "</div><small>folder: best mean {:.3}, best peak {:.3} · {verdict}</small>",
                sc.max_mean,
                sc.top.first().map(|t| t.score).unwrap_or(0.0)
            );
        }
        let _ = write!(h, "</div>");
    }
    h.push_str("</div></body></html>\n");
    Ok(h)
}

/// `--json`: a line per unit, then the summary; otherwise a short table.
pub(crate) fn print(s: &Summary, as_json: bool) {
    if as_json {
        for i in 0..s.units.len() {
            let mut v = s.unit_json(i);
            if let Some(o) = v.as_object_mut() {
                o.remove("histogram");
            }
            println!("{v}");
        }
        println!("{}", s.summary_json());
        return;
    }
    println!(
        "{} · {} ({} channels)",
        s.model, s.layer.name, s.layer.channels
    );
    println!(
        "{:>6}  {:>10}  {:>11}  {:>11}",
        "unit", "vis mean", "folder mean", "folder peak"
    );
    for (i, u) in s.units.iter().enumerate() {
        let scan = s.unit_scan(i);
        let cell = |v: Option<f32>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
        println!(
            "{:>6}  {:>10}  {:>11}  {:>11}",
            u.channel,
            cell(u.images.first().map(|i| i.1)),
            cell(scan.map(|s| s.max_mean)),
            cell(scan.and_then(|s| s.top.first()).map(|h| h.score)),
        );
    }
    let judged: Vec<bool> = (0..s.units.len())
        .filter_map(|i| s.beats_folder(i))
        .collect();
    if !judged.is_empty() {
        println!(
            "{} of {} units excite themselves more than any folder image does",
            judged.iter().filter(|&&b| b).count(),
            judged.len()
        );
    }
    println!("wrote {}", s.args.out.join("index.html").display());
}
