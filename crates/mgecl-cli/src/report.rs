//! The `mgecl label --report` page: one self-contained HTML file (thumbnails inlined as PNG
//! data URIs, no script, no external resource). What a person sees, top to bottom: a summary,
//! the images to review (least certain first), the images to label next, their own examples,
//! every image grouped by proposed label, most confident first, then the files that could not
//! be labelled and why.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use mgecl::{Error, ImageLimits, LabelRow, Proposal};

/// Longest side of a thumbnail, in pixels.
const THUMBNAIL: u32 = 72;
/// Cards per section or label group; the CSV has every image.
const MAX_CARDS: usize = 200;
/// Support examples shown per class.
const EXAMPLES_PER_CLASS: usize = 6;

/// What the page shows.
pub struct ReportInput<'a> {
    pub support: &'a Path,
    pub images: &'a Path,
    /// The labelled files, in `labelling` order.
    pub files: &'a [PathBuf],
    /// Their paths relative to `images`.
    pub paths: &'a [String],
    /// One per file.
    pub rows: &'a [LabelRow],
    /// Indices of the files to label next, by rank.
    pub label_next: &'a [usize],
    /// The task's class labels.
    pub classes: &'a [String],
    pub review_below: f64,
    /// Each class's support images.
    pub examples: &'a [(String, Vec<PathBuf>)],
}

/// Draws the page of a labels CSV (`csv`: its text, as `mgecl label` or the Ray job wrote it,
/// paths relative to `images`) and writes it to `out` atomically. `examples`: each class's
/// support images, in the task's class order. The one way both `mgecl label --report` and
/// `mgecl report` draw a page, so the two give the same page for the same CSV. Returns the
/// number of images the CSV holds.
///
/// # Errors
/// A CSV that does not parse; [`Error::Io`] writing `out`.
pub fn write_from_csv(
    csv: &str,
    support: &Path,
    images: &Path,
    examples: &[(String, Vec<PathBuf>)],
    review_below: f64,
    out: &Path,
    progress: &dyn Fn(usize, &str) -> indicatif::ProgressBar,
) -> Result<usize, Error> {
    let rows = mgecl::task::LabelCsv::parse(csv)?;
    let classes: Vec<String> = examples.iter().map(|(label, _)| label.clone()).collect();
    let files: Vec<PathBuf> = rows
        .paths
        .iter()
        .map(|p| images.join(p.split('/').collect::<PathBuf>()))
        .collect();
    let page = html(
        &ReportInput {
            support,
            images,
            files: &files,
            paths: &rows.paths,
            rows: &rows.rows,
            label_next: &rows.label_next,
            classes: &classes,
            review_below,
            examples,
        },
        progress,
    )?;
    mgecl::internals::write_file(out, page.as_bytes())?;
    Ok(rows.paths.len())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A PNG thumbnail of an image file as a data URI (upright by its EXIF orientation); `None`
/// when it cannot be read (the page shows the path alone).
fn thumbnail(file: &Path) -> Option<String> {
    let bytes = std::fs::read(file).ok()?;
    let pixels = mgecl::preprocess::decode_rgb(&bytes, &ImageLimits::default()).ok()?;
    let image =
        image::RgbImage::from_raw(pixels.width(), pixels.height(), pixels.as_hwc().to_vec())?;
    let small = image::DynamicImage::ImageRgb8(image).thumbnail(THUMBNAIL, THUMBNAIL);
    let mut png = Vec::new();
    small
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    ))
}

fn percent(p: f64) -> String {
    format!("{:.0}%", 100.0 * p)
}

struct Page<'a> {
    input: &'a ReportInput<'a>,
    thumbnails: HashMap<usize, String>,
    html: String,
}

