//! A job's controls as the units view and the unit page draw them: a start button, and while
//! the job runs its progress and a stop button.

use super::Running;
use crate::app::widgets;

/// A job's start button, and while it runs its progress and stop button.
pub struct JobButtons<'a> {
    pub start: &'a str,
    pub hover: &'a str,
    /// What the progress counts.
    pub counting: &'a str,
    pub stop: &'a str,
}

impl JobButtons<'_> {
    /// Draws the buttons; true when the person asked to start.
    pub fn show<R>(&self, ui: &mut egui::Ui, running: Option<&Running<R>>) -> bool {
        let start = ui
            .add_enabled(running.is_none(), egui::Button::new(self.start))
            .on_hover_text(self.hover);
        if let Some(run) = running {
            widgets::busy(ui);
            widgets::progress(ui, self.counting, run.progress.done, run.progress.total);
            if ui.button(self.stop).clicked() {
                run.job.cancel();
            }
        }
        start.clicked()
    }
}
