//! Schedulers against diffusers 0.42.1 reference vectors (tests/data/scheduler_vectors.json,
//! regenerate with `python scripts/scheduler_vectors.py`).

use sd_wasm::schedulers::{scheduler_from_config, Scheduler, SchedulerKind, SchedulerOptions};
use sd_wasm::tensor::{Latents, NoiseSource};
use serde_json::{json, Value};

const VECTORS: &str = include_str!("../data/scheduler_vectors.json");

/// Values: |rust - diffusers| <= ABS + REL * max|diffusers tensor| + INPUT_ULPS ulps of the
/// operation's largest input. torch's float32 sqrt/log/exp (MKL VML on x86) are not correctly
/// rounded, so diffusers' sigma tables differ from ours by an ulp here and there (up to ~5e-7
/// relative after zero-terminal-SNR rescaling); where a step cancels large inputs (sigmas near 4096)
/// that ulp shows up at the inputs' scale and is carried into later steps.
const ABS: f32 = 1e-5;
const REL: f32 = 1e-5;
const INPUT_ULPS: f32 = 8.0;
/// Free-running trajectories carry those ulps from step to step (a step that cancels 4096-scale
/// inputs down to ~10 turns one ulp into ~2.5e-5 relative).
const FREE_RUNNING_REL: f32 = 1e-4;
/// Timesteps are compared exactly (they are integers or float32 values)...
const TIMESTEP_TOL: f64 = 1e-9;
/// ...except where diffusers derives float timesteps from its sigma table (Euler/LMS with Karras or
/// exponential sigmas inverted back to timesteps, Euler's continuous 0.25*ln(sigma)): that table
/// goes through torch's sqrt, which is not correctly rounded, and an ulp of log-sigma moves an
/// interpolated timestep by up to ~1e-4 (patching torch's sqrt to a correctly rounded one makes
/// diffusers give exactly our values).
const SIGMA_DERIVED_TIMESTEP_TOL: f64 = 1e-4;
const CONTINUOUS_TIMESTEP_TOL: f64 = 1e-6;

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("scheduler_vectors.json parses")
}

