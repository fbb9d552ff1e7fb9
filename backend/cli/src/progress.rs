//! Progress on stderr for long exports and imports; indicatif draws nothing when stderr is
//! not a terminal, so scripts and tests see only the results.

use indicatif::{ProgressBar, ProgressStyle};

/// Resources per import call: one transaction each, and one step of the bar.
pub const IMPORT_CHUNK: usize = 200;

pub fn bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} resources ({eta})")
    {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

pub fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}
