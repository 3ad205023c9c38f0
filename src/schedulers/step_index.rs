//! diffusers' step index (`_step_index` / `_begin_index`): which entry of the schedule a step
//! or `add_noise` uses, for the schedulers that keep one (Euler, Euler-a, LMS, DPM, LCM).

/// diffusers' index_for_timestep: the first match, or the second when the timestep occurs more than
/// once (so img2img starting mid-schedule does not skip a sigma).
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64) -> Option<usize> {
    let mut hits = timesteps
        .iter()
        .enumerate()
        .filter(|(_, &v)| v == t)
        .map(|(i, _)| i);
    let first = hits.next()?;
    Some(hits.next().unwrap_or(first))
}

/// Step-index bookkeeping shared by the sigma-based schedulers (diffusers' _step_index/_begin_index).
#[derive(Clone, Debug, Default)]
pub(crate) struct StepIndex {
    pub step_index: Option<usize>,
    pub begin_index: Option<usize>,
}

impl StepIndex {
    pub(crate) fn reset(&mut self) {
        self.step_index = None;
        self.begin_index = None;
    }

    /// The index the next step uses (diffusers' _init_step_index without storing it).
    pub(crate) fn peek(&self, timesteps: &[f64], t: f64) -> Option<usize> {
        self.step_index
            .or(self.begin_index)
            .or_else(|| index_for_timestep(timesteps, t))
    }

    /// Initialises on the first step like diffusers; `not_found` is DPM's fallback index.
    pub(crate) fn init(
        &mut self,
        timesteps: &[f64],
        t: f64,
        not_found: Option<usize>,
    ) -> Result<usize, String> {
        if let Some(i) = self.step_index {
            return Ok(i);
        }
        let i = match self.begin_index {
            Some(b) => b,
            None => index_for_timestep(timesteps, t)
                .or(not_found)
                .ok_or_else(|| format!("timestep {t} is not in the scheduler's timesteps"))?,
        };
        self.step_index = Some(i);
        Ok(i)
    }

    /// The sigma index add_noise uses: look-up unless a begin index was set. `not_found` is DPM's
    /// fallback; elsewhere diffusers would raise, and the closest timestep is used instead.
    pub(crate) fn for_add_noise(
        &self,
        timesteps: &[f64],
        t: f64,
        not_found: Option<usize>,
    ) -> usize {
        match (self.begin_index, self.step_index) {
            (None, _) => index_for_timestep(timesteps, t)
                .or(not_found)
                .unwrap_or_else(|| nearest_index(timesteps, t)),
            (Some(_), Some(s)) => s,
            (Some(b), None) => b,
        }
    }
}

/// Fallback where diffusers would raise but the API cannot fail: the closest timestep.
pub(crate) fn nearest_index(timesteps: &[f64], t: f64) -> usize {
    timesteps
        .iter()
        .enumerate()
        .min_by(|a, b| (a.1 - t).abs().total_cmp(&(b.1 - t).abs()))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