fn shape(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Latents {
    let data: Vec<f32> = v
        .as_array()
        .expect("tensor array")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Latents::from_shape_vec(shape.to_vec(), data).expect("tensor shape")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Replays the noise diffusers drew inside one step.
struct Replay {
    draws: Vec<Latents>,
    used: usize,
}

impl NoiseSource for Replay {
    fn randn(&mut self, shape: &[usize]) -> Latents {
        let d = self.draws.get(self.used).unwrap_or_else(|| {
            panic!(
                "scheduler drew more noise than diffusers ({} draws)",
                self.draws.len()
            )
        });
        assert_eq!(d.shape(), shape, "noise shape");
        self.used += 1;
        d.clone()
    }
}

struct NoNoise;

impl NoiseSource for NoNoise {
    fn randn(&mut self, _shape: &[usize]) -> Latents {
        panic!("this scheduler should not draw noise here")
    }
}

fn build(case: &Value) -> Box<dyn Scheduler> {
    let name = case["name"].as_str();
    let options = SchedulerOptions {
        eta: case["eta"].as_f64().unwrap_or(0.0) as f32,
    };
    scheduler_from_config(name, &case["config"], &options)
        .unwrap_or_else(|e| panic!("{}: scheduler_from_config failed: {e}", case["id"]))
}

fn max_abs(x: &Latents) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Max error relative to the tolerance (<= 1 passes), and the worst absolute error. `input_scale`
/// is the largest magnitude among the operation's inputs.
fn compare(got: &Latents, want: &Latents, input_scale: f32, rel: f32) -> (f32, f32) {
    assert_eq!(got.shape(), want.shape());
    let tol = ABS + rel * max_abs(want) + INPUT_ULPS * f32::EPSILON * input_scale;
    let mut worst = (0f32, 0f32);
    for (g, w) in got.iter().zip(want.iter()) {
        let err = (g - w).abs();
        let ratio = if err.is_nan() {
            f32::INFINITY
        } else {
            err / tol
        };
        if ratio > worst.0 {
            worst = (ratio, err);
        }
    }
    worst
}

/// Timestep tolerance for a case (see SIGMA_DERIVED_TIMESTEP_TOL).
fn timestep_tol(case: &Value) -> f64 {
    let c = &case["config"];
    let class = c["_class_name"].as_str().unwrap_or("");
    let sigma_class = case["name"].is_null()
        && matches!(class, "EulerDiscreteScheduler" | "LMSDiscreteScheduler");
    if !sigma_class {
        TIMESTEP_TOL
    } else if c["timestep_type"] == json!("continuous") {
        CONTINUOUS_TIMESTEP_TOL
    } else if c["use_karras_sigmas"] == json!(true) || c["use_exponential_sigmas"] == json!(true) {
        SIGMA_DERIVED_TIMESTEP_TOL
    } else {
        TIMESTEP_TOL
    }
}

fn check_timesteps(
    case: &Value,
    what: &str,
    got: &[f64],
    want: &[f64],
    failures: &mut Vec<String>,
) {
    let id = case["id"].as_str().unwrap();
    let tol = timestep_tol(case);
    let close = |g: f64, w: f64| (g - w).abs() <= tol;
    let ok = got.len() == want.len() && got.iter().zip(want).all(|(&g, &w)| close(g, w));
    if !ok {
        failures.push(format!(
            "{id}: {what}: timesteps {got:?}, diffusers {want:?}"
        ));
    }
}

#[test]
fn timesteps_and_init_noise_sigma_match_diffusers() {
    let v = vectors();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let id = case["id"].as_str().unwrap();
        for rec in case["timesteps"].as_array().unwrap() {
            let n = rec["n"].as_u64().unwrap() as usize;
            let mut s = build(case);
            if let Err(e) = s.set_timesteps(n) {
                failures.push(format!("{id}: set_timesteps({n}) failed: {e}"));
                continue;
            }
            check_timesteps(
                case,
                &format!("n={n}"),
                s.timesteps(),
                &f64s(&rec["timesteps"]),
                &mut failures,
            );
            let want = rec["init_noise_sigma"].as_f64().unwrap() as f32;
            let got = s.init_noise_sigma();
            if (got - want).abs() > 1e-6 * want.abs() {
                failures.push(format!(
                    "{id}: n={n}: init_noise_sigma {got}, diffusers {want}"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "too few schedules checked: {checked}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs a recorded trajectory. Teacher-forced: every step gets diffusers' own input latents, so each
/// step is checked at full tolerance. Free-running: the scheduler's outputs feed the next step, as in
/// the pipeline, and the accumulated drift is checked against `rel`.
fn run_trajectory(
    case: &Value,
    shape: &[usize],
    teacher_forced: bool,
    rel: f32,
    failures: &mut Vec<String>,
) -> usize {
    let id = format!(
        "{} ({})",
        case["id"].as_str().unwrap(),
        if teacher_forced {
            "per step"
        } else {
            "free-running"
        }
    );
    let traj = &case["trajectory"];
    let mut s = build(case);
    let n = traj["num_inference_steps"].as_u64().unwrap() as usize;
    s.set_timesteps(n).unwrap();
    let recorded = traj["steps"].as_array().unwrap();
    let want_ts: Vec<f64> = recorded
        .iter()
        .map(|st| st["t"].as_f64().unwrap())
        .collect();
    check_timesteps(case, "trajectory", s.timesteps(), &want_ts, failures);
    if s.timesteps().len() != want_ts.len() {
        return 0;
    }

    // latents = randn * init_noise_sigma
    let sigma0 = s.init_noise_sigma();
    let mut latents = tensor(&traj["init_noise"], shape).mapv(|x| x * sigma0);
    let want_initial = tensor(&traj["initial"], shape);
    let (r, e) = compare(&latents, &want_initial, 0.0, REL);
    if r > 1.0 {
        failures.push(format!("{id}: initial latents off by {e}"));
    }
    if teacher_forced {
        latents = want_initial;
    }
    let fixed = tensor(&traj["fixed"], shape);
    let timesteps = s.timesteps().to_vec();
    let mut steps = 0;
    for (i, (t, st)) in timesteps.into_iter().zip(recorded).enumerate() {
        let x = s.scale_model_input(&latents, t);
        let want_x = if st["scaled"].is_null() {
            latents.clone()
        } else {
            tensor(&st["scaled"], shape)
        };
        let (r, e) = compare(&x, &want_x, max_abs(&latents), rel);
        if r > 1.0 {
            failures.push(format!(
                "{id}: step {i} (t={t}): scale_model_input off by {e}"
            ));
        }
        // model_output = 0.3 * x + 0.5 * fixed (float32, as the generator computes it)
        let x = if teacher_forced { want_x } else { x };
        let model_output = ndarray::Zip::from(&x)
            .and(&fixed)
            .map_collect(|&x, &f| 0.3f32 * x + 0.5f32 * f);
        let draws: Vec<Latents> = st["noise"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| tensor(d, shape))
            .collect();
        let expected_draws = draws.len();
        let mut noise = Replay { draws, used: 0 };
        let out = match s.step(&model_output, t, &latents, &mut noise) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{id}: step {i} (t={t}) failed: {e}"));
                break;
            }
        };
        if noise.used != expected_draws {
            failures.push(format!(
                "{id}: step {i}: drew {} noise tensors, diffusers drew {expected_draws}",
                noise.used
            ));
        }
        let want_out = tensor(&st["out"], shape);
        let scale = max_abs(&latents).max(max_abs(&model_output));
        let (r, e) = compare(&out, &want_out, scale, rel);
        if r > 1.0 {
            failures.push(format!(
                "{id}: step {i} (t={t}): step output off by {e} ({r:.1}x tolerance)"
            ));
        }
        latents = if teacher_forced { want_out } else { out };
        steps += 1;
    }
    steps
}

#[test]
fn trajectories_match_diffusers() {
    let v = vectors();
    let shape = shape(&v);
    let mut failures = Vec::new();
    let mut steps_checked = 0;
    for case in v["cases"].as_array().unwrap() {
        if case.get("trajectory").is_none() {
            continue;
        }
        steps_checked += run_trajectory(case, &shape, true, REL, &mut failures);
        run_trajectory(case, &shape, false, FREE_RUNNING_REL, &mut failures);

        // add_noise on a fresh scheduler, as img2img would call it.
        let an = &case["add_noise"];
        let mut s = build(case);
        s.set_timesteps(an["num_inference_steps"].as_u64().unwrap() as usize)
            .unwrap();
        let (original, noise) = (
            tensor(&an["original"], &shape),
            tensor(&an["noise"], &shape),
        );
        let got = s.add_noise(&original, &noise, an["timestep"].as_f64().unwrap());
        let (r, e) = compare(&got, &tensor(&an["out"], &shape), 0.0, REL);
        if r > 1.0 {
            failures.push(format!("{}: add_noise off by {e}", case["id"]));
        }
    }
    assert!(
        steps_checked > 200,
        "too few steps checked: {steps_checked}"
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn sd15() -> Value {
    vectors()["cases"][0]["config"].clone()
}

#[test]
fn every_name_builds_from_sd15_config() {
    let cfg = sd15();
    for name in SchedulerKind::ALL.map(SchedulerKind::cli_name) {
        let mut s = scheduler_from_config(Some(name), &cfg, &SchedulerOptions::default()).unwrap();
        assert_eq!(s.name(), name);
        s.set_timesteps(20).unwrap();
        assert!(!s.timesteps().is_empty());
    }
    // No override: the config's _class_name (PNDMScheduler for SD 1.5).
    let s = scheduler_from_config(None, &cfg, &SchedulerOptions::default()).unwrap();
    assert_eq!(s.name(), "pndm");
}

fn err_of(name: Option<&str>, cfg: &Value) -> String {
    match scheduler_from_config(name, cfg, &SchedulerOptions::default()) {
        Ok(_) => panic!("expected an error for {name:?} with {cfg}"),
        Err(e) => e,
    }
}

fn with(key: &str, value: Value) -> Value {
    let mut cfg = sd15();
    cfg[key] = value;
    cfg
}

#[test]
fn bad_names_and_configs_are_errors() {
    let cfg = sd15();
    assert!(err_of(Some("heun"), &cfg).contains("unknown scheduler"));
    assert!(err_of(None, &json!({"beta_start": 0.00085})).contains("_class_name"));
    assert!(
        err_of(None, &json!({"_class_name": "UniPCMultistepScheduler"}))
            .contains("UniPCMultistepScheduler")
    );
    assert!(err_of(None, &json!([1, 2])).contains("JSON object"));
    for name in SchedulerKind::ALL.map(SchedulerKind::cli_name) {
        assert!(
            err_of(Some(name), &with("beta_schedule", json!("cosine"))).contains("beta_schedule"),
            "{name}"
        );
        assert!(
            err_of(Some(name), &with("num_train_timesteps", json!("many")))
                .contains("num_train_timesteps"),
            "{name}"
        );
    }
    for name in ["pndm", "ddim", "euler", "euler-a", "lms", "dpm++2m"] {
        assert!(
            err_of(Some(name), &with("timestep_spacing", json!("uniform")))
                .contains("timestep_spacing"),
            "{name}"
        );
    }
    for name in ["ddim", "euler", "dpm++2m", "lms", "lcm"] {
        assert!(
            err_of(
                Some(name),
                &with("prediction_type", json!("flow_prediction"))
            )
            .contains("prediction_type"),
            "{name}"
        );
    }
    // Classes that do not support "sample" prediction.
    assert!(
        err_of(Some("pndm"), &with("prediction_type", json!("sample"))).contains("prediction_type")
    );
    assert!(
        err_of(Some("euler-a"), &with("prediction_type", json!("sample")))
            .contains("prediction_type")
    );
    for name in ["ddim", "dpm++2m", "lcm"] {
        assert!(
            err_of(Some(name), &with("thresholding", json!(true))).contains("thresholding"),
            "{name}"
        );
    }
    assert!(
        err_of(Some("euler"), &with("use_beta_sigmas", json!(true))).contains("use_beta_sigmas")
    );
    assert!(
        err_of(Some("euler"), &with("interpolation_type", json!("cubic")))
            .contains("interpolation_type")
    );
    assert!(
        err_of(Some("euler"), &with("final_sigmas_type", json!("max")))
            .contains("final_sigmas_type")
    );
    let mut dpm = with("algorithm_type", json!("dpmsolver"));
    dpm["_class_name"] = json!("DPMSolverMultistepScheduler");
    assert!(err_of(None, &dpm).contains("final_sigmas_type"));
    dpm["algorithm_type"] = json!("unipc");
    assert!(err_of(None, &dpm).contains("algorithm_type"));
    assert!(
        err_of(Some("ddim"), &with("trained_betas", json!([0.1, 0.2]))).contains("trained_betas")
    );
}

#[test]
fn bad_step_counts_are_errors() {
    let cfg = sd15();
    let opts = SchedulerOptions::default();
    for name in SchedulerKind::ALL.map(SchedulerKind::cli_name) {
        let mut s = scheduler_from_config(Some(name), &cfg, &opts).unwrap();
        assert!(s.set_timesteps(0).is_err(), "{name}");
    }
    let mut lcm = scheduler_from_config(Some("lcm"), &cfg, &opts).unwrap();
    assert!(lcm
        .set_timesteps(51)
        .unwrap_err()
        .contains("original_inference_steps"));
    let mut ddim = scheduler_from_config(Some("ddim"), &cfg, &opts).unwrap();
    assert!(ddim.set_timesteps(1001).is_err());
    // PRK warm-up needs 4 steps.
    let mut prk = with("skip_prk_steps", json!(false));
    prk["_class_name"] = json!("PNDMScheduler");
    let mut pndm = scheduler_from_config(None, &prk, &opts).unwrap();
    assert!(pndm.set_timesteps(3).is_err());
    // Stepping before set_timesteps, or with a timestep not in the schedule, is an error, not a panic.
    let x = Latents::zeros(vec![1, 4, 2, 2]);
    let mut ddim = scheduler_from_config(Some("ddim"), &cfg, &opts).unwrap();
    assert!(ddim.step(&x, 981.0, &x, &mut NoNoise).is_err());
    let mut euler = scheduler_from_config(Some("euler"), &cfg, &opts).unwrap();
    euler.set_timesteps(10).unwrap();
    assert!(euler.step(&x, 123.5, &x, &mut NoNoise).is_err());
    let y = Latents::zeros(vec![1, 3, 2, 2]);
    assert!(euler
        .step(&y, euler.timesteps()[0], &x, &mut NoNoise)
        .is_err());
}

#[test]
fn ddim_eta_draws_noise_only_when_positive() {
    let cfg = sd15();
    let x = Latents::from_elem(vec![1, 4, 2, 2], 0.5);
    let mut s = scheduler_from_config(Some("ddim"), &cfg, &SchedulerOptions { eta: 0.0 }).unwrap();
    s.set_timesteps(10).unwrap();
    let t = s.timesteps()[0];
    s.step(&x, t, &x, &mut NoNoise).unwrap();
    assert!(scheduler_from_config(Some("ddim"), &cfg, &SchedulerOptions { eta: -1.0 }).is_err());
}

#[test]
fn use_default_values_keys_take_class_defaults() {
    // diffusers drops keys listed in _use_default_values, so the target class's default applies.
    let mut cfg = with("timestep_spacing", json!("trailing"));
    cfg["_use_default_values"] = json!(["timestep_spacing"]);
    let opts = SchedulerOptions::default();
    let mut a = scheduler_from_config(Some("euler"), &cfg, &opts).unwrap();
    let mut b = scheduler_from_config(Some("euler"), &sd15(), &opts).unwrap();
    a.set_timesteps(7).unwrap();
    b.set_timesteps(7).unwrap();
    assert_eq!(a.timesteps(), b.timesteps());
}

#[test]
fn begin_index_matches_timestep_lookup() {
    // img2img: set_begin_index(i) behaves as if the schedule were entered at timesteps[i].
    let opts = SchedulerOptions::default();
    let x = Latents::from_shape_fn(vec![1, 4, 2, 2], |d| d[1] as f32 - 0.5 * d[2] as f32);
    let n = Latents::from_elem(vec![1, 4, 2, 2], 0.25);
    for name in ["euler", "euler-a", "lms", "dpm++2m", "lcm"] {
        let mut a = scheduler_from_config(Some(name), &sd15(), &opts).unwrap();
        let mut b = scheduler_from_config(Some(name), &sd15(), &opts).unwrap();
        a.set_timesteps(8).unwrap();
        b.set_timesteps(8).unwrap();
        let t = a.timesteps()[3];
        a.set_begin_index(3);
        assert_eq!(a.add_noise(&x, &n, t), b.add_noise(&x, &n, t), "{name}");
        assert_eq!(
            a.scale_model_input(&x, t),
            b.scale_model_input(&x, t),
            "{name}"
        );
    }
}
