//! Native per-op profile of one network of a model dir (scripts/profile-ops.py drives it):
//!
//!     cargo run --release --example profile -- DIR [--network unet|vae] [--latent 32] [--runs 2] [--top 25] [--threads 1]
//!     cargo run --release --example profile -- DIR --compare all     # our ops vs tract's: output difference
//!
//! One warm-up evaluation (not profiled), then --runs profiled ones; prints the table of
//! [`sd_wasm::models::profile::Profiles::report`] and the unprofiled time of one evaluation.
//! With `--threads N` each node's wall time is measured on the `--threads` pool: profiles at 1
//! and N threads side by side show which ops do not scale.

use sd_wasm::model_dir::{DirFiles, ModelDir};
use sd_wasm::models::unet::guidance_embedding;
use sd_wasm::models::{profile, Unet, VaeDecoder};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().expect("usage: profile DIR [--network unet|vae] [--latent N] [--runs N] [--top N] [--threads N]").clone();
    let opt = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.into())
    };
    let network = opt("--network", "unet");
    let latent: usize = opt("--latent", "32").parse().unwrap();
    let runs: usize = opt("--runs", "2").parse().unwrap();
    let top: usize = opt("--top", "25").parse().unwrap();
    let threads: usize = opt("--threads", "1").parse().unwrap();
    sd_wasm::models::threads::use_threads(threads).unwrap();
    if let Some(set) = args.iter().position(|a| a == "--compare").and_then(|i| args.get(i + 1)) {
        // One UNet evaluation with tract's ops and one with the set named: max |difference|.
        let files = DirFiles::open(&dir).unwrap();
        let model = ModelDir::open(&files).unwrap();
        let shape = [1, model.unet_config_usize("in_channels", 4), latent, latent];
        let text = [1, 77, model.unet_config_usize("cross_attention_dim", 768)];
        let mut rng = sd_wasm::rng::TorchRng::new(0);
        let (sample, hidden) = (rng.randn(&shape), rng.randn(&text));
        let guidance = model.unet_guidance_embedding_dim().map(|dim| guidance_embedding(1.0, dim, 1));
        let mut outs = Vec::new();
        for ops in ["tract", set.as_str()] {
            std::env::set_var("SD_WASM_OPS", ops);
            let unet = Unet::load(&files, shape, text, model.unet_guidance_embedding_dim(), &Default::default()).unwrap();
            let t = Instant::now();
            outs.push(unet.predict(&sample, 500.0, &hidden, guidance.as_ref()).unwrap());
            eprintln!("compare: {ops}: {:.2} s", t.elapsed().as_secs_f64());
        }
        let diff = outs[0].iter().zip(outs[1].iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = outs[0].iter().map(|a| a.abs()).fold(0f32, f32::max);
        println!("max |tract - {set}| = {diff:e} (max |tract| = {scale:e})");
        return;
    }
    let files = DirFiles::open(&dir).unwrap();
    let model = ModelDir::open(&files).unwrap();
    let mut rng = sd_wasm::rng::TorchRng::new(0);
    let start = Instant::now();
    let run: Box<dyn Fn()> = match network.as_str() {
        "unet" => {
            let shape = [1, model.unet_config_usize("in_channels", 4), latent, latent];
            let text = [1, 77, model.unet_config_usize("cross_attention_dim", 768)];
            let unet = Unet::load(&files, shape, text, model.unet_guidance_embedding_dim(), &Default::default()).unwrap();
            let (sample, hidden) = (rng.randn(&shape), rng.randn(&text));
            let guidance = model.unet_guidance_embedding_dim().map(|dim| guidance_embedding(1.0, dim, 1));
            Box::new(move || {
                unet.predict(&sample, 500.0, &hidden, guidance.as_ref()).unwrap();
            })
        }
        "vae" => {
            let channels = model.vae_config_usize("latent_channels", 4);
            let shape = [1, channels, latent, latent];
            let vae = VaeDecoder::load(&files, "vae_decoder", shape, 8).unwrap();
            let z = rng.randn(&shape);
            Box::new(move || {
                vae.decode(&z).unwrap();
            })
        }
        other => panic!("unknown network {other}"),
    };
    eprintln!("profile: {network} loaded in {:.1} s", start.elapsed().as_secs_f64());
    let t = Instant::now();
    run();
    let plain = t.elapsed().as_secs_f64();
    profile::start(profile::std_clock);
    for _ in 0..runs {
        run();
    }
    let p = profile::take().unwrap();
    let on = if threads == 1 { "one thread".to_string() } else { format!("{threads} threads") };
    println!("{network}, latent {latent}x{latent}, native ({}), {on}", std::env::consts::ARCH);
    println!("unprofiled evaluation (warm-up): {plain:.3} s");
    print!("{}", p.report(top));
}