impl Page<'_> {
    fn thumb(&mut self, index: usize) -> String {
        let file = &self.input.files[index];
        self.thumbnails
            .entry(index)
            .or_insert_with(|| thumbnail(file).unwrap_or_default())
            .clone()
    }

    /// One labelled image's card; `badge` is shown in its corner (the "label next" rank).
    fn card(&mut self, index: usize, badge: Option<usize>) {
        let Some(p) = self.input.rows[index].proposal() else {
            return;
        };
        let path = escape(&self.input.paths[index]);
        let mut class = String::from("card");
        if p.needs_review {
            class.push_str(" review");
        }
        let runner = match &p.runner_up {
            Some((label, prob)) => {
                format!("<br><small>or {} {}</small>", escape(label), percent(*prob))
            }
            None => String::new(),
        };
        let known = if p.known_probability < self.input.review_below {
            format!(
                "<br><small class=\"warn\">new class? ({} known)</small>",
                percent(p.known_probability)
            )
        } else {
            String::new()
        };
        let badge = badge
            .map(|rank| format!("<span class=\"badge\">{rank}</span>"))
            .unwrap_or_default();
        let (label, prob) = (escape(&p.label), percent(p.probability));
        let src = self.thumb(index);
        let _ = write!(
            self.html,
            "<figure class=\"{class}\" title=\"{path}\">{badge}<img src=\"{src}\" alt=\"{path}\">\
             <figcaption><b>{label}</b> {prob}{runner}{known}<br><small class=\"path\">{path}</small></figcaption></figure>"
        );
    }

    fn cards(&mut self, indices: &[usize], badges: bool) {
        self.html.push_str("<div class=\"grid\">");
        for (n, &i) in indices.iter().take(MAX_CARDS).enumerate() {
            self.card(i, badges.then_some(n + 1));
        }
        self.html.push_str("</div>");
        if indices.len() > MAX_CARDS {
            let _ = write!(
                self.html,
                "<p class=\"more\">and {} more in the CSV</p>",
                indices.len() - MAX_CARDS
            );
        }
    }
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.5em;margin:0 0 .3em}h2{margin-top:1.6em;border-bottom:2px solid #ddd}\
h3{margin:1em 0 .3em;font-size:1.05em}p.note{color:#555;max-width:60em}\
.summary{display:flex;gap:1em;flex-wrap:wrap;margin:.8em 0}\
.stat{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .9em}\
.stat b{display:block;font-size:1.4em}.stat.alert b{color:#c45500}\
.grid{display:flex;flex-wrap:wrap;gap:8px}\
.card{position:relative;margin:0;width:120px;background:#fff;border:2px solid #ddd;\
border-radius:6px;padding:4px;text-align:center;font-size:12px;overflow:hidden}\
.card img{width:72px;height:72px;object-fit:contain;image-rendering:pixelated;background:#fff}\
.card.review{border-color:#e8892b;background:#fff7ee}\
.badge{position:absolute;top:3px;left:3px;background:#2b6fe8;color:#fff;border-radius:10px;\
padding:0 6px;font-weight:bold}\
.path{color:#777;word-break:break-all}.warn{color:#c45500}.more{color:#777}\
.examples{display:flex;flex-wrap:wrap;gap:1em}.class{background:#fff;border:1px solid #ddd;\
border-radius:6px;padding:.4em}.class img{width:48px;height:48px;object-fit:contain}\
table.failed{border-collapse:collapse;font-size:13px}table.failed td,table.failed th{\
border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}";

/// The page's HTML.
///
/// # Errors
/// None today beyond what building the page can report; thumbnails that cannot be read are
/// left blank.
pub fn html(
    input: &ReportInput<'_>,
    progress: &dyn Fn(usize, &str) -> indicatif::ProgressBar,
) -> Result<String, Error> {
    let rows = input.rows;
    let n = rows.len();
    let review = mgecl::task::review_order(rows);
    let failed = mgecl::task::failed_rows(rows);
    let proposal = |i: usize| rows[i].proposal();
    let next = input.label_next;
    let classes = input.classes;
    let mut page = Page {
        input,
        thumbnails: HashMap::new(),
        html: String::new(),
    };
    let _ = write!(
        page.html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>mgecl label: {n} images</title><style>{STYLE}</style></head><body>\
         <h1>Proposed labels for {n} images</h1>\
         <p class=\"note\">Images under <code>{}</code>, labelled from the examples in <code>{}</code> \
         ({} classes). An image is marked for review when the probability of its label, or the \
         probability that it belongs to one of these classes at all, is below {}.</p>\
         <div class=\"summary\"><div class=\"stat\"><b>{n}</b>images</div>\
         <div class=\"stat\"><b>{}</b>classes</div><div class=\"stat alert\"><b>{}</b>to review</div>\
         <div class=\"stat\"><b>{}</b>confident</div>{}</div>",
        escape(&input.images.display().to_string()),
        escape(&input.support.display().to_string()),
        classes.len(),
        percent(input.review_below),
        classes.len(),
        review.len(),
        n - review.len() - failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                "<div class=\"stat alert\"><b><a href=\"#failed\">{}</a></b>not labelled</div>",
                failed.len()
            )
        },
    );

    let bar = progress(n.min(MAX_CARDS * (classes.len() + 2)), "report");
    let _ = write!(
        page.html,
        "<h2 id=\"review\">Review these first ({})</h2><p class=\"note\">Least certain first. \
         Orange: needs review; \"or\" names the class it could also be; \"new class?\" marks an \
         image unlike all of your classes.</p>",
        review.len()
    );
    if review.is_empty() {
        page.html.push_str("<p>Nothing to review.</p>");
    }
    page.cards(&review, false);
    bar.inc(review.len().min(MAX_CARDS) as u64);

    let _ = write!(
        page.html,
        "<h2 id=\"next\">Label these next ({})</h2><p class=\"note\">Adding these to your \
         examples should help most: each is one the classifier cannot decide between two classes \
         (uncertainty) and that resembles many other images (density), chosen so that no two are \
         alike.</p>",
        next.len()
    );
    page.cards(next, true);

    page.html
        .push_str("<h2 id=\"examples\">Your examples</h2><div class=\"examples\">");
    for (label, files) in input.examples {
        let _ = write!(
            page.html,
            "<div class=\"class\"><b>{}</b><br>",
            escape(label)
        );
        for file in files.iter().take(EXAMPLES_PER_CLASS) {
            let src = thumbnail(file).unwrap_or_default();
            let name = escape(&file.display().to_string());
            let _ = write!(
                page.html,
                "<img src=\"{src}\" alt=\"{name}\" title=\"{name}\">"
            );
        }
        page.html.push_str("</div>");
    }
    page.html.push_str("</div>");

    page.html.push_str(
        "<h2 id=\"labels\">By proposed label</h2><p class=\"note\">Most confident first.</p>",
    );
    let mut groups: Vec<(String, Vec<usize>)> =
        classes.iter().map(|c| (c.clone(), Vec::new())).collect();
    let position: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    for (i, p) in rows.iter().enumerate() {
        if let Some(&g) = p.proposal().and_then(|p| position.get(p.label.as_str())) {
            groups[g].1.push(i);
        }
    }
    let probability = |i: usize| proposal(i).map_or(0.0, |p: &Proposal| p.probability);
    for (label, members) in &mut groups {
        members.sort_by(|&a, &b| probability(b).total_cmp(&probability(a)).then(a.cmp(&b)));
        let to_review = members
            .iter()
            .filter(|&&i| proposal(i).is_some_and(|p| p.needs_review))
            .count();
        let _ = write!(
            page.html,
            "<h3>{} <small>({} images, {to_review} to review)</small></h3>",
            escape(label),
            members.len()
        );
        page.cards(members, false);
        bar.inc(members.len().min(MAX_CARDS) as u64);
    }
    bar.finish_and_clear();

    if !failed.is_empty() {
        let _ = write!(
            page.html,
            "<h2 id=\"failed\">Not labelled ({})</h2><p class=\"note\">These files could not be \
             read or decoded, or are larger than the image limits; the CSV's <code>error</code> \
             column says the same.</p><table class=\"failed\"><tr><th>file</th><th>why</th></tr>",
            failed.len()
        );
        for &i in &failed {
            let _ = write!(
                page.html,
                "<tr><td class=\"path\">{}</td><td>{}</td></tr>",
                escape(&input.paths[i]),
                escape(rows[i].error().unwrap_or_default())
            );
        }
        page.html.push_str("</table>");
    }
    page.html.push_str("</body></html>\n");
    Ok(page.html)
}
