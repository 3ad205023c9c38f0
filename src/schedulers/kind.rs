//! The schedulers this crate offers, each named once: its command-line name, the diffusers class
//! it reproduces, and the sampler name (and schedule type) Automatic1111 writes for it.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    Pndm,
    Ddim,
    Euler,
    EulerAncestral,
    /// DPM-Solver++ 2M.
    DpmPp2m,
    /// DPM-Solver++ 2M with Karras sigmas.
    DpmPp2mKarras,
    Lms,
    Lcm,
}

/// Every name of one scheduler.
struct Names {
    cli: &'static str,
    class: &'static str,
    a1111_sampler: &'static str,
    a1111_schedule_type: Option<&'static str>,
}

impl SchedulerKind {
    /// In the order the command line's help lists them.
    pub const ALL: [SchedulerKind; 8] = [
        SchedulerKind::Pndm,
        SchedulerKind::Ddim,
        SchedulerKind::Euler,
        SchedulerKind::EulerAncestral,
        SchedulerKind::DpmPp2m,
        SchedulerKind::DpmPp2mKarras,
        SchedulerKind::Lms,
        SchedulerKind::Lcm,
    ];

    fn names(self) -> Names {
        let (cli, class, a1111_sampler, a1111_schedule_type) = match self {
            // Automatic1111 calls PNDM with skip_prk_steps (SD's setting) by its other name.
            SchedulerKind::Pndm => ("pndm", "PNDMScheduler", "PLMS", None),
            SchedulerKind::Ddim => ("ddim", "DDIMScheduler", "DDIM", None),
            SchedulerKind::Euler => ("euler", "EulerDiscreteScheduler", "Euler", None),
            SchedulerKind::EulerAncestral => (
                "euler-a",
                "EulerAncestralDiscreteScheduler",
                "Euler a",
                None,
            ),
            SchedulerKind::DpmPp2m => ("dpm++2m", "DPMSolverMultistepScheduler", "DPM++ 2M", None),
            SchedulerKind::DpmPp2mKarras => (
                "dpm++2m-karras",
                "DPMSolverMultistepScheduler",
                "DPM++ 2M",
                Some("Karras"),
            ),
            SchedulerKind::Lms => ("lms", "LMSDiscreteScheduler", "LMS", None),
            SchedulerKind::Lcm => ("lcm", "LCMScheduler", "LCM", None),
        };
        Names {
            cli,
            class,
            a1111_sampler,
            a1111_schedule_type,
        }
    }

    /// The command-line name, e.g. "euler-a".
    pub fn cli_name(self) -> &'static str {
        self.names().cli
    }

    /// The diffusers class this scheduler reproduces, e.g. "EulerAncestralDiscreteScheduler".
    pub fn class_name(self) -> &'static str {
        self.names().class
    }

    /// Automatic1111's sampler, without the schedule type (e.g. "DPM++ 2M").
    pub fn a1111_sampler(self) -> &'static str {
        self.names().a1111_sampler
    }

    /// Automatic1111's "Schedule type" (e.g. "Karras"), if not its default.
    pub fn a1111_schedule_type(self) -> Option<&'static str> {
        self.names().a1111_schedule_type
    }

    /// The "Sampler" value Automatic1111 writes: the sampler, then the schedule type if any (its
    /// older versions' single-field form, e.g. "DPM++ 2M Karras").
    pub fn a1111_name(self) -> String {
        match self.a1111_schedule_type() {
            Some(schedule) => format!("{} {schedule}", self.a1111_sampler()),
            None => self.a1111_sampler().to_string(),
        }
    }

    /// The scheduler a command-line name stands for.
    pub fn parse(cli_name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.cli_name() == cli_name)
    }

    /// The scheduler that reproduces a diffusers class (for DPMSolverMultistepScheduler the one
    /// without Karras sigmas: its config decides).
    pub fn from_class_name(class: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.class_name() == class)
    }

    /// The scheduler for Automatic1111's sampler and schedule type. The schedule type may also
    /// trail the sampler ("DPM++ 2M Karras"); one we have no variant for is ignored ("Euler
    /// Karras" is Euler).
    pub fn from_a1111(sampler: &str, schedule_type: Option<&str>) -> Option<Self> {
        const KARRAS: &str = "Karras";
        let trailing = format!(" {KARRAS}");
        let karras = schedule_type == Some(KARRAS) || sampler.ends_with(&trailing);
        let base = sampler.trim_end_matches(&trailing);
        let named = |k: &Self| k.a1111_sampler() == base;
        let want = karras.then_some(KARRAS);
        Self::ALL
            .into_iter()
            .find(|k| named(k) && k.a1111_schedule_type() == want)
            .or_else(|| Self::ALL.into_iter().find(named))
    }

    /// "pndm, ddim, …": every command-line name, for help and error messages.
    pub fn cli_names() -> String {
        Self::ALL.map(Self::cli_name).join(", ")
    }

    /// Config keys the command-line name fixes whatever the model's config says: "dpm++2m" and
    /// "dpm++2m-karras" say DPM-Solver++ of order 2, with or without Karras sigmas.
    pub(crate) fn pinned_config(self) -> Vec<(&'static str, Value)> {
        match self {
            SchedulerKind::DpmPp2m | SchedulerKind::DpmPp2mKarras => vec![
                ("algorithm_type", Value::from("dpmsolver++")),
                ("solver_order", Value::from(2)),
                (
                    "use_karras_sigmas",
                    Value::from(self == SchedulerKind::DpmPp2mKarras),
                ),
            ],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SchedulerKind;

    #[test]
    fn every_name_leads_back_to_its_scheduler() {
        for kind in SchedulerKind::ALL {
            assert_eq!(SchedulerKind::parse(kind.cli_name()), Some(kind));
            assert_eq!(SchedulerKind::from_a1111(&kind.a1111_name(), None), Some(kind));
            let (sampler, schedule) = (kind.a1111_sampler(), kind.a1111_schedule_type());
            assert_eq!(SchedulerKind::from_a1111(sampler, schedule), Some(kind));
        }
        assert_eq!(
            SchedulerKind::ALL.map(SchedulerKind::a1111_name),
            ["PLMS", "DDIM", "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "LMS", "LCM"]
        );
        assert_eq!(
            SchedulerKind::cli_names(),
            "pndm, ddim, euler, euler-a, dpm++2m, dpm++2m-karras, lms, lcm"
        );
        // A schedule type we have no variant for is ignored; an unknown sampler is none of ours.
        let euler = SchedulerKind::from_a1111("Euler Karras", None);
        assert_eq!(euler, Some(SchedulerKind::Euler));
        assert_eq!(SchedulerKind::from_a1111("Heun", Some("Karras")), None);
    }
}
