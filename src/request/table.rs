//! The request parameter table: one row per field. The macro turns the rows into
//! [`GenerateRequest`], its `Default`, and [`PARAMS`] (flags, help, Automatic1111 key, parse
//! and check), so adding a field is adding a row.

use super::value::{Inputs, ParamValue, Raw};
use super::preset::Preset;
use super::{Param, RngKind, VaeChoice, A1111, BETA_SCHEDULES, MAX_IMAGES, MAX_SIDE, MAX_STEPS, PREDICTION_TYPES};
use crate::codecs::png::RgbImage;
use crate::models::lora::Lora;
use crate::schedulers::SchedulerKind;
use crate::tensor::Latents;

macro_rules! request_table {
    (@record default $field:ident) => { |request, _| ParamValue::to_text(&request.$field) };
    (@record none $field:ident) => { |_, _| None };
    (@record ($e:expr) $field:ident) => { $e };
    (@absent) => { None };
    (@absent $absent:literal) => { Some($absent) };
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty = $default:expr;
            flags [$($flag:literal),+] $value:literal;
            a1111 $a1111:expr $(, aliases [$($alias:literal),*])? $(, absent $absent:literal)?;
            record $record:tt;
            check $check:expr;
            help $help:literal;
    )*) => {
        /// One generation's parameters (see the table in `request/table.rs`).
        #[derive(Debug, Clone)]
        pub struct GenerateRequest {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for GenerateRequest {
            fn default() -> Self {
                GenerateRequest { $( $field: $default, )* }
            }
        }

        /// Every row, in the order `--help` lists them and the `parameters` text records them.
        pub static PARAMS: &[Param] = &[$(
            Param {
                key: stringify!($field),
                flags: &[$($flag),+],
                value: $value,
                help: $help,
                a1111: $a1111,
                a1111_aliases: &[$($($alias),*)?],
                a1111_absent: request_table!(@absent $($absent)?),
                from_record: <$ty as ParamValue>::FROM_RECORD,
                set: |request: &mut GenerateRequest, raw: Raw, inputs: &dyn Inputs| {
                    <$ty as ParamValue>::assign(&mut request.$field, raw, inputs)
                },
                check: |request: &GenerateRequest| {
                    let check: fn(&$ty) -> Result<(), String> = $check;
                    check(&request.$field)
                },
                record: request_table!(@record $record $field),
                json: |request: &GenerateRequest| ParamValue::to_json(&request.$field),
            },
        )*];
    };
}

fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// A name, when given, from `names`.
fn one_of(v: &Option<String>, names: &[&str]) -> Result<(), String> {
    match v {
        Some(s) if !names.contains(&s.as_str()) => Err(format!("{s:?} is not known; choose one of {}", names.join(", "))),
        _ => Ok(()),
    }
}

fn between<T: PartialOrd + std::fmt::Display>(v: T, low: T, high: T) -> Result<(), String> {
    if v >= low && v <= high {
        Ok(())
    } else {
        Err(format!("must be between {low} and {high}, got {v}"))
    }
}

fn finite_between(v: f32, low: f32, high: f32) -> Result<(), String> {
    if v.is_finite() {
        between(v, low, high)
    } else {
        Err(format!("must be between {low} and {high}, got {v}"))
    }
}

fn side(v: &Option<u32>) -> Result<(), String> {
    match *v {
        Some(side) if side == 0 || side % 8 != 0 || side > MAX_SIDE => {
            Err(format!("must be a multiple of 8 between 8 and {MAX_SIDE}, got {side}"))
        }
        _ => Ok(()),
    }
}

fn at_least_one(v: &usize) -> Result<(), String> {
    if *v >= 1 {
        Ok(())
    } else {
        Err("must be at least 1".into())
    }
}

fn beta(v: &Option<f64>) -> Result<(), String> {
    match *v {
        Some(b) if !b.is_finite() || b <= 0.0 || b >= 1.0 => Err(format!("must be between 0 and 1 (exclusive), got {b}")),
        _ => Ok(()),
    }
}

