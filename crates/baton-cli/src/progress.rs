//! Progress bars for the long commands (`sim`, `demo`, `bench peers`), through `indicatif`:
//! drawn in place on a terminal, nothing at all when stderr is a pipe or a file (a log gets
//! the results, not a stream of redraws).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `total` steps labelled `label`: `[####......] 12/30`.
pub fn bar(label: &str, total: u64) -> ProgressBar {
    styled(label, total, "{prefix:<36} [{bar:30}] {pos}/{len}")
}

/// A counter without a bar: `label 12/30`.
pub fn counter(label: &str, total: u64) -> ProgressBar {
    styled(label, total, "{prefix} {pos}/{len}")
}

fn styled(label: &str, total: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("#."));
    }
    bar.set_prefix(label.to_owned());
    bar
}