request_table! {
    /// What to draw.
    prompt: String = String::new();
        flags ["--prompt", "-p"] "TEXT";
        a1111 A1111::Head("prompt");
        record none;
        check any;
        help "what to draw (required, unless --prompts or --params-from)";
    /// None behaves like diffusers' default: an empty unconditional prompt.
    negative_prompt: Option<String> = None;
        flags ["--negative-prompt"] "TEXT";
        a1111 A1111::Head("Negative prompt");
        record none;
        check any;
        help "what to avoid (default: empty, as diffusers)";
    /// Automatic1111's "Clip skip": the text embeddings come from the N-th layer from the end
    /// of the text encoder (then its final layer norm); 1 is the last layer.
    clip_skip: usize = 1;
        flags ["--clip-skip"] "N";
        a1111 A1111::Field("Clip skip");
        record (|request, _| (request.clip_skip > 1).then(|| request.clip_skip.to_string()));
        check at_least_one;
        help "Automatic1111's Clip skip: use the text encoder's N-th layer from the\n\
              end (default 1, the last; 2 is common for anime models). SD 1.x; on\n\
              SD 2.x it is ignored, as Automatic1111 does. Needs a model dir from\n\
              the current scripts/convert.py";
    steps: usize = 20;
        flags ["--steps", "--num-inference-steps"] "N";
        a1111 A1111::Head("Steps");
        record none;
        check |v| between(*v, 1, MAX_STEPS);
        help "denoising steps, 1..1000 (default 20; alias --num-inference-steps)";
    guidance_scale: f32 = 7.5;
        flags ["--guidance-scale", "--cfg-scale"] "G";
        a1111 A1111::Head("CFG scale");
        record none;
        check |v| finite_between(*v, 0.0, 100.0);
        help "classifier-free guidance; <= 1 skips the unconditional pass (default 7.5)";
    /// The first picture's seed; picture i gets `seed + i`.
    seed: u64 = 0;
        flags ["--seed"] "N";
        a1111 A1111::Head("Seed");
        record none;
        check any;
        help "random seed (default: from the clock, printed and recorded)";
    /// None: the UNet's `sample_size` × the VAE scale factor (or the init picture's size).
    width: Option<u32> = None;
        flags ["--width"] "W";
        a1111 A1111::None;
        record none;
        check side;
        help "multiple of 8 (default: the UNet's sample_size x VAE scale factor)";
    height: Option<u32> = None;
        flags ["--height"] "H";
        a1111 A1111::None;
        record none;
        check side;
        help "multiple of 8 (default: the UNet's sample_size x VAE scale factor)";
    /// DDIM's eta (diffusers passes it only to schedulers whose `step` takes it).
    eta: f32 = 0.0;
        flags ["--eta"] "E";
        a1111 A1111::Field("Eta"), aliases ["Eta DDIM"];
        record (|request, scheduler| (scheduler == "ddim" && request.eta != 0.0).then(|| format!("{}", request.eta)));
        check |v| finite_between(*v, 0.0, 1.0);
        help "DDIM eta in [0, 1] (default 0)";
    /// Initial latents, unscaled (diffusers' `latents=`), shape [1, C, h, w].
    latents: Option<Latents> = None;
        flags ["--latents"] "FILE.npy";
        a1111 A1111::Field("Latents");
        record default;
        check any;
        help "initial latents [1, C, H/f, W/f], unscaled (diffusers' latents=)";
    /// In (0, 1]: the fraction of the schedule an init image runs (diffusers' `strength`);
    /// None: 0.5, the seed system's default.
    strength: Option<f32> = None;
        flags ["--strength"] "S";
        a1111 A1111::Field("Denoising strength");
        record (|request, _| request.init_image.as_ref().map(|_| format!("{}", request.strength_or_default())));
        check |v| match *v {
            Some(s) if !s.is_finite() || s <= 0.0 || s > 1.0 => Err(format!("must be in (0, 1], got {s}")),
            _ => Ok(()),
        };
        help "in (0, 1]: how far from the init image (default 0.5, as the seed\n\
              system); int(steps x S) of the steps run, as diffusers";
    /// Image-to-image (and inpainting, with a mask) instead of text-to-image.
    init_image: Option<RgbImage> = None;
        flags ["--init-image", "--image"] "PNG";
        a1111 A1111::Field("Init image");
        record default;
        check any;
        help "image-to-image: start from this picture (PNG only; grayscale, RGBA,\n\
              16-bit are converted to 8-bit RGB). The output takes its size,\n\
              rounded down to a multiple of 8, unless --width/--height are given;\n\
              it is resized to the output size (Lanczos, as diffusers/PIL)";
    /// White (from 128 up, after PIL's grayscale conversion) = repaint, black = keep.
    mask: Option<RgbImage> = None;
        flags ["--mask", "--mask-image"] "PNG";
        a1111 A1111::Field("Mask");
        record default;
        check any;
        help "inpainting (with --init-image): white = repaint, black = keep\n\
              (grayscale from 128 up). A regular UNet keeps the init latents\n\
              outside the mask at every step; a 9-channel inpainting UNet gets\n\
              the mask and the masked picture. Resized to the output size if needed";
    beta_start: Option<f64> = None;
        flags ["--beta-start"] "X";
        a1111 A1111::Field("Beta start");
        record default;
        check beta;
        help "override the scheduler config's beta_start";
    beta_end: Option<f64> = None;
        flags ["--beta-end"] "X";
        a1111 A1111::Field("Beta end");
        record default;
        check beta;
        help "override the scheduler config's beta_end";
    beta_schedule: Option<String> = None;
        flags ["--beta-schedule"] "NAME";
        a1111 A1111::Field("Beta schedule");
        record default;
        check |v| one_of(v, &BETA_SCHEDULES);
        help "override the scheduler config's beta_schedule: linear, scaled_linear,\n\
              squaredcos_cap_v2";
    prediction_type: Option<String> = None;
        flags ["--prediction-type"] "epsilon|v_prediction";
        a1111 A1111::Field("Prediction type");
        record default;
        check |v| one_of(v, &PREDICTION_TYPES);
        help "override the scheduler config's prediction_type: what the UNet predicts\n\
              (SD 2.x 768 models: v_prediction, SD 2.x base and SD 1.x: epsilon),\n\
              e.g. for a --checkpoint that does not match its template's";
    vae: VaeChoice = VaeChoice::Full;
        flags ["--vae"] "full|taesd";
        a1111 A1111::Field("VAE");
        record default;
        check any;
        help "decoder: the model's VAE (default) or TAESD (vae_decoder_taesd/,\n\
              added by scripts/convert.py --taesd): much faster, slightly softer";
    /// Steps, guidance, scheduler and decoder for a kind of model, filled in by the front end
    /// from the model dir for the fields not given ([`super::preset::apply_preset`]). Not
    /// recorded: the values it filled in are.
    preset: Option<Preset> = None;
        flags ["--preset"] "turbo|lcm|quality";
        a1111 A1111::None;
        record none;
        check any;
        help "fill in what this kind of model runs best with, for the options not\n\
              given: turbo (one-step models: 1 step, guidance 0, TAESD if the model\n\
              has it), lcm (LCM models and LCM-LoRAs: 4 steps, the lcm scheduler,\n\
              TAESD), quality (25 steps of dpm++2m-karras, guidance 7.5, full VAE).\n\
              A preset the model is not made for is refused";
    /// None: the model's own scheduler (its config's `_class_name`).
    scheduler: Option<SchedulerKind> = None;
        flags ["--scheduler"] "NAME";
        a1111 A1111::Field("Scheduler");
        record (|_, scheduler| Some(scheduler.to_string()));
        check any;
        help "pndm, ddim, euler, euler-a, dpm++2m, dpm++2m-karras, lms, lcm\n\
              (default: the model's scheduler_config.json)";
    /// Recorded in Automatic1111's words ("RNG: CPU", "RNG: NV"), so Automatic1111 reads our
    /// pictures with the same noise; its own pictures without the field used its GPU noise.
    rng: RngKind = RngKind::Torch;
        flags ["--rng"] "torch|cuda";
        a1111 A1111::Field("RNG"), absent "GPU";
        record default;
        check any;
        help "noise generator: torch (the default) is torch.randn with\n\
              torch.Generator(\"cpu\").manual_seed(N), so a seed gives diffusers'\n\
              picture; cuda is torch.randn on a CUDA device (Philox4x32-10), the\n\
              noise of Automatic1111's default GPU source and of its NV source.\n\
              Recorded as Automatic1111 does (RNG: CPU, RNG: NV); --params-from\n\
              reads a PNG without an RNG field as cuda, Automatic1111's default";
    /// Pictures to make, with seeds `seed`, `seed + 1`, … (each its own generator).
    num_images: usize = 1;
        flags ["--num-images", "--num-images-per-prompt"] "N";
        a1111 A1111::None;
        record none;
        check |v| between(*v, 1, MAX_IMAGES);
        help "N pictures, seeds S, S+1, ..., S+N-1 (each its own generator and\n\
              its own PNG; default 1)";
    /// How many pictures go through the UNet at once.
    batch_size: usize = 1;
        flags ["--batch-size"] "B";
        a1111 A1111::None;
        record none;
        check at_least_one;
        help "pictures per UNet evaluation (default 1; memory grows with B)";
    /// LoRAs merged into the UNet and the text encoder as they load, each with its weight.
    /// Recorded as Automatic1111 does: `<lora:NAME:WEIGHT>` in the prompt and "Lora hashes".
    loras: Vec<Lora> = Vec::new();
        flags ["--lora"] "FILE[:W]";
        a1111 A1111::None;
        record none;
        check |loras: &Vec<Lora>| match loras.iter().find(|l| !l.scale.is_finite()) {
            Some(l) => Err(format!("{}: the weight must be a number, got {}", l.name, l.scale)),
            None => Ok(()),
        };
        help "merge a LoRA (kohya/Automatic1111 .safetensors) into the UNet and\n\
              text encoder with weight W (default 1); repeatable. Recorded as\n\
              <lora:NAME:W> in the prompt; such a tag in a prompt loads\n\
              NAME.safetensors from --lora-dir. Needs a model dir from the\n\
              current scripts/convert.py (its weights.json)";
    /// Every K steps, a preview event with a picture of the current latents.
    preview_every: Option<usize> = None;
        flags ["--preview-every"] "K";
        a1111 A1111::None;
        record none;
        check |v| v.as_ref().map_or(Ok(()), at_least_one);
        help "every K steps a preview: decoded by TAESD when the model has it,\n\
              else the latents mapped to RGB (one pixel per latent); the command\n\
              line writes it beside the output as <output stem>-step-<N>.png";
}
